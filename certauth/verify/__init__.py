"""Access-token verification for backends: signature via the issuer's JWKS, then the claims.

Rules come from RFC 7515 (JWS), RFC 7517/7518 (JWK, JWA), RFC 7519 (JWT), RFC 8725 (JWT best
current practices) and RFC 9068 (JWT access tokens), plus Entra ID's issuer formats:

- Entra v2 ``https://login.microsoftonline.com/{tid}/v2.0``, v1 ``https://sts.windows.net/{tid}/``;
- multi-tenant apps pass an issuer *template* containing ``{tenantid}``, which must equal the
  token's ``tid`` claim (the placeholder Entra's own ``/common`` discovery document uses);
- Azure AD B2C ``https://TENANT.b2clogin.com/{tid}/v2.0/``, whose keys live under the policy:
  pass ``issuer`` *and* ``jwks_uri``;
- any OpenID Connect issuer (keys found through ``{issuer}/.well-known/openid-configuration``).

Layout, one subject per module: a pure core (no sockets, no clock calls; ``now`` and the
monotonic time ``at`` are parameters) and two thin shells that run the core's fetch flow with
the drivers of :mod:`certauth._http`, adding only waiting and single flight.

- :mod:`~certauth.verify.jwt`: the check names, the accepted algorithms, parsing a compact JWS,
  :func:`decode_unverified`;
- :mod:`~certauth.verify.jwks`: JWKs as keys, :class:`KeySet`, which key fits a token, the
  signature check (the JOSE arithmetic itself is :mod:`certauth._jose`'s);
- :mod:`~certauth.verify.claims`: the claims policy (issuer, audience, times, scopes, roles);
- :mod:`~certauth.verify.binding`: sender-constrained tokens, the ``cnf`` claim's bindings to a
  client certificate (RFC 8705) or a DPoP key (RFC 9449), checked after everything else;
- :mod:`~certauth.verify.keysource`: discovery and JWKS fetching, caching and rate limiting
  (the sans-I/O key core and its sync and async shells);
- :mod:`~certauth.verify.verifier`: :class:`TokenVerifier`, :class:`AsyncTokenVerifier`,
  :func:`verify_access_token`.
"""

from __future__ import annotations

from certauth._jose import MIN_RSA_BITS as MIN_RSA_BITS
from certauth.verify.binding import BINDING_CHECKS as BINDING_CHECKS
from certauth.verify.claims import TENANT_PLACEHOLDER as TENANT_PLACEHOLDER
from certauth.verify.jwks import KeySet as KeySet
from certauth.verify.jwks import PublicKey as PublicKey
from certauth.verify.jwt import CHECKS as CHECKS
from certauth.verify.jwt import DEFAULT_ALGORITHMS as DEFAULT_ALGORITHMS
from certauth.verify.jwt import MAX_TOKEN_CHARS as MAX_TOKEN_CHARS
from certauth.verify.jwt import SUPPORTED_ALGORITHMS as SUPPORTED_ALGORITHMS
from certauth.verify.jwt import Check as Check
from certauth.verify.jwt import decode_unverified as decode_unverified
from certauth.verify.keysource import DEFAULT_FETCH_RETRY as DEFAULT_FETCH_RETRY
from certauth.verify.keysource import DEFAULT_KEYS_MAX_AGE as DEFAULT_KEYS_MAX_AGE
from certauth.verify.keysource import DEFAULT_REFETCH_INTERVAL as DEFAULT_REFETCH_INTERVAL
from certauth.verify.keysource import discovery_url_for as discovery_url_for
from certauth.verify.verifier import AsyncTokenVerifier as AsyncTokenVerifier
from certauth.verify.verifier import TokenVerifier as TokenVerifier
from certauth.verify.verifier import verify_access_token as verify_access_token

__all__ = [
    "BINDING_CHECKS",
    "CHECKS",
    "DEFAULT_ALGORITHMS",
    "SUPPORTED_ALGORITHMS",
    "AsyncTokenVerifier",
    "KeySet",
    "TokenVerifier",
    "decode_unverified",
    "verify_access_token",
]
