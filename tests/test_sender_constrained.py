"""Sender-constrained tokens end to end against the emulator: certauth's credentials get tokens
bound to the certificate (RFC 8705) or to a DPoP key (RFC 9449), call the emulator's protected
API with what binds them (the library's http_client/BearerAuth, and the CLI's curl config fed
to the real curl), and a stolen token is refused in every way it could be replayed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _cert_helpers import run_cli

from certauth import AsyncCertificateCredential, BearerAuth, CertificateCredential
from certauth.certificates import Certificate
from certauth.dpop import DPoPKey, make_proof
from certauth.emulator import Emulator

APP = "5a1e5c0d-0000-4000-8000-0000000000b5"
OTHER_APP = "5a1e5c0d-0000-4000-8000-0000000000b6"
SCOPE = "api://things/.default"


@pytest.fixture(scope="module")
def tenant(rsa_cert: Certificate, other_rsa_cert: Certificate) -> Iterator[Emulator]:
    with Emulator(tls=True) as emulator:
        emulator.register(APP, rsa_cert)
        emulator.register(OTHER_APP, other_rsa_cert)
        yield emulator


def _pem(certificate: Certificate, folder: Path, name: str) -> Path:
    path = folder / f"{name}.pem"
    path.write_bytes(certificate.private_key_pem() + certificate.pem)
    path.chmod(0o600)
    return path


@pytest.fixture
def pem(rsa_cert: Certificate, tmp_path: Path) -> Path:
    return _pem(rsa_cert, tmp_path, "app")


def _mtls_credential(tenant: Emulator, pem: Path, **kwargs: Any) -> CertificateCredential:
    return CertificateCredential(
        None, APP, pem, issuer=tenant.issuer, verify=tenant.ca_file, mtls=True, **kwargs
    )


def _stranger_client(tenant: Emulator, certificate: Path | None = None) -> httpx.Client:
    """An HTTP client of someone who stole the token: the emulator's CA, and their own
    certificate (or none)."""
    import ssl

    context = ssl.create_default_context(cafile=tenant.ca_file)
    if certificate is not None:
        context.load_cert_chain(certificate)
    return httpx.Client(verify=context, timeout=10)


# -- certificate-bound tokens (RFC 8705) -----------------------------------------------------


def test_mtls_token_and_api_call_with_the_same_certificate(
    tenant: Emulator, pem: Path, rsa_cert: Certificate
) -> None:
    with _mtls_credential(tenant, pem) as credential:
        token = credential.get_token(SCOPE).token
        assert tenant.mtls_resource_url is not None
        with credential.http_client(SCOPE) as api:
            answer = api.get(tenant.mtls_resource_url)
    assert answer.status_code == 200, answer.text
    assert answer.json()["cnf"] == {"x5t#S256": rsa_cert.x5t_s256}
    assert answer.json()["azp"] == APP
    assert token  # the same token http_client's BearerAuth sent (cached)


def test_the_async_credential_calls_the_api_over_mtls(
    tenant: Emulator, pem: Path, rsa_cert: Certificate
) -> None:
    async def scenario() -> httpx.Response:
        async with (
            AsyncCertificateCredential(
                None, APP, pem, issuer=tenant.issuer, verify=tenant.ca_file, mtls=True
            ) as credential,
            credential.http_client(SCOPE) as api,
        ):
            assert tenant.mtls_resource_url is not None
            return await api.get(tenant.mtls_resource_url)

    answer = asyncio.run(scenario())
    assert answer.status_code == 200, answer.text
    assert answer.json()["cnf"] == {"x5t#S256": rsa_cert.x5t_s256}


def test_a_stolen_certificate_bound_token_is_refused(
    tenant: Emulator, pem: Path, other_rsa_cert: Certificate, tmp_path: Path
) -> None:
    with _mtls_credential(tenant, pem) as credential:
        token = credential.get_token(SCOPE).token
    assert tenant.mtls_resource_url is not None
    header = {"Authorization": f"Bearer {token}"}
    thief_certificate = _pem(other_rsa_cert, tmp_path, "thief")
    for thief, url in (
        (_stranger_client(tenant), tenant.resource_url),  # no certificate at all
        (_stranger_client(tenant), tenant.mtls_resource_url),  # mTLS listener, no certificate
        (_stranger_client(tenant, thief_certificate), tenant.mtls_resource_url),  # another's
    ):
        with thief:
            answer = thief.get(url, headers=header)
        assert answer.status_code == 401, (url, answer.text)
        assert 'error="invalid_token"' in answer.headers["www-authenticate"]
        assert "cnf x5t#S256" in answer.json()["error"]["message"]


def test_a_plain_token_still_works_on_the_mtls_listener(
    tenant: Emulator, pem: Path, tmp_path: Path
) -> None:
    # Binding is opt-in: an unbound token does not become unusable where certificates are asked.
    with CertificateCredential(
        None, APP, pem, issuer=tenant.issuer, verify=tenant.ca_file
    ) as credential:
        token = credential.get_token(SCOPE).token
    assert tenant.mtls_resource_url is not None
    with _stranger_client(tenant) as client:
        answer = client.get(tenant.mtls_resource_url, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    assert "cnf" not in answer.json()


# -- DPoP-bound tokens (RFC 9449) ------------------------------------------------------------


def _dpop_credential(tenant: Emulator, pem: Path) -> CertificateCredential:
    return CertificateCredential(
        None, APP, pem, issuer=tenant.issuer, verify=tenant.ca_file, dpop=True
    )


def test_dpop_token_and_api_call_with_a_proof(tenant: Emulator, pem: Path) -> None:
    with (
        _dpop_credential(tenant, pem) as credential,
        httpx.Client(verify=credential.ssl_context, auth=BearerAuth(credential, SCOPE)) as api,
    ):
        answer = api.get(tenant.resource_url)
        assert credential.dpop_key is not None
        jkt = credential.dpop_key.thumbprint
    assert answer.status_code == 200, answer.text
    assert answer.json()["cnf"] == {"jkt": jkt}


def test_a_stolen_dpop_token_is_refused(tenant: Emulator, pem: Path) -> None:
    with _dpop_credential(tenant, pem) as credential:
        token = credential.get_token(SCOPE).token
        honest = credential.make_dpop_proof("GET", tenant.resource_url, access_token=token)
    url = tenant.resource_url
    thief_key = DPoPKey.generate()
    attempts = {
        # As a bearer token, without a proof.
        "bearer": ({"Authorization": f"Bearer {token}"}, "invalid_token"),
        # With a proof the thief signs with their own key.
        "own key": (
            {
                "Authorization": f"DPoP {token}",
                "DPoP": make_proof(thief_key, htm="GET", htu=url, access_token=token),
            },
            "invalid_dpop_proof",
        ),
        # With a proof for another request.
        "other request": (
            {
                "Authorization": f"DPoP {token}",
                "DPoP": credential.make_dpop_proof("POST", url, access_token=token),
            },
            "invalid_dpop_proof",
        ),
    }
    with _stranger_client(tenant) as thief:
        # The honest proof works once; captured and replayed, it is refused.
        first = thief.get(url, headers={"Authorization": f"DPoP {token}", "DPoP": honest})
        assert first.status_code == 200, first.text
        attempts["replayed proof"] = (
            {"Authorization": f"DPoP {token}", "DPoP": honest},
            "invalid_dpop_proof",
        )
        for name, (headers, error) in attempts.items():
            answer = thief.get(url, headers=headers)
            assert answer.status_code == 401, (name, answer.text)
            assert f'error="{error}"' in answer.headers["www-authenticate"], name


def test_bearer_auth_answers_the_apis_nonce_demand(
    rsa_cert: Certificate, pem: Path, tmp_path: Path
) -> None:
    with Emulator(tls=True, dpop_nonce=True) as emulator:
        emulator.register(APP, rsa_cert)
        with (
            _dpop_credential(emulator, pem) as credential,
            httpx.Client(verify=credential.ssl_context, auth=BearerAuth(credential, SCOPE)) as api,
        ):
            assert api.get(emulator.resource_url).status_code == 200
            emulator.rotate_dpop_nonce()
            emulator.rotate_dpop_nonce()  # the nonce the client holds is no longer accepted
            answer = api.get(emulator.resource_url)
        assert answer.status_code == 200, answer.text


# -- the CLI, with the real curl ------------------------------------------------------------


def _curl(config: str) -> dict[str, Any]:
    import json

    done = subprocess.run(
        ["curl", "--silent", "--show-error", "--fail-with-body", "--config", "-"],
        input=config,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    body: dict[str, Any] = json.loads(done.stdout)
    return body


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.usefixtures("cli_env")
@pytest.mark.parametrize("mode", ["--mtls", "--dpop"])
def test_the_cli_curl_config_calls_the_api_with_what_binds_the_token(
    tenant: Emulator,
    pem: Path,
    rsa_cert: Certificate,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    mode: str,
) -> None:
    url = tenant.mtls_resource_url if mode == "--mtls" else tenant.resource_url
    assert url is not None
    extra = ["--dpop-key", str(tmp_path / "dpop.key")] if mode == "--dpop" else []
    result = run_cli(
        capsys,
        "token",
        mode,
        *extra,
        "--client-id",
        APP,
        "--issuer",
        tenant.issuer,
        "--cert",
        pem,
        "--ca-file",
        str(tenant.ca_file),
        "--scope",
        SCOPE,
        "--output",
        "curl-config",
        "--htu",
        url,
    )
    assert result.code == 0, result.err
    assert result.out.startswith("# certauth: a curl config")
    body = _curl(result.out)
    if mode == "--mtls":
        assert body["cnf"] == {"x5t#S256": rsa_cert.x5t_s256}
    else:
        assert body["cnf"] == {"jkt": DPoPKey.from_private_key(_key(tmp_path)).thumbprint}
    # Without what binds it (the token alone, as a bearer token), the same call is refused.
    token_line = next(line for line in result.out.splitlines() if "Authorization" in line)
    stripped = "\n".join(
        line for line in result.out.splitlines() if line.startswith(("url", "cacert", "request"))
    )
    bare = stripped + "\n" + token_line.replace("DPoP ", "Bearer ") + "\n"
    done = subprocess.run(
        [
            "curl",
            "--silent",
            "--output",
            "/dev/null",
            "--write-out",
            "%{http_code}",
            "--config",
            "-",
        ],
        input=bare,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.stdout == "401"


def _key(folder: Path) -> Any:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    return load_pem_private_key((folder / "dpop.key").read_bytes(), password=None)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.usefixtures("cli_env")
def test_the_curl_config_presents_a_password_protected_pfx(
    tenant: Emulator,
    rsa_cert: Certificate,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pfx = tmp_path / "app.pfx"
    pfx.write_bytes(rsa_cert.to_pfx(b"pfx-pass-1"))
    monkeypatch.setenv("PFX_PASSWORD", "pfx-pass-1")
    assert tenant.mtls_resource_url is not None
    result = run_cli(
        capsys,
        "token",
        "--mtls",
        "--client-id",
        APP,
        "--issuer",
        tenant.issuer,
        "--cert",
        pfx,
        "--password-env",
        "PFX_PASSWORD",
        "--ca-file",
        str(tenant.ca_file),
        "--scope",
        SCOPE,
        "--output",
        "curl-config",
        "--htu",
        tenant.mtls_resource_url,
    )
    assert result.code == 0, result.err
    assert 'cert-type = "P12"' in result.out.splitlines()
    assert _curl(result.out)["cnf"] == {"x5t#S256": rsa_cert.x5t_s256}


def _mtls_curl_config(
    capsys: pytest.CaptureFixture[str], tenant: Emulator, *args: str | Path
) -> str:
    assert tenant.mtls_resource_url is not None
    result = run_cli(
        capsys,
        "token",
        "--mtls",
        "--client-id",
        APP,
        "--issuer",
        tenant.issuer,
        *args,
        "--ca-file",
        str(tenant.ca_file),
        "--scope",
        SCOPE,
        "--output",
        "curl-config",
        "--htu",
        tenant.mtls_resource_url,
    )
    assert result.code == 0, result.err
    # One option a line, each one certauth writes: nothing a value held became an option.
    options = [line.split(" = ", 1)[0] for line in result.out.splitlines()[1:]]
    assert set(options) <= {"url", "request", "header", "cert", "cert-type", "key", "key-type"} | {
        "pass",
        "cacert",
    }, result.out
    return result.out


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.usefixtures("cli_env")
def test_curl_config_paths_and_passwords_with_line_breaks_quotes_and_backslashes(
    tenant: Emulator,
    rsa_cert: Certificate,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = tmp_path / 'a"b\\c\nheader = "X-Injected: 1"\r\td'
    folder.mkdir()
    pem = _pem(rsa_cert, folder, "app")
    config = _mtls_curl_config(capsys, tenant, "--cert", pem)
    assert _curl(config)["cnf"] == {"x5t#S256": rsa_cert.x5t_s256}
    password = 'p"w\\\noutput = /tmp/certauth-injected\n'
    pfx = folder / "app.pfx"
    pfx.write_bytes(rsa_cert.to_pfx(password.encode()))
    monkeypatch.setenv("PFX_PASSWORD", password)
    config = _mtls_curl_config(capsys, tenant, "--cert", pfx, "--password-env", "PFX_PASSWORD")
    assert _curl(config)["cnf"] == {"x5t#S256": rsa_cert.x5t_s256}


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.usefixtures("cli_env")
def test_curl_config_with_a_der_certificate_and_a_der_key(
    tenant: Emulator, rsa_cert: Certificate, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cryptography.hazmat.primitives import serialization

    cert = tmp_path / "app.der"
    cert.write_bytes(rsa_cert.der)
    key = tmp_path / "app.key.der"
    key.write_bytes(
        rsa_cert.require_private_key().private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    config = _mtls_curl_config(capsys, tenant, "--cert", cert, "--key", key)
    assert 'cert-type = "DER"' in config.splitlines()
    assert 'key-type = "DER"' in config.splitlines()
    assert _curl(config)["cnf"] == {"x5t#S256": rsa_cert.x5t_s256}


@pytest.mark.usefixtures("cli_env")
def test_curl_config_refuses_an_encrypted_der_key_curl_cannot_read(
    tenant: Emulator,
    rsa_cert: Certificate,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from _cert_helpers import assert_one_line_error
    from cryptography.hazmat.primitives import serialization

    cert = tmp_path / "app.der"
    cert.write_bytes(rsa_cert.der)
    key = tmp_path / "app.key.der"
    key.write_bytes(
        rsa_cert.require_private_key().private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"key-pass-1"),
        )
    )
    monkeypatch.setenv("KEY_PASSWORD", "key-pass-1")
    assert tenant.mtls_resource_url is not None
    result = run_cli(
        capsys,
        "token",
        "--mtls",
        "--client-id",
        APP,
        "--issuer",
        tenant.issuer,
        "--cert",
        cert,
        "--key",
        key,
        "--password-env",
        "KEY_PASSWORD",
        "--ca-file",
        str(tenant.ca_file),
        "--scope",
        SCOPE,
        "--output",
        "curl-config",
        "--htu",
        tenant.mtls_resource_url,
    )
    assert_one_line_error(result, 3, "--key", "encrypted DER key", "certauth cert bundle")


# -- a rotated certificate and the connections opened before it ----------------------------


def _cnf(token: str) -> Any:
    import base64
    import json

    return json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))["cnf"]


@pytest.fixture
def rotating_tenant(rsa_cert: Certificate, other_rsa_cert: Certificate) -> Iterator[Emulator]:
    with Emulator(tls=True) as emulator:
        emulator.register(APP, rsa_cert)
        emulator.register(APP, other_rsa_cert)  # the certificate rotated to
        yield emulator


def _rotate(pem: Path, certificate: Certificate) -> None:
    pem.write_bytes(certificate.private_key_pem() + certificate.pem)
    os.utime(pem, ns=(1, 1))  # whatever the file system's time resolution


def test_http_client_presents_a_rotated_certificate_on_its_next_call(
    rotating_tenant: Emulator, pem: Path, rsa_cert: Certificate, other_rsa_cert: Certificate
) -> None:
    tenant = rotating_tenant
    assert tenant.mtls_resource_url is not None
    with _mtls_credential(tenant, pem) as credential, credential.http_client(SCOPE) as api:
        first = api.get(tenant.mtls_resource_url)
        assert first.json()["cnf"] == {"x5t#S256": rsa_cert.x5t_s256}
        _rotate(pem, other_rsa_cert)
        credential.invalidate(SCOPE)  # as the token's renewal does: it picks up the new file
        # The kept-alive connection presents the old certificate; the new token is bound to
        # the new one. The call must go over a connection that presents the new one.
        answer = api.get(tenant.mtls_resource_url)
        assert answer.status_code == 200, answer.text
        assert answer.json()["cnf"] == {"x5t#S256": other_rsa_cert.x5t_s256}
        assert _cnf(credential.get_token(SCOPE).token) == {"x5t#S256": other_rsa_cert.x5t_s256}


def test_the_async_http_client_presents_a_rotated_certificate_on_its_next_call(
    rotating_tenant: Emulator, pem: Path, rsa_cert: Certificate, other_rsa_cert: Certificate
) -> None:
    tenant = rotating_tenant
    assert tenant.mtls_resource_url is not None
    url = tenant.mtls_resource_url

    async def scenario() -> tuple[httpx.Response, httpx.Response]:
        async with (
            AsyncCertificateCredential(
                None, APP, pem, issuer=tenant.issuer, verify=tenant.ca_file, mtls=True
            ) as credential,
            credential.http_client(SCOPE) as api,
        ):
            first = await api.get(url)
            _rotate(pem, other_rsa_cert)
            credential.invalidate(SCOPE)
            return first, await api.get(url)

    first, answer = asyncio.run(scenario())
    assert first.json()["cnf"] == {"x5t#S256": rsa_cert.x5t_s256}
    assert answer.status_code == 200, answer.text
    assert answer.json()["cnf"] == {"x5t#S256": other_rsa_cert.x5t_s256}


@pytest.mark.usefixtures("cli_env")
@pytest.mark.parametrize(
    ("args", "code", "fragments"),
    [
        # The conflict is the usage error, whatever the named variable holds.
        (["--client-secret-env", "UNSET_SECRET"], 2, ["--mtls", "client secret"]),
        (["--client-secret-file", "{missing}"], 2, ["--mtls", "client secret"]),
        (["--federated-token-file", "{missing}"], 2, ["--mtls", "federated token"]),
        # A tenant alone names Entra ID, which takes no mutual-TLS client authentication.
        (["--tenant", "contoso.onmicrosoft.com"], 2, ["--mtls needs", "--issuer"]),
    ],
)
def test_the_cli_refuses_what_mtls_cannot_go_with_naming_the_options(
    pem: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    code: int,
    fragments: list[str],
) -> None:
    from _cert_helpers import assert_one_line_error

    where = [] if "--tenant" in args else ["--token-endpoint", "https://127.0.0.1:9/token"]
    dpop_key = tmp_path / "dpop.key"
    result = run_cli(
        capsys,
        "token",
        "--mtls",
        "--dpop",
        "--dpop-key",
        dpop_key,
        "--client-id",
        APP,
        *where,
        "--cert",
        pem,
        "--scope",
        SCOPE,
        *(arg.format(missing=tmp_path / "missing") for arg in args),
    )
    line = assert_one_line_error(result, code, *fragments)
    assert "mtls=" not in line
    assert not dpop_key.exists()  # nothing is written before the options are found usable


def test_a_closed_credential_opens_new_connections_on_its_next_request(
    tenant: Emulator, pem: Path
) -> None:
    # As azure-core's transports reopen after close(): a credential closed by a `with` block
    # (or before it ever sent anything) still works when used again.
    credential = _mtls_credential(tenant, pem)
    credential.close()  # nothing sent yet: nothing to close
    assert credential.get_token(SCOPE).token
    credential.close()
    assert credential.get_token("api://other/.default").token
    credential.close()

    async def scenario() -> str:
        async_credential = AsyncCertificateCredential(
            None, APP, pem, issuer=tenant.issuer, verify=tenant.ca_file, mtls=True
        )
        await async_credential.close()
        await async_credential.get_token(SCOPE)
        await async_credential.close()
        token = (await async_credential.get_token("api://other/.default")).token
        await async_credential.close()
        return token

    assert asyncio.run(scenario())


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"verify": False}, "verify="),
        ({"auth": None}, "auth="),
        ({"transport": "mtls"}, "transport="),
        ({"mounts": {}}, "mounts="),
    ],
)
def test_http_client_refuses_keywords_that_would_drop_the_certificate_or_the_token(
    tenant: Emulator, pem: Path, kwargs: dict[str, Any], fragment: str
) -> None:
    from certauth.errors import InvalidArgumentError

    if kwargs.get("transport") == "mtls":
        kwargs = {"transport": httpx.HTTPTransport()}
    with _mtls_credential(tenant, pem) as credential:
        with pytest.raises(InvalidArgumentError) as caught:
            credential.http_client(SCOPE, **kwargs)
        assert fragment in str(caught.value)
    # Without mutual TLS a transport of one's own is fine: nothing to present.
    with CertificateCredential(
        None, APP, pem, issuer=tenant.issuer, verify=tenant.ca_file
    ) as plain:
        if "transport" in kwargs or "mounts" in kwargs:
            plain.http_client(SCOPE, **kwargs).close()
        else:
            with pytest.raises(InvalidArgumentError):
                plain.http_client(SCOPE, **kwargs)
