"""Compact JWS as access tokens arrive: the check names, the accepted algorithms, and parsing.

Parsing follows RFC 7515 section 5.2 and RFC 7519 section 7.2: three base64url parts (strict
base64url, :func:`certauth._jose.b64url_decode`), a header and claims that are JSON objects
without duplicate members. Nothing here needs a key; :func:`decode_unverified` is the display
path (``certauth decode``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from certauth import _jose
from certauth.errors import TokenValidationError

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
#: Every value :attr:`TokenValidationError.check` takes here, in the order they are checked;
#: a sender-constrained token's binding adds :data:`certauth.verify.binding.BINDING_CHECKS`.
CHECKS: tuple[str, ...] = get_args(Check)

#: Entra tokens with many group claims reach ~10 KiB; anything far larger is refused unread.
MAX_TOKEN_CHARS = 64 * 1024

#: RFC 7518 section 3.1: the asymmetric JWS algorithms certauth verifies (the table in
#: :mod:`certauth._jose`: no ``none``, no HMAC, RFC 8725 sections 2.1 and 3.1).
SUPPORTED_ALGORITHMS: tuple[str, ...] = tuple(_jose.ALGORITHMS)


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
