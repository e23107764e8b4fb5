"""``certauth cert create|show|thumbprint|check|manifest``: what each prints and writes.

The bad-input sweep lives in test_cli_cert_bad_input.py; here are the working paths. Commands run
in-process through ``certauth.cli.main.main`` (fast), a few through the installed console
script to prove the wiring.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from _cert_helpers import (
    b64url,
    cert_pem,
    key_pem,
    openssl,
    openssl_fingerprint,
    run_cli,
    self_signed,
    write,
)
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from certauth.certificates import Certificate, generate_certificate, load_certificate

PASSWORD = "p@ss word with spaces"
UTC = dt.timezone.utc
Capsys = pytest.CaptureFixture[str]


@pytest.fixture(autouse=True)
def _no_ambient_password(monkeypatch: pytest.MonkeyPatch) -> None:
    # The default password variable must not leak in from the developer's shell.
    monkeypatch.delenv("AZURE_CLIENT_CERTIFICATE_PASSWORD", raising=False)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _label_columns(text: str) -> set[int]:
    """The column where the value starts on each ``label:  value`` line."""
    columns = set()
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z0-9#() -]+:)(\s+)\S", line)
        if match:
            columns.add(len(match.group(1)) + len(match.group(2)))
    return columns


# -- create ---------------------------------------------------------------------------------------


def test_create_writes_certificate_and_key(tmp_path: Path, capsys: Capsys) -> None:
    out = tmp_path / "certs"
    result = run_cli(capsys, "cert", "create", "--subject", "CN=billing-api", "--out", out)
    assert result.code == 0, result.err
    assert sorted(p.name for p in out.iterdir()) == ["billing-api.crt", "billing-api.key"]
    assert _mode(out) == 0o700
    assert _mode(out / "billing-api.crt") == 0o644
    assert _mode(out / "billing-api.key") == 0o600
    assert (out / "billing-api.crt").read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert (out / "billing-api.key").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = load_certificate(out / "billing-api.crt", key=out / "billing-api.key")
    assert loaded.key_matches() is True
    assert loaded.key_description == "RSA 2048"
    assert loaded.subject == "CN=billing-api"
    # Human output: aligned columns, the thumbprint the portal shows, what to upload.
    assert len(_label_columns(result.out)) == 1, result.out
    assert f"thumbprint (SHA-1): {loaded.thumbprint_sha1}" in result.out
    assert f"x5t#S256:           {loaded.x5t_s256}" in result.out
    assert f"Upload {out / 'billing-api.crt'}" in result.out
    assert result.err == ""


def test_create_json_is_one_object(tmp_path: Path, capsys: Capsys) -> None:
    result = run_cli(
        capsys, "cert", "create", "--subject", "CN=api,O=Contoso", "--out", tmp_path,
        "--name", "api-2026", "--days", "30", "--json",
    )  # fmt: skip
    assert result.code == 0, result.err
    payload = json.loads(result.out)  # the whole stdout is one JSON document
    assert isinstance(payload, dict)
    assert payload["files"] == {
        "certificate": str(tmp_path / "api-2026.crt"),
        "key": str(tmp_path / "api-2026.key"),
    }
    loaded = load_certificate(tmp_path / "api-2026.crt")
    assert payload["thumbprint_sha1"] == loaded.thumbprint_sha1
    assert payload["thumbprint_sha256"] == loaded.thumbprint_sha256
    assert payload["x5t"] == loaded.x5t
    assert payload["x5t#S256"] == loaded.x5t_s256
    assert payload["subject"] == "CN=api,O=Contoso"
    assert payload["key_type"] == "RSA"
    assert payload["key_size"] == 2048
    assert payload["days_left"] in (29, 30)
    assert payload["key_matches"] is True
    assert payload["entra_compatible"] is True
    assert payload["warnings"] == []


def test_create_default_name_and_directory(
    tmp_path: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = run_cli(capsys, "cert", "create", "--subject", "CN=Billing API (prod)")
    assert result.code == 0, result.err
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "Billing-API-prod.crt",
        "Billing-API-prod.key",
    ]


def test_create_with_pfx_bundle_and_password_from_env(
    tmp_path: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CERT_PASSWORD", PASSWORD)
    result = run_cli(
        capsys, "cert", "create", "--subject", "CN=svc", "--out", tmp_path, "--pfx", "--bundle",
        "--password-env", "CERT_PASSWORD", "--json",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert PASSWORD not in result.out + result.err
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["svc.crt", "svc.key", "svc.pem", "svc.pfx"]
    for secret in ("svc.key", "svc.pem", "svc.pfx"):
        assert _mode(tmp_path / secret) == 0o600
        assert PASSWORD.encode() not in (tmp_path / secret).read_bytes()
    assert (tmp_path / "svc.key").read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY")
    env = {"PW": PASSWORD}
    pfx_text = openssl(
        "pkcs12", "-in", tmp_path / "svc.pfx", "-nodes", "-passin", "env:PW", env=env
    )
    assert "friendlyName: svc" in pfx_text
    openssl("pkey", "-in", tmp_path / "svc.key", "-noout", "-passin", "env:PW", env=env)
    bundle = load_certificate(tmp_path / "svc.pem", password=PASSWORD)
    assert bundle.key_matches() is True
    pfx = load_certificate(tmp_path / "svc.pfx", password=PASSWORD)
    assert pfx.thumbprint_sha1 == json.loads(result.out)["thumbprint_sha1"]


def test_create_with_password_file(tmp_path: Path, capsys: Capsys) -> None:
    password_file = write(tmp_path / "pw.txt", f"{PASSWORD}\r\nsecond line ignored\n".encode())
    out = tmp_path / "out"
    result = run_cli(
        capsys, "cert", "create", "--subject", "CN=f", "--out", out,
        "--password-file", password_file,
    )  # fmt: skip
    assert result.code == 0, result.err
    assert PASSWORD not in result.out + result.err
    loaded = load_certificate(out / "f.crt", key=out / "f.key", password=PASSWORD)
    assert loaded.key_matches() is True


def test_create_does_not_take_the_ambient_password_variable(
    tmp_path: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Encrypting with a variable the user did not name would lock them out of their key.
    monkeypatch.setenv("AZURE_CLIENT_CERTIFICATE_PASSWORD", "ambient")
    assert run_cli(capsys, "cert", "create", "--subject", "CN=a", "--out", tmp_path).code == 0
    assert (tmp_path / "a.key").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


def test_create_ec_warns_that_entra_will_not_accept_it(tmp_path: Path, capsys: Capsys) -> None:
    result = run_cli(
        capsys, "cert", "create", "--subject", "CN=ec", "--key", "ec-p256", "--out", tmp_path,
        "--json",
    )  # fmt: skip
    assert result.code == 0
    payload = json.loads(result.out)
    assert payload["key_type"] == "EC"
    assert payload["entra_compatible"] is False
    assert "Entra ID will not accept it" in result.err
    assert len(result.err_lines) == 1


@pytest.mark.parametrize(("key_type", "bits"), [("rsa3072", 3072)])
def test_create_other_rsa_sizes(tmp_path: Path, capsys: Capsys, key_type: str, bits: int) -> None:
    result = run_cli(
        capsys, "cert", "create", "--subject", "CN=k", "--key", key_type, "--out", tmp_path
    )
    assert result.code == 0
    assert load_certificate(tmp_path / "k.crt").key_size == bits


def test_create_force_replaces_existing_files(tmp_path: Path, capsys: Capsys) -> None:
    args = ("cert", "create", "--subject", "CN=r", "--out", tmp_path, "--json")
    first = json.loads(run_cli(capsys, *args).out)
    assert run_cli(capsys, *args).code == 3
    second = run_cli(capsys, *args, "--force")
    assert second.code == 0
    assert json.loads(second.out)["thumbprint_sha1"] != first["thumbprint_sha1"]
    assert load_certificate(tmp_path / "r.crt", key=tmp_path / "r.key").key_matches() is True
    assert _mode(tmp_path / "r.key") == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.crt", "r.key"]


def test_key_is_0600_even_under_umask_000(tmp_path: Path) -> None:
    # A separate process: the umask is process-wide.
    out = tmp_path / "new" / "dir"
    code = (
        "import os, sys; os.umask(0); from certauth.cli.main import main; "
        f"sys.exit(main(['cert', 'create', '--subject', 'CN=u', '--out', {str(out)!r}, "
        "'--pfx', '--bundle']))"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    assert _mode(out / "u.key") == 0o600
    assert _mode(out / "u.pfx") == 0o600
    assert _mode(out / "u.pem") == 0o600
    assert _mode(out / "u.crt") == 0o644
    assert _mode(out) == 0o700
    assert _mode(out.parent) == 0o700


# -- show -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(rsa_cert: Certificate, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """rsa_cert as .crt, .key, encrypted key, bundle, DER and PFX files."""
    directory = tmp_path_factory.mktemp("cli")
    write(directory / "app.crt", rsa_cert.pem)
    write(directory / "app.der", rsa_cert.der)
    write(directory / "app.key", rsa_cert.private_key_pem())
    write(directory / "app-enc.key", rsa_cert.private_key_pem(PASSWORD))
    write(directory / "app.pem", rsa_cert.private_key_pem() + rsa_cert.pem)
    write(directory / "app-enc.pem", rsa_cert.private_key_pem(PASSWORD) + rsa_cert.pem)
    write(directory / "app.pfx", rsa_cert.to_pfx(PASSWORD))
    return directory


def test_show_human(files: Path, rsa_cert: Certificate, capsys: Capsys) -> None:
    result = run_cli(capsys, "cert", "show", files / "app.crt", "--key", files / "app.key")
    assert result.code == 0, result.err
    for fragment in (
        "subject:            CN=certauth-test",
        "issuer:             CN=certauth-test",
        f"serial:             {rsa_cert.serial_number}",
        "key type:           RSA 2048",
        f"thumbprint (SHA-1): {rsa_cert.thumbprint_sha1}",
        f"SHA-256:            {rsa_cert.thumbprint_sha256}",
        f"x5t:                {rsa_cert.x5t}",
        "key matches:        yes",
    ):
        assert fragment in result.out
    assert len(_label_columns(result.out)) == 1
    assert result.err == ""


@pytest.mark.parametrize(
    ("name", "extra", "key_matches"),
    [
        ("app.crt", [], None),
        ("app.der", [], None),
        ("app.pem", [], True),
        ("app.crt", ["--key", "app.key"], True),
        ("app.crt", ["--key", "app-enc.key", "--password-env", "PW"], True),
        ("app-enc.pem", ["--password-env", "PW"], True),
        ("app.pfx", ["--password-env", "PW"], True),
    ],
)
def test_show_json_for_every_input_form(
    files: Path,
    rsa_cert: Certificate,
    capsys: Capsys,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    extra: list[str],
    key_matches: bool | None,
) -> None:
    monkeypatch.setenv("PW", PASSWORD)
    monkeypatch.chdir(files)
    result = run_cli(capsys, "cert", "show", name, *extra, "--json")
    assert result.code == 0, result.err
    payload = json.loads(result.out)
    assert payload["file"] == name
    assert payload["thumbprint_sha1"] == rsa_cert.thumbprint_sha1
    assert payload["x5t#S256"] == rsa_cert.x5t_s256
    assert payload["key_matches"] is key_matches
    assert payload["not_after"] == rsa_cert.not_after.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert PASSWORD not in result.out + result.err


def test_show_takes_the_default_password_variable(
    files: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_CLIENT_CERTIFICATE_PASSWORD", PASSWORD)
    result = run_cli(capsys, "cert", "show", files / "app.pfx", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["key_matches"] is True


def test_show_encrypted_bundle_without_password_still_shows(files: Path, capsys: Capsys) -> None:
    result = run_cli(capsys, "cert", "show", files / "app-enc.pem", "--json")
    assert result.code == 0
    assert json.loads(result.out)["key_matches"] is None
    [warning] = result.err_lines
    assert "encrypted" in warning
    assert "--password-env" in warning


def test_show_ec_certificate_says_entra_will_not_accept_it(
    ec_cert: Certificate, tmp_path: Path, capsys: Capsys
) -> None:
    path = write(tmp_path / "ec.crt", ec_cert.pem)
    result = run_cli(capsys, "cert", "show", path)
    assert result.code == 0
    assert "key type:           EC P-256" in result.out
    [warning] = result.err_lines
    assert "Entra ID will not accept it" in warning
    assert str(path) in warning


def test_show_weak_rsa_certificate_says_entra_will_not_accept_it(
    tmp_path: Path, capsys: Capsys
) -> None:
    weak_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    # A year ahead: within `cert check`'s 30-day window, show would also warn about expiry.
    a_year = dt.datetime.now(UTC) + dt.timedelta(days=365)
    path = write(
        tmp_path / "weak.crt", cert_pem(self_signed(weak_key, "CN=weak", not_after=a_year))
    )
    result = run_cli(capsys, "cert", "show", path, "--json")
    assert result.code == 0
    payload = json.loads(result.out)
    assert payload["key_size"] == 1024
    assert payload["entra_compatible"] is False
    assert "Entra ID will not accept it" in payload["warnings"][0]
    [warning] = result.err_lines
    assert "RSA 1024" in warning
    assert "Entra ID will not accept it" in warning


def test_show_key_mismatch_is_exit_3(
    files: Path, other_rsa_cert: Certificate, tmp_path: Path, capsys: Capsys
) -> None:
    other_key = write(tmp_path / "other.key", other_rsa_cert.private_key_pem())
    result = run_cli(capsys, "cert", "show", files / "app.crt", "--key", other_key)
    assert result.code == 3
    assert "does not belong" in result.err


# -- thumbprint -----------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["sha1", "sha256", "x5t", "x5t#S256", "X5T#s256", None])
def test_thumbprint_equals_openssl(files: Path, capsys: Capsys, form: str | None) -> None:
    args = ["cert", "thumbprint", str(files / "app.crt")]
    if form is not None:
        args += ["--format", form]
    result = run_cli(capsys, *args)
    assert result.code == 0, result.err
    value = result.out.strip()
    assert result.out == value + "\n"  # exactly one value
    digest = "sha256" if (form or "sha1").lower() in {"sha256", "x5t#s256"} else "sha1"
    raw = openssl_fingerprint(files / "app.crt", digest)
    expected = b64url(raw) if (form or "").lower().startswith("x5t") else raw.hex().upper()
    assert value == expected


def test_thumbprint_of_der_and_pfx(files: Path, capsys: Capsys, rsa_cert: Certificate) -> None:
    assert run_cli(capsys, "cert", "thumbprint", files / "app.der").out.strip() == (
        rsa_cert.thumbprint_sha1
    )
    result = run_cli(
        capsys, "cert", "thumbprint", files / "app.pfx", "--password-file",
        write(files / "pw", PASSWORD.encode()),
    )  # fmt: skip
    assert result.out.strip() == rsa_cert.thumbprint_sha1


# -- check ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dated(rsa_cert: Certificate, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Certificates that are valid, expiring, expired and not yet valid (one key, made fast)."""
    key = rsa_cert.require_private_key()
    assert isinstance(key, rsa.RSAPrivateKey)
    now = dt.datetime.now(UTC)
    day = dt.timedelta(days=1)
    directory = tmp_path_factory.mktemp("dated")
    spans = {
        "valid": (now - day, now + 100 * day),
        "expiring": (now - day, now + 10 * day + dt.timedelta(hours=1)),
        "expired": (now - 30 * day, now - day),
        "future": (now + day, now + 100 * day),
    }
    for name, (start, end) in spans.items():
        write(
            directory / f"{name}.crt",
            cert_pem(self_signed(key, f"CN={name}", not_before=start, not_after=end)),
        )
    return directory


