"""Reading certificate and key files: PEM blocks, DER, PKCS#12/PFX and private keys.

Private: :func:`certauth.certificates.load_certificate` is the entry point. Every refusal is a
:class:`~certauth.errors.CertificateError` (or a subclass) that names the file and says what to do.
Pure: no network, no clock.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from certauth._files import read_input_file
from certauth._record import Record
from certauth.errors import (
    CertificateError,
    KeyMismatchError,
    PasswordError,
    UnsupportedKeyError,
)

if TYPE_CHECKING:
    from pathlib import Path

    # Imported where certificates are parsed (see certauth.certificates for why).
    from cryptography import x509

__all__ = [
    "Loaded",
    "Password",
    "PrivateKey",
    "password_bytes",
    "peek_pem_files",
    "read_certificate_and_key",
    "same_public_key",
    "short_reason",
]

#: The private key types certauth signs with. Entra ID accepts only RSA >= 2048 bits.
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
#: A password for an encrypted private key or PFX (text is encoded as UTF-8).
Password = str | bytes | None

#: Every BEGIN/END line of a PEM file, overlapping ones included (hence the lookahead).
_PEM_MARKER = re.compile(rb"(?=-----(BEGIN|END) ([A-Z0-9 ]+)-----)")
_KEY_LABELS = {
    b"PRIVATE KEY",
    b"ENCRYPTED PRIVATE KEY",
    b"RSA PRIVATE KEY",
    b"EC PRIVATE KEY",
}
_CERT_LABELS = {b"CERTIFICATE", b"X509 CERTIFICATE", b"TRUSTED CERTIFICATE"}
#: How to supply a password, for the messages that ask for one (the CLI shows its options for
#: the keyword: certauth.cli._common.cli_wording).
_HOW_TO_UNLOCK = "give it with password="


class Loaded(NamedTuple):
    """What a certificate file (and a separate key file) hold, paired: the leaf certificate, its
    private key, the other certificates (intermediates) and the source named in messages."""

    leaf: x509.Certificate
    private_key: PrivateKey | None
    chain: tuple[x509.Certificate, ...]
    source: str


def read_certificate_and_key(
    cert: str | Path | bytes,
    *,
    key: str | Path | bytes | None,
    password: Password,
    require_key: bool,
    load_key: bool,
) -> Loaded:
    """The rules of :func:`certauth.certificates.load_certificate` (see its documentation)."""
    source, data = _source_and_data(cert, what="certificate")
    parsed = _parse_bundle(data, source, password)
    if not parsed.certs:
        # Checked before any key is decrypted, so a key given in place of the certificate is
        # named as such rather than reported as a password problem.
        if parsed.key_count:
            raise CertificateError(
                f"{source}: holds a private key but no certificate; give the certificate "
                "(.crt/.pem/.pfx) here and the key with key_path=",
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
                f"{key_source}: no private key found in the file; key_path= takes a PEM or DER "
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
        matching = [c for c in certs if same_public_key(public, _public_key_or_none(c))]
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
            "key file with key_path=",
            path=source,
        )
    else:
        leaf = _end_entity(certs)
    _supported_public_key(leaf, source)
    return Loaded(leaf, private_key, _chain_order(leaf, certs), source)


def peek_pem_files(
    cert: str, *, key: str | None, password: Password
) -> tuple[bytes, PrivateKey] | None:
    """The DER of the one certificate in the PEM file ``cert``, and its private key (the one in
    ``cert``, or in the PEM file ``key``) loaded and checked as :func:`read_certificate_and_key`
    loads and checks keys; the certificate is not parsed (importing cryptography.x509 alone
    costs ~25 ms). For a look in the token cache before a certificate is loaded: whether the
    key belongs to the certificate is known only from an entry that opens (see
    ``certauth._cache_lookup``). ``None`` when the files are anything but that simple (DER or
    PFX, a chain, several keys, a PEM header in a certificate block ...): loading them
    decides. Unreadable files and bad passwords raise as when loading."""
    data = read_input_file(cert, what="certificate", error=CertificateError)
    blocks = _pem_blocks(data) if b"-----BEGIN " in data else []
    certs = [pem for label, pem in blocks if label in _CERT_LABELS]
    if len(certs) != 1 or not certs[0].startswith(b"-----BEGIN CERTIFICATE-----"):
        return None
    if key is not None:
        key_data = read_input_file(key, what="private key", error=CertificateError)
        key_source = key
        blocks = _pem_blocks(key_data) if b"-----BEGIN " in key_data else []
        if any(label in _CERT_LABELS for label, _ in blocks):
            return None
    else:
        key_source = cert
    keys = [(label, pem) for label, pem in blocks if label.endswith(b"PRIVATE KEY")]
    if len(keys) != 1 or keys[0][0] not in _KEY_LABELS:
        return None
    body = certs[0].split(b"\n")[1:-1]  # the BEGIN and END lines (_pem_blocks: BEGIN ends a line)
    if any(b":" in line for line in body):
        return None  # RFC 1421 headers: cryptography's reading of them decides
    try:
        der = base64.b64decode(b"".join(b"".join(body).split()), validate=True)
    except ValueError:
        return None
    label, pem = keys[0]
    return der, _load_pem_key(pem, label, key_source, password)


def _end_entity(certs: list[x509.Certificate]) -> x509.Certificate:
    """Without a key, the leaf is the one certificate that issued none of the others (a CA's
    bundle may list the root first); the first one when that does not single one out."""
    issuers = {c.issuer for c in certs if c.issuer != c.subject}
    candidates = [c for c in certs if c.subject not in issuers]
    return candidates[0] if len(candidates) == 1 else certs[0]


def _chain_order(
    leaf: x509.Certificate, certs: list[x509.Certificate]
) -> tuple[x509.Certificate, ...]:
    """The other certificates, each the issuer of the one before it, starting from the leaf's
    issuer (RFC 7515 section 4.1.6, x5c; RFC 8446 section 4.4.2 likewise); certificates
    outside that path keep their file order after it."""
    rest = [c for c in certs if c is not leaf]
    ordered: list[x509.Certificate] = []
    current = leaf
    while current.issuer != current.subject:
        parent = next((c for c in rest if c.subject == current.issuer), None)
        if parent is None:
            break
        rest.remove(parent)
        ordered.append(parent)
        current = parent
    return (*ordered, *rest)


def same_public_key(a: object, b: object) -> bool:
    """Whether ``a`` and ``b`` are the same RSA or EC public key (anything else: ``False``)."""
    if isinstance(a, rsa.RSAPublicKey) and isinstance(b, rsa.RSAPublicKey):
        return a.public_numbers() == b.public_numbers()
    if isinstance(a, ec.EllipticCurvePublicKey) and isinstance(b, ec.EllipticCurvePublicKey):
        return a.public_numbers() == b.public_numbers()
    return False


def password_bytes(password: Password) -> bytes | None:
    """The password as bytes (text encoded as UTF-8); ``None`` stays ``None``."""
    if password is None:
        return None
    return password.encode("utf-8") if isinstance(password, str) else password


def short_reason(exc: BaseException) -> str:
    """The first line of an exception's text (at most 120 characters), for a message."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]


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


