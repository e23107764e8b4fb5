"""Helpers for the emulator tests: hand-built (and deliberately wrong) requests.

Assertions are built here with PyJWT, not with certauth's own builder, so a test can make any
part of them wrong on purpose. Not a test module (leading underscore); the tests import it by
name (pytest puts this folder on ``sys.path``).
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

import httpx
import jwt

from certauth.certificates import Certificate
from certauth.protocol import CLIENT_ASSERTION_TYPE, GRANT_CLIENT_CREDENTIALS

CLIENT_ID = "11111111-2222-3333-4444-555555555555"
SCOPE = "api://things/.default"
#: Marks a header field or claim to leave out.
DROP: Any = object()


def b64url(data: bytes) -> str:
    """base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def make_assertion(
    cert: Certificate,
    audience: str,
    *,
    client_id: str = CLIENT_ID,
    alg: str = "PS256",
    header: Mapping[str, Any] | None = None,
    claims: Mapping[str, Any] | None = None,
    now: float | None = None,
    lifetime: int = 300,
    key: Any = None,
) -> str:
    """A client assertion for ``cert``; ``header``/``claims`` override fields (DROP removes).

    The thumbprint header follows MSAL's pairing: ``x5t#S256`` for PS*, ``x5t`` for RS*.
    """
    issued = int(time.time() if now is None else now)
    body: dict[str, Any] = {
        "aud": audience,
        "iss": client_id,
        "sub": client_id,
        "iat": issued,
        "nbf": issued,
        "exp": issued + lifetime,
        "jti": str(uuid.uuid4()),
    }
    head: dict[str, Any] = (
        {"x5t#S256": cert.x5t_s256} if alg.startswith("PS") else {"x5t": cert.x5t}
    )
    for target, overrides in ((body, claims), (head, header)):
        for name, value in (overrides or {}).items():
            if value is DROP:
                target.pop(name, None)
            else:
                target[name] = value
    return jwt.encode(body, key or cert.private_key, algorithm=alg, headers=head)


def raw_jwt(header: Mapping[str, Any], claims: Mapping[str, Any], signature: bytes = b"sig") -> str:
    """A JWT with any header (``alg: none``, ``HS256``...) and a made-up signature."""
    parts = [b64url(json.dumps(dict(p)).encode()) for p in (header, claims)]
    return ".".join([*parts, b64url(signature)])


def assertion_form(assertion: str | None, **overrides: Any) -> dict[str, str]:
    """A client-credentials form; ``name=None`` removes a field."""
    form: dict[str, Any] = {
        "grant_type": GRANT_CLIENT_CREDENTIALS,
        "client_id": CLIENT_ID,
        "scope": SCOPE,
        "client_assertion_type": CLIENT_ASSERTION_TYPE,
        "client_assertion": assertion,
    }
    form.update(overrides)
    return {k: v for k, v in form.items() if v is not None}


def secret_form(secret: str | None, **overrides: Any) -> dict[str, str]:
    """A client-credentials form with ``client_secret``."""
    form: dict[str, Any] = {
        "grant_type": GRANT_CLIENT_CREDENTIALS,
        "client_id": CLIENT_ID,
        "scope": SCOPE,
        "client_secret": secret,
    }
    form.update(overrides)
    return {k: v for k, v in form.items() if v is not None}


_DESCRIPTION = re.compile(
    r"^AADSTS(?P<code>\d+): (?P<text>.+)\r\nTrace ID: (?P<trace>[0-9a-f-]{36})\r\n"
    r"Correlation ID: (?P<corr>[0-9a-f-]{36})\r\nTimestamp: "
    r"(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ)$",
    re.DOTALL,
)


def assert_entra_error(
    response: httpx.Response, code: int, *, status: int | None = None, error: str | None = None
) -> dict[str, Any]:
    """Check Entra's error shape (Microsoft's error-code reference) and code; return the body."""
    body = response.json()
    expected_status = status or (401 if body.get("error") == "invalid_client" else 400)
    assert response.status_code == expected_status, body
    assert body["error_codes"] == [code], body
    if error is not None:
        assert body["error"] == error, body
    match = _DESCRIPTION.match(body["error_description"])
    assert match, body["error_description"]
    assert int(match["code"]) == code
    assert match["trace"] == body["trace_id"]
    assert match["corr"] == body["correlation_id"]
    assert match["ts"] == body["timestamp"]
    assert body["error_uri"].endswith(f"/error?code={code}")
    if response.status_code == 401:
        assert body["error"] == "invalid_client"
    return body


def claims_of(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified."""
    return jwt.decode(token, options={"verify_signature": False})


def header_of(token: str) -> dict[str, Any]:
    """The JOSE header of a JWT."""
    return jwt.get_unverified_header(token)
