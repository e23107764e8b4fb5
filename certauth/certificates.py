"""Certificates for app credentials: generate, load (PEM, DER, PFX), thumbprints, keyCredential.

Pure: no network, and the clock is a parameter (``now``) wherever time matters.
"""

from __future__ import annotations

import base64
import bisect
import datetime as dt
import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import Certificate as X509Certificate
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certauth._files import read_input_file
from certauth.errors import (
    CertificateError,
    InvalidArgumentError,
    KeyMismatchError,
    PasswordError,
    UnsupportedKeyError,
)

__all__ = [
    "KEY_TYPES",
    "Certificate",
    "KeyType",
    "PrivateKey",
    "generate_certificate",
    "load_certificate",
    "parse_subject",
]

#: The private key types certauth signs with. Entra ID accepts only RSA >= 2048 bits.
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
KeyType = Literal["rsa2048", "rsa3072", "rsa4096", "ec-p256"]
KEY_TYPES: tuple[KeyType, ...] = ("rsa2048", "rsa3072", "rsa4096", "ec-p256")

#: Entra ID refuses smaller RSA keys with AADSTS50032.
MIN_RSA_BITS = 2048
MAX_VALIDITY_DAYS = 3650
#: notBefore is set this far in the past so a host whose clock is slightly behind accepts it.
BACKDATE = dt.timedelta(minutes=5)

Password = str | bytes | None


