"""certauth token's look in the file cache before it builds a credential (issue 19).

``certauth._cache_lookup.stored_token`` must find exactly the token the credential would take
from the cache, and decline (``None``) whenever the credential might do anything else: then the
credential is built as before and decides. Its two rules that restate the credential's (the
entry's name and when a stored token is due for renewal) are checked against the credential's
own here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from certauth import CertificateCredential, FileTokenCache
from certauth._cache_lookup import REFRESH_MARGIN, entry_key, refresh_at, stored_token
from certauth.certificates import Certificate, generate_certificate
from certauth.cli.main import main
from certauth.credential.planner import DEFAULT_REFRESH_MARGIN
from certauth.emulator import Emulator
from certauth.protocol import Token, normalize_scopes

CLIENT = "11111111-2222-3333-4444-5555555555cc"
SCOPE = "api://lookup/.default"


@pytest.fixture(scope="module")
def tenant(rsa_cert: Certificate) -> Iterator[Emulator]:
    with Emulator() as emulator:
        emulator.register(CLIENT, rsa_cert)
        yield emulator


@pytest.fixture
def pem(rsa_cert: Certificate, tmp_path: Path) -> Path:
    path = tmp_path / "app.pem"
    path.write_bytes(rsa_cert.private_key_pem() + rsa_cert.pem)
    return path


@pytest.fixture
def cache(tmp_path: Path) -> FileTokenCache:
    return FileTokenCache(tmp_path / "cache")


def _store(tenant: Emulator, cert_path: Path, cache: FileTokenCache, **kwargs: Any) -> Token:
    """What a credential fetches and stores (the token the lookup must then find)."""
    with CertificateCredential(
        tenant.tenant_id,
        CLIENT,
        str(cert_path),
        authority=tenant.authority_host,
        cache=cache,
        **kwargs,
    ) as credential:
        return credential.request_token(SCOPE)


def _lookup(emulator: Emulator, cert_path: Path, cache: FileTokenCache, **kwargs: Any) -> Any:
    arguments: dict[str, Any] = {
        "tenant": emulator.tenant_id,
        "client_id": CLIENT,
        "cert_path": str(cert_path),
        "key_path": None,
        "password": None,
        "host": emulator.authority_host,
        "token_endpoint": None,
        "issuer": None,
        "b2c_policy": None,
        "alg": None,
        "scopes": (SCOPE,),
    }
    return stored_token(cache, **(arguments | kwargs))


def test_finds_the_token_the_credential_stored(
    tenant: Emulator, pem: Path, cache: FileTokenCache
) -> None:
    assert _lookup(tenant, pem, cache) is None
    token = _store(tenant, pem, cache)
    requests = tenant.request_count
    found = _lookup(tenant, pem, cache)
    assert found is not None
    assert (found.access_token, found.expires_on) == (token.access_token, token.expires_on)
    # The scopes are normalised as the credential normalises them (a bare resource gets
    # /.default for Entra ID).
    bare = _lookup(tenant, pem, cache, scopes=(SCOPE.removesuffix("/.default"),))
    assert bare is not None
    assert bare.access_token == token.access_token
    assert tenant.request_count == requests


def test_the_entry_name_is_the_credentials_cache_key(
    tenant: Emulator, pem: Path, cache: FileTokenCache, rsa_cert: Certificate
) -> None:
    scopes = ("api://b/.default", "api://b/.default")
    with CertificateCredential(
        tenant.tenant_id, CLIENT, str(pem), authority=tenant.authority_host, cache=cache
    ) as credential:
        core = credential._core
        normalized = normalize_scopes(scopes, entra=True)
        assert core.key_for(scopes) == entry_key(
            core.authority.token_endpoint, CLIENT, rsa_cert.x5t_s256, normalized
        )


@pytest.mark.parametrize("lifetime", [60, 599, 600, 3599, 86400])
@pytest.mark.parametrize("refresh_in", [None, 10, 1800])
def test_the_refresh_rule_is_the_credentials(
    tenant: Emulator, pem: Path, lifetime: int, refresh_in: int | None
) -> None:
    assert REFRESH_MARGIN == DEFAULT_REFRESH_MARGIN
    token = Token(
        access_token="x",
        expires_on=1_000_000 + lifetime,
        expires_in=lifetime,
        refresh_on=None if refresh_in is None else 1_000_000 + refresh_in,
    )
    with CertificateCredential(
        tenant.tenant_id, CLIENT, str(pem), authority=tenant.authority_host
    ) as credential:
        assert refresh_at(token) == credential._core.refresh_at(token)


def test_a_separate_key_file_and_an_encrypted_key(
    tenant: Emulator, rsa_cert: Certificate, cache: FileTokenCache, tmp_path: Path
) -> None:
    cert = tmp_path / "app.crt"
    cert.write_bytes(rsa_cert.pem)
    key = tmp_path / "app.key"
    key.write_bytes(rsa_cert.private_key_pem("s3cret-pw"))
    token = _store(tenant, cert, cache, key_path=str(key), password="s3cret-pw")
    found = _lookup(tenant, cert, cache, key_path=str(key), password="s3cret-pw")
    assert found is not None
    assert found.access_token == token.access_token
    assert _lookup(tenant, cert, cache, key_path=str(key), password="wrong") is None
    assert _lookup(tenant, cert, cache, key_path=str(key)) is None


def _chain(rsa_cert: Certificate, other_rsa_cert: Certificate, path: Path) -> Path:
    path.write_bytes(rsa_cert.private_key_pem() + rsa_cert.pem + other_rsa_cert.pem)
    return path


def _der(rsa_cert: Certificate, path: Path) -> Path:
    path.write_bytes(rsa_cert.der)
    return path


@pytest.mark.parametrize("layout", ["chain", "der"])
def test_declines_files_it_would_have_to_parse(
    tenant: Emulator,
    rsa_cert: Certificate,
    other_rsa_cert: Certificate,
    cache: FileTokenCache,
    tmp_path: Path,
    layout: str,
) -> None:
    """A chain (the other certificates are not bound by the entry) or a DER/PFX file: the
    credential loads them, and serves the stored token itself."""
    key: Path | None = None
    if layout == "chain":
        cert = _chain(rsa_cert, other_rsa_cert, tmp_path / "chain.pem")
    else:
        cert = _der(rsa_cert, tmp_path / "app.der")
        key = tmp_path / "app.key"
        key.write_bytes(rsa_cert.private_key_pem())
    extra = {"key_path": str(key)} if key else {}
    token = _store(tenant, cert, cache, **extra)
    assert _lookup(tenant, cert, cache, **extra) is None
    requests = tenant.request_count
    assert _store(tenant, cert, cache, **extra).access_token == token.access_token
    assert tenant.request_count == requests


def test_declines_what_the_credential_would_refuse_or_fetch(
    tenant: Emulator, pem: Path, cache: FileTokenCache, rsa_cert: Certificate, tmp_path: Path
) -> None:
    token = _store(tenant, pem, cache)
    assert _lookup(tenant, pem, cache) is not None
    # Settings the entry does not name, checked again: ES256 does not fit an RSA key, B2C
    # takes no certificate.
    assert _lookup(tenant, pem, cache, alg="ES256") is None
    assert _lookup(tenant, pem, cache, b2c_policy="B2C_1_signin") is None
    # Another certificate for the same key: another entry name.
    renewed = generate_certificate("CN=renewed", key=rsa_cert.private_key)
    other = tmp_path / "renewed.pem"
    other.write_bytes(renewed.private_key_pem() + renewed.pem)
    assert _lookup(tenant, other, cache) is None
    # Another key with this certificate: the entry does not open.
    stranger = generate_certificate("CN=stranger", key_type="rsa2048")
    mismatched = tmp_path / "mismatched.pem"
    mismatched.write_bytes(stranger.private_key_pem() + rsa_cert.pem)
    assert _lookup(tenant, mismatched, cache) is None
    # Due for renewal: the credential would fetch.
    found = _lookup(tenant, pem, cache)
    assert _lookup(tenant, pem, cache, now=refresh_at(found) - 1) is not None
    assert _lookup(tenant, pem, cache, now=refresh_at(found)) is None
    # A damaged entry is not served.
    (entry,) = (cache.directory).glob("*.token")
    blob = bytearray(entry.read_bytes())
    blob[-1] ^= 1
    entry.write_bytes(bytes(blob))
    assert _lookup(tenant, pem, cache) is None
    assert token.access_token


def test_an_entry_of_a_token_endpoint_is_found_by_that_endpoint(
    tenant: Emulator, pem: Path, cache: FileTokenCache
) -> None:
    with CertificateCredential(
        None, CLIENT, str(pem), token_endpoint=tenant.token_endpoint, cache=cache
    ) as credential:
        token = credential.request_token(SCOPE)
    found = _lookup(
        tenant, pem, cache, tenant=None, host=None, token_endpoint=tenant.token_endpoint
    )
    assert found is not None
    assert found.access_token == token.access_token


@pytest.mark.usefixtures("cli_env")
def test_the_cli_refuses_what_it_refused_before_with_a_token_in_the_cache(
    tenant: Emulator, pem: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A cached token does not let a setting the credential refuses pass: the same message
    and exit code as without a cache."""
    base = ["token", "--tenant", tenant.tenant_id, "--authority-host", tenant.authority_host]
    base += ["--client-id", CLIENT, "--cert", str(pem), "--scope", SCOPE]
    assert main(base) == 0
    token = capsys.readouterr().out
    requests = tenant.request_count
    assert main(base) == 0
    assert capsys.readouterr().out == token
    assert tenant.request_count == requests
    refused = main([*base, "--alg", "ES256"])
    refused_err = capsys.readouterr().err
    uncached = main([*base, "--alg", "ES256", "--no-cache"])
    assert (refused, refused_err) == (uncached, capsys.readouterr().err)
    assert refused != 0
    assert "ES256" in refused_err


def test_token_fields_survive_the_entry(tenant: Emulator, pem: Path, cache: FileTokenCache) -> None:
    token = _store(tenant, pem, cache)
    found = _lookup(tenant, pem, cache)
    assert found is not None
    shown = {f.name for f in dataclasses.fields(Token)} - {"extra"}
    assert {n: getattr(found, n) for n in shown} == {n: getattr(token, n) for n in shown}


def test_the_private_key_is_read_as_when_loading(rsa_cert: Certificate, tmp_path: Path) -> None:
    """The lookup's key is the one load_certificate would load (PKCS#8 or traditional PEM)."""
    from certauth._keyfiles import peek_pem_files

    traditional = rsa_cert.require_private_key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    path = tmp_path / "trad.pem"
    path.write_bytes(rsa_cert.pem + traditional)
    peeked = peek_pem_files(str(path), key=None, password=None)
    assert peeked is not None
    der, key = peeked
    assert der == rsa_cert.der
    assert key.private_numbers() == rsa_cert.require_private_key().private_numbers()
