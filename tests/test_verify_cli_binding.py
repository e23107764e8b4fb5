"""``certauth verify`` with sender-constrained tokens: --client-cert, --forwarded-client-cert,
--dpop-proof/--htm/--htu/--dpop-nonce and --scheme; exit 6 naming the failed binding check,
exit 3 for an unreadable --client-cert, exit 2 for options that cannot describe one request.
And the docs' "Sender-constrained tokens" example, run as written.

The issuer is a local OpenID Connect server (tests/_oidc_server.py) publishing a key made here,
so the tests can sign tokens carrying any ``cnf``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from _docs import section
from _oidc_server import OidcServer
from cryptography.hazmat.primitives.asymmetric import rsa
from test_verify import jwk_for

from certauth.certificates import Certificate
from certauth.cli.main import main
from certauth.dpop import DPoPKey, make_proof
from certauth.verify import verifier as verifier_module

RESOURCE = "api://billing"
URL = "https://billing.example/invoices"


@pytest.fixture(autouse=True)
def _fresh_key_cache() -> Iterator[None]:
    verifier_module._shared.clear()
    yield
    verifier_module._shared.clear()


@pytest.fixture(scope="module")
def issuer_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def server(issuer_key: rsa.RSAPrivateKey) -> Iterator[OidcServer]:
    with OidcServer() as oidc:
        oidc.jwks = {"keys": [jwk_for(issuer_key, "k1", use="sig")]}
        yield oidc


@pytest.fixture(scope="module")
def dpop_key() -> DPoPKey:
    return DPoPKey.generate()


@pytest.fixture
def bound(server: OidcServer, issuer_key: rsa.RSAPrivateKey) -> Callable[..., str]:
    """A token from the local issuer for RESOURCE, valid now, with ``cnf`` when given."""

    def make(cnf: dict[str, str] | None = None) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": server.issuer,
            "aud": RESOURCE,
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "sub": "billing-client",
            "roles": ["Invoices.Read"],
        }
        if cnf is not None:
            claims["cnf"] = cnf
        return jwt.encode(claims, issuer_key, algorithm="RS256", headers={"kid": "k1"})

    return make


def x5t_s256(cert: Certificate) -> str:
    digest = hashlib.sha256(cert.der).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def run(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    stdin: str = "",
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def verify(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, server: OidcServer
) -> Callable[..., tuple[int, str, str]]:
    """``certauth verify - --issuer ... --audience api://billing ARGS`` with the token on stdin."""

    def call(token: str, *args: str) -> tuple[int, str, str]:
        argv = ["verify", "-", "--issuer", server.issuer, "--audience", RESOURCE, *args]
        code, out, err = run(capsys, monkeypatch, argv, stdin=token)
        assert "Traceback" not in err
        assert token.split(".")[2][:16] not in out + err
        return code, out, err

    return call


def failed(
    verify: Callable[..., tuple[int, str, str]], check: str, token: str, *args: str
) -> tuple[str, str]:
    """The stderr line and the --json error of a refusal, after checking exit 6 and the check
    named on stderr and in the JSON document."""
    code, out, err = verify(token, *args)
    assert (code, out) == (6, ""), err
    assert err.startswith(f"certauth: error: the token failed verification ({check}): ")
    assert err.count("\n") == 1
    code, out, _ = verify(token, *args, "--json")
    assert code == 6
    document = json.loads(out)
    assert document["valid"] is False
    assert document["check"] == check
    return err, document["error"]


# -- certificate-bound tokens --------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["pem", "der"])
def test_the_right_client_certificate_is_exit_0(
    verify: Callable[..., tuple[int, str, str]],
    bound: Callable[..., str],
    rsa_cert: Certificate,
    tmp_path: Path,
    encoding: str,
) -> None:
    crt = tmp_path / f"client.{encoding}"
    crt.write_bytes(rsa_cert.pem if encoding == "pem" else rsa_cert.der)
    code, out, err = verify(bound({"x5t#S256": x5t_s256(rsa_cert)}), "--client-cert", str(crt))
    assert code == 0, err
    assert out.startswith("VALID: signature, issuer, audience, expiry checked")
    assert f"  cnf      x5t#S256 {x5t_s256(rsa_cert)} (the client certificate matches)\n" in out


def test_a_certificate_bound_token_without_its_certificate_is_exit_6(
    verify: Callable[..., tuple[int, str, str]],
    bound: Callable[..., str],
    rsa_cert: Certificate,
    other_rsa_cert: Certificate,
    tmp_path: Path,
) -> None:
    token = bound({"x5t#S256": x5t_s256(rsa_cert)})
    err, error = failed(verify, "cnf_x5t#S256", token)
    for text in (err, error):
        assert "bound to a client certificate (cnf x5t#S256) and none was presented" in text
        # The library's keywords, in the CLI's words.
        assert (
            "pass the one the TLS layer saw as --client-cert (or --forwarded-client-cert " in text
        )
        assert "client_certificate=" not in text
    other = tmp_path / "other.crt"
    other.write_bytes(other_rsa_cert.pem)
    err, _ = failed(verify, "cnf_x5t#S256", token, "--client-cert", str(other))
    assert "bound to another client certificate than the one presented" in err


