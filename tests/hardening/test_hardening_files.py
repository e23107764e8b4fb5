"""Files: private keys and caches are 0600 whatever the umask; symlinks are never followed.

Extends tests/test_cli_cert.py (``cert create`` under umask 000), tests/test_certificates.py and
tests/test_cli_cert_bad_input.py (a symlink at the key or certificate path) and tests/test_cache.py
(a symlinked cache directory) to the rest: every file one session writes (certificate, key, PFX,
bundle, token cache entries and locks) under umask 000, a symlink at each ``cert create`` output,
symlinked cache entries and locks, and the emulator's TLS files and ``--ready-file``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from _cert_helpers import CliResult, assert_one_line_error, run_cli

from certauth import CertificateCredential
from certauth._files import read_input_file
from certauth.cache import FileTokenCache
from certauth.certificates import Certificate
from certauth.emulator import Emulator
from certauth.errors import CertificateError, ConfigurationError, InputFileError

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


# -- files that are not regular files: refused at once, never waited on -------------------------


def _unblock(fifo: Path) -> None:
    """Give a reader stuck on ``fifo`` its end of file (only needed when the fix is missing)."""
    with contextlib.suppress(OSError):
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def _bounded(call: Callable[[], object], fifos: Sequence[Path], limit: float = 1.0) -> object:
    """Run ``call``; fail (instead of hanging the suite) if it blocks past ``limit`` seconds."""
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test below
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(limit)
    blocked = thread.is_alive()
    deadline = time.monotonic() + 5
    while thread.is_alive() and time.monotonic() < deadline:
        for fifo in fifos:
            _unblock(fifo)
        thread.join(0.05)
    assert not blocked, f"waited on a FIFO for more than {limit} s"
    assert time.monotonic() - started < limit
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome.get("value")


@pytest.fixture
def specials(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """A FIFO, a Unix socket and two character devices."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    sock_path = tmp_path / "sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(sock_path))
    yield {
        "FIFO (named pipe)": fifo,
        "socket": sock_path,
        "character device": Path("/dev/null"),
        "character device ": Path("/dev/zero"),
    }
    listener.close()


@pytest.mark.parametrize("error", [InputFileError, CertificateError])
def test_read_input_file_refuses_fifos_devices_and_sockets_at_once(
    specials: dict[str, Path], error: type[InputFileError] | type[CertificateError]
) -> None:
    for kind, path in specials.items():
        expected = re.escape(f"is a {kind.strip()}, not a regular file")
        with pytest.raises(error, match=expected) as excinfo:
            _bounded(lambda p=path: read_input_file(p, what="password", error=error), [path])
        assert excinfo.value.path == str(path)
    # Regular files and symlinks to them still read; a directory keeps its own message.
    regular = specials["FIFO (named pipe)"].parent / "regular"
    regular.write_bytes(b"value\n")
    (regular.parent / "link").symlink_to(regular)
    assert read_input_file(regular.parent / "link", what="x", error=InputFileError) == b"value\n"
    with pytest.raises(InputFileError, match="is a directory"):
        read_input_file(regular.parent, what="x", error=InputFileError)


FIFO_OPTIONS = {
    "cert show FILE": ["cert", "show", "{fifo}"],
    "cert show --key": ["cert", "show", "{pem}", "--key", "{fifo}"],
    "cert show --password-file": ["cert", "show", "{pem}", "--password-file", "{fifo}"],
    "token --cert": ["token", "--cert", "{fifo}"],
    "token --key": ["token", "--cert", "{pem}", "--key", "{fifo}"],
    "token --password-file": ["token", "--cert", "{pem}", "--password-file", "{fifo}"],
    "token --client-secret-file": ["token", "--client-secret-file", "{fifo}"],
    "token --federated-token-file": ["token", "--federated-token-file", "{fifo}"],
}


