"""A blocking httpx transport on the standard library's ``http.client``.

certauth's own sync clients (``_http.new_sync_client``) send through this instead of httpx's
default httpcore transport. Why: a process that starts, gets one token and exits (a CI step, a
cron job) otherwise imports httpcore, h11 and their dependencies for one request: ~20 ms of a
~180 ms budget (start-up is paid by every CI step that runs certauth). ``http.client`` is already
imported by httpx itself, so this costs nothing extra to load.

It keeps what httpcore gave those clients: keep-alive connections per origin (idle ones are
dropped after ``KEEPALIVE_EXPIRY`` seconds or when the server has closed them), the request's
connect/read/write timeouts, TLS with the client's ``ssl.SSLContext`` (hostname checked), a
streamed response body, and httpx's exception types (``ConnectError`` with the ``ssl`` error
as its cause, ``ConnectTimeout``, ``ReadTimeout``, ``RemoteProtocolError``, ...), which
``_http._failure`` maps to certauth's transport failures.

And one thing httpcore does not give: a request carrying the ``_http.DEADLINE`` extension is
held to it at every socket operation (connect, TLS handshake, sending, each receive of the
status line, headers and body), each one's timeout shortened to what is left, so a server
that drips bytes is cut off at the deadline. No thread, no timer: only socket timeouts.
HTTP/1.1 only, as httpx's default client.
"""

from __future__ import annotations

import http.client
import io
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

from certauth._http import DEADLINE
from certauth._httpx import httpx

__all__ = ["KEEPALIVE_EXPIRY", "StdlibTransport"]

#: Seconds an idle connection is kept for reuse (httpx's default ``keepalive_expiry``).
KEEPALIVE_EXPIRY = 5.0
#: Idle connections kept per origin (a credential normally needs one).
MAX_IDLE_PER_ORIGIN = 8
_CHUNK = 64 * 1024

Origin = tuple[str, str, int]


