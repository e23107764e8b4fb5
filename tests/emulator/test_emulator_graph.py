"""The emulator's Microsoft Graph: reading an application, the bearer token, removeKey, routes,
and the propagation delay before a key change reaches the token endpoint (http and https, the
CLI). addKey and the proof-of-possession checks: test_emulator_graph_addkey.py.

Every refusal is compared by status, Graph ``code`` and message (``assert_graph_error``).
"""

from __future__ import annotations

import base64
import json
import ssl
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import jwt
import pytest
from _emulator_helpers import assert_entra_error, assertion_form, make_assertion
from _graph_helpers import (
    APP,
    DENIED,
    GRAPH,
    MALFORMED,
    OTHER,
    Graph,
    assert_graph_error,
    graph_token,
    iso,
    key_body,
    make_proof,
    token_status,
)

from certauth.certificates import Certificate
from certauth.emulator import Emulator
from certauth.errors import ConfigurationError, InvalidArgumentError

# -- reading an application ---------------------------------------------------------------------


def test_application_by_app_id_and_by_object_id(
    tenant: Emulator, graph: Graph, rsa_cert: Certificate
) -> None:
    object_id = tenant.app_object_id(APP)
    assert object_id != APP
    assert str(uuid.UUID(object_id)) == object_id
    by_app_id = graph.get(f"applications(appId='{APP}')")
    by_id = graph.get(f"applications/{object_id}")
    assert by_app_id.status_code == by_id.status_code == 200
    body = by_id.json()
    assert body == by_app_id.json()
    assert body["@odata.context"] == f"{tenant.graph_url}/v1.0/$metadata#applications/$entity"
    assert (body["id"], body["appId"], body["displayName"]) == (object_id, APP, APP)
    [key] = body["keyCredentials"]
    assert key == {
        "customKeyIdentifier": rsa_cert.thumbprint_sha1,
        "displayName": "CN=certauth-test",
        "endDateTime": iso(rsa_cert.not_after),
        "key": None,
        "keyId": key["keyId"],
        "startDateTime": iso(rsa_cert.not_before),
        "type": "AsymmetricX509Cert",
        "usage": "Verify",
    }
    assert str(uuid.UUID(key["keyId"])) == key["keyId"]
    assert tenant.key_credentials(APP) == body["keyCredentials"]
    assert by_id.headers["content-type"].startswith("application/json")
    uuid.UUID(by_id.headers["request-id"])


def test_object_id_is_stable_and_unknown_apps_are_refused(tenant: Emulator) -> None:
    with Emulator() as again:
        again.register(APP)
        assert again.app_object_id(APP) == tenant.app_object_id(APP)
    assert tenant.app_object_id(APP.upper()) == tenant.app_object_id(APP)
    with pytest.raises(InvalidArgumentError, match="no app 'nobody' is registered"):
        tenant.app_object_id("nobody")
    with pytest.raises(InvalidArgumentError, match="no app 'nobody' is registered"):
        tenant.key_credentials("nobody")


def test_select_key_credentials_returns_the_certificate(
    tenant: Emulator, graph: Graph, rsa_cert: Certificate
) -> None:
    body = graph.get(f"applications/{tenant.app_object_id(APP)}", **{"$select": "keyCredentials"})
    assert set(body.json()) == {"@odata.context", "keyCredentials"}
    [key] = body.json()["keyCredentials"]
    assert base64.b64decode(key["key"]) == rsa_cert.der


def test_reading_needs_a_graph_permission(
    tenant: Emulator, other_rsa_cert: Certificate, rsa_cert: Certificate
) -> None:
    plain = Graph(tenant, graph_token(tenant, other_rsa_cert, OTHER))
    assert_graph_error(plain.get(f"applications(appId='{APP}')"), 403,
                       "Authorization_RequestDenied", DENIED)  # fmt: skip
    assert_graph_error(plain.get(f"applications(appId='{OTHER}')"), 403,
                       "Authorization_RequestDenied", DENIED)  # fmt: skip
    # Application.ReadWrite.OwnedBy: the emulator has no owners; it reads its own app only.
    tenant.register(OTHER, roles={GRAPH: ["Application.ReadWrite.OwnedBy"]})
    owner = Graph(tenant, graph_token(tenant, other_rsa_cert, OTHER))
    assert owner.get(f"applications(appId='{OTHER}')").status_code == 200
    assert_graph_error(owner.get(f"applications(appId='{APP}')"), 403,
                       "Authorization_RequestDenied", DENIED)  # fmt: skip


def test_without_permission_an_unknown_application_is_denied_not_missing(
    tenant: Emulator, other_rsa_cert: Certificate
) -> None:
    plain = Graph(tenant, graph_token(tenant, other_rsa_cert, OTHER))
    assert_graph_error(plain.get(f"applications/{uuid.uuid4()}"), 403,
                       "Authorization_RequestDenied", DENIED)  # fmt: skip


