"""``certauth cert csr`` and certificates a company CA issues: the CSR, then the issued leaf with
its chain in a PEM bundle and a PFX, read by ``cert show``/``cert check`` and sent as ``x5c``.

The CA is real and small: root -> intermediate -> leaf, the leaf issued for the request
``cert csr`` wrote, signed with cryptography's CertificateBuilder; openssl is the witness.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import stat
from pathlib import Path

import pytest
from _cert_helpers import assert_one_line_error, openssl, run_cli, write
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID

from certauth.assertion import build_client_assertion
from certauth.certificates import load_certificate
from certauth.csr import make_csr

Capsys = pytest.CaptureFixture[str]
NOW = dt.datetime.now(dt.timezone.utc)
PASSWORD = "csr pass phrase"


@pytest.fixture(autouse=True)
def _no_ambient_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_CLIENT_CERTIFICATE_PASSWORD", raising=False)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _ca(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    days: int,
) -> x509.Certificate:
    subject = x509.Name.from_rfc4514_string(name)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if issuer is None else issuer[0].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return builder.sign(key if issuer is None else issuer[1], hashes.SHA256())


def _issue(
    csr_file: Path, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], days: int
) -> x509.Certificate:
    """What the company CA does with the request: check its signature, copy subject and the
    requested extensions, sign."""
    request = x509.load_pem_x509_csr(csr_file.read_bytes())
    assert request.is_signature_valid
    builder = (
        x509.CertificateBuilder()
        .subject_name(request.subject)
        .issuer_name(issuer[0].subject)
        .public_key(request.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(hours=1))
        .not_valid_after(NOW + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    for extension in request.extensions:
        builder = builder.add_extension(extension.value, critical=extension.critical)
    return builder.sign(issuer[1], hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def issued(tmp_path: Path, capsys: Capsys) -> dict[str, Path]:
    """cert csr, then a root -> intermediate -> leaf CA issues it; files for every form."""
    result = run_cli(
        capsys, "cert", "csr", "--subject", "CN=billing-api,O=Contoso",
        "--san", "DNS:billing.contoso.com", "--out", tmp_path / "certs", "--json",
    )  # fmt: skip
    assert result.code == 0, result.err
    root_key = ec.generate_private_key(ec.SECP256R1())
    inter_key = ec.generate_private_key(ec.SECP256R1())
    root = _ca("CN=Contoso Root CA", root_key, None, 3650)
    # The intermediate expires before the leaf: cert check must say so.
    inter = _ca("CN=Contoso Issuing CA", inter_key, (root, root_key), 200)
    leaf = _issue(tmp_path / "certs" / "billing-api.csr", (inter, inter_key), 365)
    key_pem = (tmp_path / "certs" / "billing-api.key").read_bytes()
    key = serialization.load_pem_private_key(key_pem, None)
    files = {
        "root": write(tmp_path / "root.pem", _pem(root)),
        "inter": write(tmp_path / "inter.pem", _pem(inter)),
        "leaf": write(tmp_path / "leaf.pem", _pem(leaf)),
        "key": tmp_path / "certs" / "billing-api.key",
        # The CA's bundle in the "wrong" order: root first, key in the middle.
        "bundle": write(tmp_path / "bundle.pem", _pem(root) + key_pem + _pem(leaf) + _pem(inter)),
        "chain_only": write(tmp_path / "chain.pem", _pem(inter) + _pem(leaf) + _pem(root)),
        "pfx": write(
            tmp_path / "bundle.pfx",
            pkcs12.serialize_key_and_certificates(
                b"billing",
                key,
                leaf,
                [root, inter],  # type: ignore[arg-type]
                serialization.BestAvailableEncryption(PASSWORD.encode()),
            ),
        ),
    }
    write(tmp_path / "pw.txt", f"{PASSWORD}\n".encode())
    return files


def test_csr_writes_key_0600_and_request_openssl_verifies(tmp_path: Path, capsys: Capsys) -> None:
    out = tmp_path / "certs"
    result = run_cli(
        capsys, "cert", "csr", "--subject", "CN=billing-api,O=Contoso",
        "--san", "DNS:billing.contoso.com", "--san", "URI:spiffe://contoso/billing",
        "--san", "EMAIL:ops@contoso.com", "--san", "IP:10.0.0.1", "--key", "ec-p256", "--out", out,
    )  # fmt: skip
    assert result.code == 0, result.err
    key, request = out / "billing-api.key", out / "billing-api.csr"
    assert _mode(key) == 0o600
    assert _mode(request) == 0o644
    csr = x509.load_pem_x509_csr(request.read_bytes())
    fingerprint = hashes.Hash(hashes.SHA256())
    fingerprint.update(csr.public_bytes(serialization.Encoding.DER))
    lines = result.out.splitlines()
    assert lines[:6] == [
        f"key file:           {key} (mode 0600, not encrypted)",
        f"request file:       {request}",
        "subject:            CN=billing-api,O=Contoso",
        "SANs:               DNS:billing.contoso.com, URI:spiffe://contoso/billing, "
        "EMAIL:ops@contoso.com, IP:10.0.0.1",
        "key type:           ec-p256",
        f"SHA-256:            {fingerprint.finalize().hex().upper()}",
    ]
    assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    text = openssl("req", "-verify", "-in", request, "-noout", "-text", with_stderr=True)
    assert "verify OK" in text
    assert "DNS:billing.contoso.com" in text
    assert "URI:spiffe://contoso/billing" in text
    assert "email:ops@contoso.com" in text
    assert "IP Address:10.0.0.1" in text
    assert "TLS Web Client Authentication" in text
    assert "Digital Signature" in text
    # The request's key is the key file's.
    assert openssl("req", "-in", request, "-noout", "-pubkey") == openssl(
        "pkey", "-in", key, "-pubout"
    )


def test_csr_json_and_encrypted_key(
    tmp_path: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CSR_PW", PASSWORD)
    result = run_cli(
        capsys, "cert", "csr", "--subject", "CN=reports", "--out", tmp_path, "--name", "r",
        "--password-env", "CSR_PW", "--json",
    )  # fmt: skip
    assert result.code == 0, result.err
    payload = json.loads(result.out)
    assert payload["files"] == {"key": str(tmp_path / "r.key"), "request": str(tmp_path / "r.csr")}
    assert payload["subject"] == "CN=reports"
    assert payload["sans"] == []
    assert payload["key_type"] == "rsa2048"
    assert payload["key_encrypted"] is True
    assert len(payload["fingerprint_sha256"]) == 64
    assert (tmp_path / "r.key").read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    openssl("pkey", "-in", tmp_path / "r.key", "-passin", "env:CSR_PW", "-noout")


def test_library_make_csr() -> None:
    request = make_csr("CN=api", sans=["dns:api.example.com", "IP:::1"], key_type="ec-p256")
    assert request.subject == "CN=api"
    assert request.sans == ["DNS:api.example.com", "IP:::1"]
    assert request.request.is_signature_valid
    eku = request.request.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert request.pem.startswith(b"-----BEGIN CERTIFICATE REQUEST-----")


def test_issued_chain_verifies_with_openssl(issued: dict[str, Path]) -> None:
    out = openssl(
        "verify", "-CAfile", issued["root"], "-untrusted", issued["inter"], issued["leaf"]
    )
    assert out.strip().endswith(": OK")


@pytest.mark.parametrize("form", ["bundle", "pfx", "chain_only"])
def test_loader_finds_the_leaf_and_orders_the_chain(issued: dict[str, Path], form: str) -> None:
    password = PASSWORD if form == "pfx" else None
    loaded = load_certificate(issued[form], password=password)
    assert loaded.subject == "CN=billing-api,O=Contoso"
    assert [c.subject.rfc4514_string() for c in loaded.chain] == [
        "CN=Contoso Issuing CA",
        "CN=Contoso Root CA",
    ]
    assert loaded.key_matches() is (None if form == "chain_only" else True)


def test_x5c_is_leaf_then_issuers_in_order(issued: dict[str, Path], tmp_path: Path) -> None:
    certificate = load_certificate(issued["bundle"])
    token = build_client_assertion(
        certificate, client_id="app", audience="https://login.example/token", include_x5c=True
    )
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    ders = [base64.b64decode(value) for value in header["x5c"]]
    expected = [
        x509.load_pem_x509_certificate(issued[name].read_bytes()).public_bytes(
            serialization.Encoding.DER
        )
        for name in ("leaf", "inter", "root")
    ]
    assert ders == expected
    # RFC 7515 section 4.1.6: each certifies the one before; openssl agrees with that path.
    chain_file = write(tmp_path / "x5c.pem", b"".join(
        x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
        for der in ders[1:]
    ))  # fmt: skip
    leaf_file = write(tmp_path / "x5c-leaf.der", ders[0])
    openssl("x509", "-inform", "DER", "-in", leaf_file, "-out", tmp_path / "x5c-leaf.pem")
    openssl(
        "verify", "-CAfile", issued["root"], "-untrusted", chain_file, tmp_path / "x5c-leaf.pem"
    )


@pytest.mark.parametrize("form", ["bundle", "pfx"])
def test_show_prints_the_chain(issued: dict[str, Path], form: str, capsys: Capsys) -> None:
    extra = ["--password-file", str(issued["root"].parent / "pw.txt")] if form == "pfx" else []
    human = run_cli(capsys, "cert", "show", issued[form], *extra)
    assert human.code == 0, human.err
    lines = human.out.splitlines()
    assert lines[0] == "subject:            CN=billing-api,O=Contoso"
    assert lines[1] == "issuer:             CN=Contoso Issuing CA"
    assert "key matches:        yes" in lines
    start = lines.index("chain 1:            CN=Contoso Issuing CA")
    assert lines[start + 1] == "  issued by:        CN=Contoso Root CA"
    assert lines[start + 3] == "chain 2:            CN=Contoso Root CA"
    assert lines[start + 4] == "  issued by:        CN=Contoso Root CA"
    result = run_cli(capsys, "cert", "show", issued[form], *extra, "--json")
    payload = json.loads(result.out)
    assert payload["subject"] == "CN=billing-api,O=Contoso"
    assert [(c["subject"], c["issuer"]) for c in payload["chain"]] == [
        ("CN=Contoso Issuing CA", "CN=Contoso Root CA"),
        ("CN=Contoso Root CA", "CN=Contoso Root CA"),
    ]
    inter = x509.load_pem_x509_certificate(issued["inter"].read_bytes())
    assert payload["chain"][0]["thumbprint_sha1"] == inter.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303


def test_show_self_signed_has_an_empty_chain(tmp_path: Path, capsys: Capsys) -> None:
    run_cli(capsys, "cert", "create", "--subject", "CN=solo", "--out", tmp_path, "--json")
    payload = json.loads(run_cli(capsys, "cert", "show", tmp_path / "solo.crt", "--json").out)
    assert payload["chain"] == []


def test_check_judges_the_leaf_and_names_an_intermediate_expiring_first(
    issued: dict[str, Path], capsys: Capsys
) -> None:
    result = run_cli(capsys, "cert", "check", issued["chain_only"], "--json")
    assert result.code == 0, result.err
    payload = json.loads(result.out)
    leaf = x509.load_pem_x509_certificate(issued["leaf"].read_bytes())
    assert payload["not_after"] == f"{leaf.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}"
    assert payload["days_left"] in (364, 365)
    assert result.err_lines == [
        f"certauth: warning: {issued['chain_only']}: the chain certificate CN=Contoso Issuing CA "
        f"expires {NOW + dt.timedelta(days=200):%Y-%m-%d}, before the leaf "
        f"({leaf.not_valid_after_utc:%Y-%m-%d}); ask the CA for its renewed chain"
    ]
    # 300 days of warning window: the leaf (365 days) is still fine -> 0; 400 -> 7.
    assert run_cli(capsys, "cert", "check", issued["chain_only"], "--warn-days", "300").code == 0
    assert run_cli(capsys, "cert", "check", issued["chain_only"], "--warn-days", "400").code == 7


# -- bad input -----------------------------------------------------------------------------------


def test_bad_san_is_a_usage_error_naming_the_option(tmp_path: Path, capsys: Capsys) -> None:
    result = run_cli(
        capsys, "cert", "csr", "--subject", "CN=x", "--san", "foo", "--out", tmp_path / "o"
    )
    assert_one_line_error(result, 2, "--san foo", "DNS:NAME")
    assert not (tmp_path / "o").exists()
    result = run_cli(
        capsys, "cert", "csr", "--subject", "CN=x", "--san", "IP:nope", "--out", tmp_path / "o"
    )
    assert_one_line_error(result, 2, "--san IP:nope", "not an IP address")


@pytest.mark.parametrize("subject", ["", "   ", "billing"])
def test_bad_subject_exit_2(subject: str, tmp_path: Path, capsys: Capsys) -> None:
    result = run_cli(capsys, "cert", "csr", "--subject", subject, "--out", tmp_path / "o")
    assert_one_line_error(result, 2, "subject")
    assert not (tmp_path / "o").exists()


def test_existing_files_are_kept_without_force(tmp_path: Path, capsys: Capsys) -> None:
    args = ("cert", "csr", "--subject", "CN=app", "--out", tmp_path)
    assert run_cli(capsys, *args).code == 0
    before = (tmp_path / "app.key").read_bytes()
    assert_one_line_error(run_cli(capsys, *args), 3, "app.key: already exists", "--force")
    assert (tmp_path / "app.key").read_bytes() == before
    assert run_cli(capsys, *args, "--force").code == 0
    assert (tmp_path / "app.key").read_bytes() != before
    assert _mode(tmp_path / "app.key") == 0o600


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_out(tmp_path: Path, capsys: Capsys) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    result = run_cli(capsys, "cert", "csr", "--subject", "CN=app", "--out", locked)
    assert_one_line_error(result, 3, "--out")
    assert list(locked.iterdir()) == []


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_out_where_no_directory_can_be_made(capsys: Capsys) -> None:
    result = run_cli(capsys, "cert", "csr", "--subject", "CN=app", "--out", "/proc/certauth-csr")
    assert_one_line_error(result, 3, "--out", "/proc/certauth-csr")


def test_out_is_a_file(tmp_path: Path, capsys: Capsys) -> None:
    target = write(tmp_path / "file", b"x")
    result = run_cli(capsys, "cert", "csr", "--subject", "CN=app", "--out", target)
    assert_one_line_error(result, 3, "--out")


def test_missing_password_source(tmp_path: Path, capsys: Capsys) -> None:
    result = run_cli(
        capsys, "cert", "csr", "--subject", "CN=app", "--out", tmp_path / "o",
        "--password-env", "NO_SUCH_VARIABLE_CSR",
    )  # fmt: skip
    assert_one_line_error(result, 3, "--password-env NO_SUCH_VARIABLE_CSR")
    result = run_cli(
        capsys, "cert", "csr", "--subject", "CN=app", "--out", tmp_path / "o",
        "--password-file", tmp_path / "missing.txt",
    )  # fmt: skip
    assert_one_line_error(result, 3, "--password-file")
    assert not (tmp_path / "o").exists()
