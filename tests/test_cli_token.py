"""certauth token, assertion and demo through the CLI, against the emulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest

from certauth.certificates import Certificate
from certauth.cli.main import main
from certauth.emulator import Emulator

CLIENT = "11111111-2222-3333-4444-555555555555"
SCOPE = "api://billing/.default"


@pytest.fixture
def tenant(rsa_cert: Certificate) -> Iterator[Emulator]:
    with Emulator(strict=True) as emulator:
        emulator.register(CLIENT, rsa_cert, roles=["Invoices.Read"])
        yield emulator


@pytest.fixture
def pem(rsa_cert: Certificate, tmp_path: Path) -> Path:
    path = tmp_path / "app.pem"
    path.write_bytes(rsa_cert.private_key_pem() + rsa_cert.pem)
    return path


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tenant: Emulator, pem: Path, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("AZURE_", "CERTAUTH_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AZURE_TENANT_ID", tenant.tenant_id)
    monkeypatch.setenv("AZURE_CLIENT_ID", CLIENT)
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", tenant.authority_host)
    monkeypatch.setenv("AZURE_CLIENT_CERTIFICATE_PATH", str(pem))
    monkeypatch.setenv("CERTAUTH_CACHE_DIR", str(tmp_path / "cache"))


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.usefixtures("env")
@pytest.mark.parametrize("output", ["token", "json", "header", "env"])
def test_token_outputs(capsys: pytest.CaptureFixture[str], output: str) -> None:
    code, out, err = run(capsys, "token", "--scope", SCOPE, "--output", output, "--no-cache")
    assert code == 0, err
    assert err == ""
    if output == "token":
        token = out.strip()
    elif output == "json":
        doc = json.loads(out)
        assert {"access_token", "token_type", "expires_in", "expires_on", "ext_expires_in"} <= set(
            doc
        )
        token = doc["access_token"]
    elif output == "header":
        assert out.startswith("Authorization: Bearer ")
        token = out.split()[-1]
    else:
        assert out.startswith("ACCESS_TOKEN=")
        token = out.strip().split("=", 1)[1]
    assert jwt.decode(token, options={"verify_signature": False})["roles"] == ["Invoices.Read"]


@pytest.mark.usefixtures("env")
def test_flags_win_over_environment(
    capsys: pytest.CaptureFixture[str], tenant: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_CLIENT_ID", "wrong")
    code, _out, _ = run(capsys, "token", "--client-id", CLIENT, "--scope", SCOPE)
    assert code == 0
    # --token-endpoint wins over AZURE_TENANT_ID without a conflict.
    code, _, err = run(
        capsys,
        "token",
        "--token-endpoint",
        tenant.token_endpoint_v1,
        "--scope",
        SCOPE,
        "--client-id",
        CLIENT,
    )
    assert code == 0, err


@pytest.mark.usefixtures("env")
@pytest.mark.parametrize(
    ("value", "sent"), [("false", False), ("0", False), ("", False), ("true", True), ("1", True)]
)
def test_send_certificate_chain_variable_is_read_strictly(
    capsys: pytest.CaptureFixture[str], value: str, sent: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_CLIENT_SEND_CERTIFICATE_CHAIN", value)
    code, out, err = run(capsys, "assertion")
    assert code == 0, err
    assert ("x5c" in jwt.get_unverified_header(out.strip())) is sent


@pytest.mark.usefixtures("env")
def test_send_certificate_chain_variable_garbage_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_CLIENT_SEND_CERTIFICATE_CHAIN", "maybe")
    code, _, err = run(capsys, "assertion")
    assert code == 2
    assert "AZURE_CLIENT_SEND_CERTIFICATE_CHAIN" in err


@pytest.mark.usefixtures("env")
def test_assertion_header_and_claims(
    capsys: pytest.CaptureFixture[str], tenant: Emulator, rsa_cert: Certificate
) -> None:
    code, out, _ = run(capsys, "assertion", "--lifetime", "120")
    assert code == 0
    token = out.strip()
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "PS256", "typ": "JWT", "x5t#S256": rsa_cert.x5t_s256}
    claims = jwt.decode(
        token, rsa_cert.x509.public_key(), algorithms=["PS256"], audience=tenant.token_endpoint
    )
    assert claims["iss"] == claims["sub"] == CLIENT
    assert claims["exp"] - claims["iat"] == 120
    code, out, _ = run(capsys, "assertion", "--alg", "RS256")
    assert jwt.get_unverified_header(out.strip())["x5t"] == rsa_cert.x5t


@pytest.mark.usefixtures("env")
@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (["assertion", "--lifetime", "601"], 2, "--lifetime"),
        # The same authority rules as the library: B2C takes no certificates (AADB2C99027).
        (["assertion", "--tenant", "contoso", "--b2c-policy", "B2C_1A_x"], 3, "AADB2C99027"),
        (["token"], 2, "missing --scope"),
        (["token", "--scope", SCOPE, "--tenant", "t", "--issuer", "https://x"], 2, "exclusive"),
        (
            ["token", "--scope", SCOPE, "--token-endpoint", "https://x/t", "--b2c-policy", "B"],
            2,
            "--b2c-policy",
        ),
        (["token", "--scope", "User.Read"], 2, "AADSTS1002012"),
        (["token", "--scope", SCOPE, "--tenant", "organizations"], 2, "single directory"),
        (
            [
                "token",
                "--scope",
                SCOPE,
                "--client-id",
                "99999999-0000-0000-0000-000000000000",
                "--no-cache",
            ],
            4,
            "AADSTS700016",
        ),
        (
            [
                "token",
                "--scope",
                SCOPE,
                "--token-endpoint",
                "http://example.com/t/oauth2/v2.0/token",
            ],
            3,
            "plain http",
        ),
        (["token", "--scope", SCOPE, "--cert", "/nonexistent.pem"], 3, "no such file"),
        (["token", "--scope", SCOPE, "--client-secret-env", "UNSET_VAR_X"], 3, "UNSET_VAR_X"),
    ],
)
def test_errors_are_one_line_with_documented_codes(
    capsys: pytest.CaptureFixture[str], args: list[str], code: int, text: str
) -> None:
    got, out, err = run(capsys, *args)
    assert got == code, err
    assert text in err
    assert out == ""
    lines = err.strip().splitlines()
    if code == 4:
        # A refusal: the error line, then one field per line (AADSTS code, trace id, ...).
        assert lines[0].startswith("certauth: error: "), err
        assert all(line.startswith("  ") for line in lines[1:]), err
    else:
        assert len(lines) == 1, err
    assert "Traceback" not in err


def test_missing_required_option_without_environment_is_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("AZURE_"):
            monkeypatch.delenv(name)
    code, _, err = run(capsys, "token", "--scope", SCOPE)
    assert code == 2
    assert "AZURE_CLIENT_ID" in err


@pytest.mark.usefixtures("env")
def test_refused_token_shows_aadsts_trace_and_hint(
    capsys: pytest.CaptureFixture[str], other_rsa_cert: Certificate, tmp_path: Path
) -> None:
    other = tmp_path / "other.pem"
    other.write_bytes(other_rsa_cert.private_key_pem() + other_rsa_cert.pem)
    code, _out, err = run(capsys, "token", "--scope", SCOPE, "--cert", str(other), "--no-cache")
    assert code == 4
    assert "AADSTS700027" in err
    assert "hint:" in err


@pytest.mark.slow
@pytest.mark.usefixtures("env")
def test_unreachable_server_is_exit_5(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", f"http://127.0.0.1:{port}")
    code, _, err = run(capsys, "token", "--scope", SCOPE, "--no-cache", "--timeout", "1")
    assert code == 5
    assert "cannot connect" in err


@pytest.mark.usefixtures("env")
def test_pfx_with_password_from_env_and_file(
    capsys: pytest.CaptureFixture[str],
    rsa_cert: Certificate,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pfx = tmp_path / "app.pfx"
    pfx.write_bytes(rsa_cert.to_pfx("pfx-pass"))
    pw_file = tmp_path / "pw"
    pw_file.write_text("pfx-pass\n")
    monkeypatch.setenv("AZURE_CLIENT_CERTIFICATE_PASSWORD", "pfx-pass")
    assert run(capsys, "token", "--scope", SCOPE, "--cert", str(pfx), "--no-cache")[0] == 0
    monkeypatch.delenv("AZURE_CLIENT_CERTIFICATE_PASSWORD")
    code, _, err = run(capsys, "token", "--scope", SCOPE, "--cert", str(pfx), "--no-cache")
    assert code == 3
    assert "password" in err
    assert (
        run(capsys, "token", "--scope", SCOPE, "--cert", str(pfx), "--password-file", str(pw_file))[
            0
        ]
        == 0
    )


@pytest.mark.usefixtures("env")
def test_client_secret_from_file(
    capsys: pytest.CaptureFixture[str], tenant: Emulator, tmp_path: Path
) -> None:
    tenant.register_secret("secret-app", "s3cr3t")
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t\n")
    code, out, err = run(
        capsys,
        "token",
        "--client-id",
        "secret-app",
        "--scope",
        SCOPE,
        "--client-secret-file",
        str(secret),
    )
    assert code == 0, err
    assert "s3cr3t" not in out + err


def test_demo_runs_end_to_end() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "certauth", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "AADSTS700027" in proc.stdout
    assert "All steps worked." in proc.stdout


@pytest.mark.usefixtures("env")
def test_refusal_prints_what_support_asks_for_one_field_per_line(
    capsys: pytest.CaptureFixture[str], other_rsa_cert: Certificate, tmp_path: Path
) -> None:
    import re

    other = tmp_path / "other.pem"
    other.write_bytes(other_rsa_cert.private_key_pem() + other_rsa_cert.pem)
    code, out, err = run(capsys, "token", "--scope", SCOPE, "--cert", str(other), "--no-cache")
    assert (code, out) == (4, "")
    guid = "[0-9a-f-]{36}"
    pattern = (
        r"certauth: error: http://127\.0\.0\.1:\d+/[0-9a-f-]+/oauth2/v2\.0/token: the server "
        r"refused the token request: invalid_client\n"
        r"  aadsts: AADSTS700027\n"
        r"  error_description: AADSTS700027: Client assertion failed signature validation\. "
        r"\[Reason - The key was not found\., [^\n]*\]\n"
        rf"  trace_id: {guid}\n"
        rf"  correlation_id: {guid}\n"
        r"  timestamp: \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ\n"
        r"  hint: the assertion's signature or certificate thumbprint was not accepted: [^\n]+\n"
    )
    assert re.fullmatch(pattern, err), err
    # Entra's own Trace ID/Correlation ID/Timestamp lines are not repeated in the description.
    assert "Trace ID" not in err


@pytest.mark.usefixtures("env")
def test_refusal_with_output_json_is_one_json_object_on_stderr(
    capsys: pytest.CaptureFixture[str], other_rsa_cert: Certificate, tmp_path: Path
) -> None:
    other = tmp_path / "other.pem"
    other.write_bytes(other_rsa_cert.private_key_pem() + other_rsa_cert.pem)
    args = ("token", "--scope", SCOPE, "--cert", str(other), "--no-cache", "--output", "json")
    code, out, err = run(capsys, *args)
    assert (code, out) == (4, "")
    assert err.count("\n") == 1
    report = json.loads(err)
    assert list(report) == [
        "error",
        "error_description",
        "error_codes",
        "aadsts",
        "trace_id",
        "correlation_id",
        "timestamp",
        "status_code",
        "hint",
    ]
    assert report["error"] == "invalid_client"
    assert report["error_codes"] == [700027]
    assert report["aadsts"] == "AADSTS700027"
    assert report["status_code"] == 401
    assert f"Trace ID: {report['trace_id']}" in report["error_description"]
    assert report["hint"].startswith("the assertion's signature or certificate thumbprint")


def test_token_with_nothing_set_names_every_missing_setting_at_once(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith(("AZURE_", "CERTAUTH_")):
            monkeypatch.delenv(name)
    assert run(capsys, "token") == (
        2,
        "",
        "certauth: error: missing 4 settings: --scope (e.g. --scope "
        "https://graph.microsoft.com/.default); --client-id (or AZURE_CLIENT_ID); --tenant (or "
        "AZURE_TENANT_ID), --token-endpoint or --issuer; --cert (or "
        "AZURE_CLIENT_CERTIFICATE_PATH), a client secret (--client-secret-env, "
        "--client-secret-file or AZURE_CLIENT_SECRET) or a federated token file "
        "(--federated-token-file or AZURE_FEDERATED_TOKEN_FILE) (see 'certauth token --help')\n",
    )
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "s")
    assert run(capsys, "token", "--tenant", "t", "--scope", SCOPE) == (
        2,
        "",
        "certauth: error: missing --client-id (or AZURE_CLIENT_ID) (see 'certauth token --help')\n",
    )


@pytest.mark.usefixtures("env")
def test_refusal_names_the_certificate_by_both_thumbprints(
    capsys: pytest.CaptureFixture[str], other_rsa_cert: Certificate, tmp_path: Path
) -> None:
    other = tmp_path / "other.pem"
    other.write_bytes(other_rsa_cert.private_key_pem() + other_rsa_cert.pem)
    code, _out, err = run(capsys, "token", "--scope", SCOPE, "--cert", str(other), "--no-cache")
    assert code == 4
    assert err.endswith(
        f"; this credential's certificate has SHA-1 thumbprint {other_rsa_cert.thumbprint_sha1} "
        "(as the portal and `certauth cert thumbprint` show it) and SHA-256 thumbprint "
        f"{other_rsa_cert.thumbprint_sha256}\n"
    )
    # Entra's description quotes the SHA-256 one: the labelled pair lets the user match it.
    assert other_rsa_cert.thumbprint_sha256 in err.split("  hint:")[0]


@pytest.mark.usefixtures("env")
def test_cached_token_reports_the_seconds_left(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    code, out, err = run(capsys, "token", "--scope", SCOPE, "--output", "json")
    assert code == 0, err
    first = json.loads(out)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 30)
    code, out, err = run(capsys, "token", "--scope", SCOPE, "--output", "json")
    assert code == 0, err
    again = json.loads(out)
    assert again["access_token"] == first["access_token"]  # served from the cache
    left = again["expires_on"] - int(real() + 30)
    assert again["expires_in"] in (left, left - 1)
    assert again["expires_in"] <= first["expires_in"] - 29


def test_client_secret_env_help_says_it_takes_a_name(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "token", "--help")
    assert code == 0
    text = " ".join(out.split())
    assert (
        "--client-secret-env VAR Use a client secret, read from the environment variable named "
        "VAR (its name, not the secret), not a certificate; without it, AZURE_CLIENT_SECRET is "
        "read when no certificate is given."
    ) in text


@pytest.mark.usefixtures("env")
def test_json_flag_and_short_o_are_synonyms_of_output_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    keys = ["access_token", "expires_in", "expires_on", "ext_expires_in", "token_type"]
    for flags in (["--json"], ["-o", "json"], ["--json", "--output", "json"]):
        code, out, err = run(capsys, "token", "--scope", SCOPE, "--no-cache", *flags)
        assert (code, err) == (0, ""), flags
        assert sorted(json.loads(out)) == keys
    code, out, err = run(capsys, "token", "--scope", SCOPE, "-o", "header", "--no-cache")
    assert code == 0
    assert out.startswith("Authorization: Bearer ey")
    assert run(capsys, "token", "--scope", SCOPE, "--json", "-o", "env") == (
        2,
        "",
        "certauth: error: --json and --output env are exclusive: choose one "
        "(see 'certauth token --help')\n",
    )


@pytest.mark.usefixtures("env")
def test_refusal_with_json_flag_is_json_on_stderr(
    capsys: pytest.CaptureFixture[str], other_rsa_cert: Certificate, tmp_path: Path
) -> None:
    other = tmp_path / "other.pem"
    other.write_bytes(other_rsa_cert.private_key_pem() + other_rsa_cert.pem)
    code, out, err = run(
        capsys, "token", "--scope", SCOPE, "--cert", str(other), "--no-cache", "--json"
    )
    assert (code, out) == (4, "")
    assert json.loads(err)["aadsts"] == "AADSTS700027"


@pytest.mark.usefixtures("env")
@pytest.mark.parametrize(
    ("args", "variables", "fragments"),
    [
        (["--cache-namespace", "billing-api"], {}, ["--cache-namespace", "no Redis cache"]),
        ([], {"CERTAUTH_CACHE_NAMESPACE": "billing-api"}, ["CERTAUTH_CACHE_NAMESPACE", "--cache"]),
        (["--cache-namespace", "billing-api", "--no-cache"], {}, ["exclusive"]),
        (
            ["--cache", "redis://127.0.0.1:1/0", "--cache-namespace", "a{b}"],
            {},
            ["--cache-namespace", "braces"],
        ),
    ],
    ids=["flag-without-cache", "variable-without-cache", "with-no-cache", "braces"],
)
def test_a_cache_namespace_needs_a_redis_cache(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tenant: Emulator,
    args: list[str],
    variables: dict[str, str],
    fragments: list[str],
) -> None:
    if "a{b}" in args:
        pytest.importorskip("redis", reason="the namespace check is certauth._redis's (redis)")
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    code, out, err = run(capsys, "token", "--scope", SCOPE, *args)
    assert code == 2, err
    assert out == ""
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert tenant.request_count == 0


@pytest.mark.usefixtures("env")
def test_no_cache_wins_over_the_namespace_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # As it does over CERTAUTH_CACHE_URL: a pipeline's variables do not stop --no-cache.
    monkeypatch.setenv("CERTAUTH_CACHE_NAMESPACE", "billing-api")
    code, out, err = run(capsys, "token", "--scope", SCOPE, "--no-cache")
    assert code == 0, err
    assert out.strip()
