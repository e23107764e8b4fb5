"""The emulator's HTTP transport: a threaded HTTP/1.1 server from the standard library.

Why the standard library's ``ThreadingHTTPServer`` and not a server package: the emulator must
start in-process in a test in a few milliseconds with no extra dependency, serve http or https on
loopback, and handle a few hundred token requests per second. A token request costs one RSA-2048
verification (~30 us) and one RS256 signature (~0.5-1 ms) of CPU, and the GIL serialises that
work whatever server runs it, so an async server would gain nothing here. Keep-alive (HTTP/1.1)
avoids a TCP (and TLS) handshake per request; measured: see docs/emulator.md.

Hardening for a server that may be left running: bodies are capped (413), sockets time out, a
new connection must send its request line and headers within a short header deadline and each
request has a wall-clock deadline, both enforced by a watchdog (so a client sending one byte
every second cannot hold a thread: the slowloris attack, CVE-2007-6750 for Apache); connections
are bounded overall and per client address, and when the table is full a new connection replaces
the one that has waited longest for its headers, so whole requests keep being served; drops are
logged as one summary line per interval; the TLS handshake runs in the connection's own thread
(a stalled handshake cannot block ``accept``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from certauth.errors import InvalidArgumentError

__all__ = ["EmulatorHTTPServer", "HttpRequest", "HttpResponse", "ServerLimits"]

access_log = logging.getLogger("certauth.emulator.http")


@dataclass(frozen=True)
class HttpRequest:
    """A request as the emulator's routes see it (the transport already read the body)."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    #: ``scheme://host[:port]`` as the client addressed the server (from the ``Host`` header).
    base_url: str
    #: The peer's IP address (admin routes answer loopback peers only); empty when unknown.
    client_address: str = ""
    #: Every header line as ``(lower-case name, value)``, in order: ``headers`` keeps one value
    #: per name, and some rules count the lines (RFC 9449 section 4.3: exactly one ``DPoP``).
    header_items: tuple[tuple[str, str], ...] = ()
    #: The client's TLS certificate (DER) on a listener that asks for one (the mutual-TLS
    #: listener); ``None`` when none was presented or none was asked for.
    peer_certificate: bytes | None = None
    #: The chain the TLS handshake verified for it (DER), leaf first and trust anchor last;
    #: empty without a certificate or when the session does not say (a resumed session).
    peer_chain: tuple[bytes, ...] = ()
    #: ``scheme://host:port`` the client addressed when the request came in on the mutual-TLS
    #: listener, whose ``base_url`` then names the main listener on the same host (so issuers
    #: and discovery documents are the tenant's); empty on the main listener.
    mtls_base_url: str = ""

    @property
    def addressed_base_url(self) -> str:
        """``scheme://host[:port]`` of the listener the client sent this request to."""
        return self.mtls_base_url or self.base_url

    def header_values(self, name: str) -> list[str]:
        """Every value of header ``name`` (any case), in the order they came."""
        wanted = name.lower()
        return [value for key, value in self.header_items if key == wanted]


