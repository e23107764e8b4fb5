"""``--json`` on ``cert thumbprint``, ``assertion`` and ``demo``; ``certauth completion``; help
texts that do not cut command summaries and spell ``x5t#S256`` and ``PS256`` as the README."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _cert_helpers import assert_one_line_error, run_cli, write

from certauth.certificates import Certificate

Capsys = pytest.CaptureFixture[str]
ENTRA_ENDPOINT = "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
CERTAUTH = Path(sys.executable).with_name("certauth")


@pytest.fixture
def bundle(rsa_cert: Certificate, tmp_path: Path) -> Path:
    path = tmp_path / "app.pem"
    write(path, rsa_cert.private_key_pem() + rsa_cert.pem)
    return path


def _segment(jwt: str, index: int) -> dict[str, object]:
    part = jwt.split(".")[index]
    data: dict[str, object] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return data


# -- --json ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "form", "attribute"),
    [
        (None, "sha1", "thumbprint_sha1"),
        ("SHA256", "sha256", "thumbprint_sha256"),
        ("x5t", "x5t", "x5t"),
        ("X5T#s256", "x5t#S256", "x5t_s256"),  # any case in, the README's spelling out
    ],
)
def test_thumbprint_json(
    bundle: Path,
    rsa_cert: Certificate,
    capsys: Capsys,
    typed: str | None,
    form: str,
    attribute: str,
) -> None:
    extra = ["--format", typed] if typed else []
    result = run_cli(capsys, "cert", "thumbprint", bundle, *extra, "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out) == {"thumbprint": getattr(rsa_cert, attribute), "format": form}
    plain = run_cli(capsys, "cert", "thumbprint", bundle, *extra)
    assert plain.out == f"{getattr(rsa_cert, attribute)}\n"


def test_assertion_json_is_the_jwt_with_its_header_and_claims(
    bundle: Path, rsa_cert: Certificate, capsys: Capsys
) -> None:
    result = run_cli(
        capsys, "assertion", "--client-id", "app-1", "--token-endpoint", ENTRA_ENDPOINT,
        "--cert", bundle, "--json",
    )  # fmt: skip
    assert result.code == 0, result.err
    payload = json.loads(result.out)
    assert sorted(payload) == ["assertion", "claims", "header"]
    assert payload["header"] == _segment(payload["assertion"], 0)
    assert payload["claims"] == _segment(payload["assertion"], 1)
    assert payload["header"]["alg"] == "PS256"
    assert payload["header"]["x5t#S256"] == rsa_cert.x5t_s256
    assert payload["claims"]["aud"] == ENTRA_ENDPOINT
    assert payload["claims"]["iss"] == payload["claims"]["sub"] == "app-1"


def test_alg_stays_case_insensitive(bundle: Path, capsys: Capsys) -> None:
    result = run_cli(
        capsys, "assertion", "--client-id", "app-1", "--token-endpoint", ENTRA_ENDPOINT,
        "--cert", bundle, "--alg", "rs256", "--json",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert json.loads(result.out)["header"]["alg"] == "RS256"
    wrong = run_cli(
        capsys, "assertion", "--client-id", "app-1", "--token-endpoint", ENTRA_ENDPOINT,
        "--cert", bundle, "--alg", "hs256",
    )  # fmt: skip
    assert_one_line_error(wrong, 2, "--alg", "'hs256' is not one of RS256, PS256, ES256")


def test_demo_json_is_one_summary_object(capsys: Capsys) -> None:
    result = run_cli(capsys, "demo", "--json")
    assert result.code == 0, result.err
    summary = json.loads(result.out)  # the whole stdout: no walk-through text around it
    assert list(summary) == [
        "certificate", "tenant", "token_endpoint", "client_id", "assertion", "token",
        "verified_claims", "rejection", "ok",
    ]  # fmt: skip
    assert summary["ok"] is True
    assert summary["certificate"]["subject"] == "CN=certauth-demo"
    assert summary["assertion"]["header"]["alg"] == "PS256"
    assert summary["token"]["token_type"] == "Bearer"
    assert summary["verified_claims"]["roles"] == ["Demo.Read"]
    assert summary["rejection"]["aadsts"] == "AADSTS700027"


# -- completion ------------------------------------------------------------------------------------

#: What each shell's script must hold: click's callback variable and the shell's hook.
SCRIPT_MARKERS = {
    "bash": [
        "_certauth_completion() {",
        "_CERTAUTH_COMPLETE=bash_complete $1",
        "complete -o nosort -F _certauth_completion certauth",
    ],
    "zsh": ["#compdef certauth", "_CERTAUTH_COMPLETE=zsh_complete", "compdef _certauth_completion"],
    "fish": [
        "function _certauth_completion",
        "_CERTAUTH_COMPLETE=fish_complete",
        'complete --no-files --command certauth --arguments "(_certauth_completion)"',
    ],
}


@pytest.mark.parametrize("shell", sorted(SCRIPT_MARKERS))
def test_completion_prints_the_script(capsys: Capsys, shell: str) -> None:
    result = run_cli(capsys, "completion", shell)
    assert result.code == 0, result.err
    assert result.err == ""
    for marker in SCRIPT_MARKERS[shell]:
        assert marker in result.out, (shell, marker)
    for other in set(SCRIPT_MARKERS) - {shell}:
        assert f"{other}_complete" not in result.out


def test_completion_of_an_unknown_shell_is_exit_2(capsys: Capsys) -> None:
    assert_one_line_error(run_cli(capsys, "completion", "tcsh"), 2, "'tcsh'")


def _complete(words: str, cword: int) -> list[str]:
    """What the bash script gets back from ``certauth`` for the words typed so far."""
    env = dict(os.environ, _CERTAUTH_COMPLETE="bash_complete", COMP_WORDS=words)
    env["COMP_CWORD"] = str(cword)
    proc = subprocess.run(
        [str(CERTAUTH)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_the_installed_command_answers_the_scripts() -> None:
    assert _complete("certauth c", 1) == ["plain,cert", "plain,completion"]
    assert "plain,bundle" in _complete("certauth cert ", 2)
    # Choices are completed as the README spells them, whatever case was typed.
    assert _complete("certauth cert thumbprint x --format X5T", 5) == [
        "plain,x5t",
        "plain,x5t#S256",
    ]


# -- help ------------------------------------------------------------------------------------------


def test_cert_help_does_not_cut_command_summaries(capsys: Capsys) -> None:
    result = run_cli(capsys, "cert", "--help")
    assert result.code == 0
    commands = result.out.split("Commands:", 1)[1]
    assert "..." not in commands
    names = [line.split()[0] for line in commands.strip().splitlines()]
    assert names == ["bundle", "check", "create", "csr", "manifest", "rotate", "show", "thumbprint"]


def test_help_spells_x5t_s256_and_ps256_as_the_readme(capsys: Capsys) -> None:
    thumbprint = run_cli(capsys, "cert", "thumbprint", "--help").out
    assert "[sha1|sha256|x5t|x5t#S256]" in thumbprint
    assert "x5t#s256" not in thumbprint
    for command in ("assertion", "token"):
        text = run_cli(capsys, command, "--help").out
        assert "[RS256|PS256|ES256]" in text, command
        assert "ps256" not in text, command
