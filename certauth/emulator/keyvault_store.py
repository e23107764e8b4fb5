"""The emulated Key Vault's state and rules: keys it generates and never exports, the
certificates made over them, the access policy, signing over a digest, and its error shapes.

Pure: no sockets (the HTTP side is :mod:`certauth.emulator.keyvault_api`). Where each rule comes
from (Microsoft Learn):

- "About keys" and "About Azure Key Vault certificates"
  (https://learn.microsoft.com/azure/key-vault/keys/about-keys,
  https://learn.microsoft.com/azure/key-vault/certificates/about-certificates): a certificate's
  key is a key of the same name and version (``kid``), its secret (``sid``) the same again; a
  non-exportable key's private part never leaves the vault.
- "Key Vault: sign" (https://learn.microsoft.com/rest/api/keyvault/keys/sign/sign): ``alg`` and
  ``value``, the base64url *digest*; the ``keys/sign`` permission.
- "Object names" (https://learn.microsoft.com/azure/key-vault/general/about-keys-secrets-certificates):
  vault names 3-24 characters, object names 1-127 of ``0-9 a-z A-Z -``.
- "Azure Key Vault REST API error codes"
  (https://learn.microsoft.com/azure/key-vault/general/rest-error-codes): the body
  ``{"error": {"code", "message", "innererror"}}`` and the statuses.
"""

from __future__ import annotations

import re
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature

from certauth import _jose

__all__ = [
    "KEY_PERMISSIONS",
    "Fault",
    "VaultError",
    "VaultKey",
    "VaultState",
    "check_object_name",
    "check_vault_name",
    "sign_digest",
]

#: The permissions an access policy entry may hold in the emulator: Key Vault's key permissions
#: it serves (``get`` also covers getting a certificate: the emulator has one list, not three).
KEY_PERMISSIONS = frozenset({"get", "list", "create", "import", "sign", "verify"})

_VAULT_NAME = re.compile(r"^[A-Za-z](?!.*--)[A-Za-z0-9-]{1,22}[A-Za-z0-9]$")
_OBJECT_NAME = re.compile(r"^[0-9A-Za-z-]{1,127}$")