class _Parsed(Record):
    """What one input file holds: certificates, (not yet decrypted) private keys, and the PEM
    labels that are neither (for messages)."""

    __slots__ = ("certs", "key_loaders", "other_labels")

    def __init__(
        self,
        certs: list[x509.Certificate] | None = None,
        key_loaders: list[_KeyLoader] | None = None,
        other_labels: list[str] | None = None,
    ) -> None:
        self.certs: list[x509.Certificate] = certs or []
        self.key_loaders: list[_KeyLoader] = key_loaders or []
        self.other_labels: list[str] = other_labels or []

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
    from cryptography import x509

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
    pw = password_bytes(password) or None
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
    from cryptography import x509

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
    pw = password_bytes(password)
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
            f"{source}: the private key is corrupt or unreadable ({short_reason(exc)})", path=source
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
    validation is slow, almost all of it spent proving p and q prime. Measured (cryptography 50,
    RSA-2048 PEM key, one core): ~40 ms to load with the validation, under 0.1 ms without; it
    dominated the time to certauth's first token. Skipping it is safe here because the checks
    below keep every operation on the key well-defined (n odd and = p*q with p, q > 1;
    1 < d < n; e*d = 1 mod lcm(p-1, q-1); the CRT values derived from d, p and q), and
    ``load_certificate`` then requires the key's (n, e) to be the certificate's. What is left
    unproven is only that p and q are prime; a private key file is its owner's secret, not
    input from a peer, and a key with a composite factor would merely sign assertions the
    server rejects (OpenSSL also re-checks each CRT result with the public exponent before
    releasing a signature). The checks cost 15-40 us (same measurement).
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

    pw = password_bytes(password)
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
