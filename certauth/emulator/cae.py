"""Continuous access evaluation (CAE) in the emulator: the ``claims`` request parameter, CAE
token lifetimes, revocation times and the claims challenge a CAE-aware API sends.

Pure rules and thread-safe state; no sockets and no clock reads (times are parameters). The
routes that use them are :mod:`certauth.emulator.resource` (the protected test API and the
revocation admin route) and :mod:`certauth.emulator.token_endpoint` (issuing).

Where each rule comes from (Microsoft Learn):

- "Claims challenges, claims requests, and client capabilities"
  (https://learn.microsoft.com/entra/identity-platform/claims-challenge): a client declares it
  can handle claims challenges with ``{"access_token": {"xms_cc": {"values": ["cp1"]}}}`` in the
  token request's ``claims`` parameter; a challenge is ``401`` with ``WWW-Authenticate: Bearer
  realm="", authorization_uri="...", error="insufficient_claims", claims="<base64 JSON>"``.
- "How to use Continuous Access Evaluation enabled APIs in your applications"
  (https://learn.microsoft.com/entra/identity-platform/app-resilience-continuous-access-evaluation):
  after a revocation the API's challenge asks for ``{"access_token": {"nbf": {"essential":
  true, "value": "<revocation time>"}}}``; the client sends it back as ``claims`` and gets a
  token issued after that time.
- "Continuous access evaluation for workload identities"
  (https://learn.microsoft.com/entra/identity/conditional-access/concept-continuous-access-evaluation-workload):
  ``xms_cc`` with ``cp1`` in the token is what marks a CAE-capable client; app-only CAE tokens
  are long-lived, "with a lifetime of up to 24 hours"; revocation events (service principal
  disabled or deleted, high risk) make the resource reject earlier tokens.
"""

from __future__ import annotations

import base64
import json
import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from certauth.cae import declares_cae
from certauth.emulator.entra_errors import EntraError

__all__ = [
    "CAE_TOKEN_LIFETIME",
    "NO_CLAIMS",
    "ClaimsRequest",
    "RevocationList",
    "bearer_challenge",
    "challenge_claims",
    "claims_challenge_header",
    "merge_issued_at",
    "parse_claims_request",
]

#: Lifetime (seconds) of a token issued to a CAE-capable client: 24 hours less one second,
#: as Entra answers 3599 for its one-hour default. "Continuous access evaluation for workload
#: identities" gives app-only (workload identity) CAE tokens "a lifetime of up to 24 hours";
#: user tokens in CAE sessions may live up to 28 hours ("How to use Continuous Access
#: Evaluation enabled APIs in your applications"), but the emulator issues app-only tokens.
CAE_TOKEN_LIFETIME = 24 * 3600 - 1

#: Longest ``claims`` value read (a challenge's claims are a few hundred bytes).
_MAX_CLAIMS_CHARS = 8192


@dataclass(frozen=True)
class ClaimsRequest:
    """What a token request's ``claims`` parameter asks of the access token.

    ``capabilities`` are the ``xms_cc`` values (e.g. ``("cp1",)``), ``not_before`` the epoch
    second an ``nbf`` claim request names (a claims challenge after a revocation).
    """

    capabilities: tuple[str, ...] = ()
    not_before: int | None = None

    @property
    def cae(self) -> bool:
        """Whether the client declared the CAE capability (``cp1``, case-insensitive)."""
        return declares_cae(self.capabilities)


#: A token request without ``claims``: asks for nothing.
NO_CLAIMS = ClaimsRequest()


def _invalid(reason: str) -> EntraError:
    # Microsoft's error-code reference lists no code for a malformed ``claims`` parameter in
    # particular; AADSTS90100 (InvalidRequestParameter, "The parameter is empty or not valid")
    # is the documented code for a request parameter that is empty or not valid.
    return EntraError(90100, f"claims parameter is empty or not valid: {reason}.")


def parse_claims_request(value: str | None) -> ClaimsRequest:
    """Read a token request's ``claims`` parameter (OpenID Connect Core 1.0 section 5.5: a
    JSON object; Entra reads its ``access_token`` member).

    ``None`` (no parameter) asks for nothing. Raises :class:`EntraError` (AADSTS90100) when the
    value is empty, not JSON, not an object, or when ``access_token``, ``xms_cc`` or ``nbf``
    are not shaped as the claims-challenge documents show them. Unknown claims are ignored, as
    Entra ignores claims it does not act on.
    """
    if value is None:
        return NO_CLAIMS
    if not value.strip():
        raise _invalid("it is empty")
    if len(value) > _MAX_CLAIMS_CHARS:
        raise _invalid(f"it is longer than {_MAX_CLAIMS_CHARS} characters")
    try:
        parsed = json.loads(value)
    except ValueError:
        raise _invalid("it is not JSON") from None
    if not isinstance(parsed, dict):
        raise _invalid('it must be a JSON object such as {"access_token": {...}}')
    access = parsed.get("access_token", {})
    if access is None:
        access = {}
    if not isinstance(access, dict):
        raise _invalid("'access_token' must be a JSON object")
    return ClaimsRequest(
        capabilities=_capabilities(access.get("xms_cc")),
        not_before=_not_before(access.get("nbf")),
    )


