"""The emulator's Microsoft Graph surface: an application's key credentials, addKey, removeKey.

Served under ``/graph`` on the emulator's own server, so ``{base}/graph/v1.0/...`` is called
exactly as ``https://graph.microsoft.com/v1.0/...``:

- ``GET /v1.0/applications/{id}`` and ``GET /v1.0/applications(appId='{appId}')``: the
  application with its ``keyCredentials`` (needs Application.Read.All or kin, see
  :mod:`certauth.emulator.graph_checks`);
- ``POST .../addKey`` and ``POST .../removeKey`` on either address: an application rolls its
  own keys with a proof of possession and no Graph permission.

The rules are in :mod:`certauth.emulator.graph_checks`; this module routes, answers in Graph's
shapes ("Microsoft Graph error responses and resource types",
https://learn.microsoft.com/graph/errors: ``{"error": {"code", "message", "innerError":
{"date", "request-id", "client-request-id"}}}`` and the ``request-id`` /
``client-request-id`` headers) and applies the propagation delay: a key added or removed
here reaches the token endpoint ``propagation_delay`` seconds later, while Graph's own reads
and proof checks see the change at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from certauth.emulator.clock import Clock
from certauth.emulator.graph_checks import (
    Caller,
    GraphError,
    bad_request,
    check_bearer,
    check_proof,
    denied,
    key_credential_json,
    may_read,
    may_read_some,
    may_roll_keys,
    not_found,
    parse_key_id,
    parse_new_key,
)
from certauth.emulator.registry import App, RegisteredCertificate, Registry
from certauth.emulator.server import HttpRequest, HttpResponse
from certauth.emulator.tokens import KeyRing

__all__ = ["GraphAPI"]

log = logging.getLogger("certauth.emulator")

#: Graph's JSON media type (OData minimal metadata).
CONTENT_TYPE = (
    "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;"
    "charset=utf-8"
)
_BY_APP_ID = re.compile(r"^applications\(appid='(?P<app_id>[^']*)'\)$", re.IGNORECASE)
_ACTIONS = {"addkey": "addKey", "microsoft.graph.addkey": "addKey",
            "removekey": "removeKey", "microsoft.graph.removekey": "removeKey"}  # fmt: skip


class GraphAPI:
    """Answers ``/graph/...`` requests for one emulator; thread-safe.

    ``skew`` returns the clock skew the emulator allows (its policy's, read per request);
    ``propagation_delay`` and ``max_key_credentials`` may be changed while it runs.
    """

    def __init__(
        self,
        *,
        registry: Registry,
        keys: KeyRing,
        clock: Clock,
        skew: Callable[[], int],
        propagation_delay: float,
        max_key_credentials: int,
    ) -> None:
        self.registry = registry
        self.keys = keys
        self.clock = clock
        self._skew = skew
        self.propagation_delay = propagation_delay
        self.max_key_credentials = max_key_credentials
        # addKey's duplicate and count checks and the add itself are one step.
        self._lock = threading.Lock()

    # -- routing ------------------------------------------------------------------------------

    def handle(self, request: HttpRequest, segments: list[str]) -> HttpResponse:
        """Answer a request whose path was ``/graph/{segments...}`` (already unquoted)."""
        request_id = str(uuid.uuid4())
        try:
            return self._route(request, segments, request_id)
        except GraphError as error:
            log.warning(
                "graph request refused: %s %s %s (%s %s)",
                error.status,
                error.code,
                _loggable(error.message, 200),
                request.method,
                _loggable(request.path, 120),
            )
            return self._error(error, request, request_id)

    def _route(self, request: HttpRequest, segments: list[str], request_id: str) -> HttpResponse:
        if len(segments) < 2 or segments[0].lower() not in ("v1.0", "beta"):
            raise GraphError(400, "BadRequest", "Invalid version: use /v1.0/ (or /beta/).")
        version, rest = segments[0].lower(), segments[1:]
        address, action = _address(rest)
        if address is None:
            raise GraphError(
                400, "BadRequest",
                f"Resource not found for the segment '{_loggable(rest[0], 80)}'. (The emulator "
                "serves applications/{id}, applications(appId='{appId}'), addKey and "
                "removeKey.)",
            )  # fmt: skip
        if (request.method == "GET") != (action is None):
            # AAD Graph's text for a method the target does not take.
            raise GraphError(405, "Request_BadRequest", "Specified HTTP method is not allowed "
                             "for the request target.")  # fmt: skip
        now = self.clock.time()
        caller = check_bearer(
            request.headers.get("authorization"),
            self.registry,
            [(key.kid, key.private_key.public_key()) for key in self.keys.keys],
            now=now,
            skew=self._skew(),
        )
        by_app_id, name = address
        app = _find(caller, name, by_app_id=by_app_id)
        if action is None:
            if not may_read_some(caller):
                raise denied()
            if app is None:
                raise not_found(name)
            if not may_read(caller, app):
                raise denied()
            return self._json(200, self._application(request, app, version), request, request_id)
        if app is None:
            raise not_found(name)
        if not may_roll_keys(caller, app):
            raise denied()
        body = _json_body(request)
        if action == "addKey":
            added = self._add_key(app, body, now)
            result = {
                "@odata.context": f"{_graph_base(request, version)}/$metadata#microsoft.graph."
                "keyCredential",
                **key_credential_json(added),
            }
            return self._json(200, result, request, request_id)
        self._remove_key(app, body, now)
        return self._response(HttpResponse(204), request, request_id)

    # -- actions ------------------------------------------------------------------------------

    def _application(self, request: HttpRequest, app: App, version: str) -> dict[str, Any]:
        selected = _select(request.query.get("$select"))
        body: dict[str, Any] = {
            "@odata.context": f"{_graph_base(request, version)}/$metadata#applications/$entity",
            "id": app.object_id,
            "appId": app.client_id,
            "displayName": app.display_name,
            # "key ... Returned only on $select for a single object" (keyCredential resource).
            "keyCredentials": [
                key_credential_json(c, with_key=selected is not None) for c in app.certificates
            ],
        }
        if selected is None:
            return body
        return {k: v for k, v in body.items() if k.startswith("@") or k.lower() in selected}

    def _add_key(self, app: App, body: Mapping[str, Any], now: float) -> RegisteredCertificate:
        new = parse_new_key(body, now=now)
        with self._lock:
            signer = check_proof(body.get("proof"), app, now=now, skew=self._skew())
            if app.find_certificate(sha1=_sha1(new.certificate.der)) is not None:
                # Graph does not document this answer; a second copy of a registered
                # certificate is refused as a bad request.
                raise bad_request(
                    f"The certificate {new.certificate.thumbprint_sha1} is already a key "
                    "credential of this application."
                )
            if len(app.certificates) >= self.max_key_credentials:
                # Entra documents no cap on key credentials alone (see graph_checks); the
                # emulator's is configurable and answered as a bad request.
                raise bad_request(
                    f"The application has {len(app.certificates)} key credentials, the most "
                    f"this tenant allows ({self.max_key_credentials}); remove one first."
                )
            added = RegisteredCertificate.from_certificate(
                new.certificate,
                key_id=str(uuid.uuid4()),
                display_name=new.display_name,
                custom_key_identifier=new.custom_key_identifier,
            )
            delay = self.propagation_delay
            self.registry.add_key(app, added, accepted_from=now + delay, now=now)
        log.info(
            "graph addKey: app %s (%s) key %s thumbprint %s, proof signed by %s; the token "
            "endpoint accepts it in %.1f s",
            app.client_id, app.object_id, added.key_id, added.thumbprint_sha1,
            signer.thumbprint_sha1, delay,
        )  # fmt: skip
        return added

    def _remove_key(self, app: App, body: Mapping[str, Any], now: float) -> None:
        key_id = parse_key_id(body)
        with self._lock:
            signer = check_proof(body.get("proof"), app, now=now, skew=self._skew())
            delay = self.propagation_delay
            removed = self.registry.remove_key(app, key_id, accepted_until=now + delay, now=now)
        if removed is None:
            # Graph does not document this answer; the emulator answers as for any directory
            # object that is not there.
            raise GraphError(
                404,
                "Request_ResourceNotFound",
                f"No key credential with keyId '{key_id}' was found on application "
                f"'{app.object_id}'.",
            )
        log.info(
            "graph removeKey: app %s (%s) key %s thumbprint %s, proof signed by %s; the token "
            "endpoint refuses it in %.1f s",
            app.client_id, app.object_id, removed.key_id, removed.thumbprint_sha1,
            signer.thumbprint_sha1, delay,
        )  # fmt: skip

    # -- answers ------------------------------------------------------------------------------

    def _json(
        self, status: int, body: Mapping[str, Any], request: HttpRequest, request_id: str
    ) -> HttpResponse:
        data = json.dumps(body, separators=(",", ":")).encode("utf-8")
        return self._response(HttpResponse(status, data, content_type=CONTENT_TYPE), request,
                              request_id)  # fmt: skip

    def _response(
        self, response: HttpResponse, request: HttpRequest, request_id: str
    ) -> HttpResponse:
        response.headers.update(
            {
                "Cache-Control": "no-cache",
                "request-id": request_id,
                "client-request-id": _client_request_id(request, request_id),
            }
        )
        return response

    def _error(self, error: GraphError, request: HttpRequest, request_id: str) -> HttpResponse:
        stamp = self.clock.now().strftime("%Y-%m-%dT%H:%M:%S")
        body = {
            "error": {
                "code": error.code,
                "message": error.message,
                "innerError": {
                    "date": stamp,
                    "request-id": request_id,
                    "client-request-id": _client_request_id(request, request_id),
                },
            }
        }
        response = self._json(error.status, body, request, request_id)
        if error.bearer:
            # What Graph sends with a refused access token: where to get a better one.
            response.headers["WWW-Authenticate"] = (
                f'Bearer realm="", authorization_uri="{request.base_url}/common/oauth2/'
                'authorize", client_id="00000003-0000-0000-c000-000000000000"'
            )
        return response


def _address(rest: list[str]) -> tuple[tuple[bool, str] | None, str | None]:
    """``((by_app_id, name), action)`` for ``applications/{id}[/action]`` or
    ``applications(appId='x')[/action]``; ``(None, None)`` for anything else."""
    first = rest[0]
    match = _BY_APP_ID.match(first)
    if match is not None and len(rest) <= 2:
        tail = rest[1:]
        address: tuple[bool, str] = (True, match["app_id"])
    elif first.lower() == "applications" and len(rest) in (2, 3) and rest[1]:
        tail = rest[2:]
        address = (False, rest[1])
    else:
        return None, None
    if not tail:
        return address, None
    action = _ACTIONS.get(tail[0].lower())
    return (address, action) if action is not None else (None, None)


def _find(caller: Caller, name: str, *, by_app_id: bool) -> App | None:
    """The application in the caller's tenant, by appId or by object id."""
    if by_app_id:
        return caller.tenant.app(name)
    wanted = name.lower()
    return next((a for a in caller.tenant.apps.values() if a.object_id.lower() == wanted), None)


def _json_body(request: HttpRequest) -> Mapping[str, Any]:
    try:
        body = json.loads(request.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        body = None
    if not isinstance(body, dict):
        raise GraphError(
            400,
            "BadRequest",
            "Unable to read JSON request payload. Please ensure Content-Type header is set and "
            "payload is of valid JSON format.",
        )
    return body


def _select(value: str | None) -> set[str] | None:
    if value is None:
        return None
    return {name.strip().lower() for name in value.split(",") if name.strip()}


def _graph_base(request: HttpRequest, version: str) -> str:
    return f"{request.base_url}/graph/{version}"


def _client_request_id(request: HttpRequest, request_id: str) -> str:
    # Graph echoes the client's id; one that is not a GUID is not echoed (a header value
    # must not carry what a client sent unchecked), and without one it repeats request-id.
    try:
        return str(uuid.UUID(request.headers.get("client-request-id", "")))
    except ValueError:
        return request_id


def _sha1(der: bytes) -> bytes:
    return hashlib.sha1(der, usedforsecurity=False).digest()


def _loggable(text: str, limit: int = 64) -> str:
    return "".join(c if c.isprintable() else "?" for c in text[:limit])
