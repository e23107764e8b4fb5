"""Files: private keys and caches are 0600 whatever the umask; symlinks are never followed.

Extends tests/test_cli_cert.py (``cert create`` under umask 000), tests/test_certificates.py and
tests/test_cli_cert_bad_input.py (a symlink at the key or certificate path) and tests/test_cache.py
(a symlinked cache directory) to the rest: every file one session writes (certificate, key, PFX,
bundle, token cache entries and locks) under umask 000, a symlink at each ``cert create`` output,
symlinked cache entries and locks, and the emulator's TLS files and ``--ready-file``.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _cert_helpers import run_cli

from certauth import CertificateCredential
from certauth.cache import FileTokenCache
from certauth.certificates import Certificate
from certauth.emulator import Emulator

CLIENT_ID = "88888888-9999-aaaa-bbbb-cccccccccccc"
SECRET_FILES = (".key", ".pfx", ".pem", ".token", ".lock")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture(scope="module")
def tenant(rsa_cert: Certificate) -> Iterator[Emulator]:
    with Emulator() as emulator:
        emulator.register(CLIENT_ID, rsa_cert)
        yield emulator


def test_every_file_of_a_session_is_private_under_umask_000(
    tenant: Emulator, tmp_path: Path
) -> None:
    # One process with umask 000 creates a certificate (key, PFX, bundle, all encrypted) and
    # gets a token through the file cache; then every file and directory it made is checked.
    out, cache = tmp_path / "certs" / "nested", tmp_path / "cache" / "nested"
    go = tmp_path / "registered"
    script = f"""
import os, sys, time
os.umask(0)
from certauth.cli.main import main
code = main(['cert', 'create', '--subject', 'CN=umask', '--out', {str(out)!r}, '--pfx',
             '--bundle', '--password-env', 'PW'])
if code:
    sys.exit(code)
deadline = time.monotonic() + 20
while not os.path.exists({str(go)!r}) and time.monotonic() < deadline:
    time.sleep(0.01)
sys.exit(main(['token', '--client-id', {CLIENT_ID!r}, '--token-endpoint',
               {tenant.token_endpoint!r}, '--cert', {str(out / "umask.pem")!r},
               '--password-env', 'PW', '--scope', 'api://x/.default']))
"""
    # The certificate is new: register it as the app's before the token request is made.
    env = {**os.environ, "PW": "umask-test-password", "CERTAUTH_CACHE_DIR": str(cache)}
    proc = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 30
    while not (out / "umask.crt").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
        assert proc.poll() is None or proc.returncode == 0
    tenant.register(CLIENT_ID, out / "umask.crt")
    go.touch()
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr.decode()
    assert stdout.strip().splitlines()[-1].count(b".") == 2  # the token, after cert create's report
    made = [
        path for top in (tmp_path / "certs", tmp_path / "cache") for path in [top, *top.rglob("*")]
    ]
    assert {p.suffix for p in made if p.is_file()} >= {".crt", ".key", ".pfx", ".pem", ".token"}
    for path in made:
        mode = _mode(path)
        if path.is_dir():
            assert mode == 0o700, (path, oct(mode))
        elif path.suffix in SECRET_FILES:
            assert mode == 0o600, (path, oct(mode))
        else:
            assert path.suffix == ".crt"
            assert mode == 0o644, (path, oct(mode))


@pytest.mark.parametrize("output", ["app.crt", "app.key", "app.pfx", "app.pem"])
def test_a_symlink_at_any_cert_create_output_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], output: str
) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (tmp_path / output).symlink_to(victim)
    result = run_cli(
        capsys, "cert", "create", "--subject", "CN=app", "--out", tmp_path, "--pfx", "--bundle"
    )
    assert result.code == 3
    assert "symbolic link" in result.err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([output, "victim"])
    assert victim.read_bytes() == b"precious"


def test_a_symlinked_cache_entry_is_replaced_not_followed(tmp_path: Path) -> None:
    cache = FileTokenCache(tmp_path / "cache")
    cache.set("k", b"entry", time.time() + 60)
    (entry,) = (tmp_path / "cache").glob("*.token")
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    entry.unlink()
    entry.symlink_to(victim)
    assert cache.get("k") is None  # not read through the link
    cache.set("k", b"new entry", time.time() + 60)
    assert not entry.is_symlink()
    assert _mode(entry) == 0o600
    assert victim.read_bytes() == b"precious"
    assert cache.get("k") == b"new entry"


def test_a_symlinked_cache_lock_is_refused_and_tokens_still_flow(
    tenant: Emulator, rsa_cert: Certificate, tmp_path: Path
) -> None:
    cache = FileTokenCache(tmp_path / "cache")
    with CertificateCredential(
        tenant.tenant_id,
        CLIENT_ID,
        certificate=rsa_cert,
        token_endpoint=tenant.token_endpoint,
        cache=cache,
    ) as credential:
        credential.get_token("api://x/.default")
    (lock,) = (tmp_path / "cache").glob("*.lock")
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    lock.unlink()
    lock.symlink_to(victim)
    for entry in (tmp_path / "cache").glob("*.token"):
        entry.unlink()  # force a fetch, which takes the (now symlinked) lock
    with CertificateCredential(
        tenant.tenant_id,
        CLIENT_ID,
        certificate=rsa_cert,
        token_endpoint=tenant.token_endpoint,
        cache=cache,
    ) as credential:
        assert credential.get_token("api://x/.default").token
    assert victim.read_bytes() == b"precious"
    assert lock.is_symlink()


def test_emulator_tls_files_replace_planted_links_and_stay_private(tmp_path: Path) -> None:
    folder = tmp_path / "tls"
    folder.mkdir()
    victims = {}
    for name in ("ca.pem", "server.pem"):
        victims[name] = tmp_path / f"victim-{name}"
        victims[name].write_bytes(b"precious")
        (folder / name).symlink_to(victims[name])
    (folder / "server.key").write_bytes(b"old")
    os.chmod(folder / "server.key", 0o644)
    old = os.umask(0)
    try:
        with Emulator(tls=True, tls_dir=folder) as tenant:
            assert tenant.ca_file is not None
    finally:
        os.umask(old)
    for name, victim in victims.items():
        assert victim.read_bytes() == b"precious", name
        assert not (folder / name).is_symlink()
    assert _mode(folder / "server.key") == 0o600
    assert (folder / "server.key").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


def test_emulator_ready_file_never_follows_a_planted_link(tmp_path: Path) -> None:
    # The help suggests --ready-file /tmp/emulator.json: a shared directory. A link planted
    # where the file, or the temporary file it is written through, will be must not be followed.
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    ready = tmp_path / "emulator.json"
    (tmp_path / ".emulator.json.tmp").symlink_to(victim)
    proc = subprocess.Popen(
        [sys.executable, "-m", "certauth", "emulator", "--port", "0", "--ready-file", str(ready)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while not ready.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert ready.exists(), proc.stderr.read().decode() if proc.poll() is not None else ""
        assert "token_endpoint" in json.loads(ready.read_text())
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert victim.read_bytes() == b"precious"
    assert not ready.is_symlink()
