"""The package as users get it: ``python -m build`` makes a wheel and an sdist, and the wheel,
installed into a fresh virtualenv outside the checkout, gives a working ``certauth``.

The other tests import certauth from the checkout (an editable install), so they cannot see a
module missing from the wheel, a wrong entry point, an undeclared dependency or a wrong extra;
this one can. It also runs ``scripts/demo`` against that venv, for its closing PATH advice.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import certauth

ROOT = Path(__file__).resolve().parents[1]

#: The README's Install section installs the wheel by this pattern; the built wheel must match.
README_WHEEL_GLOB = "dist/certauth_toolkit-*-py3-none-any.whl"

#: The distribution's name on the package index ("certauth" there is another project).
DISTRIBUTION = "certauth-toolkit"

#: Seconds for one step (a build or an install that resolves dependencies from the index).
STEP_TIMEOUT = 300

_IMPORT_EVERYTHING = """
import inspect, json, sys
import certauth, certauth.errors
names = list(certauth.__all__)
for name in names:
    getattr(certauth, name)  # the lazy re-exports resolve (RedisTokenCache: the redis extra)
errors = [
    name for name, value in vars(certauth.errors).items()
    if inspect.isclass(value) and issubclass(value, BaseException)
    and value.__module__ == "certauth.errors"
]
exec("from certauth.errors import " + ", ".join(errors))
print(json.dumps({"file": certauth.__file__, "version": certauth.__version__,
                  "names": names, "errors": errors, "prefix": sys.prefix}))
"""


def _clean_env(venv: Path, home: Path) -> dict[str, str]:
    """The environment of a user of the fresh venv: no PYTHONPATH (which points the test run at
    the checkout), no certauth or azure-identity settings, the venv's bin first on PATH."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
        and not key.startswith(("CERTAUTH_", "AZURE_", "_CERTAUTH"))
    }
    env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", os.defpath)])
    env["VIRTUAL_ENV"] = str(venv)
    env["CERTAUTH_CACHE_DIR"] = str(home / "cache")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _pip_takes_python_option() -> bool:
    """Whether this interpreter's pip can install into another one (``--python``, pip 22.3)."""
    try:
        from pip import __version__ as pip_version
    except ImportError:
        return False
    major, minor = (int(part) for part in re.findall(r"\d+", pip_version)[:2])
    return (major, minor) >= (22, 3)


def _run(argv: list[str], *, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=STEP_TIMEOUT
    )
    assert done.returncode == 0, (argv, done.stdout[-4000:], done.stderr[-4000:])
    return done


def _steps(demo_output: str) -> list[str]:
    """The demo's step headings (its other lines hold timings and fresh thumbprints)."""
    return [line for line in demo_output.splitlines() if line.startswith("== ")]