def test_unknown_application_is_not_found(graph: Graph) -> None:
    missing = str(uuid.uuid4())
    for address in (f"applications/{missing}", f"applications(appId='{missing}')"):
        assert_graph_error(
            graph.get(address),
            404,
            "Request_ResourceNotFound",
            f"Resource '{missing}' does not exist or one of its queried reference-property "
            "objects are not present.",
        )


def test_graph_app_id_scope_is_the_same_resource(tenant: Emulator, rsa_cert: Certificate) -> None:
    token = graph_token(tenant, rsa_cert, scope="00000003-0000-0000-c000-000000000000/.default")
    assert jwt.decode(token, options={"verify_signature": False})["roles"] == [
        "Application.Read.All"
    ]
    assert Graph(tenant, token).get(f"applications(appId='{APP}')").status_code == 200


def test_graph_is_a_resource_even_when_resources_are_declared(
    tenant: Emulator, rsa_cert: Certificate
) -> None:
    tenant.add_resource("api://things")
    graph_token(tenant, rsa_cert)  # no AADSTS500011: Graph is in every tenant
    assertion = make_assertion(rsa_cert, tenant.token_endpoint, client_id=APP)
    form = assertion_form(assertion, client_id=APP, scope="api://unknown/.default")
    assert_entra_error(httpx.post(tenant.token_endpoint, data=form), 500011)


# -- the bearer token ---------------------------------------------------------------------------


def _forged(tenant: Emulator, rsa_cert: Certificate) -> str:
    claims = jwt.decode(graph_token(tenant, rsa_cert), options={"verify_signature": False})
    return jwt.encode(claims, rsa_cert.private_key, algorithm="RS256",
                      headers={"kid": tenant.signing_kid})  # fmt: skip


BEARER_CASES: list[tuple[str, Callable[[Emulator, Certificate], str | None], str]] = [
    ("missing", lambda t, c: None, "Access token is empty."),
    ("not a JWT", lambda t, c: "not-a-token", "CompactToken parsing failed with error code: "
     "80049217"),
    ("another resource", lambda t, c: graph_token(t, c, scope="api://things/.default"),
     "Access token validation failure. Invalid audience."),
    ("signed by another key", _forged, "Access token validation failure. Invalid signature."),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "token", "message"), BEARER_CASES, ids=[c[0] for c in BEARER_CASES]
)
def test_bearer_token_is_checked(
    tenant: Emulator,
    rsa_cert: Certificate,
    case: str,
    token: Callable[[Emulator, Certificate], str | None],
    message: str,
) -> None:
    caller = Graph(tenant, token(tenant, rsa_cert))
    for response in (
        caller.get(f"applications(appId='{APP}')"),
        caller.add_key(tenant.app_object_id(APP), {"proof": "x"}),
    ):
        assert_graph_error(response, 401, "InvalidAuthenticationToken", message)
        assert response.headers["www-authenticate"].startswith('Bearer realm=""')


@pytest.mark.parametrize("header", ["Basic YTpi", "Bearer", "PoP abc.def.ghi"])
def test_authorization_that_is_not_a_bearer_token(tenant: Emulator, header: str) -> None:
    response = httpx.get(f"{tenant.graph_url}/v1.0/applications(appId='{APP}')",
                         headers={"Authorization": header})  # fmt: skip
    assert_graph_error(response, 401, "InvalidAuthenticationToken", "Access token is empty.")


def test_expired_bearer_token(tenant: Emulator, graph: Graph) -> None:
    tenant.clock.advance(3599 + 301)  # past exp and the five-minute skew
    assert_graph_error(graph.get(f"applications(appId='{APP}')"), 401,
                       "InvalidAuthenticationToken",
                       "Lifetime validation failed, the token is expired.")  # fmt: skip


def test_bearer_token_not_yet_valid(tenant: Emulator, graph: Graph) -> None:
    tenant.clock.advance(-700)  # nbf is now - 300; before nbf - skew (300 s)
    assert_graph_error(graph.get(f"applications(appId='{APP}')"), 401,
                       "InvalidAuthenticationToken",
                       "Lifetime validation failed, the token is not yet valid.")  # fmt: skip


def test_bearer_token_from_a_b2c_policy_is_not_a_graph_token(tenant: Emulator) -> None:
    tenant.register_secret(APP, "b2c-secret-value")
    form = {"grant_type": "client_credentials", "client_id": APP,
            "client_secret": "b2c-secret-value", "scope": f"{GRAPH}/.default"}  # fmt: skip
    token = httpx.post(tenant.b2c_token_endpoint(), data=form).json()["access_token"]
    assert_graph_error(Graph(tenant, token).get(f"applications(appId='{APP}')"), 401,
                       "InvalidAuthenticationToken",
                       "Access token validation failure. Invalid issuer.")  # fmt: skip


