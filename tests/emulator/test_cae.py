"""Continuous access evaluation in the emulator: the ``claims`` parameter at the token endpoint,
revocation, and the CAE-aware test API's claims challenge.

Sources: Microsoft Learn's "Claims challenges, claims requests, and client capabilities" (the
``xms_cc`` request and the ``WWW-Authenticate`` challenge), "How to use Continuous Access
Evaluation enabled APIs in your applications" (the ``nbf`` claims request after a revocation),
"Continuous access evaluation for workload identities" (app-only CAE tokens live up to 24 hours)
and "Microsoft Entra authentication and authorization error codes" (AADSTS90100).
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import httpx
import jwt
import pytest
from _emulator_helpers import (
    CLIENT_ID,
    assert_entra_error,
    assertion_form,
    claims_of,
    make_assertion,
)
from cryptography.hazmat.primitives.asymmetric import rsa

from certauth.certificates import Certificate
from certauth.emulator import Emulator
from certauth.emulator.cae import CAE_TOKEN_LIFETIME, claims_challenge_header
from certauth.emulator.server import HttpRequest
from certauth.errors import InvalidArgumentError

CP1 = json.dumps({"access_token": {"xms_cc": {"values": ["cp1"]}}})
OTHER_TENANT = "0b1e7a2c-0000-4000-8000-0000000000bb"

_CHALLENGE = re.compile(
    r'^Bearer realm="", authorization_uri="(?P<uri>[^"]+)", error="insufficient_claims", '
    r'claims="(?P<claims>[A-Za-z0-9+/=]+)"$'
)


def _token_response(
    tenant: Emulator,
    http: httpx.Client,
    cert: Certificate,
    *,
    claims: str | None = None,
    endpoint: str | None = None,
    tenant_path: str | None = None,
) -> httpx.Response:
    url = endpoint or (
        tenant.token_endpoint
        if tenant_path is None
        else f"{tenant.authority_host}/{tenant_path}/oauth2/v2.0/token"
    )
    assertion = make_assertion(cert, url, now=tenant.clock.time())
    return http.post(url, data=assertion_form(assertion, claims=claims))


def _token(tenant: Emulator, http: httpx.Client, cert: Certificate, **kwargs: Any) -> str:
    response = _token_response(tenant, http, cert, **kwargs)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def _call(http: httpx.Client, tenant: Emulator, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return http.get(tenant.resource_url, headers=headers)


def _challenge(response: httpx.Response) -> tuple[str, dict[str, Any]]:
    """The authorization_uri and decoded claims of a claims challenge."""
    match = _CHALLENGE.match(response.headers["WWW-Authenticate"])
    assert match, response.headers["WWW-Authenticate"]
    return match["uri"], json.loads(base64.b64decode(match["claims"], validate=True))


# -- the claims parameter at the token endpoint ---------------------------------------------------


def test_cp1_gets_xms_cc_and_the_cae_lifetime(
    emulator: Emulator, http: httpx.Client, rsa_cert: Certificate
) -> None:
    now = int(emulator.clock.time())
    response = _token_response(emulator, http, rsa_cert, claims=CP1)
    assert response.status_code == 200, response.text
    body = response.json()
    assert CAE_TOKEN_LIFETIME == 86399  # "up to 24 hours" for workload identities
    assert body["expires_in"] == body["ext_expires_in"] == CAE_TOKEN_LIFETIME
    assert body["refresh_in"] == CAE_TOKEN_LIFETIME // 2
    claims = claims_of(body["access_token"])
    assert claims["xms_cc"] == ["cp1"]
    assert abs(claims["exp"] - (now + CAE_TOKEN_LIFETIME)) <= 2
    assert emulator.last_claims == CP1
    assert emulator.claims_received == [CP1]


def test_capability_case_is_kept_and_cae_lifetime_is_settable(
    emulator: Emulator, http: httpx.Client, rsa_cert: Certificate
) -> None:
    emulator.cae_token_lifetime = 7200
    upper = json.dumps({"access_token": {"xms_cc": {"values": ["CP1", "cp2"]}}})
    body = _token_response(emulator, http, rsa_cert, claims=upper).json()
    assert body["expires_in"] == 7200
    assert claims_of(body["access_token"])["xms_cc"] == ["CP1", "cp2"]


def test_claims_without_xms_cc_get_a_normal_token(
    emulator: Emulator, http: httpx.Client, rsa_cert: Certificate
) -> None:
    other = json.dumps({"access_token": {"acrs": {"essential": True, "value": "c1"}}})
    for claims in (None, other):
        body = _token_response(emulator, http, rsa_cert, claims=claims).json()
        assert body["expires_in"] == 3599
        assert "refresh_in" not in body
        assert "xms_cc" not in claims_of(body["access_token"])
    assert emulator.claims_received == [None, other]
    assert emulator.last_claims == other
    emulator.reset_request_count()
    assert emulator.claims_received == []
    assert emulator.last_claims is None


def test_other_capabilities_are_named_but_not_cae(
    emulator: Emulator, http: httpx.Client, rsa_cert: Certificate
) -> None:
    claims = json.dumps({"access_token": {"xms_cc": {"values": ["cp2"]}}})
    body = _token_response(emulator, http, rsa_cert, claims=claims).json()
    assert body["expires_in"] == 3599
    assert claims_of(body["access_token"])["xms_cc"] == ["cp2"]


def test_nbf_request_raises_iat_and_nbf(
    emulator: Emulator, http: httpx.Client, rsa_cert: Certificate
) -> None:
    emulator.clock.advance(1800)  # the emulator's clock is what the token's times follow
    now = int(emulator.clock.time())
    wanted = now - 10  # later than Entra's five-minute backdating
    claims = json.dumps({"access_token": {"nbf": {"essential": True, "value": str(wanted)}}})
    token = claims_of(_token(emulator, http, rsa_cert, claims=claims))
    assert token["iat"] == token["nbf"] == wanted
    assert "xms_cc" not in token


def test_old_nbf_keeps_the_backdated_time_and_future_nbf_is_capped_at_now(
    emulator: Emulator, http: httpx.Client, rsa_cert: Certificate
) -> None:
    now = int(emulator.clock.time())
    old = json.dumps({"access_token": {"nbf": {"essential": True, "value": str(now - 3600)}}})
    token = claims_of(_token(emulator, http, rsa_cert, claims=old))
    assert now - 301 <= token["iat"] <= now - 299
    future = json.dumps({"access_token": {"nbf": {"essential": True, "value": str(now + 900)}}})
    token = claims_of(_token(emulator, http, rsa_cert, claims=future))
    assert now <= token["iat"] == token["nbf"] <= now + 2


def test_merged_claims_apply_both(
    emulator: Emulator, http: httpx.Client, rsa_cert: Certificate
) -> None:
    now = int(emulator.clock.time())
    merged = json.dumps(
        {
            "access_token": {
                "nbf": {"essential": True, "value": str(now - 5)},
                "xms_cc": {"values": ["cp1"]},
            }
        }
    )
    body = _token_response(emulator, http, rsa_cert, claims=merged).json()
    token = claims_of(body["access_token"])
    assert token["xms_cc"] == ["cp1"]
    assert token["iat"] == token["nbf"] == now - 5
    assert body["expires_in"] == CAE_TOKEN_LIFETIME


def test_v1_endpoint_reports_the_raised_not_before(
    emulator: Emulator, http: httpx.Client, rsa_cert: Certificate
) -> None:
    now = int(emulator.clock.time())
    claims = json.dumps({"access_token": {"nbf": {"essential": True, "value": str(now - 7)}}})
    url = emulator.token_endpoint_v1
    form = assertion_form(
        make_assertion(rsa_cert, url), scope=None, resource="api://things", claims=claims
    )
    body = http.post(url, data=form).json()
    assert body["not_before"] == str(now - 7) == str(claims_of(body["access_token"])["nbf"])


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ("", "it is empty"),
        ("not json", "it is not JSON"),
        ('{"access_token": ', "it is not JSON"),
        ("[1, 2]", "it must be a JSON object"),
        ('"cp1"', "it must be a JSON object"),
        ('{"access_token": 5}', "'access_token' must be a JSON object"),
        ('{"access_token": {"xms_cc": ["cp1"]}}', "'xms_cc' must be an object"),
        ('{"access_token": {"xms_cc": {"values": [1]}}}', "'xms_cc' values"),
        ('{"access_token": {"nbf": {"essential": true, "value": "soon"}}}', "'nbf' value"),
        ('{"access_token": {"nbf": {"essential": true, "value": true}}}', "'nbf' value"),
        ('{"access_token": {"nbf": {"essential": true, "value": "' + "9" * 5000 + '"}}}', "'nbf'"),
        ('{"access_token": {"nbf": {"essential": true, "value": "1e9"}}}', "'nbf' value"),
        ("{" + " " * 8200 + "}", "it is longer than 8192 characters"),
        ('{"access_token": {"nbf": "1700000000"}}', "'nbf' must be an object"),
    ],
)
def test_malformed_claims_get_aadsts90100(
    emulator: Emulator, http: httpx.Client, rsa_cert: Certificate, claims: str, reason: str
) -> None:
    response = _token_response(emulator, http, rsa_cert, claims=claims)
    body = assert_entra_error(response, 90100, status=400, error="invalid_request")
    assert (
        f"AADSTS90100: claims parameter is empty or not valid: {reason}"
        in (body["error_description"])
    )
    assert emulator.last_claims == claims


def test_numeric_nbf_and_single_string_capability_are_read(
    emulator: Emulator, http: httpx.Client, rsa_cert: Certificate
) -> None:
    now = int(emulator.clock.time())
    claims = json.dumps({"access_token": {"nbf": {"value": now - 3}, "xms_cc": {"values": "cp1"}}})
    token = claims_of(_token(emulator, http, rsa_cert, claims=claims))
    assert token["iat"] == now - 3
    assert token["xms_cc"] == ["cp1"]


# -- revocation and the CAE-aware test API -------------------------------------------------------


def test_challenge_header_matches_microsofts_documented_example() -> None:
    # "How to use Continuous Access Evaluation enabled APIs in your applications": the claims of
    # a revocation challenge for 1604106651, and the realm of "Claims challenges, claims
    # requests, and client capabilities".
    documented = (
        "eyJhY2Nlc3NfdG9rZW4iOnsibmJmIjp7ImVzc2VudGlhbCI6dHJ1ZSwgInZhbHVlIjoiMTYwNDEwNjY1MSJ9fX0="
    )
    uri = "https://login.windows.net/common/oauth2/authorize"
    assert claims_challenge_header(uri, 1604106651) == (
        f'Bearer realm="", authorization_uri="{uri}", error="insufficient_claims", '
        f'claims="{documented}"'
    )


def test_valid_token_gets_200_with_a_summary(
    emulator: Emulator, http: httpx.Client, rsa_cert: Certificate
) -> None:
    token = _token(emulator, http, rsa_cert, claims=CP1)
    response = _call(http, emulator, token)
    assert response.status_code == 200, response.text
    body = response.json()
    claims = claims_of(token)
    assert body == {
        "tid": emulator.tenant_id,
        "aud": "api://things",
        "azp": CLIENT_ID,
        "appid": CLIENT_ID,
        "roles": ["Things.Read"],
        "iat": claims["iat"],
        "exp": claims["exp"],
        "cae": True,
        "xms_cc": ["cp1"],
    }
    assert emulator.resource_url == f"{emulator.authority_host}/_emulator/resource"


def test_revoked_cae_token_gets_graphs_claims_challenge_and_the_challenge_recovers(
    emulator: Emulator, http: httpx.Client, rsa_cert: Certificate
) -> None:
    old = _token(emulator, http, rsa_cert, claims=CP1)
    emulator.clock.advance(30)
    revoked_at = emulator.revoke(CLIENT_ID)
    assert revoked_at == int(emulator.clock.time())

    response = _call(http, emulator, old)
    assert response.status_code == 401
    uri, requested = _challenge(response)
    assert uri == f"{emulator.authority_host}/common/oauth2/authorize"
    assert requested == {"access_token": {"nbf": {"essential": True, "value": str(revoked_at)}}}
    assert response.json() == {
        "error": {
            "code": "InvalidAuthenticationToken",
            "message": "Continuous access evaluation resulted in claims challenge with result: "
            "InteractionRequired and code: TokenIssuedBeforeRevocationTimestamp",
        }
    }

    # A new token without the challenge's claims is backdated five minutes: still before.
    plain = _token(emulator, http, rsa_cert, claims=CP1)
    assert _call(http, emulator, plain).status_code == 401

    # The challenge's claims, merged with the capability, as a CAE client sends them back.
    requested["access_token"]["xms_cc"] = {"values": ["cp1"]}
    fresh = _token(emulator, http, rsa_cert, claims=json.dumps(requested))
    assert claims_of(fresh)["iat"] == revoked_at
    answer = _call(http, emulator, fresh)
    assert answer.status_code == 200, answer.text
    assert answer.json()["iat"] == revoked_at

    # Five minutes on, an ordinary token is issued after the revocation too.
    emulator.clock.advance(301)
    assert _call(http, emulator, _token(emulator, http, rsa_cert, claims=CP1)).status_code == 200


def test_non_cae_token_of_a_revoked_client_is_accepted_until_it_expires(
    emulator: Emulator, http: httpx.Client, rsa_cert: Certificate
) -> None:
    token = _token(emulator, http, rsa_cert)
    emulator.revoke(CLIENT_ID)
    response = _call(http, emulator, token)
    assert response.status_code == 200, response.text
    assert response.json()["cae"] is False
    assert "xms_cc" not in response.json()
    emulator.clock.advance(3599 + 61)  # past exp and the verifier's leeway
    expired = _call(http, emulator, token)
    assert expired.status_code == 401
    assert 'error="invalid_token"' in expired.headers["WWW-Authenticate"]


def test_clear_revocations(emulator: Emulator, http: httpx.Client, rsa_cert: Certificate) -> None:
    token = _token(emulator, http, rsa_cert, claims=CP1)
    emulator.clock.advance(1)
    emulator.revoke(CLIENT_ID)
    assert _call(http, emulator, token).status_code == 401
    emulator.clear_revocations()
    assert _call(http, emulator, token).status_code == 200


def test_missing_bearer_token_gets_a_challenge_without_error(
    emulator: Emulator, http: httpx.Client
) -> None:
    for response in (
        _call(http, emulator, None),
        http.get(emulator.resource_url, headers={"Authorization": "Basic dXNlcjpwdw=="}),
    ):
        assert response.status_code == 401
        uri = f"{emulator.authority_host}/common/oauth2/authorize"
        assert response.headers["WWW-Authenticate"] == f'Bearer realm="", authorization_uri="{uri}"'
        assert response.json()["error"]["message"] == "Access token is empty."


def _invalid_token_check(response: httpx.Response) -> str:
    assert response.status_code == 401, response.text
    header = response.headers["WWW-Authenticate"]
    match = re.match(
        r'^Bearer realm="", authorization_uri="[^"]+", error="invalid_token", '
        r'error_description="(?P<text>[^"\\]*)"$',
        header,
    )
    assert match, header
    assert response.json()["error"]["code"] == "InvalidAuthenticationToken"
    return match["text"]


def test_invalid_tokens_get_invalid_token(
    emulator: Emulator, http: httpx.Client, rsa_cert: Certificate
) -> None:
    assert _invalid_token_check(_call(http, emulator, "not-a-jwt"))
    real = claims_of(_token(emulator, http, rsa_cert))
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(real, stranger, algorithm="RS256", headers={"kid": emulator.signing_kid})
    assert "signature" in _invalid_token_check(_call(http, emulator, forged)).lower()


def test_declared_resources_are_the_accepted_audiences(
    emulator: Emulator, http: httpx.Client, rsa_cert: Certificate
) -> None:
    token = _token(emulator, http, rsa_cert)  # aud api://things, nothing declared yet
    emulator.add_resource("api://billing")
    assert "api://things" in _invalid_token_check(_call(http, emulator, token))
    emulator.add_resource("api://things")
    assert _call(http, emulator, token).status_code == 200


def test_unknown_emulator_route_is_404(emulator: Emulator, http: httpx.Client) -> None:
    response = http.get(f"{emulator.authority_host}/_emulator/nothing")
    assert response.status_code == 404
    assert "/_emulator/resource" in response.json()["error_description"]


def test_no_tenant_can_take_the_emulators_own_path(emulator: Emulator) -> None:
    with pytest.raises(InvalidArgumentError, match="emulator's own routes"):
        emulator.add_tenant("_Emulator")
    with pytest.raises(InvalidArgumentError, match="emulator's own routes"):
        emulator.add_tenant(OTHER_TENANT, domains=["_emulator"])


def test_revoke_refuses_unknown_clients_and_tenants(emulator: Emulator) -> None:
    with pytest.raises(InvalidArgumentError, match="not registered in any tenant"):
        emulator.revoke("no-such-client")
    with pytest.raises(InvalidArgumentError, match="not a tenant of this emulator"):
        emulator.revoke(CLIENT_ID, tenant="nowhere.example")


# -- the admin route ---------------------------------------------------------------------------


def test_admin_route_revokes_like_the_method(
    emulator: Emulator, http: httpx.Client, rsa_cert: Certificate
) -> None:
    token = _token(emulator, http, rsa_cert, claims=CP1)
    emulator.clock.advance(5)
    response = http.post(emulator.revoke_url, data={"client_id": CLIENT_ID})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {
        "client_id": CLIENT_ID,
        "tenants": [emulator.tenant_id],
        "revoked_at": int(emulator.clock.time()),
    }
    _, requested = _challenge(_call(http, emulator, token))
    assert requested["access_token"]["nbf"]["value"] == str(body["revoked_at"])
    # Query parameters work too (curl -X POST URL?client_id=...).
    again = http.post(f"{emulator.revoke_url}?client_id={CLIENT_ID}")
    assert again.status_code == 200


@pytest.mark.parametrize(
    ("data", "status", "text"),
    [
        ({}, 400, "client_id=CLIENT_ID"),
        ({"client_id": "nobody"}, 400, "not registered"),
        ({"client_id": CLIENT_ID, "tenant": "elsewhere.example"}, 400, "not a tenant"),
    ],
)
def test_admin_route_refusals(
    emulator: Emulator, http: httpx.Client, data: dict[str, str], status: int, text: str
) -> None:
    response = http.post(emulator.revoke_url, data=data)
    assert response.status_code == status
    assert response.json()["error"] == "invalid_request"
    assert text in response.json()["error_description"]


def test_admin_route_wants_post_from_loopback(emulator: Emulator, http: httpx.Client) -> None:
    assert http.get(emulator.revoke_url, params={"client_id": CLIENT_ID}).status_code == 405

    def request(peer: str) -> HttpRequest:
        return HttpRequest(
            method="POST",
            path="/_emulator/revoke",
            query={"client_id": CLIENT_ID},
            headers={},
            body=b"",
            base_url=emulator.authority_host,
            client_address=peer,
        )

    for peer in ("192.0.2.7", "", "::ffff:203.0.113.9"):
        refused = emulator._handle(request(peer))
        assert refused.status == 403
        assert json.loads(refused.body)["error"] == "access_denied"
    for peer in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
        assert emulator._handle(request(peer)).status == 200


# -- tenants -------------------------------------------------------------------------------------


def test_other_tenant_issues_its_own_tid_and_iss_and_discovery_agrees(
    emulator: Emulator, http: httpx.Client, rsa_cert: Certificate
) -> None:
    emulator.add_tenant(OTHER_TENANT)
    emulator.register(CLIENT_ID, rsa_cert, tenant=OTHER_TENANT)
    token = claims_of(_token(emulator, http, rsa_cert, tenant_path=OTHER_TENANT))
    issuer = f"{emulator.authority_host}/{OTHER_TENANT}/v2.0"
    assert token["tid"] == OTHER_TENANT
    assert token["iss"] == issuer
    home = claims_of(_token(emulator, http, rsa_cert))
    assert home["tid"] == emulator.tenant_id
    assert home["oid"] != token["oid"]  # one service principal per tenant
    document = http.get(f"{issuer}/.well-known/openid-configuration").json()
    assert document["issuer"] == issuer
    endpoint = f"{emulator.authority_host}/{OTHER_TENANT}/oauth2/v2.0/token"
    assert document["token_endpoint"] == endpoint


def test_unconsented_tenant_refuses_the_client(
    emulator: Emulator, http: httpx.Client, rsa_cert: Certificate
) -> None:
    emulator.add_tenant(OTHER_TENANT)
    response = _token_response(emulator, http, rsa_cert, tenant_path=OTHER_TENANT)
    assert_entra_error(response, 700016, error="unauthorized_client")


def test_revocation_is_per_tenant(
    emulator: Emulator, http: httpx.Client, rsa_cert: Certificate
) -> None:
    emulator.add_tenant(OTHER_TENANT)
    emulator.register(CLIENT_ID, rsa_cert, tenant=OTHER_TENANT)
    home = _token(emulator, http, rsa_cert, claims=CP1)
    other = _token(emulator, http, rsa_cert, claims=CP1, tenant_path=OTHER_TENANT)
    emulator.clock.advance(1)
    emulator.revoke(CLIENT_ID, tenant=OTHER_TENANT)
    assert _call(http, emulator, home).status_code == 200
    assert _call(http, emulator, other).status_code == 401
    response = http.post(emulator.revoke_url, data={"client_id": CLIENT_ID})
    assert sorted(response.json()["tenants"]) == sorted([emulator.tenant_id, OTHER_TENANT])
    assert _call(http, emulator, home).status_code == 401