@pytest.mark.parametrize(
    ("name", "code", "status", "days"),
    [
        ("valid", 0, "valid", 99),
        ("expiring", 7, "expiring", 10),
        ("expired", 8, "expired", -2),
        ("future", 8, "not_yet_valid", 99),
    ],
)
def test_check_exit_codes_and_json(
    dated: Path, capsys: Capsys, name: str, code: int, status: str, days: int
) -> None:
    path = dated / f"{name}.crt"
    result = run_cli(capsys, "cert", "check", path, "--json")
    assert result.code == code
    payload = json.loads(result.out)
    assert payload["status"] == status
    assert payload["exit_code"] == code
    assert payload["days_left"] == days
    assert payload["file"] == str(path)
    human = run_cli(capsys, "cert", "check", path)
    assert human.code == code
    text = human.out + human.err
    assert len(text.strip().splitlines()) == 1
    assert str(path) in text


def test_check_warn_days_moves_the_window(dated: Path, capsys: Capsys) -> None:
    path = dated / "expiring.crt"
    assert run_cli(capsys, "cert", "check", path, "--warn-days", "5").code == 0
    assert run_cli(capsys, "cert", "check", path, "--warn-days", "10").code == 7
    assert run_cli(capsys, "cert", "check", dated / "valid.crt", "--warn-days", "365").code == 7


