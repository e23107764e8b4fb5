"""The fleet rows: N processes x M threads ask at once for a token of one cold scope, sharing
a :class:`~certauth.cache.RedisTokenCache`; measured against one Redis server, a Redis Cluster,
and the cluster with ``replicas=1`` (each lock and entry write followed by WAIT).

Each process is a replica of a service (multiprocessing's ``forkserver``): one cache and one
HTTP connection pool, and one credential per thread, so the N x M callers coordinate only
through Redis (the hardest case for the store; a service sharing one credential between its
threads has N participants, not N x M). All callers are released together (a barrier), each
run with a scope nobody has asked for, after one unmeasured run that opens the connections.
Figures per run:

- token requests: what the token endpoint received (one is the goal);
- wall time to the last token: from the release to the moment the last caller had its token;
- Redis commands per token call: the commands the replicas sent (an ``EVALSHA`` is one, a
  pipelined ``WAIT`` another; connection set-up included), counted in each replica where
  redis-py packs a command, divided by the N x M ``get_token`` calls; next to it the writes
  to a socket (a command, or a pipeline of them: about the round trips). The details add what
  Redis executed (``INFO commandstats`` of the server, or the cluster's primaries, after the
  run minus before), which also counts the commands the Lua scripts run.

    python -m benchmarks.redis_fleet [--processes 8] [--threads 8] [--runs 5]

runs the three rows alone against an emulator of its own (over TLS, in this process); ``python
-m benchmarks`` prints them with the other rows.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import ssl
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.context import ForkServerContext
from pathlib import Path
from typing import Any

#: Where the rows run: (key, label, cache options).
DEPLOYMENTS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("fleet_single", "one Redis server", {}),
    ("fleet_cluster", "a Redis Cluster (3 primaries + 3 replicas)", {}),
    (
        "fleet_cluster_wait",
        "the cluster with replicas=1 (WAIT after each lock and entry write)",
        {"replicas": 1},
    ),
)


@dataclass(frozen=True)
class Replica:
    """What one replica process needs (picklable)."""

    redis_url: str
    cache_options: dict[str, Any]
    namespace: str
    authority_host: str
    tenant_id: str
    client_id: str
    pem_path: str
    ca_file: str
    threads: int
    #: Scopes, one per run (the first is the unmeasured warm-up).
    scopes: tuple[str, ...]


@dataclass
class FleetFigures:
    """The measured runs of one deployment."""

    requests: list[int] = field(default_factory=list)
    wall_ms: list[float] = field(default_factory=list)
    #: Commands the replicas sent, per get_token call.
    commands_per_call: list[float] = field(default_factory=list)
    #: Packed writes to a socket (single commands or pipelines), per get_token call.
    writes_per_call: list[float] = field(default_factory=list)
    #: Commands Redis executed (scripts' own included), per get_token call.
    executed_per_call: list[float] = field(default_factory=list)
    #: What Redis executed in the last run, by command name.
    last_run_executed: dict[str, int] = field(default_factory=dict)
    calls: int = 0

    def cell(self) -> str:
        """The table cell: medians of the three figures."""
        requests = statistics.median(self.requests)
        spread = (
            f" ({min(self.requests)}-{max(self.requests)})"
            if min(self.requests) != max(self.requests)
            else ""
        )
        noun = "request" if requests == 1 and not spread else "requests"
        return (
            f"{requests:g}{spread} {noun} · {statistics.median(self.wall_ms):.0f} ms to the "
            f"last token · {statistics.median(self.commands_per_call):.1f} Redis commands "
            f"per call ({statistics.median(self.writes_per_call):.1f} writes)"
        )

    def details(self) -> dict[str, Any]:
        """Every figure, for the JSON file."""

        def summary(values: Sequence[float]) -> dict[str, float]:
            return {"median": statistics.median(values), "min": min(values), "max": max(values)}

        return {
            "token_requests": summary(self.requests),
            "wall_ms_to_last_token": summary(self.wall_ms),
            "redis_commands_sent_per_call": summary(self.commands_per_call),
            "socket_writes_per_call": summary(self.writes_per_call),
            "redis_commands_executed_per_call": summary(self.executed_per_call),
            "executed_in_last_run": self.last_run_executed,
            "calls_per_run": self.calls,
            "runs": len(self.requests),
        }


def _count_commands() -> tuple[Iterator[int], Iterator[int]]:
    """Count, in this process, the commands redis-py packs and the packed writes it sends
    (wrapping its serializers' ``pack`` and ``send_packed_command``: a measurement hook, not
    a change of behaviour). Returns the two counters (``next()`` is their current value + 1)."""
    import itertools

    import redis.connection as connection

    commands, writes = itertools.count(), itertools.count()

    def counting(method: Callable[..., Any], counter: Iterator[int]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            next(counter)  # atomic under the GIL
            return method(*args, **kwargs)

        return wrapper

    for name in ("PythonRespSerializer", "HiredisRespSerializer"):
        serializer = getattr(connection, name, None)
        if serializer is not None:
            serializer.pack = counting(serializer.pack, commands)
    sender = connection.AbstractConnection
    sender.send_packed_command = counting(  # type: ignore[method-assign]
        sender.send_packed_command, writes
    )
    return commands, writes


def _replica(
    replica: Replica, ready: Any, barrier: Any, out: Any
) -> None:  # pragma: no cover - runs in the replica processes
    """The body of one replica process: per run, fresh credentials, released together."""
    import httpx

    from certauth import CertificateCredential, RetryPolicy
    from certauth.cache import RedisTokenCache
    from certauth.certificates import load_certificate

    commands, writes = _count_commands()
    certificate = load_certificate(replica.pem_path, require_key=True)
    cache = RedisTokenCache(replica.redis_url, namespace=replica.namespace, **replica.cache_options)
    http = httpx.Client(verify=ssl.create_default_context(cafile=replica.ca_file), timeout=30)
    for scope in replica.scopes:
        credentials = [
            CertificateCredential(
                replica.tenant_id,
                replica.client_id,
                certificate=certificate,
                authority=replica.authority_host,
                cache=cache,
                client=http,
                retry=RetryPolicy(max_attempts=1),
            )
            for _ in range(replica.threads)
        ]
        release = threading.Event()
        finished: list[float] = []
        errors: list[str] = []
        guard = threading.Lock()

        def call(
            credential: Any,
            scope: str = scope,
            release: threading.Event = release,
            finished: list[float] = finished,
            errors: list[str] = errors,
            guard: threading.Lock = guard,
        ) -> None:
            release.wait()
            try:
                credential.get_token(scope)
                done = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process
                with guard:
                    finished.append(done)
            except Exception as exc:  # noqa: BLE001 - reported to the parent
                with guard:
                    errors.append(f"{type(exc).__name__}: {exc}")

        workers = [threading.Thread(target=call, args=(c,)) for c in credentials]
        for worker in workers:
            worker.start()
        ready.put(os.getpid())
        barrier.wait()
        sent, written = next(commands), next(writes)
        release.set()
        for worker in workers:
            worker.join(120)
        out.put(
            {
                "last": max(finished, default=0.0),
                "calls": len(finished),
                "errors": errors,
                "commands": next(commands) - sent - 1,
                "writes": next(writes) - written - 1,
            }
        )
        for credential in credentials:
            credential.close()
    http.close()
    cache.close()


def context() -> ForkServerContext:
    """The fork server context, with certauth and httpx imported once in the server."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(
        [__name__, "certauth", "certauth.cache", "certauth._redis", "httpx", "redis"]
    )
    return ctx