def _b64url(data: bytes) -> str:
    # RFC 7515 section 2: base64url without padding. Padded or standard base64 thumbprints
    # are a classic cause of AADSTS700027.
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass(frozen=True)
class Certificate:
    """An X.509 certificate, optionally with its private key and the rest of its chain.

    Build one with :func:`generate_certificate` or :func:`load_certificate`. Thumbprints and
    other derived values are computed once and kept.
    """

    x509: X509Certificate
    private_key: PrivateKey | None = None
    #: Further certificates from the same file (intermediates), leaf excluded; sent as ``x5c``.
    chain: tuple[X509Certificate, ...] = ()
    #: Where the certificate was read from, for messages (``None`` when generated).
    source: str | None = field(default=None, compare=False)

    # -- identity -------------------------------------------------------------------------

    @cached_property
    def der(self) -> bytes:
        """The certificate in DER form (what the thumbprints are computed over)."""
        return self.x509.public_bytes(serialization.Encoding.DER)

    @cached_property
    def pem(self) -> bytes:
        """The certificate in PEM form: the public part to upload to an app registration."""
        return self.x509.public_bytes(serialization.Encoding.PEM)

    @cached_property
    def thumbprint_sha1(self) -> str:
        """SHA-1 of the DER certificate: 40 uppercase hex characters, as the Entra portal shows."""
        return hashlib.sha1(self.der, usedforsecurity=False).hexdigest().upper()

    @cached_property
    def thumbprint_sha256(self) -> str:
        """SHA-256 of the DER certificate as 64 uppercase hex characters."""
        return hashlib.sha256(self.der).hexdigest().upper()

    @cached_property
    def x5t(self) -> str:
        """The JWS ``x5t`` header value: base64url (unpadded) of the raw SHA-1 digest."""
        return _b64url(hashlib.sha1(self.der, usedforsecurity=False).digest())

    @cached_property
    def x5t_s256(self) -> str:
        """The JWS ``x5t#S256`` header value: base64url (unpadded) of the raw SHA-256 digest."""
        return _b64url(hashlib.sha256(self.der).digest())

    def thumbprint(self, form: str = "sha1") -> str:
        """One thumbprint by name: ``sha1``, ``sha256``, ``x5t`` or ``x5t#S256``."""
        forms = {
            "sha1": self.thumbprint_sha1,
            "sha256": self.thumbprint_sha256,
            "x5t": self.x5t,
            "x5t#s256": self.x5t_s256,
        }
        try:
            return forms[form.lower()]
        except KeyError:
            raise InvalidArgumentError(
                f"unknown thumbprint format {form!r}; use one of sha1, sha256, x5t, x5t#S256"
            ) from None

    @cached_property
    def validity_epochs(self) -> tuple[float, float]:
        """``not_before`` and ``not_after`` as epoch seconds, for checks on hot paths (signing
        an assertion compares numbers instead of building datetimes)."""
        return self.not_before.timestamp(), self.not_after.timestamp()

    @cached_property
    def _memo(self) -> dict[Any, Any]:
        # Values other modules derive from this (immutable) certificate once and reuse, such
        # as assertion.py's encoded JWS headers.
        return {}

    @property
    def subject(self) -> str:
        """The subject as an RFC 4514 string, e.g. ``CN=billing-api``."""
        return self.x509.subject.rfc4514_string()

    @property
    def issuer(self) -> str:
        """The issuer as an RFC 4514 string."""
        return self.x509.issuer.rfc4514_string()

    @property
    def common_name(self) -> str | None:
        """The subject's first CN, if any."""
        values = self.x509.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(values[0].value) if values else None

    @property
    def serial_number(self) -> str:
        """The serial number as uppercase hex."""
        return format(self.x509.serial_number, "X")

    @property
    def not_before(self) -> dt.datetime:
        """Start of validity (timezone-aware UTC)."""
        return self.x509.not_valid_before_utc

    @property
    def not_after(self) -> dt.datetime:
        """End of validity (timezone-aware UTC)."""
        return self.x509.not_valid_after_utc

    # -- keys -------------------------------------------------------------------------------

    @property
    def public_key(self) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
        """The certificate's public key (RSA or EC; other types are refused at load)."""
        key = self.x509.public_key()
        if not isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
            raise UnsupportedKeyError(
                f"{self._where}: the certificate's key type {type(key).__name__} is not "
                "supported; use an RSA (or EC) certificate",
                path=self.source,
            )
        return key

    @property
    def key_type(self) -> str:
        """``"RSA"`` or ``"EC"``."""
        return "RSA" if isinstance(self.public_key, rsa.RSAPublicKey) else "EC"

    @property
    def key_size(self) -> int:
        """Key size in bits (the modulus for RSA, the curve size for EC)."""
        return self.public_key.key_size

    @property
    def key_description(self) -> str:
        """A short human description such as ``RSA 2048`` or ``EC P-256``."""
        key = self.public_key
        if isinstance(key, ec.EllipticCurvePublicKey):
            curve = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
            return f"EC {curve.get(key.curve.name, key.curve.name)}"
        return f"RSA {key.key_size}"

    @property
    def has_private_key(self) -> bool:
        """Whether a private key was loaded with the certificate."""
        return self.private_key is not None

    def key_matches(self) -> bool | None:
        """Whether the private key belongs to the certificate (``None`` without a key)."""
        if self.private_key is None:
            return None
        return _same_public_key(self.private_key.public_key(), self.public_key)

    def require_private_key(self) -> PrivateKey:
        """The private key, or a :class:`CertificateError` saying how to supply it."""
        if self.private_key is None:
            raise CertificateError(
                f"{self._where}: no private key; give a PEM holding key and certificate, a PFX, "
                "or the key file with --key",
                path=self.source,
            )
        return self.private_key

    # -- suitability ---------------------------------------------------------------------------

    def entra_problems(self) -> list[str]:
        """Reasons Entra ID will refuse this certificate as an app credential (empty if none)."""
        key = self.public_key
        if isinstance(key, ec.EllipticCurvePublicKey):
            return [
                f"{self.key_description} key: Entra ID will not accept it (app credentials "
                "must be RSA; it answers AADSTS5002738); create one with --key rsa2048"
            ]
        if key.key_size < MIN_RSA_BITS:
            return [
                f"RSA {key.key_size} key: Entra ID will not accept it (it requires at least "
                f"{MIN_RSA_BITS} bits; it answers AADSTS50032); create a new certificate with "
                "--key rsa2048"
            ]
        return []

    def days_left(self, now: dt.datetime | None = None) -> float:
        """Days until ``not_after`` (negative once expired)."""
        now = now or _utcnow()
        return (self.not_after - now).total_seconds() / 86400

    def validity_problem(self, now: dt.datetime | None = None) -> str | None:
        """Why the certificate is not valid at ``now`` (``None`` when it is)."""
        now = now or _utcnow()
        if now < self.not_before:
            return (
                f"not yet valid: valid from {_iso(self.not_before)} "
                f"(now {_iso(now)}); check the host clock or wait"
            )
        if now > self.not_after:
            return (
                f"expired on {_iso(self.not_after)} (now {_iso(now)}); "
                "create and register a new certificate"
            )
        return None

    # -- export -------------------------------------------------------------------------------

    def key_credential(
        self,
        *,
        display_name: str | None = None,
        key_id: str | None = None,
    ) -> dict[str, Any]:
        """The Microsoft Graph ``keyCredential`` object for this certificate's public part.

        A Graph PATCH of ``keyCredentials`` replaces the whole array: resend existing keys.
        """
        name = display_name if display_name is not None else self.subject
        if len(name) > 90:
            raise InvalidArgumentError(
                f"display name is {len(name)} characters; Microsoft Graph allows at most 90"
            )
        return {
            # Graph's customKeyIdentifier is binary (base64 in JSON), at most 32 bytes; the
            # portal and az fill it with the SHA-1 thumbprint, so we do the same.
            "customKeyIdentifier": base64.b64encode(
                hashlib.sha1(self.der, usedforsecurity=False).digest()
            ).decode("ascii"),
            "displayName": name,
            "endDateTime": _iso(self.not_after),
            "key": base64.b64encode(self.der).decode("ascii"),
            "keyId": key_id or _random_key_id(),
            "startDateTime": _iso(self.not_before),
            "type": "AsymmetricX509Cert",
            "usage": "Verify",
        }

    def private_key_pem(self, password: Password = None) -> bytes:
        """The private key as PKCS#8 PEM, encrypted with the best available scheme if a
        password is given."""
        key = self.require_private_key()
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            _encryption(password),
        )

    def to_pfx(self, password: Password = None, *, friendly_name: str | None = None) -> bytes:
        """A PKCS#12 (PFX) file with the key and certificate (and chain).

        With a password: PBES2 AES-256-CBC with an HMAC-SHA256 MAC, which OpenSSL 1.1+, and
        Windows 10 1709+ read. Without one, it is unencrypted (the key is then in the clear).
        """
        from cryptography.hazmat.primitives.serialization import pkcs12  # ~8 ms; PFX only

        key = self.require_private_key()
        pw = _password_bytes(password)
        if pw:
            encryption: serialization.KeySerializationEncryption = (
                serialization.PrivateFormat.PKCS12.encryption_builder()
                .kdf_rounds(100_000)
                .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
                .hmac_hash(hashes.SHA256())
                .build(pw)
            )
        else:
            encryption = serialization.NoEncryption()
        name = (friendly_name or self.common_name or "certauth").encode("utf-8")
        return pkcs12.serialize_key_and_certificates(
            name, key, self.x509, list(self.chain) or None, encryption
        )

    @property
    def _where(self) -> str:
        return self.source or "certificate"


