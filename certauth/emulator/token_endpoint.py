"""The emulator's token endpoints (v2, v1 and B2C): faults, counting, checking, issuing.

A POST is counted, answered by an injected fault if one is planned, else parsed, its DPoP
proof checked if it has one (:mod:`certauth.emulator.dpop_checks`), and checked the way Entra ID
checks it (:mod:`certauth.emulator.checks`); an accepted request gets a signed access token
(:mod:`certauth.emulator.tokens`), bound to the proof's key when there was one, a refused one
Entra's error response.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
import urllib.parse
import uuid
import weakref
from dataclasses import dataclass

from certauth.emulator.cae import CAE_TOKEN_LIFETIME
from certauth.emulator.checks import (
    EntraError,
    Policy,
    ReplayCache,
    TokenRequest,
    check_token_request,
)
from certauth.emulator.clock import Clock
from certauth.emulator.dpop_checks import TokenEndpointDPoP
from certauth.emulator.registry import Registry
from certauth.emulator.requests import PeerCertificate
from certauth.emulator.responses import error_response, json_response, trace_headers
from certauth.emulator.server import HttpRequest, HttpResponse
from certauth.emulator.tokens import (
    Endpoint,
    Grant,
    KeyRing,
    access_token_claims,
    sign_access_token,
    token_response,
)
from certauth.errors import InvalidArgumentError

__all__ = ["FaultPlan", "RequestHold", "TokenEndpoint"]

log = logging.getLogger("certauth.emulator")


class RequestHold:
    """Keeps the token requests of a fault plan unanswered until the test lets them go, oldest
    first: a test can act while a request is in flight, knowing that it is, instead of racing
    a fixed ``delay`` against a machine that may be slower than the delay assumed.

    Pass one to :meth:`~certauth.emulator.Emulator.inject_faults` as ``hold=``; thread-safe.
    A stopping emulator lets its held requests go, so a test that fails before releasing them
    does not leave server threads waiting.

    Example::

        hold = RequestHold()
        tenant.inject_faults(hold=hold, count=2)
        ...                         # start two clients in threads
        hold.wait_for_arrivals(2)   # both requests reached the emulator, unanswered
        hold.release()              # the first is answered; the second still waits
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._arrived = 0
        self._released = 0
        self._open = False

    @property
    def arrived(self) -> int:
        """Requests that reached the hold so far (released or not)."""
        with self._changed:
            return self._arrived

    def wait_for_arrivals(self, count: int = 1, *, timeout: float = 30.0) -> None:
        """Wait until ``count`` requests have reached the hold in all; ``TimeoutError`` when
        they have not within ``timeout`` seconds (the clients never sent them)."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._arrived >= count, timeout):
                raise TimeoutError(
                    f"{self._arrived} of {count} token requests reached the hold in {timeout:g} s"
                )

    def release(self, count: int = 1) -> None:
        """Let the next ``count`` requests go in the order they arrived (a request that has not
        arrived yet is then answered without waiting)."""
        if count < 1:
            raise InvalidArgumentError("count must be at least 1")
        with self._changed:
            self._released += count
            self._changed.notify_all()

    def release_all(self) -> None:
        """Let every request go, held now or arriving later."""
        with self._changed:
            self._open = True
            self._changed.notify_all()

    def wait_turn(self) -> None:
        """Called by the token endpoint for each request of the plan: wait to be released."""
        with self._changed:
            self._arrived += 1
            turn = self._arrived
            self._changed.notify_all()
            self._changed.wait_for(lambda: self._open or self._released >= turn)


@dataclass
class FaultPlan:
    """How the next ``remaining`` token requests are answered instead of normally: held first
    (``hold``), then delayed, then answered with the fault or normally."""

    remaining: int
    status: int | None = None
    retry_after: int | None = None
    delay: float = 0.0
    html: bool = False
    body: bytes | None = None
    hold: RequestHold | None = None


class TokenEndpoint:
    """Answers token requests for one emulator; thread-safe.

    ``policy``, ``token_lifetime`` and ``cae_token_lifetime`` (for clients that declared the
    CAE capability) are read at every request, so changing them applies to the next one.
    ``dpop`` checks the requests' DPoP proofs and holds the server's nonces;
    ``client_ca_anchors`` (SHA-256 of each client CA certificate) tell a TLS client certificate
    a client CA issued from a registered one trusted as itself (RFC 8705 section 2.1).
    """

    #: How many ``claims`` values :attr:`claims_received` keeps (the oldest go first).
    CLAIMS_KEPT = 1000

    def __init__(
        self,
        *,
        registry: Registry,
        clock: Clock,
        keys: KeyRing,
        policy: Policy,
        token_lifetime: int,
        cae_token_lifetime: int = CAE_TOKEN_LIFETIME,
        dpop: TokenEndpointDPoP | None = None,
    ) -> None:
        self.registry = registry
        self.clock = clock
        self.keys = keys
        self.policy = policy
        self.token_lifetime = token_lifetime
        self.cae_token_lifetime = cae_token_lifetime
        #: The ``jti`` values strict mode has seen.
        self.replay = ReplayCache()
        self.dpop = dpop if dpop is not None else TokenEndpointDPoP()
        self.client_ca_anchors: frozenset[bytes] = frozenset()
        self._lock = threading.Lock()
        self._request_count = 0
        self._last_thumbprint: str | None = None
        self._claims: list[str | None] = []
        self._faults: FaultPlan | None = None
        self._holds: weakref.WeakSet[RequestHold] = weakref.WeakSet()

    # -- faults and counters -----------------------------------------------------------------

    def plan_faults(self, plan: FaultPlan | None) -> None:
        """Answer the next ``plan.remaining`` requests by ``plan`` (``None``: normally again)."""
        with self._lock:
            self._faults = plan
            if plan is not None and plan.hold is not None:
                self._holds.add(plan.hold)

    def release_holds(self) -> None:
        """Let every request held by a plan's :class:`RequestHold` go (the emulator stops)."""
        with self._lock:
            holds = list(self._holds)
        for hold in holds:
            hold.release_all()

    @property
    def request_count(self) -> int:
        """Token requests received (every POST to a token endpoint, whatever the answer)."""
        with self._lock:
            return self._request_count

    def reset_request_count(self) -> int:
        """Set :attr:`request_count` back to 0 and empty :attr:`claims_received`; returns the
        count before."""
        with self._lock:
            count, self._request_count = self._request_count, 0
            self._claims.clear()
            return count

    @property
    def claims_received(self) -> list[str | None]:
        """The ``claims`` parameter of each token request read (``None``: it had none), oldest
        first; requests answered by an injected fault are not read."""
        with self._lock:
            return list(self._claims)

    def _record_claims(self, value: str | None) -> None:
        with self._lock:
            self._claims.append(value)
            del self._claims[: -self.CLAIMS_KEPT]

    @property
    def last_thumbprint(self) -> str | None:
        """``x5t#S256`` of the certificate behind the last accepted assertion."""
        with self._lock:
            return self._last_thumbprint

    def _take_fault(self) -> FaultPlan | None:
        with self._lock:
            self._request_count += 1
            plan = self._faults
            if plan is None:
                return None
            plan.remaining -= 1
            if plan.remaining <= 0:
                self._faults = None
            return plan

    # -- the route ----------------------------------------------------------------------------

    def handle(
        self, request: HttpRequest, endpoint: Endpoint, tenant: str, policy: str | None
    ) -> HttpResponse:
        """Answer a request to ``/{tenant}[/{policy}]/oauth2[/v2.0]/token``."""
        response = self._answer(request, endpoint, tenant, policy)
        nonce = self.dpop.nonces.current
        if nonce is not None:
            # RFC 9449 section 8: while nonces are required, every answer names the current one
            # (section 8.2 lets a server send a fresh nonce on a success too).
            response.headers["DPoP-Nonce"] = nonce
        return response

    def _answer(
        self, request: HttpRequest, endpoint: Endpoint, tenant: str, policy: str | None
    ) -> HttpResponse:
        if request.method != "POST":
            return self._error_response(
                EntraError(
                    900561,
                    f"The endpoint only accepts POST requests. Received a {request.method} "
                    "request.",
                ),
                request,
            )
        fault = self._take_fault()
        if fault is not None:
            if fault.hold is not None:
                fault.hold.wait_turn()
            if fault.delay:
                time.sleep(fault.delay)
            if fault.status is not None or fault.html or fault.body is not None:
                return _fault_response(fault)
        form = _parse_form(request)
        self._record_claims(form.get("claims"))
        # The URL as the client addressed it (the mutual-TLS listener's own port there): what
        # an assertion's aud and a DPoP proof's htu name.
        url = f"{request.addressed_base_url}{request.path}"
        peer = self._peer(request)
        token_request = TokenRequest(
            endpoint=endpoint,
            tenant=tenant,
            url=url,
            base_url=request.addressed_base_url,
            form=form,
            policy=policy,
            authorization=request.headers.get("authorization"),
            mtls=bool(request.mtls_base_url),
            peer=peer,
        )
        now = self.clock.time()
        try:
            # The proof first: a client sent round for a nonce (RFC 9449 section 8) must not
            # have spent its assertion's single-use jti (strict mode) on the first attempt.
            proof = self.dpop.check(request.header_values("dpop"), htu=url, now=now)
            grant = check_token_request(
                token_request, self.registry, now=now, policy=self.policy, replay=self.replay
            )
        except EntraError as error:
            log.warning(
                "token request refused: %s %s (client_id=%s tenant=%s endpoint=%s)",
                error.aadsts,
                _loggable(error.summary, 300),
                _loggable(form.get("client_id", "-")),
                _loggable(tenant),
                endpoint,
            )
            return self._error_response(error, request)
        if peer is not None:
            # RFC 8705 section 3.1: a token issued over mutual TLS names the client
            # certificate, however the client authenticated (section 3).
            grant = dataclasses.replace(grant, cnf=(*grant.cnf, ("x5t#S256", peer.x5t_s256)))
        if proof is not None:
            # RFC 9449 section 6.1: the token names the proof key's thumbprint.
            grant = dataclasses.replace(grant, cnf=(*grant.cnf, ("jkt", proof.jkt)))
        return self._issue(grant, request, now)

    def _peer(self, request: HttpRequest) -> PeerCertificate | None:
        """The client certificate of a request on the mutual-TLS listener."""
        if not request.mtls_base_url or request.peer_certificate is None:
            return None
        chain = request.peer_chain
        via_client_ca = (
            hashlib.sha256(chain[-1]).digest() in self.client_ca_anchors if chain else None
        )
        return PeerCertificate(request.peer_certificate, via_client_ca)

    def _issue(self, grant: Grant, request: HttpRequest, now: float) -> HttpResponse:
        base = request.base_url
        issuer = f"{base}/{grant.tenant_id}/v2.0" + ("/" if grant.endpoint == "b2c" else "")
        # CAE-capable clients get long-lived tokens (certauth.emulator.cae.CAE_TOKEN_LIFETIME).
        cae = grant.claims_request.cae
        lifetime = self.cae_token_lifetime if cae else self.token_lifetime
        claims = access_token_claims(grant, issuer=issuer, now=now, lifetime=lifetime)
        token = sign_access_token(claims, self.keys.current)
        if grant.thumbprint is not None:
            with self._lock:
                self._last_thumbprint = grant.thumbprint
        body = token_response(grant, token, now=now, lifetime=lifetime)
        log.info(
            "token issued: client_id=%s aud=%s auth=%s alg=%s roles=%s cae=%s cnf=%s",
            grant.client_id,
            grant.resource,
            grant.auth_method,
            grant.assertion_alg or "-",
            ",".join(grant.roles) or "-",
            "yes" if cae else "no",
            ",".join(name for name, _ in grant.cnf) or "-",
        )
        response = json_response(200, body)
        # RFC 6749 section 5.1: token responses must not be cached.
        response.headers.update({"Cache-Control": "no-store", "Pragma": "no-cache"})
        response.headers.update(trace_headers(request, str(uuid.uuid4())))
        return response

    def _error_response(self, error: EntraError, request: HttpRequest) -> HttpResponse:
        return error_response(error, request, self.clock.now())


