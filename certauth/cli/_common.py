"""Pieces every CLI command shares: password sources, JSON output, the environment variables."""

from __future__ import annotations

import contextlib
import functools
import math
import os
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import click

# Re-exported (the commands import them from here); written in _values, which is click-free.
from certauth.cli._values import MAX_TIMEOUT as MAX_TIMEOUT
from certauth.cli._values import (
    PASSWORD_ENV,
    BadValue,
    UsageProblem,
    check_path,
    check_text,
    check_url,
    choice_as_written,
    is_control,
    seconds_in_range,
)
from certauth.cli._values import env_value as env_value
from certauth.cli._values import read_password as read_password
from certauth.errors import CertauthError, TokenRequestError

F = TypeVar("F", bound=Callable[..., Any])

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

    #: click 8.2+ makes ParamType generic; 8.1 (still supported) does not subscript it.
    ParamType = click.ParamType[Any, Any]
    StrChoice = click.Choice[str]
else:
    ParamType = click.ParamType
    StrChoice = click.Choice


def password_options(func: F) -> F:
    """Add ``--password-env VAR`` and ``--password-file FILE`` (passwords never come from argv)."""
    func = click.option(
        "--password-file",
        metavar="FILE",
        type=PathText(),
        help="Read the password from the first line of FILE (newline stripped).",
    )(func)
    func = click.option(
        "--password-env",
        metavar="VAR",
        type=VariableName(),
        help=f"Read the password from environment variable VAR (default: {PASSWORD_ENV}).",
    )(func)
    return func


