"""The ``certauth`` command (the console script, and ``python -m certauth``).

Most of a one-shot ``certauth token`` served from the file cache would be spent importing click
and the commands' modules, so :func:`main` first offers the run to
:mod:`certauth.cli._fast_token`, which serves only that case and imports no click; anything
else (and anything it is not sure of) runs through the click group in
:mod:`certauth.cli._group`, the authority for every command, option and message. Importing this
module imports no click: the group's names (``cli``, ``COMMANDS``, ...) are loaded from there
when first asked for.
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Iterator
from typing import Any

#: Whether :func:`main` tries the click-free cache hit first. Tests set it to False to run the
#: click path alone and compare (tests/test_fast_token.py); not a setting for users.
_try_fast_path = True

#: The names of :mod:`certauth.cli._group` this module has always offered.
_GROUP_NAMES = frozenset({"cli", "COMMANDS", "EXIT_CODES_HELP", "LazyGroup"})


def __getattr__(name: str) -> Any:
    if name in _GROUP_NAMES:
        from certauth.cli import _group

        return getattr(_group, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@contextlib.contextmanager
def _undecodable_bytes_written_back() -> Iterator[None]:
    """Let stdout write back the undecodable bytes of an argument: a file name holding a
    Latin-1 byte arrives as a lone surrogate (PEP 383), and is printed as the bytes the user
    gave instead of failing with UnicodeEncodeError (Python does the same in the C locale)."""
    stream: Any = sys.stdout  # typeshed's TextIO has no reconfigure(); TextIOWrapper does
    switched = False
    if isinstance(stream, io.TextIOWrapper) and stream.errors == "strict":
        with contextlib.suppress(ValueError, io.UnsupportedOperation):
            stream.reconfigure(errors="surrogateescape")
            switched = True
    try:
        yield
    finally:
        if switched:
            with contextlib.suppress(ValueError, io.UnsupportedOperation):
                stream.reconfigure(errors="strict")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; map certauth's typed errors to one stderr line and the documented exit code."""
    words = sys.argv[1:] if argv is None else list(argv)
    with _undecodable_bytes_written_back():
        if _try_fast_path and words[:1] == ["token"]:
            from certauth.cli._fast_token import serve_cached_token

            served = serve_cached_token(words[1:])
            if served is not None:
                return served
        from certauth.cli._group import run

        return run(argv)
