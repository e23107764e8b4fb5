"""The emulator under abuse, over real loopback sockets: it keeps serving legitimate clients.

Extends ``tests/emulator/test_emulator_server.py`` (one oversized form, one slow client) with
lying and conflicting lengths, oversized request lines and headers, a hundred slowloris
connections at once, a full connection table, malformed Authorization headers sent as raw
bytes, and 10,000 distinct forged thumbprints and key ids. Every loop is bounded and every
socket has a timeout, so a regression fails instead of hanging.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import json
import logging
import os
import select
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from certauth import _jose
from certauth.certificates import Certificate
from certauth.emulator import Emulator
from certauth.emulator.registry import App
from certauth.emulator.server import ServerLimits
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


def _legitimate(tenant: Emulator, client: httpx.Client | None = None) -> float:
    """A legitimate token request; returns its latency (and fails unless it got a token)."""
    started = time.perf_counter()
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
    return time.perf_counter() - started


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
    started = time.perf_counter()
    answer = _raw(
        tenant,
        _request(tenant, b"Content-Type: application/x-www-form-urlencoded", *headers, body=body),
    )
    assert _status(answer) == expected, answer[:300]
    assert b"connection: close" in answer.lower()
    assert time.perf_counter() - started < 1  # answered at once, nothing waited for
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
    slow = [socket.create_connection(("127.0.0.1", tenant.port), timeout=5) for _ in range(100)]
    stop = threading.Event()

    def dribble() -> None:
        # One header byte per connection every 50 ms: each request never completes.
        for sock in slow:
            sock.sendall(b"POST / HTTP/1.1\r\nX-Slow: ")
        while not stop.wait(0.05):
            for sock in slow:
                with contextlib.suppress(OSError):
                    sock.sendall(b"a")

    worker = threading.Thread(target=dribble, daemon=True)
    worker.start()
    try:
        with httpx.Client(timeout=5) as client:
            latencies = [_legitimate(tenant, client) for _ in range(20)]
        assert max(latencies) < 1.0, latencies
        # The request deadline (1 s, checked every 0.5 s) cuts every slow connection off.
        deadline = time.monotonic() + LIMITS.request_deadline + 2.0
        closed = 0
        for sock in slow:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                closed += sock.recv(1024) == b""
            except OSError:
                closed += 1
        assert closed == len(slow)
    finally:
        stop.set()
        worker.join(timeout=5)
        for sock in slow:
            sock.close()
    _legitimate(tenant)


@pytest.mark.slow
def test_a_dripped_body_is_cut_off_at_the_deadline(tenant: Emulator) -> None:
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", tenant.port), timeout=5) as sock:
        sock.sendall(_request(tenant, b"Content-Length: 1000"))
        answer = b""
        with contextlib.suppress(OSError):
            for _ in range(100):  # bounded: 100 x 50 ms
                sock.sendall(b"x")
                time.sleep(0.05)
        with contextlib.suppress(OSError):
            answer = sock.recv(1024)
    assert answer == b""
    assert time.perf_counter() - started < 5
    _legitimate(tenant)


@pytest.mark.slow
def test_a_full_connection_table_recovers_at_the_deadline(rsa_cert: Certificate) -> None:
    limits = ServerLimits(max_connections=8, socket_timeout=2, request_deadline=1.0)
    with Emulator(limits=limits) as tenant:
        tenant.register_secret(CLIENT_ID, SECRET)
        idle = [socket.create_connection(("127.0.0.1", tenant.port), timeout=5) for _ in range(8)]
        try:
            time.sleep(0.2)
            # Every slot is held: a new connection is closed at once, not queued for ever.
            assert _raw(tenant, _request(tenant, body=b"")) == b""
            # The watchdog frees the idle ones at the deadline (1 s, checked every 0.5 s).
            deadline = time.monotonic() + limits.request_deadline + 2.0
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError, AssertionError):
                    _legitimate(tenant)
                    break
                time.sleep(0.1)
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
        #: How long each connection lived before the server closed it (seconds).
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
                        sock = self._connect()
                        waiting[index] = -1.0 if sock else now + 1.0
                        if sock is not None:
                            opened[sock] = time.monotonic()
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

    limits = ServerLimits(header_deadline=3.0)
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
            time.sleep(1.0)  # all 300 are connected and dripping by now
            started = time.monotonic()
            for _ in range(48):
                try:
                    credential.request_token("api://x/.default", force=True)
                    outcomes.append(True)
                except CertauthError:
                    outcomes.append(False)
                time.sleep(0.1)
            # Past the deadline of the first wave, and of some that reconnected.
            time.sleep(max(0.0, limits.header_deadline + 2.0 - (time.monotonic() - started)))
            attacked = attack.opened
        lifetimes = sorted(attack.lifetimes)
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        # ...and once the attack stops, the emulator answers as before.
        _legitimate(tenant)
    succeeded = sum(outcomes)
    assert succeeded >= 0.95 * len(outcomes), (succeeded, outcomes, attacked)
    assert attacked >= 300, attacked
    # Every slow connection was closed at the header deadline (checked four times a second;
    # the client notices within its one-second tick): none was let run to the 30 s request
    # deadline, and none needed replacing or refusing (300 is within the bounds).
    assert len(lifetimes) >= 300, len(lifetimes)
    assert lifetimes[0] >= limits.header_deadline - 0.1, lifetimes[:5]
    assert lifetimes[-1] < limits.header_deadline + 2.0, lifetimes[-5:]
    assert 1 <= len(warnings) <= 5, warnings
    assert all(" 0 replaced" in w and " 0 refused" in w for w in warnings), warnings


def test_a_full_client_share_makes_room_for_a_whole_request() -> None:
    # When a client address holds all it may, a new connection takes the place of the one that
    # has waited longest for its headers: slow clients cannot lock out whole requests.
    limits = ServerLimits(max_connections_per_client=8, header_deadline=30, request_deadline=30)
    with Emulator(limits=limits) as tenant:
        tenant.register_secret(CLIENT_ID, SECRET)
        slow = []
        for _ in range(8):
            sock = socket.create_connection(("127.0.0.1", tenant.port), timeout=5)
            sock.sendall(b"POST / HTTP/1.1\r\nX-Slow: ")
            slow.append(sock)
            time.sleep(0.05)
        try:
            time.sleep(1.1)  # every one has waited a second for its headers
            assert _legitimate(tenant) < 1.0
            slow[0].settimeout(2)
            assert slow[0].recv(1024) == b""  # the oldest made room
            for sock in slow[1:]:
                sock.settimeout(0.2)
                with pytest.raises(TimeoutError):
                    sock.recv(1024)  # the others are still open
        finally:
            for sock in slow:
                sock.close()


def test_the_header_deadline_closes_slow_connections_under_the_bounds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Fewer slow clients than a client address may hold: nothing is replaced or refused, and
    # the header deadline alone closes each one (not the 30 s request deadline).
    limits = ServerLimits(header_deadline=1.5, log_interval=60)
    caplog.set_level(logging.WARNING, logger="certauth.emulator")
    with Emulator(limits=limits) as tenant:
        tenant.register_secret(CLIENT_ID, SECRET)
        with _Slowloris(tenant.port, 60, threads=4) as attack:
            with httpx.Client(timeout=5) as client:
                latencies = [_legitimate(tenant, client) for _ in range(10)]
            time.sleep(limits.header_deadline + 1.5)
        assert max(latencies) < 1.0, latencies
    first = sorted(attack.lifetimes[:60])  # the first connections' (closed in that order)
    assert len(first) == 60, len(attack.lifetimes)
    # Closed at the deadline (checked four times a second; seen within the client's tick).
    assert first[0] >= limits.header_deadline - 0.1, first[:5]
    assert first[-1] < limits.header_deadline + 1.5, first[-5:]
    # The first drop is reported at once, the rest summed up (here when the server stops).
    summaries = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert 1 <= len(summaries) <= 2, summaries
    for summary in summaries:
        assert " 0 replaced" in summary, summary
        assert " 0 refused" in summary, summary


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
        with httpx.Client(timeout=5) as client:
            _legitimate(tenant, client)
            for payload in batches:
                before = dict(work)
                statuses = _pipeline(tenant, payload, FORGED_PER_BATCH)
                assert set(statuses) == {401}
                _legitimate(tenant, client)  # still served
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
