"""The emulator under abuse, over real loopback sockets: it keeps serving legitimate clients.

Extends ``tests/emulator/test_emulator_server.py`` (one oversized form, one slow client) with
lying and conflicting lengths, oversized request lines and headers, a hundred slowloris
connections at once, a full connection table, malformed Authorization headers sent as raw
bytes, and 10,000 distinct forged thumbprints and key ids. Every loop is bounded and every
socket has a timeout, so a regression fails instead of hanging. Nothing is timed: "served
while under attack" is shown by the attack's connections being still open when the legitimate
answer comes (the emulator's deadline watchdog held meanwhile where it would otherwise end them),
and "cut off" by the server closing the connection while the client is still sending.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import json
import logging
import os
import re
import select
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from certauth import _jose
from certauth.certificates import Certificate
from certauth.emulator import Emulator
from certauth.emulator.registry import App
from certauth.emulator.server import ServerLimits, _ConnectionTable
from certauth.errors import CertauthError, InvalidArgumentError, TokenValidationError
from certauth.protocol import CLIENT_ASSERTION_TYPE
from certauth.verify import DEFAULT_REFETCH_INTERVAL, TokenVerifier

CLIENT_ID = "55555555-6666-7777-8888-999999999999"
SECRET = "abuse-test-client-secret-value"
LIMITS = ServerLimits(max_body_bytes=4096, socket_timeout=2, request_deadline=1.0)


@pytest.fixture(scope="module")
def tenant(rsa_cert: Certificate) -> Iterator[Emulator]:
    with Emulator(limits=LIMITS) as emulator:
        emulator.register(CLIENT_ID, rsa_cert, roles=["Things.Read"])
        emulator.register_secret(CLIENT_ID, SECRET)
        yield emulator


def _path(tenant: Emulator) -> str:
    return f"/{tenant.tenant_id}/oauth2/v2.0/token"


def _form(**fields: str) -> bytes:
    form = {"grant_type": "client_credentials", "client_id": CLIENT_ID, "scope": "api://x/.default"}
    return urllib.parse.urlencode({**form, **fields}).encode()


def _legitimate(tenant: Emulator, client: httpx.Client | None = None) -> None:
    """A legitimate token request; fails unless it got a token (the client's timeout is only a
    guard against hangs)."""
    if client is None:
        with httpx.Client(timeout=5) as fresh:
            response = fresh.post(
                tenant.token_endpoint,
                content=_form(client_secret=SECRET),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
    else:
        response = client.post(
            tenant.token_endpoint,
            content=_form(client_secret=SECRET),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert response.status_code == 200, response.text
    assert "access_token" in response.json()


def _raw(tenant: Emulator, data: bytes, *, timeout: float = 5) -> bytes:
    """Send raw bytes, half-close, and read the whole answer (until the server closes)."""
    with socket.create_connection(("127.0.0.1", tenant.port), timeout=timeout) as sock:
        sock.sendall(data)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def _answered_while_sending(tenant: Emulator, data: bytes, *, timeout: float = 10) -> bytes:
    """Send ``data``, keep the sending side open (no half-close: the client may still send
    what it announced) and read the answer until the server closes. A server that waited for
    bytes the client never sent would answer nothing: its deadline would end the connection
    first. ``timeout`` only guards against a hang."""
    with socket.create_connection(("127.0.0.1", tenant.port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def _open_count(socks: list[socket.socket]) -> int:
    """How many of ``socks`` the server has not closed, looked at without waiting (a closed
    one reads EOF or a reset; an open one has nothing to read)."""
    still_open = 0
    for sock in socks:
        timeout = sock.gettimeout()
        sock.setblocking(False)  # with a timeout set, recv would wait for one
        try:
            sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            still_open += 1
        except OSError:
            pass
        finally:
            sock.settimeout(timeout)
    return still_open


def _closed_by_server(socks: list[socket.socket], *, guard: float = 30) -> int:
    """How many of ``socks`` the server closes without an answer (EOF or a reset read),
    waiting for each until ``guard`` seconds have passed in all (a guard against a hang, not a
    bound being checked: one not closed by then is not counted)."""
    give_up = time.monotonic() + guard
    closed = 0
    for sock in socks:
        sock.settimeout(max(0.01, give_up - time.monotonic()))
        try:
            closed += sock.recv(1024) == b""
        except (ConnectionResetError, BrokenPipeError):
            closed += 1
        except TimeoutError:
            pass
    return closed


@contextlib.contextmanager
def _deadlines_held(tenant: Emulator) -> Iterator[Callable[[], None]]:
    """Hold the emulator's deadline watchdog for the block, or until the function it yields
    is called: no connection is closed for being past its deadline until then (then every
    overdue one is, at the next check). Slow connections made inside the block are provably
    still connected while it holds, whatever the machine's speed: legitimate requests
    answered meanwhile were answered during the attack, not after the deadlines ended it."""
    table = tenant._running_server().connections
    overdue = table.overdue
    release = threading.Event()

    def held(now: float) -> list[socket.socket]:
        release.wait(60)  # a guard: a test that fails inside the block lets it go anyway
        return overdue(time.monotonic())

    table.overdue = held  # type: ignore[method-assign]
    try:
        yield release.set
    finally:
        release.set()
        del table.overdue


def _admitted(tenant: Emulator) -> int:
    """Connections the emulator has accepted and holds a slot for (its connection table)."""
    table = tenant._running_server().connections
    with table._lock:
        return len(table._open)


def _wait_until(condition: Callable[[], object], what: str, guard: float = 30) -> None:
    """Poll ``condition`` until it holds; ``guard`` only keeps a regression from hanging."""
    give_up = time.monotonic() + guard
    while not condition():
        assert time.monotonic() < give_up, f"gave up waiting for {what}"
        time.sleep(0.01)


def _status(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1."), answer[:200]
    return int(answer.split(b" ", 2)[1])


def _request(
    tenant: Emulator, *headers: bytes, body: bytes = b"", line: bytes | None = None
) -> bytes:
    start = line or b"POST " + _path(tenant).encode() + b" HTTP/1.1"
    head = [start, b"Host: 127.0.0.1", *headers]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


# -- oversized, lying and conflicting bodies ------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        ([b"Content-Length: 1000000000000"], b"x" * 10, 413),
        ([b"Content-Length: 4097"], b"x" * 4097, 413),
        ([b"Content-Length: -5"], b"", 400),
        ([b"Content-Length: 12abc"], b"", 400),
        ([b"Content-Length: \xff"], b"", 400),
        ([b"Transfer-Encoding: chunked"], b"5\r\nhello\r\n0\r\n\r\n", 411),
        ([b"Content-Length: 5", b"Content-Length: 500"], b"x" * 5, 400),
        ([b"Content-Length: 1_0"], b"x" * 10, 400),
        ([b"Content-Length: " + b"9" * 5000], b"", 400),
    ],
    ids=[
        "1TB",
        "one-over",
        "negative",
        "not-a-number",
        "latin-1",
        "chunked",
        "conflicting",
        "underscore",
        "5000-digits",
    ],
)
def test_bodies_that_lie_or_overflow(
    tenant: Emulator, headers: list[bytes], body: bytes, expected: int
) -> None:
    # Answered, and the connection closed, while the client could still send the body it
    # announced: the server refused without waiting for (or reading) what it would refuse.
    answer = _answered_while_sending(
        tenant,
        _request(tenant, b"Content-Type: application/x-www-form-urlencoded", *headers, body=body),
    )
    assert _status(answer) == expected, answer[:300]
    assert b"connection: close" in answer.lower()
    _legitimate(tenant)


@pytest.mark.parametrize(
    "data",
    [
        b"POST /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n",
        b"POST / HTTP/1.1\r\nX-Big: " + b"b" * 70_000 + b"\r\n\r\n",
        b"POST / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64),  # TLS to an http port
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        os.urandom(2048),
    ],
    ids=["request-line", "header-line", "200-headers", "tls-hello", "garbage", "http-9", "random"],
)
def test_malformed_requests_are_refused_and_the_server_goes_on(
    tenant: Emulator, data: bytes
) -> None:
    answer = _raw(tenant, data)
    # http.server answers 4xx (or 505) to what it can parse, as an HTTP/0.9-style bare error
    # page when not even the version is readable, and drops the rest.
    if answer.startswith(b"HTTP/"):
        assert _status(answer) in range(400, 500) or _status(answer) == 505, answer[:200]
    else:
        assert answer == b"" or b"Error response" in answer, answer[:200]
    _legitimate(tenant)


def test_a_body_longer_than_its_content_length_is_not_a_second_request(tenant: Emulator) -> None:
    # The extra bytes are read as the next request on the connection: refused, not obeyed.
    smuggled = b"GET /" + tenant.tenant_id.encode() + b"/discovery/v2.0/keys HTTP/1.1\r\n\r\n"
    body = _form(client_secret=SECRET)
    answer = _raw(
        tenant,
        _request(
            tenant,
            b"Content-Type: application/x-www-form-urlencoded",
            b"Content-Length: %d" % len(body),
            body=body + b"\x00" + smuggled,
        ),
    )
    assert _status(answer) == 200
    assert answer.count(b"HTTP/1.") == 2
    assert b'"keys"' not in answer  # the second "request" was not served


# -- slow clients ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_hundred_slowloris_connections_do_not_starve_legitimate_clients(
    tenant: Emulator,
) -> None:
    """20 legitimate requests get tokens while 100 slowloris connections are all still open
    (the deadline watchdog is held meanwhile, so the attack cannot have ended first); then
    the request deadline (1 s; a byte every 50 ms is too often for socket_timeout to end
    them) closes every one of them: each reads EOF or a reset from the server, counted."""
    slow: list[socket.socket] = []
    stop = threading.Event()

    def dribble() -> None:
        # One header byte per connection every 50 ms: each request never completes.
        while not stop.wait(0.05):
            for sock in slow:
                with contextlib.suppress(OSError):
                    sock.sendall(b"a")

    worker = threading.Thread(target=dribble, daemon=True)
    try:
        with _deadlines_held(tenant):
            for _ in range(100):
                slow.append(socket.create_connection(("127.0.0.1", tenant.port), timeout=5))
                slow[-1].sendall(b"POST / HTTP/1.1\r\nX-Slow: ")
            worker.start()
            with httpx.Client(timeout=5) as client:
                for _ in range(20):
                    _legitimate(tenant, client)
            assert _open_count(slow) == len(slow)  # the attack went on throughout
        assert _closed_by_server(slow) == len(slow)
    finally:
        stop.set()
        worker.join(timeout=5)
        for sock in slow:
            sock.close()
    _legitimate(tenant)


@pytest.mark.slow
def test_a_dripped_body_is_cut_off_at_the_deadline(tenant: Emulator) -> None:
    """A body dripped a byte every 20 ms (a pace socket_timeout never ends) is cut off by the
    request deadline while the client is still sending, unanswered: the server's close is
    what the test sees, not a time. 999 of the 1,000 bytes announced, at most: the request
    is never complete, and the loop is bounded."""
    cut_off = False
    with socket.create_connection(("127.0.0.1", tenant.port), timeout=5) as sock:
        sock.sendall(_request(tenant, b"Content-Length: 1000"))
        for _ in range(999):
            try:
                sock.sendall(b"x")
            except OSError:  # the server closed it: a reset, or a broken pipe
                cut_off = True
                break
            readable, _, _ = select.select([sock], [], [], 0.02)
            if readable:
                try:
                    answer = sock.recv(1024)
                except ConnectionResetError:
                    answer = b""
                assert answer == b"", answer[:200]  # closed, not answered
                cut_off = True
                break
    assert cut_off, "the server let a dripped body run to 999 of its 1,000 bytes"
    _legitimate(tenant)


@pytest.mark.slow
def test_a_full_connection_table_recovers_at_the_deadline(rsa_cert: Certificate) -> None:
    """Eight silent connections fill the table: a ninth is closed unanswered while they all
    still hold their slots (the deadline watchdog held meanwhile), not queued; then the
    deadline (the only limit left: socket_timeout is an hour) closes the eight, and whole
    requests are served again. Observed, not timed."""
    limits = ServerLimits(max_connections=8, socket_timeout=3600, request_deadline=1.0)
    with Emulator(limits=limits) as tenant:
        tenant.register_secret(CLIENT_ID, SECRET)
        idle: list[socket.socket] = []
        try:
            with _deadlines_held(tenant):
                for _ in range(8):
                    idle.append(socket.create_connection(("127.0.0.1", tenant.port), timeout=5))
                _wait_until(lambda: _admitted(tenant) == 8, "the server to admit all eight")
                with socket.create_connection(("127.0.0.1", tenant.port), timeout=10) as extra:
                    extra.sendall(_request(tenant, body=b""))
                    assert _closed_by_server([extra]) == 1  # at once: no slot will free up
                assert _open_count(idle) == 8
            assert _closed_by_server(idle) == 8  # the watchdog freed them at the deadline
            _legitimate(tenant)
        finally:
            for sock in idle:
                sock.close()


class _Slowloris:
    """``count`` connections that each send one byte a second and never finish a request, kept
    up by a few threads (select, not a thread per socket: the machine has two cores). A
    connection the server closes is replaced after a second, as an attacker would."""

    def __init__(self, port: int, count: int, *, threads: int = 10) -> None:
        self.port = port
        self.count = count
        self.threads = threads
        #: How long each connection lived before the server closed it (seconds, from before it
        #: connected to when the close was seen: never less than the server held it).
        self.lifetimes: list[float] = []
        self.opened = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []

    def __enter__(self) -> _Slowloris:
        share = -(-self.count // self.threads)
        for index in range(self.threads):
            size = min(share, self.count - index * share)
            worker = threading.Thread(target=self._run, args=(size,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=10)

    def _connect(self) -> socket.socket | None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=2)
            sock.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        except OSError:
            return None
        sock.setblocking(False)
        with self._lock:
            self.opened += 1
        return sock

    def _run(self, size: int) -> None:
        opened: dict[socket.socket, float] = {}
        waiting: list[float] = [0.0] * size  # when to (re)connect each missing one
        next_tick = time.monotonic()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                for index, when in enumerate(waiting):
                    if when == 0.0 or 0.0 < when <= now:
                        began = time.monotonic()
                        sock = self._connect()
                        waiting[index] = -1.0 if sock else now + 1.0
                        if sock is not None:
                            opened[sock] = began
                waiting = [w for w in waiting if w != -1.0]
                readable, _, _ = (
                    select.select(list(opened), [], [], 0.1) if opened else ([], [], [])
                )
                closed = []
                for sock in readable:
                    try:
                        if sock.recv(4096) == b"":
                            closed.append(sock)
                    except (BlockingIOError, InterruptedError):
                        pass
                    except OSError:
                        closed.append(sock)
                if time.monotonic() >= next_tick:
                    next_tick += 1.0
                    for sock in list(opened):
                        try:
                            sock.send(b"a")  # one byte a second
                        except (BlockingIOError, InterruptedError):
                            pass
                        except OSError:
                            closed.append(sock)
                for sock in set(closed):
                    with self._lock:
                        self.lifetimes.append(time.monotonic() - opened.pop(sock))
                    sock.close()
                    waiting.append(time.monotonic() + 1.0)
                if not opened:
                    self._stop.wait(0.05)
        finally:
            for sock in opened:
                sock.close()


@pytest.mark.slow
def test_three_hundred_slow_clients_do_not_stop_valid_token_requests(
    rsa_cert: Certificate, caplog: pytest.LogCaptureFixture
) -> None:
    # The reported attack: 300 connections sending a byte a second made 90% of valid token
    # requests fail for as long as they lasted, and the emulator logged ~24,000 lines. Now the
    # header deadline ends each slow connection (3 s here, 10 s by default), the bounds leave
    # room for whole requests, and drops are one summary line per log_interval.
    from certauth.credential import CertificateCredential

    limits = ServerLimits(header_deadline=3.0, request_deadline=3600, socket_timeout=3600)
    caplog.set_level(logging.WARNING, logger="certauth.emulator")
    with Emulator(limits=limits) as tenant:
        tenant.register(CLIENT_ID, rsa_cert)
        tenant.register_secret(CLIENT_ID, SECRET)
        credential = CertificateCredential(
            tenant.tenant_id,
            CLIENT_ID,
            certificate=rsa_cert,
            token_endpoint=tenant.token_endpoint,
            cache=None,
            timeout=10,
        )
        outcomes: list[bool] = []
        with credential, _Slowloris(tenant.port, 300) as attack:
            _wait_until(lambda: attack.opened >= 300, "the 300 slow connections")
            for _ in range(48):
                try:
                    credential.request_token("api://x/.default", force=True)
                    outcomes.append(True)
                except CertauthError:
                    outcomes.append(False)
                time.sleep(0.1)
            # Until the first wave is closed (and some that reconnected).
            _wait_until(lambda: len(attack.lifetimes) >= 300, "the header deadline", guard=60)
            attacked = attack.opened
        lifetimes = sorted(attack.lifetimes)
        # ...and once the attack stops, the emulator answers as before.
        _legitimate(tenant)
    # (The emulator reports the drops it has not reported yet when it stops.)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    succeeded = sum(outcomes)
    assert succeeded >= 0.95 * len(outcomes), (succeeded, outcomes, attacked)
    assert attacked >= 300, attacked
    # Every slow connection was closed by the header deadline, the only limit left that could
    # (the request deadline and socket_timeout are an hour here), none before it (a lifetime
    # counts from before the connect), and none needed replacing or refusing (300 is within
    # the bounds): counted by the server too.
    assert len(lifetimes) >= 300, len(lifetimes)
    assert lifetimes[0] > limits.header_deadline, lifetimes[:5]
    assert 1 <= len(warnings) <= 5, warnings
    assert all(" 0 replaced" in w and " 0 refused" in w for w in warnings), warnings
    past_deadline = sum(int(re.search(r"(\d+) past the deadline", w)[1]) for w in warnings)
    assert past_deadline >= 300, warnings


def test_a_full_client_share_makes_room_for_a_whole_request() -> None:
    """When a client address holds all it may, a new connection takes the place of the one
    that has waited longest for its headers: slow clients cannot lock out whole requests.
    The deadlines (30 s) are far beyond the test's guards, so the legitimate request can get
    its token only by that replacement: the oldest slow connection is closed and the seven
    others are still open once it is answered."""
    limits = ServerLimits(max_connections_per_client=8, header_deadline=30, request_deadline=30)
    with Emulator(limits=limits) as tenant:
        tenant.register_secret(CLIENT_ID, SECRET)
        slow = []
        try:
            for _ in range(8):
                sock = socket.create_connection(("127.0.0.1", tenant.port), timeout=5)
                sock.sendall(b"POST / HTTP/1.1\r\nX-Slow: ")
                slow.append(sock)
                # Admitted in this order (the oldest is the one to replace).
                _wait_until(lambda: _admitted(tenant) == len(slow), "the server to admit it")
                time.sleep(0.05)
            # Every one has waited the second that makes it replaceable, by the server's clock
            # too (it admitted each before this sleep began).
            time.sleep(_ConnectionTable.EVICTABLE_AFTER + 0.1)
            _legitimate(tenant)
            assert _closed_by_server(slow[:1]) == 1  # the oldest made room
            assert _open_count(slow[1:]) == 7  # the others are still open
        finally:
            for sock in slow:
                sock.close()


def test_the_header_deadline_closes_slow_connections_under_the_bounds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Fewer slow clients than a client address may hold: nothing is replaced or refused;
    legitimate requests are answered while all 60 are connected (the deadline watchdog held
    meanwhile, so none can have ended yet); then the header deadline alone closes each one.
    The request deadline and socket_timeout are an hour here, so no other limit could have
    closed them, and none was closed before its 1.5 s (each lifetime counts from before its
    connect, so it is never shorter than the server's). Counted and observed, not timed: the
    guards only keep a regression from hanging."""
    limits = ServerLimits(
        header_deadline=1.5, request_deadline=3600, socket_timeout=3600, log_interval=60
    )
    caplog.set_level(logging.WARNING, logger="certauth.emulator")
    with Emulator(limits=limits) as tenant:
        tenant.register_secret(CLIENT_ID, SECRET)
        with (
            _deadlines_held(tenant) as let_deadlines_go,
            _Slowloris(tenant.port, 60, threads=4) as attack,
        ):
            _wait_until(lambda: attack.opened >= 60, "the 60 slow connections")
            with httpx.Client(timeout=5) as client:
                for _ in range(10):
                    _legitimate(tenant, client)
            assert (attack.opened, attack.lifetimes) == (60, [])  # all still connected
            let_deadlines_go()
            _wait_until(lambda: len(attack.lifetimes) >= 60, "the header deadline", guard=60)
        _legitimate(tenant)
    lifetimes = sorted(attack.lifetimes)
    assert lifetimes[0] > limits.header_deadline, lifetimes[:5]  # none closed early
    # The first drop is reported at once, the rest summed up (here when the server stops).
    summaries = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert 1 <= len(summaries) <= 2, summaries
    for summary in summaries:
        assert " 0 replaced" in summary, summary
        assert " 0 refused" in summary, summary
    past_deadline = sum(int(re.search(r"(\d+) past the deadline", m)[1]) for m in summaries)
    assert past_deadline >= 60, summaries  # the server's own count: the deadline closed them


