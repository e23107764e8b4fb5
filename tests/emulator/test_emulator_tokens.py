"""What a successful token request earns: the response, the access token's claims and signature."""

from __future__ import annotations

import base64
import datetime as dt
import logging
import time
from pathlib import Path

import httpx
import jwt
import pytest
from _emulator_helpers import (
    CLIENT_ID,
    DROP,
    assert_entra_error,
    assertion_form,
    claims_of,
    header_of,
    make_assertion,
    secret_form,
)

from certauth.certificates import Certificate
from certauth.emulator import Emulator


def _verify(http: httpx.Client, tenant: Emulator, token: str, audience: str) -> dict[str, object]:
    keys = jwt.PyJWKSet.from_dict(http.get(tenant.jwks_uri).json())
    key = next(k for k in keys.keys if k.key_id == header_of(token)["kid"])
    return jwt.decode(token, key.key, algorithms=["RS256"], audience=audience, issuer=tenant.issuer)


def test_certificate_success_has_entra_v2_app_claims(
    emulator: Emulator, http: httpx.Client, rsa_cert: Certificate
) -> None:
    before = int(time.time())
    response = http.post(
        emulator.token_endpoint,
        data=assertion_form(make_assertion(rsa_cert, emulator.token_endpoint)),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == body["ext_expires_in"] == 3599
    assert response.headers["Cache-Control"] == "no-store"
    token = body["access_token"]
    header = header_of(token)
    assert header["alg"] == "RS256"
    assert header["kid"] == emulator.signing_kid
    claims = _verify(http, emulator, token, "api://things")
    assert (
        claims["iss"] == emulator.issuer == f"{emulator.authority_host}/{emulator.tenant_id}/v2.0"
    )
    assert claims["azp"] == claims["appid"] == CLIENT_ID
    assert claims["azpacr"] == claims["appidacr"] == "2"
    assert claims["oid"] == claims["sub"]
    assert claims["tid"] == emulator.tenant_id
    assert claims["roles"] == ["Things.Read"]
    assert claims["ver"] == "2.0"
    assert claims["idtyp"] == "app"
    assert isinstance(claims["uti"], str)
    assert claims["uti"]
    assert claims["iat"] == claims["nbf"]
    assert before - 301 <= claims["iat"] <= before  # Entra backdates five minutes
    assert abs(claims["exp"] - (before + 3599)) <= 2


def test_oid_is_stable_per_app_and_tenant(rsa_cert: Certificate, http: httpx.Client) -> None:
    oids = []
    for _ in range(2):
        with Emulator() as tenant:
            tenant.register(CLIENT_ID, rsa_cert)
            token = http.post(
                tenant.token_endpoint,
                data=assertion_form(make_assertion(rsa_cert, tenant.token_endpoint)),
            ).json()["access_token"]
            oids.append(claims_of(token)["oid"])
    assert oids[0] == oids[1]


@pytest.mark.parametrize(
    ("alg", "header"),
    [
        ("RS256", None),
        ("PS256", None),
        ("RS384", None),
        ("PS512", None),
        # MSAL sends padded base64url thumbprints; Entra accepts them.
        ("RS256", "padded"),
        # Entra (unlike strict mode) does not pair alg and thumbprint form.
        ("RS256", "x5t#S256"),
        ("PS256", "x5t"),
    ],
)
def test_entra_mode_accepts_every_rs_ps_alg_and_thumbprint_form(
    emulator: Emulator, http: httpx.Client, rsa_cert: Certificate, alg: str, header: str | None
) -> None:
    overrides: dict[str, object] = {}
    if header == "padded":
        digest = base64.urlsafe_b64encode(bytes.fromhex(rsa_cert.thumbprint_sha1)).decode()
        assert digest.endswith("=")
        overrides = {"x5t": digest}
    elif header == "x5t#S256":
        overrides = {"x5t": DROP, "x5t#S256": rsa_cert.x5t_s256}
    elif header == "x5t":
        overrides = {"x5t#S256": DROP, "x5t": rsa_cert.x5t}
    token = make_assertion(rsa_cert, emulator.token_endpoint, alg=alg, header=overrides)
    response = http.post(emulator.token_endpoint, data=assertion_form(token))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("scope", "audience"),
    [
        ("https://graph.microsoft.com/.default", "https://graph.microsoft.com"),
        ("api://things/.default", "api://things"),
        ("https://management.azure.com//.default", "https://management.azure.com/"),
        ("11111111-0000-0000-0000-000000000001/.default", "11111111-0000-0000-0000-000000000001"),
        ("api://things/.default openid profile offline_access", "api://things"),
    ],
)
def test_aud_is_the_resource_of_the_default_scope(
    emulator: Emulator, http: httpx.Client, rsa_cert: Certificate, scope: str, audience: str
) -> None:
    token = make_assertion(rsa_cert, emulator.token_endpoint)
    response = http.post(emulator.token_endpoint, data=assertion_form(token, scope=scope))
    assert response.status_code == 200, response.text
    assert claims_of(response.json()["access_token"])["aud"] == audience


