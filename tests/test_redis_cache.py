"""The Redis token cache: the store protocol, fleet-wide single flight across processes, a
holder killed while fetching, Redis outages, encryption at rest, async, the CLI and the README.

The tests talk to a real ``redis-server`` started on a free loopback port (no persistence, in a
temporary directory) and stopped afterwards. ``scripts/test`` installs it when missing; without it
the tests that need it are skipped with the reason (all of them without the ``redis`` package).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

redis = pytest.importorskip(
    "redis", reason="the redis package is not installed (certauth-toolkit[redis])"
)

import _redis_fleet  # noqa: E402 - tests/_redis_fleet.py
from _docs import section  # noqa: E402 - tests/_docs.py

from certauth import (  # noqa: E402 - after the skip above
    AsyncCertificateCredential,
    CertificateCredential,
    RetryPolicy,
)
from certauth.cache import EntryCipher, RedisTokenCache, TokenCache  # noqa: E402
from certauth.certificates import Certificate  # noqa: E402
from certauth.emulator import Clock, Emulator  # noqa: E402
from certauth.errors import ConfigurationError, InvalidArgumentError  # noqa: E402

REDIS_SERVER = shutil.which("redis-server")

CLIENT = "11111111-2222-3333-4444-555555555555"
SCOPE = "api://billing/.default"
NO_RETRY = RetryPolicy(max_attempts=1)
ROOT = Path(__file__).resolve().parents[1]


# -- a real redis-server on loopback ------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """``redis-server`` on 127.0.0.1 (and a Unix socket), restartable on the same port."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = _free_port()
        # Unix socket paths are limited to ~100 bytes; pytest's tmp paths can be longer.
        self.socket_path = f"/tmp/certauth-redis-{os.getpid()}-{self.port}.sock"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def unix_url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self) -> RedisServer:
        if REDIS_SERVER is None:
            pytest.skip("redis-server is not installed (scripts/ensure-services installs it)")
        self.folder.mkdir(parents=True, exist_ok=True)
        command = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.folder)]
        command += ["--unixsocket", self.socket_path, "--unixsocketperm", "700"]
        with open(self.folder / "redis.log", "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.RedisError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log_text = (self.folder / "redis.log").read_text(errors="replace")
                    raise RuntimeError(f"redis-server did not start:\n{log_text}") from None
                time.sleep(0.02)
            finally:
                client.close()
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            self.process = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def raw(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A plain client to the shared server, emptied before each test."""
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def tenant(rsa_cert: Certificate) -> Iterator[Emulator]:
    with Emulator() as emulator:
        emulator.register(CLIENT, rsa_cert)
        yield emulator


def credential(
    tenant: Emulator, cert: Certificate, cache: TokenCache, **kw: object
) -> CertificateCredential:
    kw.setdefault("retry", NO_RETRY)
    return CertificateCredential(
        tenant.tenant_id,
        CLIENT,
        certificate=cert,
        authority=tenant.authority_host,
        cache=cache,
        **kw,
    )


def _write_pem(path: Path, cert: Certificate) -> str:
    path.write_bytes(cert.private_key_pem() + cert.pem)
    return str(path)


# -- the store protocol -------------------------------------------------------------------------


def test_get_set_delete_and_expiry_equal_to_the_token_life(
    raw: redis.Redis, redis_server: RedisServer
) -> None:
    cache = RedisTokenCache(redis_server.url)
    assert isinstance(cache, TokenCache)
    assert cache.get("k") is None
    cache.set("k", b"\x00entry", time.time() + 60)
    assert cache.get("k") == b"\x00entry"
    (name,) = raw.keys("*")
    assert 58_000 < raw.pttl(name) <= 60_000  # PX = the remaining life
    cache.delete("k")
    assert cache.get("k") is None
    cache.delete("k")  # deleting what is not there is fine
    # Redis drops the entry when the token dies; a dead token is never written.
    cache.set("short", b"v", time.time() + 0.3)
    cache.set("dead", b"v", time.time() - 1)
    assert cache.get("dead") is None
    time.sleep(0.4)
    assert cache.get("short") is None
    assert raw.keys("*") == []
    cache.close()


def test_keys_are_namespaced_and_hashed(raw: redis.Redis, redis_server: RedisServer) -> None:
    key = f"https://login.example/t/oauth2/v2.0/token\x1f{CLIENT}\x1ffp\x1f{SCOPE}"
    billing = RedisTokenCache(redis_server.url, namespace="billing")
    orders = RedisTokenCache(redis_server.url, namespace="orders")
    billing.set(key, b"b", time.time() + 60)
    assert orders.get(key) is None
    orders.set(key, b"o", time.time() + 60)
    assert (billing.get(key), orders.get(key)) == (b"b", b"o")
    with billing.lock(key):
        names = sorted(n.decode() for n in raw.keys("*"))
    assert [n.split(":", 1)[0] for n in names] == ["billing", "billing", "orders"]
    for name in names:
        assert CLIENT not in name
        assert "billing/.default" not in name
        assert "login" not in name
        # One hash tag per token: its entry and its lock share a Redis Cluster slot.
        assert re.fullmatch(r"(billing|orders):\{[0-9a-f]{32}\}:(token|lock)", name)
    with pytest.raises(InvalidArgumentError, match="non-empty string without braces, got ''"):
        RedisTokenCache(redis_server.url, namespace="")
    with pytest.raises(InvalidArgumentError, match=re.escape("without braces, got 'a{b}'")):
        RedisTokenCache(redis_server.url, namespace="a{b}")


def test_lock_is_released_only_by_its_owner(
    raw: redis.Redis, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    first = RedisTokenCache(redis_server.url, lock_timeout=5)
    second = RedisTokenCache(redis_server.url, lock_timeout=5, wait_timeout=0.3)
    mine = first.lock("k")
    assert mine.__enter__() is True
    (lock_name,) = raw.keys("*:lock")
    owner = raw.get(lock_name)
    # A release with another fencing token leaves the lock alone.
    assert first._release(keys=[lock_name], args=["not-the-owner"]) == 0
    assert raw.get(lock_name) == owner
    # A second caller waits, and gives up after wait_timeout without the lock.
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="certauth"), second.lock("k") as waited:
        assert waited is False
    assert 0.25 < time.monotonic() - started < 2
    assert "fetching without it" in caplog.text
    # The lock expires while held (simulated), the second caller takes it, and the first
    # holder's release (when its block ends) must not delete the new owner's lock.
    raw.delete(lock_name)
    theirs = second.lock("k")
    assert theirs.__enter__() is True
    their_owner = raw.get(lock_name)
    assert their_owner not in (None, owner)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="certauth"):
        mine.__exit__(None, None, None)
    assert "expired while held" in caplog.text
    assert raw.get(lock_name) == their_owner
    theirs.__exit__(None, None, None)
    assert raw.keys("*:lock") == []  # released by its owner


@pytest.mark.slow
def test_lock_lives_while_its_holder_works_and_waiters_see_new_entries(
    raw: redis.Redis, redis_server: RedisServer
) -> None:
    holder = RedisTokenCache(redis_server.url, lock_timeout=0.3)
    waiter = RedisTokenCache(redis_server.url, lock_timeout=0.3, wait_timeout=10)
    holder.set("k", b"old entry", time.time() + 60)  # refresh-ahead: a valid entry exists
    results: list[bool] = []
    with holder.lock("k"):
        thread = threading.Thread(target=lambda: results.append(_enter(waiter, "k")))
        thread.start()
        # Three lock lifetimes later the holder still has it (kept alive), and the old entry
        # did not release the waiter.
        time.sleep(1.0)
        assert thread.is_alive()
        assert results == []
        (lock_name,) = raw.keys("*:lock")
        assert 0 < raw.pttl(lock_name) <= 300
        holder.set("k", b"new entry", time.time() + 60)
        thread.join(5)
        assert results == [False]  # released by the new entry, not by the lock
    # A holder that stores nothing (its fetch failed) hands the lock to the next waiter.
    with holder.lock("k"):
        thread = threading.Thread(target=lambda: results.append(_enter(waiter, "k")))
        thread.start()
        time.sleep(0.2)
        assert thread.is_alive()
    thread.join(5)
    assert results == [False, True]


def _enter(cache: RedisTokenCache, key: str) -> bool:
    with cache.lock(key) as held:
        return held


@pytest.mark.slow
def test_lock_of_a_killed_holder_expires(raw: redis.Redis, redis_server: RedisServer) -> None:
    script = (
        "import sys, time\n"
        "from certauth.cache import RedisTokenCache\n"
        "cache = RedisTokenCache(sys.argv[1], lock_timeout=0.5)\n"
        "held = cache.lock('k')\n"
        "held.__enter__()  # and never left\n"
        "print('held', flush=True)\n"
        "time.sleep(60)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script, redis_server.url], stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"held\n"
        time.sleep(0.7)  # longer than lock_timeout: the living holder keeps it
        assert raw.keys("*:lock")
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        started = time.monotonic()
        with RedisTokenCache(redis_server.url).lock("k") as held:
            assert held is True
        assert time.monotonic() - started < 0.5 + 0.5
    finally:
        holder.kill()
        holder.wait(10)
        assert holder.stdout is not None
        holder.stdout.close()


def test_redis_down_or_silent_fails_fast_and_recovers(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "own").start()
    try:
        cache = RedisTokenCache(server.url, socket_timeout=0.3)
        cache.set("k", b"v", time.time() + 60)
        server.stop()
        started = time.monotonic()
        refused = f"connecting to 127.0.0.1:{server.port}. Connection refused"
        with pytest.raises(redis.ConnectionError, match=refused):
            cache.get("k")
        with pytest.raises(redis.ConnectionError, match=refused), cache.lock("k"):
            pass
        assert time.monotonic() - started < 0.5
        server.start()  # same port, empty (no persistence)
        assert cache.get("k") is None  # reconnected: a failed connection does not stick
        cache.set("k", b"v", time.time() + 60)
        # A restart between two calls is invisible: the dead pooled connection is replaced.
        server.stop()
        server.start()
        assert cache.get("k") is None
    finally:
        server.stop()
    # A server that accepts connections but never answers: each call fails after
    # socket_timeout, once (no retry on timeouts).
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        port = silent.getsockname()[1]
        cache = RedisTokenCache(f"redis://127.0.0.1:{port}", socket_timeout=0.3)
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError, match="Timeout reading"):
            cache.get("k")
        assert time.monotonic() - started < 0.55


def test_settings_are_checked_and_repr_hides_the_password(redis_server: RedisServer) -> None:
    cache = RedisTokenCache("rediss://app:s3cret@cache.example:6380/2?ssl_cert_reqs=none")
    assert "s3cret" not in repr(cache)
    assert "app" not in repr(cache)
    assert repr(cache) == "RedisTokenCache('rediss://cache.example:6380/2', namespace='certauth')"
    assert "unix:///run/redis.sock" in repr(RedisTokenCache("unix:///run/redis.sock"))
    for bad in ("http://:s3cret@host", "localhost:6379", "redis://host:99999999"):
        with pytest.raises(InvalidArgumentError) as info:
            RedisTokenCache(bad)
        assert "s3cret" not in str(info.value)
    # A database that is not a number is refused, not quietly taken as 0 (redis-py's reading).
    for bad, db in (
        ("redis://:s3cret@host/zero", "zero"),
        ("rediss://host:6380/1x", "1x"),
        ("redis://host/2?db=two", "two"),
        ("unix:///run/redis.sock?db=-1", "-1"),
    ):
        with pytest.raises(InvalidArgumentError) as info:
            RedisTokenCache(bad)
        assert str(info.value).startswith(
            f"the token cache URL names database {db!r}, not a number; use redis://"
        )
        assert "s3cret" not in str(info.value)
    assert "/3" in repr(RedisTokenCache("redis://host/3"))
    RedisTokenCache("redis://host?db=4")
    for option in ("lock_timeout", "wait_timeout", "socket_timeout"):
        with pytest.raises(InvalidArgumentError, match=option):
            RedisTokenCache(redis_server.url, **{option: 0})
    with pytest.raises(ConfigurationError, match="decode_responses"):
        RedisTokenCache(redis.Redis(port=redis_server.port, decode_responses=True))
    from redis.asyncio import Redis as AsyncRedis

    with pytest.raises(InvalidArgumentError, match="synchronous"):
        RedisTokenCache(AsyncRedis(port=redis_server.port))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=r"or a redis\.RedisCluster client, not int"):
        RedisTokenCache(42)  # type: ignore[arg-type]
    # A ready client is used as is (and not closed by us).
    client = redis.Redis(port=redis_server.port)
    given = RedisTokenCache(client, namespace="given")
    given.set("k", b"v", time.time() + 60)
    given.close()
    assert client.get(given._key("k", "token")) == b"v"
    client.close()


def test_replicas_on_a_server_without_replicas_waits_briefly_and_says_so(
    raw: redis.Redis, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """replicas=N on one server: each lock attempt and entry write is followed by WAIT on the
    same connection; with no replica to acknowledge, each waits half of socket_timeout, goes
    on (the write is on the server) and the cache warns once."""
    cache = RedisTokenCache(redis_server.url, replicas=1, socket_timeout=0.4)
    assert cache.failover_timeout == 0.0
    with caplog.at_level(logging.WARNING, logger="certauth"):
        started = time.monotonic()
        cache.set("k", b"entry", time.time() + 60)
        with cache.lock("k") as held:
            assert held is True
        elapsed = time.monotonic() - started
    assert elapsed > 0.35, elapsed  # two WAITs of 200 ms (no upper bound: load stretches it)
    assert caplog.text.count("reached 0 of the 1 replicas") == 1
    assert cache.get("k") == b"entry"
    assert raw.keys("*:lock") == []
    wait_calls = raw.info("commandstats")["cmdstat_wait"]["calls"]
    assert wait_calls >= 2
    cache.close()


def test_unix_socket_url(raw: redis.Redis, redis_server: RedisServer) -> None:
    cache = RedisTokenCache(redis_server.unix_url)
    cache.set("k", b"over a unix socket", time.time() + 60)
    assert RedisTokenCache(redis_server.url).get("k") == b"over a unix socket"


def test_importing_without_the_redis_package_says_what_to_install() -> None:
    script = (
        "import sys\n"
        "sys.modules['redis'] = None  # as if not installed\n"
        "import certauth.cache\n"
        "from certauth.errors import ConfigurationError\n"
        "for where in ('certauth.cache', 'certauth'):\n"
        "    try:\n"
        "        exec(f'from {where} import RedisTokenCache')\n"
        "    except ImportError as exc:\n"
        "        assert isinstance(exc, ConfigurationError), type(exc)\n"
        "        print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    lines = done.stdout.splitlines()
    assert len(lines) == 2, done
    # The distribution's name (not the import name: "certauth" on PyPI is another project).
    assert all("pip install 'certauth-toolkit[redis]'" in line for line in lines)
    assert all("pip install 'certauth[redis]'" not in line for line in lines)


# -- the credential with the Redis cache ---------------------------------------------------------


def test_entries_are_encrypted_at_rest_and_shared(
    tenant: Emulator, rsa_cert: Certificate, raw: redis.Redis, redis_server: RedisServer
) -> None:
    cache = RedisTokenCache(redis_server.url)
    with credential(tenant, rsa_cert, cache) as first:
        token = first.request_token(SCOPE)
    (name,) = raw.keys("*")
    stored = raw.get(name)
    assert stored is not None
    assert token.access_token.encode() not in stored
    for part in token.access_token.split("."):
        assert part.encode() not in stored  # not even the claims segment
    assert CLIENT.encode() not in stored
    assert b"billing" not in stored
    assert 0 < raw.pttl(name) <= (token.expires_on - time.time() + 1) * 1000
    assert rsa_cert.private_key is not None
    cipher = EntryCipher.from_private_key(rsa_cert.private_key)
    assert cipher.open(name.decode(), stored) is None  # bound to the cache key, not the name
    with credential(tenant, rsa_cert, cache) as second:
        assert second.request_token(SCOPE).access_token == token.access_token
    assert tenant.request_count == 1


def test_refresh_ahead_works_fleet_wide(
    rsa_cert: Certificate, raw: redis.Redis, redis_server: RedisServer
) -> None:
    clock = Clock()
    with Emulator(clock=clock, token_lifetime=3600) as tenant:
        tenant.register(CLIENT, rsa_cert)
        cache = RedisTokenCache(redis_server.url)
        replicas = [credential(tenant, rsa_cert, cache, clock=clock.time) for _ in range(5)]
        first = {r.get_token(SCOPE).token for r in replicas}
        assert len(first) == 1
        assert tenant.request_count == 1
        clock.advance(1801)  # past half-life: every replica renews ahead ...
        second = {r.get_token(SCOPE).token for r in replicas}
        assert len(second) == 1
        assert second != first
        assert tenant.request_count == 2  # ... with one request for all of them
        for replica in replicas:
            replica.close()


def test_async_credentials_share_one_request(
    tenant: Emulator, rsa_cert: Certificate, raw: redis.Redis, redis_server: RedisServer
) -> None:
    cache = RedisTokenCache(redis_server.url)
    tenant.inject_faults(delay=0.3, count=1)  # all callers arrive while the first fetches

    async def main() -> set[str]:
        replicas = [
            AsyncCertificateCredential(
                tenant.tenant_id,
                CLIENT,
                certificate=rsa_cert,
                authority=tenant.authority_host,
                cache=cache,
                retry=NO_RETRY,
            )
            for _ in range(4)
        ]
        calls = [r.get_token(SCOPE) for r in replicas for _ in range(8)]
        tokens = {t.token for t in await asyncio.gather(*calls)}
        for replica in replicas:
            await replica.close()
        return tokens

    assert len(asyncio.run(main())) == 1
    assert tenant.request_count == 1


@pytest.mark.slow
def test_redis_outage_never_fails_a_caller_and_the_cache_comes_back(
    tenant: Emulator,
    rsa_cert: Certificate,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = RedisServer(tmp_path / "own").start()
    cache = RedisTokenCache(server.url, socket_timeout=0.3, lock_timeout=1)
    errors: list[BaseException] = []
    calls: list[int] = []
    running = threading.Event()
    running.set()

    def replica() -> None:
        # A fresh credential per call: every call goes to the shared store.
        while running.is_set():
            try:
                with credential(tenant, rsa_cert, cache) as cred:
                    cred.get_token(SCOPE)
                calls.append(1)
            except Exception as exc:  # noqa: BLE001 - collected, the test fails on any
                errors.append(exc)
            time.sleep(0.005)

    try:
        with caplog.at_level(logging.WARNING, logger="certauth"):
            threads = [threading.Thread(target=replica) for _ in range(4)]
            for thread in threads:
                thread.start()
            time.sleep(0.3)
            before = tenant.request_count
            server.stop()  # mid-run
            time.sleep(0.6)
            during = tenant.request_count - before
            server.start()
            time.sleep(0.6)
            running.clear()
            for thread in threads:
                thread.join(10)
        assert errors == []
        assert len(calls) > 20
        assert before == 1  # before the outage: one request for all
        assert during > 0  # during it: direct fetching
        assert "failed" in caplog.text
        assert "going on without it" in caplog.text
        # After the restart the cache is used again: no more requests.
        settled = tenant.request_count
        for _ in range(3):
            with credential(tenant, rsa_cert, cache) as cred:
                cred.get_token(SCOPE)
        assert tenant.request_count == settled
        # A credential that saw the outage says when the cache works again.
        with credential(tenant, rsa_cert, cache) as cred:
            server.stop()
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="certauth"):
                cred.get_token(SCOPE)
                server.start()
                cred.invalidate(SCOPE)
            assert "works again" in caplog.text
    finally:
        running.clear()
        server.stop()


# -- many processes ------------------------------------------------------------------------------


def _replica(
    redis_server: RedisServer, tenant: Emulator, pem: str, threads: int, lock_timeout: float = 10
) -> _redis_fleet.Replica:
    return _redis_fleet.Replica(
        redis_server.url,
        tenant.authority_host,
        tenant.tenant_id,
        CLIENT,
        pem,
        SCOPE,
        threads,
        lock_timeout,
    )


@pytest.mark.slow
def test_16_processes_x_8_threads_on_a_cold_cache_make_one_request(
    tenant: Emulator,
    rsa_cert: Certificate,
    raw: redis.Redis,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    pem = _write_pem(tmp_path / "app.pem", rsa_cert)
    fleet = _redis_fleet.Fleet(_replica(redis_server, tenant, pem, threads=8), count=16)
    try:
        tenant.inject_faults(delay=0.3, count=1)  # keep the one request open while all arrive
        results = fleet.run()
    finally:
        fleet.stop()
    tokens = [t for r in results for t in r["tokens"]]
    assert [r["errors"] for r in results] == [[]] * 16
    assert len(tokens) == 128
    assert len(set(tokens)) == 1
    assert tenant.request_count == 1
    assert raw.keys("*:lock") == []  # every lock released


@pytest.mark.slow
def test_a_holder_killed_mid_fetch_does_not_stop_the_fleet(
    tenant: Emulator,
    rsa_cert: Certificate,
    raw: redis.Redis,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    lock_timeout = 1.0
    pem = _write_pem(tmp_path / "app.pem", rsa_cert)
    fleet = _redis_fleet.Fleet(_replica(redis_server, tenant, pem, 4, lock_timeout), count=4)
    holder = _redis_fleet.Fleet(_replica(redis_server, tenant, pem, 1, lock_timeout), count=1)
    try:
        tenant.inject_faults(delay=8, count=1)  # the holder's request hangs ...
        holder.go.set()
        deadline = time.monotonic() + 20
        while not (tenant.request_count == 1 and raw.keys("*:lock")):
            assert time.monotonic() < deadline, "the holder never took the lock"
            time.sleep(0.01)
        holder.processes[0].kill()  # ... and it dies (SIGKILL) holding the lock
        holder.processes[0].join(10)
        (lock_name,) = raw.keys("*:lock")
        assert raw.pttl(lock_name) > 0  # still held by the dead process
        started = time.monotonic()
        results = fleet.run()
        elapsed = time.monotonic() - started
    finally:
        fleet.stop()
        holder.stop()
    assert [r["errors"] for r in results] == [[]] * 4
    assert len({t for r in results for t in r["tokens"]}) == 1
    assert tenant.request_count == 2  # the dead holder's, and one for the whole fleet
    assert elapsed < lock_timeout + 2.0, elapsed


# -- the CLI and the README ----------------------------------------------------------------------


def _cli_env(tenant: Emulator, pem: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "CERTAUTH_"))}
    env.update(
        CERTAUTH_CACHE_DIR=str(tmp_path / "file-cache"),
        AZURE_TENANT_ID=tenant.tenant_id,
        AZURE_CLIENT_ID=CLIENT,
        AZURE_AUTHORITY_HOST=tenant.authority_host,
        AZURE_CLIENT_CERTIFICATE_PATH=pem,
    )
    return env


CLI = [sys.executable, "-m", "certauth", "token", "--scope", SCOPE]


@pytest.mark.slow
def test_cli_processes_share_one_request_through_redis(
    tenant: Emulator,
    rsa_cert: Certificate,
    raw: redis.Redis,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    env = _cli_env(tenant, _write_pem(tmp_path / "app.pem", rsa_cert), tmp_path)
    tenant.inject_faults(delay=0.5, count=1)
    procs = [
        subprocess.Popen(
            [*CLI, "--cache", redis_server.url],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert outputs[0][0] == outputs[1][0]
    assert tenant.request_count == 1
    # CERTAUTH_CACHE_URL does the same; the file cache was never touched.
    again = subprocess.run(
        CLI, env=dict(env, CERTAUTH_CACHE_URL=redis_server.unix_url), capture_output=True
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout == outputs[0][0]
    assert tenant.request_count == 1
    assert not (tmp_path / "file-cache").exists() or not any((tmp_path / "file-cache").iterdir())
    # --no-cache wins over the variable; with --cache it is a usage error.
    subprocess.run(
        [*CLI, "--no-cache"],
        env=dict(env, CERTAUTH_CACHE_URL=redis_server.url),
        capture_output=True,
        check=True,
    )
    assert tenant.request_count == 2
    both = subprocess.run(
        [*CLI, "--no-cache", "--cache", redis_server.url], env=env, capture_output=True, text=True
    )
    assert both.returncode == 2
    assert "exclusive" in both.stderr
    bad = subprocess.run(
        CLI,
        env=dict(env, CERTAUTH_CACHE_URL="memcached://u:s3cret@h"),
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert "CERTAUTH_CACHE_URL" in bad.stderr
    assert "s3cret" not in bad.stderr


def test_cli_without_the_redis_package_exits_3_with_the_fix(
    tenant: Emulator, rsa_cert: Certificate, tmp_path: Path
) -> None:
    env = _cli_env(tenant, _write_pem(tmp_path / "app.pem", rsa_cert), tmp_path)
    script = (
        "import sys; sys.modules['redis'] = None\n"
        "from certauth.cli.main import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, "token", "--scope", SCOPE, "--cache", "redis://h"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3, done.stderr
    assert "pip install 'certauth-toolkit[redis]'" in done.stderr
    assert "pip install 'certauth[redis]'" not in done.stderr
    assert tenant.request_count == 0


@pytest.mark.slow
def test_cli_shares_a_services_tokens_through_its_namespace(
    tenant: Emulator,
    rsa_cert: Certificate,
    raw: redis.Redis,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    """A service's RedisTokenCache(namespace=NS) and `certauth token --cache-namespace NS`
    (or CERTAUTH_CACHE_NAMESPACE, as the README's Redis section shows it) share one token."""
    with credential(
        tenant, rsa_cert, RedisTokenCache(redis_server.url, namespace="billing-api")
    ) as service:
        token = service.get_token(SCOPE).token
    assert tenant.request_count == 1
    env = _cli_env(tenant, _write_pem(tmp_path / "app.pem", rsa_cert), tmp_path)
    flag = subprocess.run(
        [*CLI, "--cache", redis_server.url, "--cache-namespace", "billing-api"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert flag.returncode == 0, flag.stderr
    assert flag.stdout.strip() == token
    assert tenant.request_count == 1
    (readme_line,) = [
        line for line in _readme_redis_commands(everything=True) if "CACHE_NAMESPACE" in line
    ]
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    variable = subprocess.run(
        ["bash", "-o", "pipefail", "-c", readme_line],
        env=dict(env, CERTAUTH_CACHE_URL=redis_server.url),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert variable.returncode == 0, variable.stderr
    assert variable.stdout.strip() == f"Authorization: Bearer {token}"
    assert tenant.request_count == 1
    # Without the namespace the CLI uses its own ("certauth"): a second request.
    plain = subprocess.run(
        [*CLI, "--cache", redis_server.url], env=env, capture_output=True, text=True, timeout=60
    )
    assert plain.returncode == 0, plain.stderr
    assert tenant.request_count == 2
    assert {n.split(b":", 1)[0] for n in raw.keys("*")} == {b"certauth", b"billing-api"}


def _readme_redis_section() -> str:
    # Up to the next section (the cluster's: tests/test_redis_cluster.py runs its examples).
    return section("redis").split("<!-- section:", 1)[0]


def _readme_redis_commands(*, everything: bool = False) -> list[str]:
    """The ``certauth ...`` lines of the ```sh blocks in the README's Redis section; with
    ``everything``, also those that set a variable first (``VAR=value certauth ...``)."""
    commands = []
    command = re.compile(r"^(?:[A-Z_]+=\S+ )*certauth " if everything else r"^certauth ")
    for block in re.findall(r"```sh\n(.*?)```", _readme_redis_section(), flags=re.S):
        joined = block.replace("\\\n", " ")
        commands += [line.strip() for line in joined.splitlines() if command.match(line)]
    return commands


@pytest.mark.slow
def test_the_readme_redis_examples_work(
    tenant: Emulator,
    rsa_cert: Certificate,
    raw: redis.Redis,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    """The README shows these as ```sh / ```python (they need a Redis server, which the README
    test does not start): here they run as written, twice, against one tenant."""
    commands = _readme_redis_commands()
    assert commands, "the README's Redis section shows no certauth command"
    (example,) = re.findall(r"```python\n(.*?)```", _readme_redis_section(), flags=re.S)
    env = _cli_env(tenant, _write_pem(tmp_path / "app.pem", rsa_cert), tmp_path)
    env["CERTAUTH_CACHE_URL"] = redis_server.url
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    outputs = []
    for command in commands * 2:
        done = subprocess.run(
            ["bash", "-o", "pipefail", "-c", command],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert done.returncode == 0, (command, done.stderr)
        outputs.append(done.stdout)
    assert outputs[: len(commands)] == outputs[len(commands) :]
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", example], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("token expires at ")
    # The Python example uses its own namespace: one request for the CLI, one for it.
    assert tenant.request_count == 2
    assert {n.split(b":", 1)[0] for n in raw.keys("*")} == {b"certauth", b"billing-api"}


# -- the benchmark cannot rot ---------------------------------------------------------------------


@pytest.mark.slow
def test_benchmark_smoke(redis_server: RedisServer) -> None:
    done = subprocess.run(
        [sys.executable, "benchmarks/redis_cache.py", "--smoke", "--redis-url", redis_server.url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "fresh credential, token found in Redis" in done.stdout
    assert "simulated with the emulator's clock" in done.stdout
    rows = dict(re.findall(r"^\s*(with(?:out)? the shared cache):\s+(\d+)", done.stdout, re.M))
    assert int(rows["with the shared cache"]) < int(rows["without the shared cache"])


# -- a lock wait follows the caller; every lock certauth sets expires; values are capped ----------


def _cold_entry(
    tenant: Emulator, rsa_cert: Certificate, cache: RedisTokenCache, raw: redis.Redis
) -> tuple[bytes, bytes]:
    """Fetch once (so the key names exist), then drop the entry: the next fetch is cold.
    Returns the names of the entry and of its lock."""
    with credential(tenant, rsa_cert, cache) as first:
        first.get_token(SCOPE)
    (entry,) = raw.keys("*:token")
    raw.delete(entry)
    return entry, entry.replace(b":token", b":lock")


def test_a_held_lock_is_waited_for_only_as_long_as_the_callers_timeout(
    tenant: Emulator, rsa_cert: Certificate, raw: redis.Redis, redis_server: RedisServer
) -> None:
    cache = RedisTokenCache(redis_server.url, lock_timeout=60, wait_timeout=120)
    _, lock_name = _cold_entry(tenant, rsa_cert, cache, raw)
    raw.set(lock_name, b"another replica", px=60_000)  # held, and it stays held
    requests = tenant.request_count
    started = time.monotonic()
    with credential(tenant, rsa_cert, cache, timeout=1.5) as late:
        assert late.get_token(SCOPE).token
    elapsed = time.monotonic() - started
    assert 1.5 <= elapsed < 4, elapsed  # its own timeout, not wait_timeout (120 s)
    assert tenant.request_count == requests + 1
    assert raw.get(lock_name) == b"another replica"  # not taken from its holder
    # The keyword directly: the shorter of timeout and wait_timeout.
    started = time.monotonic()
    with cache.lock("k2") as held_free:
        assert held_free is True
    with cache.lock("k2", timeout=0.2) as free_again:
        assert free_again is True
    assert time.monotonic() - started < 1
    cache.close()


def test_a_lock_key_without_ttl_gets_one_and_does_not_hold_fetches(
    tenant: Emulator, rsa_cert: Certificate, raw: redis.Redis, redis_server: RedisServer
) -> None:
    cache = RedisTokenCache(redis_server.url, lock_timeout=1, wait_timeout=30)
    _, lock_name = _cold_entry(tenant, rsa_cert, cache, raw)
    raw.set(lock_name, b"left behind")  # no TTL: it would never expire
    assert raw.pttl(lock_name) == -1
    with cache.lock("unrelated"):  # other keys' locks are not touched
        pass
    assert raw.pttl(lock_name) == -1
    started = time.monotonic()
    with credential(tenant, rsa_cert, cache, timeout=20) as cold:
        assert cold.get_token(SCOPE).token
    elapsed = time.monotonic() - started
    # Repaired to lock_timeout (1 s) at the first attempt, then taken once it expired: not
    # the 20 s of the caller's timeout, nor the 30 s of wait_timeout.
    assert elapsed < 1 + 2, elapsed
    assert raw.get(lock_name) is None  # taken, used and released by its new owner
    # The repair itself: one look at a TTL-less lock gives it the lock lifetime.
    raw.set(lock_name, b"left behind")
    key_lock = lock_name.decode()
    status, _ = cache._acquire(keys=[key_lock, "unused-entry"], args=["me", 1000, "*", 65536])
    assert status == 0
    assert 0 < raw.pttl(lock_name) <= 1000
    cache.close()


def test_every_lock_certauth_sets_expires(raw: redis.Redis, redis_server: RedisServer) -> None:
    cache = RedisTokenCache(redis_server.url, lock_timeout=5)
    with cache.lock("k"):
        (lock_name,) = raw.keys("*:lock")
        assert 0 < raw.pttl(lock_name) <= 5000
    cache.close()


def test_a_100_mb_entry_is_never_read_whole_and_is_replaced(
    tenant: Emulator, rsa_cert: Certificate, raw: redis.Redis, redis_server: RedisServer
) -> None:
    import tracemalloc

    from certauth.cache import MAX_ENTRY_BYTES

    cache = RedisTokenCache(redis_server.url, socket_timeout=5)
    hundred_mb = 100 * 1024 * 1024
    name = cache._key("k", "token")
    raw.setrange(name, hundred_mb - 1, b"x")  # built in Redis: the test sends one byte
    assert raw.strlen(name) == hundred_mb
    tracemalloc.start()
    try:
        started = time.monotonic()
        assert cache.get("k") is None  # corrupt: ignored
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024, peak  # its size came back, never its bytes
    assert time.monotonic() - started < 2
    cache.set("k", b"entry", time.time() + 60)
    assert cache.get("k") == b"entry"
    at_cap = b"e" * MAX_ENTRY_BYTES
    cache.set("k", at_cap, time.time() + 60)
    assert cache.get("k") == at_cap
    cache.set("k", at_cap + b"e", time.time() + 60)
    assert cache.get("k") is None
    cache.delete("k")
    entry, _ = _cold_entry(tenant, rsa_cert, cache, raw)
    raw.setrange(entry, hundred_mb - 1, b"x")
    raw.pexpire(entry, 60_000)
    # Through the credential: the oversized entry is ignored (a new token is fetched) and
    # replaced by a normal one.
    requests = tenant.request_count
    tracemalloc.start()
    try:
        with credential(tenant, rsa_cert, cache) as fresh:
            assert fresh.get_token(SCOPE).token
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024, peak
    assert tenant.request_count == requests + 1
    assert 0 < raw.strlen(entry) <= MAX_ENTRY_BYTES
    cache.close()
