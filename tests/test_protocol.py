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
    Token,
    build_token_request,
    hint_for,
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
        (200, _body({"access_token": "", "expires_in": 3600}), "no access_token"),
        (200, _body([1, 2]), "not an object"),
        (200, _body({"access_token": "x"}), "no usable expires_in"),
        (404, b"<html>Not Found</html>", "HTTP 404"),
        (400, _body({"message": "nope"}), "without an OAuth error body"),
    ],
)
def test_unusable_answers_are_transport_errors(status: int, body: bytes, match: str) -> None:
    with pytest.raises(TransportError, match=match):
        parse_token_response(status, body, url=URL, now=0)


@pytest.mark.parametrize(
    ("content_type", "named"),
    [("text/html; charset=utf-8", "a text/html; charset=utf-8 body"), ("", "a untyped body")],
)
def test_a_body_that_is_not_json_names_its_content_type(content_type: str, named: str) -> None:
    # A proxy's login page or an HTML error: the message says what came instead of JSON.
    with pytest.raises(TransportError) as caught:
        parse_token_response(
            502, b"<html>Bad gateway</html>", url=URL, now=0, content_type=content_type
        )
    assert str(caught.value) == (
        f"{URL}: HTTP 502 with {named} that is not JSON: '<html>Bad gateway</html>'; "
        "check the endpoint URL"
    )
    assert caught.value.status_code == 502


def test_expiry_from_expires_in_expires_on_or_both() -> None:
    def token(**fields: object) -> Token:
        return parse_token_response(200, _body({"access_token": "t", **fields}), url=URL, now=1000)

    assert (token(expires_in=3600).expires_on, token(expires_in=3600).expires_in) == (4600, 3600)
    # expires_on alone (ADFS, Entra v1): expires_in is derived from it.
    assert (token(expires_on=4000).expires_on, token(expires_on=4000).expires_in) == (4000, 3000)
    # Both: the server's expires_on is kept ...
    both = token(expires_in=3600, expires_on="5000")
    assert (both.expires_on, both.expires_in) == (5000, 3600)
    # ... unless it is already past (a server with a wrong clock): now + expires_in.
    stale = token(expires_in=3600, expires_on=500)
    assert (stale.expires_on, stale.expires_in) == (4600, 3600)
    # A dead-on-arrival token is refused, not handed out expired (hardening issue).
    with pytest.raises(TransportError, match="expires_in 0"):
        token(expires_on=500, expires_in="0")


def test_token_type_is_kept_as_sent() -> None:
    def token_type(value: object) -> str:
        body = _body({"access_token": "t", "expires_in": 60, "token_type": value})
        return parse_token_response(200, body, url=URL, now=0).token_type

    assert token_type("pop") == "pop"
    assert token_type("Bearer") == "Bearer"
    assert token_type(None) == "Bearer"  # not a string: the default
    assert token_type(["x"]) == "Bearer"


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
    assert err.timestamp == "2026-11-21 10:00:00Z"
    assert err.error_description == ENTRA_ERROR["error_description"]
    assert err.response == ENTRA_ERROR
    assert err.hint
    assert "thumbprint" in err.hint
    assert "\n" not in str(err)
    assert str(err) == (
        f"{URL}: the server refused the token request: invalid_client (AADSTS700027: The "
        "certificate with identifier used to sign the client assertion is not registered on "
        f"application.); hint: {err.hint}"
    )
    assert err.to_dict() == {
        "error": "invalid_client",
        "error_description": ENTRA_ERROR["error_description"],
        "error_codes": [700027],
        "aadsts": "AADSTS700027",
        "trace_id": "0b4f",
        "correlation_id": "9c1e",
        "timestamp": "2026-11-21 10:00:00Z",
        "status_code": 401,
        "hint": err.hint,
    }


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


def _refusal(document: dict[str, object], status: int = 400) -> TokenRequestError:
    with pytest.raises(TokenRequestError) as caught:
        parse_token_response(status, _body(document), url=URL, now=0)
    return caught.value


def test_a_2xx_with_an_oauth_error_body_is_a_refusal() -> None:
    # Some servers answer 200 with an error body; it is still the server saying no (exit 4).
    err = _refusal({"error": "invalid_client", "error_codes": [700016]}, status=200)
    assert err.status_code == 200
    assert err.aadsts == "AADSTS700016"
    assert err.exit_code == 4


def test_error_codes_come_from_the_body_in_order() -> None:
    err = _refusal(
        {
            "error": "invalid_client",
            "error_description": "AADSTS7000215: Invalid client secret provided.",
            "error_codes": [7000215, 50012],
        }
    )
    assert err.error_codes == (7000215, 50012)
    # A description without the code (shortened, translated): the body's codes still count.
    err = _refusal(
        {
            "error": "unauthorized_client",
            "error_description": "App not found",
            "error_codes": [700016],
        }
    )
    assert err.error_codes == (700016,)
    assert err.hint
    assert "client_id=" in err.hint


def test_a_code_is_read_only_from_the_start_of_the_description() -> None:
    # Entra's descriptions begin with their code; an AADSTS code mentioned further on (a
    # proxy, another server quoting Entra) is not this error's code.
    err = _refusal({"error": "invalid_request", "error_description": "upstream said AADSTS700027"})
    assert err.error_codes == ()
    assert err.aadsts is None
    assert err.hint is None


def test_the_hint_is_the_first_code_that_has_one() -> None:
    # 50027 (malformed assertion) comes first: its hint, not the thumbprint upload one.
    err = _refusal({"error": "invalid_client", "error_codes": [50027, 700027]})
    assert err.hint
    assert "x5t" in err.hint
    assert "upload" not in err.hint
    # A code without a hint is skipped.
    err = _refusal({"error": "invalid_grant", "error_codes": [1, 700024]})
    assert err.hint
    assert "clock" in err.hint


