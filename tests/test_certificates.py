"""certauth.certificates and certauth._files: generation, loading, thumbprints, PFX, file rules.

Every thumbprint form and every file certauth writes is checked against the real ``openssl``
binary (an independent implementation), not only against certauth's own reader.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from _cert_helpers import (
    b64url,
    cert_pem,
    key_pem,
    listing,
    openssl,
    openssl_fingerprint,
    self_signed,
    write,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certauth import _files
from certauth._files import OutputFile, ensure_private_dir, write_files_atomically
from certauth.certificates import (
    Certificate,
    generate_certificate,
    load_certificate,
    parse_subject,
)
from certauth.errors import (
    CertificateError,
    InvalidArgumentError,
    KeyMismatchError,
    LocalInputError,
    OutputExistsError,
    PasswordError,
    UnsupportedKeyError,
)

UTC = dt.timezone.utc
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def rsa_files(rsa_cert: Certificate, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """rsa_cert written in the usual forms, once for the module."""
    directory = tmp_path_factory.mktemp("rsa")
    write(directory / "cert.pem", rsa_cert.pem)
    write(directory / "cert.der", rsa_cert.der)
    write(directory / "key.pem", rsa_cert.private_key_pem())
    write(directory / "key-enc.pem", rsa_cert.private_key_pem(PASSWORD))
    write(directory / "plain.pfx", rsa_cert.to_pfx())
    write(directory / "secret.pfx", rsa_cert.to_pfx(PASSWORD))
    return directory


# -- generation -----------------------------------------------------------------------------------
def test_generated_certificate_has_the_extensions_entra_expects(rsa_cert: Certificate) -> None:
    cert = rsa_cert.x509
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical
    assert basic.value.ca is False
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert not (usage.value.key_cert_sign)
    assert not (usage.value.crl_sign)
    assert not (usage.value.key_encipherment)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    assert cert.subject == cert.issuer  # self-signed
    assert rsa_cert.key_type == "RSA"
    assert rsa_cert.key_size == 2048
    assert rsa_cert.key_matches() is True


def test_openssl_reads_the_generated_extensions(rsa_files: Path) -> None:
    text = openssl("x509", "-in", rsa_files / "cert.pem", "-noout", "-text")
    assert "CA:FALSE" in text
    assert "Digital Signature" in text
    assert "TLS Web Client Authentication" in text
    assert "Subject Key Identifier" in text
    assert "sha256WithRSAEncryption" in text


def test_validity_is_backdated_and_lasts_the_given_days() -> None:
    now = dt.datetime(2030, 1, 15, 12, 0, tzinfo=UTC)
    cert = generate_certificate("CN=dated", days=90, now=now)
    assert now - dt.timedelta(minutes=10) <= cert.not_before < now  # backdated for clock skew
    assert cert.not_after == now + dt.timedelta(days=90)


def test_serial_numbers_are_random_and_large(rsa_cert: Certificate) -> None:
    other = generate_certificate("CN=certauth-test", key_type="ec-p256")
    serials = {rsa_cert.x509.serial_number, other.x509.serial_number}
    assert len(serials) == 2
    # RFC 5280 4.1.2.2: positive, at most 20 octets; CA/B asks for 64 bits of randomness.
    assert all(2**64 < serial < 2**159 for serial in serials)


@pytest.mark.parametrize(("key_type", "bits"), [("rsa3072", 3072), ("rsa4096", 4096)])
def test_larger_rsa_keys(key_type: str, bits: int) -> None:
    cert = generate_certificate("CN=big", key_type=key_type, days=1)
    assert cert.key_description == f"RSA {bits}"
    assert cert.entra_problems() == []


def test_ec_certificate_warns_that_entra_will_not_accept_it(ec_cert: Certificate) -> None:
    assert ec_cert.key_description == "EC P-256"
    [problem] = ec_cert.entra_problems()
    assert "Entra ID will not accept it" in problem
    assert "AADSTS5002738" in problem


def test_weak_rsa_certificate_is_called_out() -> None:
    weak_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - on purpose
    weak = load_certificate(cert_pem(self_signed(weak_key, "CN=weak")))
    [problem] = weak.entra_problems()
    assert "RSA 1024" in problem
    assert "Entra ID will not accept it" in problem
    assert "AADSTS50032" in problem


def test_rsa_below_2048_cannot_be_generated() -> None:
    with pytest.raises(InvalidArgumentError, match="unknown key type"):
        generate_certificate("CN=x", key_type="rsa1024")


@pytest.mark.parametrize("days", [0, -1, 3651, 100_000])
def test_validity_outside_1_to_3650_days_is_refused(days: int) -> None:
    with pytest.raises(InvalidArgumentError, match="days="):
        generate_certificate("CN=x", days=days, key_type="ec-p256")


def test_ten_years_is_the_longest_validity() -> None:
    now = dt.datetime(2030, 1, 1, tzinfo=UTC)
    cert = generate_certificate("CN=x", days=3650, key_type="ec-p256", now=now)
    assert cert.not_after == now + dt.timedelta(days=3650)


def test_subject_takes_a_full_rfc4514_name() -> None:
    cert = generate_certificate("CN=billing-api,O=Contoso,C=US", key_type="ec-p256")
    assert cert.common_name == "billing-api"
    assert cert.x509.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == (
        "Contoso"
    )
    assert parse_subject("CN=billing-api").rfc4514_string() == "CN=billing-api"


@pytest.mark.parametrize("subject", ["", "   ", "billing-api", "CN=", "NOPE=x", "C=USA", "CN=a,,"])
def test_subject_that_does_not_parse_is_a_usage_error(subject: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        parse_subject(subject)
    message = str(info.value)
    assert "\n" not in message
    assert "()" not in message
    assert "CN=" in message  # says how to write it


# -- thumbprints, against openssl -----------------------------------------------------------------
def test_thumbprints_equal_openssl_fingerprints(rsa_cert: Certificate, rsa_files: Path) -> None:
    sha1 = openssl_fingerprint(rsa_files / "cert.pem", "sha1")
    sha256 = openssl_fingerprint(rsa_files / "cert.pem", "sha256")
    assert rsa_cert.thumbprint_sha1 == sha1.hex().upper()
    assert len(rsa_cert.thumbprint_sha1) == 40  # as the Entra portal shows it
    assert rsa_cert.thumbprint_sha256 == sha256.hex().upper()
    assert rsa_cert.x5t == b64url(sha1)
    assert rsa_cert.x5t_s256 == b64url(sha256)
    assert "=" not in rsa_cert.x5t + rsa_cert.x5t_s256  # unpadded base64url
    assert rsa_cert.thumbprint("sha1") == rsa_cert.thumbprint_sha1
    assert rsa_cert.thumbprint("X5T#S256") == rsa_cert.x5t_s256


def test_ec_thumbprints_equal_openssl(ec_cert: Certificate, tmp_path: Path) -> None:
    path = write(tmp_path / "ec.crt", ec_cert.pem)
    assert ec_cert.thumbprint("sha1") == openssl_fingerprint(path, "sha1").hex().upper()
    assert ec_cert.thumbprint("x5t#S256") == b64url(openssl_fingerprint(path, "sha256"))


def test_unknown_thumbprint_form_is_a_usage_error(rsa_cert: Certificate) -> None:
    with pytest.raises(InvalidArgumentError, match="x5t#S256"):
        rsa_cert.thumbprint("md5")


# -- files certauth writes, read by openssl -------------------------------------------------------
def test_openssl_reads_the_pfx_without_password(rsa_cert: Certificate, rsa_files: Path) -> None:
    out = openssl(
        "pkcs12", "-in", rsa_files / "plain.pfx", "-nodes", "-passin", "env:NO_PASS",
        env={"NO_PASS": ""},
    )  # fmt: skip
    assert "-----BEGIN PRIVATE KEY-----" in out
    assert rsa_cert.pem.decode() in out
    assert "friendlyName: certauth-test" in out


def test_openssl_reads_the_pfx_with_password(rsa_cert: Certificate, rsa_files: Path) -> None:
    env = {"PFX_PASS": PASSWORD}
    out = openssl(
        "pkcs12", "-in", rsa_files / "secret.pfx", "-nodes", "-passin", "env:PFX_PASS", env=env
    )
    assert "-----BEGIN PRIVATE KEY-----" in out
    assert rsa_cert.pem.decode() in out
    info = openssl(
        "pkcs12", "-in", rsa_files / "secret.pfx", "-info", "-noout", "-passin", "env:PFX_PASS",
        env=env, with_stderr=True,
    )  # fmt: skip
    assert "AES-256-CBC" in info  # what Windows 10 1709+ and OpenSSL 1.1+ read
    assert "MAC: sha256" in info


def test_cryptography_reads_the_pfx(rsa_cert: Certificate, rsa_files: Path) -> None:
    for name, password in (("plain.pfx", None), ("secret.pfx", PASSWORD.encode())):
        loaded = pkcs12.load_pkcs12((rsa_files / name).read_bytes(), password)
        assert loaded.cert is not None
        assert loaded.cert.certificate == rsa_cert.x509
        assert loaded.cert.friendly_name == b"certauth-test"
        assert loaded.key is not None
        assert loaded.key.public_key().public_numbers() == (  # type: ignore[union-attr]
            rsa_cert.x509.public_key().public_numbers()  # type: ignore[union-attr]
        )
    with pytest.raises(ValueError):  # noqa: PT011 - cryptography's own message varies
        pkcs12.load_pkcs12((rsa_files / "secret.pfx").read_bytes(), b"wrong")


def test_openssl_reads_the_key_files(rsa_cert: Certificate, rsa_files: Path) -> None:
    public = rsa_cert.x509.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    plain = openssl("pkey", "-in", rsa_files / "key.pem", "-pubout")
    assert plain.encode() == public
    encrypted = openssl(
        "pkey", "-in", rsa_files / "key-enc.pem", "-pubout", "-passin", "env:KEY_PASS",
        env={"KEY_PASS": PASSWORD},
    )  # fmt: skip
    assert encrypted.encode() == public
    assert (
        (rsa_files / "key-enc.pem")
        .read_bytes()
        .startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    )
    assert (rsa_files / "key.pem").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


# -- loading --------------------------------------------------------------------------------------
def test_load_pem_certificate_alone(rsa_cert: Certificate, rsa_files: Path) -> None:
    loaded = load_certificate(rsa_files / "cert.pem")
    assert loaded == Certificate(rsa_cert.x509)
    assert loaded.has_private_key is False
    assert loaded.key_matches() is None
    assert loaded.source == str(rsa_files / "cert.pem")


def test_load_der_certificate(rsa_cert: Certificate, rsa_files: Path) -> None:
    assert load_certificate(rsa_files / "cert.der").x509 == rsa_cert.x509


@pytest.mark.parametrize("key_first", [True, False])
def test_load_pem_key_and_certificate_in_either_order(
    rsa_cert: Certificate, tmp_path: Path, key_first: bool
) -> None:
    parts = [rsa_cert.private_key_pem(), rsa_cert.pem]
    data = b"".join(parts if key_first else reversed(parts))
    loaded = load_certificate(write(tmp_path / "bundle.pem", data))
    assert loaded.x509 == rsa_cert.x509
    assert loaded.key_matches() is True


def test_load_certificate_with_intermediates(
    rsa_cert: Certificate, other_rsa_cert: Certificate, tmp_path: Path
) -> None:
    issuer_key = other_rsa_cert.require_private_key()
    assert isinstance(issuer_key, rsa.RSAPrivateKey)
    leaf_key = rsa_cert.require_private_key()
    assert isinstance(leaf_key, rsa.RSAPrivateKey)
    intermediate = self_signed(issuer_key, "CN=intermediate", ca=True)
    leaf = self_signed(leaf_key, "CN=leaf", issuer_key=issuer_key, issuer="CN=intermediate")
    # The intermediate first: the key decides which certificate is the leaf.
    data = cert_pem(intermediate) + key_pem(leaf_key) + cert_pem(leaf)
    loaded = load_certificate(write(tmp_path / "chain.pem", data))
    assert loaded.x509 == leaf
    assert loaded.chain == (intermediate,)
    # Without a key the first certificate is the leaf.
    loaded = load_certificate(cert_pem(leaf) + cert_pem(intermediate))
    assert loaded.x509 == leaf
    assert loaded.chain == (intermediate,)


def test_load_pfx_with_and_without_password(rsa_cert: Certificate, rsa_files: Path) -> None:
    plain = load_certificate(rsa_files / "plain.pfx")
    assert plain.x509 == rsa_cert.x509
    assert plain.key_matches() is True
    secret = load_certificate(rsa_files / "secret.pfx", password=PASSWORD)
    assert secret.x509 == rsa_cert.x509
    assert secret.key_matches() is True
    with pytest.raises(PasswordError, match="password-protected"):
        load_certificate(rsa_files / "secret.pfx")
    with pytest.raises(PasswordError, match="wrong password"):
        load_certificate(rsa_files / "secret.pfx", password="wrong")


def test_load_encrypted_pkcs8_key(rsa_cert: Certificate, rsa_files: Path) -> None:
    loaded = load_certificate(
        rsa_files / "cert.pem", key=rsa_files / "key-enc.pem", password=PASSWORD.encode()
    )
    assert loaded.key_matches() is True
    with pytest.raises(PasswordError, match="no password was given"):
        load_certificate(rsa_files / "cert.pem", key=rsa_files / "key-enc.pem")
    with pytest.raises(PasswordError, match="wrong password"):
        load_certificate(rsa_files / "cert.pem", key=rsa_files / "key-enc.pem", password="no")


@pytest.mark.parametrize("password", [None, b"s3cret"])
def test_load_traditional_rsa_key(
    rsa_cert: Certificate, tmp_path: Path, password: bytes | None
) -> None:
    key = rsa_cert.require_private_key()
    assert isinstance(key, rsa.RSAPrivateKey)
    data = key_pem(key, password=password, traditional=True)
    assert data.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    loaded = load_certificate(
        rsa_cert.pem, key=write(tmp_path / "rsa.key", data), password=password
    )
    assert loaded.key_matches() is True


def test_load_der_key_and_encrypted_der_key(rsa_cert: Certificate, tmp_path: Path) -> None:
    key = rsa_cert.require_private_key()
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    assert load_certificate(rsa_cert.pem, key=der).key_matches() is True
    encrypted = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    assert load_certificate(rsa_cert.pem, key=encrypted, password="pw").key_matches() is True
    with pytest.raises(PasswordError, match="no password"):
        load_certificate(rsa_cert.pem, key=encrypted)


def test_separate_key_replaces_the_one_in_the_file(
    rsa_cert: Certificate, other_rsa_cert: Certificate
) -> None:
    # An encrypted key next to the certificate is not decrypted when --key is given.
    bundle = rsa_cert.private_key_pem("other password") + rsa_cert.pem
    loaded = load_certificate(bundle, key=rsa_cert.private_key_pem())
    assert loaded.key_matches() is True
    with pytest.raises(KeyMismatchError, match="does not belong"):
        load_certificate(rsa_cert.pem, key=other_rsa_cert.private_key_pem())


def test_key_that_does_not_match_is_refused(
    rsa_cert: Certificate, other_rsa_cert: Certificate, ec_cert: Certificate
) -> None:
    with pytest.raises(KeyMismatchError, match=rsa_cert.thumbprint_sha1):
        load_certificate(other_rsa_cert.private_key_pem() + rsa_cert.pem)
    with pytest.raises(KeyMismatchError, match="does not belong to the certificate") as caught:
        load_certificate(rsa_cert.pem, key=ec_cert.private_key_pem())
    assert caught.value.path == "<private key data>"
    assert caught.value.exit_code == 3


def test_reading_only_the_certificate_needs_no_password(rsa_cert: Certificate) -> None:
    bundle = rsa_cert.private_key_pem(PASSWORD) + rsa_cert.pem
    loaded = load_certificate(bundle, load_key=False)
    assert loaded.x509 == rsa_cert.x509
    assert loaded.private_key is None
    with pytest.raises(PasswordError, match="encrypted and no password was given") as caught:
        load_certificate(bundle)
    assert caught.value.path == "<certificate data>"


def test_require_key(rsa_cert: Certificate) -> None:
    with pytest.raises(CertificateError, match="key_path="):
        load_certificate(rsa_cert.pem, require_key=True)
    assert load_certificate(rsa_cert.pem, require_key=False).private_key is None


def test_private_key_where_a_certificate_is_expected(rsa_cert: Certificate) -> None:
    encrypted_der = rsa_cert.require_private_key().private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    # Named as a key, not reported as a missing password.
    for data in (rsa_cert.private_key_pem(), rsa_cert.private_key_pem(PASSWORD), encrypted_der):
        with pytest.raises(CertificateError, match="private key but no certificate"):
            load_certificate(data)


def test_ed25519_is_an_unsupported_key_type(tmp_path: Path, rsa_cert: Certificate) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    cert = self_signed(key, "CN=ed")
    with pytest.raises(UnsupportedKeyError, match="Ed25519"):
        load_certificate(cert_pem(cert))
    with pytest.raises(UnsupportedKeyError, match="Ed25519"):
        load_certificate(key_pem(key) + cert_pem(cert))
    with pytest.raises(UnsupportedKeyError, match="Ed25519"):
        load_certificate(rsa_cert.pem, key=key_pem(key))


def test_other_pem_content_is_named(rsa_cert: Certificate) -> None:
    public = rsa_cert.x509.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(CertificateError, match="found: PUBLIC KEY"):
        load_certificate(public)
    with pytest.raises(CertificateError, match="truncated"):
        load_certificate(rsa_cert.pem[:-30])


def test_loaded_key_signs_what_the_certificate_verifies(rsa_files: Path) -> None:
    loaded = load_certificate(rsa_files / "plain.pfx")
    key = loaded.require_private_key()
    assert isinstance(key, rsa.RSAPrivateKey)
    signature = key.sign(b"data", padding.PKCS1v15(), hashes.SHA256())
    public = loaded.public_key
    assert isinstance(public, rsa.RSAPublicKey)
    public.verify(signature, b"data", padding.PKCS1v15(), hashes.SHA256())


def test_ec_key_loads_and_matches(ec_cert: Certificate) -> None:
    loaded = load_certificate(ec_cert.private_key_pem() + ec_cert.pem)
    assert isinstance(loaded.private_key, ec.EllipticCurvePrivateKey)
    assert loaded.key_matches() is True


# -- validity and keyCredential -------------------------------------------------------------------


def test_days_left_and_validity_problem() -> None:
    now = dt.datetime(2030, 6, 1, tzinfo=UTC)
    cert = generate_certificate("CN=v", days=10, key_type="ec-p256", now=now)
    assert cert.validity_problem(now) is None
    assert cert.days_left(now) == pytest.approx(10)
    later = now + dt.timedelta(days=11)
    assert "expired" in (cert.validity_problem(later) or "")
    assert cert.days_left(later) < 0
    earlier = now - dt.timedelta(days=1)
    assert "not yet valid" in (cert.validity_problem(earlier) or "")


def test_key_credential_is_the_graph_object(rsa_cert: Certificate) -> None:
    credential = rsa_cert.key_credential()
    assert credential["type"] == "AsymmetricX509Cert"
    assert credential["usage"] == "Verify"
    assert x509.load_der_x509_certificate(base64.b64decode(credential["key"])) == rsa_cert.x509
    assert base64.b64decode(credential["customKeyIdentifier"]).hex().upper() == (
        rsa_cert.thumbprint_sha1
    )
    assert credential["displayName"] == "CN=certauth-test"
    start = dt.datetime.fromisoformat(credential["startDateTime"].replace("Z", "+00:00"))
    end = dt.datetime.fromisoformat(credential["endDateTime"].replace("Z", "+00:00"))
    assert start == rsa_cert.not_before
    assert end == rsa_cert.not_after
    assert len(credential["keyId"]) == 36
    assert rsa_cert.key_credential(key_id="k")["keyId"] == "k"
    assert rsa_cert.key_credential(display_name="x" * 90)["displayName"] == "x" * 90
    with pytest.raises(InvalidArgumentError, match="90"):
        rsa_cert.key_credential(display_name="x" * 91)


# -- writing files --------------------------------------------------------------------------------
@pytest.fixture
def umask_000() -> object:
    """Run the test with umask 000: certauth's modes must not depend on the umask."""
    previous = os.umask(0)
    yield
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("umask_000")
def test_modes_do_not_depend_on_the_umask(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    assert ensure_private_dir(out) == tmp_path / "a"
    write_files_atomically(
        [OutputFile(out / "x.crt", b"public"), OutputFile(out / "x.key", b"secret", secret=True)]
    )
    assert _mode(out / "x.key") == 0o600
    assert _mode(out / "x.crt") == 0o644
    assert _mode(out) == 0o700
    assert _mode(tmp_path / "a") == 0o700
    assert ensure_private_dir(out) is None  # exists: left alone


def test_no_overwrite_without_force(tmp_path: Path) -> None:
    target = write(tmp_path / "x.key", b"old")
    with pytest.raises(OutputExistsError, match="--force"):
        write_files_atomically([OutputFile(tmp_path / "new.crt", b"n"), OutputFile(target, b"s")])
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.key"]
    write_files_atomically([OutputFile(target, b"new", secret=True)], force=True)
    assert target.read_bytes() == b"new"
    assert _mode(target) == 0o600


def test_a_symlink_is_never_followed(tmp_path: Path) -> None:
    victim = write(tmp_path / "victim", b"precious")
    link = tmp_path / "x.key"
    link.symlink_to(victim)
    with pytest.raises(OutputExistsError, match="symbolic link"):
        write_files_atomically([OutputFile(link, b"secret", secret=True)])
    write_files_atomically([OutputFile(link, b"secret", secret=True)], force=True)
    assert not link.is_symlink()
    assert link.read_bytes() == b"secret"
    assert victim.read_bytes() == b"precious"


def test_a_failure_midway_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    existing = write(tmp_path / "b.crt", b"old b")
    before = listing(tmp_path)
    real_install = _files._install
    calls = []

    def failing_install(temp: str, target: Path, *, force: bool) -> str | None:
        calls.append(target)
        if len(calls) == 3:
            raise OSError(28, "No space left on device", str(target))
        return real_install(temp, target, force=force)

    monkeypatch.setattr(_files, "_install", failing_install)
    files = [
        OutputFile(tmp_path / "a.key", b"a", secret=True),
        OutputFile(existing, b"new b"),
        OutputFile(tmp_path / "c.pfx", b"c", secret=True),
    ]
    with pytest.raises(LocalInputError, match="No space left"):
        write_files_atomically(files, force=True)
    # a.key removed again, b.crt restored, no temporary or backup file left.
    assert listing(tmp_path) == before


def test_a_write_failure_removes_the_temporary_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = _files._write_temp
    calls = []

    def failing_write(item: OutputFile) -> str:
        calls.append(item)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_write(item)

    monkeypatch.setattr(_files, "_write_temp", failing_write)
    with pytest.raises(LocalInputError, match=r"x\.key: cannot write"):
        write_files_atomically(
            [OutputFile(tmp_path / "x.crt", b"c"), OutputFile(tmp_path / "x.key", b"k")]
        )
    assert list(tmp_path.iterdir()) == []


def test_output_directory_under_a_regular_file(tmp_path: Path) -> None:
    blocker = write(tmp_path / "file", b"")
    with pytest.raises(LocalInputError, match="not a directory"):
        ensure_private_dir(blocker / "sub" / "dir")
    with pytest.raises(LocalInputError, match="not a directory"):
        ensure_private_dir(blocker)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


# -- repository hygiene ---------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
#: A PEM private key with real content (a few base64 lines), not a mention of the label.
_REAL_PRIVATE_KEY = re.compile(
    rb"-----BEGIN [A-Z ]*PRIVATE KEY-----\r?\n(?:[A-Za-z0-9+/=:, -]*\r?\n)*[A-Za-z0-9+/=]{60,}"
)


def _git(*args: str) -> subprocess.CompletedProcess[bytes]:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, check=False)


@pytest.mark.parametrize(
    ("name", "ignored"),
    [
        ("billing-api.key", True),
        ("billing-api.pem", True),
        ("billing-api.pfx", True),
        ("billing-api.p12", True),
        ("billing-api.pass", True),
        ("billing-api.crt", True),
        ("README.md", False),
        (".gitignore", False),
    ],
)
def test_certs_example_keeps_keys_out_of_git(name: str, ignored: bool) -> None:
    result = _git("check-ignore", "-q", f"certs.example/{name}")
    assert result.returncode == (0 if ignored else 1), result.stderr


def test_no_private_key_is_committed_anywhere() -> None:
    # Every file git would commit: tracked ones and new ones that are not ignored.
    result = _git("ls-files", "-z", "--cached", "--others", "--exclude-standard")
    assert result.returncode == 0, result.stderr
    offenders = []
    for name in result.stdout.decode().split("\0"):
        path = REPO / name
        if not name or not path.is_file():
            continue
        key_file = path.suffix.lower() in {".key", ".pfx", ".p12"}
        if key_file or _REAL_PRIVATE_KEY.search(path.read_bytes()):
            offenders.append(name)
    assert offenders == [], f"private keys in the repository: {offenders}"