def test_roles_come_from_registration_and_resource(
    emulator: Emulator, http: httpx.Client, rsa_cert: Certificate
) -> None:
    emulator.add_resource("api://things", roles=["Everyone.Read"])
    emulator.add_resource("api://other")
    emulator.register(CLIENT_ID, roles={"api://things": ["Things.Write"]})
    token = make_assertion(rsa_cert, emulator.token_endpoint)
    things = http.post(emulator.token_endpoint, data=assertion_form(token)).json()
    other = http.post(
        emulator.token_endpoint, data=assertion_form(token, scope="api://other/.default")
    ).json()
    assert claims_of(things["access_token"])["roles"] == [
        "Everyone.Read",
        "Things.Read",
        "Things.Write",
    ]
    assert claims_of(other["access_token"])["roles"] == ["Things.Read"]


def test_no_roles_claim_without_roles(http: httpx.Client, rsa_cert: Certificate) -> None:
    with Emulator(token_lifetime=600) as tenant:
        tenant.register(CLIENT_ID, rsa_cert)
        body = http.post(
            tenant.token_endpoint,
            data=assertion_form(make_assertion(rsa_cert, tenant.token_endpoint)),
        ).json()
    assert body["expires_in"] == 600
    assert "roles" not in claims_of(body["access_token"])


def test_client_secret_post_and_basic(emulator: Emulator, http: httpx.Client) -> None:
    emulator.register_secret(CLIENT_ID, "s3cret value+/=")
    posted = http.post(emulator.token_endpoint, data=secret_form("s3cret value+/="))
    assert posted.status_code == 200, posted.text
    claims = claims_of(posted.json()["access_token"])
    assert claims["azpacr"] == claims["appidacr"] == "1"
    # RFC 6749 section 2.3.1: id and secret are form-urlencoded before Basic encoding.
    userpass = f"{CLIENT_ID}:s3cret+value%2B%2F%3D".encode()
    basic = http.post(
        emulator.token_endpoint,
        data=secret_form(None, client_id=None),
        headers={"Authorization": "Basic " + base64.b64encode(userpass).decode()},
    )
    assert basic.status_code == 200, basic.text


def test_secret_with_future_expiry_is_accepted(emulator: Emulator, http: httpx.Client) -> None:
    expires = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)
    emulator.register_secret(CLIENT_ID, "good", expires=expires)
    assert http.post(emulator.token_endpoint, data=secret_form("good")).status_code == 200