def _random_key_id() -> str:
    import uuid  # here: uuid imports platform, ~3 ms that loading a certificate need not pay

    return str(uuid.uuid4())


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _same_public_key(a: object, b: object) -> bool:
    if isinstance(a, rsa.RSAPublicKey) and isinstance(b, rsa.RSAPublicKey):
        return a.public_numbers() == b.public_numbers()
    if isinstance(a, ec.EllipticCurvePublicKey) and isinstance(b, ec.EllipticCurvePublicKey):
        return a.public_numbers() == b.public_numbers()
    return False


def _password_bytes(password: Password) -> bytes | None:
    if password is None:
        return None
    return password.encode("utf-8") if isinstance(password, str) else password


def _encryption(password: Password) -> serialization.KeySerializationEncryption:
    pw = _password_bytes(password)
    if pw:
        return serialization.BestAvailableEncryption(pw)
    return serialization.NoEncryption()


# -- generation ---------------------------------------------------------------------------------


def parse_subject(subject: str) -> x509.Name:
    """Parse ``CN=billing-api`` or a full RFC 4514 name (``CN=api,O=Contoso,C=US``)."""
    text = subject.strip()
    if not text or "=" not in text:
        raise InvalidArgumentError(
            f"subject {subject!r} does not parse; write it as CN=NAME or an RFC 4514 name "
            "such as 'CN=billing-api,O=Contoso'"
        )
    try:
        name = x509.Name.from_rfc4514_string(text)
    except ValueError as exc:
        why = f" ({_short(exc)})" if str(exc) else ""
        raise InvalidArgumentError(
            f"subject {subject!r} does not parse{why}; write it as CN=NAME or an RFC 4514 "
            "name such as 'CN=billing-api,O=Contoso'"
        ) from None
    if not list(name):
        raise InvalidArgumentError(f"subject {subject!r} is empty; write it as CN=NAME")
    return name


