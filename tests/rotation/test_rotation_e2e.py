"""``cert rotate`` end to end against the emulator's token endpoint and Graph surface, with a
propagation delay: services never fail a token call, and a rotation cut off at any step
converges when run again."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from certauth import AsyncCertificateCredential, CertificateCredential, load_certificate
from certauth._rotation_run import RotationRun
from certauth.certificates import Certificate, generate_certificate
from certauth.emulator import Emulator
from certauth.errors import TokenRequestError
from certauth.rotation import STATE_FILE, rotate_certificate

CLIENT_ID = "7a1d1b2c-0000-4000-8000-00000000a0a1"
SCOPE = "api://billing/.default"
GRAPH = "https://graph.microsoft.com"
#: How long the emulator's token endpoint takes to see a key added or removed through Graph.
PROPAGATION = 1.5
VENV_BIN = str(Path(sys.executable).parent)

pytestmark = pytest.mark.slow


@dataclass
class Setup:
    tenant: Emulator
    old: Certificate
    served: Path
    out: Path

    def rotate(self, **kwargs: Any) -> Any:
        settings: dict[str, Any] = {
            "tenant_id": self.tenant.tenant_id,
            "client_id": CLIENT_ID,
            "out_dir": self.out,
            "authority": self.tenant.authority_host,
            "graph_url": self.tenant.graph_url,
            "grace": 1.0,
            "propagation_timeout": 30.0,
        }
        settings.update(kwargs)
        return rotate_certificate(self.served, **settings)

    def thumbprints(self) -> list[str]:
        """What Graph shows for the app: its certificates' SHA-1 thumbprints."""
        from certauth._graph import thumbprint_of

        return sorted(
            str(thumbprint_of(credential)) for credential in self.tenant.key_credentials(CLIENT_ID)
        )

    def cli_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "CERTAUTH_"))}
        env["PATH"] = os.pathsep.join([VENV_BIN, env.get("PATH", "")])
        env["CERTAUTH_CACHE_DIR"] = str(self.out.parent / "cache")
        env.update(
            AZURE_TENANT_ID=self.tenant.tenant_id,
            AZURE_CLIENT_ID=CLIENT_ID,
            AZURE_AUTHORITY_HOST=self.tenant.authority_host,
            AZURE_CLIENT_CERTIFICATE_PATH=str(self.served),
        )
        return env


@pytest.fixture
def setup(tmp_path: Path, rsa_cert: Certificate) -> Iterator[Setup]:
    # Tokens live 4 s, so the services below go back to the token endpoint every ~2 s
    # throughout the rotation instead of serving one cached token.
    with Emulator(propagation_delay=PROPAGATION, token_lifetime=4) as tenant:
        tenant.register(CLIENT_ID, rsa_cert, roles={GRAPH: ["Application.ReadWrite.OwnedBy"]})
        served_dir = tmp_path / "served"
        served_dir.mkdir()
        served = served_dir / "billing-api.pem"
        served.write_bytes(rsa_cert.private_key_pem() + rsa_cert.pem)
        # As a service's file often is: readable by the service's group.
        served.chmod(0o640)
        yield Setup(tenant, rsa_cert, served, tmp_path / "rotation")


@dataclass
class Loop:
    """A service calling for tokens over and over in a thread until stopped."""

    name: str
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, once: Callable[[], object]) -> threading.Thread:
        def body() -> None:
            while not self.stop.is_set():
                try:
                    once()
                    self.ok += 1
                except Exception as exc:  # noqa: BLE001 - every failure is counted
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                time.sleep(0.05)

        thread = threading.Thread(target=body, name=self.name, daemon=True)
        thread.start()
        return thread