def test_v1_endpoint_takes_resource_and_answers_strings(
    emulator: Emulator, http: httpx.Client, rsa_cert: Certificate
) -> None:
    url = emulator.token_endpoint_v1
    form = assertion_form(make_assertion(rsa_cert, url), scope=None, resource="api://things")
    response = http.post(url, data=form)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["expires_in"] == "3599"  # the v1 endpoint sends numbers as strings
    assert body["resource"] == "api://things"
    assert int(body["expires_on"]) > time.time()
    assert claims_of(body["access_token"])["aud"] == "api://things"
    missing = http.post(url, data={k: v for k, v in form.items() if k != "resource"})
    assert "'resource'" in assert_entra_error(missing, 900144)["error_description"]


def test_entra_accepts_the_v1_url_as_aud_on_v2_and_the_tenant_domain(
    emulator: Emulator, http: httpx.Client, rsa_cert: Certificate
) -> None:
    v1_aud = make_assertion(rsa_cert, emulator.token_endpoint_v1)
    assert http.post(emulator.token_endpoint, data=assertion_form(v1_aud)).status_code == 200
    emulator.add_tenant(emulator.tenant_id, domains=["contoso.onmicrosoft.com"])
    by_domain = emulator.token_endpoint.replace(emulator.tenant_id, "contoso.onmicrosoft.com")
    token = make_assertion(rsa_cert, by_domain)
    response = http.post(by_domain, data=assertion_form(token))
    assert response.status_code == 200, response.text
    assert claims_of(response.json()["access_token"])["tid"] == emulator.tenant_id


def test_b2c_policy_issues_tokens_for_secrets(emulator: Emulator, http: httpx.Client) -> None:
    emulator.register_secret(CLIENT_ID, "b2c-secret")
    url = emulator.b2c_token_endpoint("B2C_1_client")
    response = http.post(url, data=secret_form("b2c-secret"))
    assert response.status_code == 200, response.text
    claims = claims_of(response.json()["access_token"])
    assert claims["iss"] == f"{emulator.authority_host}/{emulator.tenant_id}/v2.0/"
    assert claims["scp"] == "Things.Read"  # B2C returns granted permissions as scp
    assert claims["tfp"] == "B2C_1_client"


def test_federated_credential(
    emulator: Emulator, http: httpx.Client, other_rsa_cert: Certificate
) -> None:
    issuer = "https://token.actions.githubusercontent.com"
    emulator.register_federated(
        CLIENT_ID,
        issuer=issuer,
        subject="repo:contoso/app:ref:refs/heads/main",
        keys=other_rsa_cert,
    )

    def external(subject: str) -> str:
        now = int(time.time())
        claims = {
            "iss": issuer,
            "sub": subject,
            "aud": "api://AzureADTokenExchange",
            "iat": now,
            "exp": now + 300,
        }
        return jwt.encode(claims, other_rsa_cert.private_key, algorithm="RS256")

    good = http.post(
        emulator.token_endpoint,
        data=assertion_form(external("repo:contoso/app:ref:refs/heads/main")),
    )
    assert good.status_code == 200, good.text
    assert claims_of(good.json()["access_token"])["azpacr"] == "2"
    wrong = http.post(
        emulator.token_endpoint, data=assertion_form(external("repo:contoso/app:pull_request"))
    )
    body = assert_entra_error(wrong, 70021, status=401)
    assert "Assertion Subject: 'repo:contoso/app:pull_request'" in body["error_description"]


def test_error_echoes_client_request_id_and_trace_headers(
    emulator: Emulator, http: httpx.Client
) -> None:
    correlation = "0b5f2c1e-8e44-4c3c-9f0e-6a1f3c9d2b10"
    response = http.post(
        emulator.token_endpoint,
        data=secret_form("nope", client_id="unknown-app"),
        headers={"client-request-id": correlation},
    )
    body = assert_entra_error(response, 700016, error="unauthorized_client")
    assert body["correlation_id"] == correlation
    assert response.headers["client-request-id"] == correlation
    assert response.headers["x-ms-request-id"] == body["trace_id"]


def test_json_body_is_read_as_missing_grant_type(emulator: Emulator, http: httpx.Client) -> None:
    response = http.post(emulator.token_endpoint, json=secret_form("x"))
    assert "'grant_type'" in assert_entra_error(response, 900144)["error_description"]


