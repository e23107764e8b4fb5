"""The emulated Key Vault as the real azure-keyvault SDK and a plain HTTP client see it."""

from __future__ import annotations

import hashlib
import json
import ssl
from typing import TYPE_CHECKING

import httpx
import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.keyvault.certificates import CertificateClient
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm

from certauth import _jose

if TYPE_CHECKING:
    from conftest import VaultSetup

SDK = {"verify_challenge_resource": False}  # 127.0.0.1 is not under vault.azure.net


def _sdk(kv: VaultSetup) -> dict[str, object]:
    return {**SDK, "connection_verify": kv.tenant.ca_file}


def _token(kv: VaultSetup, scope: str = "https://vault.azure.net/.default") -> str:
    return str(kv.credential.get_token(scope).token)


def _call(
    kv: VaultSetup, method: str, path: str, token: str | None, body: object = None
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    assert kv.tenant.ca_file is not None
    with httpx.Client(verify=ssl.create_default_context(cafile=kv.tenant.ca_file)) as client:
        return client.request(
            method, f"{kv.vault.url}{path}?api-version=7.4", headers=headers, json=body
        )


def test_key_client_gets_the_public_key_only(kv: VaultSetup) -> None:
    key = KeyClient(kv.vault.url, kv.credential, **_sdk(kv)).get_key("billing")
    assert key.id == kv.vault.key_id("billing")
    assert key.key.n
    assert key.key.e
    assert key.key.d is None
    assert key.key.p is None
    raw = _call(kv, "GET", "/keys/billing", _token(kv)).json()
    assert set(raw["key"]) == {"kid", "kty", "n", "e", "key_ops"}
    assert raw["attributes"]["exportable"] is False


@pytest.mark.parametrize("alg", ["RS256", "PS256"])
def test_cryptography_client_signs_and_the_certificate_verifies(kv: VaultSetup, alg: str) -> None:
    client = CryptographyClient(kv.vault.key_id("billing"), kv.credential, **_sdk(kv))
    data = b"header.claims"
    result = client.sign(SignatureAlgorithm(alg), hashlib.sha256(data).digest())
    assert result.key_id == kv.vault.key_id("billing")
    assert _jose.verify_signature(kv.billing.public_key, alg, data, result.signature)


def test_cryptography_client_es256(kv: VaultSetup) -> None:
    client = CryptographyClient(kv.vault.key_id("billing-ec"), kv.credential, **_sdk(kv))
    result = client.sign(SignatureAlgorithm.es256, hashlib.sha256(b"x").digest())
    assert _jose.verify_signature(kv.billing_ec.public_key, "ES256", b"x", result.signature)


def test_certificate_client_reads_the_certificate_object(kv: VaultSetup) -> None:
    cert = CertificateClient(kv.vault.url, kv.credential, **_sdk(kv)).get_certificate("billing")
    assert bytes(cert.cer) == kv.billing.der
    assert cert.key_id == kv.vault.key_id("billing")
    assert cert.properties.x509_thumbprint.hex().upper() == kv.billing.thumbprint_sha1


def test_a_request_without_a_token_gets_the_challenge(kv: VaultSetup) -> None:
    answer = _call(kv, "GET", "/keys/billing", None)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == (
        f'Bearer authorization="{kv.tenant.authority_host}/{kv.tenant.tenant_id}", '
        'resource="https://vault.azure.net"'
    )
    assert answer.json()["error"]["code"] == "Unauthorized"


def test_a_token_for_another_resource_is_refused(kv: VaultSetup) -> None:
    answer = _call(kv, "GET", "/keys/billing", _token(kv, "https://graph.microsoft.com/.default"))
    assert answer.status_code == 401
    assert "AKV10022" in answer.json()["error"]["message"]
    assert 'error="invalid_token"' in answer.headers["WWW-Authenticate"]


def test_sign_takes_a_digest_of_the_algorithm_s_length(kv: VaultSetup) -> None:
    path = f"/keys/billing/{kv.vault.key_id('billing').rsplit('/', 1)[1]}/sign"
    short = _jose.b64url_encode(hashlib.sha1(b"x", usedforsecurity=False).digest())
    answer = _call(kv, "POST", path, _token(kv), {"alg": "RS256", "value": short})
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "BadParameter"
    answer = _call(kv, "POST", path, _token(kv), {"alg": "ES256", "value": short})
    assert answer.json()["error"]["code"] == "BadParameter"


def test_without_sign_permission_the_sdk_gets_forbidden(kv: VaultSetup) -> None:
    kv.vault.grant("signer-app", ["get"])
    client = CryptographyClient(kv.vault.key_id("billing"), kv.credential, **_sdk(kv))
    with pytest.raises(HttpResponseError) as caught:
        client.sign(SignatureAlgorithm.rs256, hashlib.sha256(b"x").digest())
    assert caught.value.status_code == 403
    body = json.loads(caught.value.response.text())
    assert body["error"]["code"] == "Forbidden"
    assert body["error"]["innererror"]["code"] == "AccessDenied"


def test_an_unknown_key_is_key_not_found(kv: VaultSetup) -> None:
    with pytest.raises(ResourceNotFoundError) as caught:
        KeyClient(kv.vault.url, kv.credential, **_sdk(kv)).get_key("missing")
    assert "KeyNotFound" in str(caught.value)


def test_throttling_answers_429_with_retry_after(kv: VaultSetup) -> None:
    kv.vault.inject_faults(429, retry_after=7)
    answer = _call(kv, "GET", "/keys/billing", _token(kv))
    assert answer.status_code == 429
    assert answer.headers["Retry-After"] == "7"
    assert answer.json()["error"]["code"] == "Throttled"
    assert _call(kv, "GET", "/keys/billing", _token(kv)).status_code == 200


def test_a_token_from_another_tenant_is_refused(kv: VaultSetup) -> None:
    from certauth import CertificateCredential

    other = kv.tenant.add_tenant("contoso.example")
    kv.tenant.register("signer-app", kv.signer_cert_file, tenant=other)
    credential = CertificateCredential(other, "signer-app", **kv.credential_kwargs())
    token = credential.get_token("https://vault.azure.net/.default").token
    answer = _call(kv, "GET", "/keys/billing", token)
    assert answer.status_code == 401
    assert "AKV10032" in answer.json()["error"]["message"]


def test_unknown_routes_and_a_missing_api_version(kv: VaultSetup) -> None:
    assert _call(kv, "GET", "/secrets/billing", _token(kv)).status_code == 404
    with httpx.Client(verify=ssl.create_default_context(cafile=kv.tenant.ca_file)) as client:
        answer = client.get(f"{kv.vault.url}/keys/billing",
                            headers={"Authorization": f"Bearer {_token(kv)}"})  # fmt: skip
    assert (answer.status_code, answer.json()["error"]["code"]) == (400, "BadParameter")
