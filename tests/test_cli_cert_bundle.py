"""``certauth cert bundle``: an existing certificate + key pair packed into a PEM bundle or PFX."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from _cert_helpers import assert_one_line_error, run_cli, write

from certauth.certificates import Certificate, load_certificate

PASSWORD = "bundle pass phrase"
OTHER_PASSWORD = "another one"
Capsys = pytest.CaptureFixture[str]


@pytest.fixture(autouse=True)
def _no_ambient_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_CLIENT_CERTIFICATE_PASSWORD", raising=False)


@pytest.fixture
def pair(rsa_cert: Certificate, tmp_path: Path) -> Path:
    """The ops quick start's files: app.crt, app.key, app-enc.key, and the password files."""
    write(tmp_path / "app.crt", rsa_cert.pem)
    write(tmp_path / "app.key", rsa_cert.private_key_pem())
    write(tmp_path / "app-enc.key", rsa_cert.private_key_pem(PASSWORD))
    write(tmp_path / "pw.txt", f"{PASSWORD}\n".encode())
    write(tmp_path / "other-pw.txt", f"{OTHER_PASSWORD}\n".encode())
    return tmp_path


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_pem_bundle_is_key_then_certificate_0600(
    pair: Path, rsa_cert: Certificate, capsys: Capsys
) -> None:
    out = pair / "app.pem"
    result = run_cli(capsys, "cert", "bundle", pair / "app.crt", pair / "app.key", "--out", out)
    assert result.code == 0, result.err
    assert result.out.splitlines() == [
        f"bundle file:        {out}",
        "contents:           PEM: key (PKCS#8) + certificate, not encrypted, mode 0600",
        f"subject:            {rsa_cert.subject}",
        f"valid until:        {rsa_cert.not_after:%Y-%m-%dT%H:%M:%SZ}",
        f"thumbprint (SHA-1): {rsa_cert.thumbprint_sha1}",
    ]
    assert result.err == ""
    assert _mode(out) == 0o600
    assert out.read_bytes() == rsa_cert.private_key_pem() + rsa_cert.pem
    loaded = load_certificate(out)
    assert loaded.key_matches() is True


