"""Keys that never leave their store, through the whole stack: credentials (sync and async) with
a key in a SoftHSM2 token (``key_path="pkcs11:..."`` or ``signer=``), ``certauth token`` and
``certauth assertion`` with ``--key pkcs11:...``, and a service that gets its app's tokens with
a Key Vault key while holding only a credential for the vault."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import PIN, SoftHsm, VaultSetup

from certauth import AsyncCertificateCredential, CertificateCredential, verify_access_token
from certauth.certificates import Certificate
from certauth.cli.main import main
from certauth.emulator import Emulator

pytest.importorskip("pkcs11")

APP = "7a1d1b2c-0000-4000-8000-00000000c0c3"
SCOPE = "api://billing/.default"


@pytest.fixture(scope="module")
def token_key(softhsm: SoftHsm) -> Iterator[tuple[str, Certificate]]:
    """A key made in the token, its URI and its certificate (public)."""
    from certauth.signers.pkcs11 import generate_certificate_in_token

    uri = "pkcs11:token=certauth;object=e2e-wiring"
    with generate_certificate_in_token(
        uri, "CN=token-service", module=softhsm.module, pin=PIN
    ) as signer:
        yield uri, signer.certificate


@pytest.fixture
def tenant(token_key: tuple[str, Certificate]) -> Iterator[Emulator]:
    with Emulator(strict=True) as emulator:
        emulator.register(APP, token_key[1], roles=["Invoices.Read"])
        yield emulator


@pytest.fixture(autouse=True)
def _module(softhsm: SoftHsm, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CERTAUTH_PKCS11_MODULE", softhsm.module)


def test_a_credential_with_key_path_pkcs11_gets_a_token_sync_and_async(
    tenant: Emulator, token_key: tuple[str, Certificate], tmp_path: Path
) -> None:
    uri, certificate = token_key
    crt = tmp_path / "service.crt"
    crt.write_bytes(certificate.pem)  # only the public part is a file
    with CertificateCredential(
        tenant.tenant_id, APP, str(crt), key_path=uri, password=PIN,
        authority=tenant.authority_host,
    ) as credential:  # fmt: skip
        token = credential.get_token(SCOPE).token
    claims = verify_access_token(token, issuer=tenant.issuer, audience="api://billing")
    assert claims["appid"] == APP
    assert tenant.last_thumbprint == certificate.x5t_s256

    async def fetch() -> str:
        # The certificate stored beside the key in the token: no file at all.
        async with AsyncCertificateCredential(
            tenant.tenant_id, APP, key_path=uri, password=PIN, authority=tenant.authority_host
        ) as credential:
            return (await credential.get_token(SCOPE)).token

    assert (
        verify_access_token(asyncio.run(fetch()), issuer=tenant.issuer, audience="api://billing")[
            "appid"
        ]
        == APP
    )
    assert tenant.request_count == 2


def test_the_cli_takes_the_token_key_for_token_and_assertion(
    tenant: Emulator,
    token_key: tuple[str, Certificate],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    cli_env: None,
    softhsm: SoftHsm,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uri, certificate = token_key
    pin_file = tmp_path / "pin"
    pin_file.write_text(PIN + "\n")
    common = [
        "--client-id", APP, "--tenant", tenant.tenant_id,
        "--authority-host", tenant.authority_host, "--key", uri,
        "--pkcs11-module", softhsm.module, "--pin-file", str(pin_file),
    ]  # fmt: skip
    assert main(["token", *common, "--scope", SCOPE, "--output", "json"]) == 0
    issued = json.loads(capsys.readouterr().out)
    assert (
        verify_access_token(issued["access_token"], issuer=tenant.issuer, audience="api://billing")[
            "appid"
        ]
        == APP
    )
    assert main(["assertion", *common, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["header"]["x5t#S256"] == certificate.x5t_s256
    assert shown["claims"]["aud"] == tenant.token_endpoint
    # The PIN never came from argv, and is nowhere in the output.
    out, err = capsys.readouterr()
    assert PIN not in out + err
    # A pin-value in the URI is refused on the command line.
    assert main(["token", *common[:-4], "--key", f"{uri}?pin-value={PIN}", "--scope", SCOPE]) == 2
    assert "a command line is visible to every user" in capsys.readouterr().err


def test_key_vault_keys_sign_for_a_service_that_holds_only_a_vault_credential(
    kv: VaultSetup,
) -> None:
    """billing-app's key never leaves the vault: the service authenticates to the vault as
    signer-app (its own certificate file) and gets billing-app's tokens, sync and async."""
    from certauth.signers.keyvault import KeyVaultSigner

    with (
        KeyVaultSigner(
            kv.vault.url, "billing", credential=kv.credential, verify=kv.tenant.ca_file
        ) as signer,
        CertificateCredential(
            kv.tenant.tenant_id, "billing-app", signer=signer,
            authority=kv.tenant.authority_host, verify=kv.tenant.ca_file,
        ) as credential,
    ):  # fmt: skip
        token = credential.get_token(SCOPE).token
    assert (
        verify_access_token(
            token, issuer=kv.tenant.issuer, audience="api://billing", verify=kv.tenant.ca_file
        )["appid"]
        == "billing-app"
    )

    async def fetch() -> str:
        async_vault_credential = AsyncCertificateCredential(
            kv.tenant.tenant_id,
            "signer-app",
            **kv.credential_kwargs(),  # type: ignore[arg-type]
        )
        async with async_vault_credential:
            vault_signer = await KeyVaultSigner.open_async(
                kv.vault.url, "billing", credential=async_vault_credential,
                verify=kv.tenant.ca_file,
            )  # fmt: skip
            async with AsyncCertificateCredential(
                kv.tenant.tenant_id, "billing-app", signer=vault_signer,
                authority=kv.tenant.authority_host, verify=kv.tenant.ca_file,
            ) as credential:  # fmt: skip
                result = (await credential.get_token(SCOPE)).token
            await vault_signer.aclose()
            return result

    assert (
        verify_access_token(
            asyncio.run(fetch()),
            issuer=kv.tenant.issuer,
            audience="api://billing",
            verify=kv.tenant.ca_file,
        )["appid"]
        == "billing-app"
    )