def test_check_with_a_generated_certificate(tmp_path: Path, capsys: Capsys) -> None:
    past = dt.datetime.now(UTC) - dt.timedelta(days=400)
    old = generate_certificate("CN=old", key_type="ec-p256", days=365, now=past)
    path = write(tmp_path / "old.crt", old.pem)
    result = run_cli(capsys, "cert", "check", path)
    assert result.code == 8
    assert "expired" in result.err


# -- manifest -------------------------------------------------------------------------------------


def test_manifest_is_the_graph_key_credential(
    files: Path, rsa_cert: Certificate, capsys: Capsys
) -> None:
    result = run_cli(capsys, "cert", "manifest", files / "app.crt")
    assert result.code == 0, result.err
    credential = json.loads(result.out)
    assert credential["type"] == "AsymmetricX509Cert"
    assert credential["usage"] == "Verify"
    assert x509.load_der_x509_certificate(base64.b64decode(credential["key"])) == rsa_cert.x509
    sha1 = openssl_fingerprint(files / "app.crt", "sha1")
    assert base64.b64decode(credential["customKeyIdentifier"]) == sha1
    assert credential["displayName"] == "CN=certauth-test"
    assert credential["startDateTime"] == rsa_cert.not_before.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert credential["endDateTime"] == rsa_cert.not_after.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert re.fullmatch(r"[0-9a-f-]{36}", credential["keyId"])
    # The az equivalent goes to stderr, so stdout stays pure JSON.
    assert f"az ad app credential reset --id APP_ID --cert @{files / 'app.crt'} --append" in (
        result.err
    )


