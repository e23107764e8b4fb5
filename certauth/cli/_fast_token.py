"""``certauth token`` served from the file cache without importing click (issue 19).

A CI step runs ``certauth token`` once per job and usually finds its token in the file cache;
importing click and the commands' modules would then cost more than everything else the run
does. :func:`serve_cached_token` reads a strict, common subset of the command line itself and
serves the token when the file cache holds it; for anything else it returns ``None`` and the
click command runs, which is the authority for every message. It therefore never prints an
error, and never succeeds where the click command would fail or print something else:

* the options it reads are those of :data:`OPTIONS`, each given once (``--scope`` any number of
  times), as ``--opt VALUE`` or ``--opt=VALUE``; any other word (``--help``, ``--``, another
  option, an argument, a value that starts with ``-``) is declined;
* each value passes the check the click option's type makes (:mod:`certauth.cli._values`);
* the settings resolve as the click command resolves them, with the environment, and pass the
  same checks (:mod:`certauth.cli._token_settings`); environment variables that choose another
  cache or another kind of client (Redis, a client secret, a federated token, shell completion)
  are declined;
* the token is the one :func:`certauth._cache_lookup.stored_token` finds, through the same
  :func:`certauth.cli._token_settings.stored_token` the click command calls first.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from certauth.cli._token_settings import (
    TargetSettings,
    require_settings,
    stored_token,
    token_line,
    verbose_line,
)
from certauth.cli._values import (
    ALGS,
    COMPLETE_VAR,
    ENV_CACHE_NAMESPACE,
    ENV_CACHE_URL,
    ENV_CLIENT_SECRET,
    ENV_FEDERATED_TOKEN_FILE,
    MAX_TIMEOUT,
    MIN_TIMEOUT,
    check_path,
    check_text,
    check_url,
    choice_as_written,
    seconds_in_range,
)

#: The options read here: flag -> (the click parameter's name, the kind of value). A test
#: (tests/test_fast_token.py) checks each against ``certauth.cli.token.token``'s parameters.
OPTIONS: dict[str, tuple[str, str]] = {
    "--client-id": ("client_id", "text"),
    "--tenant": ("tenant", "text"),
    "--token-endpoint": ("token_endpoint", "url"),
    "--issuer": ("issuer", "url"),
    "--authority-host": ("authority_host", "host"),
    "--b2c-policy": ("b2c_policy", "text"),
    "--cert": ("cert_path", "path"),
    "--key": ("key_path", "path"),
    "--alg": ("alg", "alg"),
    "--scope": ("scopes", "texts"),
    "--ca-file": ("ca_file", "path"),
    "--timeout": ("timeout", "seconds"),
    "--total-timeout": ("total_timeout", "seconds"),
    "--output": ("output", "output"),
    "-o": ("output", "output"),
}
#: The ``--output`` forms served here (``json`` and ``curl-config`` go through click).
SERVED_OUTPUTS = ("token", "header", "env")
#: The token command's settings this path never takes (declined when given): they stay unset.
UNSET = (
    "send_chain",
    "password_env",
    "password_file",
    "pkcs11_module",
    "pin_env",
    "pin_file",
)
#: Variables that choose another cache or another kind of client, or ask click for completions.
DECLINED_ENVIRONMENT = (
    ENV_CACHE_URL,
    ENV_CACHE_NAMESPACE,
    ENV_CLIENT_SECRET,
    ENV_FEDERATED_TOKEN_FILE,
    COMPLETE_VAR,
)


class _Declined(Exception):
    """Not a command line this path serves."""


def _checked(kind: str, value: str) -> Any:
    """``value`` as the click option of ``kind`` converts it; :class:`ValueError` when it
    refuses it (or when this path does not serve it)."""
    if value.startswith("-"):
        raise _Declined  # click would take it as the value; it is rather a forgotten one
    if kind in {"text", "texts"}:
        return check_text(value)
    if kind == "path":
        return check_path(value)
    if kind in {"url", "host"}:
        return check_url(check_text(value), bare_host=kind == "host")
    if kind == "alg":
        alg = choice_as_written(value, ALGS)
        if alg is None:
            raise _Declined
        return alg
    if kind == "seconds":
        return seconds_in_range(value, MIN_TIMEOUT, MAX_TIMEOUT)
    if kind == "output" and value in SERVED_OUTPUTS:
        return value
    raise _Declined


def parse(words: list[str]) -> dict[str, Any]:
    """The options ``words`` (what follows ``token``) give, by parameter name, converted;
    :class:`_Declined` or :class:`ValueError` for anything outside the subset."""
    given: dict[str, Any] = {}
    rest = iter(words)
    for word in rest:
        flag, equals, value = word.partition("=") if word.startswith("--") else (word, "", "")
        if flag not in OPTIONS:
            raise _Declined
        if not equals:
            following = next(rest, None)
            if following is None:
                raise _Declined
            value = following
        name, kind = OPTIONS[flag]
        converted = _checked(kind, value)
        if kind == "texts":
            given[name] = (*given.get(name, ()), converted)
        elif name in given:
            raise _Declined  # click keeps the last value; a repeated option is rather a mistake
        else:
            given[name] = converted
    return given


def serve_cached_token(words: list[str]) -> int | None:
    """Print the token the file cache holds for ``certauth token WORDS`` and return 0, as the
    click command would; ``None`` (nothing printed) when this path does not serve the run."""
    try:
        return _serve(words)
    except KeyboardInterrupt:
        from certauth.cli._group import aborted

        return aborted(interrupted=True)


def _serve(words: list[str]) -> int | None:
    try:
        line, verbose = _cached_lines(words)
    except Exception:  # noqa: BLE001 - whatever it is, the click command decides and says it
        return None
    if line is None:
        return None
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except Exception:  # noqa: BLE001 - nothing was printed: the click command runs, and says it
        return None
    if verbose is not None:
        try:
            sys.stderr.write(verbose + "\n")
            sys.stderr.flush()
        except BrokenPipeError:
            raise SystemExit(1) from None  # what click does when its echo meets a closed pipe
    return 0


def _cached_lines(words: list[str]) -> tuple[str | None, str | None]:
    """The stdout and stderr lines for the cached token (``None``: not served here)."""
    if any(name in os.environ for name in DECLINED_ENVIRONMENT):
        return None, None
    try:
        given = parse(words)
    except (_Declined, ValueError):
        return None, None
    opts: dict[str, Any] = dict.fromkeys(name for name, _ in OPTIONS.values())
    opts.update(dict.fromkeys(UNSET))
    opts.update(given)
    scopes: tuple[str, ...] = opts.pop("scopes") or ()
    output: str = opts.pop("output") or "token"
    for unused in ("ca_file", "timeout", "total_timeout"):  # a cache hit makes no request
        opts.pop(unused)
    # No secret and no federated token: their variables are declined above.
    require_settings(scopes, opts, secret_sources=(), federated_sources=())
    from certauth.cache import FileTokenCache

    target = TargetSettings(**opts)
    token = stored_token(
        target, scopes, FileTokenCache(), bound=False, secret_env=None, secret_file=None
    )
    if token is None:
        return None, None
    return token_line(output, token.token_type, token.access_token), verbose_line(token.expires_on)
