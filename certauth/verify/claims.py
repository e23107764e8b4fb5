"""What a valid access token must say beyond a good signature: the claims policy.

``_Policy`` is pure (no sockets, no clock reads; ``now`` is a parameter) and shared by every
shell: the checks that need no key (format, algorithm: :meth:`_Policy.parse`), then, given the
key, the signature and the claims (:meth:`_Policy.finish`): issuer (with Entra's ``{tenantid}``
templates), audience, expiry, scopes and roles. RFC 7519 section 4.1, RFC 9068 sections 2.2
and 4, RFC 8725.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from certauth.authority import check_no_user_info
from certauth.errors import InvalidArgumentError
from certauth.verify.jwks import _Key, _signature_ok
from certauth.verify.jwt import (
    DEFAULT_ALGORITHMS,
    SUPPORTED_ALGORITHMS,
    _fail,
    _parse,
    _Parsed,
)

#: Issuer templates: Entra's ``/common`` discovery document names its issuer with this
#: placeholder; the token's ``tid`` claim fills it in.
TENANT_PLACEHOLDER = "{tenantid}"

_TENANT_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
#: Microsoft Graph's application id: its tokens are for Graph only (see the audience hint).
_GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"


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


#: The NumericDates a date can show: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z (Python's
#: datetime range). A claim outside it (``1e308``, ``10**400``) names no time and is refused.
MIN_NUMERIC_DATE = -62_135_596_800
MAX_NUMERIC_DATE = 253_402_300_799


def in_date_range(value: int | float) -> bool:
    """Whether ``value`` (epoch seconds) is a time a date can show. Compared exactly, without
    converting to float first: ``10**400`` overflows a float and ``NaN`` compares false."""
    return MIN_NUMERIC_DATE <= value <= MAX_NUMERIC_DATE


def _numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    # RFC 7519 section 2: NumericDate is a JSON number (bool is a Python int: refuse it).
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail("format", f"the token's '{name}' claim is not a NumericDate (a number)")
    if not in_date_range(value):
        raise _fail(
            "format",
            f"the token's '{name}' claim is not a NumericDate between years 1 and 9999 "
            "(a number too large, or not finite); the token is malformed or forged",
        )
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
        if issuer is not None and "://" in issuer:
            # Compared with 'iss' and quoted in refusals even when never fetched: no password.
            check_no_user_info(issuer, what="issuer")
        if isinstance(leeway, bool) or not isinstance(leeway, int | float) or leeway < 0:
            raise InvalidArgumentError(f"leeway must be a number of seconds >= 0, not {leeway!r}")
        algs = (algorithms,) if isinstance(algorithms, str) else tuple(algorithms)
        if not algs:
            raise InvalidArgumentError(f"algorithms is empty; use e.g. {list(DEFAULT_ALGORITHMS)}")
        for alg in algs:
            if alg not in SUPPORTED_ALGORITHMS:
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

    def finish(self, parsed: _Parsed, keys: Sequence[_Key], now: float) -> dict[str, Any]:
        """Checks that need the key: the signature, then the claims. Returns the claims.

        ``keys`` are the candidates :meth:`KeySet.select` found (one, unless the JWKS lists the
        token's ``kid`` more than once): the first whose signature verifies is the token's key,
        and only its ``issuer`` counts.
        """
        key = _signed_by(parsed, keys)
        if key is None:
            hint = "the token was altered, or signed by someone else with this kid"
            if "nonce" in parsed.header:
                hint = (
                    "its header carries a 'nonce': it is a Microsoft Graph token, which only "
                    "Graph can verify; request a token for your API (api://.../.default)"
                )
            which = f"key kid={keys[0].kid!r}"
            if len(keys) > 1:
                which = f"any of the {len(keys)} keys kid={keys[0].kid!r}"
            tried = ", ".join(k.describe() for k in keys)
            raise _fail(
                "signature",
                f"the token's signature does not verify with {which} ({tried}, {parsed.alg}); "
                f"{hint}",
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


def _signed_by(parsed: _Parsed, keys: Sequence[_Key]) -> _Key | None:
    """The first of ``keys`` whose signature over the token verifies."""
    for key in keys:
        if _signature_ok(parsed.alg, key, parsed.signing_input, parsed.signature):
            return key
    return None


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
