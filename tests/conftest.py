"""Shared fixtures: certificates made once per session (RSA key generation is slow)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from certauth.certificates import Certificate, generate_certificate

# The tests talk to servers on 127.0.0.1 only: a proxy set for the machine (a CI runner's) must
# not carry them; the tests of proxies set these themselves (tests/test_proxy.py). Dropped here,
# before any test starts a process, so that the CLI's subprocesses do without them too.
for _name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
    os.environ.pop(_name, None)
    os.environ.pop(_name.upper(), None)


@pytest.fixture(scope="session")
def rsa_cert() -> Certificate:
    """An RSA-2048 self-signed certificate with its key."""
    return generate_certificate("CN=certauth-test", key_type="rsa2048")


@pytest.fixture(scope="session")
def other_rsa_cert() -> Certificate:
    """A second, unrelated RSA certificate (for mismatch and unknown-thumbprint cases)."""
    return generate_certificate("CN=certauth-other", key_type="rsa2048")


@pytest.fixture
def no_tenant_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove the variables that change which tenants a credential serves, which a
    developer's shell may set: ``AZURE_ADDITIONALLY_ALLOWED_TENANTS`` and
    ``AZURE_IDENTITY_DISABLE_MULTITENANTAUTH``."""
    monkeypatch.delenv("AZURE_ADDITIONALLY_ALLOWED_TENANTS", raising=False)
    monkeypatch.delenv("AZURE_IDENTITY_DISABLE_MULTITENANTAUTH", raising=False)


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A CLI run as on a clean machine: no ``AZURE_*`` or ``CERTAUTH_*`` variable from the
    developer's shell, and a token cache folder of the test's own."""
    for name in list(os.environ):
        if name.startswith(("AZURE_", "CERTAUTH_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CERTAUTH_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def ec_cert() -> Certificate:
    """An EC P-256 certificate (fine for generic OAuth servers, refused by Entra ID)."""
    return generate_certificate("CN=certauth-ec", key_type="ec-p256")


# -- the secret scan (see tests/_secret_scan.py) -------------------------------------------------

import logging  # noqa: E402 - kept with the section it serves
from collections.abc import Iterator  # noqa: E402

from _secret_scan import RecordingHandler, SecretRegistry, instrument  # noqa: E402

#: One registry for the whole run. Instrumented here, at conftest import, before any test module
#: imports certauth's modules, so secrets are registered wherever they are born.
SECRETS = SecretRegistry()
instrument(SECRETS)


#: How far the observed texts have been scanned: each check starts where the last one ended, so
#: a line logged between two tests (a server thread finishing late) is still scanned.
_SCANNED = [0]


def _check_for_leaks() -> None:
    start, _SCANNED[0] = _SCANNED[0], SECRETS.mark()
    leaks = SECRETS.leaks_since(start)
    if leaks:
        pytest.fail("secret material in certauth's output:\n  " + "\n  ".join(leaks[:10]))


@pytest.fixture(scope="session", autouse=True)
def _record_every_log_line() -> Iterator[None]:
    """Every log record reaching the root logger goes to the scan; certauth's at DEBUG too."""
    handler = RecordingHandler(SECRETS)
    root = logging.getLogger()
    ours = logging.getLogger("certauth")
    saved = ours.level
    root.addHandler(handler)
    ours.setLevel(logging.DEBUG)
    yield
    ours.setLevel(saved)
    root.removeHandler(handler)
    _check_for_leaks()  # what came after the last test


@pytest.fixture(autouse=True)
def _no_secret_in_output() -> Iterator[None]:
    """Fail the test during which a registered secret appeared in a log line or error message."""
    yield
    _check_for_leaks()


@pytest.fixture
def secret_registry() -> SecretRegistry:
    """Register a secret a test makes (``add``, ``add_jwt``, ``add_private_key``)."""
    return SECRETS