def test_b2c_refusing_a_certificate_gets_its_hint() -> None:
    description = (
        "AADB2C99027: Policy 'B2C_1A_signin' does not contain a AuthorizationTechnicalProfile "
        "with a corresponding ClientAssertionType."
    )
    err = _refusal({"error": "invalid_request", "error_description": description})
    assert err.hint == (
        "Azure AD B2C takes only client secrets for client credentials, not certificates"
    )
    assert err.hint == hint_for("invalid_request", [], description)
    assert err.hint in str(err)


def test_a_long_description_is_cut_in_the_message_but_kept_whole() -> None:
    description = "AADSTS90002: " + "x" * 1000
    err = _refusal({"error": "invalid_request", "error_description": description})
    assert f"({description[:300]}...)" in str(err)
    assert description[:301] not in str(err)
    assert err.error_description == description


def test_fields_that_are_not_strings_read_as_absent() -> None:
    err = _refusal(
        {
            "error": "invalid_client",
            "error_description": ["AADSTS700027: a list"],
            "trace_id": 123,
            "correlation_id": {"id": "x"},
            "timestamp": None,
        }
    )
    assert (err.error_description, err.trace_id, err.correlation_id, err.timestamp) == (
        None,
        None,
        None,
        None,
    )
    assert err.error_codes == ()
    assert (
        str(err) == f"{URL}: the server refused the token request: invalid_client; hint: {err.hint}"
    )


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


def test_refusal_message_cuts_the_description_between_words() -> None:
    words = " ".join(f"word{i:03d}" for i in range(100))  # 799 characters
    err = _refusal({"error": "invalid_request", "error_description": f"AADSTS9: {words}"})
    quoted = str(err).split(" (", 1)[1].rsplit(")", 1)[0]
    assert quoted.endswith(" ...")
    assert len(quoted) <= 304
    assert all(w.startswith("word") and len(w) == 7 for w in quoted[len("AADSTS9: ") : -4].split())


def test_description_lines_drop_entra_trailer_and_blank_lines() -> None:
    from certauth.protocol import description_lines, shorten

    assert description_lines(ENTRA_ERROR["error_description"]) == [
        "AADSTS700027: The certificate with identifier used to sign the client assertion is not "
        "registered on application."
    ]
    assert description_lines("first\n\n  second  \r\nTrace ID: x") == ["first", "second"]
    assert description_lines(None) == []
    assert shorten("alpha beta gamma", 11) == "alpha beta ..."
    assert shorten("alpha beta", 10) == "alpha beta"
    assert shorten("x" * 20, 5) == "xxxxx..."


def test_cli_refusal_report_fields_and_escapes() -> None:
    from certauth.cli._common import refusal_json, refusal_report

    err = _refusal(
        {
            **ENTRA_ERROR,
            "error_description": "AADSTS700027: first line\x1b[2J\nsecond line\r\n"
            "Trace ID: 0b4f\r\nCorrelation ID: 9c1e\r\nTimestamp: 2026",
        },
        status=401,
    )
    assert refusal_report(err) == [
        f"certauth: error: {URL}: the server refused the token request: invalid_client",
        "  aadsts: AADSTS700027",
        "  error_description: AADSTS700027: first line\\x1b[2J\n    second line",
        "  trace_id: 0b4f",
        "  correlation_id: 9c1e",
        "  timestamp: 2026-11-21 10:00:00Z",
        f"  hint: {err.hint}",
    ]
    assert json.loads(refusal_json(err)) == err.to_dict()


@pytest.mark.parametrize("permission", ["User.Read", "Mail.Send"])
def test_a_graph_permission_name_suggests_graph_default(permission: str) -> None:
    from certauth.errors import InvalidArgumentError
    from certauth.protocol import normalize_scopes

    with pytest.raises(InvalidArgumentError) as caught:
        normalize_scopes([permission], entra=True)
    assert str(caught.value) == (
        f"scope {permission!r} is a delegated permission; app-only tokens (client credentials) "
        "take only RESOURCE/.default, e.g. 'https://graph.microsoft.com/.default' for a "
        "Microsoft Graph permission (Entra ID would answer AADSTS1002012); the app's "
        "application permissions (roles) come with it"
    )
    assert f"{permission}/.default" not in str(caught.value)


def test_name_certificate_adds_both_thumbprints_to_a_700027_hint_once() -> None:
    from certauth.protocol import name_certificate

    err = _refusal(ENTRA_ERROR, status=401)
    hint = err.hint
    name_certificate(err, sha1="A" * 40, sha256="B" * 64)
    name_certificate(err, sha1="A" * 40, sha256="B" * 64)
    assert err.hint == (
        f"{hint}; this credential's certificate has SHA-1 thumbprint {'A' * 40} (as the portal "
        f"and `certauth cert thumbprint` show it) and SHA-256 thumbprint {'B' * 64}"
    )
    assert str(err).endswith(f"; hint: {err.hint}")
    other = _refusal({"error": "invalid_client", "error_codes": [700016]})
    before = (str(other), other.hint)
    name_certificate(other, sha1="A" * 40, sha256="B" * 64)
    assert (str(other), other.hint) == before


def test_as_response_reports_the_seconds_left() -> None:
    token = parse_token_response(
        200,
        _body({"access_token": "abc", "token_type": "Bearer", "expires_in": 3599}),
        url=URL,
        now=1000,
    )
    assert token.as_response()["expires_in"] == 3599
    assert token.as_response(now=1030)["expires_in"] == 3569
    assert token.as_response(now=10**9)["expires_in"] == 0
