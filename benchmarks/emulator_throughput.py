"""Token requests per second the emulator serves (the issue asks for hundreds on two cores).

Runs ``certauth emulator`` in its own process (as a CI job would) and sends client-credentials
requests with a certificate assertion from several keep-alive connections. Each request costs
the emulator a PS256 verification and an RS256 signature. The assertion is built once and reused
(entra mode allows that), so the numbers measure the server, not the client's signing.
``python -m benchmarks`` runs :func:`measure` against its own emulator as one of its rows.

    python benchmarks/emulator_throughput.py [--seconds 5] [--connections 4] [--tls]
"""

from __future__ import annotations

import argparse
import json
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from certauth.assertion import build_client_assertion
from certauth.certificates import Certificate, generate_certificate
from certauth.protocol import CLIENT_ASSERTION_TYPE, GRANT_CLIENT_CREDENTIALS

CLIENT_ID = "11111111-2222-3333-4444-555555555555"


@dataclass(frozen=True)
class Throughput:
    requests: int
    seconds: float
    connections: int
    failures: int

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def measure(
    certificate: Certificate,
    *,
    client_id: str,
    token_endpoint: str,
    verify: ssl.SSLContext | bool,
    seconds: float,
    connections: int,
) -> Throughput:
    """Send token requests from ``connections`` keep-alive connections for ``seconds``."""
    assertion = build_client_assertion(
        certificate, client_id=client_id, audience=token_endpoint, lifetime=600
    )
    form = {
        "grant_type": GRANT_CLIENT_CREDENTIALS,
        "client_id": client_id,
        "scope": "api://bench/.default",
        "client_assertion_type": CLIENT_ASSERTION_TYPE,
        "client_assertion": assertion,
    }
    counts = [0] * connections
    failures: list[int] = []
    stop_at = time.perf_counter() + seconds

    def worker(index: int) -> None:
        with httpx.Client(verify=verify) as client:
            while time.perf_counter() < stop_at:
                status = client.post(token_endpoint, data=form).status_code
                if status != 200:
                    failures.append(status)
                counts[index] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Throughput(sum(counts), time.perf_counter() - started, connections, len(failures))


def main() -> int:
    """Start the emulator, measure, print one line per setting."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--tls", action="store_true")
    args = parser.parse_args()

    cert = generate_certificate("CN=bench")
    with tempfile.TemporaryDirectory() as folder:
        cert_file = Path(folder) / "app.crt"
        cert_file.write_bytes(cert.pem)
        ready = Path(folder) / "ready.json"
        command = [sys.executable, "-m", "certauth", "emulator", "--port", "0"]
        command += ["--register", f"{CLIENT_ID}={cert_file}", "--ready-file", str(ready)]
        command += ["--log-level", "warning"] + (["--tls"] if args.tls else [])
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        try:
            while not ready.exists():
                if server.poll() is not None:
                    raise SystemExit("the emulator did not start")
                time.sleep(0.05)
            info = json.loads(ready.read_text())
            verify: ssl.SSLContext | bool = (
                ssl.create_default_context(cafile=info["ca_file"]) if args.tls else True
            )
            result = measure(
                cert,
                client_id=CLIENT_ID,
                token_endpoint=info["token_endpoint"],
                verify=verify,
                seconds=args.seconds,
                connections=args.connections,
            )
        finally:
            server.terminate()
            server.wait(timeout=10)
    scheme = "https" if args.tls else "http"
    print(
        f"emulator {scheme}: {result.per_second:.0f} token requests/s "
        f"({result.requests} in {result.seconds:.1f} s, {result.connections} keep-alive "
        f"connections, {result.failures} failures)"
    )
    return 1 if result.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
