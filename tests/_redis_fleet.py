"""Replicas of a simulated fleet, as separate processes, for tests/test_redis_cache.py.

Each replica is its own process (multiprocessing's ``forkserver``: the server imports certauth
once and forks the replicas from it, instead of every replica importing everything again). A
replica loads the certificate and makes one credential per thread; they share the replica's
RedisTokenCache and HTTP connection pool but, as separate credential objects, coordinate only
through Redis. It reports ``ready``, waits for ``go`` (so that all replicas start together),
then every thread gets a token. It reports the SHA-256 of each token received (never the
token), its errors and its slowest call. :class:`Fleet` starts and stops a set of replicas
(tests/test_redis_cache.py against one server, tests/test_redis_cluster.py against a cluster).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import threading
import time
from dataclasses import dataclass
from multiprocessing.context import ForkServerContext, ForkServerProcess
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any

import httpx

# Imported here so that the fork server holds them before it forks the replicas.
from certauth import CertificateCredential, RetryPolicy
from certauth.cache import RedisTokenCache
from certauth.certificates import load_certificate

# httpx imports its transport (httpcore, h11, certifi) on first use: do it here, once.
httpx.Client().close()


@dataclass(frozen=True)
class Replica:
    """What one replica needs to know."""

    redis_url: str
    authority_host: str
    tenant_id: str
    client_id: str
    pem: str
    scope: str
    threads: int
    lock_timeout: float = 10.0


def context() -> ForkServerContext:
    """The fork server context, with certauth preloaded."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["__main__", __name__])
    return ctx


def start(
    ctx: ForkServerContext,
    replica: Replica,
    count: int,
    ready: Queue[Any],
    go: Event,
    out: Queue[Any],
) -> list[ForkServerProcess]:
    """Start ``count`` replica processes; they report on ``ready`` and wait for ``go``."""
    processes = [
        ctx.Process(target=run, args=(replica, ready, go, out), daemon=True) for _ in range(count)
    ]
    for process in processes:
        process.start()
    return processes


def run(replica: Replica, ready: Queue[Any], go: Event, out: Queue[Any]) -> None:
    """The body of one replica process."""
    certificate = load_certificate(replica.pem)
    cache = RedisTokenCache(replica.redis_url, lock_timeout=replica.lock_timeout, wait_timeout=20.0)
    http = httpx.Client(timeout=20.0)  # the replica's connection pool, shared by its credentials
    credentials = [
        CertificateCredential(
            replica.tenant_id,
            replica.client_id,
            certificate=certificate,
            authority=replica.authority_host,
            cache=cache,
            retry=RetryPolicy(max_attempts=1),
            client=http,
        )
        for _ in range(replica.threads)
    ]
    ready.put("ready")
    if not go.wait(60):
        out.put({"tokens": [], "errors": ["never told to go"], "slowest": 0.0})
        return

    digests: list[str] = []
    errors: list[str] = []
    slowest = [0.0]
    lock = threading.Lock()

    def call(credential: CertificateCredential) -> None:
        started = time.monotonic()
        try:
            token = credential.get_token(replica.scope).token
            with lock:
                digests.append(hashlib.sha256(token.encode()).hexdigest())
        except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on it
            with lock:
                errors.append(f"{type(exc).__name__}: {exc}")
        with lock:
            slowest[0] = max(slowest[0], time.monotonic() - started)

    workers = [threading.Thread(target=call, args=(c,)) for c in credentials]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    http.close()
    out.put({"tokens": digests, "errors": errors, "slowest": slowest[0]})


class Fleet:
    """Replica processes started and stopped together."""

    def __init__(self, replica: Replica, count: int) -> None:
        ctx = context()
        self.ready, self.out, self.go = ctx.Queue(), ctx.Queue(), ctx.Event()
        self.processes = start(ctx, replica, count, self.ready, self.go, self.out)
        for _ in range(count):
            assert self.ready.get(timeout=60) == "ready"

    def run(self) -> list[dict[str, Any]]:
        """Let every replica get its tokens; their reports."""
        self.go.set()
        results = [self.out.get(timeout=60) for _ in self.processes]
        for process in self.processes:
            process.join(10)
        return results

    def stop(self) -> None:
        """Kill the replicas still running; close the queues."""
        for process in self.processes:
            if process.is_alive():
                process.kill()
            process.join(10)
        for channel in (self.ready, self.out):
            channel.close()
            channel.join_thread()
