"""``certauth emulator``: start-up output, --ready-file, a real request, SIGTERM -> exit 0."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from _emulator_helpers import CLIENT_ID, assertion_form, claims_of, make_assertion, secret_form

from certauth.certificates import Certificate
from certauth.cli.main import main
from certauth.emulator import DEFAULT_TENANT_ID, Emulator

READY_KEYS = {
    "tenant", "issuer", "token_endpoint", "jwks_uri", "authority_host", "graph_url", "resource_url"
}  # fmt: skip


@contextmanager
def running(
    args: list[str], ready: Path, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "certauth",
            "emulator",
            "--port",
            "0",
            "--ready-file",
            str(ready),
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                _, err = process.communicate(timeout=5)
                pytest.fail(f"emulator did not start (exit {process.returncode}): {err}")
            time.sleep(0.05)
        yield process, json.loads(ready.read_text())
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_cli_serves_until_sigterm(tmp_path: Path, rsa_cert: Certificate) -> None:
    cert_file = tmp_path / "app.crt"
    cert_file.write_bytes(rsa_cert.pem)
    ready = tmp_path / "ready.json"
    args = ["--register", f"{CLIENT_ID}={cert_file}", "--resource", "api://things=A,B"]
    args += ["--secret", "secret-app=EMU_CLI_SECRET", "--strict"]
    with running(args, ready, {"EMU_CLI_SECRET": "from-env"}) as (process, info):
        assert set(info) == READY_KEYS
        assert info["tenant"] == DEFAULT_TENANT_ID
        assert info["token_endpoint"].startswith("http://127.0.0.1:")
        with httpx.Client() as http:
            token = make_assertion(rsa_cert, info["token_endpoint"])
            response = http.post(info["token_endpoint"], data=assertion_form(token))
            assert response.status_code == 200, response.text
            claims = claims_of(response.json()["access_token"])
            assert claims["iss"] == info["issuer"]
            assert claims["roles"] == ["A", "B"]
            again = http.post(info["token_endpoint"], data=assertion_form(token))
            assert again.status_code == 400  # --strict: the jti was used
            secret = http.post(
                info["token_endpoint"], data=secret_form("from-env", client_id="secret-app")
            )
            assert secret.status_code == 200
            unknown = http.post(
                info["token_endpoint"],
                data=assertion_form(
                    make_assertion(rsa_cert, info["token_endpoint"]),
                    scope="api://unknown/.default",
                ),
            )
            assert unknown.json()["error_codes"] == [500011]
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    lines = dict(line.split(": ", 1) for line in out.strip().splitlines())
    assert lines == info
    assert "AADSTS500011" in err  # one log line per refusal, on stderr
    assert token not in err
    assert not ready.exists()  # removed on exit: no stale "ready" for the next run


def test_cli_tls_ca_file_is_trusted_by_httpx(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    tls_dir = tmp_path / "tls"
    with running(["--tls", "--tls-dir", str(tls_dir), "--tenant", "contoso.test"], ready) as (
        process,
        info,
    ):
        assert set(info) == READY_KEYS | {"ca_file", "mtls_token_endpoint", "mtls_resource_url"}
        assert Path(info["ca_file"]).parent == tls_dir
        assert info["tenant"] != "contoso.test"  # a domain gets a stable GUID
        mtls = info["mtls_token_endpoint"]
        assert mtls.startswith("https://127.0.0.1:")
        assert mtls.endswith(f"/{info['tenant']}/oauth2/v2.0/token")
        assert mtls != info["token_endpoint"]
        with httpx.Client(verify=ssl.create_default_context(cafile=info["ca_file"])) as http:
            doc = http.get(
                f"{info['authority_host']}/contoso.test/v2.0/.well-known/openid-configuration"
            ).json()
            assert doc["token_endpoint"] == info["token_endpoint"]
            assert doc["mtls_endpoint_aliases"] == {"token_endpoint": mtls}
        process.send_signal(signal.SIGINT)  # Ctrl-C
        out, _ = process.communicate(timeout=10)
    assert process.returncode == 0
    # The printed lines: the same values, in this order, the mutual-TLS listener's last.
    printed = [tuple(line.split(": ", 1)) for line in out.strip().splitlines()]
    assert [name for name, _ in printed] == [
        "tenant", "issuer", "token_endpoint", "jwks_uri", "authority_host", "graph_url",
        "resource_url", "ca_file", "mtls_token_endpoint", "mtls_resource_url",
    ]  # fmt: skip
    assert dict(printed) == info


def test_cli_json_config(tmp_path: Path, rsa_cert: Certificate) -> None:
    (tmp_path / "app.crt").write_bytes(rsa_cert.pem)
    config = tmp_path / "tenant.json"
    config.write_text(json.dumps({"apps": [{"client_id": "cfg-app", "certificates": ["app.crt"]}]}))
    ready = tmp_path / "ready.json"
    with running(["--config", str(config), "--json"], ready) as (process, info):
        with httpx.Client() as http:
            token = make_assertion(rsa_cert, info["token_endpoint"], client_id="cfg-app")
            form = assertion_form(token, client_id="cfg-app")
            assert http.post(info["token_endpoint"], data=form).status_code == 200
        process.terminate()
        out, _ = process.communicate(timeout=10)
    assert json.loads(out) == info


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--register", "no-equals-sign"], 2, "CLIENT_ID=CERT_FILE"),
        (["--register", "app=/nonexistent/app.crt"], 3, "no such file"),
        (["--secret", "app=EMU_SURELY_UNSET_VAR"], 3, "EMU_SURELY_UNSET_VAR"),
        (["--config", "/nonexistent/tenant.toml"], 3, "no such file"),
        (["--port", "70000"], 2, "70000"),
    ],
)
def test_cli_bad_input(
    args: list[str], code: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["emulator", "--port", "0", *args]) == code
    assert message in capsys.readouterr().err


def test_cli_port_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    with Emulator() as busy:
        assert main(["emulator", "--port", str(busy.port)]) == 3
    assert "cannot listen" in capsys.readouterr().err