def test_bearer_token_without_appid(tenant: Emulator, rsa_cert: Certificate) -> None:
    claims = jwt.decode(graph_token(tenant, rsa_cert), options={"verify_signature": False})
    del claims["appid"], claims["azp"]
    key = tenant._keys.current  # the emulator's own signing key: only the appid is wrong
    token = jwt.encode(claims, key.private_key, algorithm="RS256", headers={"kid": key.kid})
    assert_graph_error(Graph(tenant, token).get(f"applications(appId='{APP}')"), 401,
                       "InvalidAuthenticationToken",
                       "Access token validation failure. The token has no appid.")  # fmt: skip


# -- addKey -------------------------------------------------------------------------------------

# -- removeKey ----------------------------------------------------------------------------------


def test_remove_old_key_with_a_proof_by_the_new_one(
    tenant: Emulator, graph: Graph, rsa_cert: Certificate, new_cert: Certificate
) -> None:
    object_id = tenant.app_object_id(APP)
    old_id = tenant.key_credentials(APP)[0]["keyId"]
    added = graph.add_key(object_id, key_body(new_cert, make_proof(rsa_cert, object_id)))
    assert added.status_code == 200
    response = graph.remove_key(object_id, old_id.upper(), make_proof(new_cert, object_id))
    assert (response.status_code, response.content) == (204, b"")
    uuid.UUID(response.headers["request-id"])
    shown = graph.get(f"applications/{object_id}").json()["keyCredentials"]
    assert [k["customKeyIdentifier"] for k in shown] == [new_cert.thumbprint_sha1]
    assert_entra_error(token_status(tenant, rsa_cert), 700027)
    # The removed key's proof is refused at once (Graph sees its own change immediately).
    assert_graph_error(
        graph.add_key(object_id, key_body(rsa_cert, make_proof(rsa_cert, object_id))),
        401,
        "Authentication_MissingOrMalformed",
        f"{MALFORMED} The proof's signing certificate (its 'x5t' or 'x5t#S256' header) is not "
        "one of the application's key credentials.",
    )


def test_remove_key_refusals(tenant: Emulator, graph: Graph, rsa_cert: Certificate) -> None:
    object_id = tenant.app_object_id(APP)
    proof = make_proof(rsa_cert, object_id)
    unknown = str(uuid.uuid4())
    assert_graph_error(graph.remove_key(object_id, unknown, proof), 404,
                       "Request_ResourceNotFound",
                       f"No key credential with keyId '{unknown}' was found on application "
                       f"'{object_id}'.")  # fmt: skip
    assert_graph_error(graph.remove_key(object_id, "not-a-guid", proof), 400,
                       "Request_BadRequest",
                       "The 'keyId' parameter must be the GUID of a key credential: "
                       "'not-a-guid'.")  # fmt: skip
    assert_graph_error(graph.post(f"applications/{object_id}/removeKey", {"proof": proof}), 400,
                       "Request_BadRequest",
                       "The 'keyId' parameter must be the GUID of a key credential.")  # fmt: skip


# -- routes, methods, error shape ---------------------------------------------------------------


def test_routes_methods_and_request_ids(tenant: Emulator, graph: Graph) -> None:
    object_id = tenant.app_object_id(APP)
    assert_graph_error(
        graph.client.get(f"{tenant.graph_url}/v2/applications/{object_id}"),
        400, "BadRequest", "Invalid version: use /v1.0/ (or /beta/).",
    )  # fmt: skip
    assert graph.get(f"applications/{object_id}").status_code == 200
    beta = graph.client.get(f"{tenant.graph_url}/beta/applications/{object_id}",
                            headers=graph.headers)  # fmt: skip
    assert beta.json()["@odata.context"].startswith(f"{tenant.graph_url}/beta/$metadata")
    assert_graph_error(graph.get("users"), 400, "BadRequest",
                       "Resource not found for the segment 'users'. (The emulator serves "
                       "applications/{id}, applications(appId='{appId}'), addKey and "
                       "removeKey.)")  # fmt: skip
    assert_graph_error(graph.get(f"applications/{object_id}/addKey"), 405,
                       "Request_BadRequest",
                       "Specified HTTP method is not allowed for the request target.")  # fmt: skip
    assert_graph_error(graph.post(f"applications/{object_id}", {}), 405, "Request_BadRequest",
                       "Specified HTTP method is not allowed for the request target.")  # fmt: skip
    mine = str(uuid.uuid4())
    response = graph.post(f"applications/{object_id}/addKey", {"proof": None},
                          **{"client-request-id": mine})  # fmt: skip
    assert response.headers["client-request-id"] == mine
    assert response.json()["error"]["innerError"]["client-request-id"] == mine
    assert response.headers["request-id"] != mine


