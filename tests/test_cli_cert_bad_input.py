"""The bad-input sweep for ``certauth cert ...`` (issue 2, "Bad input"), one test per case.

Every case must end the same way: exactly one line on stderr that names the file (or option)
and says what to do, the documented exit code (3 for bad local input, 2 for usage), no
traceback, nothing on stdout, and the directory exactly as it was (no partial or temporary
file left behind).

"An output path in a read-only directory": the tests run as root, for whom chmod 0500 stops
nothing. Two places refuse even root, reliably: a path *under a regular file* (the kernel
answers ENOTDIR before any permission check) and ``/proc/self`` (procfs does not let anyone
create files; ENOENT). Both are used below; a third test injects ENOSPC in the middle of
writing to check the all-or-nothing rollback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _cert_helpers import (
    CliResult,
    assert_one_line_error,
    cert_pem,
    key_pem,
    listing,
    run_cli,
    self_signed,
    write,
)
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from certauth import _files
from certauth.certificates import Certificate

PASSWORD = "hunter2 but longer"
Capsys = pytest.CaptureFixture[str]

#: The read-only commands; each must reject bad input to the same standard.
READERS = [
    pytest.param(["cert", "show"], id="show"),
    pytest.param(["cert", "thumbprint"], id="thumbprint"),
    pytest.param(["cert", "check"], id="check"),
    pytest.param(["cert", "manifest"], id="manifest"),
]


@pytest.fixture(autouse=True)
def _no_ambient_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_CLIENT_CERTIFICATE_PASSWORD", raising=False)


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The current directory for the test (a fresh temporary one)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def unchanged(work: Path) -> Iterator[None]:
    """Fail the test if the working directory changed (new, removed or altered entries)."""
    before = listing(work)
    yield
    assert listing(work) == before, "a failing command left something behind"


@pytest.fixture
def cli(capsys: Capsys) -> Callable[..., CliResult]:
    """``cli(*args)`` runs certauth in-process and returns what it printed."""
    return lambda *args: run_cli(capsys, *args)


@pytest.fixture(scope="module")
def ed25519_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An Ed25519 key and certificate (a key type certauth does not sign with)."""
    directory = tmp_path_factory.mktemp("ed25519")
    key = ed25519.Ed25519PrivateKey.generate()
    write(directory / "ed.key", key_pem(key))
    write(directory / "ed.crt", cert_pem(self_signed(key, "CN=ed")))
    return directory


def _prepare(work: Path, rsa_cert: Certificate) -> None:
    write(work / "app.crt", rsa_cert.pem)
    write(work / "app.key", rsa_cert.private_key_pem())


# -- input files: the read commands ---------------------------------------------------------------


@pytest.mark.parametrize("command", READERS)
@pytest.mark.usefixtures("unchanged")
def test_missing_file(cli: Callable[..., CliResult], command: list[str]) -> None:
    assert_one_line_error(cli(*command, "nope.crt"), 3, "nope.crt", "no such file", "check")


@pytest.mark.parametrize("command", READERS)
def test_directory_instead_of_file(
    cli: Callable[..., CliResult], work: Path, command: list[str]
) -> None:
    (work / "certs").mkdir()
    before = listing(work)
    assert_one_line_error(cli(*command, "certs"), 3, "certs", "is a directory", "name the file")
    assert listing(work) == before


@pytest.mark.parametrize("command", READERS)
def test_empty_file(cli: Callable[..., CliResult], work: Path, command: list[str]) -> None:
    write(work / "empty.crt", b"")
    assert_one_line_error(cli(*command, "empty.crt"), 3, "empty.crt", "empty")


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(os.urandom(600), id="random-bytes"),
        pytest.param(b"hello, this is not a certificate\n", id="text"),
        pytest.param(b"\x30\x82\x01\x00\x02\x01\x03" + b"\x00" * 300, id="pfx-lookalike"),
        pytest.param(b"-----BEGIN CERTIFICATE-----\nAAAA\n", id="truncated-pem"),
        pytest.param(
            b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
            id="corrupt-pem-block",
        ),
    ],
)
@pytest.mark.parametrize("command", READERS)
def test_garbage(
    cli: Callable[..., CliResult], work: Path, command: list[str], garbage: bytes
) -> None:
    write(work / "junk.crt", garbage)
    line = assert_one_line_error(cli(*command, "junk.crt"), 3, "junk.crt")
    assert any(word in line for word in ("certificate", "PFX", "PEM", "truncated"))


