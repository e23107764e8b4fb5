"""``certauth emulator --env-file FILE`` / ``--print-env``: the environment a client needs, as
shell ``export`` lines that make ``certauth token --scope S`` work with nothing else set."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _docs import section

from certauth.certificates import Certificate
from certauth.cli.emulator import client_environment

VENV_BIN = str(Path(sys.executable).parent)
CLIENT_ID = "11111111-2222-3333-4444-555555555555"
INFO = {
    "tenant": "c3a7c0de-0000-4000-8000-000000000001",
    "issuer": "http://127.0.0.1:8400/c3a7c0de-0000-4000-8000-000000000001/v2.0",
    "token_endpoint": "unused",
    "jwks_uri": "unused",
    "authority_host": "http://127.0.0.1:8400",
}


def _readme_block() -> str:
    match = re.search(r"```sh\n(.*?)\n```", section("emulator-env"), re.DOTALL)
    assert match, "the emulator-env section has no sh block"
    return match.group(1)


def _clean_env(home: Path) -> dict[str, str]:
    """A shell with none of the variables the emulator's lines are to set."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AZURE_", "CERTAUTH_", "SSL_CERT_"))
    }
    env["PATH"] = os.pathsep.join([VENV_BIN, env.get("PATH", os.defpath)])
    env["CERTAUTH_CACHE_DIR"] = str(home / "cache")
    return env


def test_lines_for_one_registered_bundle(tmp_path: Path, rsa_cert: Certificate) -> None:
    bundle = tmp_path / "app dir" / "app.pem"
    bundle.parent.mkdir()
    bundle.write_bytes(rsa_cert.private_key_pem() + rsa_cert.pem)
    assert client_environment(INFO, [(CLIENT_ID, str(bundle))]).splitlines() == [
        "export AZURE_TENANT_ID=c3a7c0de-0000-4000-8000-000000000001",
        "export AZURE_AUTHORITY_HOST=http://127.0.0.1:8400",
        f"export AZURE_CLIENT_ID={CLIENT_ID}",
        f"export AZURE_CLIENT_CERTIFICATE_PATH='{bundle}'",  # quoted: the path has a space
    ]


def test_lines_for_a_certificate_alone_several_apps_and_tls(
    tmp_path: Path, rsa_cert: Certificate
) -> None:
    crt = tmp_path / "app.crt"
    crt.write_bytes(rsa_cert.pem)
    assert client_environment(INFO, [(CLIENT_ID, str(crt))]).splitlines()[2:] == [
        f"export AZURE_CLIENT_ID={CLIENT_ID}",
        f"# {crt} holds no private key: point AZURE_CLIENT_CERTIFICATE_PATH at the key + "
        "certificate file (certauth cert bundle CERT KEY --out FILE)",
    ]
    several = client_environment(
        {**INFO, "ca_file": "/tmp/x/ca.pem"}, [("a", str(crt)), ("b", str(crt))]
    )
    assert several.splitlines()[2:] == [
        "# several apps registered: set AZURE_CLIENT_ID to one of a, b",
        "export SSL_CERT_FILE=/tmp/x/ca.pem",
    ]
    assert "AZURE_CLIENT_ID=" not in client_environment(INFO, []).replace("# ", "")


def _make_pair(workdir: Path, env: dict[str, str]) -> None:
    """The ops quick start's certificate and the library quick start's bundle, by the CLI."""
    for command in (
        'certauth cert create --subject "CN=billing-api" --out ./certs --json > /dev/null',
        "certauth cert bundle certs/billing-api.crt certs/billing-api.key "
        "--out certs/billing-api.pem --json > /dev/null",
    ):
        subprocess.run(["bash", "-c", command], cwd=workdir, env=env, check=True, timeout=60)


@pytest.mark.slow
def test_readme_env_file_block_runs_as_written(tmp_path: Path) -> None:
    env = _clean_env(tmp_path)
    _make_pair(tmp_path, env)
    proc = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", _readme_block()],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    # The emulator's start-up lines (its stdout is the shell's), then the token's client id.
    lines = proc.stdout.splitlines()
    assert [line.split(":", 1)[0] for line in lines[:7]] == [
        "tenant", "issuer", "token_endpoint", "jwks_uri", "authority_host", "graph_url",
        "resource_url",
    ]  # fmt: skip
    assert lines[7:] == [f'  "appid": "{CLIENT_ID}",']
    # The file is removed when the emulator stops (it would point at a server that is gone).
    deadline = time.monotonic() + 10
    while (tmp_path / "emulator.env").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not (tmp_path / "emulator.env").exists()


@pytest.mark.slow
def test_print_env_with_tls_is_evaluated_and_token_runs_with_no_other_setting(
    tmp_path: Path,
) -> None:
    env = _clean_env(tmp_path)
    _make_pair(tmp_path, env)
    script = f"""
certauth emulator --port 0 --tls --register {CLIENT_ID}=certs/billing-api.pem --print-env \\
    > emulator.out 2> emulator.log &
pid=$!
trap 'kill "$pid"' EXIT
until grep -q '^export SSL_CERT_FILE=' emulator.out 2>/dev/null; do sleep 0.2; done
cat emulator.out
eval "$(cat emulator.out)"
certauth token --scope api://billing/.default --output json \\
    | python3 -c 'import json,sys; print(sorted(json.load(sys.stdin))[:2])'
"""
    proc = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split("=", 1)[0] for line in lines[:5]] == [
        "export AZURE_TENANT_ID",
        "export AZURE_AUTHORITY_HOST",
        "export AZURE_CLIENT_ID",
        "export AZURE_CLIENT_CERTIFICATE_PATH",
        "export SSL_CERT_FILE",
    ]
    assert lines[1].startswith("export AZURE_AUTHORITY_HOST=https://127.0.0.1:")
    assert lines[3] == f"export AZURE_CLIENT_CERTIFICATE_PATH={tmp_path}/certs/billing-api.pem"
    assert lines[4].endswith("/ca.pem")
    assert lines[5:] == ["['access_token', 'expires_in']"]


def test_print_env_and_json_together_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    from certauth.cli.main import main

    assert main(["emulator", "--port", "0", "--print-env", "--json"]) == 2
    assert "--print-env or --json" in capsys.readouterr().err
