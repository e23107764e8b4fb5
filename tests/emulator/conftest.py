"""Fixtures for the emulator tests: running emulators, an HTTP client, odd certificates."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import httpx
import pytest
from _emulator_helpers import CLIENT_ID
from _graph_helpers import APP, GRAPH, OTHER, Graph, graph_token
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from certauth.certificates import Certificate, generate_certificate
from certauth.emulator import Emulator


@pytest.fixture
def emulator(rsa_cert: Certificate) -> Iterator[Emulator]:
    """An emulator in entra mode with ``CLIENT_ID`` registered (certificate, role Things.Read)."""
    with Emulator() as tenant:
        tenant.register(CLIENT_ID, rsa_cert, roles=["Things.Read"])
        yield tenant


@pytest.fixture
def strict_emulator(rsa_cert: Certificate) -> Iterator[Emulator]:
    """The same in strict mode."""
    with Emulator(strict=True) as tenant:
        tenant.register(CLIENT_ID, rsa_cert, roles=["Things.Read"])
        yield tenant


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """A plain httpx client (keep-alive, timeouts set)."""
    with httpx.Client(timeout=10) as client:
        yield client


@pytest.fixture(scope="session")
def weak_cert() -> Certificate:
    """An RSA-1024 certificate (Entra ID: AADSTS50032); certauth will not generate one."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - on purpose
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "weak")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return Certificate(cert, key)


@pytest.fixture(scope="session")
def expired_cert() -> Certificate:
    """A certificate that expired about a year ago."""
    return generate_certificate(
        "CN=expired", days=365, now=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=730)
    )


@pytest.fixture(scope="session")
def future_cert() -> Certificate:
    """A certificate valid only from ten days from now."""
    return generate_certificate(
        "CN=future", days=30, now=dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=10)
    )


@pytest.fixture(scope="session")
def new_cert() -> Certificate:
    """The certificate a key rotation adds (Graph addKey tests)."""
    return generate_certificate("CN=certauth-next", key_type="rsa2048")


@pytest.fixture(scope="session")
def stranger_cert() -> Certificate:
    """A certificate no app has (Graph addKey tests)."""
    return generate_certificate("CN=certauth-stranger", key_type="rsa2048")


# -- Graph (tests/emulator/test_emulator_graph*.py) ----------------------------------------------


@pytest.fixture
def tenant(rsa_cert: Certificate, other_rsa_cert: Certificate) -> Iterator[Emulator]:
    """APP (may read applications) and OTHER (no Graph permission), one certificate each."""
    with Emulator() as emulator:
        emulator.register(APP, rsa_cert, roles={GRAPH: ["Application.Read.All"]})
        emulator.register(OTHER, other_rsa_cert)
        yield emulator


@pytest.fixture
def graph(tenant: Emulator, rsa_cert: Certificate) -> Graph:
    """Graph as APP."""
    return Graph(tenant, graph_token(tenant, rsa_cert))
