"""Certificates for app credentials: generate, load (PEM, DER, PFX), thumbprints, keyCredential.

Pure: no network, and the clock is a parameter (``now``) wherever time matters.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from certauth._jose import b64url_encode
from certauth._key_rules import describe_key, entra_key_problems
from certauth._keyfiles import (
    Password,
    PrivateKey,
    password_bytes,
    read_certificate_and_key,
    same_public_key,
    short_reason,
)
from certauth.errors import CertificateError, InvalidArgumentError, UnsupportedKeyError

if TYPE_CHECKING:
    from pathlib import Path

    # cryptography.x509 is imported where a certificate is parsed or built, not here: its
    # import alone (~25 ms: it compiles the RFC 4514 name regexes) would be paid by every
    # process that imports certauth, a token served from a cache included.
    from cryptography import x509
    from cryptography.x509 import Certificate as X509Certificate

__all__ = [
    "KEY_TYPES",
    "Certificate",
    "KeyType",
    "PrivateKey",
    "generate_certificate",
    "load_certificate",
    "parse_subject",
]

KeyType = Literal["rsa2048", "rsa3072", "rsa4096", "ec-p256"]
KEY_TYPES: tuple[KeyType, ...] = ("rsa2048", "rsa3072", "rsa4096", "ec-p256")
#: The key usages :func:`build_certificate` sets by name (RFC 5280 section 4.2.1.3).
KeyUsageName = Literal[
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
]

MAX_VALIDITY_DAYS = 3650
#: notBefore is set this far in the past so a host whose clock is slightly behind accepts it.
BACKDATE = dt.timedelta(minutes=5)


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
        # RFC 7515 section 4.1.7: base64url without padding. Padded or standard base64
        # thumbprints are a classic cause of AADSTS700027.
        return b64url_encode(hashlib.sha1(self.der, usedforsecurity=False).digest())

    @cached_property
    def x5t_s256(self) -> str:
        """The JWS ``x5t#S256`` header value: base64url (unpadded) of the raw SHA-256 digest."""
        return b64url_encode(hashlib.sha256(self.der).digest())  # RFC 7515 section 4.1.8

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
        from cryptography.x509.oid import NameOID

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
        return describe_key(self.public_key)

    @property
    def has_private_key(self) -> bool:
        """Whether a private key was loaded with the certificate."""
        return self.private_key is not None

    def key_matches(self) -> bool | None:
        """Whether the private key belongs to the certificate (``None`` without a key)."""
        if self.private_key is None:
            return None
        return same_public_key(self.private_key.public_key(), self.public_key)

    def require_private_key(self) -> PrivateKey:
        """The private key, or a :class:`CertificateError` saying how to supply it."""
        if self.private_key is None:
            raise CertificateError(
                f"{self._where}: no private key; give a PEM holding key and certificate, a PFX, "
                "or the key file with key_path=",
                path=self.source,
            )
        return self.private_key

    # -- suitability ---------------------------------------------------------------------------

    def entra_problems(self) -> list[str]:
        """Reasons Entra ID will refuse this certificate as an app credential (empty if none)."""
        return entra_key_problems(self.public_key)

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
        pw = password_bytes(password)
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


def _encryption(password: Password) -> serialization.KeySerializationEncryption:
    pw = password_bytes(password)
    if pw:
        return serialization.BestAvailableEncryption(pw)
    return serialization.NoEncryption()


# -- generation ---------------------------------------------------------------------------------


def parse_subject(subject: str) -> x509.Name:
    """Parse ``CN=billing-api`` or a full RFC 4514 name (``CN=api,O=Contoso,C=US``)."""
    from cryptography import x509

    text = subject.strip()
    if not text or "=" not in text:
        raise InvalidArgumentError(
            f"subject {subject!r} does not parse; write it as CN=NAME or an RFC 4514 name "
            "such as 'CN=billing-api,O=Contoso'"
        )
    try:
        name = x509.Name.from_rfc4514_string(text)
    except ValueError as exc:
        why = f" ({short_reason(exc)})" if str(exc) else ""
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
            f"days={days!r}: give a whole number of days from 1 to {MAX_VALIDITY_DAYS}"
        )
    if days > MAX_VALIDITY_DAYS:
        raise InvalidArgumentError(
            f"days={days} is more than {MAX_VALIDITY_DAYS} (10 years); rotate certificates "
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
    key: PrivateKey | None = None,
) -> Certificate:
    """Create a self-signed certificate and its private key for an app credential.

    RSA 2048 by default (what Entra ID expects); ``ec-p256`` works for generic OAuth servers
    only. SHA-256 signature, random serial, ``CA:false``, keyUsage digitalSignature, extended
    key usage clientAuth, a subject key identifier; notBefore is backdated five minutes for
    hosts whose clock lags. ``key`` certifies an existing key instead of a new one (a key
    object whose ``sign`` a PKCS#11 token performs, see
    :func:`certauth.signers.pkcs11.generate_certificate_in_token`); ``key_type`` is then
    unused.
    """
    from cryptography.x509.oid import ExtendedKeyUsageOID

    check_validity_days(days)
    name = parse_subject(subject)
    if key is None:
        key = _new_key(key_type)
    start = (now or _utcnow()) - BACKDATE
    return build_certificate(
        name,
        key,
        not_before=start,
        not_after=start + BACKDATE + dt.timedelta(days=days),
        ca=False,
        key_usage=["digital_signature"],
        extended_key_usage=[ExtendedKeyUsageOID.CLIENT_AUTH],
        key_identifiers=True,
    )