@pytest.mark.parametrize("name", list(FIFO_OPTIONS))
def test_every_input_file_option_refuses_a_fifo(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, rsa_cert: Certificate, name: str
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    pem = tmp_path / "app.pem"
    pem.write_bytes(rsa_cert.private_key_pem() + rsa_cert.pem)
    args = [a.format(fifo=fifo, pem=pem) for a in FIFO_OPTIONS[name]]
    if args[0] == "token":
        args += ["--client-id", CLIENT_ID, "--tenant", "contoso.onmicrosoft.com"]
        args += ["--scope", "api://x/.default", "--no-cache"]
    result = _bounded(lambda: run_cli(capsys, *args), [fifo])
    assert isinstance(result, CliResult)
    assert_one_line_error(result, 3, str(fifo), "FIFO (named pipe), not a regular file")


def test_a_fifo_or_device_planted_as_a_cache_entry_is_ignored_and_replaced(
    tmp_path: Path,
) -> None:
    cache = FileTokenCache(tmp_path / "cache")
    cache.set("k", b"entry", time.time() + 60)
    (entry,) = (tmp_path / "cache").glob("*.token")
    entry.unlink()
    os.mkfifo(entry)
    assert _bounded(lambda: cache.get("k"), [entry]) is None
    cache.set("k", b"new entry", time.time() + 60)
    assert stat.S_ISREG(entry.lstat().st_mode)
    assert cache.get("k") == b"new entry"
    # A FIFO where the lock file goes: refused at once (the fetch then goes on without it).
    cache.set("l", b"x", time.time() + 60)
    with cache.lock("l"):
        pass
    (lock,) = (tmp_path / "cache").glob("*.lock")
    lock.unlink()
    os.mkfifo(lock)

    def take() -> None:
        with cache.lock("l", timeout=0):
            pass

    with pytest.raises(OSError, match="not a regular file"):
        _bounded(take, [lock])


# -- a cache directory owned by another user ----------------------------------------------------


def test_a_cache_directory_owned_by_another_user_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tenant: Emulator, rsa_cert: Certificate
) -> None:
    directory = tmp_path / "theirs"
    directory.mkdir(mode=0o700)
    try:
        os.chown(directory, 12345, -1)  # the tests run as root; a user could not do this
    except PermissionError:
        pytest.skip("changing a directory's owner needs root")
    with pytest.raises(ConfigurationError) as excinfo:
        FileTokenCache(directory).get("k")
    message = str(excinfo.value)
    assert str(directory) in message
    assert "belongs to another user (uid 12345, mode 700)" in message
    assert "CERTAUTH_CACHE_DIR" in message
    assert list(directory.iterdir()) == []
    pem = tmp_path / "app.pem"
    pem.write_bytes(rsa_cert.private_key_pem() + rsa_cert.pem)
    script_env = {**os.environ, "CERTAUTH_CACHE_DIR": str(directory)}
    proc = subprocess.run(
        [sys.executable, "-m", "certauth", "token", "--client-id", CLIENT_ID,
         "--token-endpoint", tenant.token_endpoint, "--cert", str(pem),
         "--scope", "api://x/.default"],
        env=script_env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    assert str(directory) in proc.stderr
    assert "CERTAUTH_CACHE_DIR" in proc.stderr
    assert proc.stdout == ""


# -- a held file lock waits no longer than the caller's timeout ---------------------------------


def test_a_held_file_lock_waits_only_for_the_callers_timeout(
    tenant: Emulator, rsa_cert: Certificate, tmp_path: Path
) -> None:
    cache_dir = tmp_path / "cache"
    pem = tmp_path / "app.pem"
    pem.write_bytes(rsa_cert.private_key_pem() + rsa_cert.pem)
    env = {**os.environ, "CERTAUTH_CACHE_DIR": str(cache_dir)}
    args = [sys.executable, "-m", "certauth", "token", "--client-id", CLIENT_ID,
            "--token-endpoint", tenant.token_endpoint, "--cert", str(pem),
            "--scope", "api://x/.default"]  # fmt: skip
    first = subprocess.run(args, env=env, capture_output=True, timeout=60, check=False)
    assert first.returncode == 0, first.stderr
    for entry in cache_dir.glob("*.token"):
        entry.unlink()  # the next run must fetch, so it takes the lock
    (lock,) = cache_dir.glob("*.lock")
    holder = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a stuck process holds it
        started = time.monotonic()
        second = subprocess.run(
            [*args, "--timeout", "2"], env=env, capture_output=True, timeout=30, check=False
        )
        elapsed = time.monotonic() - started
    finally:
        os.close(holder)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip().count(b".") == 2  # a token
    assert 2.0 <= elapsed < 8.0, elapsed


def test_file_lock_timeout_keyword(tmp_path: Path) -> None:
    cache = FileTokenCache(tmp_path / "cache")
    with cache.lock("k"):
        (lock,) = (tmp_path / "cache").glob("*.lock")
        started = time.monotonic()
        with cache.lock("k", timeout=0.3):  # another open file description: it waits
            waited = time.monotonic() - started
    assert 0.3 <= waited < 1.0
    started = time.monotonic()
    with cache.lock("k", timeout=0.3):  # free: no wait at all
        assert time.monotonic() - started < 0.2
    assert lock.exists()
