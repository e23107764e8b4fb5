"""``certauth decode`` and ``certauth verify``: output, exit codes, stdin, and the README's
"Backends: verifying tokens" examples run against the emulator exactly as written."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from _docs import section
from test_verify import forge_none, sign

from certauth.assertion import build_client_assertion
from certauth.certificates import Certificate
from certauth.cli.main import main
from certauth.credential import CertificateCredential
from certauth.emulator import Emulator
from certauth.protocol import build_token_request
from certauth.verify import verifier as verifier_module

CLIENT_ID = "5a1f3c2e-0b6d-4e8f-9a7b-1c2d3e4f5a6b"
RESOURCE = "api://billing"
ROLE = "Invoices.Read"


@pytest.fixture(autouse=True)
def _fresh_key_cache() -> Iterator[None]:
    # verify_access_token keeps keys per issuer URL for the process; emulators come and go.
    verifier_module._shared.clear()
    yield
    verifier_module._shared.clear()


@pytest.fixture(scope="module")
def tenant(rsa_cert: Certificate) -> Iterator[Emulator]:
    with Emulator() as emulator:
        emulator.register(CLIENT_ID, rsa_cert, roles=[ROLE])
        yield emulator


def get_token(tenant: Emulator, cert: Certificate, **kw: Any) -> str:
    credential = CertificateCredential(
        tenant.tenant_id, CLIENT_ID, certificate=cert, token_endpoint=tenant.token_endpoint, **kw
    )
    with credential:
        return credential.get_token(f"{RESOURCE}/.default").token


@pytest.fixture(scope="module")
def token(tenant: Emulator, rsa_cert: Certificate) -> str:
    return get_token(tenant, rsa_cert)


def run(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    stdin: str = "",
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# -- decode -------------------------------------------------------------------------------------


def test_decode_from_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, token: str
) -> None:
    code, out, err = run(capsys, monkeypatch, ["decode", "-"], stdin=token + "\n")
    assert code == 0, err
    assert out.startswith("NOT VERIFIED")
    assert "Header:" in out
    assert '"alg": "RS256"' in out
    assert '"roles": [' in out
    assert re.search(r"exp  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(expires in \d+ min", out)
    assert "iat" in out
    assert "issued" in out
    assert token not in out


def test_decode_json(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, token: str
) -> None:
    code, out, _ = run(capsys, monkeypatch, ["decode", "--json", token])
    assert code == 0
    document = json.loads(out)
    assert document["verified"] is False
    assert document["header"]["alg"] == "RS256"
    assert document["claims"]["aud"] == RESOURCE


def test_decode_shows_expired_and_future_times(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, rsa_cert: Certificate
) -> None:
    now = int(time.time())
    claims = {"iat": now - 7200, "nbf": now + 600, "exp": now - 3600, "aud": "x"}
    forged = sign(claims, rsa_cert.private_key)
    code, out, _ = run(capsys, monkeypatch, ["decode", "-"], stdin=f"Bearer {forged}")
    assert code == 0
    assert "expired 1 h 0 min ago" in out or "expired 59 min" in out
    assert "not valid for another 9 min" in out or "not valid for another 10 min" in out
    assert "issued 2 h 0 min ago" in out or "issued 1 h 59 min ago" in out


@pytest.mark.parametrize("bad", ["not-a-token", "a.b.c", "eyJ.eyJ.x"])
def test_decode_malformed_is_exit_3(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    code, out, err = run(capsys, monkeypatch, ["decode", "-"], stdin=bad)
    assert code == 3
    assert out == ""
    assert err.startswith("certauth: error: cannot decode the token")
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_decode_empty_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = run(capsys, monkeypatch, ["decode", "-"], stdin="  \n")
    assert code == 3
    assert "no token in stdin" in err


# -- verify -------------------------------------------------------------------------------------


def test_verify_valid(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tenant: Emulator,
    token: str,
) -> None:
    argv = ["verify", "-", "--issuer", tenant.issuer, "--audience", RESOURCE]
    code, out, err = run(capsys, monkeypatch, [*argv, "--require-role", ROLE], stdin=token)
    assert code == 0, err
    assert out.startswith("VALID: signature, issuer, audience, expiry checked")
    assert f"roles    {ROLE}" in out
    assert "expires in" in out
    assert token not in out + err


def test_verify_valid_json(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tenant: Emulator,
    token: str,
) -> None:
    argv = ["verify", "-", "--issuer", tenant.issuer, "--audience", "other", "--audience"]
    code, out, _ = run(capsys, monkeypatch, [*argv, RESOURCE, "--json"], stdin=token)
    assert code == 0
    document = json.loads(out)
    assert document["valid"] is True
    assert document["claims"]["azp"] == CLIENT_ID
    assert document["header"]["kid"] == tenant.signing_kid


def test_verify_jwks_uri_only_says_what_was_not_checked(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tenant: Emulator,
    token: str,
) -> None:
    argv = ["verify", "-", "--jwks-uri", tenant.jwks_uri, "--audience", RESOURCE]
    code, out, _ = run(capsys, monkeypatch, argv, stdin=token)
    assert code == 0
    assert "no --issuer given" in out


@pytest.mark.parametrize(
    ("extra", "check"),
    [
        (["--audience", "api://payroll"], "audience"),
        (["--audience", RESOURCE, "--require-role", "Admin"], "role"),
        (["--audience", RESOURCE, "--require-scope", "Invoices.Read"], "scope"),
    ],
)
def test_verify_failures_exit_6(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tenant: Emulator,
    token: str,
    extra: list[str],
    check: str,
) -> None:
    argv = ["verify", "-", "--issuer", tenant.issuer, *extra]
    code, out, err = run(capsys, monkeypatch, argv, stdin=token)
    assert code == 6
    assert out == ""
    assert err.startswith(f"certauth: error: the token failed verification ({check}): ")
    assert err.count("\n") == 1
    code, out, err = run(capsys, monkeypatch, [*argv, "--json"], stdin=token)
    assert code == 6
    document = json.loads(out)
    assert document["valid"] is False
    assert document["check"] == check
    assert document["error"]
    assert token.split(".")[2][:16] not in out + err


def test_verify_forgeries_exit_6(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tenant: Emulator,
    token: str,
) -> None:
    claims = jwt.decode(token, options={"verify_signature": False})
    argv = ["verify", "-", "--issuer", tenant.issuer, "--audience", RESOURCE, "--json"]
    for forged, check in (
        (forge_none(claims, kid=tenant.signing_kid), "algorithm"),
        ("garbage", "format"),
    ):
        code, out, _ = run(capsys, monkeypatch, argv, stdin=forged)
        assert code == 6
        assert json.loads(out)["check"] == check


def test_verify_not_yet_valid_and_leeway(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    rsa_cert: Certificate,
) -> None:
    # A token from an emulator whose clock runs 61 minutes ahead is not valid yet here.
    with Emulator(clock=lambda: time.time() + 3660) as ahead:
        ahead.register(CLIENT_ID, rsa_cert, roles=[ROLE])
        assertion = build_client_assertion(
            rsa_cert, client_id=CLIENT_ID, audience=ahead.token_endpoint, now=ahead.clock.time()
        )
        request = build_token_request(
            ahead.token_endpoint, CLIENT_ID, [f"{RESOURCE}/.default"], assertion=assertion
        )
        answer = httpx.post(request.url, content=request.body, headers=dict(request.headers))
        future = answer.json()["access_token"]
        argv = ["verify", "-", "--issuer", ahead.issuer, "--audience", RESOURCE, "--json"]
        code, out, _ = run(capsys, monkeypatch, argv, stdin=future)
        assert code == 6
        assert json.loads(out)["check"] == "not_yet_valid"
        code, out, _ = run(capsys, monkeypatch, [*argv, "--leeway", "7200"], stdin=future)
        assert code == 0, out


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_verify_unreachable_keys_exit_5(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, token: str
) -> None:
    uri = f"http://127.0.0.1:{closed_port()}/keys"
    argv = ["verify", "-", "--jwks-uri", uri, "--audience", RESOURCE, "--timeout", "2"]
    code, out, err = run(capsys, monkeypatch, [*argv, "--json"], stdin=token)
    assert code == 5
    assert json.loads(out)["check"] == "fetch"
    assert "cannot fetch the JWKS" in err


def test_verify_tls_emulator_needs_ca_file(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, rsa_cert: Certificate
) -> None:
    with Emulator(tls=True) as secure:
        secure.register(CLIENT_ID, rsa_cert, roles=[ROLE])
        assert secure.ca_file is not None
        access = get_token(secure, rsa_cert, verify=secure.ca_file)
        argv = ["verify", "-", "--issuer", secure.issuer, "--audience", RESOURCE]
        code, _, err = run(capsys, monkeypatch, argv, stdin=access)
        assert code == 5
        assert "TLS" in err
        verifier_module._shared.clear()
        code, _, err = run(capsys, monkeypatch, [*argv, "--ca-file", secure.ca_file], stdin=access)
        assert code == 0, err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["verify", "-", "--issuer", "https://login.microsoftonline.com/x/v2.0"], "--audience"),
        (["verify", "-", "--audience", RESOURCE], "--issuer"),
        (["verify", "--audience", RESOURCE], "TOKEN"),
    ],
)
def test_verify_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    needle: str,
) -> None:
    code, _, err = run(capsys, monkeypatch, argv, stdin="x.y.z")
    assert code == 2
    assert needle in err


def test_help_mentions_stdin_and_commands_are_listed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for command in ("decode", "verify"):
        code, out, _ = run(capsys, monkeypatch, [command, "--help"])
        assert code == 0
        assert "stdin" in out
        assert "Example:" in out
    code, out, _ = run(capsys, monkeypatch, ["--help"])
    assert code == 0
    assert "decode" in out
    assert "verify" in out


# -- the documented example runs as written --------------------------------------------------


def readme_section() -> str:
    # Up to the page's next section (sender-constrained tokens: test_verify_cli_binding.py).
    return section("verify").split("<!-- section: verify-binding -->")[0]


def fenced(section: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", section, flags=re.M | re.S)


def test_readme_python_example(tenant: Emulator, token: str) -> None:
    (code,) = fenced(readme_section(), "python")
    code = code.replace("https://login.microsoftonline.com/TENANT_ID/v2.0", tenant.issuer)
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/verify.md", "exec"), namespace)  # noqa: S102 - our own README
    assert namespace["authorize"](f"Bearer {token}")["roles"] == [ROLE]
    error = namespace["TokenValidationError"]
    with pytest.raises(error, match="expected a Bearer token") as caught:
        namespace["authorize"](f"Basic {token}")
    assert caught.value.check == "format"
    namespace["verifier"].close()


def test_readme_shell_commands(tenant: Emulator, token: str) -> None:
    (block,) = fenced(readme_section(), "sh")
    lines = [line for line in block.splitlines() if line.strip()]
    assert len(lines) == 3
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "CERTAUTH_"))}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(ISSUER=tenant.issuer, ACCESS_TOKEN=token)
    for line in lines:
        match = re.search(r"#\s*exit\s+(\d+)\s*$", line)
        expected = int(match[1]) if match else 0
        proc = subprocess.run(
            ["bash", "-o", "pipefail", "-c", line],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == expected, f"{line}\n{proc.stdout}{proc.stderr}"
        assert "Traceback" not in proc.stderr
        assert token not in proc.stdout + proc.stderr
        if expected == 6:
            assert json.loads(proc.stdout)["check"] == "audience"