def test_services_never_fail_through_a_whole_rotation(setup: Setup) -> None:
    tenant = setup.tenant
    sync_credential = CertificateCredential(
        tenant.tenant_id, CLIENT_ID, str(setup.served), authority=tenant.authority_host
    )
    loops = [Loop("sync"), Loop("async"), Loop("cli")]
    threads = [loops[0].run(lambda: sync_credential.get_token(SCOPE))]

    async_loop = asyncio.new_event_loop()
    async_credential = AsyncCertificateCredential(
        tenant.tenant_id, CLIENT_ID, str(setup.served), authority=tenant.authority_host
    )

    def async_once() -> None:
        asyncio.run_coroutine_threadsafe(async_credential.get_token(SCOPE), async_loop).result(30)

    loop_thread = threading.Thread(target=async_loop.run_forever, daemon=True)
    loop_thread.start()
    threads.append(loops[1].run(async_once))
    env = setup.cli_env()

    def cli_once() -> None:
        proc = subprocess.run(
            ["certauth", "token", "--scope", SCOPE, "--output", "header"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"exit {proc.returncode}: {proc.stderr.strip()}")

    threads.append(loops[2].run(cli_once))
    time.sleep(1.0)
    try:
        result = setup.rotate()
        # The services keep going past the removal and its propagation, until each has made
        # a few calls since (a loaded machine makes the CLI's processes slow: wait for them).
        time.sleep(PROPAGATION)
        since = [loop.ok for loop in loops]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(
            loop.ok < start + 2 for loop, start in zip(loops, since, strict=True)
        ):
            time.sleep(0.2)
    finally:
        for loop in loops:
            loop.stop.set()
        for thread in threads:
            thread.join(60)
        asyncio.run_coroutine_threadsafe(async_credential.close(), async_loop).result(10)
        async_loop.call_soon_threadsafe(async_loop.stop)
        loop_thread.join(10)
        sync_credential.close()

    for loop in loops:
        assert loop.failures == [], f"{loop.name}: {loop.failures[:3]}"
        assert loop.ok >= 3, f"{loop.name} made only {loop.ok} calls"
    new = load_certificate(result.new_files[0])
    assert result.status == "done"
    assert result.old_key_removed
    assert (result.old_thumbprint, result.new_thumbprint) == (
        setup.old.thumbprint(),
        new.thumbprint(),
    )
    # One key registered, the new one; the served file holds it; the old file is kept.
    assert setup.thumbprints() == [new.thumbprint()]
    assert load_certificate(setup.served).thumbprint() == new.thumbprint()
    retired = sorted(setup.served.parent.glob("billing-api.retired-*.pem"))
    assert [load_certificate(path).thumbprint() for path in retired] == [setup.old.thumbprint()]
    # The served file keeps its mode (and owner: see test_the_served_files_keep_their_owner).
    assert oct(setup.served.stat().st_mode & 0o777) == "0o640"
    assert not (setup.out / STATE_FILE).exists()
    # The services now sign with the new certificate...
    with CertificateCredential(
        tenant.tenant_id, CLIENT_ID, str(setup.served), authority=tenant.authority_host
    ) as fresh:
        fresh.request_token(SCOPE, force=True)
    assert tenant.last_thumbprint == new.x5t_s256  # the assertion header names it (PS256)
    # ...and the old one is refused.
    with (
        CertificateCredential(
            tenant.tenant_id, CLIENT_ID, certificate=setup.old, authority=tenant.authority_host
        ) as old,
        pytest.raises(TokenRequestError) as refused,
    ):
        old.request_token(SCOPE, force=True)
    assert refused.value.aadsts == "AADSTS700027"


def test_a_symlinked_pair_is_switched_by_swapping_links(setup: Setup, tmp_path: Path) -> None:
    # A Kubernetes-style folder: the services read links into versioned files.
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "v1.crt").write_bytes(setup.old.pem)
    (versions / "v1.key").write_bytes(setup.old.private_key_pem())
    (versions / "v1.key").chmod(0o600)
    crt, key = tmp_path / "served" / "tls.crt", tmp_path / "served" / "tls.key"
    crt.symlink_to("../versions/v1.crt")
    key.symlink_to("../versions/v1.key")
    result = rotate_certificate(
        crt,
        key_path=key,
        tenant_id=setup.tenant.tenant_id,
        client_id=CLIENT_ID,
        out_dir=versions,
        authority=setup.tenant.authority_host,
        graph_url=setup.tenant.graph_url,
        grace=0,
        propagation_timeout=30,
    )
    new_crt, new_key = (Path(name) for name in result.new_files)
    assert (new_crt.suffix, new_key.suffix) == (".crt", ".key")
    assert crt.is_symlink()
    assert os.readlink(crt) == f"../versions/{new_crt.name}"  # still relative
    assert os.readlink(key) == f"../versions/{new_key.name}"
    assert load_certificate(crt, key=key).thumbprint() == result.new_thumbprint
    assert oct(new_key.stat().st_mode & 0o777) == "0o600"
    # The old files are where they were (the links pointed at them), plus a renamed copy.
    assert load_certificate(versions / "v1.crt", key=versions / "v1.key").thumbprint() == (
        setup.old.thumbprint()
    )
    assert setup.thumbprints() == [result.new_thumbprint]


