"""Token requests per second the emulator serves (the issue asks for hundreds on two cores).

Runs ``certauth emulator`` in its own process (as a CI job would) and sends client-credentials
requests with a certificate assertion from several keep-alive connections. Each request costs
the emulator a PS256 verification and an RS256 signature. The assertion is built once and reused
(entra mode allows that), so the numbers measure the server, not the client's signing.

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
from pathlib import Path

import httpx

from certauth.assertion import build_client_assertion
from certauth.certificates import generate_certificate
from certauth.protocol import CLIENT_ASSERTION_TYPE, GRANT_CLIENT_CREDENTIALS

CLIENT_ID = "11111111-2222-3333-4444-555555555555"


def main() -> int:
    """Start the emulator, measure, print one line per setting."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
            endpoint = info["token_endpoint"]
            verify: ssl.SSLContext | bool = (
                ssl.create_default_context(cafile=info["ca_file"]) if args.tls else True
            )
            assertion = build_client_assertion(
                cert, client_id=CLIENT_ID, audience=endpoint, lifetime=600
            )
            form = {
                "grant_type": GRANT_CLIENT_CREDENTIALS,
                "client_id": CLIENT_ID,
                "scope": "api://bench/.default",
                "client_assertion_type": CLIENT_ASSERTION_TYPE,
                "client_assertion": assertion,
            }
            counts = [0] * args.connections
            failures: list[int] = []
            stop_at = time.perf_counter() + args.seconds

            def worker(index: int) -> None:
                with httpx.Client(verify=verify) as client:
                    while time.perf_counter() < stop_at:
                        status = client.post(endpoint, data=form).status_code
                        if status != 200:
                            failures.append(status)
                        counts[index] += 1

            started = time.perf_counter()
            threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.connections)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - started
        finally:
            server.terminate()
            server.wait(timeout=10)
    total = sum(counts)
    scheme = "https" if args.tls else "http"
    print(
        f"emulator {scheme}: {total / elapsed:.0f} token requests/s "
        f"({total} in {elapsed:.1f} s, {args.connections} keep-alive connections, "
        f"{len(failures)} failures)"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