def check_validity_days(days: int) -> int:
    """Return ``days`` if it is a validity certauth issues (1 to 3650), else raise
    :class:`~certauth.errors.InvalidArgumentError`."""
    if isinstance(days, bool) or not isinstance(days, int) or days <= 0:
        raise InvalidArgumentError(
            f"--days {days!r}: give a whole number of days from 1 to {MAX_VALIDITY_DAYS}"
        )
    if days > MAX_VALIDITY_DAYS:
        raise InvalidArgumentError(
            f"--days {days} is more than {MAX_VALIDITY_DAYS} (10 years); rotate certificates "
            "more often than that"
        )
    return days


def _new_key(key_type: str) -> PrivateKey:
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    bits = {"rsa2048": 2048, "rsa3072": 3072, "rsa4096": 4096}.get(key_type)
    if bits is None:
        raise InvalidArgumentError(
            f"unknown key type {key_type!r}; use one of {', '.join(KEY_TYPES)}"
        )
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def generate_certificate(
    subject: str = "CN=certauth",
    *,
    key_type: KeyType | str = "rsa2048",
    days: int = 365,
    now: dt.datetime | None = None,
) -> Certificate:
    """Create a self-signed certificate and its private key for an app credential.

    RSA 2048 by default (what Entra ID expects); ``ec-p256`` works for generic OAuth servers
    only. SHA-256 signature, random serial, ``CA:false``, keyUsage digitalSignature, extended
    key usage clientAuth, a subject key identifier; notBefore is backdated five minutes for
    hosts whose clock lags.
    """
    check_validity_days(days)
    name = parse_subject(subject)
    key = _new_key(key_type)
    start = (now or _utcnow()) - BACKDATE
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + BACKDATE + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Certificate(cert, key)


# -- loading ------------------------------------------------------------------------------------

#: Every BEGIN/END line of a PEM file, overlapping ones included (hence the lookahead).
_PEM_MARKER = re.compile(rb"(?=-----(BEGIN|END) ([A-Z0-9 ]+)-----)")
_KEY_LABELS = {
    b"PRIVATE KEY",
    b"ENCRYPTED PRIVATE KEY",
    b"RSA PRIVATE KEY",
    b"EC PRIVATE KEY",
}
_CERT_LABELS = {b"CERTIFICATE", b"X509 CERTIFICATE", b"TRUSTED CERTIFICATE"}
#: How to supply a password, for the messages that ask for one.
_HOW_TO_UNLOCK = (
    "set AZURE_CLIENT_CERTIFICATE_PASSWORD or pass --password-env VAR / --password-file FILE"
)


