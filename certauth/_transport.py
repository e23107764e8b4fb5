"""certauth's blocking HTTP/1.1 client, on the standard library's ``http.client``.

certauth's own sync requests (token requests, discovery and JWKS documents, Key Vault signing,
the rotation's Graph calls) go through :class:`StdlibClient`, not httpx: a process that starts,
gets one token and exits (a CI step, a cron job) would otherwise import httpx for one request,
about a quarter of what such a process must execute at the least (docs/performance.md). httpx
stays where it is the interface: a caller's ``client=``, :meth:`http_client`, the async stack.

What it does, for :func:`certauth._http.run_sync` (which drives it with
:class:`~certauth._flow.Send` actions and gets a :class:`~certauth._flow.Reply` or a
:class:`~certauth._flow.Failure` back):

* one deadline per attempt, held at every socket operation (connect, the proxy's tunnel, the TLS
  handshake, sending, each receive of the status line, headers and body), each one's timeout
  shortened to what is left, so a server that drips bytes is cut off at the deadline; no thread,
  no timer, only socket timeouts;
* keep-alive connections per origin (idle ones are dropped after :data:`KEEPALIVE_EXPIRY`
  seconds or once the server has closed them), each tied to the TLS context it was opened with:
  under mutual TLS a rotated certificate comes with a new context, and no connection opened
  before is reused after (one that presents the old certificate would get tokens bound to it,
  RFC 8705 section 3);
* the body decoded (gzip, deflate) and capped as it streams (``_http._Decoder``);
* proxies from the environment (:mod:`certauth._proxies`): ``https://`` through a ``CONNECT``
  tunnel (RFC 9110 section 9.3.6), TLS and its certificate check end to end;
* TLS with the given ``ssl.SSLContext``, the hostname checked (``server_hostname``).
"""

from __future__ import annotations

import http.client
import io
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, cast
from urllib.parse import urlsplit

from certauth._body import BodyDecoder, DecodingError
from certauth._flow import Failure, Reply, Send
from certauth._http import failure_for, spent
from certauth._proxies import Proxies, Proxy

__all__ = ["KEEPALIVE_EXPIRY", "StdlibClient"]

#: Seconds an idle connection is kept for reuse (httpx's default ``keepalive_expiry``).
KEEPALIVE_EXPIRY = 5.0
#: Idle connections kept per origin (a credential normally needs one).
MAX_IDLE_PER_ORIGIN = 8
_CHUNK = 64 * 1024

#: scheme, host, port, and the proxy's URL (``""``: direct)
Origin = tuple[str, str, int, str]
_Idle = tuple[http.client.HTTPConnection, float, ssl.SSLContext]


class ProxyError(OSError):
    """The proxy did not open the tunnel (a connect failure, named with the proxy's URL)."""


