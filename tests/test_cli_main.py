"""The command-line entry point (`certauth`, `python -m certauth`): version, help, imports."""

from __future__ import annotations

import subprocess
import sys

import certauth


def test_version_is_reported_by_cli_and_module() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "certauth", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"certauth, version {certauth.__version__}"


def test_help_lists_commands_and_exit_codes() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "certauth", "--help"], capture_output=True, text=True, check=True
    )
    assert "cert" in out.stdout
    assert "Exit codes" in out.stdout


def test_help_does_not_import_httpx() -> None:
    code = (
        "import sys; from certauth.cli.main import main; "
        "rc = main(['--help']); assert 'httpx' not in sys.modules, 'httpx imported'; "
        "main(['cert', '--help']); assert 'httpx' not in sys.modules, 'httpx imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
