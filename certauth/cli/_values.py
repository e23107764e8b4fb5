"""What the command line's values must be, without click: the checks behind the option types of
:mod:`certauth.cli._common` (``Text``, ``PathText``, ``Url``, ``SpelledChoice``,
``FiniteFloatRange``), the environment variables the commands read, and the password sources.

``certauth token`` served from the file cache runs before click is imported
(:mod:`certauth.cli._fast_token`) and must accept exactly what the click command accepts: both
call these functions, so each rule is written here once. A refused value raises
:class:`BadValue` (its text is the message without the option's name, which the click type adds);
a refused combination of settings raises :class:`UsageProblem`, which the click side reports as
a usage error.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

# -- environment variables (azure-identity's names, so existing pipelines work unchanged) -------

ENV_TENANT = "AZURE_TENANT_ID"
ENV_CLIENT_ID = "AZURE_CLIENT_ID"
ENV_CERT_PATH = "AZURE_CLIENT_CERTIFICATE_PATH"
ENV_AUTHORITY_HOST = "AZURE_AUTHORITY_HOST"
ENV_SEND_CHAIN = "AZURE_CLIENT_SEND_CERTIFICATE_CHAIN"
ENV_FEDERATED_TOKEN_FILE = "AZURE_FEDERATED_TOKEN_FILE"
ENV_CLIENT_SECRET = "AZURE_CLIENT_SECRET"
#: azure-identity's variable for the certificate password; used when no flag names a source.
PASSWORD_ENV = "AZURE_CLIENT_CERTIFICATE_PASSWORD"
#: ``certauth token``'s Redis cache (``--cache``, ``--cache-namespace``).
ENV_CACHE_URL = "CERTAUTH_CACHE_URL"
ENV_CACHE_NAMESPACE = "CERTAUTH_CACHE_NAMESPACE"
#: Set: ``certauth token`` says on stderr how long its token stays valid.
ENV_VERBOSE = "CERTAUTH_VERBOSE"
#: The variable click's completion scripts set when they call ``certauth`` back
#: (``_{PROG_NAME}_COMPLETE``, click's documented naming); the group is run with this name.
COMPLETE_VAR = "_CERTAUTH_COMPLETE"

#: Longest ``--timeout`` (seconds per HTTP request): an hour is already far past any useful
#: wait, and a huge value overflows the clock arithmetic of the deadlines.
MAX_TIMEOUT = 3600.0
#: Shortest ``--timeout`` / ``--total-timeout``.
MIN_TIMEOUT = 0.1
#: ``--alg``: the assertion algorithms, as RFC 7518 spells them.
ALGS = ("RS256", "PS256", "ES256")


class BadValue(ValueError):
    """An option's value is refused; the text says why (the option is named by the caller)."""


class UsageProblem(Exception):
    """Settings that cannot go together, or a required one missing: a usage error (exit 2)."""


def env_value(name: str) -> str | None:
    """The value of environment variable ``name``, stripped; an empty one counts as unset
    (azure-identity lets an empty AZURE_CLIENT_SECRET override a valid certificate path;
    certauth does not)."""
    value = os.environ.get(name, "").strip()
    return value or None


def env_flag(name: str) -> bool:
    """Read a boolean variable strictly: ``false``/``0``/``no`` is False (azure-identity's
    ``bool(str)`` turns ``"false"`` into True)."""
    value = (env_value(name) or "").lower()
    if value in {"", "0", "false", "no", "off"}:
        return False
    if value in {"1", "true", "yes", "on"}:
        return True
    raise UsageProblem(f"{name}={os.environ.get(name)!r}: use true or false")


# -- option values ------------------------------------------------------------------------------