def emit_json(payload: Any) -> None:
    """Print one JSON object on stdout (the ``--json`` contract)."""
    import json

    sys.stdout.write(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")


#: A refusal's description is printed up to this many lines of this many characters: enough
#: for any Entra ID text, bounded against a server that sends a megabyte of it.
_MAX_DESCRIPTION_LINES = 20
_MAX_LINE_CHARS = 1000


def refusal_report(exc: TokenRequestError) -> list[str]:
    """The lines the CLI prints for a refusal (exit 4): a summary, then one field per line,
    what Microsoft support asks for (AADSTS code, description, trace and correlation ids,
    timestamp) and the hint. The description's lines are printed whole; Entra ID's
    ``Trace ID:``/``Correlation ID:``/``Timestamp:`` lines are left out, as the fields say
    the same."""
    from certauth.protocol import description_lines, shorten

    if exc.url and exc.error:
        summary = f"{exc.url}: the server refused the token request: {exc.error}"
    else:
        summary = exc.message
    lines = [f"certauth: error: {_printable(cli_wording(summary))}"]
    described = description_lines(exc.error_description)
    if len(described) > _MAX_DESCRIPTION_LINES:
        described = [*described[:_MAX_DESCRIPTION_LINES], "..."]
    described = [_printable(shorten(line, _MAX_LINE_CHARS)) for line in described]
    fields = [
        ("aadsts", exc.aadsts),
        ("error_description", "\n    ".join(described) if described else None),
        ("trace_id", exc.trace_id),
        ("correlation_id", exc.correlation_id),
        ("timestamp", exc.timestamp),
        ("hint", cli_wording(exc.hint) if exc.hint else None),
    ]
    for name, value in fields:
        if value:
            lines.append(f"  {name}: {value if name == 'error_description' else _printable(value)}")
    return lines


def refusal_json(exc: TokenRequestError) -> str:
    """A refusal as one line of JSON (``--json``/``--output json``): the error's fields."""
    import json

    fields = exc.to_dict()
    if fields["hint"]:
        fields["hint"] = cli_wording(fields["hint"])
    return json.dumps(fields, ensure_ascii=True)


def _printable(text: str) -> str:
    """``text`` with control characters (a server's escape sequences, line breaks) shown as
    escapes, so that what a server sent cannot rewrite the terminal."""
    return "".join(c.encode("unicode_escape").decode("ascii") if is_control(c) else c for c in text)


def warn(message: str) -> None:
    """A diagnostic on stderr (never stdout, which scripts parse), in the CLI's words."""
    click.echo(f"certauth: warning: {cli_wording(message)}", err=True)


#: What the CLI calls each library keyword a library message names as the fix (``key_path=``):
#: a library caller is told the keyword, a CLI user the option (and the variable it falls back
#: to), from the one message.
CLI_WORDING = {
    "key_path": "--key",
    "key_type": "--key",
    "password": "--password-env VAR / --password-file FILE (or AZURE_CLIENT_CERTIFICATE_PASSWORD)",
    "alg": "--alg",
    "lifetime": "--lifetime",
    "assertion_lifetime": "--lifetime",
    "client_id": "--client-id",
    "tenant_id": "--tenant",
    "token_endpoint": "--token-endpoint",
    "issuer": "--issuer",
    "jwks_uri": "--jwks-uri",
    "graph_url": "--graph-url",
    "app_object_id": "--app-object-id",
    "out_dir": "--out",
    "grace": "--grace",
    "propagation_timeout": "--propagation-timeout",
    "authority": "--authority-host",
    "b2c_policy": "--b2c-policy",
    "verify": "--ca-file",
    "days": "--days",
    "cache": "--cache",
    "pin": "--pin-env VAR / --pin-file FILE",
    "module": "--pkcs11-module",
    "client_certificate": "--client-cert",
    "forwarded_client_cert": "--forwarded-client-cert",
    "dpop_proof": "--dpop-proof",
    "htm": "--htm",
    "htu": "--htu",
    "dpop_nonce": "--dpop-nonce",
    "scheme": "--scheme",
    "dpop": "--dpop",
}
#: Whole phrases first: the keyword's value is what the option spells differently.
_CLI_PHRASES = {"cache=None": "--no-cache", "mtls=True": "--mtls", "dpop=True": "--dpop"}


def cli_wording(message: str) -> str:
    """``message`` with each library keyword (``alg=PS256``, ``key_path=``) replaced by the CLI
    option that sets it (``--alg PS256``, ``--key``); see :data:`CLI_WORDING`."""
    import re

    for phrase, spelled in _CLI_PHRASES.items():
        message = message.replace(phrase, spelled)

    def option(match: re.Match[str]) -> str:
        value = match["value"]
        # "alg=PS256" -> "--alg PS256"; "key_path=," / "key_path= takes" -> "--key," / "--key takes"
        return CLI_WORDING[match["name"]] + (
            f" {value}" if value and value not in ",;:)." else value
        )

    # Not inside a word, a URL's query or a path: "?client_id=" is a server's business.
    keyword = rf"(?<![\w.?&/=-])(?P<name>{'|'.join(CLI_WORDING)})=(?P<value>\S?)"
    return re.sub(keyword, option, message)


#: Help shared by the commands that reach a server.
CA_FILE_HELP = (
    "Trust exactly the CA certificates in this PEM file for https endpoints, instead of the "
    "system store (as curl --cacert and requests' verify= do)."
)
TOTAL_TIMEOUT_HELP = (
    "Seconds for the whole call: every attempt and the waits between retries (default: no "
    "bound beyond the retries themselves)."
)


@contextlib.contextmanager
def show_retries() -> Iterator[None]:
    """While the block runs, print the library's retry lines (INFO on ``certauth.retry``:
    what failed, and when the next attempt runs) on stderr, without the user turning logging
    on: a command that waits out a failing server says why it is waiting."""
    import logging  # here: a command that reaches no server never imports it

    from certauth._flow import retry_log as retry

    retry_log = retry.logger

    class _Echo(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                click.echo(record.getMessage(), err=True)
            except Exception:  # noqa: BLE001 - a log line must never fail the command
                self.handleError(record)

    handler = _Echo(logging.INFO)
    saved = retry_log.level
    retry_log.addHandler(handler)
    retry_log.setLevel(logging.INFO)
    try:
        yield
    finally:
        retry_log.removeHandler(handler)
        retry_log.setLevel(saved)


@contextlib.contextmanager
def usage_errors() -> Iterator[None]:
    """Report a :class:`~certauth.cli._values.UsageProblem` (a rule written without click) as
    click's usage error: one line naming the command's help, exit 2."""
    try:
        yield
    except UsageProblem as exc:
        raise click.UsageError(str(exc)) from None


# -- command groups ----------------------------------------------------------------------------


class GroupHelpRequested(click.UsageError):
    """A group ran without a subcommand (``certauth``, ``certauth cert``): a usage error (exit
    2, as click 8.2+ and POSIX utilities treat a missing operand) whose text is the group's
    formatted help, printed as it is, not squeezed into an error line."""

    def __init__(self, ctx: click.Context) -> None:
        super().__init__(ctx.get_help(), ctx)


class HelpfulGroup(click.Group):
    """A click group that prints its help when run bare and suggests the command meant."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Raise :class:`GroupHelpRequested` for a bare group (click 8.1 printed the help
        with exit 0, 8.2+ raises its own error: one behaviour for every click we support)."""
        if not args and self.no_args_is_help and not ctx.resilient_parsing:
            raise GroupHelpRequested(ctx)
        return super().parse_args(ctx, args)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """The command ``args[0]`` names; an unknown one is refused with the closest name."""
        name = args[0] if args else ""
        if (
            name
            and not name.startswith("-")
            and not ctx.resilient_parsing
            and self.get_command(ctx, name) is None
        ):
            import difflib

            close = difflib.get_close_matches(name, self.list_commands(ctx), n=1, cutoff=0.6)
            if close:
                ctx.fail(f"No such command {name!r}; did you mean `{close[0]}`?")
        return super().resolve_command(ctx, args)


# -- parameter types: a bad value is a usage error that names the option ------------------------


class Text(ParamType):
    """A string option that must hold text: not empty, not only spaces, and decodable.

    An empty value is almost always a script's unset variable (``--tenant "$TENANT"``); taking
    it as "not given" would silently fall back to the environment or a default. Undecodable
    argv bytes reach Python as lone surrogates (PEP 383) and cannot be sent anywhere.
    """

    name = "text"

    def __init__(self, *, example: str | None = None) -> None:
        #: Shown when the value is empty: what a good one looks like.
        self.example = example

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The value, or a usage error naming the option."""
        if not isinstance(value, str):
            return value
        if self.example:
            hint = f", e.g. {self.example}"
        elif isinstance(param, click.Argument):
            hint = ""
        else:
            hint = " or leave the option out"
        try:
            return check_text(value, empty_hint=hint)
        except BadValue as exc:
            self.fail(str(exc), param, ctx)


class PathText(ParamType):
    """A path option: not empty (``""`` would mean the current directory or nothing at all).

    Undecodable bytes are allowed: a file name is bytes, and Python hands them back to the
    operating system unchanged.
    """

    name = "path"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The value, or a usage error naming the option."""
        if not isinstance(value, str):
            return value
        hint = "" if isinstance(param, click.Argument) else " or leave the option out"
        try:
            return check_path(value, empty_hint=hint)
        except BadValue as exc:
            self.fail(str(exc), param, ctx)


class VariableName(Text):
    """The name of an environment variable (``--password-env VAR``): never a value."""

    name = "variable"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The name, or a usage error naming the option."""
        value = super().convert(value, param, ctx)
        if isinstance(value, str) and ("=" in value or "\x00" in value):
            # POSIX.1-2017 section 8.1: names do not contain '='; a value here is a mistake.
            self.fail(
                "not an environment variable name (it holds '='); give the variable's name, "
                "e.g. CERT_PASSWORD, not its value",
                param,
                ctx,
            )
        return value


class Url(Text):
    """A URL option: text that a URL parser can split (scheme, host, port).

    Only the parsing is checked here; what makes a URL acceptable (https, loopback, length,
    labels) is :mod:`certauth.authority`'s rule, applied where the URL is used.
    """

    name = "url"

    def __init__(self, *, bare_host: bool = False) -> None:
        super().__init__()
        #: ``--authority-host`` takes ``login.microsoftonline.us`` as well as a URL.
        self.bare_host = bare_host

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The URL unchanged, or a usage error naming the option."""
        value = super().convert(value, param, ctx)
        if not isinstance(value, str):
            return value
        try:
            return check_url(value, bare_host=self.bare_host)
        except BadValue as exc:
            self.fail(str(exc), param, ctx)


class SpelledChoice(StrChoice):
    """A case-insensitive choice whose help and errors spell the choices as they are written
    (``x5t#S256``, ``PS256``, as the README and RFC 7515 section 4.1.8 spell them); click 8.2+
    shows a case-insensitive choice case-folded (``x5t#s256``). The value returned is the
    choice as written, whatever case was typed."""

    def __init__(self, choices: tuple[str, ...] | list[str]) -> None:
        super().__init__(choices, case_sensitive=False)

    def _spelled(self) -> str:
        return "|".join(str(choice) for choice in self.choices)

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        """``[sha1|sha256|x5t|x5t#S256]``: the choices as written."""
        if param.required and param.param_type_name == "argument":
            return f"{{{self._spelled()}}}"
        return f"[{self._spelled()}]"

    def shell_complete(
        self, ctx: click.Context, param: click.Parameter, incomplete: str
    ) -> list[CompletionItem]:
        """The choices that start with ``incomplete`` (any case), as written."""
        from click.shell_completion import CompletionItem

        typed = incomplete.lower()
        return [
            CompletionItem(str(choice))
            for choice in self.choices
            if str(choice).lower().startswith(typed)
        ]

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The choice as written, or a usage error naming the option and the choices."""
        if not isinstance(value, str):
            return super().convert(value, param, ctx)
        found = choice_as_written(value, [str(choice) for choice in self.choices])
        if found is None:
            shown = value if len(value) <= 80 else f"{value[:60]}..."
            choices = ", ".join(str(choice) for choice in self.choices)
            self.fail(f"{shown!r} is not one of {choices}", param, ctx)
        return found


class FiniteFloatRange(click.FloatRange):
    """A float range (bounds included) that also refuses ``nan`` (``FloatRange`` lets it
    through: every comparison with NaN is false) and, through its bounds, ``inf``. What it
    accepts is :func:`certauth.cli._values.seconds_in_range`; click words what it refuses too."""

    def __init__(self, *, min: float, max: float) -> None:
        super().__init__(min=min, max=max)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The number, or a usage error naming the option."""
        assert self.min is not None
        assert self.max is not None
        try:
            return seconds_in_range(value, self.min, self.max)
        except ValueError as exc:  # BadValue too
            super().convert(value, param, ctx)  # click's words: not a number, out of range
            self.fail(str(exc), param, ctx)  # what click lets through: nan


class Duration(ParamType):
    """Seconds, written ``90``, ``90s``, ``10m``, ``1h`` or ``2d`` (as ``step``/``az`` users
    write durations); finite, 0 or more, at most ``maximum`` seconds."""

    name = "duration"
    _UNITS: ClassVar[dict[str, int]] = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}

    def __init__(self, maximum: float, minimum: float = 0.0) -> None:
        self.maximum = maximum
        self.minimum = minimum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """Seconds as a float, or a usage error naming the option and the forms it takes."""
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            seconds = float(value)
        else:
            text = str(value).strip().lower()
            unit = text[-1:] if text[-1:] in "smhd" else ""
            try:
                seconds = float(text[: len(text) - len(unit)]) * self._UNITS[unit]
            except ValueError:
                seconds = math.nan
        shown = str(value)[:40]
        if not math.isfinite(seconds) or seconds < 0:
            self.fail(f"{shown!r} is not a duration (e.g. 90, 90s, 10m, 1h, 2d)", param, ctx)
        if seconds > self.maximum:
            self.fail(f"{shown!r} is more than {self.maximum:.0f} seconds", param, ctx)
        if seconds < self.minimum:
            self.fail(f"{shown!r} is less than {self.minimum:.0f} seconds", param, ctx)
        return seconds


# -- errors about a file or value: name the option it came from ----------------------------------


def names_options(func: F) -> F:
    """Make an error about a value the user gave name the option that gave it.

    Library errors name the file or URL (``/etc/app.pem: no such file; ...``) but not the
    option, which only the CLI knows: ``--cert /etc/app.pem: no such file; ...``. Apply it
    under the ``click.option`` decorators of a command.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CertauthError as exc:
            context = click.get_current_context(silent=True)
            if context is not None:
                _prefix_option(exc, context)
                if isinstance(exc, TokenRequestError) and _json_requested(context):
                    # The refusal's fields as JSON on stderr (stdout holds only data), and
                    # the refusal's exit code.
                    click.echo(refusal_json(exc), err=True)
                    raise click.exceptions.Exit(exc.exit_code) from None
            raise

    return wrapper  # type: ignore[return-value]


def _json_requested(context: click.Context) -> bool:
    """Whether the command was asked for JSON (``--json``, ``--output json``)."""
    return bool(context.params.get("as_json")) or context.params.get("output") == "json"


def _prefix_option(exc: CertauthError, context: click.Context) -> None:
    message = exc.message
    if message.startswith("--"):
        return
    path = getattr(exc, "path", None)
    for param in context.command.params:
        if not isinstance(param, click.Option) or param.is_flag or param.name is None:
            continue
        given = context.params.get(param.name)
        for value in given if isinstance(given, tuple) else (given,):
            if not isinstance(value, str) or not value:
                continue
            # A CLIENT_ID=FILE pair names its file after the '='; a library may have
            # normalised a path ("dir/" -> "dir") or made it absolute (cert rotate's state).
            right = value.partition("=")[2].strip()
            candidates = {value, right, os.path.normpath(value), os.path.abspath(value)} - {""}
            if path in candidates or any(message.startswith(f"{c}:") for c in candidates):
                flag = max(param.opts, key=len)
                exc.message = f"{flag} {message}"
                exc.args = (exc.message,)
                return