def test_server_limits_refuse_nonsense() -> None:
    with pytest.raises(InvalidArgumentError, match="header_deadline"):
        ServerLimits(header_deadline=float("nan"))
    with pytest.raises(InvalidArgumentError, match="max_connections_per_client"):
        ServerLimits(max_connections_per_client=0)


# -- malformed Authorization headers --------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        b"Basic \xff\xfe\xfd",
        b"Basic " + b"A" * 20_000,
        b"Basic Og==",
        b"Basic " + base64.b64encode(b"\xff\xfe:\x80"),
        b"Basic " + base64.b64encode(b"%zz:%"),
        b"Basic " + base64.b64encode(f"{CLIENT_ID}:wrong".encode()),
        b"Basic",
        b"basic    ",
        b"Bearer eyJhbGciOiJub25lIn0.e30.",
        b"Negotiate YIIBhwYGKwYBBQUCoIIBezCCAXeg",
        b"\x00\x01\x02",
    ],
)
def test_malformed_authorization_headers(tenant: Emulator, value: bytes) -> None:
    body = _form()
    answer = _raw(
        tenant,
        _request(
            tenant,
            b"Content-Type: application/x-www-form-urlencoded",
            b"Authorization: " + value,
            b"Content-Length: %d" % len(body),
            b"Connection: close",
            body=body,
        ),
    )
    status = _status(answer)
    assert status in (400, 401), answer[:300]
    document = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert document["error"] in {"invalid_client", "invalid_request"}
    assert SECRET not in answer.decode("latin-1")
    _legitimate(tenant)


