"""The emulator's mutual-TLS token endpoint (RFC 8705): client authentication by certificate
(``self_signed_tls_client_auth``, ``tls_client_auth``), certificate-bound tokens
(``cnf.x5t#S256``), discovery, and the CLI.

Every request is a real TLS handshake: raw httpx clients whose ``ssl.SSLContext`` trusts the
emulator's ``ca_file`` and presents a client certificate with ``load_cert_chain``. The client CA
chains (root -> intermediate -> leaf) are made here with certauth's certificate builder.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
import signal
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _emulator_helpers import (
    CLIENT_ID,
    assertion_form,
    claims_of,
    make_assertion,
    secret_form,
)
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from certauth import verify_access_token
from certauth.certificates import Certificate, build_certificate, generate_certificate
from certauth.dpop import DPoPKey, make_proof
from certauth.emulator import Emulator
from certauth.emulator.requests import PeerCertificate
from certauth.emulator.server import HttpRequest, HttpResponse
from certauth.errors import ConfigurationError, InvalidArgumentError

NOW = dt.datetime.now(dt.timezone.utc)
BILLING = "billing-app"
BILLING_DN = "CN=billing,O=Contoso"
FORM = {"grant_type": "client_credentials", "scope": "api://things/.default"}
#: The TLS alert a certificate the server does not trust gets (with TLS 1.3 the client sees it
#: on its first read: its handshake ended before the server checked the certificate).
UNKNOWN_CA = "(?i)unknown.ca"


# -- certificates and clients ---------------------------------------------------------------------


def _ca(subject: str, issuer: Certificate | None = None) -> Certificate:
    return build_certificate(
        subject,
        ec.generate_private_key(ec.SECP256R1()),
        not_before=NOW - dt.timedelta(hours=1),
        not_after=NOW + dt.timedelta(days=2),
        issuer=issuer,
        ca=True,
        key_usage=["key_cert_sign", "crl_sign"],
        key_identifiers=True,
    )


def _leaf(subject: str, issuer: Certificate) -> Certificate:
    return build_certificate(
        subject,
        ec.generate_private_key(ec.SECP256R1()),
        not_before=NOW - dt.timedelta(hours=1),
        not_after=NOW + dt.timedelta(days=1),
        issuer=issuer,
        ca=False,
        key_usage=["digital_signature"],
        extended_key_usage=[ExtendedKeyUsageOID.CLIENT_AUTH],
        key_identifiers=True,
    )


def _x5t_s256(cert: Certificate) -> str:
    """RFC 8705 section 3.1, computed here: base64url(SHA-256(DER)), no padding."""
    digest = hashlib.sha256(cert.der).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class Pki:
    """A client CA (root -> intermediate) and the files of certificates it issued."""

    def __init__(self, folder: Path, name: str = "Contoso") -> None:
        self.folder = folder
        self.root = _ca(f"CN={name} Root CA")
        self.intermediate = _ca(f"CN={name} Issuing CA", self.root)
        self.root_file = folder / f"{name}-root.pem"
        self.root_file.write_bytes(self.root.pem)

    def issue(self, subject: str) -> tuple[Certificate, Path]:
        """A client certificate for ``subject`` and a file with its key, itself and the
        intermediate (what a client sends in the handshake)."""
        leaf = _leaf(subject, self.intermediate)
        path = self.folder / f"{hashlib.sha256(leaf.der).hexdigest()[:12]}.pem"
        path.write_bytes(leaf.private_key_pem() + leaf.pem + self.intermediate.pem)
        return leaf, path


def _key_file(folder: Path, cert: Certificate) -> Path:
    path = folder / f"{cert.x5t_s256[:12]}.pem"
    path.write_bytes(cert.private_key_pem() + cert.pem)
    return path


def _client(tenant: Emulator, cert_file: Path | None = None) -> httpx.Client:
    """An httpx client trusting the emulator's CA, presenting ``cert_file`` if given."""
    assert tenant.ca_file is not None
    context = ssl.create_default_context(cafile=tenant.ca_file)
    if cert_file is not None:
        context.load_cert_chain(cert_file)
    return httpx.Client(verify=context, timeout=10)