class StdlibTransport(httpx.BaseTransport):
    """``httpx.BaseTransport`` over ``http.client`` with a small keep-alive pool."""

    def __init__(self, ssl_context: ssl.SSLContext) -> None:
        self._ssl_context = ssl_context
        self._idle: dict[Origin, list[tuple[http.client.HTTPConnection, float]]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(
                f"Request URL has an unsupported protocol '{url.scheme}://'.", request=request
            )
        origin = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        deadline: float | None = request.extensions.get(DEADLINE)
        body = request.read()
        connection = self._checkout(origin) or self._open(origin, timeouts, deadline, request)
        try:
            response = _exchange(connection, request, body, timeouts, deadline)
        except BaseException:
            connection.close()
            raise
        return httpx.Response(
            response.status,
            headers=response.getheaders(),
            stream=_ResponseBody(self, origin, connection, response, request),
            extensions={
                "http_version": b"HTTP/1.0" if response.version == 10 else b"HTTP/1.1",
                "reason_phrase": response.reason.encode("ascii", "replace"),
            },
        )

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection, _ in connections:
                connection.close()

    # -- the pool ------------------------------------------------------------------------------

    def _checkout(self, origin: Origin) -> http.client.HTTPConnection | None:
        """An idle connection to ``origin`` that is still usable, if any."""
        now = time.monotonic()
        while True:
            with self._lock:
                idle = self._idle.get(origin)
                if not idle:
                    return None
                connection, since = idle.pop()
            if now - since < KEEPALIVE_EXPIRY and not _dropped(connection):
                return connection
            connection.close()

    def _release(
        self, origin: Origin, connection: http.client.HTTPConnection, reusable: bool
    ) -> None:
        if reusable:
            with self._lock:
                idle = self._idle.setdefault(origin, [])
                if not self._closed and len(idle) < MAX_IDLE_PER_ORIGIN:
                    idle.append((connection, time.monotonic()))
                    return
        connection.close()

    def _open(
        self,
        origin: Origin,
        timeouts: dict[str, float | None],
        deadline: float | None,
        request: httpx.Request,
    ) -> http.client.HTTPConnection:
        """A new connection: TCP, then (https) the TLS handshake, certificate and hostname
        checked; both within the connect timeout and the deadline."""
        scheme, host, port = origin
        connect = timeouts.get("connect")
        try:
            sock = _connect_tcp(host, port, connect, deadline)
            try:
                # As http.client's connect(): requests are small, send them at once.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if scheme == "https":
                    # The socket's timeout bounds the whole handshake, however the server
                    # drips it (ssl docs, SSLSocket.do_handshake: "The socket timeout is now
                    # the maximum total duration of the handshake", Python 3.5).
                    sock.settimeout(_wait(connect, deadline))
                    sock = self._ssl_context.wrap_socket(sock, server_hostname=host)
            except BaseException:
                sock.close()
                raise
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(str(exc) or "timed out", request=request) from exc
        except OSError as exc:  # ssl.SSLError included: the cause tells TLS failures apart
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from exc
        connection: http.client.HTTPConnection
        if scheme == "https":
            connection = http.client.HTTPSConnection(host, port, context=self._ssl_context)
        else:
            connection = http.client.HTTPConnection(host, port)
        connection.sock = sock
        return connection


def _wait(timeout: float | None, deadline: float | None) -> float | None:
    """A socket operation's timeout: ``timeout``, shortened to what is left before
    ``deadline``; ``TimeoutError`` once nothing is left."""
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("no complete answer before the attempt's deadline")
    return left if timeout is None else min(timeout, left)


def _connect_tcp(
    host: str, port: int, timeout: float | None, deadline: float | None
) -> socket.socket:
    """``socket.create_connection``, with each address's connect also held to ``deadline``.
    (Name resolution itself cannot be bounded without a thread: it is left to the resolver's
    own timeouts, as everywhere in the standard library.)"""
    error: OSError | None = None
    for family, kind, proto, _, address in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(_wait(timeout, deadline))
            sock.connect(address)
        except OSError as exc:  # TimeoutError included
            sock.close()
            error = exc
            continue
        return sock
    raise error or OSError(f"cannot resolve {host}")


def _exchange(
    connection: http.client.HTTPConnection,
    request: httpx.Request,
    body: bytes,
    timeouts: dict[str, float | None],
    deadline: float | None,
) -> http.client.HTTPResponse:
    """Send ``request`` on ``connection`` and read the status line and headers."""
    sock = connection.sock
    assert sock is not None
    headers = request.headers.raw
    if request.headers.get("transfer-encoding"):
        # The body was read whole above: send it with its length, not chunked.
        headers = [(k, v) for k, v in headers if k.lower() != b"transfer-encoding"]
        headers.append((b"Content-Length", str(len(body)).encode("ascii")))
    try:
        # sendall: the socket's timeout bounds the whole send (socket docs, Python 3.5).
        sock.settimeout(_wait(timeouts.get("write"), deadline))
        connection.putrequest(
            request.method,
            request.url.raw_path.decode("ascii"),
            skip_host=True,  # httpx's Host header is in ``headers``
            skip_accept_encoding=True,
        )
        for name, value in headers:
            connection.putheader(name.decode("latin-1"), value)
        connection.endheaders(body or None)
    except TimeoutError as exc:
        raise httpx.WriteTimeout(str(exc) or "timed out", request=request) from exc
    except OSError as exc:
        raise httpx.WriteError(str(exc) or type(exc).__name__, request=request) from exc
    # http.client builds the response with ``response_class(sock, method=...)``: this one
    # reads it, status line to last body byte, through a _Receiver held to the deadline.
    connection.response_class = _response_class(timeouts.get("read"), deadline)  # type: ignore[assignment]
    try:
        return connection.getresponse()
    except TimeoutError as exc:
        raise httpx.ReadTimeout(str(exc) or "timed out", request=request) from exc
    except http.client.HTTPException as exc:  # RemoteDisconnected, BadStatusLine, ...
        raise httpx.RemoteProtocolError(str(exc) or type(exc).__name__, request=request) from exc
    except OSError as exc:
        raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from exc


def _response_class(
    timeout: float | None, deadline: float | None
) -> Callable[..., http.client.HTTPResponse]:
    def response(
        sock: socket.socket, debuglevel: int = 0, method: str | None = None, url: str | None = None
    ) -> http.client.HTTPResponse:
        # HTTPResponse calls only ``makefile("rb")`` on what it is given as its socket.
        receiver = cast(socket.socket, _Receiver(sock, timeout, deadline))
        return http.client.HTTPResponse(receiver, debuglevel, method, url)

    return response


class _Receiver(io.RawIOBase):
    """The socket as http.client reads a response from it: every receive waits at most the
    read timeout and never past the deadline. A per-read timeout alone lets a server that
    sends one byte a second keep a client reading a status line for ever."""

    def __init__(self, sock: socket.socket, timeout: float | None, deadline: float | None):
        super().__init__()
        self._sock = sock
        self._timeout = timeout
        self._deadline = deadline
        # What ``sock.makefile("rb")`` would give http.client, unbuffered: it also keeps the
        # socket open while the response is read after the connection let go of it (a
        # ``Connection: close`` answer: http.client closes the connection at once).
        self._io = sock.makefile("rb", buffering=0)

    def makefile(self, mode: str) -> io.BufferedReader:
        """What ``HTTPResponse`` reads from (``mode`` is always ``"rb"``)."""
        return io.BufferedReader(self)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        self._sock.settimeout(_wait(self._timeout, self._deadline))
        return self._io.readinto(buffer)

    def fileno(self) -> int:
        return self._io.fileno()

    def close(self) -> None:
        self._io.close()
        super().close()


def _dropped(connection: http.client.HTTPConnection) -> bool:
    """Whether an idle connection was closed by the server (or sent something unasked): its
    socket is readable while no request is outstanding (the check httpcore makes)."""
    sock = connection.sock
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class _ResponseBody(httpx.SyncByteStream):
    """The response body, read as the caller iterates; the connection goes back to the pool
    only when the body was read to its end."""

    def __init__(
        self,
        transport: StdlibTransport,
        origin: Origin,
        connection: http.client.HTTPConnection,
        response: http.client.HTTPResponse,
        request: httpx.Request,
    ) -> None:
        self._transport = transport
        self._origin = origin
        self._connection: http.client.HTTPConnection | None = connection
        self._response = response
        self._request = request

    def __iter__(self) -> Iterator[bytes]:
        response = self._response
        try:
            while True:
                # One receive per chunk (read1), as httpcore yields: a caller that checks a
                # deadline between chunks gets control back from a server sending a byte at
                # a time.
                chunk = response.read1(_CHUNK)
                if not chunk:
                    break
                yield chunk
            if response.length:
                # read1 returns b"" when the connection ends, even with bytes still announced
                # by Content-Length (RFC 9112 section 6.3: an incomplete message): a cut body
                # is a protocol failure, retried like a dropped connection, never an answer.
                raise http.client.IncompleteRead(b"", response.length)
            if response.length == 0 and not response.isclosed():
                response.read()  # marks a fully read response closed: the connection is reusable
        except TimeoutError as exc:
            raise httpx.ReadTimeout(str(exc) or "timed out", request=self._request) from exc
        except http.client.HTTPException as exc:  # IncompleteRead, ...
            raise httpx.RemoteProtocolError(
                str(exc) or type(exc).__name__, request=self._request
            ) from exc
        except OSError as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__, request=self._request) from exc

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        response = self._response
        # RFC 9112 section 9.6: after sending "Connection: close" the client sends nothing
        # more on that connection, whatever the server answers.
        reusable = (
            response.isclosed()
            and not response.will_close
            and "close" not in self._request.headers.get("connection", "").lower()
        )
        if not response.isclosed():
            response.close()
        self._transport._release(self._origin, connection, reusable)

    def __repr__(self) -> str:
        return f"<_ResponseBody {self._origin[0]}://{self._origin[1]}:{self._origin[2]}>"
