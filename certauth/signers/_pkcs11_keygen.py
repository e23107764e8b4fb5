"""A key pair made inside a PKCS#11 token, and its self-signed certificate signed by the token.

Private: :func:`certauth.signers.pkcs11.generate_certificate_in_token` is the public name.

How the token signs the certificate: cryptography's ``CertificateBuilder.sign`` takes any
object implementing its ``RSAPrivateKey`` / ``EllipticCurvePrivateKey`` interface and calls only
its ``sign`` and ``public_key``. A small key class whose ``sign`` asks the token
(:class:`_TokenRSAKey`, :class:`_TokenECKey`) lets certauth's one certificate builder
(:func:`certauth.certificates.generate_certificate`: same extensions, serial, backdating as
``cert create`` with a key file) make the certificate, with no DER assembled by hand and no
throw-away key: the cleanest of the ways to sign a TBS externally.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from certauth.certificates import Certificate, KeyType, generate_certificate
from certauth.errors import InvalidArgumentError, SignerError
from certauth.signers._pkcs11_uri import Pkcs11Uri, resolve_module, resolve_pin
from certauth.signers.pkcs11 import BACKEND, Pkcs11Signer, _module, _objects, _Token, token_sign

#: PKCS#11 key lengths certauth generates (``cert create --key``).
_RSA_BITS = {"rsa2048": 2048, "rsa3072": 3072, "rsa4096": 4096}
#: The OID of P-256 (RFC 5480 section 2.1.1.1) as DER, the CKA_EC_PARAMS of an ec-p256 key.
_P256_PARAMS = bytes.fromhex("06082a8648ce3d030107")


@contextmanager
def generate_certificate_in_token(
    uri: str,
    subject: str = "CN=certauth",
    *,
    key_type: KeyType | str = "rsa2048",
    days: int = 365,
    module: str | os.PathLike[str] | None = None,
    pin: str | None = None,
) -> Iterator[Pkcs11Signer]:
    """Generate a key pair inside the token ``uri`` names, certify it and store the certificate
    next to it; yield a :class:`Pkcs11Signer` for the new key. Use it with ``with``::

        with generate_certificate_in_token(
            "pkcs11:token=certauth;object=billing-api", "CN=billing-api",
            module="/usr/lib/softhsm/libsofthsm2.so", pin=pin,
        ) as signer:
            Path("billing-api.crt").write_bytes(signer.certificate.pem)

    The private key is made by the token (``CKA_TOKEN``, ``CKA_PRIVATE``, ``CKA_SENSITIVE``
    true, ``CKA_EXTRACTABLE`` false: it can sign and never be read), labelled ``object=`` (which
    the URI must give) with the URI's ``id=`` or 16 random bytes. The self-signed certificate
    is built as :func:`~certauth.certificates.generate_certificate` builds it, signed by the
    token, and stored on the token (``CKO_CERTIFICATE``, same label and id). The signer's
    :attr:`~Pkcs11Signer.description` is the URI with the id. If the ``with`` block raises,
    the key pair and the certificate are deleted from the token again. An object with the
    same label or id is never replaced: that is refused before anything is made.
    """
    parsed = Pkcs11Uri.parse(uri)
    if parsed.object is None:
        raise InvalidArgumentError(
            f"{parsed.redacted()}: name the new key with object=LABEL in the URI "
            "(e.g. pkcs11:token=certauth;object=billing-api)"
        )
    if parsed.type not in (None, "private"):
        raise InvalidArgumentError(
            f"{parsed.redacted()}: type={parsed.type}; a new key pair is made for type=private "
            "(or no type)"
        )
    if key_type not in (*_RSA_BITS, "ec-p256"):
        raise InvalidArgumentError(
            f"key_type={key_type!r}: use one of {', '.join((*_RSA_BITS, 'ec-p256'))}"
        )
    resolved_pin = resolve_pin(parsed, pin)
    token = _Token(parsed, resolve_module(parsed, module), resolved_pin, rw=True)
    ident = parsed.id if parsed.id is not None else os.urandom(16)
    made: list[Any] = []
    try:
        with token.lock:
            session = token.session()
            _refuse_existing(token, session, parsed.object, ident)
            public, private = _generate(token, session, key_type, parsed.object, ident)
            made += [public, private]
            key = _token_key(token, public, private)
            certificate = generate_certificate(subject, days=days, key=key)
            certificate = Certificate(certificate.x509)
            made.append(_store(token, session, certificate, parsed.object, ident))
        signer = Pkcs11Signer(parsed.with_id(ident), module=token.module, pin=resolved_pin)
        yield signer
    except BaseException:
        _destroy(token, made)
        raise
    finally:
        token.close()


def _refuse_existing(token: _Token, session: Any, label: str, ident: bytes) -> None:
    p11 = _module()
    for attrs in ({p11.Attribute.LABEL: label}, {p11.Attribute.ID: ident}):
        if token._call(_objects, session, attrs):
            raise SignerError(
                f"{token.where}: the token already holds objects with this object= or id=; "
                "nothing was made (certauth never replaces a key in a token): choose another "
                "object= (and id=), or delete the old objects with the token's own tool",
                backend=BACKEND,
            )


def _generate(token: _Token, session: Any, key_type: str, label: str, ident: bytes) -> Any:
    p11 = _module()
    attribute = p11.Attribute
    # PKCS#11 v2.40 section 4.9: a sensitive, non-extractable private key never leaves the
    # token in the clear, nor wrapped; CKA_PRIVATE needs a login to use it at all.
    private_template = {
        attribute.SENSITIVE: True,
        attribute.EXTRACTABLE: False,
        attribute.PRIVATE: True,
    }
    capabilities = p11.MechanismFlag.SIGN | p11.MechanismFlag.VERIFY
    common: dict[str, Any] = {
        "id": ident,
        "label": label,
        "store": True,
        "capabilities": capabilities,
        "private_template": private_template,
    }
    if key_type == "ec-p256":
        needed = p11.Mechanism.EC_KEY_PAIR_GEN
    else:
        needed = p11.Mechanism.RSA_PKCS_KEY_PAIR_GEN
    if token.mechanisms and needed not in token.mechanisms:
        raise SignerError(
            f"{token.where}: the token cannot generate {key_type} keys ({needed.name} is not "
            "supported); choose another key_type= or token",
            backend=BACKEND,
        )
    if key_type == "ec-p256":
        parameters = token._call(
            session.create_domain_parameters,
            p11.KeyType.EC,
            {attribute.EC_PARAMS: _P256_PARAMS},
            True,
        )
        return token._call(lambda: parameters.generate_keypair(**common))
    return token._call(
        lambda: session.generate_keypair(p11.KeyType.RSA, _RSA_BITS[key_type], **common)
    )


def _store(token: _Token, session: Any, certificate: Certificate, label: str, ident: bytes) -> Any:
    p11 = _module()
    attribute = p11.Attribute
    from cryptography.hazmat.primitives import serialization

    # PKCS#11 v2.40 section 4.6.3: an X.509 certificate object needs CKA_SUBJECT and
    # CKA_VALUE; the same CKA_ID and label tie it to the key (as p11tool and OpenSC do).
    return token._call(
        session.create_object,
        {
            attribute.CLASS: p11.ObjectClass.CERTIFICATE,
            attribute.CERTIFICATE_TYPE: p11.CertificateType.X_509,
            attribute.TOKEN: True,
            attribute.PRIVATE: False,
            attribute.LABEL: label,
            attribute.ID: ident,
            attribute.SUBJECT: certificate.x509.subject.public_bytes(),
            attribute.ISSUER: certificate.x509.issuer.public_bytes(),
            attribute.VALUE: certificate.x509.public_bytes(serialization.Encoding.DER),
        },
    )


def _destroy(token: _Token, objects: list[Any]) -> None:
    """Delete what this call made, newest first; best effort (the first error was raised)."""
    for obj in reversed(objects):
        try:
            obj.destroy()
        except Exception:  # noqa: BLE001, S112 - the original failure is what the user needs
            continue


def _token_key(
    token: _Token, public: Any, private: Any
) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    p11 = _module()
    attribute = p11.Attribute
    if public.key_type == p11.KeyType.EC:
        point = bytes(token._call(public.__getitem__, attribute.EC_POINT))
        # CKA_EC_POINT is the DER OCTET STRING around the point (PKCS#11 v2.40 section
        # 2.3.3); some modules return the bare point.
        if len(point) == 67 and point[:2] == b"\x04\x41":
            point = point[2:]
        ec_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        return _TokenECKey(token, private, ec_key)
    modulus = int.from_bytes(bytes(token._call(public.__getitem__, attribute.MODULUS)), "big")
    exponent = int.from_bytes(
        bytes(token._call(public.__getitem__, attribute.PUBLIC_EXPONENT)), "big"
    )
    return _TokenRSAKey(token, private, rsa.RSAPublicNumbers(exponent, modulus).public_key())


def _not_exportable(*_args: Any) -> NoReturn:
    raise TypeError("the private key lives in a PKCS#11 token and cannot be exported")


def _alg_for(pad: padding.AsymmetricPadding, algorithm: Any) -> str:
    if isinstance(algorithm, hashes.SHA256):
        if isinstance(pad, padding.PKCS1v15):
            return "RS256"
        if isinstance(pad, padding.PSS):
            return "PS256"
    raise TypeError("the token key signs certificates with SHA-256 and PKCS#1 v1.5 or PSS only")


class _TokenRSAKey(rsa.RSAPrivateKey):
    """An RSA key cryptography can sign a certificate with; the token performs the signature."""

    def __init__(self, token: _Token, private: Any, public: rsa.RSAPublicKey) -> None:
        self._token, self._private, self._public = token, private, public

    def sign(self, data: Any, padding: padding.AsymmetricPadding, algorithm: Any) -> bytes:
        """Sign ``data`` (not prehashed) with SHA-256, by the token."""
        return _sign(self._token, self._private, _alg_for(padding, algorithm), bytes(data))

    def public_key(self) -> rsa.RSAPublicKey:
        """The public half, read from the token's public key object."""
        return self._public

    @property
    def key_size(self) -> int:
        """The modulus size in bits."""
        return self._public.key_size

    def decrypt(self, ciphertext: Any, padding: Any) -> bytes:
        """Not offered: the key was made to sign."""
        _not_exportable()

    def private_numbers(self) -> rsa.RSAPrivateNumbers:
        """Refused: the key never leaves the token."""
        _not_exportable()

    def private_bytes(self, encoding: Any, format: Any, encryption_algorithm: Any) -> bytes:
        """Refused: the key never leaves the token."""
        _not_exportable()

    def __copy__(self) -> _TokenRSAKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> _TokenRSAKey:
        return self


