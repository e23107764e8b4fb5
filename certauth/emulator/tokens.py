"""The emulator's signing keys (rotating, published as a JWKS) and the access tokens it issues.

Access tokens are RS256 JWTs shaped like Entra ID v2 app-only tokens (the claims of "Access
token claims reference",
https://learn.microsoft.com/entra/identity-platform/access-token-claims-reference); the header
carries ``kid`` and ``x5t`` like Entra's. Each signing key has a self-signed certificate (made
by :func:`certauth.certificates.build_certificate`) so the JWKS entry can carry ``x5c``/``x5t``
as Entra's does. Encoding and signing go through :mod:`certauth._jose`.
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from certauth import _jose
from certauth.certificates import build_certificate
from certauth.emulator.cae import NO_CLAIMS, ClaimsRequest, merge_issued_at

__all__ = [
    "DEFAULT_TOKEN_LIFETIME",
    "Grant",
    "KeyRing",
    "SigningKey",
    "access_token_claims",
    "token_response",
]

#: Entra ID answers ``expires_in: 3599`` for a default app-only token.
DEFAULT_TOKEN_LIFETIME = 3599
#: Entra ID backdates ``iat``/``nbf`` of access tokens by five minutes to absorb clock skew.
ISSUED_AT_BACKDATE = 300
#: Tokens living this long (seconds) or longer come with ``refresh_in``, as Entra's do.
LONG_LIVED = 7200
#: How many retired keys stay in the JWKS after a rotation (verifiers with a cached token
#: signed by the old key must still find it).
RETIRED_KEYS_KEPT = 2

Endpoint = Literal["v2", "v1", "b2c"]
AuthMethod = Literal[
    "certificate", "secret", "federated", "tls_client_auth", "self_signed_tls_client_auth"
]


@dataclass(frozen=True)
class SigningKey:
    """One RSA-2048 signing key with its self-signed certificate; ``kid`` = its ``x5t``."""

    kid: str
    private_key: rsa.RSAPrivateKey
    certificate: x509.Certificate

    @classmethod
    def generate(cls, now: dt.datetime) -> SigningKey:
        """A fresh key and a certificate valid from a day before ``now`` for five years."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = build_certificate(
            "CN=certauth emulator signing",
            key,
            not_before=now - dt.timedelta(days=1),
            not_after=now + dt.timedelta(days=5 * 365),
        )
        return cls(cert.x5t, key, cert.x509)

    def jwk(self, issuer: str | None = None) -> dict[str, Any]:
        """The JWKS entry, as Entra ID publishes it (``issuer`` only in the v2 key set)."""
        public = _jose.public_key_to_jwk(self.private_key.public_key())
        der = self.certificate.public_bytes(serialization.Encoding.DER)
        entry: dict[str, Any] = {
            "kty": public.pop("kty"),
            "use": "sig",
            "kid": self.kid,
            "x5t": self.kid,
            **public,  # n, e (RFC 7518 section 6.3.1)
            # RFC 7517 section 4.7: standard base64 (not base64url) DER.
            "x5c": [base64.b64encode(der).decode("ascii")],
        }
        if issuer is not None:
            entry["issuer"] = issuer
        return entry


class KeyRing:
    """The current signing key and the recently retired ones (all published in the JWKS).

    The first key is made when first needed: RSA key generation takes ~0.1 s, and an emulator
    started for a test that only checks refusals never signs anything.
    """

    def __init__(self, clock: Callable[[], dt.datetime], *, keep: int = RETIRED_KEYS_KEPT) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._keep = keep
        self._keys: list[SigningKey] = []

    def _ensure(self) -> list[SigningKey]:
        # Called with the lock held.
        if not self._keys:
            self._keys.append(SigningKey.generate(self._clock()))
        return self._keys

    @property
    def current(self) -> SigningKey:
        """The key new tokens are signed with."""
        with self._lock:
            return self._ensure()[0]

    @property
    def keys(self) -> list[SigningKey]:
        """Every published key, current first."""
        with self._lock:
            return list(self._ensure())

    def rotate(self) -> SigningKey:
        """Start signing with a new key; keep the previous ones published for a while."""
        with self._lock:
            self._ensure()
        new = SigningKey.generate(self._clock())
        with self._lock:
            self._keys = [new, *self._keys][: self._keep + 1]
        return new

    def jwks(self, issuer: str | None = None) -> dict[str, Any]:
        """The JSON Web Key Set (RFC 7517 section 5)."""
        return {"keys": [key.jwk(issuer) for key in self.keys]}