def test_an_app_with_no_graph_read_permission_needs_its_object_id(
    tmp_path: Path, rsa_cert: Certificate
) -> None:
    from certauth.errors import GraphError

    with Emulator() as tenant:
        tenant.register(CLIENT_ID, rsa_cert)
        served = tmp_path / "app.pem"
        served.write_bytes(rsa_cert.private_key_pem() + rsa_cert.pem)
        settings: dict[str, Any] = {
            "tenant_id": tenant.tenant_id,
            "client_id": CLIENT_ID,
            "out_dir": tmp_path / "out",
            "authority": tenant.authority_host,
            "graph_url": tenant.graph_url,
            "grace": 0,
        }
        with pytest.raises(GraphError) as refused:
            rotate_certificate(served, **settings)
        assert refused.value.status_code == 403
        assert refused.value.code == "Authorization_RequestDenied"
        assert "give the application's object id with app_object_id=" in refused.value.message
        assert refused.value.request_id
        # With the object id, addKey (no permission needed) works; the old key's id cannot be
        # read, so it is left for the portal and the result says so.
        logged: list[str] = []
        result = rotate_certificate(
            served,
            app_object_id=tenant.app_object_id(CLIENT_ID),
            log=logged.append,
            **settings,
        )
        assert result.status == "done"
        assert not result.old_key_removed
        assert any("remove it in the portal" in line for line in logged)
        assert len(tenant.key_credentials(CLIENT_ID)) == 2


# -- cut off at any step, then run again ---------------------------------------------------------

#: Every state the rotation records, and what a crash right before recording it leaves: the
#: step's work is done, the state file does not say so.
CRASH_POINTS = ("creating", "created", "added", "accepted", "switching", "switched", "removed")


class Crash(BaseException):
    """A process dying (not an error the rotation could catch)."""