def load_certificate(
    cert: str | Path | bytes,
    *,
    key: str | Path | bytes | None = None,
    password: Password = None,
    require_key: bool = False,
    load_key: bool = True,
) -> Certificate:
    """Load a certificate, and its private key when present.

    ``cert`` is a path or the file's bytes: PEM (a certificate, or key and certificate in one
    file in any order, plus any intermediates), DER, or PKCS#12/PFX. ``key`` is a separate key
    file (PKCS#8 PEM, encrypted or not, traditional RSA/EC PEM, DER, or a PFX); when given, it
    replaces any key in ``cert``. ``password`` decrypts an encrypted key or PFX. The key is
    checked against the certificate: a mismatch raises
    :class:`~certauth.errors.KeyMismatchError`. ``load_key=False`` reads only the certificate
    (no password is needed for an encrypted PEM key next to it; a PFX still needs its password).
    """
    source, data = _source_and_data(cert, what="certificate")
    parsed = _parse_bundle(data, source, password)
    if not parsed.certs:
        # Checked before any key is decrypted, so a key given in place of the certificate is
        # named as such rather than reported as a password problem.
        if parsed.key_count:
            raise CertificateError(
                f"{source}: holds a private key but no certificate; give the certificate "
                "(.crt/.pem/.pfx) here and the key with --key",
                path=source,
            )
        found = f" (found: {', '.join(parsed.other_labels)})" if parsed.other_labels else ""
        raise CertificateError(
            f"{source}: not a certificate{found}; expected a PEM, DER or PFX certificate",
            path=source,
        )
    keys: list[PrivateKey] = []
    key_source = source
    if load_key and key is not None:
        key_source, key_data = _source_and_data(key, what="private key")
        keys = _parse_bundle(key_data, key_source, password, keys_only=True).load_keys(password)
        if not keys:
            raise CertificateError(
                f"{key_source}: no private key found in the file; --key takes a PEM or DER "
                "private key",
                path=key_source,
            )
    elif load_key:
        keys = parsed.load_keys(password)
    if len(keys) > 1:
        raise CertificateError(
            f"{key_source}: holds {len(keys)} private keys; keep one key per file",
            path=key_source,
        )
    certs = parsed.certs
    leaf = certs[0]
    private_key = keys[0] if keys else None
    if private_key is not None:
        public = private_key.public_key()
        matching = [c for c in certs if _same_public_key(public, _public_key_or_none(c))]
        if not matching:
            # An unsupported certificate cannot match any key certauth loads: say that instead.
            _supported_public_key(leaf, source)
            where = f"{source} and {key_source}" if key_source != source else source
            raise KeyMismatchError(
                f"{where}: the private key does not belong to the certificate "
                f"(thumbprint {_sha1_hex(leaf)}); pair each certificate with the key it was "
                "created with",
                path=key_source,
            )
        leaf = matching[0]
    elif require_key:
        raise CertificateError(
            f"{source}: no private key; give a PEM holding key and certificate, a PFX, or the "
            "key file with --key",
            path=source,
        )
    _supported_public_key(leaf, source)
    chain = tuple(c for c in certs if c is not leaf)
    return Certificate(leaf, private_key, chain, source)


def _public_key_or_none(cert: x509.Certificate) -> object:
    # cryptography parses a certificate's key lazily: a damaged key surfaces only here.
    try:
        return cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return None


def _supported_public_key(cert: x509.Certificate, source: str) -> None:
    try:
        key = cert.public_key()
    except ValueError:
        raise CertificateError(
            f"{source}: the certificate's public key is corrupt; re-export the certificate",
            path=source,
        ) from None
    except UnsupportedAlgorithm:
        raise UnsupportedKeyError(
            f"{source}: the certificate's key type is not supported; certauth signs with RSA "
            "(what Entra ID takes) or EC keys",
            path=source,
        ) from None
    if not isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
        raise UnsupportedKeyError(
            f"{source}: the certificate's key type ({type(key).__name__.lstrip('_')}) is not "
            "supported; certauth signs with RSA (what Entra ID takes) or EC keys",
            path=source,
        )