class VaultError(Exception):
    """A refusal in Key Vault's terms: HTTP ``status``, ``code``, ``message`` and optionally
    an ``innererror`` code (``AccessDenied`` for an access-policy refusal)."""

    def __init__(self, status: int, code: str, message: str, inner: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.inner = inner

    def body(self) -> dict[str, Any]:
        """The JSON error body Key Vault sends."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.inner is not None:
            error["innererror"] = {"code": self.inner}
        return {"error": error}


def bad_parameter(message: str) -> VaultError:
    """Key Vault's 400 for a value it cannot take."""
    return VaultError(400, "BadParameter", message)


def check_vault_name(name: str) -> str:
    """``name`` if it is a valid vault name (3-24 characters, letters, digits and single
    hyphens, starting with a letter, not ending with a hyphen); else :class:`ValueError`."""
    if not isinstance(name, str) or not _VAULT_NAME.match(name):
        raise ValueError(
            f"vault name {name!r} is not valid: 3-24 letters, digits and single hyphens, "
            "starting with a letter"
        )
    return name.lower()


def check_object_name(name: str, what: str = "key") -> str:
    """``name`` if it is a valid key or certificate name (1-127 of ``0-9 a-z A-Z -``); else
    :class:`VaultError` ``BadParameter``."""
    if not _OBJECT_NAME.match(name):
        raise bad_parameter(
            f"The {what} name '{name[:130]}' is invalid. It must be 1-127 characters long and "
            "contain only 0-9, a-z, A-Z, and -."
        )
    return name


@dataclass(frozen=True)
class VaultKey:
    """One version of a vault key: the private key stays here; only :meth:`jwk` goes out."""

    name: str
    version: str
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    created: int

    def kid(self, vault_url: str) -> str:
        """The key identifier: ``{vault}/keys/{name}/{version}``."""
        return f"{vault_url}/keys/{self.name}/{self.version}"

    def jwk(self, vault_url: str) -> dict[str, Any]:
        """The public JWK Key Vault returns (never ``d``, ``p``, ``q``...: not exportable)."""
        jwk: dict[str, Any] = {"kid": self.kid(vault_url)}
        public = _jose.public_key_to_jwk(self.private_key.public_key())
        jwk.update(public)
        jwk["key_ops"] = ["sign", "verify"] if public["kty"] == "EC" else [
            "sign", "verify", "wrapKey", "unwrapKey", "encrypt", "decrypt"]  # fmt: skip
        return jwk


@dataclass(frozen=True)
class VaultCertificate:
    """One version of a vault certificate: its DER and the key version it was made over."""

    name: str
    version: str
    der: bytes
    key: VaultKey
    x5t: str
    created: int


@dataclass
class Fault:
    """Answer the next ``count`` requests with ``status`` (and ``Retry-After``)."""

    status: int
    count: int
    retry_after: int | None = None


def new_key(kty: str, size: int, curve: str) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    """A fresh private key as Key Vault's create key makes it (RSA 2048/3072/4096 or EC
    P-256/P-384/P-521); :class:`VaultError` ``BadParameter`` otherwise."""
    if kty in ("RSA", "RSA-HSM"):
        if size not in (2048, 3072, 4096):
            raise bad_parameter(f"Invalid key size {size}: use 2048, 3072 or 4096.")
        return rsa.generate_private_key(public_exponent=65537, key_size=size)
    if kty in ("EC", "EC-HSM"):
        spec = _jose.CURVES.get(curve)
        if spec is None:
            raise bad_parameter(f"Invalid curve '{curve}': use P-256, P-384 or P-521.")
        return ec.generate_private_key(spec.curve)
    raise bad_parameter(f"Invalid key type '{kty}': the emulator makes RSA and EC keys.")


def sign_digest(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, alg: object, digest: bytes
) -> bytes:
    """The JWS signature of a precomputed ``digest`` with ``alg``, as Key Vault's sign returns
    it (ECDSA as R || S, RFC 7518 section 3.4); :class:`VaultError` ``BadParameter`` for an
    algorithm the key cannot use or a digest of the wrong length."""
    spec = _jose.ALGORITHMS.get(alg) if isinstance(alg, str) else None
    if spec is None:
        raise bad_parameter(f"Invalid value for 'alg': '{str(alg)[:20]}'.")
    try:
        _jose.check_key(key, spec.name)
    except (TypeError, ValueError) as exc:
        raise bad_parameter(f"Key and signing algorithm are incompatible: {exc}.") from None
    if len(digest) != spec.hash.digest_size:
        # The sign operation takes the digest, not the data: one of another length is refused.
        raise bad_parameter(
            f"Invalid length of 'value' for {spec.name}: a digest of {spec.hash.digest_size} "
            f"bytes is expected, not {len(digest)}."
        )
    if isinstance(key, rsa.RSAPrivateKey) and spec.rsa_padding is not None:
        return key.sign(digest, spec.rsa_padding, Prehashed(spec.hash))
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert spec.curve is not None
    r, s = decode_dss_signature(key.sign(digest, ec.ECDSA(Prehashed(spec.hash))))
    size = spec.curve.size
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


@dataclass
class VaultState:
    """Everything one emulated vault holds; thread-safe (the server answers in threads)."""

    name: str
    tenant_id: str
    keys: dict[str, list[VaultKey]] = field(default_factory=dict)
    certificates: dict[str, list[VaultCertificate]] = field(default_factory=dict)
    #: client id (lower case) -> permissions, the vault's access policy.
    grants: dict[str, frozenset[str]] = field(default_factory=dict)
    fault: Fault | None = None
    request_count: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_key(self, name: str, private_key: Any, now: int) -> VaultKey:
        """Store a new version of key ``name`` (it becomes the current one)."""
        key = VaultKey(check_object_name(name), uuid.uuid4().hex, private_key, now)
        with self.lock:
            self.keys.setdefault(name.lower(), []).append(key)
        return key

    def key(self, name: str, version: str | None) -> VaultKey:
        """A key version (the current one for ``None``); 404 ``KeyNotFound`` otherwise."""
        versions = self.keys.get(name.lower(), [])
        found = versions[-1] if versions and not version else next(
            (k for k in versions if k.version == (version or "").lower()), None)  # fmt: skip
        if found is None:
            where = f"{name}/{version}" if version else name
            raise VaultError(
                404,
                "KeyNotFound",
                f"A key with (name/id) {where[:200]} was not found in this key vault. If you "
                "recently deleted this key you may be able to recover it using the correct "
                "recovery command.",
            )
        return found

    def add_certificate(self, certificate: VaultCertificate) -> None:
        """Store a new version of a certificate."""
        with self.lock:
            self.certificates.setdefault(certificate.name.lower(), []).append(certificate)

    def certificate(self, name: str, version: str | None) -> VaultCertificate:
        """A certificate version (the current one for ``None``); 404 ``CertificateNotFound``."""
        versions = self.certificates.get(name.lower(), [])
        found = versions[-1] if versions and not version else next(
            (c for c in versions if c.version == (version or "").lower()), None)  # fmt: skip
        if found is None:
            where = f"{name}/{version}" if version else name
            raise VaultError(
                404,
                "CertificateNotFound",
                f"A certificate with (name/id) {where[:200]} was not found in this key vault.",
            )
        return found

    def allowed(self, client_id: str, permission: str) -> bool:
        """Whether the access policy gives ``client_id`` ``permission``."""
        return permission in self.grants.get(client_id.lower(), frozenset())

    def take_fault(self) -> Fault | None:
        """Count a request; the fault to answer it with, if one is planned."""
        with self.lock:
            self.request_count += 1
            fault = self.fault
            if fault is None:
                return None
            fault.count -= 1
            if fault.count <= 0:
                self.fault = None
            return fault