def test_forwarded_client_cert(
    verify: Callable[..., tuple[int, str, str]], bound: Callable[..., str], rsa_cert: Certificate
) -> None:
    token = bound({"x5t#S256": x5t_s256(rsa_cert)})
    xfcc = f"By=spiffe://edge;Hash={hashlib.sha256(rsa_cert.der).hexdigest()}"
    code, _, err = verify(token, "--forwarded-client-cert", xfcc)
    assert code == 0, err
    err, error = failed(verify, "cnf_x5t#S256", token, "--forwarded-client-cert", f"{xfcc},{xfcc}")
    assert "--forwarded-client-cert is not a usable X-Forwarded-Client-Cert value" in err
    assert "it holds 2 elements" in error
    assert "forwarded_client_cert=" not in err + error


def test_an_unreadable_client_cert_file_is_exit_3(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    verify: Callable[..., tuple[int, str, str]],
    bound: Callable[..., str],
    rsa_cert: Certificate,
    other_rsa_cert: Certificate,
    tmp_path: Path,
) -> None:
    token = bound({"x5t#S256": x5t_s256(rsa_cert)})
    garbage = tmp_path / "garbage.crt"
    garbage.write_bytes(b"\x00\x01 not a certificate")
    key_only = tmp_path / "key.pem"
    key_only.write_bytes(rsa_cert.private_key_pem())
    chain = tmp_path / "chain.pem"
    chain.write_bytes(rsa_cert.pem + other_rsa_cert.pem)
    for path, reason in (
        (tmp_path / "missing.crt", "no such file"),
        (garbage, "not a PEM or DER certificate"),
        (key_only, "not a PEM certificate"),
        (chain, "holds 2 certificates; pass only the client's own"),
        (tmp_path, "directory"),
    ):
        # Read before anything else: the token, bound or not, is not even looked at.
        for given in (token, bound()):
            code, out, err = verify(given, "--client-cert", str(path))
            assert (code, out) == (3, ""), err
            assert err.startswith(f"certauth: error: --client-cert {path}: "), err
            assert reason in err
            assert err.count("\n") == 1


# -- DPoP-bound tokens ---------------------------------------------------------------------------


def dpop_args(key: DPoPKey, token: str, **kw: Any) -> list[str]:
    kw.setdefault("htm", "GET")
    kw.setdefault("htu", URL)
    kw.setdefault("access_token", token)
    proof = make_proof(key, **kw)
    return ["--dpop-proof", proof, "--htm", "GET", "--htu", URL]


def test_a_good_dpop_proof_is_exit_0(
    verify: Callable[..., tuple[int, str, str]], bound: Callable[..., str], dpop_key: DPoPKey
) -> None:
    token = bound({"jkt": dpop_key.thumbprint})
    code, out, err = verify(token, *dpop_args(dpop_key, token), "--scheme", "DPoP")
    assert code == 0, err
    assert f"  cnf      jkt {dpop_key.thumbprint} (the DPoP proof's key matches)\n" in out
    code, out, _ = verify(token, *dpop_args(dpop_key, token), "--scheme", "dpop", "--json")
    assert code == 0
    assert json.loads(out)["claims"]["cnf"] == {"jkt": dpop_key.thumbprint}


