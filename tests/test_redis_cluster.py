"""RedisTokenCache on a Redis Cluster: a token's entry and lock in one hash slot, the Lua
scripts on the cluster, the URL forms and clients, one token request per fleet, a primary
killed (SIGKILL) between fetches and in the middle of one, WAIT for replicas, and the CLI.

The tests share one real cluster (benchmarks/redis_servers.py: three primaries with a replica
each, redis-server processes on loopback, ``cluster-node-timeout`` 1 s, so a failover takes
about 2-3 s), started for the module and stopped after it; a test that kills a node has it
restarted (as a replica of its successor) by the next test's fixture. Without redis-server
the tests are skipped with the reason.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

redis = pytest.importorskip(
    "redis", reason="the redis package is not installed (certauth-toolkit[redis])"
)

import _redis_fleet  # noqa: E402 - tests/_redis_fleet.py
from _docs import section  # noqa: E402 - tests/_docs.py

from benchmarks.redis_servers import (  # noqa: E402
    LocalCluster,
    RedisProcess,
    free_port,
    redis_server_missing,
    sum_commandstats,
)
from certauth import CertificateCredential, RetryPolicy  # noqa: E402
from certauth.cache import RedisTokenCache  # noqa: E402
from certauth.certificates import Certificate  # noqa: E402
from certauth.emulator import Emulator, RequestHold  # noqa: E402
from certauth.errors import ConfigurationError, InvalidArgumentError  # noqa: E402

CLIENT = "11111111-2222-3333-4444-555555555555"
SCOPE = "api://billing/.default"
NO_RETRY = RetryPolicy(max_attempts=1)
#: What the credential logs when a store call failed and it went on without the store: the
#: sign of a direct token request made because of the cluster.
STORE_FAILED = "going on without it"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    missing = redis_server_missing()
    if missing:
        pytest.skip(missing)
    with LocalCluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


@pytest.fixture
def fresh(cluster: LocalCluster) -> LocalCluster:
    """The shared cluster, whole again (a node killed by an earlier test restarted) and empty."""
    cluster.heal()
    for node in cluster.primaries():
        with node.client() as client:
            client.flushall()
    return cluster


@pytest.fixture
def tenant(rsa_cert: Certificate) -> Iterator[Emulator]:
    with Emulator() as emulator:
        emulator.register(CLIENT, rsa_cert)
        yield emulator


def credential(
    tenant: Emulator, cert: Certificate, cache: RedisTokenCache, **kw: Any
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


class Asks:
    """The calls :func:`ask_together` started: call it to join them and get the tokens
    (raising the first failure); :meth:`finished` counts the calls that have returned."""

    def __init__(self, threads: list[threading.Thread], results: list[Any]) -> None:
        self._threads, self._results = threads, results

    def finished(self) -> int:
        return sum(result is not None for result in self._results)

    def __call__(self) -> list[str]:
        for thread in self._threads:
            thread.join(60)
        failures = [r for r in self._results if not isinstance(r, str)]
        assert not failures, failures
        return list(self._results)


def ask_together(
    tenant: Emulator, cert: Certificate, asks: Sequence[tuple[RedisTokenCache, str]]
) -> Asks:
    """Start one thread per ``(cache, scope)``, all released at once, each getting a token
    with a credential of its own (so each call goes to the store, as a fresh replica's would)."""
    barrier = threading.Barrier(len(asks))
    results: list[Any] = [None] * len(asks)

    def ask(index: int, cache: RedisTokenCache, scope: str) -> None:
        barrier.wait()
        try:
            with credential(tenant, cert, cache) as fresh:
                results[index] = fresh.get_token(scope).token
        except Exception as exc:  # noqa: BLE001 - handed to the test below
            results[index] = exc

    threads = [
        threading.Thread(target=ask, args=(i, cache, scope), daemon=True)
        for i, (cache, scope) in enumerate(asks)
    ]
    for thread in threads:
        thread.start()
    return Asks(threads, results)


def caches(cluster: LocalCluster, count: int, **options: Any) -> list[RedisTokenCache]:
    """``count`` caches, each with a cluster client of its own (its own slot map and failover
    window, as separate processes have)."""
    return [RedisTokenCache(cluster.url, **options) for _ in range(count)]


def wait_for(condition: Callable[[], object], what: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def on_replica(cluster: LocalCluster, name: bytes) -> bool:
    """Whether the replica of ``name``'s primary holds the key (read with READONLY, which a
    cluster replica needs to answer for its primary's slots)."""
    replica = cluster.replica_of(cluster.primary_for(name))
    with replica.client(single_connection_client=True) as client:
        client.execute_command("READONLY")
        return bool(client.exists(name))


# -- slots, scripts, URLs ------------------------------------------------------------------------


def test_a_tokens_entry_and_lock_share_one_slot_and_every_script_runs_on_the_cluster(
    fresh: LocalCluster,
) -> None:
    cache = RedisTokenCache(fresh.url)
    keys = [f"https://login.example/t\x1f{CLIENT}\x1fscope-{i}" for i in range(24)]
    for key in keys:
        cache.set(key, key.encode(), time.time() + 60)
        with cache.lock(key) as held:
            assert held is True
            (lock_name,) = fresh.keys("*:lock")
            # The keeper's script, by hand: extends only the owner's lock.
            with fresh.primary_for(lock_name).client() as client:
                owner = client.get(lock_name)
            assert cache._extend(keys=[lock_name], args=[owner, 10_000]) == 1
            assert cache._extend(keys=[lock_name], args=["another owner", 10_000]) == 0
        assert cache.get(key) == key.encode()
        entry_name = cache._key(key, "token").encode()
        assert lock_name == cache._key(key, "lock").encode()
        # The cluster's own CLUSTER KEYSLOT puts both keys in one slot (the hash tag).
        assert fresh.slot_of(entry_name) == fresh.slot_of(lock_name)
    assert fresh.keys("*:lock") == []  # every lock released by its owner
    entries = fresh.keys("*:token")
    assert len(entries) == len(keys)
    # The keys are spread over every primary: each script ran on each of them.
    assert len({fresh.primary_for(name).port for name in entries}) == 3
    scripts = [stats.get("evalsha", 0) for stats in _per_primary_stats(fresh)]
    assert all(count > 0 for count in scripts), scripts
    cache.delete(keys[0])
    assert cache.get(keys[0]) is None
    cache.close()


def _per_primary_stats(cluster: LocalCluster) -> list[dict[str, int]]:
    return [sum_commandstats([node]) for node in cluster.primaries()]


def test_cluster_urls_and_clients(cluster: LocalCluster) -> None:
    given = RedisTokenCache("rediss+cluster://app:s3cret@cache.example:6380?ssl_cert_reqs=none")
    assert (
        repr(given)
        == "RedisTokenCache('rediss+cluster://cache.example:6380', namespace='certauth')"
    )
    assert given.failover_timeout == 20.0  # a cluster is waited for by default ...
    assert RedisTokenCache("redis://h").failover_timeout == 0.0  # ... one server is not
    for bad, message in (
        ("redis+cluster://h:7000/2", "only database 0"),
        ("redis+cluster://h:7000?db=1", "only database 0"),
        ("unix+cluster:///run/redis.sock", "unix+cluster://, not a Redis one"),
        ("redis+cluster://:s3cret@h:99999999", "invalid port"),
    ):
        with pytest.raises(InvalidArgumentError, match=re.escape(message)) as info:
            RedisTokenCache(bad)
        assert "s3cret" not in str(info.value)
    for option, value in (("failover_timeout", -1), ("replicas", -1), ("replicas", 1.5)):
        with pytest.raises(InvalidArgumentError, match=option):
            RedisTokenCache(cluster.url, **{option: value})
    # A ready RedisCluster client is used as is (and not closed by the cache).
    seed = cluster.url.removeprefix("redis+cluster://")
    client = redis.RedisCluster.from_url(f"redis://{seed}")
    ready = RedisTokenCache(client, namespace="given")
    assert ready.failover_timeout == 20.0
    ready.set("k", b"v", time.time() + 60)
    ready.close()
    assert client.get(ready._key("k", "token")) == b"v"
    client.close()
    with pytest.raises(ConfigurationError, match="decode_responses"):
        RedisTokenCache(redis.RedisCluster.from_url(f"redis://{seed}", decode_responses=True))
    from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

    with pytest.raises(InvalidArgumentError, match="synchronous"):
        RedisTokenCache(AsyncRedisCluster.from_url(f"redis://{seed}"))  # type: ignore[arg-type]


def test_an_unreachable_cluster_fails_at_once_and_tokens_still_come(
    tenant: Emulator, rsa_cert: Certificate, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing connects when the cache is made; a cluster never reached is not waited for (it
    is not failing over: there is no slot map to have changed), so a wrong address costs
    one refused connection per call, not the failover window: no window is opened (its
    warning is not logged), rather than the calls being timed."""
    cache = RedisTokenCache(f"redis+cluster://127.0.0.1:{free_port()}")
    with caplog.at_level(logging.WARNING, logger="certauth"):
        with pytest.raises(redis.ConnectionError, match="cannot reach the Redis Cluster"):
            cache.get("k")
        with credential(tenant, rsa_cert, cache) as cred:
            assert cred.get_token(SCOPE).token
    assert "for a failover" not in caplog.text
    assert tenant.request_count == 1
    assert STORE_FAILED in caplog.text


def test_the_failover_window_is_one_per_outage(
    fresh: LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """Counted, not timed: the first failure of an outage opens the window (logged once), and
    the call is retried until the window has passed (at least its 0.4 s: a lower bound load
    cannot break); a later call in the same outage gives up at its first attempt; a success
    ends the outage, and the next failure gets a window of its own."""
    cache = RedisTokenCache(fresh.url, failover_timeout=0.4)
    cache.get("k")  # the slot map is learnt: from now on a failure may be a failover
    calls = [0]

    def failing(client: object) -> None:
        calls[0] += 1
        raise redis.ConnectionError("the node is gone")

    def failed_call() -> tuple[int, float]:
        """Attempts made and seconds spent until the call gave up (in a thread, joined with
        a guard: a window that never ends must fail this test, not hang it)."""
        raised: list[BaseException] = []

        def call() -> None:
            try:
                cache._link.call(failing)
            except redis.ConnectionError as exc:
                raised.append(exc)

        before = calls[0]
        started = time.monotonic()
        thread = threading.Thread(target=call, daemon=True)
        thread.start()
        thread.join(30)
        assert raised, "the call did not give up"
        return calls[0] - before, time.monotonic() - started

    window_opened = "waiting up to 0.4 s for a failover"
    with caplog.at_level(logging.WARNING, logger="certauth"):
        attempts, spent = failed_call()
        assert attempts >= 2  # retried through the window ...
        assert spent >= 0.4  # ... until it had passed
        assert caplog.text.count(window_opened) == 1
        attempts, _ = failed_call()
        assert attempts == 1  # ... once: the outage goes on, later calls fail at once
        assert cache.get("k") is None  # a success ends the outage ...
        assert "answers again" in caplog.text
        attempts, spent = failed_call()  # ... and the next one gets its own window
        assert attempts >= 2
        assert spent >= 0.4
        assert caplog.text.count(window_opened) == 2
    cache.close()


def test_a_lock_operation_retried_through_a_failover_is_not_done_twice(
    fresh: LocalCluster, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failover can lose the reply of a command that ran: the retry must see its own work.
    Taking the lock again with the same owner token finds it taken by that owner; a release
    that finds its lock gone after a retry is not reported as a lock that expired."""
    cache = RedisTokenCache(fresh.url)
    lock_name, entry_name = cache._key("k", "lock"), cache._key("k", "token")
    args = ["owner-1", 10_000, "*", 65536]
    assert cache._acquire(keys=[lock_name, entry_name], args=args)[0] == 1
    assert cache._acquire(keys=[lock_name, entry_name], args=args)[0] == 1  # its own
    other = ["owner-2", *args[1:]]
    assert cache._acquire(keys=[lock_name, entry_name], args=other)[0] == 0  # busy
    run = cache._release.run
    replies_lost = [1]

    def release_then_lose_the_reply(client: Any, keys: Any, args: Any) -> Any:
        result = run(client, keys, args)
        if replies_lost[0]:
            replies_lost[0] -= 1
            raise redis.ConnectionError("the reply was lost with the primary")
        return result

    monkeypatch.setattr(cache._release, "run", release_then_lose_the_reply)
    with caplog.at_level(logging.WARNING, logger="certauth"):
        cache._release_lock(lock_name, "owner-1")
    assert fresh.keys("*:lock") == []
    assert "expired while held" not in caplog.text
    cache.close()


# -- fleets --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_4_processes_x_4_threads_on_a_cold_cluster_make_one_request(
    fresh: LocalCluster, tenant: Emulator, rsa_cert: Certificate, tmp_path: Path
) -> None:
    pem = tmp_path / "app.pem"
    pem.write_bytes(rsa_cert.private_key_pem() + rsa_cert.pem)
    replica = _redis_fleet.Replica(
        fresh.url, tenant.authority_host, tenant.tenant_id, CLIENT, str(pem), SCOPE, threads=4
    )
    fleet = _redis_fleet.Fleet(replica, count=4)
    try:
        tenant.inject_faults(delay=0.3, count=1)  # keep the one request open while all arrive
        results = fleet.run()
    finally:
        fleet.stop()
    assert [r["errors"] for r in results] == [[]] * 4
    tokens = [t for r in results for t in r["tokens"]]
    assert len(tokens) == 16
    assert len(set(tokens)) == 1
    assert tenant.request_count == 1
    assert fresh.keys("*:lock") == []


@pytest.mark.slow
def test_a_primary_killed_between_fetches_costs_no_request_and_no_failure(
    fresh: LocalCluster,
    tenant: Emulator,
    rsa_cert: Certificate,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """16 replicas get a token; the primary holding it is killed; then, while the cluster
    fails over, the 16 ask at once for it again and for three cold scopes (four each). Every
    call succeeds, and the tenant sees one request per token: those on the dead primary's
    slots wait for its replica, which has the entry."""
    fleet = caches(fresh, 16)
    scopes = [f"api://app-{i}/.default" for i in range(4)]
    with caplog.at_level(logging.WARNING, logger="certauth"):
        before = ask_together(tenant, rsa_cert, [(c, scopes[0]) for c in fleet])()
        assert tenant.request_count == 1
        (entry,) = fresh.keys("*:token")
        wait_for(lambda: on_replica(fresh, entry), "the entry to reach the replica")
        fresh.kill_primary_for(entry)
        during = ask_together(tenant, rsa_cert, [(c, scopes[i % 4]) for i, c in enumerate(fleet)])()
    assert len(set(before)) == 1
    for index, scope in enumerate(scopes):
        tokens = set(during[index::4])
        assert len(tokens) == 1, scope
        if index == 0:
            assert tokens == set(before)  # read from the promoted replica
    assert tenant.request_count == len(scopes)  # one per token
    assert "waiting up to 20 s for a failover" in caplog.text  # the failover was ridden out
    assert STORE_FAILED not in caplog.text  # no call went around the store
    assert fresh.keys("*:lock") == []
    for cache in fleet:
        cache.close()


@pytest.mark.slow
def test_a_primary_killed_mid_fetch_with_replicas_1_costs_no_extra_request(
    fresh: LocalCluster,
    tenant: Emulator,
    rsa_cert: Certificate,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The primary holding the fetch lock dies while the holder waits for the tenant. With
    replicas=1 the lock was on the replica before the holder fetched (WAIT), so the promoted
    replica still has it: the waiters keep waiting for it, and the holder's entry (written
    to the new primary) releases them. One request.

    The tenant holds the holder's request unanswered until the failover is over, so the
    primary dies mid-fetch whatever the machine's speed: nothing races a delay. (WAIT gets
    up to 2 s, half of socket_timeout=4, so a loaded machine does not make it fall short:
    the test is about what a WAIT that answered guarantees.)"""
    fleet = caches(fresh, 8, replicas=1, socket_timeout=4.0)
    hold = RequestHold()
    tenant.inject_faults(hold=hold, count=1)  # the holder's request
    with caplog.at_level(logging.WARNING, logger="certauth"):
        asks = ask_together(tenant, rsa_cert, [(c, SCOPE) for c in fleet])
        hold.wait_for_arrivals(1)  # the holder is fetching, under its lock
        (lock_name,) = fresh.keys("*:lock")
        # Its WAIT answered before it fetched: the replica holds the lock already.
        assert "replicas asked for" not in caplog.text  # the WAIT did not fall short
        assert on_replica(fresh, lock_name)
        _, successor = fresh.kill_primary_for(lock_name)  # ... and its primary dies
        fresh.wait_promoted(successor)
        with successor.client() as client:
            assert client.get(lock_name) is not None  # the promoted replica kept the lock
        # Nobody went around the lock while the cluster failed over: the waiters still wait
        # and the holder's is still the only request.
        assert asks.finished() == 0
        assert tenant.request_count == 1
        hold.release()  # the holder's answer: it stores the entry on the new primary
        tokens = asks()
    assert len(set(tokens)) == 1
    assert len(tokens) == 8
    assert tenant.request_count == 1
    assert STORE_FAILED not in caplog.text
    assert "expired while held" not in caplog.text
    assert fresh.keys("*:lock") == []
    for cache in fleet:
        cache.close()


@pytest.mark.slow
def test_a_lock_lost_in_a_failover_costs_at_most_one_more_request_and_fencing_holds(
    fresh: LocalCluster,
    tenant: Emulator,
    rsa_cert: Certificate,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The bound when a failover loses the lock (a write the replica had not received: Redis
    Cluster does not promise to keep every acknowledged write, cluster spec "Write safety";
    simulated by deleting the lock on the promoted replica): a second replica takes the lock
    and fetches, so the tenant sees two requests, never more; and the first holder, finishing
    while the second still holds the lock, neither releases nor extends it (its owner token
    is not the lock's).

    The tenant holds both requests unanswered until the test has seen each step happen, so
    the order of events is the test's, whatever the machine's speed: nothing races a delay."""
    fleet = caches(fresh, 8)
    hold = RequestHold()
    tenant.inject_faults(hold=hold, count=2)  # the first holder's request, then the second's
    with caplog.at_level(logging.WARNING, logger="certauth"):
        asks = ask_together(tenant, rsa_cert, [(c, SCOPE) for c in fleet])
        hold.wait_for_arrivals(1)  # the first holder is fetching, under its lock
        (lock_name,) = fresh.keys("*:lock")
        with fresh.primary_for(lock_name).client() as client:
            first_owner = client.get(lock_name)
        _, successor = fresh.kill_primary_for(lock_name)
        fresh.wait_promoted(successor)
        with successor.client() as client:
            # Lost in the failover; unless it already is (not replicated before the kill, or
            # expired while the failover kept its holder from extending it): then a second
            # holder may have it already, which must not be deleted.
            client.eval(_DELETE_IF_OWNED_BY, 1, lock_name, first_owner)
            second_owner = wait_for(
                lambda: (owner := client.get(lock_name)) not in (None, first_owner) and owner,
                "a second holder",
            )
            hold.wait_for_arrivals(2)  # the second holder's request: the one more
            hold.release()  # the first holder's answer: it stores the entry, then releases
            # The first holder and the six waiters (released by its entry) are done; the
            # second holder still waits for its answer, under its lock.
            wait_for(lambda: asks.finished() >= 7, "the first holder and the waiters")
            assert client.get(lock_name) == second_owner  # fencing: not the first's to release
            assert "expired while held" in caplog.text  # and the first holder knew it
        hold.release()
        tokens = asks()
    assert tenant.request_count == 2  # at most one more than one per token
    assert len(tokens) == 8
    assert STORE_FAILED not in caplog.text
    assert fresh.keys("*:lock") == []  # the second holder released its own lock
    for cache in fleet:
        cache.close()


#: Delete KEYS[1] if it holds ARGV[1] (the test's own compare-and-delete, not certauth's).
_DELETE_IF_OWNED_BY = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


# -- WAIT ----------------------------------------------------------------------------------------


#: Commands :meth:`CommandLog.commands` leaves out: connection set-up and the test's reads.
_NOT_WRITES = frozenset(
    {"HELLO", "CLIENT", "AUTH", "SELECT", "COMMAND", "CLUSTER", "READONLY", "INFO", "ECHO"}
    | {"EXISTS", "PING"}
)


class CommandLog:
    """The commands a Redis node runs for its clients, in order, as ``MONITOR`` streams them
    (read in a thread): what certauth sent, seen by the server. Commands that Lua scripts run
    are left out; each entry is ``(client "address:port", [command, arg, ...])``."""

    _STOP = "certauth-test-monitor-stop"

    def __init__(self, node: RedisProcess) -> None:
        self._node = node
        self._client = node.client(socket_timeout=None)  # idle between commands: no timeout
        self._monitor = self._client.monitor()
        self._seen: list[tuple[str, list[str]]] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)

    def __enter__(self) -> CommandLog:
        self._monitor.__enter__()  # MONITOR answered: every later command is streamed
        self._reader.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._node.client() as client:
            client.echo(self._STOP)
        self._reader.join(10)
        self._monitor.__exit__()
        self._client.close()

    def _read(self) -> None:
        while True:
            try:
                entry = self._monitor.next_command()
            except (redis.RedisError, OSError):
                return
            if entry["client_type"] == "lua":
                continue
            words = entry["command"].split(" ")
            words[0] = words[0].upper()
            with self._changed:
                self._seen.append((f"{entry['client_address']}:{entry['client_port']}", words))
                self._changed.notify_all()
            if words == ["ECHO", self._STOP]:
                return

    def commands(self) -> list[tuple[str, list[str]]]:
        """Every client command the node has run since the log began (a marker sent through
        the node, and waited for, makes sure none is still on its way), without the
        connections' set-up (``HELLO``, ``CLIENT``, ``CLUSTER``, ...) and the test's own
        reads and markers."""
        mark = f"certauth-test-mark-{len(self._seen)}-{time.monotonic_ns()}"
        with self._node.client() as client:
            client.echo(mark)
        with self._changed:
            assert self._changed.wait_for(
                lambda: any(words == ["ECHO", mark] for _, words in self._seen), timeout=10
            ), "MONITOR did not stream the marker"
            return [(client, words) for client, words in self._seen if words[0] not in _NOT_WRITES]


def _followed_by_wait(sent: Sequence[tuple[str, list[str]]], index: int) -> list[str] | None:
    """The command the same connection sent right after ``sent[index]`` (``None``: none)."""
    client = sent[index][0]
    later = [words for who, words in sent[index + 1 :] if who == client]
    return later[0] if later else None


def test_replicas_makes_the_lock_and_entry_writes_wait_for_a_replica(
    fresh: LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """Observed on the primary (MONITOR), not timed: each lock attempt and entry write is
    followed on its own connection by ``WAIT 1 2000`` (WAIT counts the replicas holding the
    connection's earlier writes; 2000 ms, half of socket_timeout, so its answer comes before
    the socket gives up; long enough for a replica on a loaded machine, which once took more
    than 500 ms), and the replica holds the entry when the call returns. A replica
    that does not answer makes WAIT answer 0 at its own timeout: the write is not retried or
    failed (one SET, one WAIT), it is on the primary, and the shortfall is logged once."""
    cache = RedisTokenCache(fresh.url, replicas=1, socket_timeout=4.0)
    name = cache._key("k", "token")
    lock_name = cache._key("k", "lock")
    primary = fresh.primary_for(name)
    wait = ["WAIT", "1", "2000"]
    with caplog.at_level(logging.WARNING, logger="certauth"), CommandLog(primary) as log:
        cache.set("k", b"entry", time.time() + 60)
        assert on_replica(fresh, name.encode())  # WAIT answered: the replica has it
        with cache.lock("k") as held:
            assert held is True
            assert on_replica(fresh, lock_name.encode())  # taken, and on the replica
        sent = log.commands()
    entry_writes = [i for i, (_, w) in enumerate(sent) if w[:2] == ["SET", name]]
    lock_attempts = [
        i
        for i, (_, w) in enumerate(sent)
        if w[:4] == ["EVALSHA", cache._acquire.sha, "2", lock_name]
    ]
    assert len(entry_writes) == 1, sent
    assert lock_attempts, sent  # (more than one only if the node had to load the script)
    for index in entry_writes + lock_attempts:
        assert _followed_by_wait(sent, index) == wait, sent
    # WAIT follows those writes and nothing else (not the release: a lost release costs no
    # token request, the lock expires).
    assert sum(words[0] == "WAIT" for _, words in sent) == len(entry_writes + lock_attempts)
    assert "replicas asked for" not in caplog.text
    # A replica that does not answer: the write waits for it WAIT's own timeout, then goes on
    # (it is on the primary) and says so, once.
    replica = fresh.replica_of(primary)
    assert replica.process is not None
    replica.process.send_signal(signal.SIGSTOP)
    try:
        with caplog.at_level(logging.WARNING, logger="certauth"), CommandLog(primary) as log:
            cache.set("k", b"entry-2", time.time() + 60)
            cache.set("k", b"entry-3", time.time() + 60)
            sent = log.commands()
    finally:
        replica.process.send_signal(signal.SIGCONT)
    assert [words[:3] for _, words in sent] == [
        ["SET", name, "entry-2"],
        wait,
        ["SET", name, "entry-3"],
        wait,
    ], sent
    assert _followed_by_wait(sent, 0) == wait, sent  # on the SET's own connection
    assert _followed_by_wait(sent, 2) == wait, sent
    assert caplog.text.count("reached 0 of the 1 replicas") == 1, caplog.text
    assert cache.get("k") == b"entry-3"
    cache.close()


# -- the CLI and the documentation --------------------------------------------------------------


def _cluster_section() -> str:
    return section("redis-cluster").split("<!-- section:", 1)[0]


@pytest.mark.slow
def test_the_cli_and_the_documented_examples_share_tokens_through_the_cluster(
    fresh: LocalCluster, tenant: Emulator, rsa_cert: Certificate, tmp_path: Path
) -> None:
    pem = tmp_path / "app.pem"
    pem.write_bytes(rsa_cert.private_key_pem() + rsa_cert.pem)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "CERTAUTH_"))}
    env.update(
        CERTAUTH_CACHE_DIR=str(tmp_path / "file-cache"),
        AZURE_TENANT_ID=tenant.tenant_id,
        AZURE_CLIENT_ID=CLIENT,
        AZURE_AUTHORITY_HOST=tenant.authority_host,
        AZURE_CLIENT_CERTIFICATE_PATH=str(pem),
        CERTAUTH_CACHE_URL=fresh.url,
    )
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    text = _cluster_section()
    (example,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    commands = [
        line.strip()
        for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S)
        for line in block.replace("\\\n", " ").splitlines()
        if re.match(r"^(?:[A-Z_]+=\S+ )*certauth ", line.strip())
    ]
    assert commands, "the cluster section shows no certauth command"
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
    assert len(set(outputs)) == 1
    assert tenant.request_count == 1  # one request for every run of the CLI
    done = subprocess.run(
        [sys.executable, "-c", example], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("token expires at ")
    assert tenant.request_count == 2  # the Python example has its own namespace
    # A database in a cluster URL is a usage error, before any request.
    bad = subprocess.run(
        [sys.executable, "-m", "certauth", "token", "--scope", SCOPE, "--cache", f"{fresh.url}/3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert "only database 0" in bad.stderr
    assert tenant.request_count == 2