@pytest.mark.parametrize(
    "form", ["pkcs8", "pkcs8-encrypted", "traditional", "der", "der-encrypted"]
)
@pytest.mark.parametrize("command", READERS)
def test_private_key_where_a_certificate_is_expected(
    cli: Callable[..., CliResult],
    work: Path,
    rsa_cert: Certificate,
    command: list[str],
    form: str,
) -> None:
    key = rsa_cert.require_private_key()
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(b"pw")
        if form.endswith("encrypted")
        else serialization.NoEncryption()
    )
    encoding = serialization.Encoding.DER if form.startswith("der") else serialization.Encoding.PEM
    private_format = (
        serialization.PrivateFormat.TraditionalOpenSSL
        if form == "traditional"
        else serialization.PrivateFormat.PKCS8
    )
    write(work / "app.key", key.private_bytes(encoding, private_format, encryption))
    # Named as a key in the wrong place, not as a password problem.
    assert_one_line_error(
        cli(*command, "app.key"), 3, "app.key", "private key but no certificate", "--key"
    )


@pytest.mark.parametrize("command", READERS)
def test_pfx_with_wrong_password(
    cli: Callable[..., CliResult],
    work: Path,
    rsa_cert: Certificate,
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
) -> None:
    write(work / "app.pfx", rsa_cert.to_pfx(PASSWORD))
    monkeypatch.setenv("PFX_PASSWORD", "not the password")
    result = cli(*command, "app.pfx", "--password-env", "PFX_PASSWORD")
    assert_one_line_error(result, 3, "app.pfx", "wrong password", "check the password")
    assert "not the password" not in result.err


@pytest.mark.parametrize("command", READERS)
def test_pfx_with_missing_password(
    cli: Callable[..., CliResult], work: Path, rsa_cert: Certificate, command: list[str]
) -> None:
    write(work / "app.pfx", rsa_cert.to_pfx(PASSWORD))
    assert_one_line_error(
        cli(*command, "app.pfx"), 3, "app.pfx", "password", "--password-env", "--password-file"
    )


def test_encrypted_key_without_password(
    cli: Callable[..., CliResult], work: Path, rsa_cert: Certificate
) -> None:
    write(work / "app.crt", rsa_cert.pem)
    write(work / "app.key", rsa_cert.private_key_pem(PASSWORD))
    assert_one_line_error(
        cli("cert", "show", "app.crt", "--key", "app.key"),
        3,
        "app.key",
        "encrypted and no password",
        "--password-env",
    )


