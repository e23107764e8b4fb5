"""The emulator's clock: real time plus an offset that tests can move.

Every time-dependent rule in the emulator (assertion ``exp``/``nbf``, certificate and secret
validity, access-token ``iat``/``exp``, the strict-mode replay window) reads this clock, so a test
can move time without sleeping.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable

__all__ = ["Clock"]

#: What a clock source may return: seconds since the epoch, or an aware ``datetime``.
ClockSource = Callable[[], "float | dt.datetime"]


class Clock:
    """A thread-safe clock: ``source()`` (default :func:`time.time`) plus an adjustable offset.

    ``advance(seconds)`` moves it forward (or back, with a negative number); ``set(when)`` makes
    it read ``when`` now and keep ticking from there.
    """

    def __init__(self, source: ClockSource | None = None) -> None:
        self._source: ClockSource = source or time.time
        self._offset = 0.0
        self._lock = threading.Lock()

    def _source_seconds(self) -> float:
        value = self._source()
        if isinstance(value, dt.datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=dt.timezone.utc)
            return value.timestamp()
        return float(value)

    def time(self) -> float:
        """Seconds since the epoch, as the emulator sees it."""
        with self._lock:
            offset = self._offset
        return self._source_seconds() + offset

    def now(self) -> dt.datetime:
        """The emulator's current time (timezone-aware UTC)."""
        return dt.datetime.fromtimestamp(self.time(), dt.timezone.utc)

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (backwards when negative)."""
        with self._lock:
            self._offset += float(seconds)

    def set(self, when: dt.datetime) -> None:
        """Make the clock read ``when`` now (a naive ``datetime`` is taken as UTC)."""
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.timezone.utc)
        with self._lock:
            self._offset = when.timestamp() - self._source_seconds()

    def reset(self) -> None:
        """Drop any offset: the clock follows its source again."""
        with self._lock:
            self._offset = 0.0