def _sha1_hex(cert: x509.Certificate) -> str:
    der = cert.public_bytes(serialization.Encoding.DER)
    return hashlib.sha1(der, usedforsecurity=False).hexdigest().upper()


def _source_and_data(value: str | Path | bytes, *, what: str) -> tuple[str, bytes]:
    if isinstance(value, bytes):
        if not value.strip():
            raise CertificateError(f"the {what} data is empty")
        return f"<{what} data>", value
    return str(value), read_input_file(value, what=what, error=CertificateError)


#: Loads one private key given the password (keys are decrypted only once they are needed).
_KeyLoader = Callable[[Password], PrivateKey]


@dataclass
class _Parsed:
    """What one input file holds: certificates and (not yet decrypted) private keys."""

    certs: list[x509.Certificate] = field(default_factory=list)
    key_loaders: list[_KeyLoader] = field(default_factory=list)
    #: PEM labels that are neither certificates nor keys (for messages).
    other_labels: list[str] = field(default_factory=list)

    @property
    def key_count(self) -> int:
        return len(self.key_loaders)

    def load_keys(self, password: Password) -> list[PrivateKey]:
        return [load(password) for load in self.key_loaders]


def _loaded(key: PrivateKey) -> _KeyLoader:
    return lambda _password: key


def _parse_bundle(
    data: bytes, source: str, password: Password, *, keys_only: bool = False
) -> _Parsed:
    """Certificates and keys in one file of any supported format."""
    if b"-----BEGIN " in data:
        return _parse_pem(data, source)
    if _looks_like_pkcs12(data):
        return _parse_pfx(data, source, password)
    if keys_only:
        return _Parsed(key_loaders=[_loaded(_load_der_key(data, source, password))])
    try:
        return _Parsed(certs=[x509.load_der_x509_certificate(data)])
    except (ValueError, x509.InvalidVersion):  # InvalidVersion is no ValueError
        pass
    # A DER private key where a certificate is expected: recognise it without a password.
    try:
        key = serialization.load_der_private_key(data, None, unsafe_skip_rsa_key_validation=True)
    except TypeError:  # an encrypted PKCS#8 key
        return _Parsed(key_loaders=[lambda pw: _load_der_key(data, source, pw)])
    except (ValueError, UnsupportedAlgorithm):
        raise CertificateError(
            f"{source}: not a readable certificate (expected PEM, DER or PFX); check the file",
            path=source,
        ) from None
    return _Parsed(key_loaders=[lambda _pw: _supported_key(key, source)])


def _load_der_key(data: bytes, source: str, password: Password) -> PrivateKey:
    pw = _password_bytes(password) or None
    try:
        key = serialization.load_der_private_key(data, pw, unsafe_skip_rsa_key_validation=True)
    except TypeError:
        # cryptography raises TypeError both for "encrypted but no password" and for
        # "password given but the key is not encrypted".
        if pw is None:
            raise PasswordError(
                f"{source}: the private key is encrypted and no password was given; "
                f"{_HOW_TO_UNLOCK}",
                path=source,
            ) from None
        return _load_der_key(data, source, None)
    except ValueError:
        if pw is not None:
            raise PasswordError(
                f"{source}: wrong password for the encrypted private key, or the file is "
                "corrupt; check the password source",
                path=source,
            ) from None
        raise CertificateError(
            f"{source}: not a readable private key (expected PEM, DER or PFX); check the file",
            path=source,
        ) from None
    except UnsupportedAlgorithm:
        raise UnsupportedKeyError(
            f"{source}: the private key uses an unsupported algorithm; use an RSA key",
            path=source,
        ) from None
    return _supported_key(key, source)