def _post(tenant: Emulator, cert_file: Path | None, **form: str) -> httpx.Response:
    url = tenant.mtls_token_endpoint
    assert url is not None
    with _client(tenant, cert_file) as http:
        return http.post(url, data={**FORM, **form})


def _assert_invalid_client(response: httpx.Response, fragment: str) -> dict[str, Any]:
    """RFC 6749 section 5.2: 401 invalid_client, in the emulator's usual body (no AADSTS code:
    Entra has none for mutual TLS)."""
    body: dict[str, Any] = response.json()
    assert response.status_code == 401, body
    assert body["error"] == "invalid_client"
    text, _, trace = body["error_description"].partition("\r\nTrace ID: ")
    assert fragment in text, body
    assert trace.startswith(body["trace_id"])
    assert "error_codes" not in body
    return body


@pytest.fixture(scope="module")
def ec_client_cert() -> Certificate:
    """A self-signed client certificate (EC P-256: fast, fine for TLS)."""
    return generate_certificate("CN=billing-self-signed", key_type="ec-p256")


@pytest.fixture
def tenant(rsa_cert: Certificate, ec_client_cert: Certificate) -> Iterator[Emulator]:
    """A TLS emulator: CLIENT_ID with rsa_cert and role Things.Read, BILLING with the EC
    certificate."""
    with Emulator(tls=True) as emulator:
        emulator.register(CLIENT_ID, rsa_cert, roles=["Things.Read"])
        emulator.register(BILLING, ec_client_cert)
        yield emulator


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


@pytest.fixture
def ca_tenant(pki: Pki) -> Iterator[Emulator]:
    """A TLS emulator trusting ``pki``'s root as client CA; BILLING registered by subject
    (written with a space after the comma: the DN is normalised)."""
    with Emulator(tls=True, client_ca=[pki.root_file]) as emulator:
        emulator.register(BILLING, tls_client_auth_subject_dn="CN=billing, O=Contoso")
        yield emulator


# -- self_signed_tls_client_auth (RFC 8705 section 2.2) ---------------------------------------


def test_self_signed_certificate_authenticates_and_binds(
    tenant: Emulator, ec_client_cert: Certificate, tmp_path: Path
) -> None:
    response = _post(tenant, _key_file(tmp_path, ec_client_cert), client_id=BILLING)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer"  # RFC 8705 section 3: still a bearer token_type
    claims = claims_of(body["access_token"])
    assert claims["cnf"] == {"x5t#S256": _x5t_s256(ec_client_cert)}
    assert claims["azp"] == BILLING
    assert claims["azpacr"] == "2"  # a certificate, not a secret
    # The tenant's issuer (the main listener), not the mutual-TLS listener's address.
    assert claims["iss"] == tenant.issuer
    verified = verify_access_token(
        body["access_token"],
        issuer=tenant.issuer,
        audience="api://things",
        verify=tenant.ca_file,
        client_certificate=ec_client_cert.der,
    )
    assert verified["cnf"]["x5t#S256"] == ec_client_cert.x5t_s256
    assert tenant.last_thumbprint == ec_client_cert.x5t_s256


def test_the_v1_endpoint_on_the_mtls_listener(
    tenant: Emulator, ec_client_cert: Certificate, tmp_path: Path
) -> None:
    assert tenant.mtls_token_endpoint is not None
    url = tenant.mtls_token_endpoint.replace("/oauth2/v2.0/token", "/oauth2/token")
    with _client(tenant, _key_file(tmp_path, ec_client_cert)) as http:
        form = {"grant_type": "client_credentials", "client_id": BILLING, "resource": "api://x"}
        response = http.post(url, data=form)
    assert response.status_code == 200, response.text
    assert claims_of(response.json()["access_token"])["cnf"] == {
        "x5t#S256": _x5t_s256(ec_client_cert)
    }


def test_an_unknown_certificate_is_refused_at_the_handshake(
    tenant: Emulator, tmp_path: Path
) -> None:
    stranger = generate_certificate("CN=stranger", key_type="ec-p256")
    with pytest.raises(httpx.TransportError, match=UNKNOWN_CA):
        _post(tenant, _key_file(tmp_path, stranger), client_id=BILLING)


