"""Token request building, response parsing, Entra error mapping and the retry policy."""

from __future__ import annotations

import base64
import json
import random
from urllib.parse import parse_qs

import pytest

from certauth.errors import InvalidArgumentError, TokenRequestError, TransportError
from certauth.protocol import (
    CLIENT_ASSERTION_TYPE,
    RetryPolicy,
    build_token_request,
    normalize_scopes,
    parse_retry_after,
    parse_token_response,
)

URL = "https://login.microsoftonline.com/t/oauth2/v2.0/token"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (["https://graph.microsoft.com"], ("https://graph.microsoft.com/.default",)),
        (["https://graph.microsoft.com/"], ("https://graph.microsoft.com/.default",)),
        (["api://billing"], ("api://billing/.default",)),
        (["api://billing/.default"], ("api://billing/.default",)),
        (
            ["00000003-0000-0000-c000-000000000000"],
            ("00000003-0000-0000-c000-000000000000/.default",),
        ),
        (["api://billing/.default api://billing/.default"], ("api://billing/.default",)),
    ],
)
def test_entra_scopes_get_default_appended(given: list[str], expected: tuple[str, ...]) -> None:
    assert normalize_scopes(given, entra=True) == expected


@pytest.mark.parametrize(
    ("scope", "message"),
    [
        ("https://graph.microsoft.com/User.Read", "'https://graph.microsoft.com/.default'"),
        ("User.Read", "AADSTS1002012"),
        ("openid", "signed-in user"),
        ("offline_access", "signed-in user"),
    ],
)
def test_entra_scopes_that_cannot_work_app_only_are_refused(scope: str, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        normalize_scopes([scope], entra=True)


def test_entra_refuses_two_resources_and_generic_servers_take_anything() -> None:
    with pytest.raises(InvalidArgumentError, match="AADSTS700022"):
        normalize_scopes(["api://a/.default", "api://b/.default"], entra=True)
    assert normalize_scopes(["read write", "read"], entra=False) == ("read", "write")
    with pytest.raises(InvalidArgumentError, match="no scope"):
        normalize_scopes([], entra=False)


def test_assertion_request_fields() -> None:
    request = build_token_request(URL, "cid", ("api://x/.default",), assertion="a.b.c")
    form = parse_qs(request.body.decode())
    assert form == {
        "grant_type": ["client_credentials"],
        "scope": ["api://x/.default"],
        "client_id": ["cid"],
        "client_assertion_type": [CLIENT_ASSERTION_TYPE],
        "client_assertion": ["a.b.c"],
    }
    assert request.headers["Accept"] == "application/json"
    assert "a.b.c" not in repr(request)


def test_secret_post_basic_and_v1_resource() -> None:
    post = build_token_request(URL, "cid", ("api://x/.default",), client_secret="s&=p")
    assert parse_qs(post.body.decode())["client_secret"] == ["s&=p"]
    basic = build_token_request(
        URL, "c:id", ("api://x/.default",), client_secret="s p", secret_method="client_secret_basic"
    )
    raw = base64.b64decode(basic.headers["Authorization"].split()[1]).decode()
    assert raw == "c%3Aid:s%20p"
    assert "client_secret" not in basic.form
    v1 = build_token_request(URL, "cid", ("api://x/.default",), assertion="a", v1_resource=True)
    assert v1.form["resource"] == "api://x"
    assert "scope" not in v1.form
    with pytest.raises(InvalidArgumentError, match="exactly one client credential"):
        build_token_request(URL, "cid", ("s",))


def _body(doc: object) -> bytes:
    return json.dumps(doc).encode()


def test_token_response_numbers_as_strings_and_extras() -> None:
    token = parse_token_response(
        200,
        _body(
            {
                "access_token": "tok",
                "token_type": "Bearer",
                "expires_in": "3599",
                "ext_expires_in": "3599",
                "refresh_in": 1800,
            }
        ),
        url=URL,
        now=1000.0,
    )
    assert token.expires_on == 4599
    assert token.expires_in == 3599
    assert token.refresh_on == 2800
    assert token.as_response()["ext_expires_in"] == "3599"
    assert "SECRET-TOKEN-VALUE" not in repr(token)


@pytest.mark.parametrize(
    ("status", "body", "match"),
    [
        (200, b"<html>oops</html>", "not JSON: '<html>oops</html>'"),
        (200, b"", "empty body"),
        (200, _body({"token_type": "Bearer"}), "no access_token"),
        (200, _body([1, 2]), "not an object"),
        (200, _body({"access_token": "x"}), "no usable expires_in"),
        (404, b"<html>Not Found</html>", "HTTP 404"),
        (400, _body({"message": "nope"}), "without an OAuth error body"),
    ],
)
def test_unusable_answers_are_transport_errors(status: int, body: bytes, match: str) -> None:
    with pytest.raises(TransportError, match=match):
        parse_token_response(status, body, url=URL, now=0)


def test_oversized_response_is_refused() -> None:
    with pytest.raises(TransportError, match="larger than"):
        parse_token_response(200, b" " * (1024 * 1024 + 1), url=URL, now=0)


ENTRA_ERROR = {
    "error": "invalid_client",
    "error_description": (
        "AADSTS700027: The certificate with identifier used to sign the client assertion is not "
        "registered on application.\r\nTrace ID: 0b4f\r\nCorrelation ID: 9c1e\r\nTimestamp: 2026"
    ),
    "error_codes": [700027],
    "timestamp": "2026-11-21 10:00:00Z",
    "trace_id": "0b4f",
    "correlation_id": "9c1e",
    "error_uri": "https://login.microsoftonline.com/error?code=700027",
}


def test_entra_error_becomes_typed_exception_with_everything() -> None:
    with pytest.raises(TokenRequestError) as caught:
        parse_token_response(401, _body(ENTRA_ERROR), url=URL, now=0)
    err = caught.value
    assert err.exit_code == 4
    assert err.error == "invalid_client"
    assert err.error_codes == (700027,)
    assert err.aadsts == "AADSTS700027"
    assert err.trace_id == "0b4f"
    assert err.correlation_id == "9c1e"
    assert err.status_code == 401
    assert err.hint
    assert "thumbprint" in err.hint
    assert "\n" not in str(err)
    assert err.to_dict()["aadsts"] == "AADSTS700027"


def test_plain_rfc6749_error_and_code_from_description() -> None:
    with pytest.raises(TokenRequestError) as caught:
        parse_token_response(400, _body({"error": "invalid_scope"}), url=URL, now=0)
    assert caught.value.aadsts is None
    assert caught.value.hint
    assert "RESOURCE/.default" in caught.value.hint
    with pytest.raises(TokenRequestError) as caught:
        parse_token_response(
            400,
            _body({"error": "invalid_request", "error_description": "AADSTS700024: late"}),
            url=URL,
            now=0,
        )
    assert caught.value.error_codes == (700024,)
    assert caught.value.hint
    assert "clock" in caught.value.hint


def test_retry_policy() -> None:
    policy = RetryPolicy(max_attempts=3, base_delay=1.0, max_delay=8.0, max_retry_after=10)
    rng = random.Random(1)
    assert policy.delay(1, status=400) is None
    assert policy.delay(1, status=401) is None
    first = policy.delay(1, status=503, rng=rng)
    assert first is not None
    assert 0 <= first <= 1.0
    assert policy.delay(3, status=503) is None
    assert policy.delay(1, status=429, retry_after="2") == 2.0
    assert policy.delay(1, status=429, retry_after="120") is None
    assert policy.delay(1, status=None, rng=rng) is not None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("soon", now=0) is None
