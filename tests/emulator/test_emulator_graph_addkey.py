"""The emulator's Graph addKey: the proof of possession and the new key, each check compared by
status, Graph ``code`` and message ("application: addKey", "Generate proof of possession tokens
for rolling keys").
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from _emulator_helpers import DROP
from _graph_helpers import (
    APP,
    DENIED,
    GRAPH,
    MALFORMED,
    OTHER,
    PROOF_AUD,
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
from certauth.errors import InvalidArgumentError


def test_add_key_with_a_proof(
    tenant: Emulator, graph: Graph, rsa_cert: Certificate, new_cert: Certificate
) -> None:
    object_id = tenant.app_object_id(APP)
    proof = make_proof(rsa_cert, object_id)
    response = graph.add_key(object_id, key_body(new_cert, proof, displayName="next"))
    assert response.status_code == 200, response.text
    added = response.json()
    assert added["@odata.context"].endswith("/$metadata#microsoft.graph.keyCredential")
    assert added["customKeyIdentifier"] == new_cert.thumbprint_sha1
    assert (added["displayName"], added["type"], added["usage"], added["key"]) == (
        "next", "AsymmetricX509Cert", "Verify", None,
    )  # fmt: skip
    assert added["endDateTime"] == iso(new_cert.not_after)
    shown = graph.get(f"applications/{object_id}").json()["keyCredentials"]
    assert [k["keyId"] for k in shown][1:] == [added["keyId"]]
    assert tenant.key_credentials(APP)[1]["keyId"] == added["keyId"]
    assert token_status(tenant, new_cert).status_code == 200  # no delay by default


def test_add_key_without_display_name_names_the_subject_and_shortens_long_names(
    tenant: Emulator, graph: Graph, rsa_cert: Certificate, new_cert: Certificate,
    stranger_cert: Certificate,
) -> None:  # fmt: skip
    object_id = tenant.app_object_id(APP)
    plain = graph.add_key(object_id, key_body(new_cert, make_proof(rsa_cert, object_id)))
    assert plain.json()["displayName"] == "CN=certauth-next"
    long = graph.add_key(
        object_id, key_body(stranger_cert, make_proof(rsa_cert, object_id), displayName="x" * 95)
    )
    assert long.json()["displayName"] == "x" * 90  # "Longer values are accepted but shortened."


def test_custom_key_identifier_is_kept_as_given(
    tenant: Emulator, graph: Graph, rsa_cert: Certificate, new_cert: Certificate
) -> None:
    object_id = tenant.app_object_id(APP)
    body = key_body(new_cert, make_proof(rsa_cert, object_id), customKeyIdentifier="bmV4dA==")
    assert graph.add_key(object_id, body).json()["customKeyIdentifier"] == "bmV4dA=="
    assert tenant.key_credentials(APP)[1]["customKeyIdentifier"] == "bmV4dA=="


def test_proof_in_the_dotnet_form_and_graph_app_id_audience(
    tenant: Emulator, graph: Graph, rsa_cert: Certificate, new_cert: Certificate
) -> None:
    object_id = tenant.app_object_id(APP)
    # .NET's X509SigningCredentials: kid = SHA-1 hex, x5t; the page's later revision: 00000003.
    proof = make_proof(rsa_cert, object_id, header={"kid": rsa_cert.thumbprint_sha1},
                       claims={"aud": "00000003-0000-0000-c000-000000000000"})  # fmt: skip
    assert graph.add_key(object_id, key_body(new_cert, proof)).status_code == 200


def test_proof_without_a_thumbprint_header_is_tried_with_each_valid_key(
    tenant: Emulator, graph: Graph, rsa_cert: Certificate, new_cert: Certificate,
    stranger_cert: Certificate,
) -> None:  # fmt: skip
    object_id = tenant.app_object_id(APP)
    tenant.register(APP, stranger_cert)
    proof = make_proof(rsa_cert, object_id, header={"x5t": DROP})
    assert graph.add_key(object_id, key_body(new_cert, proof)).status_code == 200


def _padded(proof: str) -> str:
    parts = proof.split(".")
    parts[1] += "=" * (-len(parts[1]) % 4) or "===="
    return ".".join(parts)


# (case, proof builder given (cert, stranger, object_id, now), message after Graph's sentence)
PROOF_CASES: list[tuple[str, Callable[[Certificate, Certificate, str, float], Any], str]] = [
    ("missing", lambda c, s, o, n: None,
     "The request has no 'proof': a JWT signed with one of the application's valid "
     "certificates."),
    ("empty", lambda c, s, o, n: "  ",
     "The request has no 'proof': a JWT signed with one of the application's valid "
     "certificates."),
    ("padded segment", lambda c, s, o, n: _padded(make_proof(c, o, now=n)),
     "The proof is not a compact JWT of unpadded base64url segments (padding '=' is not "
     "allowed)."),
    ("not a JWT", lambda c, s, o, n: "abc.def",
     "The proof is not a compact JWT of unpadded base64url segments (padding '=' is not "
     "allowed)."),
    ("HMAC", lambda c, s, o, n: jwt.encode({"aud": PROOF_AUD, "iss": o}, "k" * 32,
                                            algorithm="HS256"),
     "The proof's 'alg' 'HS256' is not an asymmetric signature algorithm (use RS256)."),
    ("aud is Graph's URI", lambda c, s, o, n: make_proof(c, o, now=n, claims={"aud": GRAPH}),
     f"The proof's 'aud' must be '{PROOF_AUD}', not '{GRAPH}'."),
    ("iss is the appId", lambda c, s, o, n: make_proof(c, o, now=n, claims={"iss": APP}),
     "The proof's 'iss' must be the application's object id '{o}', not "
     f"'{APP}' (that is its appId)."),
    ("no nbf", lambda c, s, o, n: make_proof(c, o, now=n, claims={"nbf": DROP}),
     "The proof must have numeric 'nbf' and 'exp' claims."),
    ("no exp", lambda c, s, o, n: make_proof(c, o, now=n, claims={"exp": DROP}),
     "The proof must have numeric 'nbf' and 'exp' claims."),
    ("lifespan over 10 minutes", lambda c, s, o, n: make_proof(c, o, now=n, lifetime=601),
     "The proof is valid for 601 s; 'exp' must be after 'nbf' and at most 600 s (10 minutes) "
     "later."),
    ("expired", lambda c, s, o, n: make_proof(c, o, now=n - 1000, lifetime=600),
     "The proof is not valid now: valid from {nbf} to {exp}, now {now}."),
    ("not yet valid", lambda c, s, o, n: make_proof(c, o, now=n + 400, lifetime=600),
     "The proof is not valid now: valid from {nbf} to {exp}, now {now}."),
    ("unregistered key named", lambda c, s, o, n: make_proof(s, o, now=n),
     "The proof's signing certificate (its 'x5t' or 'x5t#S256' header) is not one of the "
     "application's key credentials."),
    ("unregistered key unnamed", lambda c, s, o, n: make_proof(s, o, now=n,
                                                               header={"x5t": DROP}),
     "The proof's signature does not verify with any valid certificate of the application: "
     "sign it with the private key of a certificate it has now."),
    ("registered x5t, other key", lambda c, s, o, n: make_proof(c, o, now=n,
                                                                 key=s.private_key),
     "The proof's signature does not verify with any valid certificate of the application: "
     "sign it with the private key of a certificate it has now."),
]  # fmt: skip


@pytest.mark.parametrize(("case", "build", "detail"), PROOF_CASES, ids=[c[0] for c in PROOF_CASES])
def test_proof_is_checked(
    tenant: Emulator,
    graph: Graph,
    rsa_cert: Certificate,
    new_cert: Certificate,
    stranger_cert: Certificate,
    case: str,
    build: Callable[[Certificate, Certificate, str, float], Any],
    detail: str,
) -> None:
    object_id = tenant.app_object_id(APP)
    now = int(tenant.clock.time())
    proof = build(rsa_cert, stranger_cert, object_id, now)
    claims = {} if not isinstance(proof, str) or "." not in proof else _claims(proof)
    expected = detail.format(
        o=object_id,
        nbf=_stamp(claims.get("nbf")),
        exp=_stamp(claims.get("exp")),
        now=_stamp(now),
    )
    for response in (
        graph.add_key(object_id, key_body(new_cert, proof)),
        graph.remove_key(object_id, tenant.key_credentials(APP)[0]["keyId"], proof),
    ):
        assert_graph_error(response, 401, "Authentication_MissingOrMalformed",
                           f"{MALFORMED} {expected}")  # fmt: skip
    assert len(tenant.key_credentials(APP)) == 1  # nothing changed


def _claims(token: str) -> dict[str, Any]:
    try:
        return dict(jwt.decode(token.replace("=", ""), options={"verify_signature": False}))
    except jwt.PyJWTError:
        return {}


def _stamp(epoch: Any) -> str:
    if not isinstance(epoch, int | float):
        return ""
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_proof_issuer_must_be_this_application(
    tenant: Emulator, graph: Graph, rsa_cert: Certificate, new_cert: Certificate
) -> None:
    object_id = tenant.app_object_id(APP)
    other_id = tenant.app_object_id(OTHER)
    proof = make_proof(rsa_cert, other_id)
    assert_graph_error(
        graph.add_key(object_id, key_body(new_cert, proof)),
        401,
        "Authentication_MissingOrMalformed",
        f"{MALFORMED} The proof's 'iss' must be the application's object id '{object_id}', not "
        f"'{other_id}'.",
    )


def test_proof_signed_by_an_expired_key_is_refused(
    tenant: Emulator, graph: Graph, rsa_cert: Certificate, new_cert: Certificate,
    expired_cert: Certificate,
) -> None:  # fmt: skip
    tenant.register(APP, expired_cert)
    object_id = tenant.app_object_id(APP)
    assert_graph_error(
        graph.add_key(object_id, key_body(new_cert, make_proof(expired_cert, object_id))),
        401,
        "Authentication_MissingOrMalformed",
        f"{MALFORMED} The proof is signed with the certificate {expired_cert.thumbprint_sha1}, "
        "which is expired or not yet valid.",
    )


def test_application_without_a_valid_certificate_cannot_roll(
    tenant: Emulator, expired_cert: Certificate, new_cert: Certificate
) -> None:
    # The app authenticates with a secret: its only certificate has expired.
    tenant.register("expired-app", expired_cert)
    tenant.register_secret("expired-app", "s3cret-value")
    form = {"grant_type": "client_credentials", "client_id": "expired-app",
            "client_secret": "s3cret-value", "scope": f"{GRAPH}/.default"}  # fmt: skip
    token = httpx.post(tenant.token_endpoint, data=form).json()["access_token"]
    object_id = tenant.app_object_id("expired-app")
    proof = make_proof(expired_cert, object_id)
    assert_graph_error(
        Graph(tenant, token).add_key(object_id, key_body(new_cert, proof)),
        401,
        "Authentication_MissingOrMalformed",
        f"{MALFORMED} Applications that don't have any existing valid certificates (no "
        "certificates have been added yet, or all certificates have expired) can't use this "
        "service action; add a certificate with Update application (or the portal) first.",
    )


def _pem_base64(cert: Certificate) -> str:
    return base64.b64encode(cert.pem).decode()


BODY_CASES: list[tuple[str, Callable[[dict[str, Any], Certificate], Any], int, str, str]] = [
    ("not JSON", lambda b, c: b"{not json", 400, "BadRequest",
     "Unable to read JSON request payload. Please ensure Content-Type header is set and "
     "payload is of valid JSON format."),
    ("no keyCredential", lambda b, c: {**b, "keyCredential": None}, 400, "Request_BadRequest",
     "The 'keyCredential' parameter is required: an object with 'type', 'usage' and 'key'."),
    ("password type", lambda b, c: {**b, "keyCredential": {**b["keyCredential"],
                                                           "type": "X509CertAndPassword"}},
     400, "Request_BadRequest",
     "Invalid value specified for property 'type' of resource 'KeyCredential': "
     "'X509CertAndPassword'. The emulator takes 'AsymmetricX509Cert'."),
    ("usage Sign", lambda b, c: {**b, "keyCredential": {**b["keyCredential"], "usage": "Sign"}},
     400, "Request_BadRequest",
     "Invalid value specified for property 'usage' of resource 'KeyCredential': 'Sign'. An "
     "AsymmetricX509Cert key's usage must be 'Verify'."),
    ("passwordCredential", lambda b, c: {**b, "passwordCredential": {"secretText": "x"}},
     400, "Request_BadRequest",
     "The 'passwordCredential' parameter must be null for an AsymmetricX509Cert key."),
    ("key not base64", lambda b, c: {**b, "keyCredential": {**b["keyCredential"],
                                                            "key": "not base64!"}},
     400, "Request_BadRequest",
     "Invalid value specified for property 'key' of resource 'KeyCredential': it must be the "
     "certificate's DER bytes in base64 (the public part only)."),
    ("key is PEM", lambda b, c: {**b, "keyCredential": {**b["keyCredential"],
                                                        "key": _pem_base64(c)}},
     400, "Request_BadRequest",
     "Invalid value specified for property 'key' of resource 'KeyCredential': it must be the "
     "certificate's DER bytes in base64 (the public part only)."),
    ("displayName not text", lambda b, c: {**b, "keyCredential": {**b["keyCredential"],
                                                                  "displayName": 5}},
     400, "Request_BadRequest",
     "Invalid value specified for property 'displayName' of resource 'KeyCredential'."),
    ("customKeyIdentifier not text", lambda b, c: {**b, "keyCredential": {
        **b["keyCredential"], "customKeyIdentifier": ["x"]}},
     400, "Request_BadRequest",
     "Invalid value specified for property 'customKeyIdentifier' of resource "
     "'KeyCredential'."),
]  # fmt: skip


@pytest.mark.parametrize(("case", "change", "status", "code", "message"), BODY_CASES,
                         ids=[c[0] for c in BODY_CASES])  # fmt: skip
def test_add_key_body_is_checked(
    tenant: Emulator,
    graph: Graph,
    rsa_cert: Certificate,
    new_cert: Certificate,
    case: str,
    change: Callable[[dict[str, Any], Certificate], Any],
    status: int,
    code: str,
    message: str,
) -> None:
    object_id = tenant.app_object_id(APP)
    body = change(key_body(new_cert, make_proof(rsa_cert, object_id)), new_cert)
    assert_graph_error(graph.add_key(object_id, body), status, code, message)
    assert len(tenant.key_credentials(APP)) == 1


def test_expired_new_key_is_refused(
    tenant: Emulator, graph: Graph, rsa_cert: Certificate, expired_cert: Certificate
) -> None:
    object_id = tenant.app_object_id(APP)
    assert_graph_error(
        graph.add_key(object_id, key_body(expired_cert, make_proof(rsa_cert, object_id))),
        400,
        "Request_BadRequest",
        "Invalid value specified for property 'key' of resource 'KeyCredential': the "
        f"certificate {expired_cert.thumbprint_sha1} expired on {iso(expired_cert.not_after)}.",
    )


def test_a_registered_certificate_cannot_be_added_twice(
    tenant: Emulator, graph: Graph, rsa_cert: Certificate
) -> None:
    object_id = tenant.app_object_id(APP)
    assert_graph_error(
        graph.add_key(object_id, key_body(rsa_cert, make_proof(rsa_cert, object_id))),
        400,
        "Request_BadRequest",
        f"The certificate {rsa_cert.thumbprint_sha1} is already a key credential of this "
        "application.",
    )


def test_too_many_key_credentials(
    rsa_cert: Certificate, new_cert: Certificate, stranger_cert: Certificate
) -> None:
    with Emulator(max_key_credentials=2) as tenant:
        tenant.register(APP, rsa_cert)
        graph = Graph(tenant, graph_token(tenant, rsa_cert))
        object_id = tenant.app_object_id(APP)
        first = key_body(new_cert, make_proof(rsa_cert, object_id))
        assert graph.add_key(object_id, first).status_code == 200
        assert_graph_error(
            graph.add_key(object_id, key_body(stranger_cert, make_proof(rsa_cert, object_id))),
            400,
            "Request_BadRequest",
            "The application has 2 key credentials, the most this tenant allows (2); remove "
            "one first.",
        )
    with pytest.raises(InvalidArgumentError, match="max_key_credentials"):
        Emulator(max_key_credentials=0)


def test_an_app_cannot_roll_another_apps_keys_without_permission(
    tenant: Emulator, rsa_cert: Certificate, other_rsa_cert: Certificate, new_cert: Certificate
) -> None:
    object_id = tenant.app_object_id(APP)
    other = Graph(tenant, graph_token(tenant, other_rsa_cert, OTHER))
    body = key_body(new_cert, make_proof(rsa_cert, object_id))  # even with APP's own proof
    assert_graph_error(other.add_key(object_id, body), 403, "Authorization_RequestDenied",
                       DENIED)  # fmt: skip
    key_id = tenant.key_credentials(APP)[0]["keyId"]
    assert_graph_error(other.remove_key(object_id, key_id, make_proof(rsa_cert, object_id)), 403,
                       "Authorization_RequestDenied", DENIED)  # fmt: skip
    # Application.ReadWrite.All lets it, with APP's proof ("application: addKey", permissions).
    tenant.register(OTHER, roles={GRAPH: ["Application.ReadWrite.All"]})
    admin = Graph(tenant, graph_token(tenant, other_rsa_cert, OTHER))
    assert admin.add_key(object_id, body).status_code == 200


def test_add_key_by_app_id_address(
    tenant: Emulator, graph: Graph, rsa_cert: Certificate, new_cert: Certificate
) -> None:
    proof = make_proof(rsa_cert, tenant.app_object_id(APP))
    response = graph.post(f"applications(appId='{APP}')/addKey", key_body(new_cert, proof))
    assert response.status_code == 200
    assert_graph_error(
        graph.add_key(str(uuid.UUID(int=7)), key_body(new_cert, proof)),
        404,
        "Request_ResourceNotFound",
        f"Resource '{uuid.UUID(int=7)}' does not exist or one of its queried reference-property "
        "objects are not present.",
    )