@pytest.mark.slow
def test_the_built_wheel_installs_and_runs_outside_the_checkout(tmp_path: Path) -> None:
    pytest.importorskip(
        "build",
        reason="the build package is not installed: it is in the dev extras "
        "(pip install -e '.[dev]'), and this test runs `python -m build`",
    )
    assert not tmp_path.resolve().is_relative_to(ROOT)
    work = tmp_path / "user"  # the cwd of every command: not the checkout
    work.mkdir()
    build_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if "build" in sys.modules and os.environ.get("PYTHONPATH"):
        # `build` may come from PYTHONPATH (a scratch tools directory): keep that entry only.
        build_dir = str(Path(sys.modules["build"].__file__ or "").parents[1])
        build_env["PYTHONPATH"] = build_dir

    # 1. python -m build, as the README says.
    dist = tmp_path / "dist"
    _run(
        [sys.executable, "-m", "build", "--wheel", "--sdist", "--outdir", str(dist), str(ROOT)],
        cwd=work,
        env=build_env,
    )
    wheels = list(dist.glob("*.whl"))
    sdists = list(dist.glob("*.tar.gz"))
    assert len(wheels) == 1, wheels
    assert len(sdists) == 1, sdists
    wheel, sdist = wheels[0], sdists[0]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "\npython -m build\n" in readme
    assert f"pip install {README_WHEEL_GLOB}\n" in readme
    assert wheel.match(Path(README_WHEEL_GLOB).name), wheel.name
    assert wheel.name == f"certauth_toolkit-{certauth.__version__}-py3-none-any.whl"
    assert sdist.name == f"certauth_toolkit-{certauth.__version__}.tar.gz"
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(
            f"certauth_toolkit-{certauth.__version__}.dist-info/METADATA"
        ).decode()
        entry_points = archive.read(
            f"certauth_toolkit-{certauth.__version__}.dist-info/entry_points.txt"
        ).decode()
        members = set(archive.namelist())
    assert f"\nName: {DISTRIBUTION}\n" in metadata
    assert f"\nVersion: {certauth.__version__}\n" in metadata
    assert re.search(r"^Provides-Extra: redis$", metadata, re.MULTILINE)
    assert "certauth = certauth.cli.main:main" in entry_points
    assert {"certauth/py.typed", "certauth/_version.py", "certauth/cli/main.py"} <= members
    assert not any(name.startswith("tests/") for name in members)
    with tarfile.open(sdist) as archive:
        top = f"certauth_toolkit-{certauth.__version__}"
        sdist_members = set(archive.getnames())
    # The sdist holds what its tests read: the docs pages and mkdocs.yml (tests/_docs.py).
    for name in (
        "pyproject.toml", "README.md", "CHANGELOG.md", "certauth/_version.py", "mkdocs.yml",
        "docs/cli.md", "docs/hooks.py",
    ):  # fmt: skip
        assert f"{top}/{name}" in sdist_members, name

    # 2. A fresh venv outside the checkout, the wheel (and its redis extra) installed into it;
    # dependencies come from the package index as pip resolves them (its cache makes it quick).
    venv = tmp_path / "venv"
    env = _clean_env(venv, tmp_path)
    python = str(venv / "bin" / "python")
    install = ["install", "--quiet", "--disable-pip-version-check", "--no-compile"]
    if _pip_takes_python_option():
        # No pip inside the new venv (ensurepip costs ~3 s): this run's pip installs into it.
        _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=work, env=env)
        pip = [sys.executable, "-m", "pip", "--python", python]
    else:
        _run([sys.executable, "-m", "venv", str(venv)], cwd=work, env=env)
        pip = [python, "-m", "pip"]
    _run([*pip, *install, f"{wheel}[redis]"], cwd=work, env=env)

    # 3. The installed command and library.
    version = _run(["certauth", "--version"], cwd=work, env=env)
    assert version.stdout.strip() == f"certauth, version {certauth.__version__}"
    assert shutil.which("certauth", path=env["PATH"]) == str(venv / "bin" / "certauth")
    demo = _run(["certauth", "demo"], cwd=work, env=env)
    assert demo.stdout.strip(), demo
    imported = _run([python, "-c", _IMPORT_EVERYTHING], cwd=work, env=env)
    found = json.loads(imported.stdout)
    assert Path(found["file"]).resolve().is_relative_to(venv.resolve()), found["file"]
    assert not Path(found["file"]).resolve().is_relative_to(ROOT)
    assert found["version"] == certauth.__version__
    assert found["names"] == list(certauth.__all__)
    assert {"CertauthError", "TokenRequestError"} <= set(found["errors"])

    # 4. scripts/demo, run from a copy of the checkout whose .venv is that venv: the stamp
    # scripts/_venv.sh writes after an install (sha256 of pyproject.toml, first 16 hex digits,
    # then the extras) says it is current, so nothing is installed and the demo runs.
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    for name in ("scripts/demo", "scripts/_venv.sh", "pyproject.toml"):
        shutil.copy2(ROOT / name, checkout / name)
    (checkout / ".venv").symlink_to(venv)
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    (venv / ".certauth-installed").write_text(f"{digest}-base\n")
    script_env = dict(env, PATH=os.pathsep.join(p for p in env["PATH"].split(os.pathsep)[1:]))
    done = _run([str(checkout / "scripts" / "demo")], cwd=work, env=script_env)
    assert "installing" not in done.stderr, done.stderr
    assert _steps(done.stdout) == _steps(demo.stdout) != []
    assert "is not on your PATH" in done.stderr
    assert ". .venv/bin/activate" in done.stderr
    assert "pip install ." in done.stderr