def test_another_apps_certificate_is_refused_naming_its_thumbprint(
    tenant: Emulator, rsa_cert: Certificate, tmp_path: Path
) -> None:
    # rsa_cert passes the handshake (CLIENT_ID registered it) but is not BILLING's.
    response = _post(tenant, _key_file(tmp_path, rsa_cert), client_id=BILLING)
    body = _assert_invalid_client(response, f"thumbprint '{rsa_cert.thumbprint_sha1}'")
    assert rsa_cert.x5t_s256 in body["error_description"]
    assert "no tls_client_auth subject" in body["error_description"]


def test_a_certificate_registered_while_running_is_trusted_at_once(
    tenant: Emulator, tmp_path: Path
) -> None:
    late = generate_certificate("CN=late", key_type="ec-p256")
    cert_file = _key_file(tmp_path, late)
    with pytest.raises(httpx.TransportError, match=UNKNOWN_CA):
        _post(tenant, cert_file, client_id="late-app")
    tenant.register("late-app", late)
    response = _post(tenant, cert_file, client_id="late-app")
    assert response.status_code == 200, response.text
    assert claims_of(response.json()["access_token"])["cnf"] == {"x5t#S256": _x5t_s256(late)}


def test_a_key_added_through_graph_is_trusted_at_once(
    tenant: Emulator, rsa_cert: Certificate, new_cert: Certificate, tmp_path: Path
) -> None:
    from _graph_helpers import GRAPH, key_body
    from _graph_helpers import make_proof as graph_proof

    with _client(tenant) as http:
        form = assertion_form(
            make_assertion(rsa_cert, tenant.token_endpoint), scope=f"{GRAPH}/.default"
        )
        token = http.post(tenant.token_endpoint, data=form).json()["access_token"]
        object_id = tenant.app_object_id(CLIENT_ID)
        added = http.post(
            f"{tenant.graph_url}/v1.0/applications/{object_id}/addKey",
            json=key_body(new_cert, graph_proof(rsa_cert, object_id)),
            headers={"Authorization": f"Bearer {token}"},
        )
    assert added.status_code == 200, added.text
    response = _post(tenant, _key_file(tmp_path, new_cert), client_id=CLIENT_ID)
    assert response.status_code == 200, response.text


def test_a_registered_certificate_outside_its_validity_on_the_emulator_clock(
    tenant: Emulator, ec_client_cert: Certificate, tmp_path: Path
) -> None:
    tenant.clock.advance(400 * 86400)  # the handshake uses real time; the emulator its clock
    response = _post(tenant, _key_file(tmp_path, ec_client_cert), client_id=BILLING)
    _assert_invalid_client(response, "outside its validity period")


def test_no_certificate_and_no_assertion_is_invalid_client(tenant: Emulator) -> None:
    response = _post(tenant, None, client_id=BILLING)
    _assert_invalid_client(response, "No client certificate was presented")


# -- tls_client_auth (RFC 8705 section 2.1) ---------------------------------------------------


def test_a_ca_issued_certificate_matched_by_subject(ca_tenant: Emulator, pki: Pki) -> None:
    leaf, cert_file = pki.issue(BILLING_DN)
    response = _post(ca_tenant, cert_file, client_id=BILLING)
    assert response.status_code == 200, response.text
    claims = claims_of(response.json()["access_token"])
    assert claims["cnf"] == {"x5t#S256": _x5t_s256(leaf)}
    assert claims["azpacr"] == "2"


def test_the_subject_compares_case_insensitively(ca_tenant: Emulator, pki: Pki) -> None:
    _, cert_file = pki.issue("CN=BILLING,O=contoso")
    assert _post(ca_tenant, cert_file, client_id=BILLING).status_code == 200


def test_a_wrong_subject_is_refused(ca_tenant: Emulator, pki: Pki) -> None:
    leaf, cert_file = pki.issue("CN=billing,O=Fabrikam")
    response = _post(ca_tenant, cert_file, client_id=BILLING)
    body = _assert_invalid_client(response, f"thumbprint '{leaf.thumbprint_sha1}'")
    assert "subject 'CN=billing,O=Fabrikam'" in body["error_description"]
    assert "tls_client_auth subject 'cn=billing,o=contoso'" in body["error_description"]


