"""One message, two audiences: a library error names the keyword to fix (``key_path=``), and the
CLI shows the same error with the option that sets it (``--key``), through
:func:`certauth.cli._common.cli_wording`."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from certauth import CertificateCredential, generate_certificate, load_certificate
from certauth.authority import resolve_authority
from certauth.certificates import Certificate
from certauth.cli._common import CLI_WORDING, cli_wording
from certauth.cli.main import main
from certauth.errors import CertificateError, InvalidArgumentError

ROOT = Path(__file__).resolve().parents[1]
#: A CLI option in a message: "--key", "--no-cache".
_OPTION = re.compile(r"(?<![\w-])--[a-z]")
#: Another tool's command line quoted as the fix ("az ad app credential reset ... --append"):
#: its options are that tool's, not certauth's.
_OTHER_TOOL = re.compile(r"\baz [a-z]+(?: [a-z-]+)*(?: (?:--?[\w-]+|@?[\w./@-]+))*")


def test_keywords_become_options_and_nothing_else_changes() -> None:
    assert cli_wording("alg='HS256' is not supported") == "--alg 'HS256' is not supported"
    assert cli_wording("create one with key_type=rsa2048") == "create one with --key rsa2048"
    assert cli_wording("key_path= takes a PEM") == "--key takes a PEM"
    assert cli_wording("(fix token_endpoint=)") == "(fix --token-endpoint)"
    assert (
        cli_wording("check client_id= and tenant_id=, and") == "check --client-id and --tenant, and"
    )
    assert cli_wording("or pass cache=None") == "or pass --no-cache"
    assert cli_wording("give it with password=").startswith("give it with --password-env VAR")
    # The verifier's binding keywords (sender-constrained tokens).
    assert (
        cli_wording("pass it as client_certificate= (or forwarded_client_cert= behind a proxy)")
        == "pass it as --client-cert (or --forwarded-client-cert behind a proxy)"
    )
    assert (
        cli_wording("htm= is required; htu= too, dpop_proof=, dpop_nonce= and scheme=")
        == "--htm is required; --htu too, --dpop-proof, --dpop-nonce and --scheme"
    )
    # A URL's query, a longer word and a server's text are not keywords.
    for text in (
        "https://h.example/authorize?client_id=abc&tenant_id=x",
        "my_alg=1",
        "AADSTS700016: Application with identifier 'x' was not found",
    ):
        assert cli_wording(text) == text


def test_every_keyword_it_knows_is_a_real_parameter_or_option() -> None:
    import inspect

    from certauth import build_client_assertion, verify_access_token
    from certauth.certificates import generate_certificate as generate
    from certauth.rotation import rotate_certificate
    from certauth.signers.pkcs11 import Pkcs11Signer
    from certauth.verify import TokenVerifier

    names: set[str] = set()
    for function in (
        CertificateCredential.__init__,
        build_client_assertion,
        generate,
        rotate_certificate,
        Pkcs11Signer.__init__,
        verify_access_token,
        TokenVerifier.verify,
    ):
        names |= set(inspect.signature(function).parameters)
    assert set(CLI_WORDING) <= names
    assert "jwks_uri" in inspect.signature(verify_access_token).parameters


def test_the_library_names_the_keyword(rsa_cert: Certificate, tmp_path: Path) -> None:
    crt = tmp_path / "app.crt"
    crt.write_bytes(rsa_cert.pem)
    with pytest.raises(CertificateError) as caught:
        load_certificate(crt).require_private_key()
    assert "key file with key_path=" in caught.value.message
    assert not _OPTION.search(caught.value.message)
    with pytest.raises(InvalidArgumentError, match=r"^assertion_lifetime=900 is outside 1-600"):
        CertificateCredential("contoso.com", "app", certificate=rsa_cert, assertion_lifetime=900)
    with pytest.raises(InvalidArgumentError, match=r"check tenant_id=$"):
        resolve_authority("not a tenant!")
    with pytest.raises(InvalidArgumentError, match=r"^days=0: give a whole number"):
        generate_certificate("CN=x", days=0)
    ec = generate_certificate("CN=x", key_type="ec-p256")
    assert ec.entra_problems()[0].endswith("create one with key_type=rsa2048")


@pytest.mark.usefixtures("cli_env")
def test_the_cli_names_the_option(
    rsa_cert: Certificate, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    crt = tmp_path / "app.crt"
    crt.write_bytes(rsa_cert.pem)
    common = ["token", "--client-id", "app", "--scope", "api://x/.default"]
    assert main([*common, "--tenant", "contoso.com", "--cert", str(crt)]) == 3
    err = capsys.readouterr().err
    assert "the key file with --key" in err
    assert "key_path=" not in err
    pem = tmp_path / "app.pem"
    pem.write_bytes(rsa_cert.private_key_pem() + rsa_cert.pem)
    assert main([*common, "--tenant", "not a tenant!", "--cert", str(pem)]) == 2
    err = capsys.readouterr().err
    assert "is not a tenant ID (GUID) or domain name; check --tenant" in err
    assert "tenant_id=" not in err
    ec = tmp_path / "ec.crt"
    ec.write_bytes(generate_certificate("CN=x", key_type="ec-p256").pem)
    assert main(["cert", "show", str(ec)]) == 0
    err = capsys.readouterr().err
    assert "create one with --key rsa2048" in err
    assert "key_type=" not in err


def _library_sources() -> list[Path]:
    """Modules a library caller's errors come from: all but the CLI and the emulator (whose
    messages are about its own command line)."""
    package = ROOT / "certauth"
    return [
        path
        for path in sorted(package.rglob("*.py"))
        if not path.relative_to(package).as_posix().startswith(("cli/", "emulator/"))
        # The atomic file writer serves `cert create`, `cert bundle` and the emulator's
        # --tls-dir only: its messages are about their options.
        and path.name != "_files.py"
    ]


def test_no_library_message_speaks_of_a_cli_option() -> None:
    found: list[str] = []
    for path in _library_sources():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        found += [
            f"{path.relative_to(ROOT)}:{node.lineno}: {node.value[:80]!r}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
            and _OPTION.search(_OTHER_TOOL.sub("", node.value))
        ]
    assert not found, "library messages name CLI options; name the keyword:\n" + "\n".join(found)
