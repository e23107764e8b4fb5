"""A real PKCS#11 token for the signer tests: SoftHSM2, initialised in a temporary directory.

SoftHSM2 reads ``SOFTHSM2_CONF`` once, when the module is initialised in a process, and
python-pkcs11 keeps one initialised module per path for the process: so the tokens are made once
per test process (each xdist worker has its own directory), before any test loads the module,
and every test uses its own key labels. ``certauth`` holds the keys; ``certauth-pins`` is only
ever opened with a wrong PIN (a process logged in to a token is not asked for the PIN again, so
the wrong-PIN checks need a token no other test logs in to).

And a tenant with an emulated Key Vault (over TLS: the azure-keyvault SDK needs https).

Two apps: ``billing-app``, whose certificate and key live in the vault (``billing`` RSA,
``billing-ec`` EC P-256), and ``signer-app``, the service's own identity, whose certificate is
a file and which the vault's access policy lets ``get`` and ``sign``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from certauth import CertificateCredential
from certauth.certificates import Certificate
from certauth.emulator import Emulator
from certauth.emulator.keyvault import EmulatedVault

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
#: Long enough for the suite's secret scan to look for them (it skips values under 8 characters).
PIN = "pin-4711-correct-horse"
SO_PIN = "so-pin-0815-battery-staple"
WRONG_PIN = "pin-9999-wrong-battery"


@dataclass(frozen=True)
class SoftHsm:
    """The tokens: the module, the configuration and the PINs."""

    module: str
    conf: Path
    pin: str
    directory: Path

    def env(self) -> dict[str, str]:
        """The environment a subprocess needs to see the same tokens."""
        return {**os.environ, "SOFTHSM2_CONF": str(self.conf)}


def _missing() -> str | None:
    if shutil.which("softhsm2-util") is None:
        return "softhsm2-util is not installed (scripts/ensure-services installs SoftHSM2)"
    if not os.path.isfile(MODULE):
        return f"the SoftHSM2 module {MODULE} is missing"
    try:
        import pkcs11  # noqa: F401
    except ImportError:
        return "python-pkcs11 is not installed (the pkcs11 extra)"
    return None


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsm]:
    """Two initialised SoftHSM2 tokens, ``certauth`` and ``certauth-pins``, for this process."""
    reason = _missing()
    if reason:
        pytest.skip(reason)

    directory = tmp_path_factory.mktemp("softhsm")
    tokens = directory / "tokens"
    tokens.mkdir()
    conf = directory / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n",
        encoding="utf-8",
    )
    saved = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    for label in ("certauth", "certauth-pins"):
        subprocess.run(
            [
                "softhsm2-util",
                "--init-token",
                "--free",
                "--label",
                label,
                "--pin",
                PIN,
                "--so-pin",
                SO_PIN,
            ],
            env=env,
            check=True,
            capture_output=True,
        )
    try:
        yield SoftHsm(MODULE, conf, PIN, directory)
    finally:
        if saved is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = saved


@pytest.fixture(autouse=True)
def _register_pins(secret_registry: object) -> None:
    """The PINs are secrets: the suite's scan fails a test whose errors or logs show one."""
    for value, label in ((PIN, "token PIN"), (SO_PIN, "SO PIN"), (WRONG_PIN, "wrong PIN")):
        secret_registry.add(value, label)  # type: ignore[attr-defined]


_counter = [0]


@pytest.fixture
def label(request: pytest.FixtureRequest) -> str:
    """A key label no other test of this process uses."""
    _counter[0] += 1
    return f"k{_counter[0]}-{request.node.name[:40]}".replace("[", "-").replace("]", "")


# -- Azure Key Vault ------------------------------------------------------------------------------


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