def _pem_blocks(data: bytes) -> list[tuple[bytes, bytes]]:
    """``(label, block)`` for each ``BEGIN X`` line (followed by a line break) and the first
    ``END X`` after it, in order (RFC 7468 section 2).

    One pass over the markers plus a binary search per block. The obvious single regex
    (``BEGIN (X)...END \\1`` with a back-reference) rescans the rest of the input for every
    BEGIN line without an END: minutes for a 1 MiB file of BEGIN lines.
    """
    markers = list(_PEM_MARKER.finditer(data))
    ends: dict[bytes, list[int]] = {}
    for marker in markers:
        if marker[1] == b"END":
            ends.setdefault(marker[2], []).append(marker.start())
    blocks: list[tuple[bytes, bytes]] = []
    resume = 0
    for marker in markers:
        if marker[1] != b"BEGIN" or marker.start() < resume:
            continue
        label = marker[2]
        line_end = marker.start() + len(b"-----BEGIN -----") + len(label)
        if data.startswith(b"\n", line_end):
            body = line_end + 1
        elif data.startswith(b"\r\n", line_end):
            body = line_end + 2
        else:
            continue
        positions = ends.get(label, [])
        index = bisect.bisect_left(positions, body)
        if index == len(positions):
            continue
        stop = positions[index] + len(b"-----END -----") + len(label)
        blocks.append((label, data[marker.start() : stop]))
        resume = stop
    return blocks


def _parse_pem(data: bytes, source: str) -> _Parsed:
    parsed = _Parsed()
    blocks = _pem_blocks(data)
    if not blocks:
        raise CertificateError(
            f"{source}: a PEM header without a matching END line; the file is truncated",
            path=source,
        )
    for label, pem in blocks:
        if label in _CERT_LABELS:
            try:
                parsed.certs.append(x509.load_pem_x509_certificate(pem))
            except (ValueError, x509.InvalidVersion):
                raise CertificateError(
                    f"{source}: a CERTIFICATE block is corrupt; re-export the certificate",
                    path=source,
                ) from None
        elif label in _KEY_LABELS:
            parsed.key_loaders.append(_pem_key_loader(pem, label, source))
        elif label.endswith(b"PRIVATE KEY"):
            parsed.key_loaders.append(_unsupported_pem_key(label.decode("ascii"), source))
        else:
            parsed.other_labels.append(label.decode("ascii"))
    return parsed


def _pem_key_loader(pem: bytes, label: bytes, source: str) -> _KeyLoader:
    return lambda password: _load_pem_key(pem, label, source, password)


def _unsupported_pem_key(label: str, source: str) -> _KeyLoader:
    def load(_password: Password) -> PrivateKey:
        raise UnsupportedKeyError(
            f"{source}: unsupported private key ({label}); certauth needs an RSA (or EC) key "
            "in PKCS#8 or traditional PEM",
            path=source,
        )

    return load


def _load_pem_key(block: bytes, label: bytes, source: str, password: Password) -> PrivateKey:
    encrypted = label == b"ENCRYPTED PRIVATE KEY" or b"Proc-Type: 4,ENCRYPTED" in block
    pw = _password_bytes(password)
    if encrypted and not pw:
        raise PasswordError(
            f"{source}: the private key is encrypted and no password was given; {_HOW_TO_UNLOCK}",
            path=source,
        )
    try:
        key = serialization.load_pem_private_key(
            block, pw if encrypted else None, unsafe_skip_rsa_key_validation=True
        )
    except (ValueError, TypeError) as exc:
        if encrypted:
            raise PasswordError(
                f"{source}: wrong password for the encrypted private key; check the "
                "password source",
                path=source,
            ) from None
        raise CertificateError(
            f"{source}: the private key is corrupt or unreadable ({_short(exc)})", path=source
        ) from None
    except UnsupportedAlgorithm:
        raise UnsupportedKeyError(
            f"{source}: the private key uses an unsupported algorithm; use an RSA key",
            path=source,
        ) from None
    return _supported_key(key, source)


