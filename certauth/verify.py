"""Access-token verification for backends: signature via the issuer's JWKS, then the claims.

Rules come from RFC 7515 (JWS), RFC 7517/7518 (JWK, JWA), RFC 7519 (JWT), RFC 8725 (JWT best
current practices) and RFC 9068 (JWT access tokens), plus Entra ID's issuer formats:

- Entra v2 ``https://login.microsoftonline.com/{tid}/v2.0``, v1 ``https://sts.windows.net/{tid}/``;
- multi-tenant apps pass an issuer *template* containing ``{tenantid}``, which must equal the
  token's ``tid`` claim (the placeholder Entra's own ``/common`` discovery document uses);
- Azure AD B2C ``https://TENANT.b2clogin.com/{tid}/v2.0/``, whose keys live under the policy:
  pass ``issuer`` *and* ``jwks_uri``;
- any OpenID Connect issuer (keys found through ``{issuer}/.well-known/openid-configuration``).

Layout: a pure core (:class:`KeySet`, ``_Policy``, ``_KeyCore``: no sockets, no clock calls;
``now`` and the monotonic time ``at`` are parameters) and two thin shells that run the core's
fetch flow with the drivers of :mod:`certauth._http` (:class:`TokenVerifier` with threads,
:class:`AsyncTokenVerifier` with asyncio). The shells only add waiting and single-flight.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import rsa

from certauth import _http, _jose
from certauth._http import Flow
from certauth._httpx import httpx
from certauth.authority import Authority, check_endpoint_url
from certauth.errors import (
    CertauthError,
    ConfigurationError,
    InvalidArgumentError,
    TokenValidationError,
    TransportError,
)
from certauth.protocol import RetryPolicy

__all__ = [
    "CHECKS",
    "DEFAULT_ALGORITHMS",
    "SUPPORTED_ALGORITHMS",
    "AsyncTokenVerifier",
    "KeySet",
    "TokenVerifier",
    "decode_unverified",
    "verify_access_token",
]

log = logging.getLogger("certauth")

#: What Entra ID (RS256), most OIDC issuers (RS256/PS256) and EC-keyed issuers (ES256) sign with.
DEFAULT_ALGORITHMS: tuple[str, ...] = ("RS256", "PS256", "ES256")

Check = Literal[
    "format",
    "algorithm",
    "kid",
    "signature",
    "issuer",
    "audience",
    "expired",
    "not_yet_valid",
    "scope",
    "role",
]
#: Every value :attr:`TokenValidationError.check` takes here, in the order they are checked.
CHECKS: tuple[str, ...] = get_args(Check)

#: Issuer templates: Entra's ``/common`` discovery document names its issuer with this
#: placeholder; the token's ``tid`` claim fills it in.
TENANT_PLACEHOLDER = "{tenantid}"
#: An unknown ``kid`` triggers at most one refetch per this many seconds (per key source).
DEFAULT_REFETCH_INTERVAL = 30.0
#: Keys are refetched (in the background of a verification) once they are this old, so keys
#: the issuer has withdrawn stop being trusted.
DEFAULT_KEYS_MAX_AGE = 24 * 3600.0
#: A verification runs in a request path: fetch retries stay short.
DEFAULT_FETCH_RETRY = RetryPolicy(
    max_attempts=2, base_delay=0.2, max_delay=1.0, max_retry_after=2.0
)
#: Entra tokens with many group claims reach ~10 KiB; anything far larger is refused unread.
MAX_TOKEN_CHARS = 64 * 1024


#: RFC 7518 section 3.1: the asymmetric JWS algorithms certauth verifies (the table in
#: :mod:`certauth._jose`: no ``none``, no HMAC, RFC 8725 sections 2.1 and 3.1).
SUPPORTED_ALGORITHMS: tuple[str, ...] = tuple(_jose.ALGORITHMS)
#: RFC 7518 section 3.3: "A key of size 2048 bits or larger MUST be used with these algorithms."
MIN_RSA_BITS = _jose.MIN_RSA_BITS

_TENANT_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
#: Microsoft Graph's application id: its tokens are for Graph only (see the audience hint).
_GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"


def _fail(check: Check, message: str) -> TokenValidationError:
    return TokenValidationError(message, check=check)


# -- parsing (RFC 7515 section 5.2, RFC 7519 section 7.2) ----------------------------------------


def _b64decode(segment: str, what: str) -> bytes:
    # RFC 7515 section 2: base64url without padding. Non-canonical encodings (set low bits in the
    # last character) are refused so that one token has exactly one spelling (RFC 4648 3.5).
    try:
        return _jose.b64url_decode(segment)
    except _jose.NonCanonicalError:
        raise _fail(
            "format", f"the token's {what} is not canonical base64url; it was altered"
        ) from None
    except ValueError:
        raise _fail("format", f"the token's {what} is not base64url; is this a JWT?") from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # RFC 7519 section 4 / RFC 7515 section 5.2: duplicate member names must be rejected or
    # resolved last-wins; rejecting removes any doubt about which value another parser saw.
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise ValueError(f"duplicate member {name!r}")
        result[name] = value
    return result


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # RecursionError: [[[...]]]
        reason = str(exc) if "duplicate" in str(exc) else "not JSON"
        raise _fail("format", f"the token's {what} is {reason}") from None
    if not isinstance(value, dict):
        raise _fail("format", f"the token's {what} is not a JSON object")
    return value


@dataclass(frozen=True)
class _Parsed:
    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes = field(repr=False)
    signature: bytes = field(repr=False)

    @property
    def alg(self) -> str:
        return str(self.header.get("alg"))

    @property
    def kid(self) -> str | None:
        kid = self.header.get("kid")
        return kid if isinstance(kid, str) else None


def _parse(token: str) -> _Parsed:
    if not isinstance(token, str):
        raise _fail("format", "the token must be a str (the compact JWT, header.claims.signature)")
    token = token.strip()
    if len(token) > MAX_TOKEN_CHARS:
        raise _fail("format", f"the token is longer than {MAX_TOKEN_CHARS // 1024} KiB; refused")
    parts = token.split(".")
    if len(parts) == 5:
        raise _fail(
            "format",
            "the token is encrypted (JWE, five parts); certauth verifies signed access tokens "
            "(JWS, three parts): turn off token encryption for this API",
        )
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise _fail(
            "format",
            "the token is not a JWT (expected three base64url parts header.claims.signature); "
            "pass the access token itself, without 'Bearer '",
        )
    header = _json_object(_b64decode(parts[0], "header"), "header")
    claims = _json_object(_b64decode(parts[1], "claims"), "claims")
    signature = _b64decode(parts[2], "signature")
    return _Parsed(header, claims, f"{parts[0]}.{parts[1]}".encode("ascii"), signature)


def decode_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and claims of a JWT, **without verifying anything** (for display only).

    Raises :class:`TokenValidationError` with ``check="format"`` when ``token`` is not a
    well-formed compact JWS.
    """
    parsed = _parse(token)
    return parsed.header, parsed.claims


