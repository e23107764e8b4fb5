"""A tenant with an emulated Key Vault (over TLS: the azure-keyvault SDK needs https).

Two apps: ``billing-app``, whose certificate and key live in the vault (``billing`` RSA,
``billing-ec`` EC P-256), and ``signer-app``, the service's own identity, whose certificate is
a file and which the vault's access policy lets ``get`` and ``sign``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from certauth import CertificateCredential
from certauth.certificates import Certificate
from certauth.emulator import Emulator
from certauth.emulator.keyvault import EmulatedVault


@dataclass
class VaultSetup:
    tenant: Emulator
    vault: EmulatedVault
    billing: Certificate
    billing_ec: Certificate
    signer_cert_file: Path
    credential: CertificateCredential

    def credential_kwargs(self) -> dict[str, object]:
        return {
            "certificate_path": str(self.signer_cert_file),
            "authority": self.tenant.authority_host,
            "verify": self.tenant.ca_file,
        }


@pytest.fixture(scope="module")
def kv(rsa_cert: Certificate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultSetup]:
    folder = tmp_path_factory.mktemp("kv")
    signer_file = folder / "signer.pem"
    signer_file.write_bytes(rsa_cert.pem + rsa_cert.private_key_pem())
    with Emulator(tls=True) as tenant:
        vault = tenant.create_vault("certvault")
        billing = vault.create_certificate("billing", "CN=billing-api")
        billing_ec = vault.create_certificate("billing-ec", "CN=billing-ec", kty="EC")
        tenant.register("billing-app", billing)
        tenant.register("signer-app", rsa_cert)
        vault.grant("signer-app", ["get", "sign"])
        credential = CertificateCredential(
            tenant.tenant_id,
            "signer-app",
            str(signer_file),
            authority=tenant.authority_host,
            verify=tenant.ca_file,
        )
        yield VaultSetup(tenant, vault, billing, billing_ec, signer_file, credential)


@pytest.fixture(autouse=True)
def _clean_vault(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "kv" in request.fixturenames:
        setup: VaultSetup = request.getfixturevalue("kv")
        setup.vault.clear_faults()
        setup.vault.grant("signer-app", ["get", "sign"])
