"""One keyed single flight, for threads and for asyncio tasks.

Concurrent callers asking for the same key share one piece of work: the first caller (the
leader) runs it, the others wait for its result or its exception instead of repeating it. This
is what keeps 64 threads on an empty cache at one token request, and a burst of tokens signed
by a new key at one JWKS fetch. Used by the credentials (per cache key) and the verifiers (per
key source).
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Hashable
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    import asyncio  # imported where used: a sync-only process never pays for it

__all__ = ["AsyncSingleFlight", "SingleFlight"]

T = TypeVar("T")


class _Outcome(Generic[T]):
    """What the leader's work came to, for the threads waiting on it. (Not a
    ``concurrent.futures.Future``: importing that module imports ``logging``, which a process
    that gets one token otherwise never needs; see :mod:`certauth._log`.)"""

    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: T | None = None
        self.error: BaseException | None = None

    def get(self) -> T:
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]  # set before done


class SingleFlight(Generic[T]):
    """Single flight for threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inflight: dict[Hashable, _Outcome[T]] = {}

    def run(self, key: Hashable, work: Callable[[], T], *, wait: bool = True) -> T | None:
        """Run ``work`` unless another thread is running it for ``key``; then wait for that
        outcome (its result, or its exception raised here), or with ``wait=False`` return
        ``None`` at once."""
        with self._lock:
            outcome = self._inflight.get(key)
            leader = outcome is None
            if outcome is None:
                outcome = self._inflight[key] = _Outcome()
        if not leader:
            return outcome.get() if wait else None
        try:
            outcome.result = work()
        except BaseException as exc:
            outcome.error = exc
            raise
        finally:
            with self._lock:
                del self._inflight[key]
            outcome.done.set()
        return outcome.result


class AsyncSingleFlight(Generic[T]):
    """Single flight for the tasks of one event loop."""

    def __init__(self) -> None:
        self._inflight: dict[Hashable, asyncio.Future[T]] = {}

    async def run(
        self, key: Hashable, work: Callable[[], Awaitable[T]], *, wait: bool = True
    ) -> T | None:
        """The asyncio twin of :meth:`SingleFlight.run`. When the leader is cancelled, its
        waiters are not: one of them takes over the work."""
        import asyncio

        while True:
            future = self._inflight.get(key)
            if future is None:
                break
            if not wait:
                return None
            # asyncio.wait never cancels what it waits for, and a CancelledError out of it is
            # this waiter's own: so a waiter cancelled together with the leader stops too.
            await asyncio.wait({future})
            if not future.cancelled():
                return future.result()
        future = self._inflight[key] = asyncio.get_running_loop().create_future()
        try:
            result = await work()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        else:
            future.set_result(result)
            return result
        finally:
            del self._inflight[key]
