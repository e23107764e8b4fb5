"""The command-line entry point (`certauth`, `python -m certauth`): version, help, imports."""

from __future__ import annotations

import subprocess
import sys

import pytest

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


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    from certauth.cli.main import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("group", [(), ("cert",)])
def test_bare_group_prints_its_formatted_help_on_stderr_with_exit_2(
    capsys: pytest.CaptureFixture[str], group: tuple[str, ...]
) -> None:
    code, out, err = _run(capsys, *group, "--help")
    assert code == 0
    help_text = out
    code, out, err = _run(capsys, *group)
    assert (code, out) == (2, "")
    # The same text as --help, lines and all: not squeezed into one error line.
    assert err == help_text
    assert err.startswith(f"Usage: {' '.join(('certauth', *group))} [OPTIONS] COMMAND [ARGS]...\n")
    assert "certauth: error:" not in err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["tokn"],
            "certauth: error: No such command 'tokn'; did you mean `token`? "
            "(see 'certauth --help')\n",
        ),
        (
            ["cert", "shw"],
            "certauth: error: No such command 'shw'; did you mean `show`? "
            "(see 'certauth cert --help')\n",
        ),
        (["xyzzy"], "certauth: error: No such command 'xyzzy'. (see 'certauth --help')\n"),
    ],
)
def test_unknown_command_suggests_the_closest(
    capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    assert _run(capsys, *argv) == (2, "", expected)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["token", "--scope"],
            "certauth: error: Option '--scope' requires an argument. "
            "(see 'certauth token --help')\n",
        ),
        (
            ["cert", "show", "--key"],
            "certauth: error: Option '--key' requires an argument. "
            "(see 'certauth cert show --help')\n",
        ),
        (
            ["cert", "show", "--bogus"],
            "certauth: error: No such option '--bogus'. (see 'certauth cert show --help')\n",
        ),
    ],
)
def test_misused_option_points_to_the_subcommand_help(
    capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    assert _run(capsys, *argv) == (2, "", expected)