@dataclass
class HttpResponse:
    """What a route answers."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json; charset=utf-8"


@dataclass(frozen=True)
class ServerLimits:
    """Resource limits that keep one slow or hostile client from pinning the emulator."""

    #: Largest request body accepted (a token request is well under 8 KiB).
    max_body_bytes: int = 64 * 1024
    #: Socket timeout for each read or write.
    socket_timeout: float = 10.0
    #: Wall-clock limit for reading one request (and for an idle keep-alive connection).
    request_deadline: float = 30.0
    #: Wall-clock limit for a new connection to finish its TLS handshake and send its request
    #: line and headers: a client sending them a byte at a time (slowloris) is cut off here.
    header_deadline: float = 10.0
    #: Connections served at once (a thread each; kept well under the usual 1,024 open files).
    #: When all are taken, a new connection replaces the one that has waited longest for its
    #: headers (at least a second); with none, it is closed at once.
    max_connections: int = 512
    #: Connections one client address may hold at once, replaced the same way; the rest of the
    #: table stays open to other addresses. Loopback tests open dozens of connections at once
    #: from one address, so this bounds a flood, not a busy client: the header deadline is
    #: what ends each slow connection.
    max_connections_per_client: int = 384
    #: Dropped connections are logged as one summary warning per this many seconds.
    log_interval: float = 10.0

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_connections", "max_connections_per_client"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(
                    f"ServerLimits.{name} must be an integer >= 1: {value!r}"
                )
        for name in ("socket_timeout", "request_deadline", "header_deadline", "log_interval"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise InvalidArgumentError(
                    f"ServerLimits.{name} must be seconds above 0: {value!r}"
                )


App = Callable[[HttpRequest], HttpResponse]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    # Headers and body go out in separate writes; with Nagle's algorithm on, the second waits
    # for the client's delayed ACK (~40 ms per request on Linux).
    disable_nagle_algorithm = True
    server_version = "certauth-emulator"
    sys_version = ""
    server: EmulatorHTTPServer
    peer_certificate: bytes | None = None
    peer_chain: tuple[bytes, ...] = ()

    def setup(self) -> None:
        """Read the client's certificate once per connection (the handshake is done)."""
        super().setup()
        self.peer_certificate, self.peer_chain = _peer_certificates(self.connection)

    def parse_request(self) -> bool:
        # http.server reads the header block inside parse_request: once it returns, the
        # request line and headers are in, and the header deadline no longer applies.
        parsed = super().parse_request()
        self.server.connections.serving()
        return parsed

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        if "transfer-encoding" in headers:
            # Token requests are small forms; every client sends Content-Length.
            self._write(HttpResponse(411, b'{"error":"length_required"}'), close=True)
            return
        length = _content_length(self.headers.get_all("Content-Length") or [])
        if length < 0:
            self._write(HttpResponse(400, b'{"error":"invalid_request"}'), close=True)
            return
        if length > self.server.limits.max_body_bytes:
            # Do not read it: answer and drop the connection.
            body = b'{"error":"invalid_request","error_description":"request body too large"}'
            self._write(HttpResponse(413, body), close=True)
            return
        body = self.rfile.read(length) if length else b""
        if len(body) < length:
            self.close_connection = True
            return
        split = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(split.query, keep_blank_values=True))
        request = HttpRequest(
            method=self.command,
            path=split.path,
            query=query,
            headers=headers,
            body=body,
            base_url=self.server.base_url_for(headers.get("host")),
            client_address=str(self.client_address[0]) if self.client_address else "",
            header_items=tuple((k.lower(), v) for k, v in self.headers.items()),
            peer_certificate=self.peer_certificate,
            peer_chain=self.peer_chain,
        )
        try:
            response = self.server.app(request)
        except Exception:  # a bug in a route must not kill the connection thread silently
            logging.getLogger("certauth.emulator").exception("error serving %s", split.path)
            response = HttpResponse(500, b'{"error":"server_error"}')
        self._write(response, close=False, head=self.command == "HEAD")

    def _write(self, response: HttpResponse, *, close: bool, head: bool = False) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if not head:
            self.wfile.write(response.body)
        # The response is out: the connection is idle until the next request starts.
        self.server.connections.idle()

    def log_message(self, format: str, *args: Any) -> None:
        access_log.debug("%s %s", self.address_string(), format % args)


@dataclass(eq=False)
class _Connection:
    """One accepted connection, as the connection table tracks it."""

    #: The accepted socket (the table's key).
    raw: socket.socket
    #: What to shut down to end it: the accepted socket, then its TLS wrapper.
    sock: socket.socket
    client: str
    #: ``headers`` (handshake, request line and headers), ``busy`` (body and answer) or
    #: ``idle`` (keep-alive, between requests); ``since`` is when that phase began.
    phase: str
    since: float
    deadline: float


