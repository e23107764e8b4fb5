"""The emulator's HTTP transport: a threaded HTTP/1.1 server from the standard library.

Why the standard library's ``ThreadingHTTPServer`` and not a server package: the emulator must
start in-process in a test in a few milliseconds with no extra dependency, serve http or https on
loopback, and handle a few hundred token requests per second. A token request costs one RSA-2048
verification (~30 us) and one RS256 signature (~0.5-1 ms) of CPU, and the GIL serialises that
work whatever server runs it, so an async server would gain nothing here. Keep-alive (HTTP/1.1)
avoids a TCP (and TLS) handshake per request; measured: see the README's emulator section.

Hardening for a server that may be left running: bodies are capped (413), sockets time out, each
request has a wall-clock deadline enforced by a watchdog (so a client sending one byte every few
seconds cannot hold a thread), concurrent connections are capped, and the TLS handshake runs in the
connection's own thread (a stalled handshake cannot block ``accept``).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

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
    #: Connections served at once; more are closed at once.
    max_connections: int = 256


App = Callable[[HttpRequest], HttpResponse]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    # Headers and body go out in separate writes; with Nagle's algorithm on, the second waits
    # for the client's delayed ACK (~40 ms per request on Linux).
    disable_nagle_algorithm = True
    server_version = "certauth-emulator"
    sys_version = ""
    server: EmulatorHTTPServer

    def handle_one_request(self) -> None:
        self.server.watch(self.connection, self.server.limits.request_deadline)
        super().handle_one_request()

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
        self.server.watch(self.connection, self.server.limits.request_deadline)

    def log_message(self, format: str, *args: Any) -> None:
        access_log.debug("%s %s", self.address_string(), format % args)


class EmulatorHTTPServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` with TLS in the worker thread, deadlines and a connection cap."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

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
        self._slots = threading.BoundedSemaphore(limits.max_connections)
        self._deadlines: dict[socket.socket, float] = {}
        self._deadlines_lock = threading.Lock()
        self._stopping = threading.Event()
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
        """Hand the connection to a thread, or close it at once when all slots are taken."""
        if not self._slots.acquire(blocking=False):
            limit = self.limits.max_connections
            access_log.warning("%d connections open; closing a new one", limit)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serve one connection, then free its slot."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def finish_request(self, request: Any, client_address: Any) -> None:
        """TLS handshake (in this thread, under the deadline), then HTTP on the connection."""
        conn: socket.socket = request
        conn.settimeout(self.limits.socket_timeout)
        self.watch(conn, self.limits.request_deadline)
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
                self.unwatch(request)  # detached by wrap_socket; the wrapper is watched now
                self.watch(conn, self.limits.request_deadline)
                try:
                    conn.do_handshake()
                except (ssl.SSLError, OSError) as exc:
                    access_log.debug("TLS handshake with %s failed: %s", client_address, exc)
                    return
            try:
                _Handler(conn, client_address, self)
            except (ConnectionError, TimeoutError, ssl.SSLError) as exc:
                access_log.debug("connection from %s ended: %s", client_address, exc)
        finally:
            self.unwatch(conn)
            self.unwatch(request)
            if conn is not request:
                with contextlib.suppress(OSError):
                    conn.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log through ``logging`` instead of printing a traceback to stderr."""
        logging.getLogger("certauth.emulator").exception("error on connection %s", client_address)

    # -- deadlines --------------------------------------------------------------------------

    def watch(self, conn: socket.socket, seconds: float) -> None:
        """Close ``conn`` if it is still busy ``seconds`` from now."""
        with self._deadlines_lock:
            self._deadlines[conn] = time.monotonic() + seconds

    def unwatch(self, conn: socket.socket) -> None:
        """Forget ``conn`` (it was closed)."""
        with self._deadlines_lock:
            self._deadlines.pop(conn, None)

    def _watch_deadlines(self) -> None:
        while not self._stopping.wait(0.5):
            now = time.monotonic()
            with self._deadlines_lock:
                overdue = [c for c, t in self._deadlines.items() if t < now]
                for conn in overdue:
                    del self._deadlines[conn]
            for conn in overdue:
                access_log.debug("closing a connection past its deadline")
                _abort(conn)

    def server_close(self) -> None:
        """Stop accepting, close every open connection and the listening socket."""
        self._stopping.set()
        with self._deadlines_lock:
            open_connections = list(self._deadlines)
            self._deadlines.clear()
        for conn in open_connections:
            _abort(conn)
        super().server_close()


def _abort(conn: socket.socket) -> None:
    # shutdown() wakes a thread blocked in recv() on this socket; close() alone would not.
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)


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
