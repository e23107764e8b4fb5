"""certauth's loggers, which import :mod:`logging` only when a record may go somewhere.

Importing ``logging`` costs a process that gets one token and exits about 4% of what it must
execute at the least (docs/performance.md; ``concurrent.futures`` imports it too). While
``logging`` is not imported, nothing can have given it a handler or a level: the root logger's
level is WARNING and ``logging.lastResort`` takes only warnings and above, so a debug or info
record would be dropped. :class:`Logger` therefore skips ``debug`` and ``info`` until something
has imported ``logging`` (an application that configures it has), and imports it for a
``warning``, which ``lastResort`` prints to stderr as before. Records carry the caller's file,
line and function (``stacklevel``), as with a ``logging.Logger``.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import logging

__all__ = ["Logger"]


class Logger:
    """The parts of ``logging.getLogger(name)`` certauth uses, bound to ``name``."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        #: The ``logging`` name (``certauth``, ``certauth.retry``).
        self.name = name

    @property
    def logger(self) -> logging.Logger:
        """The ``logging.Logger`` itself (importing ``logging``): to add a handler or set a
        level."""
        import logging

        return logging.getLogger(self.name)

    def debug(self, msg: str, *args: object) -> None:
        """``Logger.debug``, skipped while ``logging`` is not imported."""
        if "logging" in sys.modules:
            self.logger.debug(msg, *args, stacklevel=2)

    def info(self, msg: str, *args: object) -> None:
        """``Logger.info``, skipped while ``logging`` is not imported."""
        if "logging" in sys.modules:
            self.logger.info(msg, *args, stacklevel=2)

    def warning(self, msg: str, *args: object) -> None:
        """``Logger.warning`` (printed by ``logging.lastResort`` where nothing is configured)."""
        self.logger.warning(msg, *args, stacklevel=2)
