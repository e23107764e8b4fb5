"""certauth's sender-constrained tokens against node oidc-provider, a server certauth did not
write: mutual-TLS client authentication and certificate-bound tokens (RFC 8705), checked with
the peer's own JWKS and with certauth's verifier, and a stolen token refused.

The peer itself is proven with raw HTTP in test_oidc_provider_peer.py; here only certauth's
public API (and its CLI) talks to it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from _cert_helpers import run_cli
from _oidc_provider import (
    SCOPE,
    OidcProvider,
    ca_issued,
    oidc_provider,
    private_key_jwt_client,
    require_peer,
    self_signed_client,
    tls_client,
    write_client_files,
)

from certauth import AsyncCertificateCredential, CertificateCredential
from certauth.certificates import Certificate, generate_certificate
from certauth.errors import TokenRequestError

pytestmark = pytest.mark.interop

SELF_SIGNED = "certauth-self-signed"
PKI = "certauth-pki"
PKI_SUBJECT = "CN=certauth-pki,O=Contoso"
DPOP = "certauth-dpop"
DPOP_NONCE = "certauth-dpop-nonce"
API = "https://api.example.test/items"


@dataclass(frozen=True)
class Client:
    certificate: Certificate
    cert_file: Path
    key_file: Path


@dataclass(frozen=True)
class Setup:
    peer: OidcProvider
    clients: dict[str, Client]


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory, ec_cert: Certificate, rsa_cert: Certificate
) -> Iterator[Setup]:
    require_peer()
    folder = tmp_path_factory.mktemp("oidc-provider-certauth")
    root = ca_issued("CN=Contoso Root CA", None, ca=True, days=365)
    intermediate = ca_issued("CN=Contoso Issuing CA", root, ca=True)
    pki = ca_issued(PKI_SUBJECT, intermediate, ca=False)
    stranger = generate_certificate("CN=stranger", key_type="ec-p256")
    clients = {
        "self-signed": Client(ec_cert, *write_client_files(folder, "self-signed", ec_cert)),
        "pki": Client(pki, *write_client_files(folder, "pki", pki, intermediate)),
        "stranger": Client(stranger, *write_client_files(folder, "stranger", stranger)),
        "jwt": Client(rsa_cert, *write_client_files(folder, "jwt", rsa_cert)),
    }
    root_file = folder / "root-ca.pem"
    root_file.write_bytes(root.pem)
    registrations = [
        self_signed_client(SELF_SIGNED, ec_cert),
        tls_client(PKI, pki.x509.subject.rfc4514_string()),
        private_key_jwt_client(DPOP, rsa_cert, dpop_bound=True),
        private_key_jwt_client(DPOP_NONCE, rsa_cert, dpop_bound=True),
    ]
    with oidc_provider(
        registrations,
        client_ca_files=[root_file],
        dpop_nonce=[DPOP_NONCE],
        directory=folder / "peer",
    ) as peer:
        yield Setup(peer, clients)


def _credential(setup: Setup, client_id: str, name: str) -> CertificateCredential:
    client = setup.clients[name]
    return CertificateCredential(
        None,
        client_id,
        client.cert_file,
        key_path=client.key_file,
        issuer=setup.peer.issuer,
        verify=str(setup.peer.ca_file),
        mtls=True,
    )


@pytest.mark.parametrize(("client_id", "name"), [(SELF_SIGNED, "self-signed"), (PKI, "pki")])
def test_mtls_client_authentication_gets_a_certificate_bound_token(
    setup: Setup, client_id: str, name: str
) -> None:
    with _credential(setup, client_id, name) as credential:
        token = credential.request_token(SCOPE)
    claims = setup.peer.verified_claims(token.access_token)
    assert claims["cnf"] == {"x5t#S256": setup.clients[name].certificate.x5t_s256}
    assert token.token_type == "Bearer"
    # RFC 8705 section 5: the request went to the discovery document's mTLS alias.
    assert f"grant.success: {client_id} at {setup.peer.mtls_token_endpoint}" in setup.peer.log()


def test_the_async_credential_does_the_same(setup: Setup) -> None:
    client = setup.clients["self-signed"]

    async def scenario() -> str:
        async with AsyncCertificateCredential(
            None,
            SELF_SIGNED,
            client.cert_file,
            key_path=client.key_file,
            issuer=setup.peer.issuer,
            verify=str(setup.peer.ca_file),
            mtls=True,
        ) as credential:
            return (await credential.get_token(SCOPE)).token

    claims = setup.peer.verified_claims(asyncio.run(scenario()))
    assert claims["cnf"] == {"x5t#S256": client.certificate.x5t_s256}


def test_a_certificate_the_server_does_not_know_is_refused(setup: Setup) -> None:
    with (
        _credential(setup, SELF_SIGNED, "stranger") as credential,
        pytest.raises(TokenRequestError) as refused,
    ):
        credential.request_token(SCOPE)
    assert refused.value.error == "invalid_client"


def test_the_cli_prints_the_token_and_what_binds_it(
    setup: Setup, capsys: pytest.CaptureFixture[str], cli_env: None
) -> None:
    client = setup.clients["pki"]
    result = run_cli(
        capsys,
        "token",
        "--mtls",
        "--client-id",
        PKI,
        "--issuer",
        setup.peer.issuer,
        "--cert",
        client.cert_file,
        "--key",
        client.key_file,
        "--ca-file",
        setup.peer.ca_file,
        "--scope",
        SCOPE,
        "--output",
        "json",
    )
    assert result.code == 0, result.err
    body = json.loads(result.out)
    assert body["token_type"] == "Bearer"
    assert body["cnf"] == {"x5t#S256": client.certificate.x5t_s256}
    claims = setup.peer.verified_claims(body["access_token"])
    assert claims["cnf"] == body["cnf"]


def test_certauths_verifier_accepts_the_bound_token_only_with_its_certificate(
    setup: Setup,
) -> None:
    from certauth import verify_access_token
    from certauth.errors import TokenValidationError

    client = setup.clients["self-signed"]
    with _credential(setup, SELF_SIGNED, "self-signed") as credential:
        token = credential.get_token(SCOPE).token
    peer = setup.peer
    checks = {"issuer": peer.issuer, "audience": peer.resource, "verify": str(peer.ca_file)}
    claims = verify_access_token(token, client_certificate=client.certificate.der, **checks)
    assert claims["cnf"]["x5t#S256"] == client.certificate.x5t_s256
    # A stolen token: replayed without the certificate, or over another client's TLS.
    with pytest.raises(TokenValidationError) as no_certificate:
        verify_access_token(token, **checks)
    assert no_certificate.value.check == "cnf_x5t#S256"
    with pytest.raises(TokenValidationError) as other:
        verify_access_token(
            token, client_certificate=setup.clients["stranger"].certificate.pem, **checks
        )
    assert other.value.check == "cnf_x5t#S256"


# -- DPoP (RFC 9449) ---------------------------------------------------------------------------


def _dpop_credential(setup: Setup, client_id: str) -> CertificateCredential:
    client = setup.clients["jwt"]
    return CertificateCredential(
        None,
        client_id,
        client.cert_file,
        key_path=client.key_file,
        issuer=setup.peer.issuer,
        verify=str(setup.peer.ca_file),
        dpop=True,
    )


@pytest.mark.parametrize("client_id", [DPOP, DPOP_NONCE])
def test_dpop_bound_tokens_verify_with_their_proof_only(setup: Setup, client_id: str) -> None:
    from certauth import verify_access_token
    from certauth.dpop import DPoPKey, make_proof
    from certauth.errors import TokenValidationError

    with _dpop_credential(setup, client_id) as credential:
        info = credential.get_token_info(SCOPE)
        proof = credential.make_dpop_proof("GET", API, access_token=info.token)
        assert credential.dpop_key is not None
        jkt = credential.dpop_key.thumbprint
    assert info.token_type == "DPoP"
    assert setup.peer.verified_claims(info.token)["cnf"] == {"jkt": jkt}
    peer = setup.peer
    checks = {"issuer": peer.issuer, "audience": peer.resource, "verify": str(peer.ca_file)}
    request = {"htm": "GET", "htu": API, "scheme": "DPoP"}
    claims = verify_access_token(info.token, dpop_proof=proof, **request, **checks)
    assert claims["cnf"] == {"jkt": jkt}
    # Stolen: presented as a bearer token, without a proof, or with the thief's own proof.
    stolen: list[tuple[dict[str, str], str]] = [
        ({"scheme": "Bearer"}, "dpop_scheme"),
        ({**request}, "dpop_header"),
        (
            {
                **request,
                "dpop_proof": make_proof(
                    DPoPKey.generate(), htm="GET", htu=API, access_token=info.token
                ),
            },
            "cnf_jkt",
        ),
        ({**request, "dpop_proof": proof}, "dpop_replay"),
    ]
    for extra, check in stolen:
        with pytest.raises(TokenValidationError) as refused:
            verify_access_token(info.token, **extra, **checks)  # type: ignore[arg-type]
        assert refused.value.check == check


def test_the_cli_gets_a_dpop_token_bound_to_its_key_file(
    setup: Setup, capsys: pytest.CaptureFixture[str], cli_env: None, tmp_path: Path
) -> None:
    from certauth.cli.dpop import load_or_create_key

    client = setup.clients["jwt"]
    key_file = tmp_path / "dpop.key"
    result = run_cli(
        capsys,
        "token",
        "--dpop",
        "--dpop-key",
        key_file,
        "--client-id",
        DPOP_NONCE,  # the server demands its nonce: answered by the CLI too
        "--issuer",
        setup.peer.issuer,
        "--cert",
        client.cert_file,
        "--key",
        client.key_file,
        "--ca-file",
        setup.peer.ca_file,
        "--scope",
        SCOPE,
        "--json",
    )
    assert result.code == 0, result.err
    body = json.loads(result.out)
    assert body["token_type"] == "DPoP"
    assert body["cnf"] == {"jkt": load_or_create_key(str(key_file)).thumbprint}
    assert setup.peer.verified_claims(body["access_token"])["cnf"] == body["cnf"]
