"""Fixtures for the interop suite (helpers in ``_interop.py``)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from _interop import CLIENT_ID, PASSWORD, Generated, IssuedTokens, create

from certauth.emulator import Emulator


@pytest.fixture(scope="session")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Generated:
    """An RSA-2048 certificate from ``certauth cert create``; key, PFX and bundle unencrypted."""
    return create(tmp_path_factory.mktemp("interop"), "interop-plain")


@pytest.fixture(scope="session")
def generated_encrypted(tmp_path_factory: pytest.TempPathFactory) -> Generated:
    """The same with ``--password-env``: key, PFX and bundle encrypted."""
    return create(tmp_path_factory.mktemp("interop"), "interop-encrypted", password=PASSWORD)


@pytest.fixture
def no_ca_bundle_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """MSAL (requests) lets these override its ``verify=``: remove them."""
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def strict_tenant(
    generated: Generated, generated_encrypted: Generated, no_ca_bundle_variables: None
) -> Iterator[Emulator]:
    """A strict https emulator with both generated certificates registered for CLIENT_ID."""
    with Emulator(tls=True, strict=True) as tenant:
        tenant.register(CLIENT_ID, generated.path(".crt"), roles=["Interop.Read"])
        tenant.register(CLIENT_ID, generated_encrypted.path(".crt"))
        yield tenant


@pytest.fixture
def issued(caplog: pytest.LogCaptureFixture) -> Iterator[IssuedTokens]:
    """The algorithms of the tokens the emulator issues during the test."""
    with caplog.at_level(logging.INFO, logger="certauth.emulator"):
        yield IssuedTokens(caplog)