class StdlibClient:
    """A blocking HTTP/1.1 client: one :meth:`send` per attempt, with a small keep-alive pool.

    ``context`` returns the TLS context for the next connection (under mutual TLS, the one for
    the certificate in use now). ``timeout`` bounds each attempt, connect to last body byte;
    ``connect_timeout`` the connect (the proxy's tunnel and the TLS handshake included).
    """

    def __init__(
        self,
        context: Callable[[], ssl.SSLContext],
        *,
        timeout: float,
        connect_timeout: float,
        headers: Mapping[str, str],
        proxies: Proxies | None = None,
    ) -> None:
        self._context = context
        #: Seconds per attempt.
        self.timeout = timeout
        self._connect_timeout = min(connect_timeout, timeout)
        self._headers = dict(headers)
        self._proxies = Proxies.from_environment() if proxies is None else proxies
        self._idle: dict[Origin, list[_Idle]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def __enter__(self) -> StdlibClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the idle connections; a connection in use is closed when its answer is read."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection, _, _ in connections:
                connection.close()

    def send(self, action: Send) -> Reply | Failure:
        """One attempt: ``action``'s request, its answer read in full (up to the cap) within
        the client's timeout, or ``action.timeout`` when that is shorter."""
        seconds = self.timeout if action.timeout is None else min(self.timeout, action.timeout)
        started = time.monotonic()
        if seconds <= 0:
            return spent()
        deadline = started + seconds
        phase = "connecting"
        try:
            origin, target, proxy = self._route(action.url)
            context = self._context()
            connection = self._checkout(origin, context)
            if connection is None:
                connection = self._open(origin, proxy, context, deadline)
            try:
                phase = "sending the request"
                # Through a tunnel the proxy sees only the CONNECT; a plain-HTTP request is
                # read by the proxy, and carries its credentials (RFC 9110 section 11.7.1).
                plain = proxy.authorization if proxy and origin[0] == "http" else None
                self._request(connection, action, target, plain, deadline)
                phase = "waiting for the answer"
                status, headers, body, reusable = self._answer(connection, action, deadline)
            except BaseException:
                connection.close()
                raise
        except (OSError, http.client.HTTPException, DecodingError, ValueError) as exc:
            return failure_for(exc, phase, time.monotonic() - started)
        self._release(origin, connection, context, reusable)
        return Reply(status, headers, body, time.monotonic() - started)

    # -- one request --------------------------------------------------------------------------

    def _route(self, url: str) -> tuple[Origin, str, Proxy | None]:
        """Where ``url``'s request goes: its origin (the proxy included), the request target,
        and the proxy (``None``: direct)."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise ValueError(f"unsupported URL scheme {scheme + '://'!r} in {url!r}")
        host = parts.hostname
        if not host:
            raise ValueError(f"no host in {url!r}")
        port = parts.port or (443 if scheme == "https" else 80)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        proxy = self._proxies.for_url(scheme, host, port) if self._proxies else None
        if proxy is not None and scheme == "http":
            # A plain-HTTP request through a proxy names the whole URL (RFC 9112 section 3.2.2).
            target = f"http://{parts.netloc.rpartition('@')[2]}{target}"
        return (scheme, host, port, proxy.url if proxy else ""), target, proxy

    def _request(
        self,
        connection: http.client.HTTPConnection,
        action: Send,
        target: str,
        proxy_authorization: str | None,
        deadline: float,
    ) -> None:
        sock = connection.sock
        assert sock is not None
        # The action's headers replace the client's of the same name, whatever their case.
        given = {name.lower() for name in action.headers}
        headers = {k: v for k, v in self._headers.items() if k.lower() not in given}
        headers.update(action.headers)
        body = action.body
        if body is not None:
            headers["Content-Length"] = str(len(body))
        if proxy_authorization:
            headers["Proxy-Authorization"] = proxy_authorization
        # sendall: the socket's timeout bounds the whole send (socket docs, Python 3.5).
        sock.settimeout(_wait(self.timeout, deadline))
        connection.putrequest(action.method, target, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders(body or None)

    def _answer(
        self, connection: http.client.HTTPConnection, action: Send, deadline: float
    ) -> tuple[int, dict[str, str], bytes, bool]:
        """The status, the headers (names in lower case, repeated ones joined with ``", "``, as
        httpx gives them), the decoded body capped at the limit + 1, and whether the
        connection may carry another request."""
        # http.client builds the response with ``response_class(sock, method=...)``: this one
        # reads it, status line to last body byte, through a _Receiver held to the deadline.
        connection.response_class = _response_class(self.timeout, deadline)  # type: ignore[assignment]
        response = connection.getresponse()
        headers: dict[str, str] = {}
        for name, value in response.getheaders():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        decoder = BodyDecoder(headers.get("content-encoding", ""))
        body = bytearray()
        over = False
        while True:
            # One receive per chunk (read1): the deadline is checked at each.
            chunk = response.read1(_CHUNK)
            if not chunk:
                break
            if decoder.take(body, chunk):
                over = True  # refused as too large: the rest is not read, the connection dropped
                break
        if not over and response.length:
            # read1 returns b"" when the connection ends, even with bytes still announced by
            # Content-Length (RFC 9112 section 6.3: an incomplete message): a cut body is a
            # protocol failure, retried like a dropped connection, never an answer.
            raise http.client.IncompleteRead(bytes(body), response.length)
        if not over and response.length == 0 and not response.isclosed():
            response.read()  # marks a fully read response closed: the connection is reusable
        # RFC 9112 section 9.6: after sending "Connection: close" the client sends nothing
        # more on that connection, whatever the server answers.
        asked_close = "close" in {
            v.lower() for k, v in action.headers.items() if k.lower() == "connection"
        }
        reusable = response.isclosed() and not response.will_close and not asked_close
        if not response.isclosed():
            response.close()
        return response.status, headers, bytes(body), reusable

    # -- the pool -----------------------------------------------------------------------------

    def _checkout(
        self, origin: Origin, context: ssl.SSLContext
    ) -> http.client.HTTPConnection | None:
        """An idle connection to ``origin``, opened with ``context``, that is still usable."""
        now = time.monotonic()
        while True:
            with self._lock:
                idle = self._idle.get(origin)
                if not idle:
                    return None
                connection, since, opened_with = idle.pop()
            fresh = opened_with is context and now - since < KEEPALIVE_EXPIRY
            if fresh and not _dropped(connection):
                return connection
            connection.close()

    def _release(
        self,
        origin: Origin,
        connection: http.client.HTTPConnection,
        context: ssl.SSLContext,
        reusable: bool,
    ) -> None:
        if reusable and context is self._context():
            with self._lock:
                idle = self._idle.setdefault(origin, [])
                if not self._closed and len(idle) < MAX_IDLE_PER_ORIGIN:
                    idle.append((connection, time.monotonic(), context))
                    return
        connection.close()

    def _open(
        self, origin: Origin, proxy: Proxy | None, context: ssl.SSLContext, deadline: float
    ) -> http.client.HTTPConnection:
        """A new connection: TCP (to the proxy, if any, and through its tunnel for https),
        then for https the TLS handshake, certificate and hostname checked; all within the
        connect timeout and the deadline."""
        scheme, host, port, _ = origin
        connect = self._connect_timeout
        if proxy is None:
            sock = _connect_tcp(host, port, connect, deadline)
        else:
            sock = _connect_tcp(proxy.host, proxy.port, connect, deadline)
        try:
            # As http.client's connect(): requests are small, send them at once.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if proxy is not None and scheme == "https":
                _tunnel(sock, host, port, proxy, _wait(connect, deadline), deadline)
            if scheme == "https":
                # The socket's timeout bounds the whole handshake, however the server drips
                # it (ssl docs, SSLSocket.do_handshake: "The socket timeout is now the maximum
                # total duration of the handshake", Python 3.5).
                sock.settimeout(_wait(connect, deadline))
                sock = context.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
        connection: http.client.HTTPConnection
        if scheme == "https":
            connection = http.client.HTTPSConnection(host, port, context=context)
        else:
            connection = http.client.HTTPConnection(host, port)
        connection.sock = sock
        return connection


def _tunnel(
    sock: socket.socket,
    host: str,
    port: int,
    proxy: Proxy,
    timeout: float | None,
    deadline: float,
) -> None:
    """Ask the proxy for a tunnel to ``host:port`` (RFC 9110 section 9.3.6); a refusal is a
    :class:`ProxyError` (a connect failure) that names the proxy and its answer."""
    name = host if host.isascii() else host.encode("idna").decode("ascii")
    authority = f"[{name}]:{port}" if ":" in name else f"{name}:{port}"
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    if proxy.authorization:
        lines.append(f"Proxy-Authorization: {proxy.authorization}")
    sock.settimeout(timeout)
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("ascii"))
    response = http.client.HTTPResponse(
        cast(socket.socket, _Receiver(sock, timeout, deadline)), method="CONNECT"
    )
    try:
        response.begin()
        status, reason = response.status, response.reason
    finally:
        response.close()
    if not 200 <= status < 300:
        hint = (
            "; give the proxy's credentials in the proxy URL (http://user:password@host:port)"
            if status == 407
            else f"; list {host} in NO_PROXY if it is to be reached directly"
        )
        raise ProxyError(
            f"the proxy {proxy.url} (from {proxy.variable}) refused a tunnel to {authority}: "
            f"HTTP {status} {reason}{hint}"
        )


def _wait(timeout: float | None, deadline: float) -> float | None:
    """A socket operation's timeout: ``timeout``, shortened to what is left before
    ``deadline``; ``TimeoutError`` once nothing is left."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("no complete answer before the attempt's deadline")
    return left if timeout is None else min(timeout, left)


def _connect_tcp(host: str, port: int, timeout: float | None, deadline: float) -> socket.socket:
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


def _response_class(
    timeout: float | None, deadline: float
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

    def __init__(self, sock: socket.socket, timeout: float | None, deadline: float):
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