def test_the_subject_alone_is_not_enough_for_another_app(ca_tenant: Emulator, pki: Pki) -> None:
    # Every app's DN is its own: the CA's certificate for BILLING does not authenticate others.
    ca_tenant.register("other-app", tls_client_auth_subject_dn="CN=other,O=Contoso")
    _, cert_file = pki.issue(BILLING_DN)
    response = _post(ca_tenant, cert_file, client_id="other-app")
    _assert_invalid_client(response, "is not the app's tls_client_auth subject")


def test_an_untrusted_ca_is_refused_at_the_handshake(ca_tenant: Emulator, tmp_path: Path) -> None:
    other = Pki(tmp_path, "Fabrikam")
    _, cert_file = other.issue(BILLING_DN)
    with pytest.raises(httpx.TransportError, match=UNKNOWN_CA):
        _post(ca_tenant, cert_file, client_id=BILLING)


def test_a_registered_ca_certificate_cannot_issue_tls_client_auth_certificates(
    ca_tenant: Emulator, tmp_path: Path
) -> None:
    # A self-signed CA certificate registered for one app is trusted by the handshake as its
    # own anchor, so what it issues passes the handshake too; the token endpoint must not
    # take such a certificate for BILLING's tls_client_auth subject.
    rogue = _ca("CN=Mallory CA")
    ca_tenant.register("mallory", rogue)
    forged = _leaf(BILLING_DN, rogue)
    cert_file = tmp_path / "forged.pem"
    cert_file.write_bytes(forged.private_key_pem() + forged.pem)
    response = _post(ca_tenant, cert_file, client_id=BILLING)
    _assert_invalid_client(response, "was not issued through a client CA")


def test_without_a_verified_chain_tls_client_auth_is_refused(pki: Pki) -> None:
    # A resumed TLS session keeps no verified chain: whether a client CA issued the
    # certificate is unknown, and unknown is a refusal.
    from certauth.emulator.entra_errors import OAuthError
    from certauth.emulator.mtls_checks import authenticate_tls_client
    from certauth.emulator.registry import App, normalize_subject_dn

    leaf, _ = pki.issue(BILLING_DN)
    app = App(BILLING, "object-id", BILLING)
    app.tls_client_auth_subject_dn = normalize_subject_dn(BILLING_DN)
    now = NOW.timestamp()
    assert authenticate_tls_client(PeerCertificate(leaf.der, True), app, now=now)[0] == (
        "tls_client_auth"
    )
    with pytest.raises(OAuthError, match="resumed session"):
        authenticate_tls_client(PeerCertificate(leaf.der, None), app, now=now)


@pytest.mark.parametrize(
    "written",
    [BILLING_DN, "CN=billing, O=Contoso", "cn=Billing,o=CONTOSO", "CN=billing ,O=Contoso"],
)
def test_subject_dns_are_normalised_the_same_way(written: str) -> None:
    from cryptography import x509

    from certauth.emulator.registry import normalize_subject_dn

    # The certificate's side: cryptography's Name, most specific last in the sequence.
    name = x509.Name.from_rfc4514_string(BILLING_DN)
    assert normalize_subject_dn(written) == normalize_subject_dn(name) == "cn=billing,o=contoso"


def test_a_subject_dn_that_does_not_parse_is_a_usage_error() -> None:
    with Emulator() as emulator, pytest.raises(InvalidArgumentError, match="RFC 4514"):
        emulator.register(BILLING, tls_client_auth_subject_dn="billing")


# -- other client authentication on the mutual-TLS listener (RFC 8705 section 3) ---------------


def test_an_assertion_over_mtls_gets_the_certificate_bound(
    tenant: Emulator, rsa_cert: Certificate, ec_client_cert: Certificate, tmp_path: Path
) -> None:
    # The assertion authenticates CLIENT_ID; the TLS certificate (BILLING's) binds the token.
    url = tenant.mtls_token_endpoint
    assert url is not None
    with _client(tenant, _key_file(tmp_path, ec_client_cert)) as http:
        response = http.post(url, data=assertion_form(make_assertion(rsa_cert, url)))
    assert response.status_code == 200, response.text
    claims = claims_of(response.json()["access_token"])
    assert claims["azp"] == CLIENT_ID
    assert claims["roles"] == ["Things.Read"]
    assert claims["cnf"] == {"x5t#S256": _x5t_s256(ec_client_cert)}
    assert response.json()["token_type"] == "Bearer"


