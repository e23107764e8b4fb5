"""The emulator's HTTP answers: JSON bodies, Entra ID error responses and the trace headers.

Every route answers through these, so an error looks the same whichever endpoint sends it: the
JSON body of :meth:`~certauth.emulator.checks.EntraError.body`, ``Cache-Control: no-store``,
and Entra's ``x-ms-request-id`` / ``client-request-id`` headers.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Mapping
from typing import Any

from certauth.emulator.checks import EntraError
from certauth.emulator.server import HttpRequest, HttpResponse

__all__ = ["correlation_id", "error_response", "json_response", "trace_headers"]


def json_response(status: int, body: Mapping[str, Any]) -> HttpResponse:
    """``body`` as compact JSON with ``status``."""
    return HttpResponse(status, json.dumps(body, separators=(",", ":")).encode("utf-8"))


def error_response(error: EntraError, request: HttpRequest, now: dt.datetime) -> HttpResponse:
    """The response Entra ID sends for ``error``: its JSON body, not cacheable, with trace ids
    (and ``WWW-Authenticate`` for a 401 to HTTP Basic client authentication)."""
    trace_id = str(uuid.uuid4())
    body = error.body(
        trace_id=trace_id,
        correlation_id=correlation_id(request),
        now=now,
        base_url=request.base_url,
    )
    response = json_response(error.status, body)
    response.headers.update({"Cache-Control": "no-store", "Pragma": "no-cache"})
    response.headers.update(trace_headers(request, trace_id))
    if error.status == 401 and error.basic_auth:
        response.headers["WWW-Authenticate"] = 'Basic realm="certauth-emulator"'
    return response


def correlation_id(request: HttpRequest) -> str:
    """The request's ``client-request-id`` when it is a GUID (Entra echoes it as the
    correlation id), else a fresh one."""
    value = request.headers.get("client-request-id", "")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return str(uuid.uuid4())


def trace_headers(request: HttpRequest, trace_id: str) -> dict[str, str]:
    """The headers Entra ID puts on every token endpoint answer."""
    headers = {"x-ms-request-id": trace_id, "x-ms-ests-server": "certauth-emulator"}
    if "client-request-id" in request.headers:
        headers["client-request-id"] = correlation_id(request)
    return headers