def _supported_key(key: object, source: str) -> PrivateKey:
    if isinstance(key, rsa.RSAPrivateKey):
        _check_rsa_key(key, source)
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key
    raise UnsupportedKeyError(
        f"{source}: unsupported key type {type(key).__name__.lstrip('_')}; certauth signs with "
        "RSA (what Entra ID takes) or EC keys",
        path=source,
    )


def _check_rsa_key(key: rsa.RSAPrivateKey, source: str) -> None:
    """Check that an RSA private key is internally consistent (what OpenSSL's RSA_check_key
    does, minus its primality tests of p and q).

    Keys are loaded with ``unsafe_skip_rsa_key_validation=True`` because OpenSSL's full
    validation costs ~35 ms for RSA-2048, almost all of it proving p and q prime: ANCHORS.md
    shows the peers paying it for every assertion, and it dominated certauth's first token.
    Skipping it is safe here because the checks below keep every operation on the key
    well-defined (n odd and = p*q with p, q > 1; 1 < d < n; e*d = 1 mod lcm(p-1, q-1); the CRT
    values derived from d, p and q), and ``load_certificate`` then requires the key's (n, e) to
    be the certificate's. What is left unproven is only that p and q are prime; a private key
    file is its owner's secret, not input from a peer, and a key with a composite factor would
    merely sign assertions the server rejects (OpenSSL also re-checks each CRT result with the
    public exponent before releasing a signature). Costs ~15 us.
    """
    numbers = key.private_numbers()
    p, q, d = numbers.p, numbers.q, numbers.d
    n, e = numbers.public_numbers.n, numbers.public_numbers.e
    consistent = (
        p > 1
        and q > 1
        and p * q == n
        and n % 2 == 1
        and e % 2 == 1
        and 1 < e < n
        and 1 < d < n
        and (e * d) % math.lcm(p - 1, q - 1) == 1
        and numbers.dmp1 == d % (p - 1)
        and numbers.dmq1 == d % (q - 1)
        and (numbers.iqmp * q) % p == 1
    )
    if not consistent:
        raise CertificateError(
            f"{source}: the RSA private key is corrupt (its parameters do not fit together); "
            "restore the key file from where it was created",
            path=source,
        )


def _looks_like_pkcs12(data: bytes) -> bool:
    # PFX = SEQUENCE { version INTEGER 3, authSafe ContentInfo, ... } (RFC 7292 section 4).
    # Checking the version right after the outer SEQUENCE header tells a PFX from a DER
    # certificate (whose first element is another SEQUENCE) without trying a password.
    if len(data) < 8 or data[0] != 0x30:
        return False
    length_byte = data[1]
    offset = 2 + (length_byte & 0x7F if length_byte & 0x80 else 0)
    return data[offset : offset + 3] == b"\x02\x01\x03"


def _parse_pfx(data: bytes, source: str, password: Password) -> _Parsed:
    # Imported here: ~8 ms that PEM and DER users (and every process start) need not pay.
    from cryptography.hazmat.primitives.serialization import pkcs12

    pw = _password_bytes(password)
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, pw)
    except ValueError:
        if pw is None:
            # Some PFX files use an empty password rather than none.
            try:
                key, cert, extra = pkcs12.load_key_and_certificates(data, b"")
            except ValueError:
                raise PasswordError(
                    f"{source}: the PFX is password-protected (or corrupt) and no password was "
                    f"given; {_HOW_TO_UNLOCK}",
                    path=source,
                ) from None
        else:
            raise PasswordError(
                f"{source}: wrong password for the PFX, or the file is corrupt; check the "
                "password source",
                path=source,
            ) from None
    except UnsupportedAlgorithm:
        raise CertificateError(
            f"{source}: the PFX uses an encryption this OpenSSL cannot read (old RC2?); "
            "re-export it with AES-256",
            path=source,
        ) from None
    certs = ([cert] if cert is not None else []) + list(extra)
    loaders = [_loaded(_supported_key(key, source))] if key is not None else []
    return _Parsed(certs=certs, key_loaders=loaders)


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]