def test_an_assertion_over_mtls_in_strict_mode_names_the_mtls_endpoint(
    rsa_cert: Certificate, tmp_path: Path
) -> None:
    with Emulator(tls=True, strict=True) as strict:
        strict.register(CLIENT_ID, rsa_cert)
        url = strict.mtls_token_endpoint
        assert url is not None
        with _client(strict, _key_file(tmp_path, rsa_cert)) as http:
            wrong = http.post(
                url, data=assertion_form(make_assertion(rsa_cert, strict.token_endpoint))
            )
            assert wrong.json()["error_codes"] == [700023]  # aud: the URL posted to
            right = http.post(url, data=assertion_form(make_assertion(rsa_cert, url)))
    assert right.status_code == 200, right.text
    assert claims_of(right.json()["access_token"])["cnf"] == {"x5t#S256": rsa_cert.x5t_s256}


def test_an_assertion_without_a_certificate_gets_a_plain_token(
    tenant: Emulator, rsa_cert: Certificate
) -> None:
    url = tenant.mtls_token_endpoint
    assert url is not None
    with _client(tenant) as http:
        response = http.post(url, data=assertion_form(make_assertion(rsa_cert, url)))
    assert response.status_code == 200, response.text
    assert "cnf" not in claims_of(response.json()["access_token"])


def test_a_secret_with_a_certificate_is_bound_too(
    tenant: Emulator, ec_client_cert: Certificate, tmp_path: Path
) -> None:
    tenant.register_secret(CLIENT_ID, "s3cret")
    url = tenant.mtls_token_endpoint
    assert url is not None
    with _client(tenant, _key_file(tmp_path, ec_client_cert)) as http:
        response = http.post(url, data=secret_form("s3cret"))
    assert response.status_code == 200, response.text
    claims = claims_of(response.json()["access_token"])
    assert claims["azpacr"] == "1"
    assert claims["cnf"] == {"x5t#S256": _x5t_s256(ec_client_cert)}


def test_the_main_listener_binds_nothing_and_asks_for_no_certificate(
    tenant: Emulator, ec_client_cert: Certificate, tmp_path: Path
) -> None:
    with _client(tenant, _key_file(tmp_path, ec_client_cert)) as http:
        response = http.post(tenant.token_endpoint, data={**FORM, "client_id": BILLING})
    # No assertion and no secret: Entra's answer; the certificate was never asked for.
    assert response.json()["error_codes"] == [7000218]


def test_dpop_and_mtls_together(
    tenant: Emulator, ec_client_cert: Certificate, tmp_path: Path
) -> None:
    key = DPoPKey.generate()
    url = tenant.mtls_token_endpoint
    assert url is not None
    with _client(tenant, _key_file(tmp_path, ec_client_cert)) as http:
        proof = make_proof(key, htm="POST", htu=url)  # htu: the mutual-TLS listener's URL
        response = http.post(url, data={**FORM, "client_id": BILLING}, headers={"DPoP": proof})
        assert response.status_code == 200, response.text
        wrong = make_proof(key, htm="POST", htu=tenant.token_endpoint)
        refused = http.post(url, data={**FORM, "client_id": BILLING}, headers={"DPoP": wrong})
    assert response.json()["token_type"] == "DPoP"
    assert claims_of(response.json()["access_token"])["cnf"] == {
        "x5t#S256": _x5t_s256(ec_client_cert),
        "jkt": key.thumbprint,
    }
    assert refused.json()["error"] == "invalid_dpop_proof"


