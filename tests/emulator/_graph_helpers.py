"""Helpers for the Graph tests: proofs of possession, Graph calls, Graph's error shape.

Proofs are built with PyJWT (RS256, ``x5t`` header, the claims of "Generate proof of possession
tokens for rolling keys", https://learn.microsoft.com/graph/application-rollkey-prooftoken), so
a test can make any part of them wrong on purpose. Not a test module (leading underscore).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

import httpx
import jwt
from _emulator_helpers import DROP, assertion_form, make_assertion

from certauth.certificates import Certificate
from certauth.emulator import Emulator

APP = "11111111-2222-3333-4444-555555555555"
OTHER = "22222222-3333-4444-5555-666666666666"
GRAPH = "https://graph.microsoft.com"
PROOF_AUD = "00000002-0000-0000-c000-000000000000"
MALFORMED = "Access Token missing or malformed."
DENIED = "Insufficient privileges to complete the operation."


def graph_token(
    tenant: Emulator, cert: Certificate, client_id: str = APP, scope: str = f"{GRAPH}/.default"
) -> str:
    """An access token for Graph from the emulator's token endpoint."""
    assertion = make_assertion(cert, tenant.token_endpoint, client_id=client_id)
    form = assertion_form(assertion, client_id=client_id, scope=scope)
    response = httpx.post(tenant.token_endpoint, data=form, timeout=10)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def token_status(tenant: Emulator, cert: Certificate, client_id: str = APP) -> httpx.Response:
    """A token request signed with ``cert`` (for api://things)."""
    assertion = make_assertion(cert, tenant.token_endpoint, client_id=client_id)
    return httpx.post(
        tenant.token_endpoint, data=assertion_form(assertion, client_id=client_id), timeout=10
    )


def make_proof(
    cert: Certificate,
    object_id: str,
    *,
    now: float | None = None,
    lifetime: int = 600,
    header: Mapping[str, Any] | None = None,
    claims: Mapping[str, Any] | None = None,
    key: Any = None,
    alg: str = "RS256",
) -> str:
    """A proof of possession as the proof-token page builds it; overrides as in
    ``make_assertion`` (DROP removes a field)."""
    start = int(time.time() if now is None else now)
    body: dict[str, Any] = {"aud": PROOF_AUD, "iss": object_id, "nbf": start,
                            "exp": start + lifetime}  # fmt: skip
    head: dict[str, Any] = {"x5t": cert.x5t}
    for target, overrides in ((body, claims), (head, header)):
        for name, value in (overrides or {}).items():
            if value is DROP:
                target.pop(name, None)
            else:
                target[name] = value
    return jwt.encode(body, key or cert.private_key, algorithm=alg, headers=head)


def key_body(cert: Certificate, proof: str | None, **credential: Any) -> dict[str, Any]:
    """An addKey body for ``cert``."""
    entry = {"type": "AsymmetricX509Cert", "usage": "Verify",
             "key": base64.b64encode(cert.der).decode("ascii"), **credential}  # fmt: skip
    return {"keyCredential": entry, "passwordCredential": None, "proof": proof}


class Graph:
    """Calls to the emulator's Graph as one app."""

    def __init__(self, tenant: Emulator, token: str | None, verify: Any = True) -> None:
        self.tenant = tenant
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(timeout=10, verify=verify)

    def get(self, address: str, **params: str) -> httpx.Response:
        return self.client.get(
            f"{self.tenant.graph_url}/v1.0/{address}", headers=self.headers, params=params
        )

    def post(self, address: str, body: Any, **headers: str) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.client.post(
            f"{self.tenant.graph_url}/v1.0/{address}",
            content=content,
            headers={**self.headers, "Content-Type": "application/json", **headers},
        )

    def add_key(self, object_id: str, body: Any) -> httpx.Response:
        return self.post(f"applications/{object_id}/addKey", body)

    def remove_key(self, object_id: str, key_id: str, proof: str | None) -> httpx.Response:
        return self.post(f"applications/{object_id}/removeKey", {"keyId": key_id, "proof": proof})


_DATE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$")


def assert_graph_error(response: httpx.Response, status: int, code: str, message: str) -> None:
    """Graph's error shape (https://learn.microsoft.com/graph/errors), status, code, message."""
    body = response.json()
    assert response.status_code == status, body
    assert set(body) == {"error"}
    error = body["error"]
    assert (error["code"], error["message"]) == (code, message)
    inner = error["innerError"]
    assert _DATE.match(inner["date"]), inner
    assert inner["request-id"] == response.headers["request-id"]
    assert inner["client-request-id"] == response.headers["client-request-id"]
    uuid.UUID(inner["request-id"])


def iso(when: dt.datetime) -> str:
    """``when`` as Graph writes a DateTimeOffset (ISO 8601, UTC, ``Z``)."""
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
