"""azure-identity with certificates made by ``certauth cert create``, against the emulator.

The sync ``CertificateCredential`` signs through MSAL with RS256 + ``x5t`` and passes
the strict emulator from the bundle PEM and the PFX, encrypted or not, with and without the
certificate chain. The async one builds its own PS256 + ``x5t#S256`` assertion that lives 30
minutes: Entra (the emulator's default mode) takes it; strict mode's RFC 7523 lifetime cap
(10 minutes) refuses it, with the reason, which this test pins down.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import jwt
import pytest
from _interop import CLIENT_ID, SCOPE, Generated, IssuedTokens

from certauth.emulator import Emulator

pytestmark = pytest.mark.interop
identity = pytest.importorskip("azure.identity")
identity_aio = pytest.importorskip("azure.identity.aio")


def _keywords(tenant: Emulator) -> dict[str, object]:
    return {
        # With the scheme: Python 3.10 parses "127.0.0.1:PORT" as scheme "127.0.0.1"
        # (see tests/emulator/test_emulator_interop.py).
        "authority": tenant.authority_host,
        "connection_verify": tenant.ca_file,
        "disable_instance_discovery": True,
    }


@pytest.mark.parametrize(
    ("file", "encrypted", "chain"),
    [
        (".pem", False, False),
        (".pem", True, False),
        (".pfx", False, False),
        (".pfx", True, True),
    ],
    ids=["bundle", "encrypted-bundle", "pfx", "encrypted-pfx-with-chain"],
)
def test_sync_credential_passes_the_strict_emulator(
    strict_tenant: Emulator,
    generated: Generated,
    generated_encrypted: Generated,
    issued: IssuedTokens,
    file: str,
    encrypted: bool,
    chain: bool,
) -> None:
    which = generated_encrypted if encrypted else generated
    credential = identity.CertificateCredential(
        strict_tenant.tenant_id,
        CLIENT_ID,
        certificate_path=str(which.path(file)),
        password=which.password,
        send_certificate_chain=chain,
        **_keywords(strict_tenant),
    )
    token = credential.get_token(SCOPE)
    claims = jwt.decode(token.token, options={"verify_signature": False})
    assert claims["aud"] == "api://interop"
    assert claims["azpacr"] == "2"  # a certificate credential, as Entra marks it
    assert issued.algs() == ["RS256"]  # azure-identity sync: always RS256 + x5t (via MSAL)
    assert strict_tenant.last_thumbprint == which.report["x5t#S256"]
    credential.close()


def _async_token(tenant: Emulator, certificate: Path, password: str | None) -> object:
    from azure.core.pipeline.transport import AsyncioRequestsTransport

    async def main() -> object:
        credential = identity_aio.CertificateCredential(
            tenant.tenant_id,
            CLIENT_ID,
            certificate_path=str(certificate),
            password=password,
            transport=AsyncioRequestsTransport(connection_verify=tenant.ca_file),
            **_keywords(tenant),
        )
        async with credential:
            return await credential.get_token(SCOPE)

    return asyncio.run(main())


def test_async_credential_signs_ps256_which_entra_mode_accepts(
    generated: Generated, issued: IssuedTokens, no_ca_bundle_variables: None
) -> None:
    with Emulator(tls=True) as tenant:
        tenant.register(CLIENT_ID, generated.path(".crt"))
        token = _async_token(tenant, generated.path(".pem"), None)
        assert token.token  # type: ignore[attr-defined]
        assert issued.algs() == ["PS256"]
        assert tenant.last_thumbprint == generated.report["x5t#S256"]


def test_async_credential_exceeds_strict_modes_lifetime_cap(
    strict_tenant: Emulator, generated_encrypted: Generated
) -> None:
    from azure.core.exceptions import ClientAuthenticationError

    with pytest.raises(ClientAuthenticationError) as caught:
        _async_token(strict_tenant, generated_encrypted.path(".pfx"), generated_encrypted.password)
    # azure-identity's async assertion lives 1800 s; strict mode caps assertions at 600 s.
    message = str(caught.value)
    assert "AADSTS700024" in message
    assert "(strict mode) it is valid for 1800 s, more than the 600 s cap" in message
