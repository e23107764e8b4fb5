"""The Redis token cache: cached-path latency, and tenant requests per hour for a fleet.

1. Latency (measured, real time): a fresh credential object that finds its token in Redis (what
   a replica pays after a restart, or after another replica renewed), next to the in-memory hit
   and a direct token request to the emulator over loopback HTTP.
2. Fleet load (simulated with the emulator's clock, virtual time): N replicas, each with its own
   credential, called every 1/rate seconds over several hours, with and without the shared
   cache; the emulator counts the token requests. Replicas are called in turn; that concurrent
   callers also make one request is what tests/test_redis_cache.py proves.

    python benchmarks/redis_cache.py [--redis-url URL] [--replicas 50] [--hours 3] [--smoke]

Without ``--redis-url`` it starts ``redis-server`` on a free loopback port and stops it after.
Entries it writes are deleted at the end (a namespace of their own).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import redis

import certauth
from certauth import CertificateCredential, RetryPolicy
from certauth.cache import RedisTokenCache
from certauth.certificates import Certificate, generate_certificate
from certauth.emulator import Clock, Emulator

CLIENT_ID = "11111111-2222-3333-4444-555555555555"
SCOPE = "api://bench/.default"


@contextmanager
def redis_server(url: str | None) -> Iterator[str]:
    """The given Redis URL, or a private ``redis-server`` on loopback for the run."""
    if url:
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not on PATH: install it, or pass --redis-url")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as folder:
        command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", folder]
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        try:
            client = redis.Redis(port=port, socket_timeout=1)
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise SystemExit("redis-server did not start") from None
                    time.sleep(0.02)
            client.close()
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            server.terminate()
            server.wait(10)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def timed(call: Callable[[], object], samples: int) -> list[float]:
    """Seconds per call, one sample per call."""
    result = []
    for _ in range(samples):
        started = time.perf_counter()
        call()
        result.append(time.perf_counter() - started)
    return result


def describe(label: str, seconds: list[float]) -> str:
    median, p99 = statistics.median(seconds), percentile(seconds, 0.99)
    unit, scale = ("us", 1e6) if median < 1e-3 else ("ms", 1e3)
    return (
        f"  {label:<46} median {median * scale:8.2f} {unit}   "
        f"p99 {p99 * scale:8.2f} {unit}   ({len(seconds)} samples)"
    )


def measure_latency(url: str, cert: Certificate, namespace: str, samples: int) -> list[str]:
    """The cached path through Redis next to memory and a direct request (real time)."""
    lines = []
    with Emulator() as tenant, httpx.Client() as http:
        tenant.register(CLIENT_ID, cert)
        cache = RedisTokenCache(url, namespace=namespace)

        def fresh(store: RedisTokenCache | None) -> CertificateCredential:
            return CertificateCredential(
                tenant.tenant_id,
                CLIENT_ID,
                certificate=cert,
                authority=tenant.authority_host,
                cache=store,
                client=http,
                retry=RetryPolicy(max_attempts=1),
            )

        seeded = fresh(cache)
        seeded.get_token(SCOPE)  # the one request; every fresh credential below finds it
        in_memory = timed(lambda: seeded.get_token(SCOPE), samples * 10)
        credentials = [fresh(cache) for _ in range(samples)]  # made before the clock starts
        through_redis = [timed(lambda c=c: c.get_token(SCOPE), 1)[0] for c in credentials]
        assert tenant.request_count == 1, "fresh credentials should have found the token"
        direct = [fresh(None) for _ in range(max(10, samples // 10))]
        requests = [timed(lambda c=c: c.get_token(SCOPE), 1)[0] for c in direct]
        raw = redis.Redis.from_url(url)
        get_rtt = timed(lambda: raw.get("certauth-bench-absent"), samples)
        raw.close()
        cache.close()
        lines.append(describe("in-memory hit (same credential)", in_memory))
        lines.append(describe("fresh credential, token found in Redis", through_redis))
        lines.append(describe("  (one Redis GET round trip, for scale)", get_rtt))
        lines.append(describe("token request to the emulator (no cache)", requests))
    return lines


@dataclass
class FleetLoad:
    """Token requests the tenant saw in one simulated run."""

    first_hour: int
    per_hour: float


def simulate_fleet(
    url: str | None,
    cert: Certificate,
    namespace: str,
    *,
    replicas: int,
    hours: float,
    rate: float,
    lifetime: int,
    stagger: float,
) -> FleetLoad:
    """Run the fleet on the emulator's clock; count the tenant's token requests."""
    clock = Clock()
    start = clock.time()
    with Emulator(clock=clock, token_lifetime=lifetime) as tenant, httpx.Client() as http:
        tenant.register(CLIENT_ID, cert)
        cache = RedisTokenCache(url, namespace=namespace) if url else None
        fleet = [
            CertificateCredential(
                tenant.tenant_id,
                CLIENT_ID,
                certificate=cert,
                authority=tenant.authority_host,
                cache=cache,
                client=http,
                clock=clock.time,
            )
            for _ in range(replicas)
        ]
        # A rolling start: replica i comes up at i * stagger / replicas seconds.
        starts = [i * stagger / replicas for i in range(replicas)]
        step = 1.0 / rate
        first_hour = 0
        elapsed = 0.0
        while elapsed < hours * 3600:
            for credential, started in zip(fleet, starts, strict=True):
                if elapsed >= started:
                    credential.get_token(SCOPE)
            elapsed += step
            clock.advance(start + elapsed - clock.time())
            if first_hour == 0 and elapsed >= 3600:
                first_hour = tenant.request_count
        steady = (tenant.request_count - first_hour) / (hours - 1)
        if cache is not None:
            cache.close()
    return FleetLoad(first_hour, steady)


def versions(url: str) -> str:
    client = redis.Redis.from_url(url)
    server = client.info("server").get("redis_version", "?")
    client.close()
    return (
        f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d} · certauth {certauth.__version__} · "
        f"Python {platform.python_version()} · redis-py {redis.__version__} · "
        f"Redis {server} · {platform.machine()}, {len(os.sched_getaffinity(0))} CPUs"
    )


def main() -> int:
    """Measure and print (see the module docstring)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--redis-url", help="an existing Redis (default: start redis-server)")
    parser.add_argument("--samples", type=int, default=1000, help="latency samples")
    parser.add_argument("--replicas", type=int, default=50)
    parser.add_argument("--hours", type=float, default=3.0, help="simulated hours (>= 2)")
    parser.add_argument("--rate", type=float, default=1.0, help="calls/s per replica")
    parser.add_argument("--lifetime", type=int, default=3600, help="token lifetime, seconds")
    parser.add_argument("--stagger", type=float, default=600.0, help="rolling start, seconds")
    parser.add_argument("--smoke", action="store_true", help="a tiny run (for the test suite)")
    args = parser.parse_args()
    if args.smoke:
        args.samples, args.replicas, args.hours, args.rate = 20, 3, 2.0, 1 / 60
    if args.hours < 2:
        parser.error("--hours must be at least 2 (the first hour is the cold start)")

    cert = generate_certificate("CN=bench")
    namespace = f"certauth-bench-{secrets.token_hex(4)}"
    with redis_server(args.redis_url) as url:
        try:
            print(f"certauth Redis token cache benchmark · {versions(url)}")
            print("latency (measured, real time, loopback):")
            for line in measure_latency(url, cert, namespace, args.samples):
                print(line)

            def fleet(store: str | None) -> FleetLoad:
                return simulate_fleet(
                    store,
                    cert,
                    namespace,
                    replicas=args.replicas,
                    hours=args.hours,
                    rate=args.rate,
                    lifetime=args.lifetime,
                    stagger=args.stagger,
                )

            without, shared = fleet(None), fleet(url)
        finally:
            client = redis.Redis.from_url(url)
            for name in client.scan_iter(f"{namespace}:*"):
                client.delete(name)
            client.close()
    renewals = 3600 / (args.lifetime / 2)  # renewed at half-life
    print(
        f"fleet: {args.replicas} replicas, token lifetime {args.lifetime} s, "
        f"{args.rate:g} calls/s per replica, rolling start over {args.stagger:.0f} s; "
        f"{args.hours:g} h simulated with the emulator's clock (virtual time)"
    )
    print("tenant token requests per hour (steady state, after the first hour):")
    print(
        f"  without the shared cache: {without.per_hour:6.0f}   "
        f"(first hour: {without.first_hour}; arithmetic: {args.replicas} x {renewals:g})"
    )
    print(
        f"  with the shared cache:    {shared.per_hour:6.0f}   "
        f"(first hour: {shared.first_hour}; arithmetic: 1 x {renewals:g})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
