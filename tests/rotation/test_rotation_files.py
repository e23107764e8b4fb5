"""``cert rotate`` and the files services read: pairs and links cut off at any step, owners and
modes kept, links through linked folders, two rotations in a day, ``--delete-old``, the switch
command, and refusals before anything is written."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from certauth import load_certificate
from certauth._graph import thumbprint_of
from certauth._rotation_run import RotationRun
from certauth.certificates import Certificate, generate_certificate
from certauth.emulator import Emulator
from certauth.errors import GraphError
from certauth.rotation import STATE_FILE, RotationError, rotate_certificate

CLIENT_ID = "7a1d1b2c-0000-4000-8000-00000000b0b2"
GRAPH = "https://graph.microsoft.com"

pytestmark = pytest.mark.slow


class Crash(BaseException):
    """A process dying (not an error the rotation could catch)."""


@pytest.fixture
def tenant(rsa_cert: Certificate) -> Iterator[Emulator]:
    with Emulator() as emulator:
        emulator.register(CLIENT_ID, rsa_cert, roles={GRAPH: ["Application.ReadWrite.OwnedBy"]})
        yield emulator


def _rotate(tenant: Emulator, cert: Path, out: Path, **kwargs: Any) -> Any:
    settings: dict[str, Any] = {
        "tenant_id": tenant.tenant_id,
        "client_id": CLIENT_ID,
        "out_dir": out,
        "authority": tenant.authority_host,
        "graph_url": tenant.graph_url,
        "grace": 0,
        "propagation_timeout": 30,
    }
    settings.update(kwargs)
    return rotate_certificate(cert, **settings)


def _registered(tenant: Emulator) -> list[str]:
    return sorted(str(thumbprint_of(c)) for c in tenant.key_credentials(CLIENT_ID))


def _pair(folder: Path, cert: Certificate, name: str = "tls") -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    crt, key = folder / f"{name}.crt", folder / f"{name}.key"
    crt.write_bytes(cert.pem)
    key.write_bytes(cert.private_key_pem())
    key.chmod(0o600)
    return crt, key


def _die_before(point: str, monkeypatch: pytest.MonkeyPatch) -> None:
    original = RotationRun.save

    def dying(self: RotationRun, step: str | None = None) -> None:
        if step == point:
            raise Crash(point)
        original(self, step)

    monkeypatch.setattr(RotationRun, "save", dying)


POINTS = ("creating", "created", "adding", "added", "accepted", "switching", "switched", "removed")


@pytest.mark.parametrize("linked", [False, True], ids=["files", "links"])
@pytest.mark.parametrize("point", POINTS)
def test_a_pair_cut_off_before_any_record_converges(
    tenant: Emulator,
    rsa_cert: Certificate,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    point: str,
    linked: bool,
) -> None:
    if linked:
        _pair(tmp_path / "versions", rsa_cert, "v1")
        served = tmp_path / "served"
        served.mkdir()
        crt, key = served / "tls.crt", served / "tls.key"
        crt.symlink_to("../versions/v1.crt")
        key.symlink_to("../versions/v1.key")
        out = tmp_path / "versions"
    else:
        crt, key = _pair(tmp_path / "served", rsa_cert)
        out = tmp_path / "out"
    _die_before(point, monkeypatch)
    with pytest.raises(Crash):
        _rotate(tenant, crt, out, key_path=key)
    monkeypatch.undo()
    result = _rotate(tenant, crt, out, key_path=key)
    assert result.status == "done"
    assert _registered(tenant) == [result.new_thumbprint]
    assert load_certificate(crt, key=key).thumbprint() == result.new_thumbprint
    kept = sorted(p for p in (tmp_path / "served").iterdir() if ".retired-" in p.name)
    if not linked:
        assert [p.suffix for p in kept] == [".crt", ".key"]
        assert load_certificate(kept[0], key=kept[1]).thumbprint() == rsa_cert.thumbprint()
    assert not (out / STATE_FILE).exists()


def test_the_served_files_keep_their_mode_and_owner(
    tenant: Emulator, rsa_cert: Certificate, tmp_path: Path
) -> None:
    served = tmp_path / "app.pem"
    served.write_bytes(rsa_cert.private_key_pem() + rsa_cert.pem)
    served.chmod(0o640)
    owner = (os.getuid(), os.getgid())
    if os.geteuid() == 0:
        owner = (1234, 2345)  # a service user of its own, as on a real host
        os.chown(served, *owner)
    _rotate(tenant, served, tmp_path / "out")
    info = served.stat()
    assert (oct(info.st_mode & 0o777), (info.st_uid, info.st_gid)) == ("0o640", owner)


def test_a_link_in_a_linked_folder_still_reaches_the_new_file(
    tenant: Emulator, rsa_cert: Certificate, tmp_path: Path
) -> None:
    deep = tmp_path / "srv" / "deep" / "nested" / "app"
    deep.mkdir(parents=True)
    (deep / "v1.pem").write_bytes(rsa_cert.private_key_pem() + rsa_cert.pem)
    (deep / "current.pem").symlink_to("v1.pem")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "app").symlink_to(deep)
    served = tmp_path / "etc" / "app" / "current.pem"
    result = _rotate(tenant, served, tmp_path / "srv" / "out")
    assert served.is_symlink()
    assert load_certificate(served).thumbprint() == result.new_thumbprint
    assert not os.path.isabs(os.readlink(served))


def test_two_rotations_in_a_day_keep_both_old_files_and_delete_old_removes_the_right_ones(
    tenant: Emulator, rsa_cert: Certificate, tmp_path: Path
) -> None:
    served = tmp_path / "app.pem"
    served.write_bytes(rsa_cert.private_key_pem() + rsa_cert.pem)
    out = tmp_path / "out"
    first = _rotate(tenant, served, out)
    second = _rotate(tenant, served, out)
    kept = sorted(tmp_path.glob("app.retired-*.pem"))
    assert [p.name.count("-2.pem") for p in kept] == [1, 0], "the second gets a name of its own"
    assert {load_certificate(p).thumbprint() for p in kept} == {
        rsa_cert.thumbprint(),
        first.new_thumbprint,
    }
    # A third, with --delete-old: the second's old key (the first's new one) goes everywhere:
    # its kept copy beside the served file and the first rotation's files in out.
    third = _rotate(tenant, served, out, keep_old=False)
    holding = [
        p for p in [*tmp_path.glob("*.pem"), *out.glob("*.pem"), *out.glob("*.crt")]
        if load_certificate(p, load_key=False).thumbprint() == second.new_thumbprint
        and p != served
    ]  # fmt: skip
    assert holding == [], "the old key's files are deleted"
    assert _registered(tenant) == [third.new_thumbprint]
    # The kept originals of the first two rotations stay.
    assert len(list(tmp_path.glob("app.retired-*.pem"))) == 2


def test_with_no_read_permission_a_cut_after_add_key_converges(
    rsa_cert: Certificate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Emulator() as tenant:
        tenant.register(CLIENT_ID, rsa_cert)  # no Graph role: it cannot read its keys
        served = tmp_path / "app.pem"
        served.write_bytes(rsa_cert.private_key_pem() + rsa_cert.pem)
        object_id = tenant.app_object_id(CLIENT_ID)
        _die_before("added", monkeypatch)  # addKey answered, not recorded
        with pytest.raises(Crash):
            _rotate(tenant, served, tmp_path / "out", app_object_id=object_id)
        monkeypatch.undo()
        result = _rotate(tenant, served, tmp_path / "out", app_object_id=object_id)
        assert result.status == "done"
        assert load_certificate(served).thumbprint() == result.new_thumbprint
        # The old key cannot be found without read access: left for the portal, as said.
        assert not result.old_key_removed


def test_a_failing_switch_command_stops_before_anything_is_removed(
    tenant: Emulator, rsa_cert: Certificate, tmp_path: Path
) -> None:
    served = tmp_path / "app.pem"
    served.write_bytes(rsa_cert.private_key_pem() + rsa_cert.pem)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "CERTAUTH_"))}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    command = [
        "certauth", "cert", "rotate", "--tenant", tenant.tenant_id, "--client-id", CLIENT_ID,
        "--cert", str(served), "--out", str(tmp_path / "out"), "--grace", "0",
        "--authority-host", tenant.authority_host, "--graph-url", tenant.graph_url,
    ]  # fmt: skip
    marker = tmp_path / "applied"
    failing = subprocess.run(
        [*command, "--switch-command", "exit 3"], env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert failing.returncode == 3, failing.stderr
    assert "--switch-command exited 3" in failing.stderr
    assert len(_registered(tenant)) == 2, "the old key stays registered"
    done = subprocess.run(
        [*command, "--switch-command", f"touch {marker}"], env=env, capture_output=True,
        text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert marker.exists()
    assert _registered(tenant) == [load_certificate(served).thumbprint()]


def test_an_ec_certificate_is_refused_before_anything_is_written(
    tenant: Emulator, tmp_path: Path
) -> None:
    ec = generate_certificate("CN=ec", key_type="ec-p256")
    served = tmp_path / "ec.pem"
    served.write_bytes(ec.private_key_pem() + ec.pem)
    with pytest.raises(RotationError, match="Entra ID will not accept it") as refused:
        _rotate(tenant, served, tmp_path / "out")
    assert "create an RSA certificate by hand once" in refused.value.message
    assert not (tmp_path / "out").exists()


def test_an_unwritable_served_folder_is_refused_before_anything_happens(
    tenant: Emulator, rsa_cert: Certificate, tmp_path: Path
) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes everywhere")
    folder = tmp_path / "ro"
    folder.mkdir()
    served = folder / "app.pem"
    served.write_bytes(rsa_cert.private_key_pem() + rsa_cert.pem)
    folder.chmod(0o500)
    try:
        with pytest.raises(Exception, match="this user cannot write here"):
            _rotate(tenant, served, tmp_path / "out")
    finally:
        folder.chmod(0o700)
    assert _registered(tenant) == [rsa_cert.thumbprint()]


def test_graph_errors_after_the_switch_leave_a_resumable_rotation(
    tenant: Emulator, rsa_cert: Certificate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = tmp_path / "app.pem"
    served.write_bytes(rsa_cert.private_key_pem() + rsa_cert.pem)

    def refused(*args: Any) -> None:
        raise GraphError("removeKey refused", status_code=503)

    monkeypatch.setattr(RotationRun, "_remove_old_key", refused)
    with pytest.raises(GraphError):
        _rotate(tenant, served, tmp_path / "out")
    monkeypatch.undo()
    result = _rotate(tenant, served, tmp_path / "out")
    assert result.old_key_removed
    assert _registered(tenant) == [result.new_thumbprint]