def test_dpop_refusals_are_exit_6_naming_the_check(
    verify: Callable[..., tuple[int, str, str]], bound: Callable[..., str], dpop_key: DPoPKey
) -> None:
    token = bound({"jkt": dpop_key.thumbprint})
    err, error = failed(verify, "dpop_header", token)
    assert "the request has no DPoP proof" in err
    assert "(pass it as --dpop-proof)" in error
    err, _ = failed(verify, "cnf_jkt", token, *dpop_args(DPoPKey.generate(), token))
    assert f"the token is bound to key {dpop_key.thumbprint!r}" in err
    failed(verify, "dpop_scheme", token, *dpop_args(dpop_key, token), "--scheme", "Bearer")
    failed(verify, "dpop_htm", token, *dpop_args(dpop_key, token, htm="POST"))
    failed(verify, "dpop_ath", token, *dpop_args(dpop_key, token, access_token="other.a.b"))
    nonce = ["--dpop-nonce", "n-2024"]
    failed(verify, "dpop_nonce", token, *dpop_args(dpop_key, token), *nonce)
    code, _, err = verify(token, *dpop_args(dpop_key, token, nonce="n-2024"), *nonce)
    assert code == 0, err
    failed(verify, "dpop_unbound", bound(), *dpop_args(dpop_key, token), "--scheme", "DPoP")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--dpop-proof", "a.b.c"], "--dpop-proof needs --htm METHOD and --htu URL"),
        (["--dpop-proof", "a.b.c", "--htm", "GET"], "--dpop-proof needs --htm"),
        (["--htm", "GET", "--htu", URL], "give --dpop-proof too"),
        (["--dpop-nonce", "n-1"], "give --dpop-proof too"),
        (["--client-cert", "a.crt", "--forwarded-client-cert", "Hash=00"], "not both"),
        (["--htm", "GE T"], "'GE T' is not an HTTP method"),
        (["--htu", "ftp://billing.example/x"], "is not an absolute http(s) URL"),
        (["--dpop-nonce", 'a"b'], "the DPoP nonce is not 1*NQCHAR"),
        (["--scheme", "Basic"], "'Basic' is not one of Bearer, DPoP"),
        (["--forwarded-client-cert", ""], "the value is empty"),
    ],
)
def test_options_that_cannot_describe_one_request_are_usage_errors(
    verify: Callable[..., tuple[int, str, str]],
    bound: Callable[..., str],
    args: list[str],
    needle: str,
) -> None:
    code, out, err = verify(bound(), *args)
    assert (code, out) == (2, "")
    assert needle in err


# -- the documented example runs as written ------------------------------------------------------


def binding_section() -> str:
    return section("verify-binding")


def test_the_docs_python_example(
    server: OidcServer, bound: Callable[..., str], rsa_cert: Certificate, dpop_key: DPoPKey
) -> None:
    (code,) = re.findall(r"^```python\n(.*?)^```", binding_section(), flags=re.M | re.S)
    code = code.replace("https://login.microsoftonline.com/TENANT_ID/v2.0", server.issuer)
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/verify.md", "exec"), namespace)  # noqa: S102 - our own docs
    authorize = namespace["authorize"]
    public = namespace["PUBLIC_URL"]
    pem = rsa_cert.pem.decode()

    def scope(authorization: str, *, proofs: tuple[str, ...] = (), chain: Any = None) -> Any:
        headers = [(b"host", b"10.0.0.7:8000"), (b"authorization", authorization.encode())]
        headers += [(b"dpop", p.encode()) for p in proofs]
        http: dict[str, Any] = {"type": "http", "method": "GET", "path": "/invoices"}
        http["headers"] = headers
        if chain is not None:
            http["extensions"] = {"tls": {"client_cert_chain": chain}}
        return http

    async def scenario() -> None:
        cert_bound = bound({"x5t#S256": x5t_s256(rsa_cert)})
        claims = await authorize(scope(f"Bearer {cert_bound}", chain=[pem]))
        assert claims["sub"] == "billing-client"
        error = namespace["TokenValidationError"]
        with pytest.raises(error) as caught:
            await authorize(scope(f"Bearer {cert_bound}"))
        assert caught.value.check == "cnf_x5t#S256"
        dpop_bound = bound({"jkt": dpop_key.thumbprint})
        proof = make_proof(dpop_key, htm="GET", htu=f"{public}/invoices", access_token=dpop_bound)
        claims = await authorize(scope(f"DPoP {dpop_bound}", proofs=(proof,)))
        assert claims["cnf"] == {"jkt": dpop_key.thumbprint}
        with pytest.raises(error) as caught:
            await authorize(scope(f"DPoP {dpop_bound}", proofs=(proof,)))
        assert caught.value.check == "dpop_replay"
        with pytest.raises(error) as caught:
            await authorize(scope(f"DPoP {dpop_bound}", proofs=(proof, proof)))
        assert caught.value.check == "dpop_header"
        with pytest.raises(error) as caught:
            await authorize(scope(f"Bearer {dpop_bound}", proofs=(proof,)))
        assert caught.value.check == "dpop_scheme"
        # A plain bearer token, with or without a client certificate, passes as before.
        assert await authorize(scope(f"Bearer {bound()}"))
        assert await authorize(scope(f"Bearer {bound()}", chain=[pem]))
        await namespace["verifier"].close()

    asyncio.run(scenario())


def test_the_docs_shell_commands_use_the_options_that_exist(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = re.findall(r"^```sh\n(.*?)^```", binding_section(), flags=re.M | re.S)
    shown = {flag for block in blocks for flag in re.findall(r"(?<![\w-])--[a-z-]+", block)}
    code, out, _ = run(capsys, monkeypatch, ["verify", "--help"])
    assert code == 0
    assert shown
    assert shown <= set(re.findall(r"(?<![\w-])--[a-z-]+", out))
    for flag in ("--client-cert", "--forwarded-client-cert", "--dpop-proof", "--scheme"):
        assert flag in shown