def test_manifest_display_name(files: Path, capsys: Capsys) -> None:
    name = "billing-api 2026 (" + "x" * 70 + ")"
    assert len(name) == 89
    result = run_cli(capsys, "cert", "manifest", files / "app.crt", "--display-name", name)
    assert json.loads(result.out)["displayName"] == name
    too_long = run_cli(capsys, "cert", "manifest", files / "app.crt", "--display-name", "y" * 91)
    assert too_long.code == 2
    assert "90" in too_long.err
    assert too_long.out == ""


# -- help, wiring ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [[], ["create"], ["show"], ["thumbprint"], ["check"], ["manifest"]]
)
def test_every_help_has_an_example(capsys: Capsys, command: list[str]) -> None:
    result = run_cli(capsys, "cert", *command, "--help")
    assert result.code == 0
    assert "Example:" in result.out
    assert "certauth cert" in result.out.split("Example:", 1)[1]


def test_console_script_runs_cert_show(files: Path) -> None:
    script = Path(sys.executable).with_name("certauth")
    proc = subprocess.run(
        [str(script), "cert", "thumbprint", str(files / "app.crt"), "--format", "x5t"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "AZURE_CLIENT_CERTIFICATE_PASSWORD": ""},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == load_certificate(files / "app.crt").x5t


def test_traditional_rsa_key_through_the_cli(
    rsa_cert: Certificate, files: Path, tmp_path: Path, capsys: Capsys
) -> None:
    key = rsa_cert.require_private_key()
    assert isinstance(key, rsa.RSAPrivateKey)
    path = write(tmp_path / "trad.key", key_pem(key, traditional=True))
    result = run_cli(capsys, "cert", "show", files / "app.crt", "--key", path, "--json")
    assert json.loads(result.out)["key_matches"] is True


def test_fresh_certificate_shows_its_full_term(tmp_path: Path, capsys: Capsys) -> None:
    result = run_cli(capsys, "cert", "create", "--subject", "CN=term", "--out", tmp_path)
    assert result.code == 0
    assert "days left:          365\n" in result.out
    result = run_cli(capsys, "cert", "show", tmp_path / "term.crt", "--json")
    assert json.loads(result.out)["days_left"] == 365


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("valid", None),
        (
            "expiring",
            "expires in 10 days ({date}), within the 30-day window; create and register a new "
            "certificate",
        ),
        ("expired", "expired on {date}"),
    ],
)
def test_show_warns_about_expiry_as_check_judges_it(
    dated: Path, capsys: Capsys, name: str, expected: str | None
) -> None:
    path = dated / f"{name}.crt"
    shown = run_cli(capsys, "cert", "show", path)
    checked = run_cli(capsys, "cert", "check", path)
    assert shown.code == 0
    if expected is None:
        assert shown.err == ""
        return

    # The same judgement and words as `cert check` (which prints its line on stderr); only
    # the "(now ...)" time of an expired one may differ by the second between the two runs.
    def same(text: str) -> str:
        return re.sub(r"\(now [^)]*\)", "(now ...)", text)

    assert same(shown.err) == same(f"certauth: warning: {checked.err}")
    not_after = load_certificate(path).not_after
    day = f"{not_after:%Y-%m-%d}"
    assert shown.err.startswith(f"certauth: warning: {path}: {expected.format(date=day)}")