def build_certificate(
    subject: str | x509.Name,
    key: PrivateKey,
    *,
    not_before: dt.datetime,
    not_after: dt.datetime,
    issuer: Certificate | None = None,
    ca: bool | None = None,
    path_length: int | None = None,
    key_usage: Iterable[KeyUsageName] = (),
    extended_key_usage: Iterable[x509.ObjectIdentifier] = (),
    subject_alt_names: Iterable[str] = (),
    key_identifiers: bool = False,
) -> Certificate:
    """Make one X.509 certificate for ``key``: the builder behind every certificate certauth
    makes (app credentials, the emulator's CA, TLS and signing certificates).

    Self-signed unless ``issuer`` is given: a CA :class:`Certificate` with its private key,
    which then signs. Always a random serial number and a SHA-256 signature. Each extension is
    added only when asked for, in this order (RFC 5280 section 4.2.1): basic constraints
    (``ca`` true or false, critical; ``path_length`` only for a CA), key usage (critical;
    names such as ``"digital_signature"``), extended key usage (OIDs such as
    ``ExtendedKeyUsageOID.CLIENT_AUTH``), subject alternative names (each an IP address or a
    DNS name), and with ``key_identifiers`` the subject key identifier plus, for an issued
    certificate, the authority key identifier. A CA and a server certificate it issues::

        ca = build_certificate("CN=test CA", ca_key, not_before=start, not_after=end,
                               ca=True, path_length=0, key_usage=["key_cert_sign", "crl_sign"],
                               key_identifiers=True)
        server = build_certificate("CN=localhost", key, not_before=start, not_after=end,
                                   issuer=ca, ca=False, key_usage=["digital_signature"],
                                   subject_alt_names=["localhost", "127.0.0.1"],
                                   key_identifiers=True)
    """
    from cryptography import x509

    name = subject if isinstance(subject, x509.Name) else parse_subject(subject)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name if issuer is None else issuer.x509.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if ca is not None:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=ca, path_length=path_length), critical=True
        )
    usages = frozenset(key_usage)
    if usages:
        builder = builder.add_extension(_key_usage(usages), critical=True)
    purposes = list(extended_key_usage)
    if purposes:
        builder = builder.add_extension(x509.ExtendedKeyUsage(purposes), critical=False)
    alt_names = [_general_name(value) for value in subject_alt_names]
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    if key_identifiers:
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        if issuer is not None:
            builder = builder.add_extension(_authority_key_identifier(issuer), critical=False)
    signer = key if issuer is None else issuer.require_private_key()
    return Certificate(builder.sign(signer, hashes.SHA256()), key)


def _key_usage(usages: frozenset[KeyUsageName]) -> x509.KeyUsage:
    from cryptography import x509

    return x509.KeyUsage(
        digital_signature="digital_signature" in usages,
        content_commitment="content_commitment" in usages,
        key_encipherment="key_encipherment" in usages,
        data_encipherment="data_encipherment" in usages,
        key_agreement="key_agreement" in usages,
        key_cert_sign="key_cert_sign" in usages,
        crl_sign="crl_sign" in usages,
        encipher_only=False,
        decipher_only=False,
    )


def _general_name(value: str) -> x509.GeneralName:
    import ipaddress

    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        return x509.DNSName(value)


def _authority_key_identifier(issuer: Certificate) -> x509.AuthorityKeyIdentifier:
    from cryptography import x509

    # RFC 5280 section 4.2.1.1: the issuer's subject key identifier, when it has one.
    try:
        ski = issuer.x509.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key)
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value)


# -- loading ------------------------------------------------------------------------------------


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
    leaf, private_key, chain, source = read_certificate_and_key(
        cert, key=key, password=password, require_key=require_key, load_key=load_key
    )
    return Certificate(leaf, private_key, chain, source)
