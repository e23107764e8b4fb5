"""JOSE, once: base64url, the JWS algorithm table, signing and verifying a signature, JWK <-> key.

Every certauth part that reads or writes a JWS uses this module: client assertions
(:mod:`certauth.assertion`), the access-token verifier (:mod:`certauth.verify`) and the emulator
(:mod:`certauth.emulator`). The rules come from RFC 7515 (JWS), RFC 7517 (JWK) and RFC 7518
(JWA); the section is cited where each rule is applied.

PyJWT stays the reference implementation: the interop tests check what this module signs and
verifies against it (and against joserfc). The client path does not use it because importing
PyJWT costs ~50 ms of start-up, and every ``certauth token`` process signs an assertion. For
the same reason this module imports only what :mod:`certauth.assertion` needs anyway
(``base64``, ``re``, ``typing`` and cryptography's asymmetric primitives); ``json`` is imported
on first use of :func:`json_segment`.

Errors: a key of the wrong kind or curve for an algorithm is a :class:`TypeError`, anything
else unusable (an unknown algorithm, a weak key, malformed base64url or JWK members) is a
:class:`ValueError`, so that each caller can word the refusal in its own terms.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

__all__ = [
    "ALGORITHMS",
    "CURVES",
    "MIN_RSA_BITS",
    "Algorithm",
    "Curve",
    "NonCanonicalError",
    "PrivateKey",
    "PublicKey",
    "algorithm",
    "b64url_decode",
    "b64url_decode_lenient",
    "b64url_encode",
    "b64url_uint",
    "check_key",
    "json_segment",
    "jwk_to_public_key",
    "public_key_to_jwk",
    "sign",
    "verify_signature",
]

#: RFC 7518 section 3.3: "A key of size 2048 bits or larger MUST be used with these algorithms"
#: (RS* and, by section 3.5, PS*). Entra ID refuses smaller certificate keys with AADSTS50032.
MIN_RSA_BITS = 2048

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


# -- base64url (RFC 7515 section 2, RFC 4648 section 5) ----------------------------------------

_STRICT = re.compile(r"[A-Za-z0-9_-]*")
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_VALUE = {char: index for index, char in enumerate(_ALPHABET)}
#: len % 4 -> the bits of the last character that carry no data: 2 characters hold one octet
#: (4 bits spare), 3 characters two octets (2 bits spare).
_SPARE_BITS = {0: 0, 2: 0x0F, 3: 0x03}


class NonCanonicalError(ValueError):
    """Base64url whose last character has spare bits set (RFC 4648 section 3.5).

    It decodes, but to the same octets as another spelling: a signed token with two
    spellings lets an attacker alter it without touching the signature's octets.
    """


def b64url_encode(data: bytes) -> str:
    """``data`` as base64url without padding (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode base64url as RFC 7515 section 2 defines it for JWS: the URL-safe alphabet only,
    no padding, no whitespace, and canonical, so that every value has exactly one spelling.

    Raises :class:`NonCanonicalError` for spare bits set in the last character and
    :class:`ValueError` for anything else that is not base64url.
    """
    remainder = len(text) % 4
    if remainder == 1 or not _STRICT.fullmatch(text):
        raise ValueError("not base64url (RFC 7515 section 2: A-Z a-z 0-9 - _, no padding)")
    if remainder and _VALUE[text[-1]] & _SPARE_BITS[remainder]:
        raise NonCanonicalError("not canonical base64url: the last character has spare bits set")
    return base64.urlsafe_b64decode(text + "=" * (-remainder % 4))


def b64url_decode_lenient(text: str) -> bytes:
    """Decode base64url the way servers take it from clients: surrounding whitespace ignored,
    padding optional, the standard alphabet's ``+`` and ``/`` accepted too.

    For values that are not a JWS segment: JWK members and thumbprint headers (MSAL sends
    padded ``x5t`` values and Entra ID accepts them). Any other character is refused with
    :class:`ValueError` (non-ASCII text included).
    """
    stripped = text.strip().rstrip("=")
    standard = stripped.replace("-", "+").replace("_", "/")
    return base64.b64decode(standard + "=" * (-len(stripped) % 4), validate=True)


def b64url_uint(value: int) -> str:
    """A non-negative integer as Base64urlUInt (RFC 7518 section 2 and 6.3.1.1): big-endian,
    the fewest octets that hold it; zero is ``AA`` (one zero octet)."""
    if value < 0:
        raise ValueError(f"Base64urlUInt holds unsigned integers, not {value}")
    return b64url_encode(value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def json_segment(value: dict[str, Any]) -> str:
    """A JWS header or claims segment: compact JSON (no spaces, ASCII escapes, member order
    kept), then base64url (RFC 7515 section 7.1)."""
    import json  # only signers need it; a process that only verifies never does

    return b64url_encode(json.dumps(value, separators=(",", ":")).encode("utf-8"))


# -- the algorithm table (RFC 7518 section 3) --------------------------------------------------


class Curve(NamedTuple):
    """An elliptic curve JWS and JWK use (RFC 7518 sections 3.4 and 6.2.1.1)."""

    #: The JWK ``crv`` name.
    crv: str
    curve: ec.EllipticCurve
    #: Octets per coordinate (JWK ``x``/``y``, RFC 7518 section 6.2.1.2) and per R and S of a
    #: signature (section 3.4).
    size: int


class Algorithm(NamedTuple):
    """One asymmetric JWS algorithm: what key it needs and how it signs."""

    name: str
    #: The JWK ``kty`` of the keys that sign with it.
    kty: Literal["RSA", "EC"]
    #: Shared by every signature: hash objects are immutable.
    hash: hashes.HashAlgorithm
    #: RSA only: PKCS#1 v1.5 or PSS, built once and reused for every signature.
    rsa_padding: padding.AsymmetricPadding | None = None
    #: EC only: the one curve the algorithm is defined on.
    curve: Curve | None = None
    #: RSA only: the smallest key allowed.
    min_rsa_bits: int | None = None


CURVES: dict[str, Curve] = {
    "P-256": Curve("P-256", ec.SECP256R1(), 32),
    "P-384": Curve("P-384", ec.SECP384R1(), 48),
    "P-521": Curve("P-521", ec.SECP521R1(), 66),
}
_CURVE_BY_NAME = {curve.curve.name: curve for curve in CURVES.values()}

_SHA = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}
_PKCS1V15 = padding.PKCS1v15()

#: RFC 7518 section 3.1: the asymmetric JWS algorithms. ``none`` and the HMAC family are absent
#: on purpose (RFC 8725 sections 2.1 and 3.1): a signature must come from a private key, and an
#: HMAC "signed" with an issuer's *public* key is the classic algorithm-confusion forgery.
ALGORITHMS: dict[str, Algorithm] = {
    # RFC 7518 section 3.3: RSASSA-PKCS1-v1_5.
    **{
        f"RS{bits}": Algorithm(f"RS{bits}", "RSA", digest, _PKCS1V15, None, MIN_RSA_BITS)
        for bits, digest in _SHA.items()
    },
    # RFC 7518 section 3.5: RSASSA-PSS with MGF1 over the same hash and a salt as long as the
    # hash output.
    **{
        f"PS{bits}": Algorithm(
            f"PS{bits}",
            "RSA",
            digest,
            padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size),
            None,
            MIN_RSA_BITS,
        )
        for bits, digest in _SHA.items()
    },
    # RFC 7518 section 3.4: ECDSA, each on its own curve. The ec.ECDSA object is made per
    # signature in sign / verify_signature: creating one imports cryptography's OpenSSL backend
    # module, ~2 ms of start-up that RSA users never need.
    "ES256": Algorithm("ES256", "EC", _SHA["256"], curve=CURVES["P-256"]),
    "ES384": Algorithm("ES384", "EC", _SHA["384"], curve=CURVES["P-384"]),
    "ES512": Algorithm("ES512", "EC", _SHA["512"], curve=CURVES["P-521"]),
}


def algorithm(alg: str) -> Algorithm:
    """The table entry for ``alg``; :class:`ValueError` when it is not an asymmetric JWS
    algorithm of RFC 7518 section 3.1."""
    spec = ALGORITHMS.get(alg)
    if spec is None:
        raise ValueError(
            f"{alg!r} is not a supported JWS algorithm; use one of {', '.join(ALGORITHMS)}"
        )
    return spec


def _mismatch(key: object, spec: Algorithm) -> str | None:
    """Why ``key`` (public or private) cannot be used with ``spec`` at all; ``None`` if it can."""
    crv: str | None = None
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        kind = "RSA"
    elif isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        kind = "EC"
        known = _CURVE_BY_NAME.get(key.curve.name)
        crv = known.crv if known is not None else key.curve.name
    else:
        return f"{spec.name} needs an {spec.kty} key, not {type(key).__name__}"
    if kind != spec.kty:
        return f"{spec.name} needs an {spec.kty} key, and this is an {kind} key"
    if spec.curve is not None and crv != spec.curve.crv:
        return f"{spec.name} needs curve {spec.curve.crv}, and this key is on {crv}"
    return None


def check_key(key: object, alg: str) -> None:
    """Refuse a key (public or private) that ``alg`` cannot use: :class:`TypeError` for the
    wrong kind or curve, :class:`ValueError` for an RSA key below the table's minimum (RFC 7518
    section 3.3) or an unknown ``alg``."""
    spec = algorithm(alg)
    problem = _mismatch(key, spec)
    if problem is not None:
        raise TypeError(problem)
    if (
        spec.min_rsa_bits is not None
        and isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey)
        and key.key_size < spec.min_rsa_bits
    ):
        raise ValueError(
            f"the key is RSA-{key.key_size}; RFC 7518 section 3.3 requires at least "
            f"{spec.min_rsa_bits} bits"
        )


# -- signatures (RFC 7515 section 5, RFC 7518 section 3) ---------------------------------------


def sign(private_key: PrivateKey, alg: str, data: bytes) -> bytes:
    """The JWS signature of ``data`` (the ASCII signing input) with ``alg``.

    ECDSA signatures come in the JWS form R || S, each the curve's size (RFC 7518 section 3.4),
    not DER. Raises as :func:`check_key` does for a key ``alg`` cannot use, and
    :class:`TypeError` for a public key.
    """
    check_key(private_key, alg)
    spec = ALGORITHMS[alg]
    if isinstance(private_key, rsa.RSAPrivateKey) and spec.rsa_padding is not None:
        return private_key.sign(data, spec.rsa_padding, spec.hash)
    if isinstance(private_key, ec.EllipticCurvePrivateKey) and spec.curve is not None:
        r, s = decode_dss_signature(private_key.sign(data, ec.ECDSA(spec.hash)))
        size = spec.curve.size
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    raise TypeError(f"{alg} signs with a private key, not {type(private_key).__name__}")


def verify_signature(public_key: PublicKey, alg: str, data: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is ``alg``'s signature of ``data`` by ``public_key``.

    ``False`` as well for a key of the wrong kind or curve, and for an ECDSA signature that is
    not R || S of the curve's size (RFC 7518 section 3.4: DER is refused). The key size is the
    caller's policy (:func:`check_key`), checked before, with the caller's own error; an
    unknown ``alg`` raises :class:`ValueError`.
    """
    spec = algorithm(alg)
    if _mismatch(public_key, spec) is not None:
        return False
    try:
        if isinstance(public_key, rsa.RSAPublicKey) and spec.rsa_padding is not None:
            public_key.verify(signature, data, spec.rsa_padding, spec.hash)
            return True
        if isinstance(public_key, ec.EllipticCurvePublicKey) and spec.curve is not None:
            size = spec.curve.size
            if len(signature) != 2 * size:
                return False
            r = int.from_bytes(signature[:size], "big")
            s = int.from_bytes(signature[size:], "big")
            public_key.verify(encode_dss_signature(r, s), data, ec.ECDSA(spec.hash))
            return True
    except InvalidSignature:
        return False
    return False


