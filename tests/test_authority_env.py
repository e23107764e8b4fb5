"""``AZURE_AUTHORITY_HOST`` is the default ``authority=``, as azure-identity's credentials
read it."""

from __future__ import annotations

import pytest

from certauth import AsyncCertificateCredential, CertificateCredential
from certauth.certificates import Certificate
from certauth.emulator import Emulator
from certauth.errors import TransportError

SCOPE = "api://billing/.default"


@pytest.fixture
def tenant(rsa_cert: Certificate) -> Emulator:
    with Emulator() as emulator:
        emulator.register("app", rsa_cert)
        yield emulator  # type: ignore[misc]


def test_the_variable_names_the_cloud_when_authority_is_not_given(
    tenant: Emulator, rsa_cert: Certificate, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", tenant.authority_host)
    with CertificateCredential(tenant.tenant_id, "app", certificate=rsa_cert) as credential:
        assert credential.get_token(SCOPE).token
    assert tenant.request_count == 1


async def _async_token(tenant: Emulator, rsa_cert: Certificate) -> str:
    async with AsyncCertificateCredential(
        tenant.tenant_id, "app", certificate=rsa_cert
    ) as credential:
        return (await credential.get_token(SCOPE)).token


def test_the_async_credential_reads_it_too(
    tenant: Emulator, rsa_cert: Certificate, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    monkeypatch.setenv("AZURE_AUTHORITY_HOST", tenant.authority_host)
    assert asyncio.run(_async_token(tenant, rsa_cert))


def test_authority_given_wins_and_a_token_endpoint_ignores_the_variable(
    tenant: Emulator, rsa_cert: Certificate, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", "http://127.0.0.1:9")  # nothing listens there
    with CertificateCredential(
        tenant.tenant_id, "app", certificate=rsa_cert, authority=tenant.authority_host
    ) as credential:
        assert credential.get_token(SCOPE).token
    with CertificateCredential(
        tenant.tenant_id, "app", certificate=rsa_cert, token_endpoint=tenant.token_endpoint
    ) as credential:
        assert credential.get_token(SCOPE).token
    # Without authority=, the variable is used: the closed port is tried.
    with (
        CertificateCredential(tenant.tenant_id, "app", certificate=rsa_cert, timeout=2) as bad,
        pytest.raises(TransportError, match=r"127\.0\.0\.1:9\b"),
    ):
        bad.get_token(SCOPE)