def _capabilities(request: Any) -> tuple[str, ...]:
    if request is None:
        return ()
    if not isinstance(request, dict):
        raise _invalid("'xms_cc' must be an object with 'values'")
    values = request.get("values", [])
    if isinstance(values, str):  # some clients send one capability as a string
        values = [values]
    if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
        raise _invalid("'xms_cc' values must be a list of capability names")
    return tuple(dict.fromkeys(values))


def _not_before(request: Any) -> int | None:
    if request is None:
        return None
    if not isinstance(request, dict):
        raise _invalid("'nbf' must be an object with 'essential' and 'value'")
    # The challenge carries the time as a string of digits ("value": "1604106651"); a number
    # is read too. Anything else (true, 1.5, null, an object) prints as no run of digits; the
    # length cap keeps int() away from its limit on huge digit strings.
    text = str(request.get("value")).strip()
    if not text.isascii() or not text.isdigit() or len(text) > 12:
        raise _invalid("'nbf' value must be a Unix time")
    return int(text)


def merge_issued_at(backdated: int, now: float, request: ClaimsRequest) -> int:
    """The ``iat``/``nbf`` of a token issued at ``now``: Entra's backdated time, raised to the
    ``nbf`` the claims request names (never past ``now``: a token is not issued in the future).
    """
    if request.not_before is None:
        return backdated
    return max(backdated, min(request.not_before, math.floor(now)))


# -- revocation ---------------------------------------------------------------------------------


class RevocationList:
    """When each client's tokens were revoked, per tenant (thread-safe).

    A CAE-aware resource rejects a CAE token issued (``iat``) before its client's revocation
    time, as Microsoft Graph does after a service principal is disabled.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._revoked: dict[tuple[str, str], int] = {}

    def revoke(self, tenant_ids: Iterable[str], client_id: str, *, now: float) -> int:
        """Revoke ``client_id``'s tokens issued before ``now`` in each tenant; returns the
        revocation time (whole epoch seconds, as the challenge's ``nbf`` value carries it)."""
        at = math.floor(now)
        with self._lock:
            for tenant_id in tenant_ids:
                self._revoked[(tenant_id.lower(), client_id.lower())] = at
        return at

    def revoked_at(self, tenant_id: str, client_id: str) -> int | None:
        """The client's revocation time in that tenant, or ``None``."""
        with self._lock:
            return self._revoked.get((tenant_id.lower(), client_id.lower()))

    def clear(self) -> None:
        """Forget every revocation."""
        with self._lock:
            self._revoked.clear()


def challenge_claims(revoked_at: int) -> str:
    """The claims a challenge asks for after a revocation: a token not before ``revoked_at``.

    Byte for byte the JSON of the example in "How to use Continuous Access Evaluation enabled
    APIs in your applications" (``{"access_token":{"nbf":{"essential":true,
    "value":"1604106651"}}}``, one space included), so the base64 matches what Graph sends.
    """
    value = json.dumps(str(int(revoked_at)))
    return '{"access_token":{"nbf":{"essential":true, "value":' + value + "}}}"


def bearer_challenge(authorization_uri: str, **params: str) -> str:
    """A ``WWW-Authenticate`` ``Bearer`` challenge as Microsoft's APIs write it: ``realm``
    (empty when authentication goes through the common endpoint), ``authorization_uri``, then
    ``params`` in order, every value quoted (RFC 6750 section 3). Values must hold no ``"`` or
    ``\\``: callers pass URLs, error codes, base64 and sanitised descriptions."""
    items = {"realm": "", "authorization_uri": authorization_uri, **params}
    return "Bearer " + ", ".join(f'{name}="{value}"' for name, value in items.items())


def claims_challenge_header(authorization_uri: str, revoked_at: int) -> str:
    """``WWW-Authenticate`` of a CAE claims challenge, as Microsoft Graph sends it.

    "Claims challenges, claims requests, and client capabilities": ``claims`` is the claims
    request in standard base64 (the documented examples end in ``=`` padding).
    """
    encoded = base64.b64encode(challenge_claims(revoked_at).encode("utf-8")).decode("ascii")
    return bearer_challenge(authorization_uri, error="insufficient_claims", claims=encoded)