def run_fleet(
    replica: Replica,
    processes: int,
    *,
    reset: Callable[[], None],
    token_requests: Callable[[], int],
    commandstats: Callable[[], dict[str, int]],
) -> FleetFigures:
    """Start ``processes`` replicas and measure each of ``replica.scopes`` but the first."""
    ctx = context()
    ready, out = ctx.Queue(), ctx.Queue()
    barrier = ctx.Barrier(processes + 1)
    workers = [
        ctx.Process(target=_replica, args=(replica, ready, barrier, out), daemon=True)
        for _ in range(processes)
    ]
    figures = FleetFigures()
    try:
        for worker in workers:
            worker.start()
        for run in range(len(replica.scopes)):
            for _ in workers:
                ready.get(timeout=120)
            reset()
            before = commandstats()
            started = time.monotonic()
            barrier.wait(timeout=120)
            reports = [out.get(timeout=180) for _ in workers]
            requests = token_requests()
            after = commandstats()
            errors = [e for r in reports for e in r["errors"]]
            if errors:
                raise RuntimeError(f"fleet: {len(errors)} calls failed: {errors[0]}")
            calls = sum(r["calls"] for r in reports)
            if run == 0:
                continue  # the warm-up: connections opened, scripts loaded, slot maps learnt
            executed = {
                name: count - before.get(name, 0)
                for name, count in after.items()
                if count != before.get(name, 0)
            }
            figures.requests.append(requests)
            figures.wall_ms.append((max(r["last"] for r in reports) - started) * 1000)
            figures.commands_per_call.append(sum(r["commands"] for r in reports) / calls)
            figures.writes_per_call.append(sum(r["writes"] for r in reports) / calls)
            figures.executed_per_call.append(sum(executed.values()) / calls)
            figures.last_run_executed = executed
            figures.calls = calls
        for worker in workers:
            worker.join(30)
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.kill()
                worker.join(10)
        for channel in (ready, out):
            channel.close()
            channel.join_thread()
    return figures