# -- keys (RFC 7517, RFC 7518 section 6) ---------------------------------------------------------

PublicKey = _jose.PublicKey


@dataclass(frozen=True)
class _Key:
    kid: str | None
    kty: str
    public_key: PublicKey = field(repr=False)
    alg: str | None = None
    crv: str | None = None
    #: Entra's v2 key sets name the issuer each key signs for (``{tenantid}`` templated).
    issuer: str | None = None

    def describe(self) -> str:
        if isinstance(self.public_key, rsa.RSAPublicKey):
            return f"RSA-{self.public_key.key_size}"
        return f"EC {self.crv}"

    def fits(self, alg: str) -> str | None:
        """Why this key cannot verify ``alg`` (``None`` if it can)."""
        # RFC 8725 section 3.1: the algorithm must fit the key, never the other way round.
        if self.alg is not None and self.alg != alg:
            return f"the key is published for {self.alg} only (its JWK 'alg')"
        try:
            # The key's kind and curve, then RFC 7518 section 3.3's minimum RSA size.
            _jose.check_key(self.public_key, alg)
        except (TypeError, ValueError) as exc:
            return str(exc)
        return None


def _load_jwk(jwk: Mapping[str, Any]) -> _Key:
    """One JWK as a key object; raises ValueError saying why it is unusable."""
    kid = jwk.get("kid") if isinstance(jwk.get("kid"), str) else None
    alg = jwk.get("alg") if isinstance(jwk.get("alg"), str) else None
    issuer = jwk.get("issuer") if isinstance(jwk.get("issuer"), str) else None
    # RFC 7517 sections 4.2/4.3: a key marked for encryption only is not a signature key.
    use = jwk.get("use")
    if use is not None and use != "sig":
        raise ValueError(f"'use' is {use!r}, not 'sig'")
    ops = jwk.get("key_ops")
    if isinstance(ops, list) and "verify" not in ops:
        raise ValueError("'key_ops' does not allow 'verify'")
    if alg is not None and alg not in _jose.ALGORITHMS:
        raise ValueError(f"'alg' {alg!r} is not an asymmetric signature algorithm")
    # Symmetric ("oct") keys are never loaded: a shared secret cannot prove who signed.
    # EC points are checked to lie on their curve (invalid-curve attacks).
    public_key = _jose.jwk_to_public_key(jwk)
    if isinstance(public_key, rsa.RSAPublicKey):
        return _Key(kid, "RSA", public_key, alg=alg, issuer=issuer)
    return _Key(kid, "EC", public_key, alg=alg, crv=jwk["crv"], issuer=issuer)


class KeySet:
    """The issuer's public signing keys, parsed once from a JWKS (RFC 7517 section 5).

    Keys that cannot verify signatures (symmetric, encryption-only, malformed) are skipped;
    :attr:`skipped` says why, for error messages.
    """

    def __init__(self, keys: Iterable[_Key], *, source: str, skipped: Sequence[str] = ()) -> None:
        self.keys: tuple[_Key, ...] = tuple(keys)
        self.source = source
        self.skipped: tuple[str, ...] = tuple(skipped)

    @classmethod
    def from_jwks(
        cls,
        document: Any,
        *,
        source: str = "the JWKS",
        error: type[CertauthError] = ConfigurationError,
    ) -> KeySet:
        """Parse a JWKS document (``{"keys": [...]}``); ``error`` is raised if it is not one."""
        if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
            raise error(f"{source}: not a JWKS (a JSON object with a 'keys' list)")
        keys: list[_Key] = []
        skipped: list[str] = []
        for index, entry in enumerate(document["keys"]):
            name = entry.get("kid") if isinstance(entry, Mapping) else None
            label = f"kid={name!r}" if isinstance(name, str) else f"key #{index}"
            if not isinstance(entry, Mapping):
                skipped.append(f"{label}: not a JSON object")
                continue
            try:
                keys.append(_load_jwk(entry))
            except ValueError as exc:
                skipped.append(f"{label}: {exc}")
        return cls(keys, source=source, skipped=skipped)

    @property
    def kids(self) -> tuple[str, ...]:
        """The key ids, in JWKS order."""
        return tuple(k.kid for k in self.keys if k.kid is not None)

    def __len__(self) -> int:
        return len(self.keys)

    def __repr__(self) -> str:
        return f"KeySet({self.source!r}, kids={list(self.kids)})"

    def select(self, parsed: _Parsed) -> _Key | None:
        """The key that verifies this token, ``None`` when its ``kid`` is not in the set.

        Raises ``algorithm`` when the ``kid`` names a key that does not fit the token's
        ``alg``, and ``kid`` when the token names no key and several could fit.
        """
        alg = parsed.alg
        kid = parsed.kid
        if kid is not None:
            candidates = [k for k in self.keys if k.kid == kid]
            if not candidates:
                return None
            reasons = []
            for key in candidates:
                reason = key.fits(alg)
                if reason is None:
                    return key
                reasons.append(reason)
            raise _fail(
                "algorithm",
                f"the token's alg {alg} does not fit its key kid={kid!r} ({'; '.join(reasons)}); "
                "a token whose algorithm does not match its key is refused (RFC 8725 section 3.1)",
            )
        fitting = [k for k in self.keys if k.fits(alg) is None]
        if len(fitting) == 1:
            return fitting[0]
        if not fitting:
            return None
        raise _fail(
            "kid",
            f"the token has no 'kid' header and {self.source} has {len(fitting)} keys for {alg}; "
            "the issuer must name its signing key",
        )