def test_two_authorization_headers(tenant: Emulator) -> None:
    body = _form()
    basic = base64.b64encode(f"{CLIENT_ID}:{SECRET}".encode())
    answer = _raw(
        tenant,
        _request(
            tenant,
            b"Content-Type: application/x-www-form-urlencoded",
            b"Authorization: Basic " + basic,
            b"Authorization: Basic Og==",
            b"Content-Length: %d" % len(body),
            b"Connection: close",
            body=body,
        ),
    )
    assert _status(answer) in (200, 400, 401)


# -- 10,000 forged thumbprints and key ids --------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


#: Forged requests pipelined on one connection per batch (four batches).
FORGED_PER_BATCH = 2500


def _forged_requests(tenant: Emulator, count: int, seed: int) -> bytes:
    """``count`` pipelined token requests, each naming a thumbprint and kid nobody registered."""
    rng = __import__("random").Random(seed)
    requests = []
    claims = _b64url(
        json.dumps(
            {"iss": CLIENT_ID, "sub": CLIENT_ID, "aud": tenant.token_endpoint, "exp": 4_000_000_000}
        ).encode()
    )
    signature = _b64url(os.urandom(256))
    for index in range(count):
        header = {
            "alg": "PS256" if index % 2 else "RS256",
            "kid": f"forged-{seed}-{index}",
            ("x5t#S256" if index % 2 else "x5t"): _b64url(rng.randbytes(32 if index % 2 else 20)),
        }
        assertion = f"{_b64url(json.dumps(header).encode())}.{claims}.{signature}"
        body = _form(client_assertion_type=CLIENT_ASSERTION_TYPE, client_assertion=assertion)
        requests.append(
            b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-"
            b"urlencoded\r\nContent-Length: %d\r\n\r\n%s"
            % (_path(tenant).encode(), len(body), body)
        )
    return b"".join(requests)


