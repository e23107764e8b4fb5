"""Test helpers for per-call tenants and CAE: a recorder of the token requests a credential
sends, and a small protected API on loopback that challenges revoked tokens as a CAE resource
such as Microsoft Graph does.

The emulator has its own CAE-aware API (``Emulator.resource_url``, used by
tests/test_cae_end_to_end.py); this test-local one stays for what that cannot do: refuse
every token (``refuse_all``) and answer with any ``WWW-Authenticate`` (``challenge``), for the
no-loop and malformed-challenge cases. Here "revoked" means "issued before the revocation
time", the issue time being the token's ``iat`` plus the five minutes the emulator backdates
it, so a token fetched just after ``revoke()`` passes here; the emulator's API compares ``iat``
itself, which is what shows whether a client keeps the token that satisfied a
challenge.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

import httpx

from certauth import verify_access_token
from certauth.emulator import Emulator
from certauth.emulator.tokens import ISSUED_AT_BACKDATE
from certauth.errors import TokenValidationError


class TokenRequests:
    """The token requests a credential sent (through its ``client=``): URL and form, and the
    headers (names lower-cased)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, str]]] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()

    def _record(self, request: httpx.Request) -> None:
        if request.method == "POST":
            form = dict(parse_qsl(request.content.decode("utf-8")))
            with self._lock:
                self.sent.append((str(request.url), form))
                self.headers.append({k.lower(): v for k, v in request.headers.items()})

    async def _arecord(self, request: httpx.Request) -> None:
        self._record(request)

    def client(self) -> httpx.Client:
        """An ``httpx.Client`` for ``CertificateCredential(client=...)``."""
        return httpx.Client(event_hooks={"request": [self._record]})

    def async_client(self) -> httpx.AsyncClient:
        """An ``httpx.AsyncClient`` for ``AsyncCertificateCredential(client=...)``."""
        return httpx.AsyncClient(event_hooks={"request": [self._arecord]})

    @property
    def urls(self) -> list[str]:
        return [url for url, _ in self.sent]

    @property
    def claims(self) -> list[dict[str, Any] | None]:
        """The ``claims`` parameter of each request, parsed (``None``: none sent)."""
        return [json.loads(form["claims"]) if "claims" in form else None for _, form in self.sent]


def encode_claims(claims: dict[str, Any], *, urlsafe: bool = False, padding: bool = True) -> str:
    """A claims challenge's ``claims`` value: base64 of the JSON."""
    raw = json.dumps(claims).encode()
    text = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(raw).decode()
    return text if padding else text.rstrip("=")


def nbf_claims(when: int) -> dict[str, Any]:
    """What a CAE resource asks for after a revocation: a token not before ``when``."""
    return {"access_token": {"nbf": {"essential": True, "value": str(when)}}}


def claims_challenge(claims: dict[str, Any], **encoding: bool) -> str:
    """A ``WWW-Authenticate`` value as Microsoft's claims-challenge page shows it."""
    return (
        'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/'
        f'authorize", error="insufficient_claims", claims="{encode_claims(claims, **encoding)}"'
    )


class ProtectedResource:
    """An http API on 127.0.0.1 that verifies the emulator's tokens for ``audience``.

    ``revoke()`` makes every token issued until now fail with a claims challenge;
    ``challenge`` (a callable returning a ``WWW-Authenticate`` value, or ``None``) replaces the
    challenge of every answer to a token that is not accepted; ``refuse_all`` refuses every
    token. ``authorizations`` holds each request's ``Authorization`` header.
    """

    def __init__(self, tenant: Emulator, audience: str) -> None:
        self.tenant = tenant
        self.audience = audience
        self.revoked_before: int | None = None
        self.refuse_all = False
        self.challenge: Callable[[], str | None] | None = None
        self.authorizations: list[str | None] = []
        resource = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, headers = resource._answer(self.headers.get("Authorization"))
                body = b'{"ok":true}' if status == 200 else b'{"error":"unauthorized"}'
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/things"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def revoke(self) -> int:
        """Refuse every token issued so far (the emulator's clock moves on 5 s, so the tokens
        it issues from now on are later); returns the revocation time."""
        self.tenant.clock.advance(5)
        self.revoked_before = int(self.tenant.clock.time())
        return self.revoked_before

    def _answer(self, authorization: str | None) -> tuple[int, dict[str, str]]:
        self.authorizations.append(authorization)
        scheme, _, token = (authorization or "").partition(" ")
        try:
            if scheme != "Bearer":
                raise TokenValidationError("no bearer token", check="format")
            claims = verify_access_token(
                token, jwks=self.tenant.jwks(), issuer=self.tenant.issuer, audience=self.audience
            )
        except TokenValidationError:
            return 401, {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        issued = claims["iat"] + ISSUED_AT_BACKDATE
        revoked = self.revoked_before is not None and issued < self.revoked_before
        if not (revoked or self.refuse_all):
            return 200, {}
        if self.challenge is not None:
            header = self.challenge()
            return 401, {"WWW-Authenticate": header} if header is not None else {}
        when = self.revoked_before or int(self.tenant.clock.time())
        return 401, {"WWW-Authenticate": claims_challenge(nbf_claims(when))}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