def test_json_says_what_was_written(pair: Path, rsa_cert: Certificate, capsys: Capsys) -> None:
    out = pair / "app.pfx"
    result = run_cli(
        capsys, "cert", "bundle", pair / "app.crt", pair / "app.key", "--out", out, "--pfx",
        "--password-file", pair / "pw.txt", "--json",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert json.loads(result.out) == {
        "file": str(out),
        "format": "pfx",
        "encrypted": True,
        "certificates": 1,
        "subject": rsa_cert.subject,
        "not_after": f"{rsa_cert.not_after:%Y-%m-%dT%H:%M:%SZ}",
        "thumbprint_sha1": rsa_cert.thumbprint_sha1,
        "thumbprint_sha256": rsa_cert.thumbprint_sha256,
    }
    assert _mode(out) == 0o600
    loaded = load_certificate(out, password=PASSWORD)
    assert loaded.key_matches() is True
    assert loaded.thumbprint_sha1 == rsa_cert.thumbprint_sha1


def test_password_makes_the_pem_key_encrypted_pkcs8(
    pair: Path, rsa_cert: Certificate, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BUNDLE_PASSWORD", OTHER_PASSWORD)
    out = pair / "enc.pem"
    result = run_cli(
        capsys, "cert", "bundle", pair / "app.crt", pair / "app-enc.key", "--out", out,
        "--key-password-file", pair / "pw.txt", "--password-env", "BUNDLE_PASSWORD",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "PEM: key (PKCS#8) + certificate, encrypted, mode 0600" in result.out
    assert out.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert load_certificate(out, password=OTHER_PASSWORD).key_matches() is True


def test_encrypted_key_read_with_the_key_password_written_in_the_clear(
    pair: Path, rsa_cert: Certificate, capsys: Capsys
) -> None:
    out = pair / "clear.pem"
    result = run_cli(
        capsys, "cert", "bundle", pair / "app.crt", pair / "app-enc.key", "--out", out,
        "--key-password-file", pair / "pw.txt",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert out.read_bytes() == rsa_cert.private_key_pem() + rsa_cert.pem


def test_the_output_password_also_unlocks_the_key(pair: Path, capsys: Capsys) -> None:
    # `cert create --password-file pw.txt` encrypts the key with the password the PFX gets.
    out = pair / "app.pfx"
    result = run_cli(
        capsys, "cert", "bundle", pair / "app.crt", pair / "app-enc.key", "--out", out, "--pfx",
        "--password-file", pair / "pw.txt",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert load_certificate(out, password=PASSWORD).key_matches() is True


def test_a_pfx_or_bundle_alone_is_repacked(
    pair: Path, rsa_cert: Certificate, capsys: Capsys
) -> None:
    write(pair / "in.pfx", rsa_cert.to_pfx(PASSWORD))
    out = pair / "from-pfx.pem"
    result = run_cli(
        capsys, "cert", "bundle", pair / "in.pfx", "--out", out,
        "--key-password-file", pair / "pw.txt",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert out.read_bytes() == rsa_cert.private_key_pem() + rsa_cert.pem


def test_encrypted_key_without_a_password_names_the_options(pair: Path, capsys: Capsys) -> None:
    out = pair / "x.pem"
    result = run_cli(capsys, "cert", "bundle", pair / "app.crt", pair / "app-enc.key", "--out", out)
    assert_one_line_error(result, 3, "app-enc.key", "encrypted", "--key-password-env")
    assert not out.exists()


def test_wrong_key_password_is_exit_3(pair: Path, capsys: Capsys) -> None:
    result = run_cli(
        capsys, "cert", "bundle", pair / "app.crt", pair / "app-enc.key", "--out", pair / "x.pem",
        "--key-password-file", pair / "other-pw.txt",
    )  # fmt: skip
    assert_one_line_error(result, 3, "wrong password")
    assert not (pair / "x.pem").exists()


def test_a_key_of_another_certificate_is_refused(
    pair: Path, other_rsa_cert: Certificate, capsys: Capsys
) -> None:
    write(pair / "other.key", other_rsa_cert.private_key_pem())
    result = run_cli(
        capsys, "cert", "bundle", pair / "app.crt", pair / "other.key", "--out", pair / "x.pem"
    )
    assert_one_line_error(result, 3, "does not belong to the certificate")
    assert not (pair / "x.pem").exists()


def test_a_certificate_without_key_is_refused(pair: Path, capsys: Capsys) -> None:
    result = run_cli(capsys, "cert", "bundle", pair / "app.crt", "--out", pair / "x.pem")
    assert_one_line_error(result, 3, "holds no private key", "CERT KEY")


def test_never_overwrites_without_force(pair: Path, rsa_cert: Certificate, capsys: Capsys) -> None:
    out = pair / "app.pem"
    out.write_bytes(b"keep me")
    args = ["cert", "bundle", pair / "app.crt", pair / "app.key", "--out", out]
    line = assert_one_line_error(run_cli(capsys, *args), 3, "--out", "already exists")
    assert "--name" not in line
    assert out.read_bytes() == b"keep me"
    assert run_cli(capsys, *args, "--force").code == 0
    assert out.read_bytes() == rsa_cert.private_key_pem() + rsa_cert.pem
    assert _mode(out) == 0o600


def test_missing_directory_and_pfx_name_without_pfx(pair: Path, capsys: Capsys) -> None:
    base = ["cert", "bundle", pair / "app.crt", pair / "app.key", "--out"]
    assert_one_line_error(run_cli(capsys, *base, pair / "no" / "x.pem"), 3, "does not exist")
    assert_one_line_error(run_cli(capsys, *base, pair / "x.pfx"), 2, "add --pfx")
    assert sorted(p.name for p in pair.iterdir()) == [
        "app-enc.key", "app.crt", "app.key", "other-pw.txt", "pw.txt",
    ]  # fmt: skip


def test_help_has_an_example(capsys: Capsys) -> None:
    result = run_cli(capsys, "cert", "bundle", "--help")
    assert result.code == 0
    assert "certauth cert bundle" in result.out.split("Example:", 1)[1]