def _cut_off_before_recording(point: str, setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run a rotation that dies just before it records ``point`` (its work done)."""
    original = RotationRun.save

    def dying_save(self: RotationRun, step: str | None = None) -> None:
        if step == point:
            raise Crash(point)
        original(self, step)

    monkeypatch.setattr(RotationRun, "save", dying_save)
    with pytest.raises(Crash):
        setup.rotate(grace=0)
    monkeypatch.setattr(RotationRun, "save", original)


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_a_rotation_cut_off_before_recording_a_step_converges(
    setup: Setup, point: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _cut_off_before_recording(point, setup, monkeypatch)
    result = setup.rotate(grace=0)
    _assert_converged(setup, result.new_thumbprint)


def _assert_converged(setup: Setup, new_thumbprint: str | None) -> None:
    assert new_thumbprint
    assert setup.thumbprints() == [new_thumbprint], "one new key registered, the old removed"
    assert load_certificate(setup.served).thumbprint() == new_thumbprint
    # No key lost: the new key is in --out, the old one kept beside the served file.
    made = sorted(setup.out.glob("billing-api-*.pem"))
    assert [load_certificate(path).thumbprint() for path in made] == [new_thumbprint]
    # Whole files left by a cut-off run are taken up, not set aside for a second new key.
    assert not list(setup.out.glob("*.partial-*"))
    retired = sorted(setup.served.parent.glob("billing-api.retired-*.pem"))
    assert [load_certificate(path).thumbprint() for path in retired] == [setup.old.thumbprint()]
    assert not (setup.out / STATE_FILE).exists()


@pytest.mark.parametrize("line", ["1/6", "2/6", "3/6 waiting", "3/6 the token", "4/6", "5/6"])
def test_the_cli_killed_at_each_step_converges_when_run_again(setup: Setup, line: str) -> None:
    command = [
        "certauth", "cert", "rotate", "--out", str(setup.out), "--grace", "1s",
        "--graph-url", setup.tenant.graph_url,
    ]  # fmt: skip
    proc = subprocess.Popen(
        command,
        env=setup.cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    seen: list[str] = []
    for text in proc.stderr:
        seen.append(text)
        if text.startswith(f"certauth: rotate: {line}"):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(60)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)
    rerun = subprocess.run(
        command, env=setup.cli_env(), capture_output=True, text=True, timeout=120, check=False
    )
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming the rotation" in rerun.stderr
    new = rerun.stdout.split("new thumbprint:", 1)[1].split()[0]
    _assert_converged(setup, new)


def test_a_certificate_for_another_app_is_never_rotated_in(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The served file changed under a rotation (someone restored another certificate): the
    # rerun refuses instead of rolling a key it did not start from.
    _cut_off_before_recording("created", setup, monkeypatch)
    other = generate_certificate("CN=someone-else")
    setup.served.write_bytes(other.private_key_pem() + other.pem)
    from certauth.rotation import RotationError

    with pytest.raises(RotationError, match="the rotation started from"):
        setup.rotate(grace=0)


def test_an_expired_certificate_is_rotated_once_the_new_one_is_uploaded_by_hand(
    tmp_path: Path,
) -> None:
    import datetime as dt

    from certauth.rotation import RotationError

    expired = generate_certificate(
        "CN=lapsed", days=1, now=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=3)
    )
    with Emulator() as tenant:
        tenant.register(CLIENT_ID, expired, roles={GRAPH: ["Application.ReadWrite.OwnedBy"]})
        served = tmp_path / "lapsed.pem"
        served.write_bytes(expired.private_key_pem() + expired.pem)
        settings: dict[str, Any] = {
            "tenant_id": tenant.tenant_id,
            "client_id": CLIENT_ID,
            "out_dir": tmp_path / "out",
            "authority": tenant.authority_host,
            "graph_url": tenant.graph_url,
            "grace": 0,
        }
        with pytest.raises(RotationError) as refused:
            rotate_certificate(served, **settings)
        message = refused.value.message
        assert "the current certificate is expired on " in message
        assert "Graph's addKey cannot be used" in message
        new_file = next((tmp_path / "out").glob("lapsed-*.pem"))
        public = new_file.with_suffix(".crt")  # the public part, beside the new bundle
        assert f"upload {public} (the public certificate) to the app registration by hand" in (
            message
        )
        assert load_certificate(public).thumbprint() == load_certificate(new_file).thumbprint()
        assert load_certificate(public).private_key is None
        # The operator uploads it (the portal); the rerun goes on with it and removes the old.
        tenant.register(CLIENT_ID, load_certificate(public))
        result = rotate_certificate(served, **settings)
        assert result.status == "done"
        assert result.old_key_removed
        assert [c["keyId"] for c in tenant.key_credentials(CLIENT_ID)] == [result.new_key_id]
