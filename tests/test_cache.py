"""The shared token cache: encrypted entries, the file store's permissions, locks, corruption."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from certauth.cache import EntryCipher, FileTokenCache, TokenCache, default_cache_dir
from certauth.certificates import Certificate
from certauth.errors import ConfigurationError
from certauth.protocol import Token

TOKEN = Token("SECRET-ACCESS-TOKEN", expires_on=2_000_000_000, expires_in=3600, extra={"x": 1})


def test_entries_round_trip_and_hide_the_token(rsa_cert: Certificate) -> None:
    assert rsa_cert.private_key is not None
    cipher = EntryCipher.from_private_key(rsa_cert.private_key)
    blob = cipher.seal("k", TOKEN)
    assert b"SECRET-ACCESS-TOKEN" not in blob
    assert cipher.open("k", blob) == TOKEN
    assert "SECRET" not in repr(cipher)


def test_foreign_corrupt_or_moved_entries_are_ignored(
    rsa_cert: Certificate, other_rsa_cert: Certificate
) -> None:
    assert rsa_cert.private_key is not None
    assert other_rsa_cert.private_key is not None
    mine = EntryCipher.from_private_key(rsa_cert.private_key)
    theirs = EntryCipher.from_private_key(other_rsa_cert.private_key)
    blob = mine.seal("k", TOKEN)
    assert theirs.open("k", blob) is None  # another certificate's key
    assert mine.open("other-key", blob) is None  # an entry copied under another name
    assert mine.open("k", blob[:-1] + bytes([blob[-1] ^ 1])) is None  # tampered
    assert mine.open("k", b"garbage") is None
    assert mine.open("k", b"") is None
    assert (
        EntryCipher.from_secret("s1").open("k", EntryCipher.from_secret("s2").seal("k", TOKEN))
        is None
    )


def test_default_directory_follows_the_documented_order(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CERTAUTH_CACHE_DIR", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "a"
    monkeypatch.delenv("CERTAUTH_CACHE_DIR")
    assert default_cache_dir() == tmp_path / "xdg" / "certauth"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "certauth"


def test_file_cache_is_private_and_atomic(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        cache = FileTokenCache(tmp_path / "cache")
        assert isinstance(cache, TokenCache)
        cache.set("key", b"value", time.time() + 60)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "cache").stat().st_mode) == 0o700
    files = [p for p in (tmp_path / "cache").iterdir()]
    assert len(files) == 1
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert "key" not in files[0].name
    assert cache.get("key") == b"value"
    cache.delete("key")
    assert cache.get("key") is None


def test_open_cache_directory_is_repaired_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "cache"
    directory.mkdir(mode=0o777)
    os.chmod(directory, 0o777)
    FileTokenCache(directory).set("k", b"v", 0)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert "made it 0700" in caplog.text


def test_unusable_cache_path_is_a_configuration_error(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(ConfigurationError, match="CERTAUTH_CACHE_DIR"):
        FileTokenCache(not_a_dir / "cache").get("k")
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    with pytest.raises(ConfigurationError, match="not a directory"):
        FileTokenCache(link).get("k")


def test_lock_serialises_holders(tmp_path: Path) -> None:
    cache = FileTokenCache(tmp_path)
    inside: list[int] = []
    overlap: list[bool] = []

    def hold(n: int) -> None:
        with cache.lock("k"):
            inside.append(n)
            overlap.append(len(inside) > 1)
            time.sleep(0.02)
            inside.remove(n)

    threads = [threading.Thread(target=hold, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlap == [False] * 4


def test_lock_takes_timeout_reads_the_signature_once() -> None:
    from certauth.cache import lock_takes_timeout

    class Old:
        def lock(self, key: str) -> Any: ...

    class New:
        def lock(self, key: str, *, timeout: float | None = None) -> Any: ...

    class Loose:
        def lock(self, key: str, **options: Any) -> Any: ...

    class Positional:
        def lock(self, key: str, timeout: float | None = None) -> Any: ...

    assert not lock_takes_timeout(Old())  # type: ignore[arg-type]
    assert lock_takes_timeout(New())  # type: ignore[arg-type]
    assert lock_takes_timeout(Loose())  # type: ignore[arg-type]
    assert lock_takes_timeout(Positional())  # type: ignore[arg-type]
    assert lock_takes_timeout(FileTokenCache("/nonexistent"))


def test_cache_directory_repair_message_is_a_warning(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    directory.mkdir(mode=0o777)
    os.chmod(directory, 0o777)
    code = (
        "import sys; from certauth.cache import FileTokenCache; "
        "FileTokenCache(sys.argv[1]).set('k', b'v', 0)"
    )
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", code, str(directory)], capture_output=True, text=True, check=True
    )
    # Printed by Python's last-resort handler as a CLI run shows it.
    assert out.stderr == (
        f"certauth: warning: {directory} was open to other users (mode 777); made it 0700\n"
    )