# -- JWK (RFC 7517 section 4, RFC 7518 section 6) ----------------------------------------------


def _uint(jwk: Mapping[str, Any], name: str) -> int:
    # RFC 7518 section 6.3.1 / 6.2.1: Base64urlUInt members, read leniently (padding and the
    # standard alphabet are seen in the wild).
    value = jwk.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"no '{name}'")
    try:
        data = b64url_decode_lenient(value)
    except ValueError:
        raise ValueError(f"'{name}' is not base64url") from None
    return int.from_bytes(data, "big")


def _coordinate(jwk: Mapping[str, Any], name: str, size: int) -> bytes:
    try:
        return _uint(jwk, name).to_bytes(size, "big")
    except OverflowError:
        raise ValueError(f"'{name}' is too long for the curve") from None


def jwk_to_public_key(jwk: Mapping[str, Any]) -> PublicKey:
    """The public key a JWK holds (``kty`` RSA or EC); :class:`ValueError` saying why not.

    Only the key material is read (RFC 7518 section 6.3.1 ``n``/``e``, 6.2.1 ``crv``/``x``/
    ``y``); ``use``, ``key_ops`` and ``alg`` are the caller's policy. An EC point must lie on
    its curve (the invalid-curve attack). Symmetric (``oct``) keys are refused: a shared secret
    cannot prove who signed.
    """
    kty = jwk.get("kty")
    if kty == "RSA":
        return rsa.RSAPublicNumbers(_uint(jwk, "e"), _uint(jwk, "n")).public_key()
    if kty == "EC":
        crv = jwk.get("crv")
        curve = CURVES.get(crv) if isinstance(crv, str) else None
        if curve is None:
            raise ValueError(f"curve {crv!r} is not P-256, P-384 or P-521")
        point = b"\x04" + _coordinate(jwk, "x", curve.size) + _coordinate(jwk, "y", curve.size)
        # from_encoded_point refuses a point that is not on the curve.
        return ec.EllipticCurvePublicKey.from_encoded_point(curve.curve, point)
    raise ValueError(f"key type {kty!r} is not RSA or EC")


def public_key_to_jwk(key: PublicKey) -> dict[str, str]:
    """The public JWK members of ``key``: ``kty`` then ``n``, ``e`` (RSA) or ``crv``, ``x``,
    ``y`` (EC, coordinates at the curve's full size as RFC 7518 section 6.2.1.2 requires).

    The caller adds ``kid``, ``use``, ``alg``, ``x5c``... as it needs.
    """
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        return {"kty": "RSA", "n": b64url_uint(numbers.n), "e": b64url_uint(numbers.e)}
    if isinstance(key, ec.EllipticCurvePublicKey):
        curve = _CURVE_BY_NAME.get(key.curve.name)
        if curve is None:
            raise ValueError(f"curve {key.curve.name} has no JWK name; use P-256, P-384 or P-521")
        point = key.public_numbers()
        return {
            "kty": "EC",
            "crv": curve.crv,
            "x": b64url_encode(point.x.to_bytes(curve.size, "big")),
            "y": b64url_encode(point.y.to_bytes(curve.size, "big")),
        }
    raise TypeError(f"a JWK holds an RSA or EC public key, not {type(key).__name__}")