def redis_missing() -> str | None:
    """Why the fleet rows cannot run here, or ``None``."""
    try:
        import redis  # noqa: F401
    except ImportError:
        return "the redis package is not installed (pip install '.[redis]')"
    from benchmarks.redis_servers import redis_server_missing

    return redis_server_missing()


@contextmanager
def deployments(folder: Path) -> Iterator[dict[str, tuple[str, Callable[[], dict[str, int]]]]]:
    """One Redis server and one cluster for the run: ``{key: (url, commandstats)}``."""
    from benchmarks.redis_servers import LocalCluster, RedisProcess, sum_commandstats

    single = RedisProcess(folder / "single").start()
    try:
        with LocalCluster(folder / "cluster") as cluster:
            found = {
                "fleet_single": (single.url, lambda: sum_commandstats([single])),
                "fleet_cluster": (cluster.url, cluster.commandstats),
                "fleet_cluster_wait": (cluster.url, cluster.commandstats),
            }
            yield found
    finally:
        single.stop()


def scopes(label: str, runs: int) -> tuple[str, ...]:
    """``runs`` + 1 scopes nobody asked for yet (the first for the warm-up run)."""
    stamp = f"{os.getpid()}-{time.time_ns()}"
    return tuple(f"api://fleet-{label}-{stamp}-{run}/.default" for run in range(runs + 1))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the three rows against an emulator of this process and print them."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--runs", type=int, default=5, help="measured runs per deployment")
    args = parser.parse_args(argv)
    missing = redis_missing()
    if missing:
        raise SystemExit(f"benchmarks.redis_fleet: {missing}")
    from certauth.certificates import generate_certificate
    from certauth.emulator import Emulator

    cert = generate_certificate("CN=fleet-bench", key_type="rsa2048")
    client_id = "5e6b7c1d-0000-4000-8000-00000000f1ee"
    with tempfile.TemporaryDirectory() as folder, Emulator(tls=True) as tenant:
        tenant.register(client_id, cert)
        pem = Path(folder) / "app.pem"
        pem.write_bytes(cert.private_key_pem() + cert.pem)
        counted = [0]

        def reset() -> None:
            counted[0] = tenant.request_count

        with deployments(Path(folder)) as where:
            for key, label, options in DEPLOYMENTS:
                url, stats = where[key]
                replica = Replica(
                    url,
                    options,
                    f"fleet-bench-{key}",
                    tenant.authority_host,
                    tenant.tenant_id,
                    client_id,
                    str(pem),
                    str(tenant.ca_file),
                    args.threads,
                    scopes(key, args.runs),
                )
                figures = run_fleet(
                    replica,
                    args.processes,
                    reset=reset,
                    token_requests=lambda: tenant.request_count - counted[0],
                    commandstats=stats,
                )
                print(f"{args.processes} x {args.threads}, {label}: {figures.cell()}")
                print(f"    Redis executed in the last run: {figures.last_run_executed}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
