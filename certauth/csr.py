"""Certificate signing requests (PKCS#10, RFC 2986) for certificates a company CA issues.

Where a self-signed certificate will not do (``tls_client_auth``, RFC 8705 section 2.1, or a
policy that only trusts the company CA), the service makes its key and a request here, the CA
signs it, and :func:`certauth.load_certificate` reads the issued certificate with its chain.

Pure: no file system, no network.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from certauth._keyfiles import Password, PrivateKey
from certauth.certificates import KeyType, _encryption, _new_key, parse_subject
from certauth.errors import InvalidArgumentError

__all__ = ["CertificateRequest", "make_csr", "parse_san"]

#: The SAN prefixes accepted, and what follows each.
_SAN_FORMS = "DNS:NAME, URI:URL, EMAIL:ADDRESS or IP:ADDRESS"


@dataclass(frozen=True)
class CertificateRequest:
    """A PKCS#10 request and the private key it was signed with (proof of possession)."""

    request: x509.CertificateSigningRequest
    private_key: PrivateKey
    key_type: str

    @property
    def pem(self) -> bytes:
        """The request in PEM (``-----BEGIN CERTIFICATE REQUEST-----``, RFC 7468 section 7)."""
        return self.request.public_bytes(serialization.Encoding.PEM)

    @property
    def fingerprint_sha256(self) -> str:
        """SHA-256 of the request's DER, uppercase hex: what the CA operator can compare."""
        der = self.request.public_bytes(serialization.Encoding.DER)
        return hashlib.sha256(der).hexdigest().upper()

    @property
    def subject(self) -> str:
        return self.request.subject.rfc4514_string()

    @property
    def sans(self) -> list[str]:
        """The requested subject alternative names, spelled as :func:`parse_san` takes them."""
        try:
            extension = self.request.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        except x509.ExtensionNotFound:
            return []
        return [_spell(name) for name in extension.value]

    def private_key_pem(self, password: Password = None) -> bytes:
        """The key as PKCS#8 PEM, encrypted with ``password`` when one is given."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            _encryption(password),
        )


def parse_san(value: str) -> x509.GeneralName:
    """``DNS:host``, ``URI:https://...``, ``EMAIL:a@b`` or ``IP:10.0.0.1`` as a general name
    (RFC 5280 section 4.2.1.6); the prefix is case-insensitive."""
    kind, sep, rest = value.partition(":")
    kind = kind.strip().upper()
    rest = rest.strip()
    if not sep or not rest or kind not in {"DNS", "URI", "EMAIL", "IP"}:
        raise InvalidArgumentError(
            f"{value}: not a subject alternative name; write it as {_SAN_FORMS}"
        )
    if kind == "IP":
        try:
            return x509.IPAddress(ipaddress.ip_address(rest))
        except ValueError:
            raise InvalidArgumentError(
                f"{value}: {rest!r} is not an IP address; write it as IP:10.0.0.1 or IP:::1"
            ) from None
    if kind == "URI":
        if ":" not in rest:
            raise InvalidArgumentError(
                f"{value}: a URI needs a scheme; write it as URI:https://host/path or URI:spiffe://..."
            )
        return x509.UniformResourceIdentifier(rest)
    if kind == "EMAIL":
        if "@" not in rest:
            raise InvalidArgumentError(f"{value}: not an e-mail address; write EMAIL:name@domain")
        return x509.RFC822Name(rest)
    if any(char.isspace() for char in rest) or "/" in rest:
        raise InvalidArgumentError(f"{value}: not a DNS name; write DNS:host.example.com")
    return x509.DNSName(rest)


def _spell(name: x509.GeneralName) -> str:
    if isinstance(name, x509.IPAddress):
        return f"IP:{name.value}"
    if isinstance(name, x509.UniformResourceIdentifier):
        return f"URI:{name.value}"
    if isinstance(name, x509.RFC822Name):
        return f"EMAIL:{name.value}"
    return f"DNS:{name.value}"


def _key_type_of(key: PrivateKey) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return f"rsa{key.key_size}"
    return f"ec-{key.curve.name}"


def make_csr(
    subject: str,
    *,
    sans: Iterable[str] = (),
    key_type: KeyType | str = "rsa2048",
    key: PrivateKey | None = None,
) -> CertificateRequest:
    """Make a new key (or use ``key``) and a PKCS#10 request for it, signed with SHA-256.

    ``subject`` is ``CN=NAME`` or an RFC 4514 name, as for
    :func:`certauth.generate_certificate`; ``sans`` are ``DNS:``/``URI:``/``EMAIL:``/``IP:``
    names. The request asks (RFC 2986 section 4.1, extensionRequest attribute) for the SANs,
    keyUsage digitalSignature and extended key usage clientAuth: what a client credential and
    an RFC 8705 mTLS client certificate need. The CA decides what it grants.
    """
    name = parse_subject(subject)
    alt_names = [parse_san(value) for value in sans]
    if key is None:
        key = _new_key(key_type)
    else:
        key_type = _key_type_of(key)
    builder = x509.CertificateSigningRequestBuilder().subject_name(name)
    builder = builder.add_extension(
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
    builder = builder.add_extension(
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
    )
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    request = builder.sign(key, hashes.SHA256())
    return CertificateRequest(request, key, str(key_type))
