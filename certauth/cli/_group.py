"""The ``certauth`` click group, whose subcommands are imported only when used, and the mapping
of every error to one stderr line and the documented exit code.

Lazy loading keeps ``certauth --help`` and ``certauth cert ...`` from importing httpx, the
emulator or anything else they do not need (start-up time is part of every CI step).
:mod:`certauth.cli.main` (the console script) imports this module only when the run is not a
token served from the file cache (:mod:`certauth.cli._fast_token`).
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from typing import Any

import click

from certauth._version import __version__
from certauth.cli._common import GroupHelpRequested, HelpfulGroup
from certauth.cli._values import COMPLETE_VAR

#: name -> ("module:attribute", one-line help shown by ``certauth --help``)
COMMANDS: dict[str, tuple[str, str]] = {
    "cert": ("certauth.cli.cert:cert", "Create and inspect certificates for app registrations."),
    "assertion": (
        "certauth.cli.token:assertion",
        "Print a signed client assertion (RFC 7523 JWT).",
    ),
    "token": ("certauth.cli.token:token", "Get an access token with a certificate."),
    "dpop-proof": (
        "certauth.cli.dpop:dpop_proof",
        "Print a DPoP proof (RFC 9449) for one request.",
    ),
    "demo": ("certauth.cli.demo:demo", "Run the main job end to end against a local emulator."),
    "emulator": ("certauth.cli.emulator:emulator", "Run a local Entra ID tenant for tests."),
    "decode": ("certauth.cli.verify:decode", "Show a token's header and claims (no verification)."),
    "verify": ("certauth.cli.verify:verify", "Verify an access token (signature, iss, aud, exp)."),
    "completion": (
        "certauth.cli.completion:completion",
        "Print the shell completion script (bash, zsh, fish).",
    ),
}

EXIT_CODES_HELP = """\b
Exit codes:
  0  ok
  1  unexpected error (a bug: please report it)
  2  usage error (a missing or invalid option)
  3  bad local input (file, password, key/certificate mismatch, config)
  4  the server refused the request (OAuth error; AADSTS code, trace id and hint shown)
  5  transport failure (connect, timeout, TLS, 5xx after retries, not a token response)
  6  the token failed verification
  7  certificate expires within the warning window (cert check)
  8  certificate expired or not yet valid (cert check)
"""


class LazyGroup(HelpfulGroup):
    """A click group that imports a subcommand's module only when that subcommand runs."""

    def __init__(self, *args: Any, lazy: dict[str, tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self._lazy:
            target, _ = self._lazy[cmd_name]
            module_name, attr = target.split(":")
            command = getattr(importlib.import_module(module_name), attr)
            if not isinstance(command, click.Command):  # pragma: no cover - wiring bug
                raise TypeError(f"{target} is not a click command")
            return command
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help comes from the table above, so listing commands imports nothing.
        rows = [(name, self._lazy[name][1]) for name in sorted(self._lazy)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(
    cls=LazyGroup,
    lazy=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EXIT_CODES_HELP,
)
@click.version_option(__version__, "--version", prog_name="certauth")
def cli() -> None:
    """Authenticate to OAuth2 / Microsoft Entra ID with certificates instead of secrets.

    \b
    Example:
      certauth cert create --subject "CN=billing-api" --out ./certs
    """


#: A run of this many non-space characters in an error line is elided (a 100,000-character
#: value pasted by mistake would otherwise fill the terminal).
_LONGEST_WORD = 200


def _one_line(message: str, *, squeeze: bool = False) -> str:
    """``message`` on one line (``squeeze``: every run of spaces made one, as click's wrapped
    texts need), with any over-long run of characters cut to its start and end."""

    def cut(match: re.Match[str]) -> str:
        word = match[0]
        return f"{word[:80]}...[{len(word) - 120} characters]...{word[-40:]}"

    text = " ".join(message.split() if squeeze else message.splitlines())
    return re.sub(rf"\S{{{_LONGEST_WORD},}}", cut, text)


def _command_path(argv: list[str] | None) -> str:
    """The command ``argv`` names (``certauth cert show``), for a usage error click raised
    without a context: an option's missing value is found while the subcommand's context is
    still being made, and its help is the one to point to, not the top-level one."""
    command: click.Command = cli
    path = ["certauth"]
    words = iter(sys.argv[1:] if argv is None else argv)
    while isinstance(command, click.Group):
        # The groups take no option with a value, so the first word that is not an option
        # names the subcommand.
        name = next((word for word in words if not word.startswith("-")), None)
        found = command.get_command(click.Context(command), name) if name else None
        if found is None:
            break
        command = found
        path.append(name or "")
    return " ".join(path)


def aborted(*, interrupted: bool) -> int:
    """Say that the command was aborted; its exit code. ``interrupted``: by a Ctrl-C that
    click did not see (it closes the terminal's ``^C`` echo with a blank line first)."""
    if interrupted:
        click.echo(err=True)
    click.echo("certauth: aborted", err=True)
    return 130


def run(argv: list[str] | None) -> int:
    """Run the click group; map certauth's typed errors to one stderr line and the documented
    exit code."""
    from certauth.cli._common import cli_wording, refusal_report
    from certauth.errors import CertauthError, TokenRequestError

    try:
        # Without standalone mode click returns a command's exit code instead of exiting.
        result = cli.main(
            args=argv, prog_name="certauth", standalone_mode=False, complete_var=COMPLETE_VAR
        )
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except GroupHelpRequested as exc:
        # `certauth`, `certauth cert`: the formatted help, on stderr because it is exit 2.
        click.echo(exc.format_message(), err=True)
        return exc.exit_code
    except click.UsageError as exc:
        # One line, like every other error: what is wrong and where the help is.
        where = exc.ctx.command_path if exc.ctx else _command_path(argv)
        message = _one_line(exc.format_message(), squeeze=True)
        click.echo(f"certauth: error: {message} (see '{where} --help')", err=True)
        return exc.exit_code
    except click.ClickException as exc:
        click.echo(f"certauth: error: {_one_line(exc.format_message(), squeeze=True)}", err=True)
        return exc.exit_code
    except click.Abort:
        return aborted(interrupted=False)
    except TokenRequestError as exc:
        # Several lines on purpose: what Microsoft support asks for, one field per line.
        click.echo("\n".join(refusal_report(exc)), err=True)
        return exc.exit_code
    except CertauthError as exc:
        click.echo(f"certauth: error: {_one_line(cli_wording(str(exc)))}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("certauth: interrupted", err=True)
        return 130
    except BrokenPipeError:
        # `certauth ... | head`: the reader went away; not an error worth a traceback.
        sys.stderr.close()
        return 0
    except Exception as exc:
        if os.environ.get("CERTAUTH_DEBUG"):
            raise
        click.echo(
            f"certauth: unexpected error: {type(exc).__name__}: {str(exc)[:200]} "
            "(set CERTAUTH_DEBUG=1 for a traceback and please report it)",
            err=True,
        )
        return 1
    return result if isinstance(result, int) else 0