def _pipeline(tenant: Emulator, payload: bytes, expected: int) -> list[int]:
    """Send pipelined requests on one keep-alive connection; the statuses in order."""
    statuses: list[int] = []
    with socket.create_connection(("127.0.0.1", tenant.port), timeout=10) as sock:
        sender = threading.Thread(target=sock.sendall, args=(payload,), daemon=True)
        sender.start()
        answers = sock.makefile("rb")
        for _ in range(expected):
            status_line = answers.readline()
            assert status_line.startswith(b"HTTP/1.1 "), status_line
            length = 0
            while (line := answers.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            answers.read(length)
            statuses.append(int(status_line.split()[1]))
        sender.join(timeout=10)
    return statuses


def _entries_held(*roots: object) -> int:
    """The entries of every container reachable from ``roots`` through certauth's own objects
    (their attributes, class attributes, and the dicts, lists, tuples, sets and deques among
    them; ``functools`` caches by their size): the state a request could make grow. Other
    libraries' objects (sockets, threads, keys) are not entered."""
    seen: set[int] = set()
    entries = 0
    stack = list(roots)
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, dict):
            entries += len(obj)
            stack += [*obj.keys(), *obj.values()]
        elif isinstance(obj, (list, tuple, set, frozenset, collections.deque)):
            entries += len(obj)
            stack += obj
        elif hasattr(obj, "cache_info"):
            entries += obj.cache_info().currsize
        elif isinstance(obj, type):
            if obj.__module__.startswith("certauth"):
                stack += vars(obj).values()
        elif type(obj).__module__.startswith("certauth"):
            stack += getattr(obj, "__dict__", {}).values()
            slots = (n for c in type(obj).__mro__ for n in getattr(c, "__slots__", ()))
            stack += [getattr(obj, name) for name in slots if hasattr(obj, name)]
    return entries