def test_encrypted_key_with_wrong_password(
    cli: Callable[..., CliResult],
    work: Path,
    rsa_cert: Certificate,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write(work / "app.crt", rsa_cert.pem)
    write(work / "app.key", rsa_cert.private_key_pem(PASSWORD))
    monkeypatch.setenv("AZURE_CLIENT_CERTIFICATE_PASSWORD", "wrong")
    assert_one_line_error(
        cli("cert", "show", "app.crt", "--key", "app.key"), 3, "app.key", "wrong password"
    )


def test_key_that_does_not_match_the_certificate(
    cli: Callable[..., CliResult],
    work: Path,
    rsa_cert: Certificate,
    other_rsa_cert: Certificate,
) -> None:
    write(work / "app.crt", rsa_cert.pem)
    write(work / "other.key", other_rsa_cert.private_key_pem())
    assert_one_line_error(
        cli("cert", "show", "app.crt", "--key", "other.key"),
        3,
        "app.crt",
        "other.key",
        "does not belong",
        "pair each certificate",
    )


def test_bundle_whose_key_does_not_match(
    cli: Callable[..., CliResult],
    work: Path,
    rsa_cert: Certificate,
    other_rsa_cert: Certificate,
) -> None:
    write(work / "bundle.pem", other_rsa_cert.private_key_pem() + rsa_cert.pem)
    assert_one_line_error(cli("cert", "show", "bundle.pem"), 3, "bundle.pem", "does not belong")


def test_certificate_given_as_the_key(
    cli: Callable[..., CliResult], work: Path, rsa_cert: Certificate
) -> None:
    _prepare(work, rsa_cert)
    assert_one_line_error(
        cli("cert", "show", "app.crt", "--key", "app.crt"), 3, "app.crt", "no private key"
    )


@pytest.mark.parametrize("command", READERS)
def test_unknown_key_type_certificate(
    cli: Callable[..., CliResult], ed25519_files: Path, command: list[str]
) -> None:
    path = str(ed25519_files / "ed.crt")
    assert_one_line_error(cli(*command, path), 3, path, "Ed25519", "not supported", "RSA")


def test_unknown_key_type_key(
    cli: Callable[..., CliResult], work: Path, rsa_cert: Certificate, ed25519_files: Path
) -> None:
    write(work / "app.crt", rsa_cert.pem)
    key = str(ed25519_files / "ed.key")
    assert_one_line_error(cli("cert", "show", "app.crt", "--key", key), 3, key, "Ed25519", "RSA")


def test_unsupported_pem_key_format(
    cli: Callable[..., CliResult], work: Path, rsa_cert: Certificate
) -> None:
    write(work / "app.crt", rsa_cert.pem)
    write(
        work / "id_rsa",
        b"-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
    )
    assert_one_line_error(
        cli("cert", "show", "app.crt", "--key", "id_rsa"), 3, "id_rsa", "OPENSSH", "PKCS#8"
    )


# -- password sources -----------------------------------------------------------------------------


@pytest.fixture
def encrypted_bundle(work: Path, rsa_cert: Certificate) -> str:
    """An encrypted key + certificate PEM in the working directory."""
    write(work / "app.pem", rsa_cert.private_key_pem(PASSWORD) + rsa_cert.pem)
    return "app.pem"


@pytest.mark.usefixtures("encrypted_bundle")
def test_password_env_naming_an_unset_variable(cli: Callable[..., CliResult]) -> None:
    assert_one_line_error(
        cli("cert", "show", "app.pem", "--password-env", "NO_SUCH_VARIABLE_HERE"),
        3,
        "NO_SUCH_VARIABLE_HERE",
        "not set",
        "export it",
    )


@pytest.mark.usefixtures("encrypted_bundle")
def test_password_env_naming_an_empty_variable(
    cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMPTY_PASSWORD", "")
    assert_one_line_error(
        cli("cert", "show", "app.pem", "--password-env", "EMPTY_PASSWORD"),
        3,
        "EMPTY_PASSWORD",
        "empty",
    )


@pytest.mark.usefixtures("encrypted_bundle")
def test_password_file_missing(cli: Callable[..., CliResult]) -> None:
    assert_one_line_error(
        cli("cert", "show", "app.pem", "--password-file", "pw.txt"),
        3,
        "pw.txt",
        "no such file",
        "password",
    )


@pytest.mark.parametrize("content", [b"", b"\n", b"\nsecret on line two\n"])
@pytest.mark.usefixtures("encrypted_bundle")
def test_password_file_empty(cli: Callable[..., CliResult], work: Path, content: bytes) -> None:
    write(work / "pw.txt", content)
    assert_one_line_error(
        cli("cert", "show", "app.pem", "--password-file", "pw.txt"), 3, "pw.txt", "empty"
    )


@pytest.mark.parametrize("content", [b"\xff\xfe\x00\x01binary", b"pass\x00word\n"])
@pytest.mark.usefixtures("encrypted_bundle")
def test_password_file_binary(cli: Callable[..., CliResult], work: Path, content: bytes) -> None:
    write(work / "pw.bin", content)
    assert_one_line_error(
        cli("cert", "show", "app.pem", "--password-file", "pw.bin"),
        3,
        "pw.bin",
        "put the password as text",
    )


@pytest.mark.usefixtures("encrypted_bundle")
def test_password_file_is_a_directory(cli: Callable[..., CliResult], work: Path) -> None:
    (work / "pwdir").mkdir()
    assert_one_line_error(
        cli("cert", "show", "app.pem", "--password-file", "pwdir"), 3, "pwdir", "directory"
    )


@pytest.mark.usefixtures("encrypted_bundle")
def test_both_password_sources_is_a_usage_error(
    cli: Callable[..., CliResult], work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PW", PASSWORD)
    write(work / "pw.txt", PASSWORD.encode())
    result = cli("cert", "show", "app.pem", "--password-env", "PW", "--password-file", "pw.txt")
    assert_one_line_error(result, 2, "--password-env", "--password-file")
    assert PASSWORD not in result.err


@pytest.mark.usefixtures("unchanged")
def test_create_with_unset_password_variable_writes_nothing(
    cli: Callable[..., CliResult],
) -> None:
    assert_one_line_error(
        cli("cert", "create", "--subject", "CN=x", "--out", "out", "--password-env", "UNSET_PW"),
        3,
        "UNSET_PW",
        "not set",
    )


def test_create_with_empty_password_file_writes_nothing(
    cli: Callable[..., CliResult], work: Path
) -> None:
    write(work / "pw.txt", b"\n")
    before = listing(work)
    assert_one_line_error(
        cli("cert", "create", "--subject", "CN=x", "--out", "out", "--password-file", "pw.txt"),
        3,
        "pw.txt",
        "empty",
    )
    assert listing(work) == before


# -- create: usage errors (exit 2) ----------------------------------------------------------------


@pytest.mark.parametrize(
    "subject", ["billing-api", "CN=", "NOPE=x", "C=USA", "CN=a,,", "CN=" + "x" * 65, " "]
)
@pytest.mark.usefixtures("unchanged")
def test_subject_that_does_not_parse(cli: Callable[..., CliResult], subject: str) -> None:
    assert_one_line_error(
        cli("cert", "create", "--subject", subject, "--out", "out"), 2, "subject", "CN="
    )


@pytest.mark.parametrize("days", ["0", "-5", "3651"])
@pytest.mark.usefixtures("unchanged")
def test_days_out_of_range(cli: Callable[..., CliResult], days: str) -> None:
    assert_one_line_error(
        cli("cert", "create", "--subject", "CN=x", "--days", days, "--out", "out"), 2, "--days"
    )


@pytest.mark.parametrize("name", ["a/b", "../x", "..", "."])
@pytest.mark.usefixtures("unchanged")
def test_name_must_be_a_file_name(cli: Callable[..., CliResult], name: str) -> None:
    assert_one_line_error(
        cli("cert", "create", "--subject", "CN=x", "--name", name, "--out", "out"),
        2,
        "--name",
        "--out",
    )


def test_display_name_too_long(
    cli: Callable[..., CliResult], work: Path, rsa_cert: Certificate
) -> None:
    write(work / "app.crt", rsa_cert.pem)
    assert_one_line_error(
        cli("cert", "manifest", "app.crt", "--display-name", "d" * 91), 2, "display name", "90"
    )


# -- create: where it writes ----------------------------------------------------------------------


def test_output_directory_under_a_regular_file(cli: Callable[..., CliResult], work: Path) -> None:
    write(work / "blocker", b"a regular file")
    before = listing(work)
    assert_one_line_error(
        cli("cert", "create", "--subject", "CN=x", "--out", "blocker/certs"),
        3,
        "blocker",
        "not a directory",
        "choose another --out",
    )
    assert listing(work) == before


def test_output_directory_is_a_regular_file(cli: Callable[..., CliResult], work: Path) -> None:
    write(work / "certs", b"a regular file")
    before = listing(work)
    assert_one_line_error(
        cli("cert", "create", "--subject", "CN=x", "--out", "certs"),
        3,
        "certs",
        "not a directory",
        "choose another --out",
    )
    assert listing(work) == before


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux procfs")
def test_output_directory_where_nobody_may_create_files(
    cli: Callable[..., CliResult], work: Path
) -> None:
    # procfs refuses file creation even to root (unlike a chmod 0500 directory).
    before = listing(work)
    assert_one_line_error(
        cli("cert", "create", "--subject", "CN=x", "--out", "/proc/self"),
        3,
        "/proc/self/x.",
        "cannot write",
        "writable directory",
    )
    assert listing(work) == before


def test_failure_while_writing_leaves_nothing(
    cli: Callable[..., CliResult], work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = listing(work)
    real_install = _files._install

    def install_then_fail(temp: str, target: Path, *, force: bool) -> str | None:
        if target.suffix == ".key":  # after the .crt went into place
            raise OSError(28, "No space left on device", str(target))
        return real_install(temp, target, force=force)

    monkeypatch.setattr(_files, "_install", install_then_fail)
    assert_one_line_error(
        cli("cert", "create", "--subject", "CN=x", "--out", "new/certs"),
        3,
        "x.key",
        "No space left",
        "nothing was written",
    )
    # The .crt already renamed into place is gone again, and so is the directory made for it.
    assert listing(work) == before


def test_existing_output_without_force(
    cli: Callable[..., CliResult], work: Path, rsa_cert: Certificate
) -> None:
    _prepare(work, rsa_cert)
    before = listing(work)
    assert_one_line_error(
        cli("cert", "create", "--subject", "CN=app", "--out", "."),
        3,
        "app.crt",
        "already exists",
        "--force",
    )
    assert listing(work) == before
    # Only one of the outputs exists: still nothing is written.
    (work / "app.crt").unlink()
    before = listing(work)
    assert_one_line_error(cli("cert", "create", "--subject", "CN=app"), 3, "app.key", "--force")
    assert listing(work) == before


def test_existing_output_with_force_is_replaced(
    cli: Callable[..., CliResult], work: Path, rsa_cert: Certificate
) -> None:
    _prepare(work, rsa_cert)
    result = cli("cert", "create", "--subject", "CN=app", "--force")
    assert result.code == 0, result.err
    assert (work / "app.crt").read_bytes() != rsa_cert.pem
    assert sorted(p.name for p in work.iterdir()) == ["app.crt", "app.key"]


def test_symlink_at_the_key_path_is_refused_without_force(
    cli: Callable[..., CliResult], work: Path
) -> None:
    victim = write(work / "victim.txt", b"do not overwrite me")
    (work / "app.key").symlink_to("victim.txt")
    before = listing(work)
    assert_one_line_error(
        cli("cert", "create", "--subject", "CN=app"), 3, "app.key", "symbolic link", "--force"
    )
    assert listing(work) == before
    # --force replaces the link itself; the file it pointed to is untouched.
    assert cli("cert", "create", "--subject", "CN=app", "--force").code == 0
    assert not (work / "app.key").is_symlink()
    assert (work / "app.key").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert victim.read_bytes() == b"do not overwrite me"


def test_dangling_symlink_at_the_certificate_path_is_refused(
    cli: Callable[..., CliResult], work: Path
) -> None:
    (work / "app.crt").symlink_to("/nonexistent/elsewhere")
    before = listing(work)
    assert_one_line_error(cli("cert", "create", "--subject", "CN=app"), 3, "app.crt", "symbolic")
    assert listing(work) == before


# -- through the real console script --------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["cert", "show", "missing.crt"], 3),
        (["cert", "thumbprint", "."], 3),
        (["cert", "create", "--subject", "no equals sign"], 2),
    ],
)
def test_console_script_prints_one_line_and_no_traceback(
    work: Path, args: list[str], code: int
) -> None:
    script = Path(sys.executable).with_name("certauth")
    proc = subprocess.run(
        [str(script), *args], capture_output=True, text=True, check=False, cwd=work
    )
    assert proc.returncode == code
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert list(work.iterdir()) == []