class _TokenECKey(ec.EllipticCurvePrivateKey):
    """A P-256 key cryptography can sign a certificate with; the token performs the signature."""

    def __init__(self, token: _Token, private: Any, public: ec.EllipticCurvePublicKey) -> None:
        self._token, self._private, self._public = token, private, public

    def sign(self, data: Any, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        """ECDSA with SHA-256 by the token, DER-encoded as X.509 wants (RFC 5480 section 2.2)."""
        algorithm = getattr(signature_algorithm, "algorithm", None)
        if not isinstance(algorithm, hashes.SHA256):
            raise TypeError("the token key signs certificates with ECDSA and SHA-256 only")
        raw = _sign(self._token, self._private, "ES256", bytes(data))
        return encode_dss_signature(
            int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
        )

    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The public half, read from the token's public key object."""
        return self._public

    @property
    def curve(self) -> ec.EllipticCurve:
        """P-256."""
        return self._public.curve

    @property
    def key_size(self) -> int:
        """256."""
        return self._public.key_size

    def exchange(self, algorithm: Any, peer_public_key: Any) -> bytes:
        """Not offered: the key was made to sign."""
        _not_exportable()

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        """Refused: the key never leaves the token."""
        _not_exportable()

    def private_bytes(self, encoding: Any, format: Any, encryption_algorithm: Any) -> bytes:
        """Refused: the key never leaves the token."""
        _not_exportable()

    def __copy__(self) -> _TokenECKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> _TokenECKey:
        return self


def _sign(token: _Token, private: Any, alg: str, data: bytes) -> bytes:
    p11 = _module()
    try:
        return token_sign(token, private, alg, data)
    except p11.PKCS11Error as exc:
        raise token.error(exc) from None
