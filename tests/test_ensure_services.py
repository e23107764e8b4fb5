"""``scripts/ensure-services`` installs what the tests need, or says what to install by hand."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ensure-services"


def _run(bin_dir: Path) -> subprocess.CompletedProcess[str]:
    bash = shutil.which("bash")
    assert bash is not None
    return subprocess.run(
        [bash, str(SCRIPT)],
        env={"PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _tools(tmp_path: Path, *names: str) -> Path:
    """A PATH holding only ``names`` (from this machine's PATH)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in names:
        found = shutil.which(name)
        if found is None:
            pytest.skip(f"{name} is not installed here")
        (bin_dir / name).symlink_to(found)
    return bin_dir


def test_nothing_to_do_when_everything_is_there(tmp_path: Path) -> None:
    proc = _run(_tools(tmp_path, "openssl", "redis-server", "softhsm2-util", "tinyproxy"))
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def test_without_apt_get_it_says_what_to_install_by_hand(tmp_path: Path) -> None:
    proc = _run(_tools(tmp_path, "id"))
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "scripts: the tests need openssl redis-server softhsm2 tinyproxy-bin, which this "
        "machine lacks; apt-get is not available to install them.",
        "scripts: install them by hand, then run ./scripts/test again:",
        "  Debian/Ubuntu:  sudo apt-get install openssl redis-server softhsm2 tinyproxy-bin",
        "  Fedora/RHEL:    sudo dnf install openssl redis softhsm tinyproxy",
        "  Alpine:         sudo apk add openssl redis softhsm tinyproxy",
        "  macOS:          brew install openssl redis softhsm tinyproxy",
    ]


def test_as_a_user_without_sudo_it_says_so(tmp_path: Path) -> None:
    bin_dir = _tools(tmp_path, "openssl")
    # apt-get is there, but this "user" is not root and has no sudo.
    (bin_dir / "apt-get").write_text("#!/bin/sh\nexit 99\n")
    (bin_dir / "apt-get").chmod(0o755)
    (bin_dir / "id").write_text('#!/bin/sh\n[ "$1" = -u ] && echo 1000 || echo builder\n')
    (bin_dir / "id").chmod(0o755)
    proc = _run(bin_dir)
    assert proc.returncode == 1
    first, second = proc.stderr.splitlines()[:2]
    assert first == (
        "scripts: the tests need redis-server softhsm2 tinyproxy-bin, which this machine lacks; "
        "installing "
        "needs root "
        "(or password-less sudo), and this is user builder."
    )
    assert second == "scripts: install them by hand, then run ./scripts/test again:"
