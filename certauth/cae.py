"""Continuous access evaluation (CAE) and claims challenges, sans-I/O.

Three rules, each from Microsoft's "Claims challenges, claims requests and client capabilities"
(https://learn.microsoft.com/entra/identity-platform/claims-challenge) and "How to use
Continuous Access Evaluation enabled APIs in your applications"
(https://learn.microsoft.com/entra/identity-platform/app-resilience-continuous-access-evaluation):

- the ``claims`` request parameter is a JSON object (OpenID Connect Core 1.0 section 5.5);
- a CAE-capable client declares it in every token request by the client capability
  ``{"access_token": {"xms_cc": {"values": ["cp1"]}}}`` merged into ``claims``;
- an API that refuses a token answers ``401`` with ``WWW-Authenticate: Bearer ...,
  error="insufficient_claims", claims="<base64 of the claims to request>"``.

The credentials build their requests with :func:`token_request_claims`; ``BearerAuth`` reads
answers with :func:`claims_from_challenge`, over :func:`parse_www_authenticate`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from certauth.errors import InvalidArgumentError

__all__ = [
    "CLIENT_CAPABILITY",
    "Challenge",
    "claims_from_challenge",
    "declares_cae",
    "parse_claims",
    "parse_www_authenticate",
    "token_request_claims",
]

#: The client capability that says "this client handles claims challenges" (CAE), as
#: Microsoft's claims-challenge page writes it.
CLIENT_CAPABILITY = "cp1"


def declares_cae(capabilities: object) -> bool:
    """Whether ``xms_cc`` capability values hold ``cp1`` (in any case; a single string counts
    as one value, as some clients write it).

    The one test of "this client handles claims challenges", whether a credential is about to
    declare it, the emulator reads it from a token request, or its API from a token.
    """
    values = [capabilities] if isinstance(capabilities, str) else capabilities
    return isinstance(values, list | tuple) and any(
        isinstance(value, str) and value.lower() == CLIENT_CAPABILITY for value in values
    )


# -- the claims request parameter ---------------------------------------------------------------


def parse_claims(claims: object) -> dict[str, Any]:
    """``claims=`` as a JSON object (OpenID Connect Core 1.0 section 5.5), or a typed error
    that names it. azure-core passes claims as a JSON string (decoded from a challenge)."""
    if not isinstance(claims, str):
        raise InvalidArgumentError(
            f"claims= must be a JSON string such as '{{\"access_token\": {{...}}}}', got "
            f"{type(claims).__name__}"
        )
    try:
        parsed = json.loads(claims)
    except ValueError:
        raise InvalidArgumentError(
            "claims= is not JSON; pass the claims request as a JSON object string (a claims "
            "challenge's claims, base64-decoded)"
        ) from None
    if not isinstance(parsed, dict):
        raise InvalidArgumentError(
            f"claims= is JSON but not an object (it is a {type(parsed).__name__}); the claims "
            'request is an object such as {"access_token": {...}}'
        )
    return parsed


def token_request_claims(claims: object, *, cae: bool) -> str | None:
    """The ``claims`` form parameter of a token request (``None``: send none).

    Without ``cae`` the caller's claims go out as given, and a request never declares the
    client capability: a ``claims=`` that carries ``xms_cc`` itself is refused (pass
    ``enable_cae=True`` instead), so a non-CAE token is never a CAE one. With ``cae`` the
    capability is merged into ``access_token`` of the caller's claims: its other members are
    kept, and ``cp1`` joins any capability values already listed (the claims-challenge page's
    "client capabilities" section; MSAL merges the same way).
    """
    parsed = parse_claims(claims) if claims is not None else None
    access = _access_token_claims(parsed)
    if not cae:
        if "xms_cc" in access:
            raise InvalidArgumentError(
                "claims= declares the client capability xms_cc; pass enable_cae=True to "
                "declare it, so CAE and non-CAE tokens stay apart"
            )
        return claims if isinstance(claims, str) else None
    values = _capability_values(access.get("xms_cc"))
    if not declares_cae(values):
        values.append(CLIENT_CAPABILITY)
    merged = dict(parsed or {})
    merged["access_token"] = {**access, "xms_cc": {"values": values}}
    return json.dumps(merged, separators=(",", ":"))


def _access_token_claims(parsed: Mapping[str, Any] | None) -> dict[str, Any]:
    if parsed is None or "access_token" not in parsed:
        return {}
    access = parsed["access_token"]
    if not isinstance(access, dict):
        raise InvalidArgumentError(
            'claims= has an "access_token" member that is not a JSON object; write it as '
            '{"access_token": {"CLAIM": {...}}}'
        )
    return access


def _capability_values(declared: object) -> list[str]:
    if declared is None:
        return []
    values = declared.get("values") if isinstance(declared, dict) else None
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise InvalidArgumentError(
            'claims= has an "xms_cc" that is not {"values": ["CAPABILITY", ...]}; fix it or '
            "leave it out (enable_cae=True adds cp1)"
        )
    return list(values)


# -- WWW-Authenticate ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Challenge:
    """One challenge of a ``WWW-Authenticate`` header (RFC 9110 section 11.6.1).

    ``scheme`` and parameter names are lower-cased (both are case-insensitive, RFC 9110
    section 11.1 and 11.2); parameter values are unquoted.
    """

    scheme: str
    params: Mapping[str, str] = field(default_factory=dict)
    token68: str | None = None


# RFC 9110 section 5.6.2 (tchar), 5.6.4 (quoted-string), 11.2 (token68); OWS is SP / HTAB.
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_SCHEME = re.compile(_TOKEN)
_PARAM = re.compile(rf"({_TOKEN})[ \t]*=[ \t]*({_TOKEN}|{_QUOTED})")
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*(?=[ \t]*(?:,|$))")
#: Control characters other than HTAB are allowed nowhere in a field value (RFC 9110 5.5).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def parse_www_authenticate(values: Iterable[str]) -> list[Challenge]:
    """Every challenge in the ``WWW-Authenticate`` field lines ``values``, in order.

    RFC 9110 section 11.6.1: a comma-separated list of challenges, each an auth-scheme
    followed by a token68 or by comma-separated ``name=value`` parameters (token or
    quoted-string, section 11.2); a field may be sent on several lines (section 5.3). A
    parameter name may occur once per challenge. Raises ``ValueError`` for anything else:
    the caller decides what a malformed challenge means.
    """
    challenges: list[Challenge] = []
    for value in values:
        challenges.extend(_parse_line(value))
    return challenges


def _parse_line(text: str) -> list[Challenge]:
    if _CONTROL.search(text):
        raise ValueError("control character in WWW-Authenticate")
    found: list[Challenge] = []
    scheme: str | None = None
    params: dict[str, str] = {}
    token68: str | None = None
    pos, end = 0, len(text)

    def close() -> None:
        if scheme is not None:
            found.append(Challenge(scheme, params, token68))

    while True:
        pos = _skip_separators(text, pos)
        if pos >= end:
            break
        param = _PARAM.match(text, pos)
        if param is not None and scheme is not None and token68 is None:
            name = param[1].lower()
            if name in params:
                raise ValueError(f"parameter {name!r} twice in one challenge")
            params[name] = _unquote(param[2])
            pos = _after_item(text, param.end())
            continue
        match = _SCHEME.match(text, pos)
        if match is None:
            raise ValueError(f"expected an auth-scheme at offset {pos}")
        close()
        scheme, params, token68 = match[0].lower(), {}, None
        pos = match.end()
        if pos < end and text[pos] in " \t":
            pos = _skip_ows(text, pos)
            blob = _TOKEN68.match(text, pos)
            if blob is not None and _PARAM.match(text, pos) is None:
                token68 = blob[0]
                pos = _after_item(text, blob.end())
            elif _PARAM.match(text, pos) is None and pos < end and text[pos] != ",":
                raise ValueError(f"expected parameters after {scheme!r}")
        else:
            pos = _after_item(text, pos)
    close()
    return found


def _skip_separators(text: str, pos: int) -> int:
    # RFC 9110 section 5.6.1: empty list elements ("a, , b") are allowed and ignored.
    while pos < len(text) and text[pos] in " \t,":
        pos += 1
    return pos


def _skip_ows(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t":
        pos += 1
    return pos


def _after_item(text: str, pos: int) -> int:
    """After a list element only OWS and a comma (or the end) may follow."""
    pos = _skip_ows(text, pos)
    if pos < len(text) and text[pos] != ",":
        raise ValueError(f"unexpected {text[pos]!r} at offset {pos}")
    return pos


def _unquote(value: str) -> str:
    if not value.startswith('"'):
        return value
    # RFC 9110 section 5.6.4: a quoted-pair stands for the octet after the backslash.
    return re.sub(r"\\(.)", r"\1", value[1:-1])


def claims_from_challenge(values: Iterable[str]) -> str | None:
    """The claims a 401's ``WWW-Authenticate`` lines ask for, as a JSON string, or ``None``.

    A claims challenge is a ``Bearer`` challenge with ``error="insufficient_claims"`` and a
    ``claims`` parameter holding the base64 of a JSON object (Microsoft's claims-challenge
    page, "Claims challenge header format"); base64url and missing padding are accepted, as
    azure-core accepts them. Anything else (no such challenge, a header that does not parse,
    claims that are not base64 of a JSON object) is ``None``: a plain 401.
    """
    try:
        challenges = parse_www_authenticate(values)
    except ValueError:
        return None
    for challenge in challenges:
        params = challenge.params
        if challenge.scheme != "bearer" or params.get("error") != "insufficient_claims":
            continue
        return _decode_claims(params.get("claims", ""))
    return None


def _decode_claims(encoded: str) -> str | None:
    # Padding is optional (base64url as JWTs write it, RFC 7515 section 2), so it is dropped
    # and put back; both alphabets (RFC 4648 sections 4 and 5) are read.
    text = encoded.strip().rstrip("=").replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        claims = raw.decode("utf-8")
        parse_claims(claims)
    except (binascii.Error, UnicodeDecodeError, InvalidArgumentError):
        return None
    return claims
