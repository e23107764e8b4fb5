"""Helpers shared by the certificate tests: odd certificates, the CLI in-process, openssl.

Not a test module (the leading underscore keeps pytest from collecting it); the test modules
import it by name, which works because pytest puts ``tests/`` on ``sys.path``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.x509.oid import NameOID

from certauth.cli.main import main

UTC = dt.timezone.utc

#: Private keys of every flavour certauth may sign with (what ``self_signed`` accepts).
SigningKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def self_signed(
    key: SigningKey,
    subject: str = "CN=certauth-helper",
    *,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    issuer_key: SigningKey | None = None,
    issuer: str | None = None,
    ca: bool = False,
) -> x509.Certificate:
    """A certificate for ``key`` built with cryptography directly (not with certauth).

    With ``issuer_key``/``issuer`` it is signed by another key (for chains); the validity
    defaults to one hour ago until thirty days ahead.
    """
    now = dt.datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject.removeprefix("CN="))])
    issuer_name = (
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer.removeprefix("CN="))])
        if issuer
        else name
    )
    signer = issuer_key or key
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(hours=1))
        .not_valid_after(not_after or now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    algorithm = None if isinstance(signer, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(signer, algorithm)


def cert_pem(cert: x509.Certificate) -> bytes:
    """The certificate as PEM."""
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(
    key: SigningKey,
    *,
    password: bytes | None = None,
    traditional: bool = False,
) -> bytes:
    """A private key as PEM: PKCS#8 (``BEGIN PRIVATE KEY``) or traditional (``BEGIN RSA ...``)."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    form = (
        serialization.PrivateFormat.TraditionalOpenSSL
        if traditional
        else serialization.PrivateFormat.PKCS8
    )
    return key.private_bytes(serialization.Encoding.PEM, form, encryption)


def write(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` and return the path."""
    path.write_bytes(data)
    return path


# -- the CLI, in-process -------------------------------------------------------------------------


@dataclass(frozen=True)
class CliResult:
    """What one ``certauth`` run printed and returned."""

    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        """The non-empty lines on stderr."""
        return [line for line in self.err.splitlines() if line.strip()]


def run_cli(capsys: pytest.CaptureFixture[str], *args: str | os.PathLike[str]) -> CliResult:
    """Run ``certauth ARGS`` in this process (fast) and capture what it printed."""
    capsys.readouterr()  # drop anything printed before
    code = main([os.fspath(arg) for arg in args])
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)


def assert_one_line_error(result: CliResult, code: int, *fragments: str) -> str:
    """The run failed with ``code`` and exactly one stderr line holding every fragment.

    Returns the line. Also: no traceback anywhere and nothing on stdout (scripts parse it).
    """
    assert result.code == code, (result.code, result.err)
    assert "Traceback" not in result.out + result.err
    assert len(result.err_lines) == 1, result.err
    line = result.err_lines[0]
    assert line.startswith("certauth: error: "), line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    assert result.out == "", result.out
    return line


def listing(directory: Path) -> dict[str, tuple[int, str]]:
    """Every entry under ``directory`` (hidden ones too) with its mode and content digest."""
    entries: dict[str, tuple[int, str]] = {}
    for path in sorted(directory.rglob("*")):
        stat = path.lstat()
        digest = ""
        if path.is_file() and not path.is_symlink():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        elif path.is_symlink():
            digest = "-> " + os.readlink(path)
        entries[str(path.relative_to(directory))] = (stat.st_mode, digest)
    return entries


# -- openssl, the independent witness --------------------------------------------------------------


def openssl(
    *args: str | os.PathLike[str],
    env: dict[str, str] | None = None,
    with_stderr: bool = False,
) -> str:
    """Run the real ``openssl`` binary and return its stdout; fail the test on a non-zero exit.

    Passwords go through ``env`` and ``-passin env:VAR``, never through argv. ``with_stderr``
    appends stderr (where ``pkcs12 -info`` writes its report).
    """
    binary = shutil.which("openssl")
    if binary is None:
        pytest.fail("the openssl binary is missing; ./scripts/test installs it")
    proc = subprocess.run(
        [binary, *(os.fspath(arg) for arg in args)],
        capture_output=True,
        env={**os.environ, **(env or {})},
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout.decode() + (proc.stderr.decode() if with_stderr else "")


def openssl_fingerprint(cert_file: Path, digest: str) -> bytes:
    """The raw digest ``openssl x509 -fingerprint -DIGEST`` prints for ``cert_file``."""
    text = openssl("x509", "-in", cert_file, "-noout", "-fingerprint", f"-{digest}")
    # "sha1 Fingerprint=AB:CD:..." (the prefix's case differs between OpenSSL versions)
    hex_part = text.strip().split("=", 1)[1]
    return bytes.fromhex(hex_part.replace(":", ""))


def b64url(data: bytes) -> str:
    """base64url without padding, computed independently of certauth."""
    return base64.urlsafe_b64encode(data).decode().rstrip("=")