def _loggable(text: str, limit: int = 64) -> str:
    # Request values end up in log lines: no line breaks or control characters (log forging).
    return "".join(c if c.isprintable() else "?" for c in text[:limit])


def _parse_form(request: HttpRequest) -> dict[str, str]:
    """The urlencoded body; anything else reads as an empty form (Entra then asks for
    ``grant_type``, AADSTS900144, which is what it answers to a JSON body)."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return {}
    try:
        text = request.body.decode("utf-8")
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, max_num_fields=100)
    except (UnicodeDecodeError, ValueError):
        return {}
    form: dict[str, str] = {}
    for name, value in pairs:
        form.setdefault(name, value)  # a repeated parameter: the first one counts
    return form


def _fault_response(fault: FaultPlan) -> HttpResponse:
    headers = {}
    if fault.retry_after is not None:
        headers["Retry-After"] = str(fault.retry_after)
    if fault.body is not None:
        return HttpResponse(fault.status or 200, fault.body, headers)
    if fault.html:
        status = fault.status or 200
        page = (
            "<!DOCTYPE html><html><head><title>Service unavailable</title></head><body>"
            f"<h1>{status}</h1><p>certauth emulator: injected HTML page.</p></body></html>"
        )
        return HttpResponse(status, page.encode(), headers, "text/html; charset=utf-8")
    status = fault.status or 503
    error = "temporarily_unavailable" if status in (429, 503) else "server_error"
    body = {
        "error": error,
        "error_description": f"certauth emulator: injected HTTP {status}",
    }
    response = json_response(status, body)
    response.headers.update(headers)
    return response