def test_each_refusal_logs_one_line_without_secrets(
    emulator: Emulator, http: httpx.Client, rsa_cert: Certificate, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.register_secret(CLIENT_ID, "the-secret")
    assertion = make_assertion(rsa_cert, emulator.token_endpoint, claims={"sub": "x"})
    with caplog.at_level(logging.INFO, logger="certauth.emulator"):
        http.post(emulator.token_endpoint, data=assertion_form(assertion))
        http.post(emulator.token_endpoint, data=secret_form("wrong-secret-value"))
        ok = http.post(emulator.token_endpoint, data=secret_form("the-secret"))
    refusals = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(refusals) == 2
    assert "AADSTS50048" in refusals[0]
    assert "AADSTS7000215" in refusals[1]
    everything = caplog.text
    for secret in (assertion, "wrong-secret-value", "the-secret", ok.json()["access_token"]):
        assert secret not in everything


def test_tokens_survive_key_rotation(
    emulator: Emulator, http: httpx.Client, rsa_cert: Certificate
) -> None:
    def token() -> str:
        form = assertion_form(make_assertion(rsa_cert, emulator.token_endpoint))
        return str(http.post(emulator.token_endpoint, data=form).json()["access_token"])

    old = token()
    old_kid = emulator.signing_kid
    new_kid = emulator.rotate_keys()
    assert new_kid != old_kid == header_of(old)["kid"]
    new = token()
    assert header_of(new)["kid"] == new_kid
    kids = [k["kid"] for k in http.get(emulator.jwks_uri).json()["keys"]]
    assert kids == [new_kid, old_kid]
    _verify(http, emulator, old, "api://things")  # still verifiable during rotation
    _verify(http, emulator, new, "api://things")
    emulator.rotate_keys()
    emulator.rotate_keys()
    kids = [k["kid"] for k in http.get(emulator.jwks_uri).json()["keys"]]
    assert old_kid not in kids
    assert len(kids) == 3


def test_registering_by_path_and_adding_a_second_certificate(
    emulator: Emulator, http: httpx.Client, tmp_path: Path, other_rsa_cert: Certificate
) -> None:
    path = tmp_path / "second.crt"
    path.write_bytes(other_rsa_cert.pem)
    emulator.register(CLIENT_ID, path)  # keys accumulate, as keyCredentials do
    token = make_assertion(other_rsa_cert, emulator.token_endpoint)
    assert http.post(emulator.token_endpoint, data=assertion_form(token)).status_code == 200


def test_not_running_emulator_has_no_urls() -> None:
    tenant = Emulator()
    with pytest.raises(RuntimeError, match="not running"):
        _ = tenant.token_endpoint


def test_long_lived_tokens_come_with_refresh_in(rsa_cert: Certificate, http: httpx.Client) -> None:
    with Emulator(token_lifetime=4 * 3600) as tenant:
        tenant.register(CLIENT_ID, rsa_cert)
        form = assertion_form(make_assertion(rsa_cert, tenant.token_endpoint))
        body = http.post(tenant.token_endpoint, data=form).json()
    assert body["expires_in"] == 14400
    assert body["refresh_in"] == 7200


def test_last_thumbprint_names_the_certificate_used(
    emulator: Emulator, http: httpx.Client, rsa_cert: Certificate, other_rsa_cert: Certificate
) -> None:
    assert emulator.last_thumbprint is None
    emulator.register(CLIENT_ID, other_rsa_cert)
    for cert, alg in ((rsa_cert, "RS256"), (other_rsa_cert, "PS256")):
        form = assertion_form(make_assertion(cert, emulator.token_endpoint, alg=alg))
        assert http.post(emulator.token_endpoint, data=form).status_code == 200
        assert emulator.last_thumbprint == cert.x5t_s256  # whichever header form was sent