# -- the propagation delay ----------------------------------------------------------------------


def test_propagation_delay_with_the_clock(rsa_cert: Certificate, new_cert: Certificate) -> None:
    with Emulator(propagation_delay=30) as tenant:
        tenant.register(APP, rsa_cert)
        graph = Graph(tenant, graph_token(tenant, rsa_cert))
        object_id = tenant.app_object_id(APP)
        now = tenant.clock.time()
        added = graph.add_key(object_id, key_body(new_cert, make_proof(rsa_cert, object_id)))
        assert added.status_code == 200
        # Graph shows it at once; the token endpoint answers as for an unknown key.
        assert len(tenant.key_credentials(APP)) == 2
        assert_entra_error(token_status(tenant, new_cert), 700027)
        # Graph's proof check sees it at once too: the new key may remove the old one now.
        old_id = tenant.key_credentials(APP)[0]["keyId"]
        proof = make_proof(new_cert, object_id, now=now)
        assert graph.remove_key(object_id, old_id, proof).status_code == 204
        assert token_status(tenant, rsa_cert).status_code == 200  # still, for 30 s
        tenant.clock.advance(29)
        assert_entra_error(token_status(tenant, new_cert), 700027)
        assert token_status(tenant, rsa_cert).status_code == 200
        tenant.clock.advance(2)
        assert token_status(tenant, new_cert).status_code == 200
        body = assert_entra_error(token_status(tenant, rsa_cert), 700027)
        assert "The key was not found." in body["error_description"]


def test_propagation_delay_in_real_seconds(rsa_cert: Certificate, new_cert: Certificate) -> None:
    with Emulator(propagation_delay=0.5) as tenant:
        tenant.register(APP, rsa_cert)
        graph = Graph(tenant, graph_token(tenant, rsa_cert))
        object_id = tenant.app_object_id(APP)
        added = graph.add_key(object_id, key_body(new_cert, make_proof(rsa_cert, object_id)))
        assert added.status_code == 200
        assert_entra_error(token_status(tenant, new_cert), 700027)
        time.sleep(0.6)
        assert token_status(tenant, new_cert).status_code == 200
        tenant.propagation_delay = 0
        old_id = tenant.key_credentials(APP)[0]["keyId"]
        removed = graph.remove_key(object_id, old_id, make_proof(new_cert, object_id))
        assert removed.status_code == 204
        assert_entra_error(token_status(tenant, rsa_cert), 700027)  # no delay any more
    with pytest.raises(InvalidArgumentError, match="propagation_delay"):
        Emulator(propagation_delay=-1)


def test_propagation_delay_from_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "emulator.json"
    config.write_text(json.dumps({"propagation_delay": 2.5}))
    assert Emulator(config=config).propagation_delay == 2.5
    assert Emulator(config=config, propagation_delay=0).propagation_delay == 0
    config.write_text(json.dumps({"propagation_delay": -1}))
    with pytest.raises(ConfigurationError, match="'propagation_delay' must be seconds"):
        Emulator(config=config)


# -- https and the CLI --------------------------------------------------------------------------


def test_graph_over_tls(rsa_cert: Certificate, new_cert: Certificate) -> None:
    with Emulator(tls=True) as tenant:
        tenant.register(APP, rsa_cert, roles={GRAPH: ["Application.Read.All"]})
        assert tenant.graph_url.startswith("https://127.0.0.1:")
        assertion = make_assertion(rsa_cert, tenant.token_endpoint, client_id=APP)
        form = assertion_form(assertion, client_id=APP, scope=f"{GRAPH}/.default")
        trust = ssl.create_default_context(cafile=tenant.ca_file)
        token = httpx.post(tenant.token_endpoint, data=form, verify=trust).json()
        graph = Graph(tenant, token["access_token"], verify=trust)
        object_id = tenant.app_object_id(APP)
        added = graph.add_key(object_id, key_body(new_cert, make_proof(rsa_cert, object_id)))
        assert added.status_code == 200
        assert len(graph.get(f"applications(appId='{APP}')").json()["keyCredentials"]) == 2


def test_cli_prints_graph_url_and_takes_the_delay(tmp_path: Path) -> None:
    from test_emulator_cli import running

    ready = tmp_path / "ready.json"
    with running(["--propagation-delay", "1.5"], ready) as (_, info):
        assert info["graph_url"] == f"{info['authority_host']}/graph"
        assert list(info)[4:6] == ["authority_host", "graph_url"]
        response = httpx.get(f"{info['graph_url']}/v1.0/applications/x", timeout=10)
        assert response.json()["error"]["code"] == "InvalidAuthenticationToken"
