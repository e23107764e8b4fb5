"""What a certificate's key must be to sign client assertions, and for which authority: the
rules :class:`~certauth.assertion.AssertionSigner` applies and ``certauth token``'s look in the
file cache (:mod:`certauth._cache_lookup`) applies again, without loading a certificate object
or the assertion machinery (importing :mod:`certauth.assertion` would load
:mod:`certauth.certificates`, ``datetime`` and the signers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from certauth import _jose
from certauth._jose import MIN_RSA_BITS, PublicKey
from certauth.errors import ConfigurationError, InvalidArgumentError, UnsupportedKeyError

if TYPE_CHECKING:
    from certauth.authority import Authority

#: RFC 7523 section 2.2 client authentication, named as OAuth server metadata names it
#: (RFC 8414 section 2, ``token_endpoint_auth_methods_supported``).
METHOD = "private_key_jwt"
#: The algorithms certauth signs assertions with (RFC 7518 section 3).
SUPPORTED_ALGS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
)


def describe_key(key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> str:
    """A short human description of a public key, such as ``RSA 2048`` or ``EC P-256``."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        curve = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
        return f"EC {curve.get(key.curve.name, key.curve.name)}"
    return f"RSA {key.key_size}"


def entra_key_problems(key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> list[str]:
    """Reasons Entra ID will refuse a certificate with this public key as an app credential
    (empty if none): :meth:`Certificate.entra_problems`, for a key alone."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        return [
            f"{describe_key(key)} key: Entra ID will not accept it (app credentials "
            "must be RSA; it answers AADSTS5002738); create one with key_type=rsa2048"
        ]
    if key.key_size < MIN_RSA_BITS:
        return [
            f"RSA {key.key_size} key: Entra ID will not accept it (it requires at least "
            f"{MIN_RSA_BITS} bits; it answers AADSTS50032); create a new certificate with "
            "key_type=rsa2048"
        ]
    return []


def check_key(public_key: PublicKey, alg: str | None, *, where: str, path: str | None) -> None:
    """What :class:`AssertionSigner` refuses of a certificate's public key before an authority
    is known: RSA below 2048 bits, and an ``alg`` that does not fit the key. ``where`` names
    the key in messages, ``path`` is the file they report."""
    if isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size < MIN_RSA_BITS:
        raise UnsupportedKeyError(
            f"{where}: RSA {public_key.key_size} key; at least {MIN_RSA_BITS} bits are required "
            "(Entra ID answers AADSTS50032)",
            path=path,
        )
    if alg is not None:
        check_alg(public_key, alg)


def check_key_for(
    authority: Authority, public_key: PublicKey, alg: str | None, *, where: str, path: str | None
) -> str:
    """What :meth:`AssertionSigner.check` refuses, before anything is sent, of a certificate's
    public key for ``authority``; the algorithm to sign with (``alg``, else the authority's
    default). Kept apart from the class so that ``certauth token``'s look in the file cache,
    which loads no certificate object, applies the very same rules."""
    if authority.kind == "b2c":
        # Azure AD B2C: "client credentials ... with a client secret only" (it answers
        # AADB2C99027 to an assertion), https://learn.microsoft.com/azure/active-directory-b2c/client-credentials-grant-flow
        raise ConfigurationError(
            f"{authority.token_endpoint}: Azure AD B2C takes only client secrets for the "
            "client credentials grant, not certificates (it answers AADB2C99027); use a "
            "client secret for B2C, or a regular Entra ID tenant"
        )
    if authority.is_entra:
        problems = entra_key_problems(public_key)
        if problems:
            raise UnsupportedKeyError(f"{where}: {problems[0]}", path=path)
    authority.check_auth_method(METHOD)
    key_type = "RSA" if isinstance(public_key, rsa.RSAPublicKey) else "EC"
    alg = alg or authority.default_alg(key_type)
    check_alg(public_key, alg)
    authority.check_signing_alg(alg)
    return alg


def check_alg(key: PublicKey, alg: str) -> None:
    """Refuse an ``alg`` certauth does not sign with, or one that does not fit ``key``."""
    if alg not in SUPPORTED_ALGS:
        raise InvalidArgumentError(
            f"alg={alg!r} is not supported; use one of {', '.join(SUPPORTED_ALGS)}"
        )
    kind = "RSA" if isinstance(key, rsa.RSAPublicKey) else "EC"
    if _jose.ALGORITHMS[alg].kty != kind:
        raise InvalidArgumentError(
            f"alg={alg} cannot be used with {'an RSA' if kind == 'RSA' else 'an EC'} key; use "
            + ("RS256 or PS256" if kind == "RSA" else "ES256")
        )
    try:
        _jose.check_key(key, alg)  # the curve (ES256 needs P-256)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"alg={alg}: {exc}") from None