@pytest.mark.slow
def test_ten_thousand_forged_thumbprints_and_kids(
    tenant: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forged thumbprints cost the emulator the same small, fixed work each and leave nothing
    behind: one key lookup (among the app's own keys) and no signature check per forgery, and
    no state that grows with them, so the last of 10,000 costs what the first did and a
    legitimate client is served between the batches. Counted, not timed."""
    work = {"lookups": 0, "signature checks": 0}
    find_certificate, verify_signature = App.find_certificate, _jose.verify_signature

    def counted_lookup(app: App, **digests: Any) -> Any:
        work["lookups"] += 1
        return find_certificate(app, **digests)

    def counted_check(*args: Any) -> bool:
        work["signature checks"] += 1
        return verify_signature(*args)

    monkeypatch.setattr(App, "find_certificate", counted_lookup)
    monkeypatch.setattr(_jose, "verify_signature", counted_check)
    # Module state counts too (a cache of refused keys would be one).
    modules = [vars(m) for name, m in sys.modules.items() if name.startswith("certauth")]
    # The emulator runs in this process: quiet its per-refusal log line for the flood.
    logger = logging.getLogger("certauth.emulator")
    saved = logger.level
    logger.setLevel(logging.ERROR)
    try:
        batches = [_forged_requests(tenant, FORGED_PER_BATCH, seed) for seed in range(4)]
        per_batch, held = [], []
        # Each legitimate request on a connection of its own: a kept-alive one may be closed
        # as idle while a batch runs (RFC 9112 section 9.3), and a POST is not retried on it.
        _legitimate(tenant)
        for payload in batches:
            before = dict(work)
            statuses = _pipeline(tenant, payload, FORGED_PER_BATCH)
            assert set(statuses) == {401}
            _legitimate(tenant)  # still served
            per_batch.append({k: work[k] - before[k] for k in work})
            held.append(_entries_held(tenant, *modules))
    finally:
        logger.setLevel(saved)
    # One lookup per forgery, refused by it: no RSA work, no other key tried.
    assert per_batch == [{"lookups": FORGED_PER_BATCH, "signature checks": 0}] * 4
    # Bounded state (the token endpoint keeps its last 1,000 claims values) is full after the
    # first batch; an entry kept per forgery would add 2,500 a batch. (The connection table
    # may still hold a pipelined connection while it closes: a few entries.)
    assert max(held) - held[0] < 25, held
    assert tenant.last_thumbprint is None  # nothing forged was ever accepted


def test_ten_thousand_forged_kids_against_a_verifier(
    tenant: Emulator, rsa_cert: Certificate
) -> None:
    """A backend fed tokens with made-up kids must not hammer the issuer's JWKS endpoint: an
    unknown kid refetches the keys at most once per refetch interval. The verifier's clock is
    the test's (the tokens arrive a millisecond apart, the second half of them after a
    refetch interval), so the count does not depend on how long the verifications take."""
    fetches = {"keys": 0}
    now = [0.0]

    def count(request: httpx.Request) -> None:
        fetches["keys"] += request.url.path.endswith("/keys")

    good = tenant.register(CLIENT_ID, rsa_cert)  # noqa: F841 - the app also holds a certificate
    with httpx.Client(timeout=5, event_hooks={"request": [count]}) as client:
        verifier = TokenVerifier(
            issuer=tenant.issuer, audience="api://x", client=client, clock=lambda: now[0]
        )
        header_claims = _b64url(json.dumps({"aud": "api://x", "iss": tenant.issuer}).encode())
        for index in range(10_000):
            now[0] = index / 1000 + (DEFAULT_REFETCH_INTERVAL if index >= 5_000 else 0.0)
            head = _b64url(json.dumps({"alg": "RS256", "kid": f"forged-{index}"}).encode())
            with pytest.raises(TokenValidationError) as caught:
                verifier.verify(f"{head}.{header_claims}.c2ln")
            assert caught.value.check == "kid"
        verifier.close()
    assert fetches["keys"] == 2  # the first fetch, and one refetch once the interval passed
