"""Token answers that cannot hurt: what a token endpoint sends ends up in an ``Authorization``
header (``--output header``) or a ``$GITHUB_ENV`` file (``--output env``), so its characters
and its lifetime are checked before anything is printed or cached.

RFC 6750 section 2.1: an access token is a ``b64token``; RFC 9110 section 11.1: the token
type is an auth-scheme (a ``token``). A token already expired on arrival is not a token. Each
refusal is a :class:`TransportError` (exit 5), proven through the library and the CLI against
the emulator (its fault injection sends the exact bytes) on loopback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _cert_helpers import assert_one_line_error, run_cli

from certauth import CertificateCredential, RetryPolicy
from certauth.certificates import Certificate
from certauth.emulator import Emulator
from certauth.errors import TransportError
from certauth.protocol import parse_token_response

CLIENT_ID = "12121212-3434-5656-7878-909090909090"
SCOPE = "api://answers/.default"
URL = "https://sts.example/t/oauth2/v2.0/token"
Capsys = pytest.CaptureFixture[str]

#: Access tokens a server must not be able to slip into a header line or an env file.
BAD_TOKENS = {
    "CRLF header injection": "eyJ0.eyJ0.c2ln\r\nX-Injected: 1",
    "LF env injection": "eyJ0.eyJ0.c2ln\nGITHUB_PATH=/tmp/evil",
    "trailing newline": "eyJ0.eyJ0.c2ln\n",
    "space": "eyJ0.eyJ0 c2ln",
    "NUL": "eyJ0.eyJ0.c2ln\x00",
    "non-ASCII": "eyJ0.eyJ0.c2l\u00f1",
    "quote": 'eyJ0.eyJ0.c2ln"',
    "padding in the middle": "ab=cd",
}
BAD_TYPES = {
    "CRLF": "Bearer\r\nX-Injected: 1",
    "space": "Bearer x",
    "empty": "",
    "newline": "Bearer\n",
}


def _answer(**fields: Any) -> bytes:
    return json.dumps({"token_type": "Bearer", "expires_in": 3600, **fields}).encode()


def _parse(body: bytes, now: float = 1_700_000_000) -> Any:
    return parse_token_response(200, body, url=URL, now=now)


# -- the rule, in the sans-I/O core ---------------------------------------------------------------


@pytest.mark.parametrize("token", list(BAD_TOKENS.values()), ids=list(BAD_TOKENS))
def test_an_access_token_outside_b64token_is_refused(token: str) -> None:
    with pytest.raises(TransportError, match=r"RFC 6750 section 2\.1") as excinfo:
        _parse(_answer(access_token=token))
    assert token not in str(excinfo.value)  # a token, even a broken one, is never shown
    assert "\n" not in str(excinfo.value)


@pytest.mark.parametrize(
    "token", ["eyJ0eXAi.eyJhdWQi.c2lnbmF0dXJl", "A-._~+/z==", "opaque_Token~1", "x"]
)
def test_b64token_characters_pass(token: str) -> None:
    assert _parse(_answer(access_token=token)).access_token == token


@pytest.mark.parametrize("token_type", list(BAD_TYPES.values()), ids=list(BAD_TYPES))
def test_a_token_type_that_is_not_a_scheme_name_is_refused(token_type: str) -> None:
    with pytest.raises(TransportError, match=r"RFC 9110 section 11\.1") as excinfo:
        _parse(_answer(access_token="tok", token_type=token_type))
    assert "\n" not in str(excinfo.value)


@pytest.mark.parametrize("token_type", ["Bearer", "bearer", "DPoP", "N_A", "pop"])
def test_scheme_names_pass(token_type: str) -> None:
    assert _parse(_answer(access_token="tok", token_type=token_type)).token_type == token_type


@pytest.mark.parametrize(
    "fields",
    [
        {"expires_in": 0},
        {"expires_in": -1},
        {"expires_in": "0"},
        {"expires_in": 0, "expires_on": 1_700_003_600},
        {"expires_on": 1_699_999_999},
        {"expires_on": 1_700_000_000},
        {"expires_on": 5, "expires_in": "soon"},
    ],
    ids=str,
)
def test_a_token_dead_on_arrival_is_refused(fields: dict[str, Any]) -> None:
    body = json.dumps({"access_token": "tok", "token_type": "Bearer", **fields}).encode()
    with pytest.raises(TransportError, match="already"):
        _parse(body)


def test_usable_lifetimes_still_pass() -> None:
    now = 1_700_000_000
    assert _parse(_answer(access_token="t", expires_in=1), now).expires_on == now + 1
    only_on = json.dumps({"access_token": "t", "expires_on": now + 60}).encode()
    token = _parse(only_on, now)
    assert (token.expires_in, token.expires_on) == (60, now + 60)
    # A past expires_on next to a good expires_in (a skewed server clock): expires_in wins.
    skewed = _answer(access_token="t", expires_in=600, expires_on=now - 5)
    assert _parse(skewed, now).expires_on == now + 600


# -- through the library and the CLI, against a loopback token endpoint ---------------------------


@pytest.fixture(scope="module")
def tenant(rsa_cert: Certificate) -> Iterator[Emulator]:
    with Emulator() as emulator:
        emulator.register(CLIENT_ID, rsa_cert)
        yield emulator


@pytest.fixture
def pem(rsa_cert: Certificate, tmp_path: Path) -> Path:
    path = tmp_path / "app.pem"
    path.write_bytes(rsa_cert.private_key_pem() + rsa_cert.pem)
    return path


HOSTILE_ANSWERS = {
    "CRLF in access_token": _answer(access_token="eyJ0.eyJ0.c2ln\r\nX-Injected: 1"),
    "LF in access_token": _answer(access_token="eyJ0.eyJ0.c2ln\nGITHUB_PATH=/tmp/evil"),
    "CRLF in token_type": _answer(access_token="eyJ0.eyJ0.c2ln", token_type="Bearer\r\nX: 1"),
    "expires_in 0": _answer(access_token="eyJ0.eyJ0.c2ln", expires_in=0),
    "expires_in -60": _answer(access_token="eyJ0.eyJ0.c2ln", expires_in=-60),
    "expires_on past": json.dumps({"access_token": "eyJ0.eyJ0.c2ln", "expires_on": 1}).encode(),
}


@pytest.mark.parametrize("body", list(HOSTILE_ANSWERS.values()), ids=list(HOSTILE_ANSWERS))
def test_the_library_refuses_hostile_answers(
    tenant: Emulator, rsa_cert: Certificate, body: bytes
) -> None:
    tenant.inject_faults(body=body)
    try:
        with (
            CertificateCredential(
                tenant.tenant_id,
                CLIENT_ID,
                certificate=rsa_cert,
                token_endpoint=tenant.token_endpoint,
                retry=RetryPolicy(max_attempts=1),
            ) as credential,
            pytest.raises(TransportError) as excinfo,
        ):
            credential.get_token(SCOPE)
    finally:
        tenant.clear_faults()
    assert excinfo.value.exit_code == 5
    assert "X-Injected" not in str(excinfo.value)
    assert "GITHUB_PATH" not in str(excinfo.value)


@pytest.mark.usefixtures("cli_env")
@pytest.mark.parametrize("output", ["header", "env", "token", "json"])
@pytest.mark.parametrize("body", list(HOSTILE_ANSWERS.values()), ids=list(HOSTILE_ANSWERS))
def test_the_cli_prints_nothing_for_hostile_answers(
    capsys: Capsys, tenant: Emulator, pem: Path, body: bytes, output: str
) -> None:
    tenant.inject_faults(body=body)
    try:
        result = run_cli(
            capsys,
            "token",
            "--client-id",
            CLIENT_ID,
            "--token-endpoint",
            tenant.token_endpoint,
            "--cert",
            pem,
            "--scope",
            SCOPE,
            "--output",
            output,
        )
    finally:
        tenant.clear_faults()
    line = assert_one_line_error(result, 5)  # stdout is empty: nothing reached a header or env
    assert "X-Injected" not in line
    assert "GITHUB_PATH" not in line
    # Nothing was cached either: the next (normal) answer is fetched and printed.
    again = run_cli(
        capsys,
        "token",
        "--client-id",
        CLIENT_ID,
        "--token-endpoint",
        tenant.token_endpoint,
        "--cert",
        pem,
        "--scope",
        SCOPE,
        "--output",
        "header",
    )
    assert again.code == 0, again.err
    assert again.out.startswith("Authorization: Bearer ey")
    assert len(again.out.splitlines()) == 1


def test_a_normal_header_and_env_line_is_one_line(
    capsys: Capsys, tenant: Emulator, pem: Path, cli_env: None
) -> None:
    for output, prefix in (("header", "Authorization: Bearer "), ("env", "ACCESS_TOKEN=")):
        result = run_cli(
            capsys,
            "token",
            "--client-id",
            CLIENT_ID,
            "--token-endpoint",
            tenant.token_endpoint,
            "--cert",
            pem,
            "--scope",
            SCOPE,
            "--output",
            output,
            "--no-cache",
        )
        assert result.code == 0, result.err
        assert result.out.startswith(prefix)
        assert result.out.count("\n") == 1