class _ConnectionTable:
    """Every open connection with its phase and deadline; decides who gets a slot.

    When the table (or one client address's share of it) is full, a new connection takes the
    place of the one that has waited longest for its headers, so clients that hold slots by
    sending a byte now and then cannot starve clients that send whole requests; only when no
    connection has waited a second is the newcomer refused. Drops are counted for the
    rate-limited summary instead of logged one by one.
    """

    #: A connection younger than this is never replaced (a client is still sending its request).
    EVICTABLE_AFTER = 1.0

    def __init__(self, limits: ServerLimits) -> None:
        self.limits = limits
        self.header_deadline = min(limits.header_deadline, limits.request_deadline)
        self._lock = threading.Lock()
        self._open: dict[socket.socket, _Connection] = {}
        self._per_client: dict[str, int] = {}
        self._current = threading.local()  # the connection this thread serves
        self.timed_out = self.evicted = self.refused = 0

    def admit(
        self, sock: socket.socket, client: str, now: float
    ) -> tuple[bool, socket.socket | None]:
        """Take ``sock`` in: ``(admitted, the socket of a connection to close for it)``."""
        with self._lock:
            if self._per_client.get(client, 0) >= self.limits.max_connections_per_client:
                full, scope = True, client
            else:
                full, scope = len(self._open) >= self.limits.max_connections, None
            victim = self._victim(now, scope) if full else None
            if full and victim is None:
                self.refused += 1
                return False, None
            if victim is not None:
                self._forget(victim)
                self.evicted += 1
            deadline = now + self.header_deadline
            self._open[sock] = _Connection(sock, sock, client, "headers", now, deadline)
            self._per_client[client] = self._per_client.get(client, 0) + 1
            return True, victim.sock if victim is not None else None

    def _victim(self, now: float, client: str | None) -> _Connection | None:
        # The longest wait for headers first; an idle keep-alive connection only if no such.
        candidates = [
            conn
            for conn in self._open.values()
            if (client is None or conn.client == client)
            and conn.phase != "busy"
            and now - conn.since >= self.EVICTABLE_AFTER
        ]
        if not candidates:
            return None
        return min(candidates, key=lambda conn: (conn.phase != "headers", conn.since))

    def _forget(self, conn: _Connection) -> None:
        del self._open[conn.raw]
        left = self._per_client.get(conn.client, 1) - 1
        if left > 0:
            self._per_client[conn.client] = left
        else:
            self._per_client.pop(conn.client, None)

    def attach(self, raw: socket.socket, sock: socket.socket) -> bool:
        """This thread serves ``raw``, now reached through ``sock`` (its TLS wrapper, or
        itself); ``False`` if it was closed meanwhile."""
        with self._lock:
            conn = self._open.get(raw)
            if conn is None:
                return False
            conn.sock = sock
        self._current.conn = conn
        return True

    def serving(self) -> None:
        """The current request's headers are in: the request deadline applies."""
        self._move("busy", self.limits.request_deadline)

    def idle(self) -> None:
        """The answer is out: an idle keep-alive connection until the next request."""
        self._move("idle", self.limits.request_deadline)

    def _move(self, phase: str, seconds: float) -> None:
        conn: _Connection | None = getattr(self._current, "conn", None)
        if conn is None:
            return
        now = time.monotonic()
        with self._lock:
            conn.phase, conn.since, conn.deadline = phase, now, now + seconds

    def release(self, raw: socket.socket) -> None:
        """The connection's thread is done with it."""
        self._current.conn = None
        with self._lock:
            conn = self._open.get(raw)
            if conn is not None:
                self._forget(conn)

    def overdue(self, now: float) -> list[socket.socket]:
        """Take the connections past their deadline out of the table; the sockets to close."""
        with self._lock:
            late = [conn for conn in self._open.values() if conn.deadline < now]
            for conn in late:
                self._forget(conn)
                # An idle keep-alive connection timing out is ordinary; a slow request is not.
                self.timed_out += conn.phase != "idle"
        return [conn.sock for conn in late]

    def close_all(self) -> list[socket.socket]:
        """Forget every connection; the sockets to close."""
        with self._lock:
            socks = [conn.sock for conn in self._open.values()]
            self._open.clear()
            self._per_client.clear()
        return socks

    def take_counts(self) -> tuple[int, int, int]:
        """``(timed out, evicted, refused)`` since the last call."""
        with self._lock:
            counts = (self.timed_out, self.evicted, self.refused)
            self.timed_out = self.evicted = self.refused = 0
        return counts


class EmulatorHTTPServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` with TLS in the worker thread, deadlines and connection bounds."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128
    #: How often the watchdog looks for overdue connections.
    WATCH_INTERVAL = 0.25

    def __init__(
        self,
        address: tuple[str, int],
        app: App,
        *,
        scheme: str,
        tls: ssl.SSLContext | None = None,
        limits: ServerLimits = ServerLimits(),
    ) -> None:
        self.app = app
        self.scheme = scheme
        self.tls = tls
        self.limits = limits
        self.connections = _ConnectionTable(limits)
        self._stopping = threading.Event()
        self._last_report = -math.inf
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self._watchdog = threading.Thread(
            target=self._watch_deadlines, name="certauth-emulator-watchdog", daemon=True
        )
        self._watchdog.start()

    def server_bind(self) -> None:
        """Bind without HTTPServer's ``socket.getfqdn()``, a DNS lookup that can take seconds."""
        socket.socket.setsockopt(self.socket, socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()[:2]
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0)."""
        return int(self.server_address[1])

    def base_url_for(self, host_header: str | None) -> str:
        """``scheme://host`` as the client addressed us; our own address without ``Host``."""
        if host_header and _valid_host(host_header):
            return f"{self.scheme}://{host_header.strip()}"
        return self.default_base_url

    @property
    def default_base_url(self) -> str:
        """``scheme://host:port`` of the bound address (loopback for a wildcard bind)."""
        host = str(self.server_address[0])
        if host in ("0.0.0.0", ""):  # noqa: S104 - naming the wildcard, not binding to it
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"{self.scheme}://{host}:{self.port}"

    # -- connection lifecycle ---------------------------------------------------------------

    def process_request(self, request: Any, client_address: Any) -> None:
        """Hand the connection to a thread; when the table is full, replace the connection
        that has waited longest for its headers, or close the new one at once."""
        client = str(client_address[0]) if client_address else ""
        admitted, victim = self.connections.admit(request, client, time.monotonic())
        if victim is not None:
            _abort(victim)
        if not admitted:
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.connections.release(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serve one connection, then free its slot."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connections.release(request)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """TLS handshake (in this thread, under the header deadline), then HTTP."""
        conn: socket.socket = request
        conn.settimeout(self.limits.socket_timeout)
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
            # wrap_socket detaches the accepted socket: from now on the wrapper is what the
            # deadlines shut down.
            if not self.connections.attach(request, conn):
                return  # replaced or past its deadline before this thread started
            if self.tls is not None:
                try:
                    conn.do_handshake()  # type: ignore[attr-defined]
                except (ssl.SSLError, OSError) as exc:
                    access_log.debug("TLS handshake with %s failed: %s", client_address, exc)
                    return
            try:
                _Handler(conn, client_address, self)
            except (ConnectionError, TimeoutError, ssl.SSLError) as exc:
                access_log.debug("connection from %s ended: %s", client_address, exc)
        finally:
            if conn is not request:
                with contextlib.suppress(OSError):
                    conn.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log through ``logging`` instead of printing a traceback to stderr."""
        logging.getLogger("certauth.emulator").exception("error on connection %s", client_address)

    # -- deadlines and the dropped-connection summary --------------------------------------------

    def _watch_deadlines(self) -> None:
        while not self._stopping.wait(self.WATCH_INTERVAL):
            now = time.monotonic()
            for conn in self.connections.overdue(now):
                _abort(conn)
            if now - self._last_report >= self.limits.log_interval:
                self._report(now)

    def _report(self, now: float) -> None:
        # One line per log_interval at most, whatever the rate of drops: a flood of slow
        # connections must not become a flood of log lines.
        timed_out, evicted, refused = self.connections.take_counts()
        total = timed_out + evicted + refused
        if not total:
            return
        self._last_report = now
        access_log.warning(
            "dropped %d connections that were slow to send a request or over the limits: %d "
            "past the deadline (%g s for the headers), %d replaced by newer connections, %d "
            "refused (limits: %d connections, %d per client address); next report in %g s at "
            "the earliest",
            total,
            timed_out,
            self.connections.header_deadline,
            evicted,
            refused,
            self.limits.max_connections,
            self.limits.max_connections_per_client,
            self.limits.log_interval,
        )

    def serve_in_thread(self, name: str) -> threading.Thread:
        """Serve from a daemon thread named ``name`` (started here; stop with ``shutdown``)."""
        thread = threading.Thread(
            target=self.serve_forever,
            # How long shutdown() may wait for the serving loop to notice.
            kwargs={"poll_interval": 0.05},
            name=name,
            daemon=True,
        )
        thread.start()
        return thread

    def server_close(self) -> None:
        """Stop accepting, close every open connection and the listening socket."""
        self._stopping.set()
        for conn in self.connections.close_all():
            _abort(conn)
        self._report(time.monotonic())
        super().server_close()


def _abort(conn: socket.socket) -> None:
    # shutdown() wakes a thread blocked in recv() on this socket; close() alone would not.
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)


def _peer_certificates(conn: socket.socket) -> tuple[bytes | None, tuple[bytes, ...]]:
    """The client's certificate (DER) and the chain the handshake verified for it."""
    if not isinstance(conn, ssl.SSLSocket):
        return None, ()
    try:
        der = conn.getpeercert(binary_form=True)
    except (ValueError, OSError):  # the connection is already gone
        return None, ()
    if not der:
        return None, ()
    # Python 3.13 made get_verified_chain public (a list of DER bytes); 3.10-3.12 have it on
    # the private SSL object, as certificate objects.
    source: Any = conn if hasattr(conn, "get_verified_chain") else getattr(conn, "_sslobj", None)
    try:
        chain = source.get_verified_chain() if source is not None else None
    except (AttributeError, ValueError, ssl.SSLError):
        chain = None
    if not chain:  # None after a resumed session: OpenSSL keeps no verified chain then
        return der, ()
    return der, tuple(
        item if isinstance(item, bytes) else item.public_bytes(_der_encoding()) for item in chain
    )


def _der_encoding() -> int:
    """The ``_ssl`` constant for DER output of its certificate objects."""
    import _ssl

    return int(getattr(_ssl, "ENCODING_DER", 2))


def _content_length(values: list[str]) -> int:
    """The body length, or -1 when the framing is invalid (RFC 9112 section 6.3: several
    differing values, or anything but digits, such as ``+5`` or ``1_0`` that ``int()`` takes).
    """
    distinct = {value.strip() for value in values}
    if not distinct:
        return 0
    if len(distinct) > 1:
        return -1
    text = distinct.pop()
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else -1


def _valid_host(value: str) -> bool:
    value = value.strip()
    return 0 < len(value) <= 255 and all(c.isalnum() or c in ".-:[]_" for c in value)