@dataclass(frozen=True)
class Grant:
    """What a successful token request earned: who, for which resource, with which roles."""

    tenant_id: str
    client_id: str
    object_id: str
    resource: str
    roles: tuple[str, ...]
    auth_method: AuthMethod
    endpoint: Endpoint = "v2"
    policy: str | None = None
    #: The client assertion's ``alg`` (``None`` for a secret); for logs and tests.
    assertion_alg: str | None = None
    #: ``x5t#S256`` of the registered certificate that signed the assertion (if one did).
    thumbprint: str | None = None
    #: What the request's ``claims`` parameter asked for (client capabilities, ``nbf``).
    claims_request: ClaimsRequest = NO_CLAIMS
    #: The token's confirmation members (RFC 7800 ``cnf``): ``jkt`` for a DPoP key
    #: (RFC 9449 section 6.1), ``x5t#S256`` for a TLS client certificate (RFC 8705 section 3.1).
    cnf: tuple[tuple[str, str], ...] = ()

    @property
    def token_type(self) -> str:
        """``DPoP`` for a token bound to a DPoP key (RFC 9449 section 5), else ``Bearer``: a
        certificate-bound token stays a bearer token to the client (RFC 8705 section 3)."""
        return "DPoP" if any(name == "jkt" for name, _ in self.cnf) else "Bearer"


def access_token_claims(grant: Grant, *, issuer: str, now: float, lifetime: int) -> dict[str, Any]:
    """The claims of an app-only access token (Entra ID v2 shape).

    ``azpacr``/``appidacr`` are "2" for certificate and federated assertions and TLS client
    certificates, "1" for a client secret. B2C tokens carry the granted permissions as ``scp``
    (B2C returns the API scopes granted to the app), Entra tokens as ``roles`` (omitted when
    empty, as Entra does). A ``claims`` request's client capabilities become ``xms_cc`` and its
    ``nbf`` raises ``iat``/``nbf`` (:mod:`certauth.emulator.cae`); a bound token carries
    ``cnf``.
    """
    acr = "1" if grant.auth_method == "secret" else "2"
    issued = issued_at(grant, now)
    claims: dict[str, Any] = {
        "aud": grant.resource,
        "iss": issuer,
        "iat": issued,
        "nbf": issued,
        "exp": int(now) + lifetime,
        "azp": grant.client_id,
        "azpacr": acr,
        "appid": grant.client_id,
        "appidacr": acr,
        "idtyp": "app",
        "oid": grant.object_id,
        "sub": grant.object_id,
        "tid": grant.tenant_id,
        "uti": _jose.b64url_encode(secrets.token_bytes(16)),
        "ver": "2.0",
    }
    if grant.roles:
        if grant.endpoint == "b2c":
            claims["scp"] = " ".join(grant.roles)
        else:
            claims["roles"] = list(grant.roles)
    if grant.policy:
        claims["tfp"] = grant.policy
    if grant.claims_request.capabilities:
        # "Claims challenges, claims requests, and client capabilities": the token names the
        # capabilities the client declared; cp1 marks a CAE-capable client.
        claims["xms_cc"] = list(grant.claims_request.capabilities)
    if grant.cnf:
        claims["cnf"] = dict(grant.cnf)
    return claims


def issued_at(grant: Grant, now: float) -> int:
    """``iat``/``nbf`` of a token issued at ``now``: backdated five minutes, but not before the
    ``nbf`` a claims challenge asked for."""
    return merge_issued_at(int(now) - ISSUED_AT_BACKDATE, now, grant.claims_request)


def sign_access_token(claims: dict[str, Any], key: SigningKey) -> str:
    """Sign ``claims`` with RS256 (the only algorithm Entra ID signs access tokens with)."""
    # The header's members in sorted order, as PyJWT (which signed these tokens before) wrote them.
    header = {"alg": "RS256", "kid": key.kid, "typ": "JWT", "x5t": key.kid}
    signing_input = f"{_jose.json_segment(header)}.{_jose.json_segment(claims)}"
    signature = _jose.sign(key.private_key, "RS256", signing_input.encode("ascii"))
    return f"{signing_input}.{_jose.b64url_encode(signature)}"


def token_response(grant: Grant, access_token: str, *, now: float, lifetime: int) -> dict[str, Any]:
    """The JSON body of a successful token response (RFC 6749 section 5.1, Entra's fields).

    The v1 endpoint sends numbers as strings plus ``expires_on``/``not_before``/``resource``,
    exactly as Entra's v1 endpoint does; clients must cope with both.
    """
    if grant.endpoint == "v1":
        return {
            "token_type": grant.token_type,
            "expires_in": str(lifetime),
            "ext_expires_in": str(lifetime),
            "expires_on": str(int(now) + lifetime),
            "not_before": str(issued_at(grant, now)),
            "resource": grant.resource,
            "access_token": access_token,
        }
    body: dict[str, Any] = {
        "token_type": grant.token_type,
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": access_token,
    }
    if lifetime >= LONG_LIVED:
        # Entra tells clients to renew long-lived tokens halfway (MSAL honours refresh_in).
        body["refresh_in"] = lifetime // 2
    return body
