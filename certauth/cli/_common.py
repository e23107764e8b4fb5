"""Pieces every CLI command shares: password sources, JSON output, the environment variables."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click

from certauth.errors import InvalidArgumentError, LocalInputError

F = TypeVar("F", bound=Callable[..., Any])

#: azure-identity's variable for the certificate password; used when no flag names a source.
PASSWORD_ENV = "AZURE_CLIENT_CERTIFICATE_PASSWORD"


def password_options(func: F) -> F:
    """Add ``--password-env VAR`` and ``--password-file FILE`` (passwords never come from argv)."""
    func = click.option(
        "--password-file",
        metavar="FILE",
        help="Read the password from the first line of FILE (newline stripped).",
    )(func)
    func = click.option(
        "--password-env",
        metavar="VAR",
        help=f"Read the password from environment variable VAR (default: {PASSWORD_ENV}).",
    )(func)
    return func


def read_password(
    password_env: str | None, password_file: str | None, *, use_default_env: bool = True
) -> str | None:
    """The password from ``--password-env`` / ``--password-file``, else the default variable.

    An explicitly named source that is missing, empty or not text is an error: a silent
    ``None`` would surface later as a misleading "wrong password", or (for ``cert create``)
    as a key written unencrypted although the user asked for a password.
    """
    if password_env and password_file:
        raise InvalidArgumentError("give either --password-env or --password-file, not both")
    if password_env:
        value = os.environ.get(password_env)
        if value is None:
            raise LocalInputError(
                f"--password-env {password_env}: the environment variable is not set; "
                "export it or name another variable"
            )
        if not value:
            raise LocalInputError(
                f"--password-env {password_env}: the environment variable is empty; "
                "put the password in it or name another variable"
            )
        return value
    if password_file:
        from certauth._files import read_first_line

        return read_first_line(password_file, what="password")
    if use_default_env:
        value = os.environ.get(PASSWORD_ENV)
        return value or None
    return None


def emit_json(payload: Any) -> None:
    """Print one JSON object on stdout (the ``--json`` contract)."""
    sys.stdout.write(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")


def warn(message: str) -> None:
    """A diagnostic on stderr (never stdout, which scripts parse)."""
    click.echo(f"certauth: warning: {message}", err=True)


#: Help shared by the commands that reach a server.
CA_FILE_HELP = (
    "Trust exactly the CA certificates in this PEM file for https endpoints, instead of the "
    "system store (as curl --cacert and requests' verify= do)."
)
TOTAL_TIMEOUT_HELP = (
    "Seconds for the whole call: every attempt and the waits between retries (default: no "
    "bound beyond the retries themselves)."
)


class _Echo(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            click.echo(record.getMessage(), err=True)
        except Exception:  # noqa: BLE001 - a log line must never fail the command
            self.handleError(record)


@contextlib.contextmanager
def show_retries() -> Iterator[None]:
    """While the block runs, print the library's retry lines (INFO on ``certauth.retry``:
    what failed, and when the next attempt runs) on stderr, without the user turning logging
    on: a command that waits out a failing server says why it is waiting."""
    from certauth._flow import retry_log

    handler = _Echo(logging.INFO)
    saved = retry_log.level
    retry_log.addHandler(handler)
    retry_log.setLevel(logging.INFO)
    try:
        yield
    finally:
        retry_log.removeHandler(handler)
        retry_log.setLevel(saved)