def is_control(char: str) -> bool:
    """Unicode category Cc (C0, DEL, C1), without importing unicodedata at start-up."""
    code = ord(char)
    return code < 0x20 or 0x7F <= code < 0xA0


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_text(value: str, *, empty_hint: str = "") -> str:
    """``value`` if it holds text: not empty, not only spaces, decodable (undecodable argv
    bytes reach Python as lone surrogates, PEP 383, and cannot be sent anywhere), no control
    character. ``empty_hint`` ends the message for an empty value."""
    if not value.strip():
        raise BadValue(f"the value is empty; give one{empty_hint}")
    if not _is_text(value):
        raise BadValue(
            "the value holds bytes that are not UTF-8 text; check the argument's encoding"
        )
    if any(is_control(c) for c in value):
        raise BadValue(
            "the value holds a control character (a line break, tab or escape); check the quoting"
        )
    return value


def check_path(value: str, *, empty_hint: str = "") -> str:
    """``value`` if it is not empty (``""`` would mean the current directory or nothing at
    all); undecodable bytes are allowed, a file name is bytes."""
    if not value:
        raise BadValue(f"the path is empty; give a path{empty_hint}")
    return value


def check_url(value: str, *, bare_host: bool = False) -> str:
    """``value`` (already :func:`check_text`-ed) if a URL parser can split it (scheme, host,
    port); ``bare_host``: a host alone is taken as ``https://HOST``. Only the parsing is
    checked: what makes a URL acceptable is :mod:`certauth.authority`'s rule."""
    text = value.strip()
    if bare_host and "://" not in text:
        text = f"https://{text}"
    try:
        from urllib.parse import urlsplit  # here: the CLI's start-up never pays for it

        parts = urlsplit(text)
        _ = parts.port  # a port that is not a number in 0-65535 raises ValueError
    except ValueError as exc:
        raise BadValue(f"not a valid URL ({exc}); write it as https://HOST/PATH") from None
    return value


def choice_as_written(value: str, choices: Sequence[str]) -> str | None:
    """The choice ``value`` names, whatever its case (compared case-folded, as click compares a
    case-insensitive choice), as written in ``choices``; ``None`` for none."""
    folded = value.casefold()
    return next((choice for choice in choices if choice.casefold() == folded), None)


def seconds_in_range(value: str | float, minimum: float, maximum: float) -> float:
    """``value`` as a number of seconds from ``minimum`` to ``maximum`` (both included):
    finite (``nan`` compares false with every bound, ``inf`` is out of range)."""
    number = float(value)
    if not math.isfinite(number):
        raise BadValue(f"{value!r} is not a finite number of seconds")
    if not minimum <= number <= maximum:
        raise BadValue(f"{number} is not in the range {minimum}<=x<={maximum}")
    return number


# -- passwords ----------------------------------------------------------------------------------


def read_password(
    password_env: str | None,
    password_file: str | None,
    *,
    use_default_env: bool = True,
    flags: tuple[str, str] = ("--password-env", "--password-file"),
    what: str = "password",
) -> str | None:
    """The password from ``--password-env`` / ``--password-file``, else the default variable.

    ``flags`` names the two options in messages (``cert bundle`` also has
    ``--key-password-env`` / ``--key-password-file``). An explicitly named source that is
    missing, empty or not text is an error: a silent
    ``None`` would surface later as a misleading "wrong password", or (for ``cert create``)
    as a key written unencrypted although the user asked for a password.
    """
    from certauth.errors import InvalidArgumentError, LocalInputError

    if password_env and password_file:
        raise InvalidArgumentError(f"give either {flags[0]} or {flags[1]}, not both")
    if password_env:
        value = os.environ.get(password_env)
        if value is None:
            raise LocalInputError(
                f"{flags[0]} {password_env}: the environment variable is not set; "
                "export it or name another variable"
            )
        if not value:
            raise LocalInputError(
                f"{flags[0]} {password_env}: the environment variable is empty; "
                f"put the {what} in it or name another variable"
            )
        return value
    if password_file:
        from certauth._files import read_first_line

        return read_first_line(password_file, what=what)
    if use_default_env:
        value = os.environ.get(PASSWORD_ENV)
        return value or None
    return None
