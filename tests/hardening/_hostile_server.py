"""A loopback HTTP server that misbehaves on purpose: huge bodies, dripping bytes, odd answers.

Not a test module (leading underscore). Real sockets, no mocks: what certauth's clients meet is
exactly what a hostile or broken token endpoint / JWKS host would send. Each connection reads
one request, then hands the socket to the server's ``behaviour``; the server counts what it
managed to send, so a test can prove the client hung up early instead of buffering everything.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
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

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

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


@contextlib.contextmanager
def serving(behaviour: Behaviour) -> Iterator[HostileServer]:
    """``HostileServer`` as a context manager function."""
    with HostileServer(behaviour) as server:
        yield server


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()
