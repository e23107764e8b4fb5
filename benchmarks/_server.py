"""The token endpoint every client in a benchmark run talks to: the emulator over TLS, in its
own process so its CPU work does not share the clients' GIL.

The parent talks to it over stdin/stdout, one line each way: at start it prints the emulator's
start-up values as one JSON line; then ``counts`` answers the requests received since the last
``reset`` (``{"token": n, "discovery": n, "instance_discovery": n, "jwks": n, "other": n}``,
where ``token`` is the emulator's own ``request_count``), ``reset`` zeroes them and ``quit``
stops. Counting wraps the HTTP server's route function, so every request is seen.

With ``--vault APP=READER`` it also serves an emulated Key Vault (on a listener of its own, not
counted by ``counts``): certificate object ``bench`` (an RSA-2048 key made and kept inside the
vault) is registered as app ``APP``'s certificate, and ``READER`` (an app registered with
``--register``) may ``get`` and ``sign`` with it; the start-up line gains ``vault_url`` and
``vault`` answers ``{"requests": n}``, the vault's requests since the last ``reset``.

    python -m benchmarks._server --register CLIENT_ID=CERT_FILE [--vault APP=READER]
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import threading

from certauth.emulator import Emulator
from certauth.emulator.server import HttpRequest, HttpResponse

#: The name of the emulated vault's certificate object (``--vault``).
VAULT_CERTIFICATE = "bench"


def _kind(request: HttpRequest) -> str:
    path = request.path.lower()
    if request.method == "POST" and path.endswith("/token"):
        return "token"
    if path.endswith("/discovery/instance"):
        return "instance_discovery"
    if path.endswith("/openid-configuration"):
        return "discovery"
    if path.endswith("/keys"):
        return "jwks"
    return "other"


def main() -> int:
    parser = argparse.ArgumentParser(description="the benchmarks' token endpoint")
    parser.add_argument("--register", action="append", default=[], metavar="CLIENT_ID=CERT")
    parser.add_argument("--vault", metavar="APP=READER")
    args = parser.parse_args()

    tenant = Emulator(tls=True).start()
    for item in args.register:
        client_id, _, cert_file = item.partition("=")
        tenant.register(client_id, cert_file)
    info = tenant.info()
    vault = None
    vault_base = 0
    if args.vault:
        app, _, reader = args.vault.partition("=")
        vault = tenant.create_vault("benchvault")
        tenant.register(app, vault.create_certificate(VAULT_CERTIFICATE, "CN=certauth-bench-kv"))
        vault.grant(reader, ["get", "sign"])
        info["vault_url"] = vault.url
    server = tenant._running_server()
    route = server.app
    counts: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    def counting(request: HttpRequest) -> HttpResponse:
        kind = _kind(request)
        with lock:
            counts[kind] += 1
        return route(request)

    server.app = counting

    def answer(value: object) -> None:
        sys.stdout.write(json.dumps(value) + "\n")
        sys.stdout.flush()

    answer(info)
    try:
        for line in sys.stdin:
            command = line.strip()
            if command == "counts":
                with lock:
                    snapshot = {k: counts[k] for k in ("discovery", "instance_discovery", "jwks")}
                    snapshot["other"] = counts["other"]
                snapshot["token"] = tenant.request_count
                answer(snapshot)
            elif command == "reset":
                with lock:
                    counts.clear()
                    tenant.reset_request_count()
                    vault_base = vault.request_count if vault is not None else 0
                answer({})
            elif command == "vault":
                seen = vault.request_count - vault_base if vault is not None else 0
                answer({"requests": seen})
            elif command == "quit":
                break
            else:
                answer({"error": f"unknown command {command!r}"})
    finally:
        tenant.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
