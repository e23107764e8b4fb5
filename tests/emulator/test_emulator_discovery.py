"""Discovery as Entra ID serves it: OIDC documents (v2, v1, B2C), JWKS, instance discovery."""

from __future__ import annotations

import httpx
import pytest
from _emulator_helpers import CLIENT_ID, assert_entra_error, secret_form

from certauth.emulator import Emulator

#: Fields Entra's v2 document has; MSAL needs authorization_endpoint and token_endpoint.
V2_FIELDS = {
    "authorization_endpoint",
    "token_endpoint",
    "token_endpoint_auth_methods_supported",
    "jwks_uri",
    "response_modes_supported",
    "subject_types_supported",
    "id_token_signing_alg_values_supported",
    "response_types_supported",
    "scopes_supported",
    "issuer",
    "request_uri_parameter_supported",
    "userinfo_endpoint",
    "device_authorization_endpoint",
    "http_logout_supported",
    "frontchannel_logout_supported",
    "end_session_endpoint",
    "claims_supported",
    "kerberos_endpoint",
    "tenant_region_scope",
    "cloud_instance_name",
    "cloud_graph_host_name",
    "msgraph_host",
    "rbac_url",
}


def test_v2_document_is_complete_and_matches_the_emulator(
    emulator: Emulator, http: httpx.Client
) -> None:
    doc = http.get(emulator.openid_configuration_url).json()
    assert set(doc) >= V2_FIELDS
    assert doc["issuer"] == emulator.issuer
    assert doc["token_endpoint"] == emulator.token_endpoint
    assert doc["jwks_uri"] == emulator.jwks_uri
    assert doc["authorization_endpoint"].endswith("/oauth2/v2.0/authorize")
    assert "private_key_jwt" in doc["token_endpoint_auth_methods_supported"]


def test_document_by_domain_lists_guid_endpoints(emulator: Emulator, http: httpx.Client) -> None:
    emulator.add_tenant(emulator.tenant_id, domains=["Contoso.onmicrosoft.com"])
    url = f"{emulator.authority_host}/contoso.onmicrosoft.com/v2.0/.well-known/openid-configuration"
    doc = http.get(url).json()
    assert doc["token_endpoint"] == emulator.token_endpoint
    assert doc["issuer"] == emulator.issuer


def test_v1_document(emulator: Emulator, http: httpx.Client) -> None:
    url = f"{emulator.authority_host}/{emulator.tenant_id}/.well-known/openid-configuration"
    doc = http.get(url).json()
    assert doc["token_endpoint"] == emulator.token_endpoint_v1
    assert doc["jwks_uri"].endswith(f"/{emulator.tenant_id}/discovery/keys")
    assert doc["authorization_endpoint"].endswith("/oauth2/authorize")
    assert doc["issuer"] == f"{emulator.authority_host}/{emulator.tenant_id}/"


def test_b2c_document_and_its_token_endpoint(emulator: Emulator, http: httpx.Client) -> None:
    base = f"{emulator.authority_host}/{emulator.tenant_id}/B2C_1_SignIn"
    doc = http.get(f"{base}/v2.0/.well-known/openid-configuration").json()
    assert doc["issuer"] == f"{emulator.authority_host}/{emulator.tenant_id}/v2.0/"
    assert doc["token_endpoint"].endswith("/b2c_1_signin/oauth2/v2.0/token")
    assert "private_key_jwt" not in doc["token_endpoint_auth_methods_supported"]
    emulator.register_secret(CLIENT_ID, "s")
    assert http.post(doc["token_endpoint"], data=secret_form("s")).status_code == 200
    keys = http.get(doc["jwks_uri"]).json()["keys"]
    assert keys
    assert keys[0]["kty"] == "RSA"


@pytest.mark.parametrize("name", ["common", "organizations"])
def test_multi_tenant_documents_have_the_issuer_template(
    emulator: Emulator, http: httpx.Client, name: str
) -> None:
    doc = http.get(f"{emulator.authority_host}/{name}/v2.0/.well-known/openid-configuration")
    assert doc.json()["issuer"] == f"{emulator.authority_host}/{{tenantid}}/v2.0"


def test_unknown_tenant_document_is_90002(emulator: Emulator, http: httpx.Client) -> None:
    url = f"{emulator.authority_host}/nobody.onmicrosoft.com/v2.0/.well-known/openid-configuration"
    assert_entra_error(http.get(url), 90002)


def test_jwks_v2_and_v1(emulator: Emulator, http: httpx.Client) -> None:
    v2 = http.get(emulator.jwks_uri).json()["keys"]
    v1 = http.get(f"{emulator.authority_host}/{emulator.tenant_id}/discovery/keys").json()["keys"]
    assert [k["kid"] for k in v2] == [k["kid"] for k in v1] == [emulator.signing_kid]
    key = v2[0]
    assert {"kty", "use", "kid", "x5t", "n", "e", "x5c", "issuer"} <= set(key)
    assert key["kty"] == "RSA"
    assert key["use"] == "sig"
    assert key["e"] == "AQAB"
    assert key["issuer"] == emulator.issuer
    assert "issuer" not in v1[0]
    assert emulator.jwks()["keys"][0]["kid"] == key["kid"]


def test_instance_discovery_in_the_shape_msal_reads(emulator: Emulator, http: httpx.Client) -> None:
    # MSAL drops the port from the authorize URL it sends; the answer points back at us.
    authorize = f"https://127.0.0.1/{emulator.tenant_id}/oauth2/v2.0/authorize"
    url = f"{emulator.authority_host}/common/discovery/instance"
    body = http.get(url, params={"api-version": "1.1", "authorization_endpoint": authorize}).json()
    assert body["tenant_discovery_endpoint"] == emulator.openid_configuration_url
    assert body["api-version"] == "1.1"
    (group,) = body["metadata"]
    netloc = emulator.authority_host.split("://")[1]
    assert group["preferred_network"] == group["preferred_cache"] == netloc
    assert netloc in group["aliases"]
    assert f"localhost:{emulator.port}" in group["aliases"]


def test_instance_discovery_refuses_foreign_hosts(emulator: Emulator, http: httpx.Client) -> None:
    url = f"{emulator.authority_host}/common/discovery/instance"
    foreign = "https://login.example.com/x/oauth2/v2.0/authorize"
    response = http.get(url, params={"authorization_endpoint": foreign})
    body = response.json()
    assert response.status_code == 400
    assert body["error"] == "invalid_instance"
    assert body["error_codes"] == [50049]
    assert_entra_error(http.get(url), 900144)


def test_unknown_path_and_get_on_token_endpoint(emulator: Emulator, http: httpx.Client) -> None:
    missing = http.get(f"{emulator.authority_host}/nothing/here")
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"
    assert_entra_error(http.get(emulator.token_endpoint), 900561)
