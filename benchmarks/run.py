"""certauth, MSAL and azure-identity side by side, in one run, against one local TLS endpoint.

    python -m benchmarks [--smoke] [--json FILE] [--libraries certauth,msal,azure-identity]
    scripts/bench ...        (the same, with the project's virtualenv)

The token endpoint is the emulator over https, started in its own process (``benchmarks._server``)
so its work does not share the clients' GIL; it counts every request it receives, which gives the
request rows. In-process rows take the median of several batches (the garbage collector off while
a batch runs, as ``timeit`` does); process rows run each command several times with
``subprocess`` and take the median wall time. The signer rows (certauth only) get the first
token and sign assertions with a key in a SoftHSM2 token and in the emulator's Key Vault
(``benchmarks.signers``); without SoftHSM2 or python-pkcs11 the SoftHSM2 rows are skipped, with
the reason in the table's notes and the JSON. The fleet rows (certauth only,
``benchmarks.redis_fleet``) start a redis-server and a local Redis Cluster and count the token
requests, the time to the last token and the Redis commands of a cold fleet; without
redis-server or the redis package they are skipped the same way. Results: a table on stdout
and a JSON file (default ``benchmarks/results/latest.json``; ``benchmarks/results/`` is
git-ignored).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks._server import VAULT_CERTIFICATE
from benchmarks.clients import LIBRARIES, Library, Target, process_argv
from benchmarks.redis_fleet import DEPLOYMENTS as FLEET_DEPLOYMENTS
from benchmarks.redis_fleet import redis_missing
from benchmarks.signers import softhsm_missing, softhsm_signer

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "latest.json"
CLIENT_ID = "5e6b7c1d-0000-4000-8000-00000000be4c"
#: The apps of the signer rows: key in a SoftHSM2 token, key in the emulated Key Vault.
PKCS11_CLIENT_ID = "5e6b7c1d-0000-4000-8000-0000000011a1"
KEYVAULT_CLIENT_ID = "5e6b7c1d-0000-4000-8000-000000000cb1"
SCOPE = "api://bench/.default"


@dataclass(frozen=True)
class Counts:
    """How many times each measurement repeats (``--smoke`` makes them tiny)."""

    first_token: int = 30
    first_token_peers: int = 12
    warmup: int = 2
    cached_batches: int = 7
    cached_calls: int = 20_000
    cached_calls_peers: int = 2_000
    burst_runs: int = 5
    burst_threads: int = 64
    process_runs: int = 20
    cli_runs: int = 20
    sign_batches: int = 7
    sign_calls: int = 200
    sign_calls_peers: int = 3
    throughput_seconds: float = 5.0
    throughput_connections: int = 4
    #: The signer rows (certauth only; a Key Vault signature is an HTTPS round trip).
    signer_first_token: int = 20
    signer_sign_calls: int = 30
    #: The fleet rows: processes x threads at once on one cold scope, measured runs each.
    fleet_processes: int = 8
    fleet_threads: int = 8
    fleet_runs: int = 9


SMOKE = Counts(
    first_token=2,
    first_token_peers=1,
    warmup=1,
    cached_batches=2,
    cached_calls=200,
    cached_calls_peers=20,
    burst_runs=1,
    burst_threads=16,
    process_runs=1,
    cli_runs=1,
    sign_batches=1,
    sign_calls=3,
    sign_calls_peers=1,
    throughput_seconds=0.5,
    throughput_connections=2,
    signer_first_token=1,
    signer_sign_calls=2,
    fleet_processes=2,
    fleet_threads=2,
    fleet_runs=1,
)


@dataclass
class Row:
    """One line of the table: a measure, each library's median and certauth's target."""

    key: str
    title: str
    unit: str
    #: Human form of the target, e.g. ``<= 8 ms``.
    target: str
    #: Whether a certauth value meets the target.
    meets: Callable[[float], bool] = field(repr=False)
    #: Lower is better (ratios are only shown where they mean "times faster").
    lower_is_better: bool = True
    values: dict[str, float | None] = field(default_factory=dict)
    details: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Shown instead of the number (e.g. ``54 (16-64) + 0 disc``).
    cells: dict[str, str] = field(default_factory=dict)
    #: Why the row did not run here (e.g. SoftHSM2 is not installed); ``None``: it ran.
    skipped: str | None = None
    #: The floor's median, for rows that have one (``benchmarks/floors/``: the same work
    #: done with the standard library and cryptography alone, timed interleaved with certauth).
    floor: float | None = None
    #: The floor's key in the JSON (e.g. ``process_floor``) and its timing summary.
    floor_key: str = ""
    floor_details: dict[str, Any] = field(default_factory=dict)
    #: ``meets`` also takes certauth's figure divided by the floor's (``None``: no such target).
    meets_floor: Callable[[float], bool] | None = field(default=None, repr=False)

    def skip(self, reason: str) -> None:
        self.skipped = reason
        self.cells["certauth"] = "skipped"

    def ok(self) -> bool | None:
        value = self.values.get("certauth")
        if value is None:
            return None
        if self.meets_floor is not None:
            ratio = _ratio(value, self.floor)
            if ratio is None or not self.meets_floor(ratio):
                return False
        return self.meets(value)

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "measure": self.title,
            "unit": self.unit,
            "target": self.target,
            "meets_target": self.ok(),
            "median": self.values,
            "ratio_certauth_to_peer": {
                name: _ratio(self.values.get("certauth"), value)
                for name, value in self.values.items()
                if name != "certauth"
            },
            "details": self.details,
            "skipped": self.skipped,
            **(
                {
                    "floor": {"key": self.floor_key, "median": self.floor}
                    | {"details": self.floor_details},
                    "ratio_certauth_to_floor": _ratio(self.values.get("certauth"), self.floor),
                }
                if self.floor_key
                else {}
            ),
        }


#: Microseconds per unit of a row's figure.
_UNIT_US = {"us": 1.0, "ms": 1000.0}


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or theirs is None or theirs == 0:
        return None
    return ours / theirs


def summary(samples: Sequence[float]) -> dict[str, Any]:
    """Median, min, max and the sample count."""
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "n": len(samples),
    }


# -- the token endpoint ------------------------------------------------------------------------


class Endpoint:
    """The emulator process (``benchmarks._server``) and its request counters."""

    def __init__(
        self, cert_file: Path, *, register: Sequence[str] = (), vault: bool = False
    ) -> None:
        argv = [
            sys.executable,
            "-m",
            "benchmarks._server",
            "--register",
            f"{CLIENT_ID}={cert_file}",
        ]
        for item in register:
            argv += ["--register", item]
        if vault:
            argv += ["--vault", f"{KEYVAULT_CLIENT_ID}={CLIENT_ID}"]
        self._process = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.info: dict[str, str] = self._read()

    def _read(self) -> Any:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError("the benchmark emulator process exited; see its stderr above")
        return json.loads(line)

    def _ask(self, command: str) -> Any:
        assert self._process.stdin is not None
        self._process.stdin.write(command + "\n")
        self._process.stdin.flush()
        return self._read()

    def reset(self) -> None:
        self._ask("reset")

    def counts(self) -> dict[str, int]:
        """Requests since the last :meth:`reset`: ``token`` POSTs, ``discovery``,
        ``instance_discovery``, ``jwks``, ``other``."""
        result: dict[str, int] = self._ask("counts")
        return result

    def vault_requests(self) -> int:
        """Requests the emulated Key Vault received since the last :meth:`reset`."""
        result: int = self._ask("vault")["requests"]
        return result

    def close(self) -> None:
        with suppress(OSError, RuntimeError, ValueError):
            self._ask("quit")
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


# -- measurements -------------------------------------------------------------------------------


@contextmanager
def _gc_off() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Bench:
    """Runs every row for every library."""

    def __init__(
        self, libraries: Sequence[Library], target: Target, endpoint: Endpoint, counts: Counts
    ) -> None:
        self.libraries = libraries
        self.target = target
        self.endpoint = endpoint
        self.counts = counts
        self.notes: list[str] = []

    def _peer(self, library: Library, ours: int, theirs: int) -> int:
        return ours if library.name == "certauth" else theirs

    # first token ---------------------------------------------------------------------------

    def first_token(self, first: Row, requests: Row) -> None:
        """New credential object (key read from the file), new TLS connection, one token."""
        for library in self.libraries:
            runs = self._peer(library, self.counts.first_token, self.counts.first_token_peers)
            times: list[float] = []
            per_token: list[int] = []
            for index in range(self.counts.warmup + runs):
                self.endpoint.reset()
                started = time.perf_counter()
                credential = library.new_credential(self.target)
                library.get_token(credential, self.target)
                elapsed = time.perf_counter() - started
                library.close(credential)
                if index < self.counts.warmup:
                    continue
                times.append(elapsed * 1000)
                per_token.append(sum(self.endpoint.counts().values()))
            first.values[library.name] = statistics.median(times)
            first.details[library.name] = summary(times)
            requests.values[library.name] = statistics.median(per_token)
            requests.details[library.name] = summary(per_token)
            self.endpoint.reset()
            credential = library.new_credential(self.target)
            library.get_token(credential, self.target)
            requests.details[library.name]["by_kind"] = self.endpoint.counts()
            library.close(credential)

    # cached ----------------------------------------------------------------------------------

    def cached(self, row: Row) -> None:
        """``get_token`` (or MSAL's ``acquire_token_for_client``) with the token cached."""
        target = self.target
        for library in self.libraries:
            calls = self._peer(library, self.counts.cached_calls, self.counts.cached_calls_peers)
            credential = library.new_credential(target)
            library.get_token(credential, target)
            call = library.cached_call(credential, target)
            self.endpoint.reset()
            per_call: list[float] = []
            for _ in range(self.counts.cached_batches):
                loop = range(calls)
                with _gc_off():
                    started = time.perf_counter()
                    for _ in loop:
                        call()
                    elapsed = time.perf_counter() - started
                per_call.append(elapsed / calls * 1e6)
            sent = sum(self.endpoint.counts().values())
            library.close(credential)
            if sent:
                raise RuntimeError(f"{library.name}: {sent} requests while serving cached tokens")
            row.values[library.name] = statistics.median(per_call)
            row.details[library.name] = summary(per_call) | {"calls_per_batch": calls}
        self.notes.append(
            "cached get_token: one call of each library's public method (MSAL: "
            "acquire_token_for_client) through functools.partial, loop overhead included"
        )

    # burst -----------------------------------------------------------------------------------

    def burst(self, posts: Row, burst: Row) -> None:
        """``burst_threads`` threads ask a new credential for a token at the same moment."""
        threads = self.counts.burst_threads
        for library in self.libraries:
            token_posts: list[int] = []
            discovery: list[int] = []
            times: list[float] = []
            for _ in range(self.counts.burst_runs):
                credential = library.new_credential(self.target)
                self.endpoint.reset()
                elapsed, errors = self._one_burst(library, credential, threads)
                counts = self.endpoint.counts()
                library.close(credential)
                if errors:
                    raise RuntimeError(f"{library.name}: {len(errors)} threads failed: {errors[0]}")
                token_posts.append(counts["token"])
                discovery.append(counts["discovery"] + counts["instance_discovery"])
                times.append(elapsed * 1000)
            posts.values[library.name] = statistics.median(token_posts)
            posts.details[library.name] = summary(token_posts) | {
                "discovery_gets": summary(discovery)
            }
            low, high = min(token_posts), max(token_posts)
            spread = f" ({low}-{high})" if low != high else ""
            cell = f"{statistics.median(token_posts):g}{spread}"
            if max(discovery):
                cell += f" + {statistics.median(discovery):g} disc."
            posts.cells[library.name] = cell
            burst.values[library.name] = statistics.median(times)
            burst.details[library.name] = summary(times)
        posts.title = f"{threads} threads at once on an empty cache: token POSTs"
        burst.title = f"{threads} threads at once: time until every thread has its token"
        self.notes.append(
            "burst: the credential object is created before the threads start (MSAL's "
            "constructor runs its discovery requests there); counted: requests during the burst"
        )

    def _one_burst(
        self, library: Library, credential: Any, threads: int
    ) -> tuple[float, list[BaseException]]:
        barrier = threading.Barrier(threads + 1)
        errors: list[BaseException] = []

        def worker() -> None:
            barrier.wait()
            try:
                library.get_token(credential, self.target)
            except Exception as exc:  # noqa: BLE001 - reported by the caller
                errors.append(exc)

        workers = [threading.Thread(target=worker) for _ in range(threads)]
        for thread in workers:
            thread.start()
        time.sleep(0.05)  # every worker is parked on the barrier
        started = time.perf_counter()
        barrier.wait()
        for thread in workers:
            thread.join()
        return time.perf_counter() - started, errors

    # assertion -------------------------------------------------------------------------------

    def assertion(self, row: Row) -> None:
        """Build and sign one client assertion with the key already loaded."""
        for library in self.libraries:
            calls = self._peer(library, self.counts.sign_calls, self.counts.sign_calls_peers)
            build = library.assertion_builder(self.target)
            build()
            per_call: list[float] = []
            for _ in range(self.counts.sign_batches):
                with _gc_off():
                    started = time.perf_counter()
                    for _ in range(calls):
                        build()
                    elapsed = time.perf_counter() - started
                per_call.append(elapsed / calls * 1e6)
            row.values[library.name] = statistics.median(per_call)
            row.details[library.name] = summary(per_call) | {"calls_per_batch": calls}
        self.notes.append(
            "build + sign: certauth PS256 (its Entra default); MSAL and azure-identity (sync, "
            "through MSAL) RS256 via msal.oauth2cli.assertion.JwtAssertionCreator with the PEM "
            "string, as they do internally"
        )

    # signers ---------------------------------------------------------------------------------

    def signer_first_token(self, row: Row, signer: Any, client_id: str) -> None:
        """The first-token row with a key outside the process: the signer is opened once (as a
        service does at start-up); each run makes a new credential object with ``signer=``
        (which proves once, with a test signature, that the key belongs to the certificate),
        opens a new TLS connection and gets one token: two signatures per new credential."""
        from certauth import CertificateCredential

        target = self.target
        times: list[float] = []
        token_posts: list[int] = []
        vault_requests: list[int] = []

        def new_credential() -> Any:
            return CertificateCredential(
                target.tenant_id,
                client_id,
                signer=signer,
                authority=target.authority_host,
                verify=target.ca_file,
            )

        for index in range(self.counts.warmup + self.counts.signer_first_token):
            self.endpoint.reset()
            started = time.perf_counter()
            credential = new_credential()
            credential.get_token(target.scope)
            elapsed = time.perf_counter() - started
            credential.close()
            if index < self.counts.warmup:
                continue
            times.append(elapsed * 1000)
            token_posts.append(sum(self.endpoint.counts().values()))
            vault_requests.append(self.endpoint.vault_requests())
        row.values["certauth"] = statistics.median(times)
        row.details["certauth"] = summary(times) | {
            "signer": signer.description,
            "requests_to_token_endpoint": summary(token_posts),
            "requests_to_vault": summary(vault_requests),
            "cached_get_token_us": self._signer_cached(new_credential),
        }
        self._signer_note()

    def _signer_note(self) -> None:
        note = (
            "signer rows (certauth only: MSAL and azure-identity take no signer): the signer is "
            "opened once, outside the timing; a new credential proves once, with a test "
            "signature, that the signer's key belongs to its certificate, so its first token "
            "costs two signatures, and every later token one (the build + sign rows); a cached "
            "token costs none. SoftHSM2 is a software token in this process; the emulated Key "
            "Vault answers from the endpoint's process over a kept-alive TLS connection "
            "(a real vault adds the network round trip)"
        )
        if note not in self.notes:
            self.notes.append(note)

    def _signer_cached(self, new_credential: Callable[[], Any]) -> float:
        """A cached ``get_token`` of a signer's credential (µs per call): the signer is not
        involved once the token is cached; any request or signature here is an error."""
        credential = new_credential()
        credential.get_token(self.target.scope)
        call = functools.partial(credential.get_token, self.target.scope)
        calls = self.counts.cached_calls_peers
        self.endpoint.reset()
        with _gc_off():
            started = time.perf_counter()
            for _ in range(calls):
                call()
            elapsed = time.perf_counter() - started
        sent = sum(self.endpoint.counts().values()) + self.endpoint.vault_requests()
        credential.close()
        if sent:
            raise RuntimeError(f"signer credential: {sent} requests while serving cached tokens")
        return elapsed / calls * 1e6

    def signer_assertion(self, row: Row, signer: Any, client_id: str) -> None:
        """Build and sign one assertion through a signer, as a credential does per token: one
        kept :class:`certauth.assertion.AssertionSigner` (PS256), its proof signature made
        before timing. A one-shot ``build_client_assertion(signer=...)`` proves again on every
        call (two signatures): its median is in the details."""
        from certauth import build_client_assertion
        from certauth.assertion import AssertionSigner

        audience = self.target.token_endpoint
        assertions = AssertionSigner(signer=signer, client_id=client_id, alg="PS256")
        assertions.sign(audience)
        calls = self.counts.signer_sign_calls
        per_call: list[float] = []
        for _ in range(self.counts.sign_batches):
            with _gc_off():
                started = time.perf_counter()
                for _ in range(calls):
                    assertions.sign(audience)
                elapsed = time.perf_counter() - started
            per_call.append(elapsed / calls * 1e6)
        one_shot: list[float] = []
        for _ in range(max(1, calls // 3)):
            started = time.perf_counter()
            build_client_assertion(signer=signer, client_id=client_id, audience=audience)
            one_shot.append((time.perf_counter() - started) * 1e6)
        row.values["certauth"] = statistics.median(per_call) / _UNIT_US[row.unit]
        row.details["certauth"] = summary(per_call) | {
            "unit": "us",
            "calls_per_batch": calls,
            "signer": signer.description,
            "one_shot_build_client_assertion_us": statistics.median(one_shot),
        }

    # processes ---------------------------------------------------------------------------------

    def process(self, row: Row, env: dict[str, str]) -> None:
        """A new Python process imports the library and gets one token; every library's
        command and the floor (``benchmarks/floors/process.py``: load the key and the
        certificate, check them as certauth must before sending, sign the assertion, one https
        POST with the same CA file, print the token) run in turn, run after run, so a change
        in the machine's load touches them alike. The floor without the certificate checks
        (``--unchecked``) runs too, for reference."""
        target = self.target
        commands = {library.name: process_argv(library, target) for library in self.libraries}
        files = (target.pem_path, target.token_endpoint, target.client_id, target.scope)
        commands[FLOOR] = _floor_argv("process.py", *files, target.ca_file)
        unchecked = f"{FLOOR} --unchecked"
        commands[unchecked] = _floor_argv("process.py", "--unchecked", *files, target.ca_file)
        times = _time_interleaved(commands, env, self.counts.process_runs)
        for library in self.libraries:
            row.values[library.name] = statistics.median(times[library.name])
            row.details[library.name] = summary(times[library.name])
        _set_floor(row, times[FLOOR], "process_floor", "benchmarks/floors/process.py")
        row.floor_details["unchecked"] = summary(times[unchecked])
        self.notes.append(
            "process floor: benchmarks/floors/process.py reads the certificate with "
            "cryptography.x509 and checks it as certauth must before sending (key match, "
            "validity, RSA >= 2048); without those checks (--unchecked, nothing parsed): "
            f"{statistics.median(times[unchecked]):.1f} ms"
        )

    def cli_cache_hit(self, row: Row, env: dict[str, str]) -> None:
        """``certauth token`` served from the file cache, against its floor
        (``benchmarks/floors/cache_hit.py``: load the key, derive the entry's key, open the
        entry certauth wrote with AES-GCM, print the token), interleaved. The first run fills
        the cache (unmeasured); every measured run must print the same token as the floor,
        and the token endpoint must receive nothing meanwhile."""
        target = self.target
        # Explicit flags; a cache URL in the environment would send the row to Redis.
        env = {k: v for k, v in env.items() if not k.startswith(("AZURE_", "CERTAUTH_"))}
        with tempfile.TemporaryDirectory(prefix="certauth-bench-cache-") as cache_dir:
            env["CERTAUTH_CACHE_DIR"] = cache_dir
            certauth = [*_certauth_command(), "token", "--tenant", target.tenant_id]
            certauth += ["--authority-host", target.authority_host, "--client-id"]
            certauth += [target.client_id, "--cert", target.pem_path, "--ca-file"]
            certauth += [target.ca_file, "--scope", target.scope]
            first = subprocess.run(certauth, env=env, cwd=ROOT, capture_output=True, check=False)
            if first.returncode != 0 or not first.stdout.strip():
                raise RuntimeError(f"certauth token exited {first.returncode}: {first.stderr!r}")
            floor = _floor_argv(
                "cache_hit.py",
                target.pem_path,
                target.token_endpoint,
                target.client_id,
                target.scope,
                cache_dir,
            )
            self.endpoint.reset()
            times = _time_interleaved(
                {"certauth": certauth, FLOOR: floor},
                env,
                self.counts.cli_runs,
                stdout=first.stdout,
            )
            sent = sum(self.endpoint.counts().values())
        if sent:
            raise RuntimeError(
                f"certauth token: {sent} requests while the file cache held the token"
            )
        row.values["certauth"] = statistics.median(times["certauth"])
        row.details["certauth"] = summary(times["certauth"]) | {"argv": certauth[-14:]}
        _set_floor(row, times[FLOOR], "cli_cache_hit_floor", "benchmarks/floors/cache_hit.py")

    def process_system_trust(self, row: Row, env: dict[str, str]) -> None:
        """The process row for certauth without ``verify=``: trust from the system store, as
        against Entra ID (the store here is the system bundle plus the emulator's CA, given
        through ``SSL_CERT_FILE``). The difference is the cost of loading the system bundle."""
        import ssl

        system = os.environ.get("SSL_CERT_FILE") or ssl.get_default_verify_paths().cafile
        bundle = Path(self.target.pem_path).with_name("system-and-emulator-ca.pem")
        parts = [Path(system).read_bytes()] if system and Path(system).is_file() else []
        bundle.write_bytes(b"\n".join([*parts, Path(self.target.ca_file).read_bytes()]))
        code = (
            "import sys\n"
            "from certauth import CertificateCredential\n"
            "t, c, p, host, scope = sys.argv[1:]\n"
            "credential = CertificateCredential(t, c, p, authority=host)\n"
            "assert credential.get_token(scope).token\n"
        )
        target = self.target
        argv = [sys.executable, "-c", code, target.tenant_id, target.client_id]
        argv += [target.pem_path, target.authority_host, target.scope]
        times = _time_command(argv, env | {"SSL_CERT_FILE": str(bundle)}, self.counts.process_runs)
        row.values["certauth"] = statistics.median(times)
        row.details["certauth"] = summary(times) | {"system_bundle": system}

    def cli(self, version: Row, help_: Row, baseline: Row, env: dict[str, str]) -> None:
        """``certauth --version`` / ``--help`` against ``python -c pass``."""
        command = _certauth_command()
        runs = self.counts.cli_runs
        for row, argv in (
            (version, [*command, "--version"]),
            (help_, [*command, "--help"]),
            (baseline, [sys.executable, "-c", "pass"]),
        ):
            times = _time_command(argv, env, runs)
            row.values["certauth"] = statistics.median(times)
            row.details["certauth"] = summary(times) | {"argv": argv[-2:]}

    def fleet(self, rows: dict[str, Row], folder: Path) -> None:
        """The fleet rows (``benchmarks.redis_fleet``): N processes x M threads, a credential
        each, ask at once for a token of one cold scope through a ``RedisTokenCache``, on one
        Redis server, a Redis Cluster, and the cluster with ``replicas=1``."""
        from benchmarks.redis_fleet import DEPLOYMENTS, Replica, deployments, run_fleet, scopes

        target, counts = self.target, self.counts
        with deployments(folder) as where:
            for key, _label, options in DEPLOYMENTS:
                url, commandstats = where[key]
                replica = Replica(
                    url,
                    options,
                    f"certauth-bench-{key}",
                    target.authority_host,
                    target.tenant_id,
                    target.client_id,
                    target.pem_path,
                    target.ca_file,
                    counts.fleet_threads,
                    scopes(key, counts.fleet_runs),
                )
                figures = run_fleet(
                    replica,
                    counts.fleet_processes,
                    reset=self.endpoint.reset,
                    token_requests=lambda: self.endpoint.counts()["token"],
                    commandstats=commandstats,
                )
                row = rows[key]
                row.values["certauth"] = statistics.median(figures.requests)
                row.cells["certauth"] = figures.cell()
                row.details["certauth"] = figures.details() | {"cache_options": options}
        self.notes.append(
            "fleet rows: each process one RedisTokenCache and one connection pool, each thread "
            "its own credential (so the callers coordinate only through Redis), all released "
            "together on a scope nobody asked for; medians of the measured runs after one "
            "warm-up run. Redis commands: those the processes sent, counted where redis-py "
            "packs them (an EVALSHA is one; connection set-up included); writes: packed sends "
            "to a socket (a command or a pipeline), about the round trips; what Redis executed "
            "(the scripts' own commands included) is in the JSON details"
        )

    def throughput(self, row: Row) -> None:
        """Token requests per second the emulator sustains from concurrent clients."""
        import ssl

        from benchmarks.emulator_throughput import measure
        from certauth.certificates import load_certificate

        result = measure(
            load_certificate(self.target.pem_path, require_key=True),
            client_id=CLIENT_ID,
            token_endpoint=self.target.token_endpoint,
            verify=ssl.create_default_context(cafile=self.target.ca_file),
            seconds=self.counts.throughput_seconds,
            connections=self.counts.throughput_connections,
        )
        if result.failures:
            raise RuntimeError(f"emulator throughput: {result.failures} requests failed")
        row.values["certauth"] = result.per_second
        row.details["certauth"] = {
            "requests": result.requests,
            "seconds": result.seconds,
            "connections": result.connections,
        }


def _open_vault_signer(target: Target, vault_url: str, stack: ExitStack) -> Any:
    """The Key Vault signer of the signer rows, opened once (it reads the certificate object);
    the vault credential is the bench app's own file-key credential."""
    from certauth import CertificateCredential
    from certauth.signers.keyvault import KeyVaultSigner

    credential = CertificateCredential(
        target.tenant_id,
        target.client_id,
        target.pem_path,
        authority=target.authority_host,
        verify=target.ca_file,
    )
    stack.callback(credential.close)
    signer = KeyVaultSigner(
        vault_url, VAULT_CERTIFICATE, credential=credential, verify=target.ca_file
    )
    stack.callback(signer.close)
    return signer


#: The floors' name in a row (``benchmarks/floors/``).
FLOOR = "floor"
FLOORS = ROOT / "benchmarks" / "floors"


def _floor_argv(script: str, *args: str) -> list[str]:
    """A floor script's command: run as a file, as the ``certauth`` command is."""
    return [sys.executable, str(FLOORS / script), *args]


def _certauth_command() -> list[str]:
    """The installed ``certauth`` command (else ``python -m certauth``)."""
    script = Path(sys.executable).with_name("certauth")
    return [str(script)] if script.exists() else [sys.executable, "-m", "certauth"]


def _set_floor(row: Row, times: list[float], key: str, script: str) -> None:
    row.floor = statistics.median(times)
    row.floor_key = key
    row.floor_details = summary(times) | {"script": script}


def _time_interleaved(
    commands: dict[str, list[str]], env: dict[str, str], runs: int, *, stdout: bytes | None = None
) -> dict[str, list[float]]:
    """Wall time (ms) of each command, ``runs`` rounds of one run each, the order reversed
    every other round (after one unmeasured round: page cache, bytecode), so that a change in
    the machine's load falls on all of them alike. ``stdout``: what every run must print."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    order = list(commands)
    for index in range(runs + 1):
        for name in order if index % 2 else reversed(order):
            argv = commands[name]
            started = time.perf_counter()
            done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, check=False)
            elapsed = time.perf_counter() - started
            if done.returncode != 0:
                raise RuntimeError(
                    f"{name}: {argv[0]} ... exited {done.returncode}: "
                    f"{done.stderr.decode()[-2000:]}"
                )
            if stdout is not None and done.stdout != stdout:
                raise RuntimeError(f"{name} printed {done.stdout[:60]!r}..., not the token")
            if index:
                times[name].append(elapsed * 1000)
    return times


def _time_command(argv: list[str], env: dict[str, str], runs: int) -> list[float]:
    """Wall time (ms) of ``runs`` runs, after one unmeasured run (page cache, bytecode)."""
    times: list[float] = []
    for index in range(runs + 1):
        started = time.perf_counter()
        done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, check=False)
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(
                f"{argv[0]} ... exited {done.returncode}: {done.stderr.decode()[-2000:]}"
            )
        if index:
            times.append(elapsed * 1000)
    return times


# -- output -------------------------------------------------------------------------------------


def _format(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit in ("count",):
        return f"{value:g}"
    if unit == "req/s":
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:,.0f} {unit}"
    if value >= 10:
        return f"{value:.1f} {unit}"
    return f"{value:.2f} {unit}"


def table(rows: Sequence[Row], names: Sequence[str]) -> str:
    """A Markdown table: medians, certauth/peer ratios, target, met?"""
    peers = [n for n in names if n != "certauth"]
    floors = any(row.floor_key for row in rows)
    header = ["measure", *names, *[f"certauth/{p}" for p in peers]]
    header += ["floor", "certauth/floor"] if floors else []
    header += ["target", "met"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row.title]
        for name in names:
            cells.append(row.cells.get(name) or _format(row.values.get(name), row.unit))
        for peer in [*peers, *([FLOOR] if floors else [])]:
            theirs = row.floor if peer == FLOOR else row.values.get(peer)
            if peer == FLOOR:
                cells.append(_format(theirs, row.unit))
            ratio = _ratio(row.values.get("certauth"), theirs)
            cells.append("-" if ratio is None else f"{ratio:.3g}x")
        ok = row.ok()
        cells += [row.target, "-" if ok is None else ("yes" if ok else "NO")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def versions() -> dict[str, str]:
    import certauth

    # The distribution is certauth-toolkit; the version of the code measured is the import's.
    found = {"python": platform.python_version(), "certauth": certauth.__version__}
    for name in ("msal", "azure-identity", "httpx", "click", "cryptography", "PyJWT"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def _date() -> str:
    try:
        return subprocess.run(["date"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return time.strftime("%a %b %d %H:%M:%S %Z %Y")


# -- main ---------------------------------------------------------------------------------------


def _rows(threads: int, fleet: tuple[int, int] = (8, 8)) -> dict[str, Row]:
    rows = [
        Row(
            "first_token",
            "first token, new credential object (key from file, new TLS connection)",
            "ms",
            "<= 8 ms",
            lambda v: v <= 8,
        ),
        Row(
            "first_token_pkcs11",
            "the same, key in a SoftHSM2 token (PKCS#11 signer opened once; 2 signatures: "
            "the credential's key proof + the assertion)",
            "ms",
            "-",
            lambda v: True,
        ),
        Row(
            "first_token_keyvault",
            "the same, key in the emulated Key Vault (signer opened once, vault token cached; "
            "2 sign requests over TLS)",
            "ms",
            "-",
            lambda v: True,
        ),
        Row("cached", "cached get_token", "us", "<= 1 us", lambda v: v <= 1),
        Row(
            "burst_posts",
            f"{threads} threads at once on an empty cache: token POSTs",
            "count",
            "exactly 1",
            lambda v: v == 1,
        ),
        Row("burst_time", "burst time", "ms", "< 25 ms", lambda v: v < 25),
        Row(
            "process",
            "process that imports the library and gets one token",
            "ms",
            "<= 180 ms, <= 1.2x floor",
            lambda v: v <= 180,
            meets_floor=lambda r: r <= 1.2,
        ),
        Row(
            "process_system_trust",
            "the same, trust from the system CA bundle instead of `verify=CA file` (for reference)",
            "ms",
            "-",
            lambda v: True,
        ),
        Row(
            "cli_cache_hit",
            "`certauth token` served from the file cache (process)",
            "ms",
            "<= 1.3x floor",
            lambda v: True,
            meets_floor=lambda r: r <= 1.3,
        ),
        Row("cli_version", "`certauth --version` (process)", "ms", "<= 60 ms", lambda v: v <= 60),
        Row("cli_help", "`certauth --help` (process)", "ms", "<= 60 ms", lambda v: v <= 60),
        Row("python_pass", "`python -c pass` (for reference)", "ms", "-", lambda v: True),
        Row(
            "assertion",
            "build + sign one assertion, key loaded",
            "us",
            "<= 340 us",
            lambda v: v <= 340,
        ),
        Row(
            "assertion_pkcs11",
            "the same, key in a SoftHSM2 token (PKCS#11 sign)",
            "us",
            "-",
            lambda v: True,
        ),
        Row(
            "assertion_keyvault",
            "the same, key in the emulated Key Vault (one sign request over TLS)",
            "ms",
            "-",
            lambda v: True,
        ),
        Row(
            "requests_first_token",
            "HTTP requests for the first token",
            "count",
            "1",
            lambda v: v == 1,
        ),
        *(
            Row(
                key,
                f"fleet: {fleet[0]} processes x {fleet[1]} threads (a credential each) at once "
                f"on one cold scope, {label}: token requests · wall time to the last token · "
                "Redis commands per get_token (socket writes)",
                "count",
                "exactly 1 request",
                lambda v: v == 1,
            )
            for key, label, _ in FLEET_DEPLOYMENTS
        ),
        Row(
            "emulator_throughput",
            "emulator: token requests/s (TLS, concurrent keep-alive clients)",
            "req/s",
            ">= 300 req/s",
            lambda v: v >= 300,
            lower_is_better=False,
        ),
    ]
    return {row.key: row for row in rows}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="certauth, MSAL and azure-identity side by side against one local TLS "
        "token endpoint (the emulator in its own process).",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny counts: checks that every row runs (~15 s)"
    )
    parser.add_argument(
        "--json",
        metavar="FILE",
        type=Path,
        default=DEFAULT_JSON,
        help=f"write the results here (default: {DEFAULT_JSON.relative_to(ROOT)})",
    )
    parser.add_argument(
        "--libraries",
        default=",".join(LIBRARIES),
        help="comma-separated subset of: " + ", ".join(LIBRARIES),
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 when a certauth row misses its target",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    counts = SMOKE if args.smoke else Counts()
    names = [n.strip() for n in args.libraries.split(",") if n.strip()]
    unknown = [n for n in names if n not in LIBRARIES]
    if unknown or "certauth" not in names:
        print(f"--libraries: certauth plus any of {', '.join(LIBRARIES)}", file=sys.stderr)
        return 2
    # MSAL (requests) lets these variables override its verify= argument (requests'
    # Session.merge_environment_settings).
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        os.environ.pop(name, None)
    env = dict(os.environ)
    if not args.smoke:
        # Installed packages have their bytecode compiled; an editable checkout under
        # PYTHONDONTWRITEBYTECODE=1 would recompile every module at every start instead.
        env.pop("PYTHONDONTWRITEBYTECODE", None)

    libraries: list[Library] = []
    notes: list[str] = []
    for name in names:
        library = LIBRARIES[name]()
        try:
            library.version()
        except ImportError as exc:
            notes.append(f"{name} skipped: {exc}")
            continue
        libraries.append(library)
    shown = [lib.name for lib in libraries]

    from certauth.certificates import generate_certificate

    load_before = os.getloadavg()
    certificate = generate_certificate("CN=certauth-bench", key_type="rsa2048")
    rows = _rows(counts.burst_threads, (counts.fleet_processes, counts.fleet_threads))
    with tempfile.TemporaryDirectory(prefix="certauth-bench-") as folder, ExitStack() as stack:
        cert_file = Path(folder) / "app.crt"
        cert_file.write_bytes(certificate.pem)
        pem_file = Path(folder) / "app.pem"
        pem_file.write_bytes(certificate.private_key_pem() + certificate.pem)
        register: list[str] = []
        pkcs11_signer: Any = None
        missing = softhsm_missing()
        if missing is None:
            print("benchmarks: SoftHSM2 token and key ...", file=sys.stderr, flush=True)
            pkcs11_signer = stack.enter_context(softhsm_signer(Path(folder)))
            pkcs11_cert = Path(folder) / "pkcs11.crt"
            pkcs11_cert.write_bytes(pkcs11_signer.certificate.pem)
            register.append(f"{PKCS11_CLIENT_ID}={pkcs11_cert}")
        else:
            for key in ("first_token_pkcs11", "assertion_pkcs11"):
                rows[key].skip(missing)
            notes.append(f"SoftHSM2 rows skipped: {missing}")
        endpoint = Endpoint(cert_file, register=register, vault=True)
        stack.callback(endpoint.close)
        info = endpoint.info
        target = Target.of_endpoint(
            info,
            client_id=CLIENT_ID,
            pem_path=str(pem_file),
            thumbprint_sha1=certificate.thumbprint_sha1,
            scope=SCOPE,
        )
        bench = Bench(libraries, target, endpoint, counts)
        keyvault_signer = _open_vault_signer(target, endpoint.info["vault_url"], stack)
        steps: list[tuple[str, Callable[[], None]]] = [
            ("build + sign", lambda: bench.assertion(rows["assertion"])),
            (
                "first token",
                lambda: bench.first_token(rows["first_token"], rows["requests_first_token"]),
            ),
            ("cached get_token", lambda: bench.cached(rows["cached"])),
            ("burst", lambda: bench.burst(rows["burst_posts"], rows["burst_time"])),
            ("process", lambda: bench.process(rows["process"], env)),
            (
                "process, system trust",
                lambda: bench.process_system_trust(rows["process_system_trust"], env),
            ),
            (
                "cli",
                lambda: bench.cli(rows["cli_version"], rows["cli_help"], rows["python_pass"], env),
            ),
            (
                "cli, token from the file cache",
                lambda: bench.cli_cache_hit(rows["cli_cache_hit"], env),
            ),
        ]
        if pkcs11_signer is not None:
            steps += [
                (
                    "first token, SoftHSM2",
                    lambda: bench.signer_first_token(
                        rows["first_token_pkcs11"], pkcs11_signer, PKCS11_CLIENT_ID
                    ),
                ),
                (
                    "build + sign, SoftHSM2",
                    lambda: bench.signer_assertion(
                        rows["assertion_pkcs11"], pkcs11_signer, PKCS11_CLIENT_ID
                    ),
                ),
            ]
        steps += [
            (
                "first token, Key Vault",
                lambda: bench.signer_first_token(
                    rows["first_token_keyvault"], keyvault_signer, KEYVAULT_CLIENT_ID
                ),
            ),
            (
                "build + sign, Key Vault",
                lambda: bench.signer_assertion(
                    rows["assertion_keyvault"], keyvault_signer, KEYVAULT_CLIENT_ID
                ),
            ),
            (
                "emulator throughput",
                lambda: bench.throughput(rows["emulator_throughput"]),
            ),
        ]
        no_redis = redis_missing()
        if no_redis is None:
            steps.append(("fleet on Redis", lambda: bench.fleet(rows, Path(folder) / "redis")))
        else:
            for key, _, _ in FLEET_DEPLOYMENTS:
                rows[key].skip(no_redis)
            notes.append(f"fleet rows skipped: {no_redis}")
        for title, step in steps:
            print(f"benchmarks: {title} ...", file=sys.stderr, flush=True)
            step()
        notes += bench.notes

    load_after = os.getloadavg()
    ordered = list(rows.values())
    output = table(ordered, shown)
    print(output)
    print()
    for note in notes:
        print(f"- {note}")
    print(
        f"- load average (1 min) before/after: {load_before[0]:.2f}/{load_after[0]:.2f} on "
        f"{os.cpu_count()} CPUs; `python -c pass` is the yardstick of how busy the machine was"
    )
    result = {
        "date": _date(),
        "mode": "smoke" if args.smoke else "full",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_before": load_before,
            "load_average_after": load_after,
        },
        "versions": versions(),
        "command": "python -m benchmarks" + (" --smoke" if args.smoke else ""),
        "counts": dataclasses.asdict(counts),
        "rows": [row.as_json() for row in ordered],
        "notes": notes,
        "table": output,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"benchmarks: results written to {args.json}", file=sys.stderr)
    missed = [row.key for row in ordered if row.ok() is False]
    if missed:
        print(f"benchmarks: certauth misses its target in: {', '.join(missed)}", file=sys.stderr)
    return 1 if (args.check and missed) else 0
