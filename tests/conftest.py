"""Shared fixtures: certificates made once per session (RSA key generation is slow)."""

from __future__ import annotations

import pytest

from certauth.certificates import Certificate, generate_certificate


@pytest.fixture(scope="session")
def rsa_cert() -> Certificate:
    """An RSA-2048 self-signed certificate with its key."""
    return generate_certificate("CN=certauth-test", key_type="rsa2048")


@pytest.fixture(scope="session")
def other_rsa_cert() -> Certificate:
    """A second, unrelated RSA certificate (for mismatch and unknown-thumbprint cases)."""
    return generate_certificate("CN=certauth-other", key_type="rsa2048")


@pytest.fixture(scope="session")
def ec_cert() -> Certificate:
    """An EC P-256 certificate (fine for generic OAuth servers, refused by Entra ID)."""
    return generate_certificate("CN=certauth-ec", key_type="ec-p256")
