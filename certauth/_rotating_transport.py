"""httpx transports whose connections follow a rotated TLS client certificate (mutual TLS).

A credential made with ``mtls=True`` loads a certificate rotated on disk into its TLS context:
new connections present the new one. A kept-alive connection opened before goes on presenting
the old one for as long as it lives, and on it an API refuses every token bound to the new one
(RFC 8705 section 3), the retried request included (it takes the same connection); on a busy
client such a connection never idles out. A token request could likewise reuse the connection
the discovery document came over and get a token bound to the old certificate.

So these transports keep one inner transport (one pool of connections) per certificate: when
the credential's certificate changes, the next request goes through a new inner transport, and
the old one is closed as soon as no response of its is still being read. They serve the httpx
clients: ``http_client()`` (sync and async) and the async credential's own; certauth's own sync
client ties each kept-alive connection to the TLS context it was opened with instead
(:class:`certauth._transport.StdlibClient`).
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Generic, TypeVar

from certauth._httpx import httpx

__all__ = ["AsyncRotatingTransport", "RotatingTransport"]

T = TypeVar("T")


class _Pool(Generic[T]):
    """One inner transport, the responses of it still open, and whether it is retired."""

    __slots__ = ("busy", "retired", "transport")

    def __init__(self, transport: T) -> None:
        self.transport = transport
        self.busy = 0
        self.retired = False


class _Pools(Generic[T]):
    """The bookkeeping both transports share: which inner transport takes the next request,
    and which retired ones are to be closed (the callers close them, outside the lock)."""

    def __init__(self, make: Callable[[], T], certificate: Callable[[], object]) -> None:
        self._make = make
        self._certificate = certificate
        self._lock = threading.Lock()
        self._marker = certificate()
        self._current = _Pool(make())
        self._retired: list[_Pool[T]] = []

    def acquire(self) -> tuple[_Pool[T], list[T]]:
        """The pool for the next request (counted busy), and the transports to close now."""
        marker = self._certificate()
        to_close: list[T] = []
        with self._lock:
            if marker is not self._marker:
                old = self._current
                self._marker, self._current = marker, _Pool(self._make())
                old.retired = True
                if old.busy:
                    self._retired.append(old)
                else:
                    to_close.append(old.transport)
            pool = self._current
            pool.busy += 1
        return pool, to_close

    def release(self, pool: _Pool[T]) -> T | None:
        """A response of ``pool`` is over; its transport if it is now to be closed."""
        with self._lock:
            pool.busy -= 1
            if pool.retired and not pool.busy and pool in self._retired:
                self._retired.remove(pool)
                return pool.transport
        return None

    def close(self) -> list[T]:
        """Every inner transport, to close."""
        with self._lock:
            pools, self._retired = [self._current, *self._retired], []
        return [pool.transport for pool in pools]


class _Releasing(httpx.SyncByteStream):
    """A response body that tells its pool when it is closed."""

    def __init__(self, stream: httpx.SyncByteStream, done: Callable[[], None]) -> None:
        self._stream = stream
        self._done: Callable[[], None] | None = done

    def __iter__(self) -> Iterator[bytes]:
        yield from self._stream

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            done, self._done = self._done, None
            if done is not None:
                done()


class _AsyncReleasing(httpx.AsyncByteStream):
    """The asyncio twin of :class:`_Releasing`."""

    def __init__(self, stream: httpx.AsyncByteStream, done: Callable[[], Awaitable[None]]) -> None:
        self._stream = stream
        self._done: Callable[[], Awaitable[None]] | None = done

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            done, self._done = self._done, None
            if done is not None:
                await done()


class RotatingTransport(httpx.BaseTransport):
    """Sends through ``make()``'s transport, a new one each time ``certificate()`` returns
    another object (the credential's current certificate)."""

    def __init__(
        self, make: Callable[[], httpx.BaseTransport], certificate: Callable[[], object]
    ) -> None:
        self._pools: _Pools[httpx.BaseTransport] = _Pools(make, certificate)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        pool, to_close = self._pools.acquire()
        for transport in to_close:
            transport.close()
        try:
            response = pool.transport.handle_request(request)
        except BaseException:
            self._release(pool)
            raise
        assert isinstance(response.stream, httpx.SyncByteStream)
        response.stream = _Releasing(response.stream, lambda: self._release(pool))
        return response

    def _release(self, pool: _Pool[httpx.BaseTransport]) -> None:
        retired = self._pools.release(pool)
        if retired is not None:
            retired.close()

    def close(self) -> None:
        for transport in self._pools.close():
            transport.close()


class AsyncRotatingTransport(httpx.AsyncBaseTransport):
    """The asyncio twin of :class:`RotatingTransport`."""

    def __init__(
        self, make: Callable[[], httpx.AsyncBaseTransport], certificate: Callable[[], object]
    ) -> None:
        self._pools: _Pools[httpx.AsyncBaseTransport] = _Pools(make, certificate)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        pool, to_close = self._pools.acquire()
        for transport in to_close:
            await transport.aclose()
        try:
            response = await pool.transport.handle_async_request(request)
        except BaseException:
            await self._release(pool)
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _AsyncReleasing(response.stream, lambda: self._release(pool))
        return response

    async def _release(self, pool: _Pool[httpx.AsyncBaseTransport]) -> None:
        retired = self._pools.release(pool)
        if retired is not None:
            await retired.aclose()

    async def aclose(self) -> None:
        for transport in self._pools.close():
            await transport.aclose()
