"""Nothing that only a request needs is loaded or built before a request is due (issue 19).

A token served from a cache, in a new process, never imports an HTTP client or ``ssl`` and never
builds a TLS context (and ``certauth token`` finds it without building a credential or parsing
the certificate); a credential builds its HTTP client and TLS context when its first request
goes out, not when it is constructed, and its own client is not httpx (a process that gets one
token never imports httpx). These are checks of what a process loads, run in fresh
interpreters (never timings: those are in ``python -m benchmarks``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from certauth import Certificate
from certauth.emulator import Emulator

CLIENT = "11111111-2222-3333-4444-5555555555aa"
SCOPE = "api://lazy/.default"
#: What only a request needs: the HTTP stack and TLS.
REQUEST_ONLY = ("httpx", "httpcore", "ssl", "_ssl", "http.client", "certauth._transport")
#: What a CLI cache hit does without: the credential and a parsed certificate (the entry,
#: named by the certificate's hash and sealed with its key, stands for them: see
#: certauth._cache_lookup), and what only a retry or a warning needs.
HIT_WITHOUT = (
    "certauth.credential",
    "certauth._flow",
    "cryptography.x509",
    "email.utils",
    "logging",
    "tempfile",
)


@pytest.fixture(scope="module")
def tenant(rsa_cert: Certificate) -> Iterator[Emulator]:
    with Emulator(tls=True) as emulator:
        emulator.register(CLIENT, rsa_cert)
        yield emulator


@pytest.fixture
def files(rsa_cert: Certificate, tmp_path: Path) -> Path:
    pem = tmp_path / "app.pem"
    pem.write_bytes(rsa_cert.private_key_pem() + rsa_cert.pem)
    return pem


def _imported(stderr: str) -> set[str]:
    """Module names from ``python -X importtime`` output."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    return names


def _cli(tenant: Emulator, pem: Path, cache_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "CERTAUTH_"))},
        "CERTAUTH_CACHE_DIR": str(cache_dir),
    }
    argv = [sys.executable, "-X", "importtime", "-m", "certauth", "token"]
    argv += ["--client-id", CLIENT, "--token-endpoint", tenant.token_endpoint]
    argv += ["--cert", str(pem), "--ca-file", str(tenant.ca_file), "--scope", SCOPE]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)


def test_a_cli_cache_hit_loads_no_http_client_and_no_tls(
    tenant: Emulator, files: Path, tmp_path: Path
) -> None:
    first = _cli(tenant, files, tmp_path / "cache")
    assert first.returncode == 0, first.stderr[-2000:]
    assert {"ssl", "certauth._transport"} <= _imported(first.stderr)  # the check can see them
    assert "httpx" not in _imported(first.stderr)
    requests = tenant.request_count
    hit = _cli(tenant, files, tmp_path / "cache")
    assert hit.returncode == 0, hit.stderr[-2000:]
    assert hit.stdout == first.stdout  # the same token, from the cache
    assert tenant.request_count == requests
    assert _imported(hit.stderr).isdisjoint(REQUEST_ONLY)
    assert {"certauth.credential", "cryptography.x509"} <= _imported(first.stderr)
    assert _imported(hit.stderr).isdisjoint(HIT_WITHOUT)


_PROGRAM = """
import json, sys
from certauth import CertificateCredential
from certauth import _http
credential = CertificateCredential(None, sys.argv[1], sys.argv[2], token_endpoint=sys.argv[3],
                                   verify=sys.argv[4])
report = {"constructed": sorted(m for m in sys.argv[5].split(",") if m in sys.modules),
          "contexts": len(_http._contexts)}
credential.get_token(sys.argv[6])
report["after_request"] = sorted(m for m in sys.argv[5].split(",") if m in sys.modules)
report["contexts_after"] = len(_http._contexts)
print(json.dumps(report))
"""


def test_a_credential_builds_its_client_and_tls_context_with_the_first_request(
    tenant: Emulator, files: Path
) -> None:
    argv = [sys.executable, "-c", _PROGRAM, CLIENT, str(files), tenant.token_endpoint]
    argv += [str(tenant.ca_file), ",".join(REQUEST_ONLY), SCOPE]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["constructed"] == []
    assert report["contexts"] == 0
    assert {"ssl", "http.client", "certauth._transport"} <= set(report["after_request"])
    assert "httpx" not in report["after_request"]
    assert report["contexts_after"] == 1
