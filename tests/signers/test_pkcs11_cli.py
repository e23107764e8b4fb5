"""``certauth cert create --key-store pkcs11:...`` and ``cert show --key pkcs11:...`` end to end,
against SoftHSM2; the PIN never comes from argv and never shows in any output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PIN, WRONG_PIN, SoftHsm

from certauth.certificates import Certificate, load_certificate
from certauth.cli.main import main

pytest.importorskip("pkcs11")


@pytest.fixture
def pin_file(tmp_path: Path) -> Path:
    path = tmp_path / "pin"
    path.write_text(PIN + "\n", encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CERTAUTH_PKCS11_MODULE", raising=False)
    monkeypatch.delenv("AZURE_CLIENT_CERTIFICATE_PASSWORD", raising=False)


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    for secret in (PIN, WRONG_PIN):
        assert secret not in out + err
    return code, out, err


def test_create_in_the_token_then_show_with_the_token_key(
    softhsm: SoftHsm, tmp_path: Path, pin_file: Path, label: str, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = f"pkcs11:token=certauth;object={label}"
    code, out, err = _run(
        [
            "cert",
            "create",
            "--subject",
            "CN=billing-api",
            "--out",
            str(tmp_path / "certs"),
            "--key-store",
            uri,
            "--pkcs11-module",
            softhsm.module,
            "--pin-file",
            str(pin_file),
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    created = json.loads(out)
    crt = tmp_path / "certs" / "billing-api.crt"
    assert created["files"] == {"certificate": str(crt)}
    assert sorted(p.name for p in (tmp_path / "certs").iterdir()) == ["billing-api.crt"]
    assert created["key_store"].startswith(f"{uri};id=%")
    assert created["key_matches"] is True
    certificate = load_certificate(crt)
    assert certificate.private_key is None
    assert created["thumbprint_sha1"] == certificate.thumbprint_sha1
    assert created["x5t#S256"] == certificate.x5t_s256
    assert created["key_description"] == "RSA 2048"

    monkeypatch_env = {"TOKEN_PIN": PIN}
    with pytest.MonkeyPatch.context() as mp:
        for name, value in monkeypatch_env.items():
            mp.setenv(name, value)
        code, out, err = _run(
            [
                "cert",
                "show",
                str(crt),
                "--key",
                uri,
                "--pkcs11-module",
                softhsm.module,
                "--pin-env",
                "TOKEN_PIN",
                "--json",
            ],
            capsys,
        )
    assert code == 0, err
    shown = json.loads(out)
    assert shown["key"] == uri
    for field in ("subject", "serial", "thumbprint_sha1", "thumbprint_sha256", "x5t", "x5t#S256"):
        assert shown[field] == created[field]
    assert shown["key_matches"] is True
    # The URI as FILE: the token's own copy of the certificate, the same one.
    code, out, _ = _run(
        [
            "cert",
            "show",
            f"{uri}?pin-source={pin_file}&module-path={softhsm.module}",
            "--json",
        ],
        capsys,
    )
    assert code == 0
    assert json.loads(out)["thumbprint_sha1"] == created["thumbprint_sha1"]
    # Human output: the same lines as cert create prints for a key file, plus the key's URI.
    code, out, _ = _run(
        [
            "cert",
            "show",
            str(crt),
            "--key",
            uri,
            "--pkcs11-module",
            softhsm.module,
            "--pin-file",
            str(pin_file),
        ],
        capsys,
    )
    assert code == 0
    assert out.splitlines()[0] == f"key in token:       {uri}"
    assert f"thumbprint (SHA-1): {created['thumbprint_sha1']}" in out
    assert out.splitlines()[-1] == "key matches:        yes"


def test_show_says_when_the_token_key_is_another(
    softhsm: SoftHsm,
    tmp_path: Path,
    pin_file: Path,
    label: str,
    rsa_cert: Certificate,
    capsys: pytest.CaptureFixture[str],
) -> None:
    uri = f"pkcs11:token=certauth;object={label}"
    assert (
        _run(
            [
                "cert",
                "create",
                "--subject",
                "CN=x",
                "--out",
                str(tmp_path),
                "--key-store",
                uri,
                "--pkcs11-module",
                softhsm.module,
                "--pin-file",
                str(pin_file),
            ],
            capsys,
        )[0]
        == 0
    )
    other = tmp_path / "other.crt"
    other.write_bytes(rsa_cert.pem)
    code, out, err = _run(
        [
            "cert",
            "show",
            str(other),
            "--key",
            uri,
            "--pkcs11-module",
            softhsm.module,
            "--pin-file",
            str(pin_file),
        ],
        capsys,
    )
    assert code == 3
    assert out.splitlines()[-1] == "key matches:        NO"
    assert err.strip().endswith(
        f"{uri}: the token's key does not belong to {other} (its test signature does not "
        "verify with the certificate's public key); give the matching key or certificate"
    )


def test_ec_key_in_the_token(
    softhsm: SoftHsm, tmp_path: Path, pin_file: Path, label: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(
        [
            "cert",
            "create",
            "--subject",
            "CN=ec",
            "--key",
            "ec-p256",
            "--out",
            str(tmp_path),
            "--key-store",
            f"pkcs11:token=certauth;object={label}",
            "--pkcs11-module",
            softhsm.module,
            "--pin-file",
            str(pin_file),
            "--json",
        ],
        capsys,
    )
    assert code == 0
    assert json.loads(out)["key_description"] == "EC P-256"
    assert json.loads(out)["key_matches"] is True
    assert "Entra ID will not accept it" in err


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["--pfx"], 2, "--pfx writes the private key, and with --key-store it never leaves"),
        (["--password-env", "X"], 2, "--password-env writes the private key"),
        (
            ["--key-store", f"pkcs11:token=certauth;object=x?pin-value={PIN}"],
            2,
            "--key-store: the pkcs11: URI holds pin-value, and a command line is visible to "
            "every user of this machine; remove it and give the PIN with --pin-env VAR, "
            "--pin-file FILE or pin-source=file:/path in the URI",
        ),
        (["--key-store", "pkcs11:token=certauth"], 2, "name the new key with object=LABEL"),
        (
            ["--key-store", "pkcs11:token=certauth;object=y", "--pin-env", "NOT_SET_ANYWHERE"],
            3,
            "--pin-env NOT_SET_ANYWHERE: the environment variable is not set",
        ),
        (
            ["--key-store", "pkcs11:token=certauth;object=y"],
            3,
            "needs the user PIN to use its private keys; give it with --pin-env VAR / "
            "--pin-file FILE, or pin-source=FILE in the URI",
        ),
    ],
)
def test_create_refusals(
    softhsm: SoftHsm,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    code: int,
    message: str,
) -> None:
    args = [
        "cert",
        "create",
        "--subject",
        "CN=x",
        "--out",
        str(tmp_path / "o"),
        "--pkcs11-module",
        softhsm.module,
    ]
    if "--key-store" not in extra:
        args += ["--key-store", "pkcs11:token=certauth;object=z"]
    got, _, err = _run(args + extra, capsys)
    assert got == code
    assert message in err
    assert not (tmp_path / "o").exists()


def test_pkcs11_options_without_a_token_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rsa_cert: Certificate
) -> None:
    code, _, err = _run(
        ["cert", "create", "--subject", "CN=x", "--out", str(tmp_path), "--pin-env", "X"], capsys
    )
    assert code == 2
    assert "--pin-env goes with a pkcs11: key; leave it out for a key file" in err
    crt = tmp_path / "a.crt"
    crt.write_bytes(rsa_cert.pem)
    code, _, err = _run(["cert", "show", str(crt), "--pkcs11-module", "/x.so"], capsys)
    assert code == 2
    assert "--pkcs11-module goes with a pkcs11: key" in err


def test_missing_module_names_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(
        [
            "cert",
            "create",
            "--subject",
            "CN=x",
            "--out",
            str(tmp_path),
            "--key-store",
            "pkcs11:token=certauth;object=m",
        ],
        capsys,
    )
    assert code == 3
    assert "no PKCS#11 module given; name the vendor's module" in err
    assert "with --pkcs11-module, module-path= in the URI or CERTAUTH_PKCS11_MODULE" in err


@pytest.mark.slow
def test_the_real_command_in_fresh_processes(
    softhsm: SoftHsm, tmp_path: Path, pin_file: Path, label: str
) -> None:
    """A new process (not yet logged in to the token): create, show, and a wrong PIN refused."""
    env = dict(softhsm.env(), PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    env.pop("CERTAUTH_PKCS11_MODULE", None)
    uri = f"pkcs11:token=certauth;object={label}"

    def certauth(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "certauth", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        for secret in (PIN, WRONG_PIN):
            assert secret not in done.stdout + done.stderr
        return done

    made = certauth(
        "cert",
        "create",
        "--subject",
        "CN=fresh",
        "--out",
        str(tmp_path),
        "--key-store",
        uri,
        "--pkcs11-module",
        softhsm.module,
        "--pin-file",
        str(pin_file),
        "--json",
    )
    assert made.returncode == 0, made.stderr
    shown = certauth(
        "cert",
        "show",
        str(tmp_path / "fresh.crt"),
        "--key",
        f"{uri}?pin-source={pin_file}",
        "--pkcs11-module",
        softhsm.module,
        "--json",
    )
    assert shown.returncode == 0, shown.stderr
    assert (
        json.loads(shown.stdout)["thumbprint_sha256"]
        == json.loads(made.stdout)["thumbprint_sha256"]
    )
    assert json.loads(shown.stdout)["key_matches"] is True
    wrong = tmp_path / "wrong"
    wrong.write_text(WRONG_PIN + "\n", encoding="utf-8")
    refused = certauth(
        "cert",
        "show",
        str(tmp_path / "fresh.crt"),
        "--key",
        uri,
        "--pkcs11-module",
        softhsm.module,
        "--pin-file",
        str(wrong),
    )
    assert refused.returncode == 3
    assert refused.stderr == (
        f"certauth: error: --key {uri}: the token refused the PIN (CKR_PIN_INCORRECT); check "
        "the PIN given with --pin-env VAR / --pin-file FILE or pin-source= (the token may lock "
        "after a few wrong PINs)\n"
    )
    missing = certauth(
        "cert",
        "show",
        str(tmp_path / "fresh.crt"),
        "--key",
        "pkcs11:token=gone;object=x",
        "--pkcs11-module",
        softhsm.module,
        "--pin-file",
        str(pin_file),
    )
    assert missing.returncode == 3
    assert "no token matches the URI (tokens present: " in missing.stderr
    assert "'certauth' serial " in missing.stderr
