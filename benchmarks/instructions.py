"""Where the one-shot rows' time goes, in instructions: stable on a loaded machine, unlike time.

    python -m benchmarks.instructions [--json FILE]      (needs valgrind)

Each command runs once under ``valgrind --tool=callgrind`` and reports the instructions it
executed (``Ir``), user space: the interpreter, the libraries, ld.so; not the kernel. Measured:
``python -c pass``; the two floors (``benchmarks/floors/``) and what certauth does for the same
job (``certauth token`` served from the file cache; a process that imports certauth and gets
one token, the ``process`` row's code); and, on top of the imports each floor makes, the import
of the pieces that bound those rows (click and certauth's CLI; the click-free path a cache hit
takes and the modules its lookup needs; cryptography.x509; certauth's HTTP client). The
emulator runs in its own process, as in ``python -m benchmarks``, so its work is not counted.
docs/performance.md quotes a run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.clients import Certauth, Target, process_argv
from benchmarks.run import CLIENT_ID, ROOT, SCOPE, Endpoint, _certauth_command, _floor_argv

#: The imports of each floor (what the pieces below are added to).
CACHE_HIT_FLOOR_IMPORTS = (
    "import base64, hashlib, json, os, sys, time; "
    "from cryptography.hazmat.primitives import hashes, serialization; "
    "from cryptography.hazmat.primitives.ciphers.aead import AESGCM; "
    "from cryptography.hazmat.primitives.kdf.hkdf import HKDF"
)
PROCESS_FLOOR_IMPORTS = (
    "import base64, hashlib, http.client, json, os, ssl, sys, time, urllib.parse; "
    "from cryptography.hazmat.primitives import hashes, serialization; "
    "from cryptography.hazmat.primitives.asymmetric import padding"
)
PIECES = (
    ("cache hit", CACHE_HIT_FLOOR_IMPORTS, "import click"),
    ("cache hit", CACHE_HIT_FLOOR_IMPORTS, "import certauth.cli.main, certauth.cli.token"),
    # What `certauth token` imports for a cache hit: the click-free path, and the lookup.
    ("cache hit", CACHE_HIT_FLOOR_IMPORTS, "import certauth.cli.main, certauth.cli._fast_token"),
    (
        "cache hit",
        CACHE_HIT_FLOOR_IMPORTS,
        "import certauth._cache_lookup, certauth._keyfiles, certauth._key_rules, "
        "certauth.authority",
    ),
    ("process", PROCESS_FLOOR_IMPORTS, "import cryptography.x509"),
    ("process", PROCESS_FLOOR_IMPORTS, "import certauth._transport"),
    ("process", PROCESS_FLOOR_IMPORTS, "import certauth.credential"),
)


def instructions(argv: list[str], env: dict[str, str]) -> int:
    """Instructions one run of ``argv`` executes (callgrind's ``Collected``)."""
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    for line in done.stderr.splitlines():
        if "Collected :" in line:
            return int(line.rsplit(":", 1)[1])
    raise RuntimeError(f"{argv[:3]}: no callgrind count (exit {done.returncode}): {done.stderr}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions")
    parser.add_argument("--json", metavar="FILE", type=Path)
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("benchmarks.instructions: valgrind is not installed", file=sys.stderr)
        return 2
    from certauth.certificates import generate_certificate

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "CERTAUTH_"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: bytecode compiled once
    certificate = generate_certificate("CN=certauth-bench", key_type="rsa2048")
    results: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="certauth-instructions-") as folder:
        cert_file = Path(folder) / "app.crt"
        cert_file.write_bytes(certificate.pem)
        pem_file = Path(folder) / "app.pem"
        pem_file.write_bytes(certificate.private_key_pem() + certificate.pem)
        env["CERTAUTH_CACHE_DIR"] = str(Path(folder) / "cache")
        endpoint = Endpoint(cert_file)
        try:
            info = endpoint.info
            target = Target.of_endpoint(
                info,
                client_id=CLIENT_ID,
                pem_path=str(pem_file),
                thumbprint_sha1=certificate.thumbprint_sha1,
                scope=SCOPE,
            )
            token = [*_certauth_command(), "token", "--tenant", target.tenant_id]
            token += ["--authority-host", target.authority_host, "--client-id", CLIENT_ID]
            token += ["--cert", str(pem_file), "--ca-file", target.ca_file, "--scope", SCOPE]
            common = (str(pem_file), target.token_endpoint, CLIENT_ID, SCOPE)
            commands = {
                "python -c pass": [sys.executable, "-c", "pass"],
                "cache hit: floor": _floor_argv("cache_hit.py", *common, env["CERTAUTH_CACHE_DIR"]),
                "cache hit: certauth token": token,
                "process: floor": _floor_argv("process.py", *common, target.ca_file),
                "process: floor --unchecked": _floor_argv(
                    "process.py", "--unchecked", *common, target.ca_file
                ),
                "process: certauth": process_argv(Certauth(), target),
            }
            for argv_ in (token, token):  # fills the cache; compiles the bytecode
                subprocess.run(argv_, env=env, cwd=ROOT, capture_output=True, check=True)
            for name, command in commands.items():
                subprocess.run(command, env=env, cwd=ROOT, capture_output=True, check=True)
                results[name] = instructions(command, env)
                print(f"{results[name] / 1e6:8.1f} M  {name}", flush=True)
            for row, floor_imports, piece in PIECES:
                base = instructions([sys.executable, "-c", floor_imports], env)
                more = instructions([sys.executable, "-c", f"{floor_imports}; {piece}"], env)
                name = f"{row}: {piece} (on the floor's imports)"
                results[name] = more - base
                print(f"{results[name] / 1e6:8.1f} M  + {name}", flush=True)
        finally:
            endpoint.close()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
