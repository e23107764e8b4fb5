"""node oidc-provider, the second and independent mTLS (RFC 8705) and DPoP (RFC 9449) token
server, does what the tests built on it rely on.

Only raw httpx with an ``ssl.SSLContext`` talks to it here, and only PyJWT checks its tokens
(against the JWKS it publishes): certauth's own mTLS and DPoP client features are tested against
this peer elsewhere, so the peer itself is proven without them. From certauth only
``generate_certificate``/``build_certificate`` (test certificates) and ``certauth.dpop``'s
``DPoPKey``/``make_proof`` (proofs) are used. One server serves the whole module.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
import pytest
from _oidc_provider import (
    RESOURCE,
    SCOPE,
    OidcProvider,
    ca_issued,
    missing_reason,
    oidc_provider,
    private_key_jwt_client,
    require_peer,
    self_signed_client,
    tls_client,
    write_client_files,
)
from cryptography.hazmat.primitives.asymmetric import rsa

from certauth.certificates import Certificate, generate_certificate
from certauth.dpop import DPoPKey, make_proof

pytestmark = pytest.mark.interop

SELF_SIGNED = "self-signed-svc"
PKI = "pki-svc"
DPOP = "dpop-svc"
DPOP_NONCE = "dpop-nonce-svc"
JWT_DPOP = "jwt-dpop-svc"
PKI_SUBJECT = "CN=billing-api,O=Contoso"


# -- certificates ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientFiles:
    """PEM certificate (with any intermediates) and key files for ``load_cert_chain``."""

    cert_file: Path
    key_file: Path


@dataclass(frozen=True)
class Setup:
    peer: OidcProvider
    files: dict[str, ClientFiles]
    certificates: dict[str, Certificate]


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory, rsa_cert: Certificate, ec_cert: Certificate
) -> Iterator[Setup]:
    """The peer with every client of this module, and the certificate files they present.

    - ``self-signed``: rsa_cert, registered for SELF_SIGNED (self_signed_tls_client_auth),
      and for JWT_DPOP's assertions; ``dpop``: ec_cert, registered for DPOP and DPOP_NONCE.
    - ``pki``: a leaf for PKI_SUBJECT from root -> intermediate (the file holds leaf and
      intermediate, the peer trusts the root); ``pki-other-subject``: the same CA, another
      subject; ``pki-self-signed``: PKI_SUBJECT, but self-signed.
    - ``unregistered``: a self-signed certificate no client has.
    """
    require_peer()
    folder = tmp_path_factory.mktemp("oidc-provider-peer")
    root = ca_issued("CN=Contoso Root CA", None, ca=True, days=365)
    intermediate = ca_issued("CN=Contoso Issuing CA", root, ca=True)
    certificates = {
        "self-signed": rsa_cert,
        "dpop": ec_cert,
        "pki": ca_issued(PKI_SUBJECT, intermediate, ca=False),
        "pki-other-subject": ca_issued("CN=reporting-api,O=Contoso", intermediate, ca=False),
        "pki-self-signed": ca_issued(PKI_SUBJECT, None, ca=False),
        "unregistered": generate_certificate("CN=stranger", key_type="ec-p256"),
    }
    chains = {"pki": (intermediate,), "pki-other-subject": (intermediate,)}
    files = {
        name: ClientFiles(*write_client_files(folder, name, cert, *chains.get(name, ())))
        for name, cert in certificates.items()
    }
    root_file = folder / "root-ca.pem"
    root_file.write_bytes(root.pem)
    clients = [
        self_signed_client(SELF_SIGNED, rsa_cert),
        tls_client(PKI, certificates["pki"].x509.subject.rfc4514_string()),
        self_signed_client(DPOP, ec_cert, certificate_bound=False, dpop_bound=True),
        self_signed_client(DPOP_NONCE, ec_cert, certificate_bound=False, dpop_bound=True),
        private_key_jwt_client(JWT_DPOP, rsa_cert, dpop_bound=True),
    ]
    with oidc_provider(
        clients,
        client_ca_files=[root_file],
        dpop_nonce=[DPOP_NONCE],
        directory=folder / "peer",
    ) as peer:
        yield Setup(peer, files, certificates)


def _token_request(
    peer: OidcProvider,
    url: str,
    client: ClientFiles | None,
    form: Mapping[str, str | None],
    *,
    dpop: str | None = None,
) -> httpx.Response:
    """POST a client_credentials request to ``url``, presenting ``client``'s certificate.
    ``scope`` and ``resource`` are there unless ``form`` sets them (``None`` leaves one out)."""
    context = peer.ssl_context(client.cert_file, client.key_file) if client else peer.ssl_context()
    fields = {"grant_type": "client_credentials", "scope": SCOPE, "resource": RESOURCE, **form}
    data = {name: value for name, value in fields.items() if value is not None}
    headers = {"DPoP": dpop} if dpop is not None else {}
    with httpx.Client(verify=context, timeout=10) as http:
        return http.post(url, data=data, headers=headers)


def _token(response: httpx.Response, peer: OidcProvider) -> dict[str, Any]:
    assert response.status_code == 200, (response.text, peer.log()[-2000:])
    body: dict[str, Any] = response.json()
    return body


def _error(response: httpx.Response) -> str:
    error: str = response.json()["error"]
    return error


# -- discovery -------------------------------------------------------------------------------------


def test_discovery_publishes_the_mtls_alias_and_what_the_peer_supports(setup: Setup) -> None:
    peer = setup.peer
    document = peer.discovery
    assert document["mtls_endpoint_aliases"] == {"token_endpoint": peer.mtls_token_endpoint}
    issuer, alias = urlsplit(peer.issuer), urlsplit(peer.mtls_token_endpoint)
    assert (issuer.hostname, alias.hostname) == ("127.0.0.1", "localhost")
    assert alias.port == issuer.port
    assert peer.token_endpoint == f"{peer.issuer}/token"
    assert peer.jwks_uri == f"{peer.issuer}/jwks"
    assert document["tls_client_certificate_bound_access_tokens"] is True
    assert {"self_signed_tls_client_auth", "tls_client_auth", "private_key_jwt"} <= set(
        document["token_endpoint_auth_methods_supported"]
    )
    # What certauth.dpop.DPoPKey signs with: ES256 (generate) and PS256 (an RSA key).
    assert {"ES256", "PS256"} <= set(document["dpop_signing_alg_values_supported"])
    assert "client_credentials" in document["grant_types_supported"]


# -- mutual TLS (RFC 8705) -------------------------------------------------------------------------


def test_self_signed_client_gets_a_jwt_bound_to_its_certificate(setup: Setup) -> None:
    peer, cert = setup.peer, setup.certificates["self-signed"]
    response = _token_request(
        peer, peer.mtls_token_endpoint, setup.files["self-signed"], {"client_id": SELF_SIGNED}
    )
    token = _token(response, peer)
    assert token["token_type"] == "Bearer"
    assert token["scope"] == SCOPE
    assert 0 < token["expires_in"] <= 600
    claims = peer.verified_claims(token["access_token"])
    assert claims["cnf"] == {"x5t#S256": cert.x5t_s256}  # RFC 8705 section 3.1
    assert (claims["client_id"], claims["aud"], claims["scope"]) == (SELF_SIGNED, RESOURCE, SCOPE)
    assert jwt.get_unverified_header(token["access_token"])["typ"] == "at+jwt"  # RFC 9068
    # The peer logs where each token was issued: here, at the alias.
    _wait_for_log(peer, f"grant.success: {SELF_SIGNED} at {peer.mtls_token_endpoint}", more_than=0)


def test_the_jwks_check_refuses_a_tampered_token(setup: Setup) -> None:
    """verified_claims really checks: a token whose claims were edited does not pass."""
    peer = setup.peer
    response = _token_request(
        peer, peer.mtls_token_endpoint, setup.files["self-signed"], {"client_id": SELF_SIGNED}
    )
    header, payload, signature = _token(response, peer)["access_token"].split(".")
    claims = jwt.utils.base64url_decode(payload)
    forged = jwt.utils.base64url_encode(claims.replace(b'"api:read"', b'"api:rite"')).decode()
    with pytest.raises(jwt.InvalidSignatureError):
        peer.verified_claims(f"{header}.{forged}.{signature}")


def test_without_a_resource_the_token_is_for_the_one_resource(setup: Setup) -> None:
    peer = setup.peer
    response = _token_request(
        peer,
        peer.mtls_token_endpoint,
        setup.files["self-signed"],
        {"client_id": SELF_SIGNED, "resource": None},
    )
    claims = peer.verified_claims(_token(response, peer)["access_token"])
    assert claims["aud"] == RESOURCE


def test_an_unknown_resource_is_refused(setup: Setup) -> None:
    peer = setup.peer
    response = _token_request(
        peer,
        peer.mtls_token_endpoint,
        setup.files["self-signed"],
        {"client_id": SELF_SIGNED, "resource": "https://other.example.test/"},
    )
    assert (response.status_code, _error(response)) == (400, "invalid_target")


def test_tls_client_auth_with_a_chain_from_a_trusted_ca(setup: Setup) -> None:
    peer = setup.peer
    response = _token_request(
        peer, peer.mtls_token_endpoint, setup.files["pki"], {"client_id": PKI}
    )
    claims = peer.verified_claims(_token(response, peer)["access_token"])
    assert claims["cnf"] == {"x5t#S256": setup.certificates["pki"].x5t_s256}
    assert claims["client_id"] == PKI


@pytest.mark.parametrize(
    ("client_id", "presented", "why"),
    [
        (SELF_SIGNED, "unregistered", "unregistered client certificate provided"),
        (SELF_SIGNED, None, "client certificate was not provided"),
        (PKI, "pki-other-subject", "certificate subject value does not match"),
        (PKI, "pki-self-signed", "client certificate was not verified"),
        (PKI, None, "client certificate was not provided"),
    ],
)
def test_a_certificate_the_client_does_not_have_is_refused(
    setup: Setup, client_id: str, presented: str | None, why: str
) -> None:
    peer = setup.peer
    client = setup.files[presented] if presented else None
    logged = peer.log().count(why)
    response = _token_request(peer, peer.mtls_token_endpoint, client, {"client_id": client_id})
    assert (response.status_code, _error(response)) == (401, "invalid_client")
    _wait_for_log(peer, why, more_than=logged)


# -- DPoP (RFC 9449) -------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["ES256", "PS256"])
def test_a_dpop_proof_binds_the_token_to_the_key(setup: Setup, alg: str) -> None:
    peer = setup.peer
    key = (
        DPoPKey.generate()
        if alg == "ES256"
        else DPoPKey.from_private_key(rsa.generate_private_key(65537, 2048))
    )
    assert key.alg == alg
    proof = make_proof(key, htm="POST", htu=peer.mtls_token_endpoint)
    response = _token_request(
        peer, peer.mtls_token_endpoint, setup.files["dpop"], {"client_id": DPOP}, dpop=proof
    )
    token = _token(response, peer)
    assert token["token_type"] == "DPoP"
    claims = peer.verified_claims(token["access_token"])
    assert claims["cnf"] == {"jkt": key.thumbprint}  # RFC 9449 section 6.1


def test_a_dpop_bound_client_without_a_proof_is_refused(setup: Setup) -> None:
    peer = setup.peer
    response = _token_request(
        peer, peer.mtls_token_endpoint, setup.files["dpop"], {"client_id": DPOP}
    )
    assert (response.status_code, _error(response)) == (400, "invalid_grant")


def test_a_proof_for_another_url_is_refused(setup: Setup) -> None:
    """The proof names the token endpoint on 127.0.0.1; the request goes to the alias."""
    peer = setup.peer
    proof = make_proof(DPoPKey.generate(), htm="POST", htu=peer.token_endpoint)
    response = _token_request(
        peer, peer.mtls_token_endpoint, setup.files["dpop"], {"client_id": DPOP}, dpop=proof
    )
    assert (response.status_code, _error(response)) == (400, "invalid_dpop_proof")


def test_when_a_nonce_is_required_the_retry_with_it_succeeds(setup: Setup) -> None:
    peer, key = setup.peer, DPoPKey.generate()
    url, files = peer.mtls_token_endpoint, setup.files["dpop"]
    first = _token_request(
        peer, url, files, {"client_id": DPOP_NONCE}, dpop=make_proof(key, htm="POST", htu=url)
    )
    assert (first.status_code, _error(first)) == (400, "use_dpop_nonce")  # RFC 9449 section 8
    nonce = first.headers["DPoP-Nonce"]
    retry = _token_request(
        peer,
        url,
        files,
        {"client_id": DPOP_NONCE},
        dpop=make_proof(key, htm="POST", htu=url, nonce=nonce),
    )
    token = _token(retry, peer)
    assert token["token_type"] == "DPoP"
    assert peer.verified_claims(token["access_token"])["cnf"] == {"jkt": key.thumbprint}


def test_private_key_jwt_with_a_dpop_proof(setup: Setup) -> None:
    """No client certificate at all: RFC 7523 client authentication, DPoP binding."""
    peer, key = setup.peer, DPoPKey.generate()
    signer = setup.certificates["self-signed"].require_private_key()
    now = int(time.time())
    assertion = jwt.encode(
        {
            "iss": JWT_DPOP,
            "sub": JWT_DPOP,
            "aud": peer.token_endpoint,
            "jti": str(uuid.uuid4()),
            "iat": now,
            "exp": now + 300,
        },
        signer,
        algorithm="RS256",
    )
    form = {
        "client_id": JWT_DPOP,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion,
    }
    proof = make_proof(key, htm="POST", htu=peer.token_endpoint)
    token = _token(_token_request(peer, peer.token_endpoint, None, form, dpop=proof), peer)
    assert token["token_type"] == "DPoP"
    assert peer.verified_claims(token["access_token"])["cnf"] == {"jkt": key.thumbprint}


# -- the fixture itself ----------------------------------------------------------------------------


def test_a_nonce_for_everyone_and_nothing_left_running(
    tmp_path: Path, ec_cert: Certificate
) -> None:
    """``dpop_nonce=True``: every DPoP proof needs a nonce. On exit the server is gone."""
    cert_file, key_file = write_client_files(tmp_path, "client", ec_cert)
    client = self_signed_client("any", ec_cert, certificate_bound=False)
    with oidc_provider([client], dpop_nonce=True) as peer:
        port = urlsplit(peer.issuer).port
        assert port is not None
        proof = make_proof(DPoPKey.generate(), htm="POST", htu=peer.token_endpoint)
        response = _token_request(
            peer,
            peer.token_endpoint,
            ClientFiles(cert_file, key_file),
            {"client_id": "any"},
            dpop=proof,
        )
        assert (response.status_code, _error(response)) == (400, "use_dpop_nonce")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_a_client_oidc_provider_refuses_stops_the_start_with_its_reason(tmp_path: Path) -> None:
    bad = {"client_id": "bad", "token_endpoint_auth_method": "client_secret_basic"}
    with pytest.raises(RuntimeError) as raised, oidc_provider([bad], directory=tmp_path):
        pass
    message = str(raised.value)
    assert message.startswith("oidc-provider exited with status 1 before it was ready")
    assert "a client in the configuration is invalid" in message
    assert "client_secret is mandatory property" in message


@pytest.mark.parametrize("ci", ["true", None])
def test_without_node_it_skips_or_under_ci_fails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ci: str | None
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no node on it
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    reason = missing_reason()
    assert reason is not None
    assert reason.startswith("node is not installed")
    expected = pytest.fail.Exception if ci == "true" else pytest.skip.Exception
    with pytest.raises(expected) as raised:
        require_peer()
    assert reason in str(raised.value)


def _wait_for_log(peer: OidcProvider, text: str, *, more_than: int, timeout: float = 2.0) -> None:
    """The peer logged ``text`` (its reason for a refusal) more than ``more_than`` times so
    far; the line may trail the response."""
    deadline = time.monotonic() + timeout
    while peer.log().count(text) <= more_than:
        assert time.monotonic() < deadline, f"{text!r} not in the peer's log:\n{peer.log()}"
        time.sleep(0.02)
