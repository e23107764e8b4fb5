"""``scripts/ensure-node-peers`` installs the node test peers from their lock files when needed,
does nothing otherwise, and says what to install when node or npm is missing.

The script runs on a copy of the repository's layout with a fake ``npm`` that records its calls
(no registry is contacted here); the committed peer's pin is checked against its lock file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "ensure-node-peers"
PEER = ROOT / "tests" / "peers" / "oidc-provider"


def _fake(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!{shutil.which('sh')}\n{body}\n")
    path.chmod(0o755)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """scripts/ensure-node-peers and one peer (package.json, package-lock.json), not installed."""
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    shutil.copy2(SCRIPT, root / "scripts" / "ensure-node-peers")
    peer = root / "tests" / "peers" / "demo"
    peer.mkdir(parents=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copy2(PEER / name, peer / name)
    return root


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    """A PATH with a node 20 and an npm whose ``ci`` records the call and makes node_modules."""
    folder = tmp_path / "bin"
    folder.mkdir()
    mkdir, date = shutil.which("mkdir"), shutil.which("date")
    _fake(folder, "node", 'case "$1" in --version) echo v20.20.2;; esac; exit 0')
    _fake(
        folder,
        "npm",
        f'echo "$PWD $*" >> "{tmp_path}/npm-calls"\n'
        f"{mkdir} -p node_modules && {date} > node_modules/.package-lock.json",
    )
    return folder


def _run(repo: Path, bin_dir: Path) -> subprocess.CompletedProcess[str]:
    bash = shutil.which("bash")
    assert bash is not None
    return subprocess.run(
        [bash, str(repo / "scripts" / "ensure-node-peers")],
        env={"PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _npm_calls(bin_dir: Path) -> list[str]:
    log = bin_dir.parent / "npm-calls"
    return log.read_text().splitlines() if log.exists() else []


def test_a_missing_install_gets_npm_ci_then_nothing_is_done(repo: Path, bin_dir: Path) -> None:
    peer = repo / "tests" / "peers" / "demo"
    first = _run(repo, bin_dir)
    assert first.returncode == 0, first.stderr
    assert first.stdout == ""
    assert "scripts: installing the test peer in tests/peers/demo (npm ci" in first.stderr
    assert _npm_calls(bin_dir) == [
        f"{peer} ci --no-audit --no-fund --ignore-scripts --loglevel=error"
    ]
    started = time.monotonic()
    second = _run(repo, bin_dir)
    assert (second.returncode, second.stdout, second.stderr) == (0, "", "")
    assert len(_npm_calls(bin_dir)) == 1
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("changed", ["package-lock.json", "package.json"])
def test_a_lock_or_manifest_newer_than_the_install_reinstalls(
    repo: Path, bin_dir: Path, changed: str
) -> None:
    peer = repo / "tests" / "peers" / "demo"
    assert _run(repo, bin_dir).returncode == 0
    installed = (peer / "node_modules" / ".package-lock.json").stat().st_mtime
    os.utime(peer / changed, (installed + 10, installed + 10))  # a pull changed it
    again = _run(repo, bin_dir)
    assert again.returncode == 0, again.stderr
    assert len(_npm_calls(bin_dir)) == 2


def test_without_node_it_says_what_to_install(repo: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = _run(repo, empty)
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert lines[0] == (
        "scripts: the node test peers (tests/peers/demo) need node, which this machine lacks."
    )
    assert lines[1].startswith("scripts: install Node.js 20 or later with npm")


def test_without_npm_or_with_an_old_node_it_says_so(repo: Path, bin_dir: Path) -> None:
    npm = (bin_dir / "npm").read_text()
    (bin_dir / "npm").unlink()
    proc = _run(repo, bin_dir)
    assert proc.returncode == 1
    assert "need npm, which this machine lacks" in proc.stderr

    (bin_dir / "npm").write_text(npm)
    (bin_dir / "npm").chmod(0o755)
    _fake(bin_dir, "node", 'case "$1" in --version) echo v18.19.0;; esac; exit 1')
    proc = _run(repo, bin_dir)
    assert proc.returncode == 1
    assert "need node 20 or later (this is v18.19.0)" in proc.stderr
    assert _npm_calls(bin_dir) == []


def test_a_failing_npm_ci_fails_the_script(repo: Path, bin_dir: Path) -> None:
    _fake(bin_dir, "npm", "echo 'npm error network request failed' >&2; exit 1")
    proc = _run(repo, bin_dir)
    assert proc.returncode == 1
    assert "npm error network request failed" in proc.stderr
    assert proc.stderr.rstrip().endswith(
        "scripts: npm ci failed in tests/peers/demo (is the npm registry reachable?)"
    )


def test_the_committed_peer_pins_one_version_and_locks_it() -> None:
    """An exact oidc-provider 9.x in package.json, the same in the committed lock file."""
    wanted = json.loads((PEER / "package.json").read_text())["dependencies"]["oidc-provider"]
    assert re.fullmatch(r"9\.\d+\.\d+", wanted), wanted
    lock = json.loads((PEER / "package-lock.json").read_text())
    assert lock["packages"][""]["dependencies"] == {"oidc-provider": wanted}
    assert lock["packages"]["node_modules/oidc-provider"]["version"] == wanted
    tracked = subprocess.run(
        ["git", "ls-files", "--error-unmatch", "package-lock.json", "package.json", "server.mjs"],
        cwd=PEER,
        capture_output=True,
        text=True,
        check=False,
    )
    if tracked.returncode == 128 and "not a git repository" in tracked.stderr:
        pytest.skip("not a git checkout")
    assert tracked.returncode == 0, tracked.stderr