def test_handlers_see_the_peer_certificate(
    tenant: Emulator, ec_client_cert: Certificate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[HttpRequest] = []
    route = tenant._router.handle

    def spy(request: HttpRequest) -> HttpResponse:
        seen.append(request)
        return route(request)

    monkeypatch.setattr(tenant._router, "handle", spy)
    with _client(tenant, _key_file(tmp_path, ec_client_cert)) as http:
        http.get(f"{tenant.authority_host}/_emulator/resource")
        assert tenant.mtls_token_endpoint is not None
        mtls_base = tenant.mtls_token_endpoint.split(f"/{tenant.tenant_id}/")[0]
        http.get(f"{mtls_base}/_emulator/resource")
    main, mtls = seen
    assert main.peer_certificate is None
    assert not main.mtls_base_url
    assert mtls.peer_certificate == ec_client_cert.der
    assert mtls.peer_chain == (ec_client_cert.der,)
    assert mtls.mtls_base_url == mtls_base
    assert mtls.base_url == tenant.authority_host  # the main listener, for issuers


# -- discovery, addresses, the CLI ----------------------------------------------------------------


def test_discovery_lists_the_mtls_alias_and_methods(tenant: Emulator) -> None:
    with _client(tenant) as http:
        doc = http.get(tenant.openid_configuration_url).json()
        v1 = http.get(
            f"{tenant.authority_host}/{tenant.tenant_id}/.well-known/openid-configuration"
        ).json()
        by_name = http.get(tenant.openid_configuration_url.replace("127.0.0.1", "localhost")).json()
        assert tenant.mtls_token_endpoint is not None
        mtls_base = tenant.mtls_token_endpoint.split(f"/{tenant.tenant_id}/")[0]
        on_mtls = http.get(
            tenant.openid_configuration_url.replace(tenant.authority_host, mtls_base)
        ).json()
    assert doc["mtls_endpoint_aliases"] == {"token_endpoint": tenant.mtls_token_endpoint}
    assert doc["tls_client_certificate_bound_access_tokens"] is True
    assert doc["token_endpoint_auth_methods_supported"] == [
        "client_secret_post", "private_key_jwt", "client_secret_basic",
        "tls_client_auth", "self_signed_tls_client_auth",
    ]  # fmt: skip
    assert doc["token_endpoint"] == tenant.token_endpoint
    assert v1["mtls_endpoint_aliases"] == {
        "token_endpoint": tenant.mtls_token_endpoint.replace("/v2.0/token", "/token")
    }
    # The alias is on the host name the client used.
    assert by_name["mtls_endpoint_aliases"]["token_endpoint"].startswith("https://localhost:")
    # Fetched on the mutual-TLS listener, the document is the tenant's.
    assert on_mtls == doc


def test_without_tls_there_is_no_mtls_listener(emulator: Emulator, http: httpx.Client) -> None:
    assert emulator.mtls_token_endpoint is None
    assert "mtls_token_endpoint" not in emulator.info()
    doc = http.get(emulator.openid_configuration_url).json()
    assert "mtls_endpoint_aliases" not in doc
    assert "tls_client_certificate_bound_access_tokens" not in doc
    assert "tls_client_auth" not in doc["token_endpoint_auth_methods_supported"]


def test_info_and_the_listener_follow_start_and_stop(tmp_path: Path) -> None:
    emulator = Emulator(tls=True)
    assert emulator.mtls_token_endpoint is None
    with emulator:
        url = emulator.mtls_token_endpoint
        assert url is not None
        assert emulator.info()["mtls_token_endpoint"] == url
        assert list(emulator.info())[-3:] == ["ca_file", "mtls_token_endpoint", "mtls_resource_url"]
    assert emulator.mtls_token_endpoint is None
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, verify=False, timeout=5)  # noqa: S501 - the port is closed; no trust needed


def test_client_ca_needs_tls_and_a_readable_pem(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="tls=True"):
        Emulator(client_ca=[pki.root_file])
    (tmp_path / "not.pem").write_text("not a certificate\n")
    with pytest.raises(ConfigurationError, match="no PEM certificate"):
        Emulator(tls=True, client_ca=[tmp_path / "not.pem"])
    with pytest.raises(ConfigurationError, match="no such file"):
        Emulator(tls=True, client_ca=[tmp_path / "missing.pem"])


