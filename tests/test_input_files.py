"""Local input files that are not certificates: one first-line rule, one error type.

``read_first_line`` is how ``--password-file``, ``--client-secret-file`` and the emulator
configuration's secret files are read; every refused password, secret, federated token, JWKS or
emulator configuration file raises ``InputFileError`` (exit 3), while certificate and key files
keep raising ``CertificateError``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from certauth._files import read_first_line
from certauth.certificates import Certificate, load_certificate
from certauth.cli.main import main
from certauth.credential import WorkloadIdentityCredential
from certauth.emulator import Emulator, load_config
from certauth.errors import (
    CertificateError,
    ConfigurationError,
    InputFileError,
    LocalInputError,
)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# -- the first-line rule ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"hunter2\n", "hunter2"),
        (b"hunter2", "hunter2"),
        (b"hunter2\r\nsecond line ignored\n", "hunter2"),
        (b"hunter2\rold Mac line ending\r", "hunter2"),
        # Only the line ending is removed: spaces and tabs belong to the value.
        (b"  spaced out \t\n", "  spaced out \t"),
        # A byte order mark (PowerShell 5's "UTF8") is not part of the value.
        (b"\xef\xbb\xbfhunter2\r\n", "hunter2"),
        ("pässwörd€\n".encode(), "pässwörd€"),
        # \n, \r\n and \r end a line; the other separators str.splitlines knows do not.
        (b"form\x0cfeed\n", "form\x0cfeed"),
        ("line\u2028separator\n".encode(), "line\u2028separator"),
    ],
)
def test_first_line_rule(tmp_path: Path, content: bytes, expected: str) -> None:
    assert read_first_line(write(tmp_path / "secret", content), what="password") == expected


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty; expected a client secret"),
        (b" \n\t\r\n", "the file is empty; expected a client secret"),
        (b"\nsecret on line two\n", "the first line is empty; put the client secret on the first"),
        (b"  \t\nsecret on line two\n", "the first line is empty"),
        (b"\xff\xfe\x00\x01binary", "not a text file (not UTF-8); put the client secret as text"),
        (b"sec\x00ret\n", "holds binary data (a NUL byte); put the client secret as text"),
    ],
)
def test_first_line_refusals(tmp_path: Path, content: bytes, message: str) -> None:
    path = write(tmp_path / "secret", content)
    with pytest.raises(InputFileError, match=re.escape(message)) as info:
        read_first_line(path, what="client secret")
    assert info.value.path == str(path)
    assert str(info.value).startswith(f"{path}: ")


def test_first_line_of_a_missing_file_or_a_directory(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="no such file; check the password path"):
        read_first_line(tmp_path / "missing", what="password")
    with pytest.raises(InputFileError, match="is a directory, not a password file"):
        read_first_line(tmp_path, what="password")


# -- the error type ---------------------------------------------------------------------------


def test_input_file_error_is_a_local_input_error_with_exit_code_3() -> None:
    error = InputFileError("pw.txt: the file is empty; expected a password", path="pw.txt")
    assert isinstance(error, LocalInputError)
    assert isinstance(error, ConfigurationError)
    assert not isinstance(error, CertificateError)
    assert error.exit_code == LocalInputError.exit_code == 3
    assert error.path == "pw.txt"
    assert str(error) == "pw.txt: the file is empty; expected a password"


def test_certificate_and_key_files_keep_certificate_error(
    tmp_path: Path, rsa_cert: Certificate
) -> None:
    with pytest.raises(CertificateError, match="no such file; check the certificate path") as info:
        load_certificate(tmp_path / "missing.pem")
    assert not isinstance(info.value, InputFileError)
    cert = write(tmp_path / "app.crt", rsa_cert.pem)
    with pytest.raises(CertificateError, match="the file is empty; expected a private key"):
        load_certificate(cert, key=write(tmp_path / "app.key", b"\n"))


def test_password_file_refusal_is_an_input_file_error(tmp_path: Path) -> None:
    from certauth.cli._common import read_password

    with pytest.raises(InputFileError, match="the first line is empty; put the password") as info:
        read_password(None, str(write(tmp_path / "pw.txt", b"\nsecond\n")))
    assert info.value.path == str(tmp_path / "pw.txt")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file; check the client secret path"),
        (b"\n", "the file is empty; expected a client secret"),
        (b"\xff\xfe", "not a text file"),
    ],
)
def test_client_secret_file_refusals_exit_3(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "secret.txt"
    if content is not None:
        path.write_bytes(content)
    code = main(
        [
            "token",
            "--client-id", "app",
            "--token-endpoint", "http://127.0.0.1:9/token",
            "--scope", "api://x/.default",
            "--client-secret-file", str(path),
            "--no-cache",
        ]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 3
    assert message in err
    assert str(path) in err


def test_client_secret_file_gives_the_first_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with Emulator() as tenant:
        tenant.register_secret("secret-app", "  s3cr3t with spaces")
        secret = write(tmp_path / "secret", b"\xef\xbb\xbf  s3cr3t with spaces\r\nignored\n")
        code = main(
            [
                "token",
                "--client-id", "secret-app",
                "--token-endpoint", tenant.token_endpoint,
                "--scope", "api://x/.default",
                "--client-secret-file", str(secret),
                "--no-cache",
            ]
        )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.count(".") == 2  # a JWT


def test_federated_token_file_refusals(tmp_path: Path) -> None:
    with Emulator() as tenant:
        missing = str(tmp_path / "missing")
        credential = WorkloadIdentityCredential(
            tenant.tenant_id, "app", missing, authority=tenant.authority_host
        )
        with credential:
            with pytest.raises(InputFileError, match="no such file; check the federated") as info:
                credential.get_token("api://x/.default")
            assert info.value.path == missing
            not_jwt = write(tmp_path / "token", b"not a jwt\n")
            credential = WorkloadIdentityCredential(
                tenant.tenant_id, "app", str(not_jwt), authority=tenant.authority_host
            )
        with credential:
            with pytest.raises(InputFileError, match="not a JWT") as info:
                credential.get_token("api://x/.default")
            assert info.value.path == str(not_jwt)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.json", None, "no such file; check the emulator configuration path"),
        ("empty.json", b"  \n", "the file is empty; expected a emulator configuration"),
        ("latin1.json", '{"é": 1}'.encode("latin-1"), "not UTF-8 text"),
        ("broken.json", b"{not json", "not valid JSON at line 1"),
        # tomllib is Python 3.11+: before, a TOML file is refused for that (InputFileError too).
        (
            "broken.toml",
            b"= nope",
            "not valid TOML" if sys.version_info >= (3, 11) else "needs Python 3.11 or later",
        ),
        ("list.json", b"[]", "the top level must be an object"),
    ],
)
def test_emulator_configuration_file_refusals(
    tmp_path: Path, name: str, content: bytes | None, message: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputFileError, match=re.escape(message)) as info:
        load_config(path)
    assert info.value.path == str(path)


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        (None, "no such file; check the client secret path"),
        (b"\nline two\n", "the first line is empty; put the client secret on the first line"),
        (b"\xff\xfe\n", "not a text file (not UTF-8)"),
    ],
)
def test_emulator_secret_file_refusals_say_where(
    tmp_path: Path, secret: bytes | None, message: str
) -> None:
    if secret is not None:
        write(tmp_path / "secret.txt", secret)
    config = write(
        tmp_path / "emulator.json",
        json.dumps({"apps": [{"client_id": "app", "secrets": [{"file": "secret.txt"}]}]}).encode(),
    )
    with pytest.raises(InputFileError, match=re.escape(message)) as info:
        load_config(config)
    assert str(info.value).startswith(f"{config}: apps[0]: secrets[0]: ")
    assert info.value.path == str(tmp_path / "secret.txt")


def test_emulator_secret_file_gives_the_first_line(tmp_path: Path) -> None:
    write(tmp_path / "secret.txt", b"\xef\xbb\xbffile-secret\r\n")
    config = write(
        tmp_path / "emulator.json",
        json.dumps({"apps": [{"client_id": "app", "secrets": [{"file": "secret.txt"}]}]}).encode(),
    )
    (secret,) = load_config(config).tenants[0].apps[0].secrets
    assert secret.matches("file-secret")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file; check the JWKS path"),
        (b"\xff\xfe{", "jwks.json is not JSON"),
        (b'{"keys": []}', "federated credential keys must be"),
    ],
)
def test_emulator_jwks_file_refusals(tmp_path: Path, content: bytes | None, message: str) -> None:
    if content is not None:
        write(tmp_path / "jwks.json", content)
    federated = {"issuer": "https://issuer.example", "subject": "s", "jwks_file": "jwks.json"}
    config = write(
        tmp_path / "emulator.json",
        json.dumps({"apps": [{"client_id": "app", "federated": [federated]}]}).encode(),
    )
    with pytest.raises(InputFileError, match=re.escape(message)) as info:
        load_config(config)
    assert info.value.path == str(tmp_path / "jwks.json")
