"""MSAL, azure-identity and certauth's own credential against the emulator over https.

What they need (also in the README's emulator section):
* an https authority (both refuse ``http://``): ``Emulator(tls=True)`` and its ``ca_file``;
* MSAL: ``verify=ca_file`` is ignored while ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` are set
  (requests lets the environment win), so those variables are removed; instance discovery
  goes to login.microsoftonline.com unless ``instance_discovery=False`` or the emulator's own
  ``{authority_host}/common/discovery/instance`` is given;
* azure-identity: ``connection_verify=ca_file`` (honoured whatever the environment says) and
  ``disable_instance_discovery=True``; ``authority`` is the emulator's ``https://HOST:PORT``
  with its scheme: without it, Python 3.10's ``urllib.parse`` reads ``127.0.0.1:PORT`` as a URL
  whose scheme is ``127.0.0.1`` (python/cpython#84589, fixed in 3.11) and azure-identity
  refuses that as "not https", whatever its version.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from _emulator_helpers import CLIENT_ID, claims_of

from certauth.certificates import Certificate
from certauth.emulator import Emulator

pytestmark = pytest.mark.interop

msal = pytest.importorskip("msal")


@pytest.fixture
def tls_tenant(rsa_cert: Certificate, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """A strict emulator over https, with the CA-bundle variables MSAL would obey removed."""
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    with Emulator(tls=True, strict=True) as tenant:
        tenant.register(CLIENT_ID, rsa_cert, roles=["Things.Read"])
        yield tenant


def _alg_of_last_token(caplog: pytest.LogCaptureFixture) -> str:
    issued = [r.getMessage() for r in caplog.records if "token issued" in r.getMessage()]
    return issued[-1].split("alg=", 1)[1].split()[0]


def test_msal_with_pem_and_thumbprint_via_emulator_instance_discovery(
    tls_tenant: Emulator, rsa_cert: Certificate, caplog: pytest.LogCaptureFixture
) -> None:
    app = msal.ConfidentialClientApplication(
        CLIENT_ID,
        authority=f"{tls_tenant.authority_host}/{tls_tenant.tenant_id}",
        client_credential={
            "private_key": rsa_cert.private_key_pem().decode(),
            "thumbprint": rsa_cert.thumbprint_sha1,
        },
        verify=tls_tenant.ca_file,
        instance_discovery=f"{tls_tenant.authority_host}/common/discovery/instance",
    )
    with caplog.at_level(logging.INFO, logger="certauth.emulator"):
        result = app.acquire_token_for_client(["api://things/.default"])
    assert "access_token" in result, result
    assert claims_of(result["access_token"])["roles"] == ["Things.Read"]
    assert _alg_of_last_token(caplog) == "RS256"  # MSAL: RS256 + x5t for a PEM + thumbprint
    again = app.acquire_token_for_client(["api://things/.default"])
    assert again["token_source"] == "cache"


def test_msal_with_pfx_signs_ps256(
    tls_tenant: Emulator,
    rsa_cert: Certificate,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pfx = tmp_path / "app.pfx"
    pfx.write_bytes(rsa_cert.to_pfx("pfx-password"))
    app = msal.ConfidentialClientApplication(
        CLIENT_ID,
        authority=f"{tls_tenant.authority_host}/{tls_tenant.tenant_id}",
        client_credential={"private_key_pfx_path": str(pfx), "passphrase": "pfx-password"},
        verify=tls_tenant.ca_file,
        instance_discovery=False,
    )
    with caplog.at_level(logging.INFO, logger="certauth.emulator"):
        result = app.acquire_token_for_client(["api://things/.default"])
    assert "access_token" in result, result
    assert _alg_of_last_token(caplog) == "PS256"


def test_msal_gets_the_aadsts_code_of_a_wrong_certificate(
    tls_tenant: Emulator, other_rsa_cert: Certificate
) -> None:
    app = msal.ConfidentialClientApplication(
        CLIENT_ID,
        authority=f"{tls_tenant.authority_host}/{tls_tenant.tenant_id}",
        client_credential={
            "private_key": other_rsa_cert.private_key_pem().decode(),
            "thumbprint": other_rsa_cert.thumbprint_sha1,
        },
        verify=tls_tenant.ca_file,
        instance_discovery=False,
    )
    result = app.acquire_token_for_client(["api://things/.default"])
    assert result["error"] == "invalid_client"
    assert result["error_codes"] == [700027]


def test_azure_identity_certificate_credential(tls_tenant: Emulator, rsa_cert: Certificate) -> None:
    identity = pytest.importorskip("azure.identity")
    credential = identity.CertificateCredential(
        tls_tenant.tenant_id,
        CLIENT_ID,
        certificate_data=rsa_cert.private_key_pem() + rsa_cert.pem,
        authority=tls_tenant.authority_host,  # https://127.0.0.1:PORT (see the docstring)
        connection_verify=tls_tenant.ca_file,
        disable_instance_discovery=True,
    )
    token = credential.get_token("api://things/.default")
    assert claims_of(token.token)["aud"] == "api://things"
    assert tls_tenant.request_count == 1


def test_certauth_credential_is_accepted_in_strict_mode(
    tls_tenant: Emulator, rsa_cert: Certificate
) -> None:
    from certauth import CertificateCredential, verify_access_token

    credential = CertificateCredential(
        tls_tenant.tenant_id,
        CLIENT_ID,
        certificate=rsa_cert,
        authority=tls_tenant.authority_host,
        verify=tls_tenant.ca_file,
    )
    token = credential.get_token("api://things/.default")
    claims = verify_access_token(
        token.token,
        issuer=tls_tenant.issuer,
        audience="api://things",
        required_roles="Things.Read",
        verify=tls_tenant.ca_file,
    )
    assert claims["azpacr"] == "2"