def test_config_file_registers_a_tls_client(pki: Pki, tmp_path: Path) -> None:
    config = tmp_path / "tenant.json"
    config.write_text(
        json.dumps({"apps": [{"client_id": BILLING, "tls_client_auth_subject_dn": BILLING_DN}]})
    )
    with Emulator(tls=True, client_ca=[pki.root_file], config=config) as emulator:
        _, cert_file = pki.issue(BILLING_DN)
        assert _post(emulator, cert_file, client_id=BILLING).status_code == 200
    config.write_text(
        json.dumps({"apps": [{"client_id": BILLING, "tls_client_auth_subject_dn": "nope"}]})
    )
    with pytest.raises(ConfigurationError, match=r"apps\[0\]: 'tls_client_auth_subject_dn'"):
        Emulator(config=config)


def test_cli_tls_client_ca_and_register_tls_client(
    pki: Pki, tmp_path: Path, ec_client_cert: Certificate
) -> None:
    from test_emulator_cli import running

    self_signed = tmp_path / "self-signed.crt"
    self_signed.write_bytes(ec_client_cert.pem)
    args = [
        "--tls", "--client-ca", str(pki.root_file),
        "--register-tls-client", f"{BILLING}={BILLING_DN}",
        "--register", f"self-app={self_signed}",
    ]  # fmt: skip
    with running(args, tmp_path / "ready.json") as (process, info):
        url = info["mtls_token_endpoint"]
        leaf, cert_file = pki.issue(BILLING_DN)
        context = ssl.create_default_context(cafile=info["ca_file"])
        context.load_cert_chain(cert_file)
        with httpx.Client(verify=context, timeout=10) as http:
            response = http.post(url, data={**FORM, "client_id": BILLING})
        assert response.status_code == 200, response.text
        assert claims_of(response.json()["access_token"])["cnf"] == {"x5t#S256": _x5t_s256(leaf)}
        context = ssl.create_default_context(cafile=info["ca_file"])
        context.load_cert_chain(_key_file(tmp_path, ec_client_cert))
        with httpx.Client(verify=context, timeout=10) as http:
            assert http.post(url, data={**FORM, "client_id": "self-app"}).status_code == 200
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    assert out.strip().splitlines()[-2:] == [
        f"mtls_token_endpoint: {url}",
        f"mtls_resource_url: {url.split('/c3a7')[0]}/_emulator/resource",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--client-ca", "{root}"], "--client-ca is for the mutual-TLS listener: add --tls"),
        (["--tls", "--register-tls-client", "app=billing"], "--register-tls-client"),
        (["--tls", "--register-tls-client", "app"], "--register-tls-client"),
    ],
)
def test_cli_refuses_bad_mtls_options(
    args: list[str], message: str, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    from certauth.cli.main import main

    argv = ["emulator", "--port", "0", *(a.replace("{root}", str(pki.root_file)) for a in args)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err


def test_the_docs_example_runs() -> None:
    from _docs import section

    blocks = re.findall(r"```python\n(.*?)```", section("emulator"), re.DOTALL)
    example = next(b for b in blocks if "tenant.mtls_token_endpoint" in b)
    exec(compile(example, "docs/emulator.md", "exec"), {})  # noqa: S102


def test_certauths_mtls_client_with_a_ca_issued_certificate(ca_tenant: Emulator, pki: Pki) -> None:
    # certauth's own client (not raw httpx): tls_client_auth by subject, the chain in the file.
    from certauth import CertificateCredential

    leaf, path = pki.issue(BILLING_DN)
    with CertificateCredential(
        None, BILLING, path, issuer=ca_tenant.issuer, verify=ca_tenant.ca_file, mtls=True
    ) as credential:
        token = credential.get_token("api://things/.default").token
        assert ca_tenant.mtls_resource_url is not None
        with credential.http_client("api://things/.default") as api:
            answer = api.get(ca_tenant.mtls_resource_url)
    assert answer.status_code == 200, answer.text
    assert answer.json()["cnf"] == {"x5t#S256": leaf.x5t_s256}
    assert ca_tenant.last_thumbprint == leaf.x5t_s256
    assert claims_of(token)["cnf"] == {"x5t#S256": leaf.x5t_s256}
