"""The credentials end to end over real loopback HTTP against the emulator (strict mode).

Every error class of the exchange: wrong client id, unknown thumbprint, skewed clock, HTML 500,
429 + Retry-After, a hanging server, connection refused, a 2xx without a token, plain http.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import httpx
import jwt
import pytest

from certauth import (
    AsyncCertificateCredential,
    BearerAuth,
    CertificateCredential,
    ClientSecretCredential,
    RetryPolicy,
    WorkloadIdentityCredential,
)
from certauth.certificates import Certificate
from certauth.emulator import Emulator
from certauth.errors import (
    CertificateError,
    ConfigurationError,
    InvalidArgumentError,
    TokenRequestError,
    TransportError,
    UnsupportedKeyError,
)

CLIENT = "11111111-2222-3333-4444-555555555555"
SCOPE = "api://billing/.default"
FAST_RETRY = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02, max_retry_after=5)


@pytest.fixture
def tenant(rsa_cert: Certificate) -> Iterator[Emulator]:
    with Emulator(strict=True) as emulator:
        emulator.register(CLIENT, rsa_cert, roles=["Invoices.Read"])
        yield emulator


def credential(tenant: Emulator, cert: Certificate, **kw: object) -> CertificateCredential:
    kw.setdefault("retry", FAST_RETRY)
    return CertificateCredential(
        tenant.tenant_id, CLIENT, certificate=cert, authority=tenant.authority_host, **kw
    )


def test_token_from_tenant_with_ps256_by_default(tenant: Emulator, rsa_cert: Certificate) -> None:
    with credential(tenant, rsa_cert) as cred:
        token = cred.get_token(SCOPE)
        claims = jwt.decode(token.token, options={"verify_signature": False})
        assert claims["aud"] == "api://billing"
        assert claims["appid"] == CLIENT
        assert claims["roles"] == ["Invoices.Read"]
        assert token.expires_on > time.time() + 600
        assert "token='***'" in repr(token)
        assert cred.get_token(SCOPE) == token  # cached: no second request
    assert tenant.request_count == 1


@pytest.mark.parametrize("alg", ["RS256", "PS256"])
def test_both_entra_algorithms_and_a_bare_resource(
    tenant: Emulator, rsa_cert: Certificate, alg: str
) -> None:
    with credential(tenant, rsa_cert, alg=alg) as cred:
        info = cred.get_token_info("api://billing")
        assert info.token_type == "Bearer"


def test_explicit_token_endpoint_and_full_response(tenant: Emulator, rsa_cert: Certificate) -> None:
    cred = CertificateCredential(
        None, CLIENT, certificate=rsa_cert, token_endpoint=tenant.token_endpoint
    )
    with cred:
        result = cred.request_token(SCOPE)
    assert result.as_response()["ext_expires_in"]
    assert result.expires_on == int(result.expires_on)


def test_wrong_client_id_gives_aadsts700016_with_hint(
    tenant: Emulator, rsa_cert: Certificate
) -> None:
    cred = CertificateCredential(
        tenant.tenant_id,
        "99999999-0000-0000-0000-000000000000",
        certificate=rsa_cert,
        authority=tenant.authority_host,
    )
    with cred, pytest.raises(TokenRequestError) as caught:
        cred.get_token(SCOPE)
    err = caught.value
    assert err.aadsts == "AADSTS700016"
    assert err.trace_id
    assert err.correlation_id
    assert err.hint
    assert "client id" in err.hint
    assert err.exit_code == 4


def test_unknown_thumbprint_gives_aadsts700027(
    tenant: Emulator, other_rsa_cert: Certificate
) -> None:
    with credential(tenant, other_rsa_cert) as cred, pytest.raises(TokenRequestError) as caught:
        cred.get_token(SCOPE)
    assert caught.value.aadsts == "AADSTS700027"
    assert caught.value.status_code == 401
    assert tenant.request_count == 1  # OAuth errors are not retried


def test_clock_skewed_by_15_minutes_gives_aadsts700024(tenant: Emulator) -> None:
    import datetime as dt

    from certauth import generate_certificate

    # A certificate valid for a while already, so only the clock is wrong.
    older = generate_certificate(
        "CN=older", now=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)
    )
    tenant.register(CLIENT, older)
    skewed = credential(tenant, older, clock=lambda: time.time() - 15 * 60)
    with skewed, pytest.raises(TokenRequestError) as caught:
        skewed.get_token(SCOPE)
    assert caught.value.aadsts == "AADSTS700024"
    assert caught.value.hint
    assert "clock" in caught.value.hint


def test_html_500_is_retried_then_reported(tenant: Emulator, rsa_cert: Certificate) -> None:
    tenant.inject_faults(status=500, html=True, count=5)
    with credential(tenant, rsa_cert) as cred, pytest.raises(TransportError) as caught:
        cred.get_token(SCOPE)
    assert "HTTP 500 after 3 attempts" in str(caught.value)
    assert caught.value.exit_code == 5


def test_html_500_then_success(tenant: Emulator, rsa_cert: Certificate) -> None:
    tenant.inject_faults(status=500, html=True, count=1)
    with credential(tenant, rsa_cert) as cred:
        assert cred.get_token(SCOPE).token
    assert tenant.request_count == 2


@pytest.mark.slow
def test_429_retry_after_is_honoured(tenant: Emulator, rsa_cert: Certificate) -> None:
    tenant.inject_faults(status=429, retry_after=1, count=1)
    started = time.monotonic()
    with credential(tenant, rsa_cert) as cred:
        assert cred.get_token(SCOPE).token
    assert time.monotonic() - started >= 0.9
    assert tenant.request_count == 2


def test_429_with_retry_after_beyond_the_limit_fails_fast(
    tenant: Emulator, rsa_cert: Certificate
) -> None:
    tenant.inject_faults(status=429, retry_after=120, count=1)
    with credential(tenant, rsa_cert) as cred, pytest.raises(TransportError, match="Retry-After"):
        cred.get_token(SCOPE)


def test_server_hanging_past_the_timeout(tenant: Emulator, rsa_cert: Certificate) -> None:
    tenant.inject_faults(delay=3, count=3)
    started = time.monotonic()
    cred = credential(
        tenant, rsa_cert, timeout=0.3, retry=RetryPolicy(max_attempts=2, base_delay=0.01)
    )
    with cred, pytest.raises(TransportError, match="timed out"):
        cred.get_token(SCOPE)
    assert time.monotonic() - started < 2.5


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_connection_refused(rsa_cert: Certificate) -> None:
    cred = CertificateCredential(
        "contoso.onmicrosoft.com",
        CLIENT,
        certificate=rsa_cert,
        authority=f"http://127.0.0.1:{_free_port()}",
        retry=FAST_RETRY,
    )
    with cred, pytest.raises(TransportError, match="cannot connect"):
        cred.get_token(SCOPE)


def test_2xx_without_access_token_is_a_transport_error(
    tenant: Emulator, rsa_cert: Certificate
) -> None:
    tenant.inject_faults(status=200, body=b'{"token_type": "Bearer"}', count=1)
    with (
        credential(tenant, rsa_cert) as cred,
        pytest.raises(TransportError, match="no access_token"),
    ):
        cred.get_token(SCOPE)


HTML_INSTEAD_OF_JSON = (
    "HTTP 200 with a text/html; charset=utf-8 body that is not JSON: '<!DOCTYPE html>"
)


def test_an_html_page_instead_of_a_token_names_its_content_type(
    tenant: Emulator, rsa_cert: Certificate
) -> None:
    # A captive portal or a proxy's login page answers 200: the message says it was HTML.
    tenant.inject_faults(status=200, html=True, count=1)
    with credential(tenant, rsa_cert) as cred, pytest.raises(TransportError) as caught:
        cred.get_token(SCOPE)
    assert HTML_INSTEAD_OF_JSON in str(caught.value)
    assert caught.value.status_code == 200


def test_the_async_credential_names_the_content_type_too(
    tenant: Emulator, rsa_cert: Certificate
) -> None:
    async def main() -> None:
        async with AsyncCertificateCredential(
            tenant.tenant_id, CLIENT, certificate=rsa_cert, authority=tenant.authority_host
        ) as cred:
            with pytest.raises(TransportError) as caught:
                await cred.get_token(SCOPE)
            assert HTML_INSTEAD_OF_JSON in str(caught.value)

    tenant.inject_faults(status=200, html=True, count=1)
    asyncio.run(main())


def test_non_https_endpoint_is_refused_before_sending(rsa_cert: Certificate) -> None:
    with pytest.raises(ConfigurationError, match="plain http"):
        CertificateCredential(
            None, CLIENT, certificate=rsa_cert, token_endpoint="http://login.example.com/t/token"
        )


def test_refusals_before_sending(
    rsa_cert: Certificate, ec_cert: Certificate, tenant: Emulator
) -> None:
    with pytest.raises(UnsupportedKeyError, match="AADSTS5002738"):
        CertificateCredential("contoso.onmicrosoft.com", CLIENT, certificate=ec_cert)
    with pytest.raises(ConfigurationError, match="AADB2C99027"):
        CertificateCredential("contoso", CLIENT, certificate=rsa_cert, b2c_policy="B2C_1A_x")
    with pytest.raises(InvalidArgumentError, match="single directory"):
        CertificateCredential("organizations", CLIENT, certificate=rsa_cert)
    with pytest.raises(TypeError, match="unexpected keyword"):
        CertificateCredential("t", CLIENT, certificate=rsa_cert, authorty="typo")  # type: ignore[call-arg]
    with httpx.Client() as sync_client, pytest.raises(TypeError, match=r"an httpx\.AsyncClient"):
        AsyncCertificateCredential("t", CLIENT, certificate=rsa_cert, client=sync_client)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"an httpx\.Client, not AsyncClient"):
        CertificateCredential("t", CLIENT, certificate=rsa_cert, client=httpx.AsyncClient())  # type: ignore[arg-type]
    with (
        credential(tenant, rsa_cert) as cred,
        pytest.raises(InvalidArgumentError, match="AADSTS1002012"),
    ):
        cred.get_token("https://graph.microsoft.com/User.Read")
    assert tenant.request_count == 0


def test_azure_identity_keywords_are_accepted(tenant: Emulator, rsa_cert: Certificate) -> None:
    with credential(
        tenant, rsa_cert, disable_instance_discovery=True, additionally_allowed_tenants=["*"]
    ) as cred:
        assert cred.get_token(SCOPE).token


def test_certificate_path_pem_and_pfx_with_password(
    tenant: Emulator, rsa_cert: Certificate, tmp_path: object
) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    pem = tmp_path / "app.pem"
    pem.write_bytes(rsa_cert.private_key_pem() + rsa_cert.pem)
    pfx = tmp_path / "app.pfx"
    pfx.write_bytes(rsa_cert.to_pfx("pw"))
    for path, password in ((pem, None), (pfx, "pw")):
        cred = CertificateCredential(
            tenant.tenant_id, CLIENT, str(path), password=password, authority=tenant.authority_host
        )
        with cred:
            assert cred.get_token(SCOPE).token
    with pytest.raises(CertificateError, match="wrong password"):
        CertificateCredential(tenant.tenant_id, CLIENT, str(pfx), password="nope")


def test_client_secret_post_and_basic(tenant: Emulator) -> None:
    tenant.register_secret("secret-app", "s3cr3t value")
    for method in ("client_secret_post", "client_secret_basic"):
        cred = ClientSecretCredential(
            tenant.tenant_id,
            "secret-app",
            "s3cr3t value",
            authority=tenant.authority_host,
            secret_method=method,
        )
        with cred:
            claims = jwt.decode(cred.get_token(SCOPE).token, options={"verify_signature": False})
        assert claims["azpacr"] == "1"
    wrong = ClientSecretCredential(
        tenant.tenant_id, "secret-app", "wrong", authority=tenant.authority_host
    )
    with wrong, pytest.raises(TokenRequestError) as caught:
        wrong.get_token(SCOPE)
    assert caught.value.aadsts == "AADSTS7000215"
    assert "wrong" not in str(caught.value).replace("is wrong", "")


def test_federated_token_file_is_reread(
    tenant: Emulator, rsa_cert: Certificate, tmp_path: object
) -> None:
    from pathlib import Path

    from certauth import build_client_assertion

    assert isinstance(tmp_path, Path)
    token_file = tmp_path / "federated"
    token_file.write_text("not a jwt")
    cred = WorkloadIdentityCredential(
        tenant.tenant_id, CLIENT, str(token_file), authority=tenant.authority_host
    )
    with cred:
        with pytest.raises(ConfigurationError, match="not a JWT"):
            cred.get_token(SCOPE)
        # The platform writes a fresh assertion; here one signed by the registered cert.
        token_file.write_text(
            build_client_assertion(rsa_cert, client_id=CLIENT, audience=tenant.token_endpoint)
        )
        assert cred.get_token(SCOPE).token


def test_async_credential_sends_chain_and_gets_token(
    tenant: Emulator, rsa_cert: Certificate
) -> None:
    async def main() -> str:
        async with AsyncCertificateCredential(
            tenant.tenant_id,
            CLIENT,
            certificate=rsa_cert,
            authority=tenant.authority_host,
            send_certificate_chain=True,
        ) as cred:
            first = await cred.get_token(SCOPE)
            again = await cred.get_token_info(SCOPE)
            assert again.token == first.token
            return first.token

    assert asyncio.run(main())
    assert tenant.request_count == 1


def test_bearer_auth_retries_once_on_401(tenant: Emulator, rsa_cert: Certificate) -> None:
    seen: list[str] = []

    def api(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        return httpx.Response(401 if len(seen) == 1 else 200)

    with credential(tenant, rsa_cert) as cred:
        auth = BearerAuth(cred, SCOPE)
        with httpx.Client(transport=httpx.MockTransport(api), auth=auth) as client:
            assert client.get("https://api.example/x").status_code == 200
    assert len(seen) == 2
    assert all(h.startswith("Bearer ") for h in seen)
    assert tenant.request_count == 2  # the 401 dropped the cached token


def test_bearer_auth_async(tenant: Emulator, rsa_cert: Certificate) -> None:
    async def main() -> int:
        async with AsyncCertificateCredential(
            tenant.tenant_id, CLIENT, certificate=rsa_cert, authority=tenant.authority_host
        ) as cred:
            transport = httpx.MockTransport(
                lambda r: httpx.Response(
                    200 if r.headers["Authorization"].startswith("Bearer ") else 500
                )
            )
            async with httpx.AsyncClient(
                transport=transport, auth=BearerAuth(cred, SCOPE)
            ) as client:
                return (await client.get("https://api.example/x")).status_code

    assert asyncio.run(main()) == 200


def test_issuer_is_resolved_through_discovery_once(tenant: Emulator, rsa_cert: Certificate) -> None:
    sent: list[str] = []
    client = httpx.Client(
        event_hooks={"request": [lambda r: sent.append(f"{r.method} {r.url.path}")]}
    )
    cred = CertificateCredential(
        None, CLIENT, certificate=rsa_cert, issuer=tenant.issuer, client=client
    )
    assert cred.authority is None  # not an Entra host: the document says where to go
    with client:
        cred.get_token(SCOPE)
        assert cred.authority is not None
        assert cred.authority.token_endpoint == tenant.token_endpoint
        cred.get_token("api://other/.default")
    assert [s.split()[0] for s in sent] == ["GET", "POST", "POST"]
    assert sent[0].endswith("/.well-known/openid-configuration")


def test_entra_authority_needs_exactly_one_request(tenant: Emulator, rsa_cert: Certificate) -> None:
    sent: list[str] = []
    client = httpx.Client(event_hooks={"request": [lambda r: sent.append(r.method)]})
    with client:
        credential(tenant, rsa_cert, client=client).get_token(SCOPE)
    assert sent == ["POST"]  # no instance or OIDC discovery for Entra authorities
