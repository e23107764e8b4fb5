"""Secrets never show up in reprs, CLI output, server answers or logs.

The suite-wide scan (``tests/_secret_scan.py``, wired in ``tests/conftest.py``) watches every
log line and error message of every test. This module checks that the scan itself works (it
finds secrets in every encoding and nothing else), then covers what the scan does not watch:
reprs, the CLI's stdout/stderr, and the emulator's error bodies. ``certauth token`` and
``certauth assertion`` print a token or an assertion on stdout because that is their job: only
that intended output is exempt.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _cert_helpers import run_cli
from _secret_scan import RecordingHandler, SecretRegistry

from certauth import (
    AccessToken,
    AccessTokenInfo,
    AsyncCertificateCredential,
    BearerAuth,
    CertificateCredential,
    ClientSecretCredential,
    Token,
    TokenVerifier,
    build_client_assertion,
)
from certauth._http import Send
from certauth.cache import EntryCipher, FileTokenCache
from certauth.certificates import Certificate, generate_certificate, load_certificate
from certauth.emulator import Emulator
from certauth.errors import TokenRequestError
from certauth.protocol import CLIENT_ASSERTION_TYPE, build_token_request
from certauth.verify import KeySet

CLIENT_ID = "66666666-7777-8888-9999-aaaaaaaaaaaa"
SECRET_APP = "77777777-8888-9999-aaaa-bbbbbbbbbbbb"
CLIENT_SECRET = "scan-me-client-secret-4f9a2c"
PASSWORD = "scan-me-password-8d1e7b"

Capsys = pytest.CaptureFixture[str]


# -- the scanner finds what it should, and only that ----------------------------------------------


def test_the_scanner_finds_secrets_in_any_encoding(rsa_cert: Certificate) -> None:
    registry = SecretRegistry()
    registry.add_private_key(rsa_cert.private_key, "key")
    key_pem = rsa_cert.private_key_pem().decode()
    numbers = rsa_cert.private_key.private_numbers()  # type: ignore[union-attr]
    assertion = build_client_assertion(rsa_cert, client_id=CLIENT_ID, audience="https://a/t")
    registry.add_jwt(assertion, "assertion")
    registry.add(PASSWORD, "password")
    leaks = {
        "PEM body": key_pem,
        "PEM re-wrapped at 76": "\n".join(
            "".join(key_pem.splitlines()[1:-1])[i : i + 76] for i in range(0, 1600, 76)
        ),
        "traditional PEM": _traditional_pem(rsa_cert),
        "decimal d": f"d={numbers.d}",
        "hex p": f"p: {numbers.p:x}",
        "a 60-character slice of q in hex": f"{numbers.q:X}"[40:100],
        "the assertion": f"sending {assertion}",
        "the password": f"password was {PASSWORD}!",
    }
    for name, text in leaks.items():
        assert registry.hits(text), name


def _traditional_pem(cert: Certificate) -> str:
    from cryptography.hazmat.primitives import serialization

    return cert.private_key.private_bytes(  # type: ignore[union-attr]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


def test_the_scanner_leaves_public_material_alone(rsa_cert: Certificate) -> None:
    registry = SecretRegistry()
    registry.add_private_key(rsa_cert.private_key, "key")
    assertion = build_client_assertion(rsa_cert, client_id=CLIENT_ID, audience="https://a/t")
    registry.add_jwt(assertion, "assertion")
    from cryptography.hazmat.primitives import serialization

    public = rsa_cert.x509.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header, claims, _ = assertion.split(".")
    for text in (
        rsa_cert.pem.decode(),
        public.decode(),
        f"{header}.{claims}",
        rsa_cert.thumbprint_sha1,
        rsa_cert.x5t_s256,
        str(rsa_cert.x509.public_key().public_numbers().n),  # type: ignore[union-attr]
    ):
        assert registry.hits(text) == []


def test_the_suite_wide_instrumentation_registers_what_it_meets(
    secret_registry: SecretRegistry, rsa_cert: Certificate
) -> None:
    fresh = generate_certificate("CN=scan-registered")
    assert secret_registry.hits(fresh.private_key_pem().decode())
    assertion = build_client_assertion(fresh, client_id=CLIENT_ID, audience="https://a/t")
    assert secret_registry.hits(assertion)
    load_certificate(rsa_cert.to_pfx("registered-" + PASSWORD), password="registered-" + PASSWORD)
    assert secret_registry.hits("registered-" + PASSWORD)
    with Emulator() as tenant:
        tenant.register_secret(SECRET_APP, "registered-" + CLIENT_SECRET)
        form = {
            "grant_type": "client_credentials",
            "client_id": SECRET_APP,
            "scope": "api://x/.default",
            "client_secret": "registered-" + CLIENT_SECRET,
        }
        token = httpx.post(tenant.token_endpoint, data=form).json()["access_token"]
    assert secret_registry.hits(token)
    assert secret_registry.hits("registered-" + CLIENT_SECRET)


def test_the_log_handler_sees_tracebacks_and_skips_the_peers() -> None:
    registry = SecretRegistry()
    registry.add("a-secret-that-is-long-enough", "secret")
    handler = RecordingHandler(registry)
    logger = logging.getLogger("certauth.scan-self-test")
    logger.addHandler(handler)
    try:
        try:
            raise ValueError("boom a-secret-that-is-long-enough")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    handler.handle(
        logging.makeLogRecord({"name": "azure.identity", "msg": "a-secret-that-is-long-enough"})
    )
    assert [where for where, _ in registry.texts] == ["log record certauth.scan-self-test:ERROR"]
    assert registry.leaks_since(0)


# -- reprs ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tenant(rsa_cert: Certificate) -> Iterator[Emulator]:
    with Emulator() as emulator:
        emulator.register(CLIENT_ID, rsa_cert, roles=["Things.Read"])
        emulator.register_secret(SECRET_APP, CLIENT_SECRET)
        yield emulator


def test_no_repr_or_str_shows_a_secret(
    tenant: Emulator, rsa_cert: Certificate, tmp_path: Path, secret_registry: SecretRegistry
) -> None:
    pfx = tmp_path / "app.pfx"
    pfx.write_bytes(rsa_cert.to_pfx(PASSWORD))
    cache = FileTokenCache(tmp_path / "cache")
    credential = CertificateCredential(
        tenant.tenant_id,
        CLIENT_ID,
        str(pfx),
        password=PASSWORD,
        token_endpoint=tenant.token_endpoint,
        cache=cache,
    )
    secret_credential = ClientSecretCredential(
        tenant.tenant_id, SECRET_APP, CLIENT_SECRET, token_endpoint=tenant.token_endpoint
    )
    access = credential.get_token("api://x/.default")
    info = secret_credential.get_token_info("api://x/.default")
    secret_registry.add_jwt(access.token, "an access token")
    assertion = build_client_assertion(rsa_cert, client_id=CLIENT_ID, audience="https://a/t")
    request = build_token_request(
        "https://a/t", CLIENT_ID, ["api://x/.default"], assertion=assertion
    )
    secret_request = build_token_request(
        "https://a/t", SECRET_APP, ["api://x/.default"], client_secret=CLIENT_SECRET
    )
    error = TokenRequestError(
        "refused", error="invalid_client", response={"client_assertion": assertion}
    )
    async_credential = AsyncCertificateCredential(
        tenant.tenant_id, CLIENT_ID, certificate=rsa_cert, token_endpoint=tenant.token_endpoint
    )
    objects = {
        "Certificate": rsa_cert,
        "Certificate from a PFX": load_certificate(pfx, password=PASSWORD),
        "CertificateCredential": credential,
        "ClientSecretCredential": secret_credential,
        "AsyncCertificateCredential": async_credential,
        "AccessToken": access,
        "AccessTokenInfo": info,
        "AccessToken (rebuilt)": AccessToken(access.token, access.expires_on),
        "AccessTokenInfo (rebuilt)": AccessTokenInfo(access.token, access.expires_on),
        "Token": Token(access.token, access.expires_on),
        "TokenRequest (assertion)": request,
        "TokenRequest (secret)": secret_request,
        "Send": Send("POST", "https://a/t", dict(secret_request.headers), secret_request.body),
        "EntryCipher": EntryCipher.from_private_key(rsa_cert.private_key),  # type: ignore[arg-type]
        "EntryCipher from a secret": EntryCipher.from_secret(CLIENT_SECRET),
        "FileTokenCache": cache,
        "KeySet": KeySet.from_jwks(tenant.jwks()),
        "TokenVerifier": TokenVerifier(jwks=tenant.jwks(), audience="api://x"),
        "BearerAuth": BearerAuth(credential, "api://x/.default"),
        "TokenRequestError": error,
    }
    leaks = {
        name: labels
        for name, value in objects.items()
        for text in (repr(value), str(value))
        if (labels := secret_registry.hits(text))
    }
    assert leaks == {}
    credential.close()
    secret_credential.close()
    asyncio.run(async_credential.close())


# -- the CLI --------------------------------------------------------------------------------------


def _clean(secret_registry: SecretRegistry, *texts: str) -> None:
    for text in texts:
        assert secret_registry.hits(text) == [], text[:300]


def test_cert_create_and_show_with_passwords(
    tmp_path: Path,
    capsys: Capsys,
    monkeypatch: pytest.MonkeyPatch,
    secret_registry: SecretRegistry,
) -> None:
    monkeypatch.setenv("SCAN_PW", PASSWORD)
    secret_registry.add(PASSWORD, "the password")
    created = run_cli(
        capsys,
        "cert",
        "create",
        "--subject",
        "CN=scan",
        "--out",
        tmp_path,
        "--pfx",
        "--bundle",
        "--password-env",
        "SCAN_PW",
        "--json",
    )
    assert created.code == 0, created.err
    secret_registry.add_private_key(
        load_certificate(tmp_path / "scan.pem", password=PASSWORD).private_key, "the new key"
    )
    monkeypatch.setenv("WRONG_PW", "scan-me-wrong-password-0c3f")
    secret_registry.add("scan-me-wrong-password-0c3f", "a wrong password")
    runs = [
        created,
        run_cli(capsys, "cert", "show", tmp_path / "scan.pfx", "--password-env", "SCAN_PW"),
        run_cli(
            capsys, "cert", "show", tmp_path / "scan.pem", "--password-env", "SCAN_PW", "--json"
        ),
        run_cli(capsys, "cert", "show", tmp_path / "scan.pfx", "--password-env", "WRONG_PW"),
        run_cli(
            capsys,
            "cert",
            "show",
            tmp_path / "scan.crt",
            "--key",
            tmp_path / "scan.key",
            "--password-env",
            "WRONG_PW",
        ),
        run_cli(capsys, "cert", "thumbprint", tmp_path / "scan.pfx", "--password-env", "SCAN_PW"),
        run_cli(capsys, "cert", "manifest", tmp_path / "scan.crt"),
    ]
    assert [r.code for r in runs] == [0, 0, 0, 3, 3, 0, 0]
    for result in runs:
        _clean(secret_registry, result.out, result.err)


def test_assertion_command_prints_the_assertion_only_on_stdout(
    tenant: Emulator,
    rsa_cert: Certificate,
    tmp_path: Path,
    capsys: Capsys,
    monkeypatch: pytest.MonkeyPatch,
    secret_registry: SecretRegistry,
) -> None:
    pem = tmp_path / "app.pem"
    pem.write_bytes(rsa_cert.private_key_pem(PASSWORD) + rsa_cert.pem)
    monkeypatch.setenv("SCAN_PW", PASSWORD)
    common = (
        "assertion",
        "--client-id",
        CLIENT_ID,
        "--token-endpoint",
        tenant.token_endpoint,
        "--cert",
        pem,
    )
    good = run_cli(capsys, *common, "--password-env", "SCAN_PW")
    assert good.code == 0, good.err
    assert secret_registry.hits(good.out)  # the intended output: the assertion itself
    _clean(secret_registry, good.err)
    monkeypatch.setenv("WRONG_PW", "scan-me-wrong-password-0c3f")
    failures = [
        run_cli(capsys, *common, "--password-env", "WRONG_PW"),
        run_cli(capsys, *common, "--password-env", "SCAN_PW", "--lifetime", "601"),
        run_cli(capsys, *common, "--password-env", "SCAN_PW", "--alg", "es256"),
        run_cli(capsys, *common),
    ]
    assert all(r.code in (2, 3) for r in failures), [(r.code, r.err) for r in failures]
    for result in failures:
        _clean(secret_registry, result.out, result.err)


@pytest.mark.parametrize("output", ["token", "json", "header", "env"])
def test_token_command_prints_the_token_only_where_asked(
    tenant: Emulator,
    rsa_cert: Certificate,
    tmp_path: Path,
    capsys: Capsys,
    monkeypatch: pytest.MonkeyPatch,
    secret_registry: SecretRegistry,
    output: str,
) -> None:
    pem = tmp_path / "app.pem"
    pem.write_bytes(rsa_cert.private_key_pem(PASSWORD) + rsa_cert.pem)
    monkeypatch.setenv("SCAN_PW", PASSWORD)
    monkeypatch.setenv("CERTAUTH_CACHE_DIR", str(tmp_path / "cache"))
    result = run_cli(
        capsys,
        "token",
        "--client-id",
        CLIENT_ID,
        "--token-endpoint",
        tenant.token_endpoint,
        "--cert",
        pem,
        "--password-env",
        "SCAN_PW",
        "--scope",
        "api://x/.default",
        "--output",
        output,
    )
    assert result.code == 0, result.err
    assert secret_registry.hits(result.out)  # the token, as asked
    _clean(secret_registry, result.err)
    # The cache holds the token encrypted: no file under it shows the token or the key.
    for path in (tmp_path / "cache").rglob("*"):
        if path.is_file():
            _clean(secret_registry, path.read_bytes().decode("latin-1"))


def test_token_command_failures_show_no_secret(
    tenant: Emulator,
    rsa_cert: Certificate,
    other_rsa_cert: Certificate,
    tmp_path: Path,
    capsys: Capsys,
    monkeypatch: pytest.MonkeyPatch,
    secret_registry: SecretRegistry,
) -> None:
    wrong = tmp_path / "other.pem"
    wrong.write_bytes(other_rsa_cert.private_key_pem() + other_rsa_cert.pem)
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text("scan-me-wrong-secret-value-71b2\n")
    secret_registry.add("scan-me-wrong-secret-value-71b2", "a wrong client secret")
    federated = tmp_path / "federated.jwt"
    forged = build_client_assertion(other_rsa_cert, client_id=CLIENT_ID, audience="https://x/t")
    federated.write_text(forged)
    monkeypatch.setenv("CERTAUTH_CACHE_DIR", str(tmp_path / "cache"))
    common = (
        "token",
        "--token-endpoint",
        tenant.token_endpoint,
        "--scope",
        "api://x/.default",
        "--no-cache",
    )
    runs = [
        run_cli(capsys, *common, "--client-id", CLIENT_ID, "--cert", wrong),
        run_cli(capsys, *common, "--client-id", SECRET_APP, "--client-secret-file", secret_file),
        run_cli(capsys, *common, "--client-id", CLIENT_ID, "--federated-token-file", federated),
        run_cli(capsys, *common, "--client-id", CLIENT_ID, "--cert", wrong, "--output", "json"),
    ]
    assert [r.code for r in runs] == [4, 4, 4, 4], [(r.code, r.err) for r in runs]
    for result in runs:
        _clean(secret_registry, result.out, result.err)


def test_verify_and_decode_never_echo_the_token(
    tenant: Emulator, rsa_cert: Certificate, capsys: Capsys, secret_registry: SecretRegistry
) -> None:
    credential = CertificateCredential(
        tenant.tenant_id, CLIENT_ID, certificate=rsa_cert, token_endpoint=tenant.token_endpoint
    )
    token = credential.get_token("api://x/.default").token
    credential.close()
    runs = [
        run_cli(capsys, "verify", token, "--issuer", tenant.issuer, "--audience", "api://other"),
        run_cli(
            capsys,
            "verify",
            token,
            "--issuer",
            tenant.issuer,
            "--audience",
            "api://x",
            "--require-role",
            "Nope",
        ),
        run_cli(
            capsys,
            "verify",
            token[:-8] + "AAAAAAAA",
            "--jwks-uri",
            tenant.jwks_uri,
            "--audience",
            "api://x",
            "--json",
        ),
        run_cli(capsys, "verify", token, "--issuer", tenant.issuer, "--audience", "api://x"),
        run_cli(capsys, "decode", token),
        run_cli(capsys, "decode", token, "--json"),
    ]
    assert [r.code for r in runs] == [6, 6, 6, 0, 0, 0], [(r.code, r.err) for r in runs]
    for result in runs:
        _clean(secret_registry, result.out, result.err)


# -- the emulator's answers -----------------------------------------------------------------------


def test_emulator_error_bodies_do_not_echo_credentials(
    tenant: Emulator,
    rsa_cert: Certificate,
    other_rsa_cert: Certificate,
    secret_registry: SecretRegistry,
) -> None:
    wrong_secret = "scan-me-emulator-wrong-secret-5e0d"
    secret_registry.add(wrong_secret, "a wrong client secret")
    forged = build_client_assertion(
        other_rsa_cert, client_id=CLIENT_ID, audience=tenant.token_endpoint
    )
    basic = base64.b64encode(f"{SECRET_APP}:{wrong_secret}".encode()).decode()
    base = {"grant_type": "client_credentials", "scope": "api://x/.default"}
    with httpx.Client(timeout=5) as client:
        answers = [
            client.post(
                tenant.token_endpoint,
                data={**base, "client_id": SECRET_APP, "client_secret": wrong_secret},
            ),
            client.post(
                tenant.token_endpoint, data=base, headers={"Authorization": f"Basic {basic}"}
            ),
            client.post(
                tenant.token_endpoint,
                data={
                    **base,
                    "client_id": CLIENT_ID,
                    "client_assertion": forged,
                    "client_assertion_type": CLIENT_ASSERTION_TYPE,
                },
            ),
            client.post(
                tenant.token_endpoint,
                data={
                    **base,
                    "client_id": CLIENT_ID,
                    "client_assertion": forged,
                    "client_assertion_type": "urn:wrong",
                },
            ),
        ]
    assert [a.status_code for a in answers] == [401, 401, 401, 400]
    for response in answers:
        _clean(secret_registry, response.text, str(dict(response.headers)))


def test_debug_logging_of_every_library_shows_no_secret(
    tenant: Emulator, rsa_cert: Certificate, secret_registry: SecretRegistry
) -> None:
    # Everything at DEBUG (httpx, httpcore, asyncio, certauth): the token flows, sync and async,
    # with a retry, and the records are scanned by the suite-wide handler too.
    registry_view = SecretRegistry()
    handler = RecordingHandler(registry_view)
    root = logging.getLogger()
    saved = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    try:
        tenant.inject_faults(status=503, count=1)
        with CertificateCredential(
            tenant.tenant_id,
            CLIENT_ID,
            certificate=rsa_cert,
            token_endpoint=tenant.token_endpoint,
        ) as credential:
            token = credential.get_token("api://x/.default").token

        async def fetch() -> str:
            async with AsyncCertificateCredential(
                tenant.tenant_id,
                CLIENT_ID,
                certificate=rsa_cert,
                token_endpoint=tenant.token_endpoint,
            ) as credential:
                return (await credential.get_token("api://x/.default")).token

        other = asyncio.run(fetch())
    finally:
        root.removeHandler(handler)
        root.setLevel(saved)
        tenant.clear_faults()
    assert len(registry_view.texts) > 5  # the flows did log
    texts = " ".join(text for _, text in registry_view.texts)
    assert secret_registry.hits(token)
    assert secret_registry.hits(other)
    assert secret_registry.hits(texts) == []
