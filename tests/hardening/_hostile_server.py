"""A loopback HTTP server that misbehaves on purpose: huge bodies, dripping bytes, odd answers.

Not a test module (leading underscore). Real sockets, no mocks: what certauth's clients meet is
exactly what a hostile or broken token endpoint / JWKS host would send. Each connection reads
one request, then hands the socket to the server's ``behaviour``; the server counts what it
managed to send, so a test can prove the client hung up early instead of buffering everything.
With ``tls`` it serves https (the handshake done before the behaviour runs); with
``read_request=False`` the behaviour gets the connection as accepted (to stall a handshake).
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

Behaviour = Callable[["Connection"], None]


@dataclass
class Connection:
    """One accepted connection, as a behaviour sees it."""

    sock: socket.socket
    request: bytes
    stopping: threading.Event
    sent: int = 0

    def send(self, data: bytes) -> bool:
        """Send ``data``; ``False`` once the client has gone."""
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        self.sent += len(data)
        return True


@dataclass
class HostileServer:
    """``with HostileServer(behaviour) as server: ... server.url ...``"""

    behaviour: Behaviour
    connections: list[Connection] = field(default_factory=list)
    #: Serve https with this server-side context.
    tls: ssl.SSLContext | None = None
    #: False: hand the connection to the behaviour as accepted, before any request (or TLS).
    read_request: bool = True

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)  # how soon the accept loop sees the server stopping
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.port = self._listener.getsockname()[1]
        scheme = "https" if self.tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"

    def __enter__(self) -> HostileServer:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._listener.close()

    @property
    def bytes_sent(self) -> int:
        """Everything sent on every connection so far."""
        return sum(c.sent for c in self.connections)

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, sock: socket.socket) -> None:
        with sock:
            sock.settimeout(5)
            if not self.read_request:
                connection = Connection(sock, b"", self._stopping)
                self.connections.append(connection)
                with contextlib.suppress(OSError):
                    self.behaviour(connection)
                return
            if self.tls is not None:
                try:
                    sock = self.tls.wrap_socket(sock, server_side=True)
                except OSError:
                    return
            request = _read_request(sock)
            if request is None:
                return
            connection = Connection(sock, request, self._stopping)
            self.connections.append(connection)
            with contextlib.suppress(OSError):
                self.behaviour(connection)


def _read_request(sock: socket.socket) -> bytes | None:
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = sock.recv(65536)
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


# -- behaviours -----------------------------------------------------------------------------------


def huge_body(total: int, *, chunked: bool = False, status: int = 200) -> Behaviour:
    """A JSON-looking answer of ``total`` bytes, streamed until the client hangs up."""

    def behave(conn: Connection) -> None:
        framing = ("Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}").encode()
        conn.send(
            f"HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\n".encode()
            + framing
            + b"\r\n\r\n"
        )
        piece = b'{"access_token":"' + b"a" * (64 * 1024 - 17)
        sent = 0
        while sent < total and not conn.stopping.is_set():
            data = piece if sent == 0 else b"a" * len(piece)
            data = data[: total - sent]
            if chunked:
                data = f"{len(data):x}\r\n".encode() + data + b"\r\n"
            if not conn.send(data):
                return
            sent += len(data)

    return behave


def drip(interval: float, *, length: int = 100_000) -> Behaviour:
    """Headers at once, then one byte of body every ``interval`` seconds."""

    def behave(conn: Connection) -> None:
        conn.send(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {length}\r\n\r\n".encode()
        )
        for _ in range(length):
            if conn.stopping.wait(interval) or not conn.send(b" "):
                return

    return behave


def answer(status: int, body: bytes, headers: dict[str, str] | None = None) -> Behaviour:
    """One ordinary response."""

    def behave(conn: Connection) -> None:
        head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
        for name, value in (headers or {"Content-Type": "application/json"}).items():
            head += f"{name}: {value}\r\n"
        conn.send(head.encode() + b"\r\n" + body)

    return behave


def drip_status(interval: float, *, seconds: float = 5.0) -> Behaviour:
    """The status line one byte every ``interval`` seconds, for about ``seconds`` (then the
    rest of a token answer at once): a per-read timeout never trips."""
    return _drip_then_answer(b"HTTP/1.1 200 OK\r\n", b"", interval, seconds)


def drip_headers(interval: float, *, seconds: float = 5.0) -> Behaviour:
    """The status line at once, then a header one byte every ``interval`` seconds."""
    return _drip_then_answer(b"HTTP/1.1 200 OK\r\n", b"X-Slow: ", interval, seconds)


def _drip_then_answer(head: bytes, dripped: bytes, interval: float, seconds: float) -> Behaviour:
    body = b'{"access_token":"t","token_type":"Bearer","expires_in":3600,"keys":[]}'
    rest = b"application/json\r\n" + f"Content-Length: {len(body)}\r\n\r\n".encode() + body

    def behave(conn: Connection) -> None:
        if dripped:
            if not conn.send(head):
                return
            data = dripped + b"x" * int(seconds / interval) + b"\r\nContent-Type: "
        else:
            # The status line, its reason phrase padded to last ``seconds``.
            data = b"HTTP/1.1 200 " + b"O" * int(seconds / interval) + b"\r\nContent-Type: "
        for byte in data:
            if conn.stopping.wait(interval) or not conn.send(bytes([byte])):
                return
        conn.send(rest)

    return behave


def stall(*, seconds: float = 5.0) -> Behaviour:
    """Accept the connection, then say nothing until the client gives up, or for ``seconds``
    (with ``read_request=False`` and an https URL: a TLS handshake that gets no answer)."""

    def behave(conn: Connection) -> None:
        conn.sock.settimeout(0.05)
        until = time.monotonic() + seconds
        while not conn.stopping.is_set() and time.monotonic() < until:
            try:
                if conn.sock.recv(65536) == b"":
                    return  # the client hung up
            except TimeoutError:
                continue

    return behave


def gzip_bomb(expanded: int) -> Behaviour:
    """A 200 answer whose gzip body inflates to ``expanded`` zero bytes (about 1 KiB of gzip
    per MiB of zeros), streamed until the client hangs up."""

    def behave(conn: Connection) -> None:
        body = _gzip_zeros(expanded)
        conn.send(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
        )
        # A moment between headers and body: the client then reads the body in full-size
        # chunks (64 KiB of this gzip inflates to 64 MiB), not the tail of a header read.
        conn.stopping.wait(0.05)
        for start in range(0, len(body), 64 * 1024):
            if conn.stopping.is_set() or not conn.send(body[start : start + 64 * 1024]):
                return

    return behave


_bombs: dict[int, bytes] = {}


def _gzip_zeros(size: int) -> bytes:
    """gzip of ``size`` zero bytes, built from one compressed MiB repeated (a full flush makes
    each MiB's deflate blocks independent and identical), so a GiB takes a second, not ten."""
    if size not in _bombs:
        mib = 1024 * 1024
        assert size % mib == 0
        compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip framing
        head = compressor.compress(b"\0" * mib) + compressor.flush(zlib.Z_FULL_FLUSH)
        block = compressor.compress(b"\0" * mib) + compressor.flush(zlib.Z_FULL_FLUSH)
        crc = 0
        for _ in range(size // mib):
            crc = zlib.crc32(b"\0" * mib, crc)
        trailer = b"\3\0" + crc.to_bytes(4, "little") + (size % 2**32).to_bytes(4, "little")
        _bombs[size] = head + block * (size // mib - 1) + trailer
    return _bombs[size]


def in_turn(*behaviours: Behaviour) -> Behaviour:
    """Each new connection gets the next behaviour (the last one repeats)."""
    counter = itertools.count()
    lock = threading.Lock()

    def behave(conn: Connection) -> None:
        with lock:
            index = min(next(counter), len(behaviours) - 1)
        behaviours[index](conn)

    return behave


@contextlib.contextmanager
def serving(
    behaviour: Behaviour, *, tls: ssl.SSLContext | None = None, read_request: bool = True
) -> Iterator[HostileServer]:
    """``HostileServer`` as a context manager function."""
    with HostileServer(behaviour, tls=tls, read_request=read_request) as server:
        yield server


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()