# -- signatures (RFC 7518 section 3) ----------------------------------------------------------


def _signature_ok(alg: str, key: _Key, signing_input: bytes, signature: bytes) -> bool:
    # RSASSA-PKCS1-v1_5, RSASSA-PSS, or ECDSA in its R || S form (RFC 7518 sections 3.3-3.5).
    return _jose.verify_signature(key.public_key, alg, signing_input, signature)


# -- the claims (RFC 7519 section 4.1, RFC 9068 section 4) -------------------------------------


def _utc(epoch: float) -> str:
    try:
        when = dt.datetime.fromtimestamp(epoch, dt.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return f"{epoch:.0f}"
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _as_epoch(now: float | dt.datetime | None) -> float:
    if now is None:
        return time.time()
    if isinstance(now, dt.datetime):
        if now.tzinfo is None:
            raise InvalidArgumentError("now must be timezone-aware (e.g. datetime.now(UTC))")
        return now.timestamp()
    if isinstance(now, bool) or not isinstance(now, int | float):
        raise InvalidArgumentError(f"now must be epoch seconds or an aware datetime, not {now!r}")
    return float(now)


def _numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    # RFC 7519 section 2: NumericDate is a JSON number (bool is a Python int: refuse it).
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail("format", f"the token's '{name}' claim is not a NumericDate (a number)")
    return float(value)


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(value.split())
    if isinstance(value, Iterable):
        result: list[str] = []
        for item in value:
            if not isinstance(item, str):
                raise InvalidArgumentError(f"expected strings, got {item!r}")
            result.extend(item.split())
        return tuple(dict.fromkeys(result))
    raise InvalidArgumentError(f"expected a string or a list of strings, got {value!r}")


def _issuer_hint(actual: str, expected: str) -> str:
    if actual.startswith("https://sts.windows.net/") and expected.endswith("/v2.0"):
        return (
            'this is an Entra v1.0 token: set "requestedAccessTokenVersion": 2 in the API\'s '
            "app manifest, or verify with the v1 issuer https://sts.windows.net/{tenantid}/"
        )
    if expected.startswith("https://sts.windows.net/") and actual.endswith("/v2.0"):
        return "this is an Entra v2.0 token: verify with the issuer it names"
    if actual.rstrip("/") == expected.rstrip("/"):
        return "they differ only in the trailing slash: pass the issuer exactly as the token has it"
    return "check the issuer (tenant) and that the token was issued by it"


@dataclass(frozen=True)
class _Policy:
    """What a valid token must say, beyond a good signature (pure; shared by every shell)."""

    issuer: str | None
    audiences: tuple[str, ...]
    required_scopes: tuple[str, ...] = ()
    required_roles: tuple[str, ...] = ()
    leeway: float = 60.0
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS

    @classmethod
    def build(
        cls,
        *,
        issuer: str | None,
        audience: str | Iterable[str],
        required_scopes: str | Iterable[str],
        required_roles: str | Iterable[str],
        leeway: float,
        algorithms: str | Iterable[str],
    ) -> _Policy:
        audiences = (audience,) if isinstance(audience, str) else tuple(audience)
        if not audiences or not all(isinstance(a, str) and a.strip() for a in audiences):
            # RFC 9068 section 4 / RFC 8725 section 3.9: the audience check is never optional.
            raise InvalidArgumentError(
                "audience is required: the API's application (client) id and/or App ID URI "
                "(e.g. api://billing); tokens for other APIs must be refused"
            )
        if issuer is not None and (not isinstance(issuer, str) or not issuer.strip()):
            raise InvalidArgumentError("issuer is empty; give the issuer URL or leave it out")
        if isinstance(leeway, bool) or not isinstance(leeway, int | float) or leeway < 0:
            raise InvalidArgumentError(f"leeway must be a number of seconds >= 0, not {leeway!r}")
        algs = (algorithms,) if isinstance(algorithms, str) else tuple(algorithms)
        if not algs:
            raise InvalidArgumentError(f"algorithms is empty; use e.g. {list(DEFAULT_ALGORITHMS)}")
        for alg in algs:
            if alg not in _jose.ALGORITHMS:
                if alg.lower() == "none" or alg.upper().startswith("HS"):
                    raise InvalidArgumentError(
                        f"algorithm {alg!r} is never accepted for access tokens: it proves "
                        "nothing about the issuer (RFC 8725 sections 2.1, 3.1)"
                    )
                raise InvalidArgumentError(
                    f"algorithm {alg!r} is not supported; use some of "
                    f"{', '.join(SUPPORTED_ALGORITHMS)}"
                )
        return cls(
            issuer=issuer.strip() if issuer else None,
            audiences=tuple(a.strip() for a in audiences),
            required_scopes=_strings(required_scopes),
            required_roles=_strings(required_roles),
            leeway=float(leeway),
            algorithms=algs,
        )

    def requiring(self, scopes: str | Iterable[str], roles: str | Iterable[str]) -> _Policy:
        """This policy plus more required scopes/roles (per-call requirements)."""
        more_scopes, more_roles = _strings(scopes), _strings(roles)
        if not more_scopes and not more_roles:
            return self
        return replace(
            self,
            required_scopes=tuple(dict.fromkeys(self.required_scopes + more_scopes)),
            required_roles=tuple(dict.fromkeys(self.required_roles + more_roles)),
        )

    def parse(self, token: str) -> _Parsed:
        """Checks that need no key: the format and the algorithm."""
        parsed = _parse(token)
        alg = parsed.header.get("alg")
        if not isinstance(alg, str) or not alg:
            raise _fail("algorithm", "the token's header has no 'alg'; refused")
        if alg.lower() == "none" or alg.upper().startswith("HS"):
            # RFC 8725 sections 2.1 and 3.1: unsigned tokens and HMAC tokens "signed" with the
            # issuer's public key are the classic forgeries.
            raise _fail(
                "algorithm",
                f"the token's alg is {alg!r}: unsigned and HMAC-signed tokens are never accepted "
                "(an issuer signs access tokens with its private key); this token is forged or "
                "not an access token",
            )
        if alg not in self.algorithms:
            raise _fail(
                "algorithm",
                f"the token's alg {alg} is not among the accepted algorithms "
                f"({', '.join(self.algorithms)}); add it to algorithms= if the issuer uses it",
            )
        # RFC 7515 section 4.1.11: a header extension marked critical that the recipient does
        # not understand makes the token invalid; certauth understands none.
        if "crit" in parsed.header:
            raise _fail(
                "format",
                f"the token's header marks extensions critical ({parsed.header['crit']!r}), "
                "which certauth does not implement (RFC 7515 section 4.1.11); refused",
            )
        return parsed

    def finish(self, parsed: _Parsed, key: _Key, now: float) -> dict[str, Any]:
        """Checks that need the key: the signature, then the claims. Returns the claims."""
        if not _signature_ok(parsed.alg, key, parsed.signing_input, parsed.signature):
            hint = "the token was altered, or signed by someone else with this kid"
            if "nonce" in parsed.header:
                hint = (
                    "its header carries a 'nonce': it is a Microsoft Graph token, which only "
                    "Graph can verify; request a token for your API (api://.../.default)"
                )
            raise _fail(
                "signature",
                f"the token's signature does not verify with key kid={key.kid!r} "
                f"({key.describe()}, {parsed.alg}); {hint}",
            )
        claims = parsed.claims
        self._check_issuer(claims, key)
        self._check_audience(claims)
        self._check_times(claims, now)
        self._check_scopes(claims)
        self._check_roles(claims)
        return claims

    def _check_issuer(self, claims: Mapping[str, Any], key: _Key) -> None:
        expected = self.issuer
        if expected is None:
            # Keys-only mode (jwks_uri without issuer). Entra's v2 key sets name the issuer
            # each key signs for; honouring it keeps tokens of *other* tenants signed with the
            # same shared keys out (the multi-tenant forwarding attack).
            expected = key.issuer
            if expected is None:
                return
        iss = claims.get("iss")
        if not isinstance(iss, str):
            raise _fail("issuer", f"the token has no 'iss' claim; expected {expected!r}")
        if TENANT_PLACEHOLDER in expected:
            tid = claims.get("tid")
            if not isinstance(tid, str) or not _TENANT_ID.match(tid):
                raise _fail(
                    "issuer",
                    f"the issuer template {expected!r} needs the token's 'tid' claim (a tenant "
                    "id), and this token has none",
                )
            expected = expected.replace(TENANT_PLACEHOLDER, tid)
        if iss != expected:
            raise _fail(
                "issuer",
                f"the token's issuer is {iss!r}, expected {expected!r}; "
                + _issuer_hint(iss, expected),
            )

    def _check_audience(self, claims: Mapping[str, Any]) -> None:
        aud = claims.get("aud")
        # RFC 7519 section 4.1.3: one string or an array of strings.
        if isinstance(aud, str):
            token_auds: tuple[str, ...] = (aud,)
        elif isinstance(aud, list) and all(isinstance(a, str) for a in aud):
            token_auds = tuple(aud)
        elif aud is None:
            raise _fail(
                "audience",
                f"the token has no 'aud' claim; expected {' or '.join(map(repr, self.audiences))}",
            )
        else:
            raise _fail("format", "the token's 'aud' claim is not a string or list of strings")
        if any(a in self.audiences for a in token_auds):
            return
        shown = token_auds[0] if len(token_auds) == 1 else list(token_auds)
        if _GRAPH_APP_ID in token_auds or any("graph.microsoft" in a for a in token_auds):
            hint = "it is a Microsoft Graph token: the client must request YOUR_API/.default"
        else:
            hint = (
                "the client requested a token for another resource, or this API is known by "
                "another id: pass every id it has (application id and App ID URI) as audience"
            )
        raise _fail(
            "audience",
            f"the token is for audience {shown!r}, expected "
            f"{' or '.join(map(repr, self.audiences))}; {hint}",
        )

    def _check_times(self, claims: Mapping[str, Any], now: float) -> None:
        exp = _numeric_date(claims, "exp")
        nbf = _numeric_date(claims, "nbf")
        if exp is None:
            # RFC 9068 section 2.2: exp is required in JWT access tokens.
            raise _fail("expired", "the token has no 'exp' claim; access tokens must expire")
        # RFC 7519 section 4.1.4: not accepted on or after exp (plus the allowed clock skew).
        if now >= exp + self.leeway:
            raise _fail(
                "expired",
                f"the token expired at {_utc(exp)} ({_ago(now - exp)} ago, leeway "
                f"{self.leeway:g} s); the client must get a new one (and this host's clock "
                "must be right)",
            )
        # RFC 7519 section 4.1.5: not accepted before nbf (minus the allowed clock skew).
        if nbf is not None and now + self.leeway < nbf:
            raise _fail(
                "not_yet_valid",
                f"the token is valid only from {_utc(nbf)} (in {_ago(nbf - now)}, leeway "
                f"{self.leeway:g} s); check the clocks of this host and the issuer (NTP)",
            )

    def _check_scopes(self, claims: Mapping[str, Any]) -> None:
        if not self.required_scopes:
            return
        # Entra puts delegated permissions in 'scp'; RFC 9068 section 2.2.3 (RFC 8693 4.2) in
        # 'scope'; both are space-separated strings.
        held: set[str] = set()
        for name in ("scp", "scope"):
            value = claims.get(name)
            if isinstance(value, str):
                held.update(value.split())
        missing = [s for s in self.required_scopes if s not in held]
        if missing:
            has = " ".join(sorted(held)) or "none"
            hint = "the user must consent to it, or the client must request it"
            if not held and claims.get("roles"):
                hint = (
                    "app-only tokens carry application permissions in 'roles', not scopes: "
                    "require a role instead"
                )
            raise _fail(
                "scope",
                f"the token lacks scope {' '.join(missing)} (it has: {has}); {hint}",
            )

    def _check_roles(self, claims: Mapping[str, Any]) -> None:
        if not self.required_roles:
            return
        value = claims.get("roles")
        held = {r for r in value if isinstance(r, str)} if isinstance(value, list) else set()
        missing = [r for r in self.required_roles if r not in held]
        if missing:
            has = " ".join(sorted(held)) or "none"
            raise _fail(
                "role",
                f"the token lacks role {' '.join(missing)} (it has: {has}); assign the app role "
                "(application permission) to the client and grant admin consent",
            )


def _ago(seconds: float) -> str:
    """``3 h 4 min``, ``59 s``: a duration for humans."""
    seconds = abs(int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    return f"{secs} s"


# -- where the keys come from: discovery + JWKS, cached, rate-limited (sans-I/O) -----------------


def discovery_url_for(issuer: str) -> str:
    """The OIDC discovery document that names ``issuer`` (OIDC Discovery 1.0 section 4).

    An issuer template (``{tenantid}``) is looked up under ``common``, whose Entra document
    names exactly that template; a v1 issuer (``https://sts.windows.net/TENANT/``) is published
    by ``login.microsoftonline.com/TENANT``.
    """
    concrete = issuer.replace(TENANT_PLACEHOLDER, "common")
    parts = urlsplit(concrete)
    if parts.scheme == "https" and (parts.hostname or "").lower() == "sts.windows.net":
        concrete = f"https://login.microsoftonline.com{parts.path}"
    return Authority.discovery_url(concrete)


@dataclass(frozen=True)
class _State:
    """A snapshot of what a key source knows; replaced whole, so readers need no lock."""

    keys: KeySet | None = None
    jwks_uri: str | None = None
    #: Bumped by every fetch attempt: a waiter that saw an older generation re-looks.
    generation: int = 0
    #: Monotonic time of the last fetch attempt (success or failure).
    attempted_at: float = -math.inf
    #: Monotonic time after which the keys count as stale and are refetched.
    stale_at: float = math.inf


@dataclass(frozen=True)
class _Refresh:
    """The core's answer "fetch the keys first" (``reason`` is for the log)."""

    reason: str
    generation: int
    #: Read the discovery document again too (first fetch, or keys past their max age); an
    #: unknown kid only refetches the JWKS.
    rediscover: bool = False


@dataclass(frozen=True)
class _Fetched:
    jwks_uri: str
    keys: KeySet


class _KeyCore:
    """The key source: decides when to fetch, builds the fetch flow, and keeps the result.

    The shells call :meth:`lookup`; on :class:`_Refresh` they run :meth:`fetch_flow` (one
    at a time) and hand the result to :meth:`installed` or :meth:`failed`.
    """

    def __init__(
        self,
        *,
        issuer: str | None,
        jwks_uri: str | None,
        jwks: Mapping[str, Any] | KeySet | None,
        refetch_interval: float,
        keys_max_age: float,
        retry: RetryPolicy | None,
    ) -> None:
        given = [n for n, v in (("jwks_uri", jwks_uri), ("jwks", jwks)) if v is not None]
        if len(given) > 1:
            raise InvalidArgumentError("give jwks_uri or jwks, not both")
        if issuer is None and not given:
            raise InvalidArgumentError(
                "say where the keys are: issuer (OIDC discovery), jwks_uri, or jwks"
            )
        if refetch_interval < 0 or keys_max_age <= 0:
            raise InvalidArgumentError("refetch_interval must be >= 0 and keys_max_age > 0")
        self.issuer = issuer
        self.jwks_uri = check_endpoint_url(jwks_uri, what="jwks_uri") if jwks_uri else None
        if issuer is not None and jwks_uri is None and jwks is None:
            discovery_url_for(issuer)  # refuse an unusable issuer URL now, not at first use
        self.refetch_interval = float(refetch_interval)
        self.keys_max_age = float(keys_max_age)
        self.retry = retry or DEFAULT_FETCH_RETRY
        self.static = jwks is not None
        if jwks is not None:
            keys = jwks if isinstance(jwks, KeySet) else KeySet.from_jwks(jwks, source="jwks")
            self.state = _State(keys=keys)
        else:
            self.state = _State(jwks_uri=self.jwks_uri)

    @property
    def where(self) -> str:
        return self.state.jwks_uri or self.jwks_uri or f"the keys of {self.issuer}"

    def lookup(self, parsed: _Parsed, at: float) -> _Key | _Refresh:
        """The key for this token, or a request to fetch keys first; raises ``kid`` when the
        key is unknown and a refetch is not allowed yet (the rate limit)."""
        state = self.state
        if state.keys is None:
            return _Refresh("no keys yet", state.generation, rediscover=True)
        if not self.static and at >= state.stale_at:
            return _Refresh("keys older than keys_max_age", state.generation, rediscover=True)
        key = state.keys.select(parsed)
        if key is not None:
            return key
        kid = parsed.kid
        since = at - state.attempted_at
        if not self.static and since >= self.refetch_interval:
            # The issuer may have rotated keys since the last fetch.
            return _Refresh(f"unknown kid {kid!r}", state.generation)
        raise self._unknown_kid(parsed, state, since)

    def _unknown_kid(self, parsed: _Parsed, state: _State, since: float) -> TokenValidationError:
        keys = state.keys
        assert keys is not None
        known = ", ".join(keys.kids) or "none"
        if keys.skipped:
            known += f"; skipped: {'; '.join(keys.skipped)}"
        what = f"kid {parsed.kid!r}" if parsed.kid else f"no kid and no {parsed.alg} key"
        if self.static:
            when = "the given jwks"
        else:
            when = (
                f"{self.where} (fetched {_ago(since)} ago; refetched at most every "
                f"{self.refetch_interval:g} s)"
            )
        return _fail(
            "kid",
            f"the token names {what}, which is not in {when}; keys there: {known}. The token "
            "is from another issuer or forged; an Entra app with its own signing key needs "
            "?appid=CLIENT_ID on the jwks_uri",
        )

    def gave_up(self) -> TransportError:
        """Lookups kept asking for keys (other callers' fetches kept failing or racing)."""
        return TransportError(f"{self.where}: the signing keys could not be loaded; try again")

    def fetch_flow(self, step: _Refresh, now: float) -> Flow[_Fetched]:
        """GET the discovery document (unless the JWKS location is configured, or known and
        ``step`` does not ask to rediscover) and then the JWKS."""
        jwks_uri = self.jwks_uri or (None if step.rediscover else self.state.jwks_uri)
        if jwks_uri is None:
            assert self.issuer is not None
            url = discovery_url_for(self.issuer)
            document = yield from self._get_json(url, "discovery document", now)
            jwks_uri = self._read_discovery(url, document)
        document = yield from self._get_json(jwks_uri, "JWKS", now)
        keys = KeySet.from_jwks(document, source=jwks_uri, error=TransportError)
        return _Fetched(jwks_uri, keys)

    def _read_discovery(self, url: str, document: Any) -> str:
        assert self.issuer is not None
        if not isinstance(document, Mapping):
            raise TransportError(f"{url}: the discovery document is not a JSON object", url=url)
        stated = document.get("issuer")
        # OIDC Discovery 1.0 section 4.3: the document must name the issuer that was asked for.
        if stated != self.issuer:
            raise ConfigurationError(
                f"{url}: the discovery document names issuer {stated!r}, not {self.issuer!r}; "
                "pass the issuer exactly as the document (and the tokens) name it"
            )
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri:
            raise TransportError(f"{url}: the discovery document has no jwks_uri", url=url)
        return check_endpoint_url(jwks_uri, what="jwks_uri")

    def _get_json(self, url: str, what: str, now: float) -> Flow[Any]:
        document = yield from _http.get_json(
            url, what=what, hint="check the issuer / jwks_uri", retry=self.retry, now=now
        )
        return document

    def installed(self, fetched: _Fetched, at: float) -> None:
        """Keep freshly fetched keys."""
        previous = self.state
        self.state = _State(
            keys=fetched.keys,
            jwks_uri=fetched.jwks_uri,
            generation=previous.generation + 1,
            attempted_at=at,
            stale_at=at + self.keys_max_age,
        )
        log.info(
            "certauth: fetched %d signing keys from %s (kids: %s)",
            len(fetched.keys),
            fetched.jwks_uri,
            ", ".join(fetched.keys.kids) or "none",
        )

    def failed(self, at: float) -> bool:
        """Record a failed fetch. True when the previous keys stay in use (a stale-refresh
        failure: an issuer outage must not take every API down with it)."""
        previous = self.state
        stale_refresh = previous.keys is not None and at >= previous.stale_at
        self.state = replace(
            previous,
            generation=previous.generation + 1,
            attempted_at=at,
            # Try again after the refetch interval, not on every request.
            stale_at=at + self.refetch_interval if stale_refresh else previous.stale_at,
        )
        return stale_refresh


#: A lookup ends within this many rounds (fetch, look again); more means a bug.
_MAX_ROUNDS = 4


# -- the sync shell ----------------------------------------------------------------------------


class _SyncKeys:
    """Runs the key core with httpx.Client; concurrent threads share one fetch."""

    def __init__(
        self,
        core: _KeyCore,
        *,
        verify: Any,
        timeout: float,
        client: httpx.Client | None,
        clock: Callable[[], float],
    ) -> None:
        self.core = core
        self._verify = verify
        self._timeout = timeout
        self._client = client
        self._owns_client = client is None
        self._clock = clock
        self._lock = threading.Lock()
        self._inflight: concurrent.futures.Future[None] | None = None

    def key_for(self, parsed: _Parsed) -> _Key:
        for _ in range(_MAX_ROUNDS):
            step = self.core.lookup(parsed, self._clock())
            if isinstance(step, _Key):
                return step
            self._refresh(step)
        raise self.core.gave_up()  # pragma: no cover - the rounds end well before

    def _refresh(self, step: _Refresh) -> None:
        with self._lock:
            if self.core.state.generation != step.generation:
                return  # another thread fetched meanwhile: look again
            future = self._inflight
            leader = future is None
            if future is None:
                future = self._inflight = concurrent.futures.Future()
        if not leader:
            future.result()  # the leader's outcome, error included
            return
        try:
            log.debug("certauth: fetching signing keys (%s)", step.reason)
            fetched = _http.run_sync(self.core.fetch_flow(step, time.time()), self._http())
            with self._lock:
                self.core.installed(fetched, self._clock())
            future.set_result(None)
        except BaseException as exc:
            with self._lock:
                keep = self.core.failed(self._clock())
            if keep and isinstance(exc, CertauthError):
                log.warning("certauth: keeping the previous signing keys: %s", exc)
                future.set_result(None)
                return
            future.set_exception(exc)
            raise
        finally:
            with self._lock:
                self._inflight = None

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = _http.new_sync_client(self._verify, self._timeout)
        return self._client

    def close(self) -> None:
        if self._owns_client and self._client is not None:
            self._client.close()
            self._client = None


class _AsyncKeys:
    """Runs the key core with httpx.AsyncClient; concurrent tasks share one fetch."""

    def __init__(
        self,
        core: _KeyCore,
        *,
        verify: Any,
        timeout: float,
        client: httpx.AsyncClient | None,
        clock: Callable[[], float],
    ) -> None:
        self.core = core
        self._verify = verify
        self._timeout = timeout
        self._client = client
        self._owns_client = client is None
        self._clock = clock
        self._inflight: asyncio.Future[None] | None = None

    async def key_for(self, parsed: _Parsed) -> _Key:
        for _ in range(_MAX_ROUNDS):
            step = self.core.lookup(parsed, self._clock())
            if isinstance(step, _Key):
                return step
            await self._refresh(step)
        raise self.core.gave_up()  # pragma: no cover - the rounds end well before

    async def _refresh(self, step: _Refresh) -> None:
        if self.core.state.generation != step.generation:
            return
        if self._inflight is not None:
            await asyncio.shield(self._inflight)
            return
        future = self._inflight = asyncio.get_running_loop().create_future()
        try:
            log.debug("certauth: fetching signing keys (%s)", step.reason)
            fetched = await _http.run_async(self.core.fetch_flow(step, time.time()), self._http())
            self.core.installed(fetched, self._clock())
            future.set_result(None)
        except asyncio.CancelledError:
            # The leader's caller went away; its waiters did not: they look again and one of
            # them fetches (no attempt is recorded, so the rate limit is not spent).
            future.set_result(None)
            raise
        except BaseException as exc:
            keep = self.core.failed(self._clock())
            if keep and isinstance(exc, CertauthError):
                log.warning("certauth: keeping the previous signing keys: %s", exc)
                future.set_result(None)
                return
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        finally:
            self._inflight = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = _http.new_async_client(self._verify, self._timeout)
        return self._client

    async def close(self) -> None:
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None


# -- public API --------------------------------------------------------------------------------


class _VerifierBase:
    _policy: _Policy
    _core: _KeyCore

    def _setup(
        self,
        *,
        issuer: str | None,
        jwks_uri: str | None,
        jwks: Mapping[str, Any] | KeySet | None,
        audience: str | Iterable[str],
        required_scopes: str | Iterable[str],
        required_roles: str | Iterable[str],
        leeway: float,
        algorithms: str | Iterable[str],
        refetch_interval: float,
        keys_max_age: float,
        retry: RetryPolicy | None,
    ) -> None:
        self._policy = _Policy.build(
            issuer=issuer,
            audience=audience,
            required_scopes=required_scopes,
            required_roles=required_roles,
            leeway=leeway,
            algorithms=algorithms,
        )
        self._core = _KeyCore(
            issuer=self._policy.issuer,
            jwks_uri=jwks_uri,
            jwks=jwks,
            refetch_interval=refetch_interval,
            keys_max_age=keys_max_age,
            retry=retry,
        )

    @property
    def issuer(self) -> str | None:
        """The issuer tokens must name (``None``: not checked beyond the keys' own issuer)."""
        return self._policy.issuer

    @property
    def audiences(self) -> tuple[str, ...]:
        """The accepted audiences."""
        return self._policy.audiences

    @property
    def jwks_uri(self) -> str | None:
        """Where the keys come from (known after discovery when only ``issuer`` was given)."""
        return self._core.state.jwks_uri

    @property
    def keys(self) -> KeySet | None:
        """The keys in memory (``None`` before the first fetch)."""
        return self._core.state.keys


class TokenVerifier(_VerifierBase):
    """Verifies access tokens for one API; keeps the issuer's keys in memory.

    ``TokenVerifier(issuer="https://login.microsoftonline.com/TENANT/v2.0",
    audience=("CLIENT_ID", "api://billing"))`` then ``verifier.verify(token)`` in every
    request. Keys are found through the issuer's discovery document (or taken from
    ``jwks_uri``, or from a ``jwks`` document for offline use) and fetched once; a token whose
    ``kid`` is unknown triggers one refetch, at most every ``refetch_interval`` seconds, so a
    flood of forged kids cannot hammer the issuer; threads that need keys at the same time
    share one fetch. Keys older than ``keys_max_age`` are refetched (and kept if that fails).

    ``issuer`` may be a template with ``{tenantid}`` (multi-tenant apps: the token's ``tid``
    fills it in). With ``jwks_uri`` and no ``issuer``, ``iss`` is checked only where the key
    set names an issuer per key (Entra v2): pass ``issuer`` too whenever you can.
    ``verify`` is a CA file or ``ssl.SSLContext`` for the https fetches, ``client`` an
    ``httpx.Client`` to use, ``clock`` the monotonic clock behind the rate limit (for tests).
    """

    def __init__(
        self,
        *,
        issuer: str | None = None,
        jwks_uri: str | None = None,
        jwks: Mapping[str, Any] | KeySet | None = None,
        audience: str | Iterable[str],
        required_scopes: str | Iterable[str] = (),
        required_roles: str | Iterable[str] = (),
        leeway: float = 60,
        algorithms: str | Iterable[str] = DEFAULT_ALGORITHMS,
        refetch_interval: float = DEFAULT_REFETCH_INTERVAL,
        keys_max_age: float = DEFAULT_KEYS_MAX_AGE,
        verify: Any = None,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._setup(
            issuer=issuer,
            jwks_uri=jwks_uri,
            jwks=jwks,
            audience=audience,
            required_scopes=required_scopes,
            required_roles=required_roles,
            leeway=leeway,
            algorithms=algorithms,
            refetch_interval=refetch_interval,
            keys_max_age=keys_max_age,
            retry=retry,
        )
        self._keys = _SyncKeys(
            self._core, verify=verify, timeout=timeout, client=client, clock=clock
        )

    def verify(
        self,
        token: str,
        *,
        now: float | dt.datetime | None = None,
        required_scopes: str | Iterable[str] = (),
        required_roles: str | Iterable[str] = (),
    ) -> dict[str, Any]:
        """The token's claims if it is valid; raises :class:`TokenValidationError` otherwise.

        ``required_scopes`` / ``required_roles`` add to the verifier's own (all must be held).
        ``now`` (epoch seconds or an aware datetime) defaults to the current time.
        :class:`TransportError` means the keys could not be fetched.
        """
        policy = self._policy.requiring(required_scopes, required_roles)
        at = _as_epoch(now)
        parsed = policy.parse(token)
        key = self._keys.key_for(parsed)
        return policy.finish(parsed, key, at)

    def close(self) -> None:
        """Close the HTTP client (when the verifier created it)."""
        self._keys.close()

    def __enter__(self) -> TokenVerifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TokenVerifier(issuer={self.issuer!r}, audience={list(self.audiences)!r})"


class AsyncTokenVerifier(_VerifierBase):
    """The asyncio twin of :class:`TokenVerifier` (same arguments; ``client`` is an
    ``httpx.AsyncClient``); ``await verifier.verify(token)``. Tasks share one fetch."""

    def __init__(
        self,
        *,
        issuer: str | None = None,
        jwks_uri: str | None = None,
        jwks: Mapping[str, Any] | KeySet | None = None,
        audience: str | Iterable[str],
        required_scopes: str | Iterable[str] = (),
        required_roles: str | Iterable[str] = (),
        leeway: float = 60,
        algorithms: str | Iterable[str] = DEFAULT_ALGORITHMS,
        refetch_interval: float = DEFAULT_REFETCH_INTERVAL,
        keys_max_age: float = DEFAULT_KEYS_MAX_AGE,
        verify: Any = None,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._setup(
            issuer=issuer,
            jwks_uri=jwks_uri,
            jwks=jwks,
            audience=audience,
            required_scopes=required_scopes,
            required_roles=required_roles,
            leeway=leeway,
            algorithms=algorithms,
            refetch_interval=refetch_interval,
            keys_max_age=keys_max_age,
            retry=retry,
        )
        self._keys = _AsyncKeys(
            self._core, verify=verify, timeout=timeout, client=client, clock=clock
        )

    async def verify(
        self,
        token: str,
        *,
        now: float | dt.datetime | None = None,
        required_scopes: str | Iterable[str] = (),
        required_roles: str | Iterable[str] = (),
    ) -> dict[str, Any]:
        """The token's claims if it is valid; see :meth:`TokenVerifier.verify`."""
        policy = self._policy.requiring(required_scopes, required_roles)
        at = _as_epoch(now)
        parsed = policy.parse(token)
        key = await self._keys.key_for(parsed)
        return policy.finish(parsed, key, at)

    async def close(self) -> None:
        """Close the HTTP client (when the verifier created it)."""
        await self._keys.close()

    async def __aenter__(self) -> AsyncTokenVerifier:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncTokenVerifier(issuer={self.issuer!r}, audience={list(self.audiences)!r})"


#: verify_access_token's key sources, shared per (issuer, jwks_uri, CA file) so that calling it
#: on every request fetches keys once per process, with the same rate limit as a TokenVerifier.
_shared: dict[tuple[str | None, str | None, str | bool | None, float], _SyncKeys] = {}
_shared_lock = threading.Lock()
_SHARED_MAX = 32


def _shared_keys(
    issuer: str | None, jwks_uri: str | None, verify: Any, timeout: float
) -> _SyncKeys:
    # Trust is part of the key: keys fetched under one CA must not serve a caller with another.
    trust = verify if verify is None or isinstance(verify, str | bool) else f"id:{id(verify)}"
    cache_key = (issuer, jwks_uri, trust, timeout)
    with _shared_lock:
        keys = _shared.get(cache_key)
        if keys is None:
            core = _KeyCore(
                issuer=issuer,
                jwks_uri=jwks_uri,
                jwks=None,
                refetch_interval=DEFAULT_REFETCH_INTERVAL,
                keys_max_age=DEFAULT_KEYS_MAX_AGE,
                retry=None,
            )
            keys = _SyncKeys(
                core, verify=verify, timeout=timeout, client=None, clock=time.monotonic
            )
            if len(_shared) >= _SHARED_MAX:
                # Dropped, not closed: another thread may be fetching with it right now.
                _shared.pop(next(iter(_shared)))
            _shared[cache_key] = keys
    return keys


def verify_access_token(
    token: str,
    *,
    issuer: str | None = None,
    jwks_uri: str | None = None,
    jwks: Mapping[str, Any] | KeySet | None = None,
    audience: str | Iterable[str],
    required_scopes: str | Iterable[str] = (),
    required_roles: str | Iterable[str] = (),
    leeway: float = 60,
    algorithms: str | Iterable[str] = DEFAULT_ALGORITHMS,
    now: float | dt.datetime | None = None,
    verify: Any = None,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Verify an access token; return its claims or raise :class:`TokenValidationError`.

    The checks, in order (``TokenValidationError.check``): ``format``, ``algorithm`` (never
    ``none`` or HMAC; the key must fit the alg), ``kid``, ``signature``, ``issuer``,
    ``audience`` (``audience`` may list the application id and the App ID URI), ``expired``,
    ``not_yet_valid`` (both with ``leeway`` seconds of clock skew), ``scope`` (every one of
    ``required_scopes`` in ``scp``/``scope``), ``role`` (every one of ``required_roles`` in
    ``roles``).

    Keys: ``issuer`` alone (found through OIDC discovery), ``jwks_uri`` (with or without
    ``issuer``; B2C needs both) or a ``jwks`` document (offline). Keys fetched from the network
    are kept in memory for the whole process and shared by every call with the same source
    (see :class:`TokenVerifier` for the refetch rules). :class:`TransportError` means they could
    not be fetched. ``verify``: a CA file or ``ssl.SSLContext`` for https.
    """
    policy = _Policy.build(
        issuer=issuer,
        audience=audience,
        required_scopes=required_scopes,
        required_roles=required_roles,
        leeway=leeway,
        algorithms=algorithms,
    )
    at = _as_epoch(now)
    if jwks is not None:
        # Offline: a throwaway key core over the given keys (it never fetches).
        static = _KeyCore(
            issuer=policy.issuer,
            jwks_uri=jwks_uri,
            jwks=jwks,
            refetch_interval=DEFAULT_REFETCH_INTERVAL,
            keys_max_age=DEFAULT_KEYS_MAX_AGE,
            retry=None,
        )
        parsed = policy.parse(token)
        step = static.lookup(parsed, 0.0)
        assert isinstance(step, _Key)  # a static core raises instead of asking to fetch
        key = step
    else:
        keys = _shared_keys(policy.issuer, jwks_uri, verify, timeout)
        parsed = policy.parse(token)
        key = keys.key_for(parsed)
    return policy.finish(parsed, key, at)
