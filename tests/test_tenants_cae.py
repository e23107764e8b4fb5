"""Per-call tenants, claims and CAE in the credentials, over real HTTP against the emulator.

Issue 15: ``get_token(scope, tenant_id=T)`` used to return the home tenant's token from the
cache, and ``claims`` / ``enable_cae`` were never sent. Here every cache a token can come from
(the in-memory cache and its fast path, the single flight, a shared ``FileTokenCache``) is
shown to keep tenants, CAE and claims apart, and what the token endpoint received is recorded
through the credential's ``client=``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from _cae_helpers import TokenRequests

from certauth import (
    AsyncCertificateCredential,
    AsyncClientSecretCredential,
    CertificateCredential,
    ClientSecretCredential,
    FileTokenCache,
)
from certauth.certificates import Certificate
from certauth.emulator import Emulator
from certauth.errors import InvalidArgumentError, TenantNotAllowedError

CLIENT = "11111111-2222-3333-4444-555555555555"
SCOPE = "api://billing/.default"
OTHER_DOMAIN = "fabrikam.onmicrosoft.com"
NBF = {"access_token": {"nbf": {"essential": True, "value": "1700000000"}}}
CP1 = {"xms_cc": {"values": ["cp1"]}}


def refusal(tenant: str) -> str:
    """azure-identity's message for a tenant that is not allowed, word for word."""
    return (
        f"The current credential is not configured to acquire tokens for tenant {tenant}. "
        "To enable acquiring tokens for this tenant add it to the additionally_allowed_tenants "
        'when creating the credential, or add "*" to additionally_allowed_tenants to allow '
        "acquiring tokens for any tenant."
    )


pytestmark = pytest.mark.usefixtures("no_tenant_variables")


@pytest.fixture
def tenant(rsa_cert: Certificate) -> Iterator[Emulator]:
    """Two tenants, one multi-tenant app registered in both."""
    with Emulator(strict=True) as emulator:
        emulator.register(CLIENT, rsa_cert, roles=["Invoices.Read"])
        emulator.register(CLIENT, rsa_cert, tenant=OTHER_DOMAIN)
        yield emulator


@pytest.fixture
def other(tenant: Emulator) -> str:
    """The second tenant's id (a GUID, as ``tid`` carries it)."""
    found = tenant.registry.tenant(OTHER_DOMAIN)
    assert found is not None
    return found.tenant_id


@pytest.fixture
def sent() -> TokenRequests:
    return TokenRequests()


def make(tenant: Emulator, cert: Certificate, sent: TokenRequests, **kw: Any) -> Any:
    return CertificateCredential(
        tenant.tenant_id,
        CLIENT,
        certificate=cert,
        authority=tenant.authority_host,
        client=sent.client(),
        **kw,
    )


def make_async(tenant: Emulator, cert: Certificate, sent: TokenRequests, **kw: Any) -> Any:
    return AsyncCertificateCredential(
        tenant.tenant_id,
        CLIENT,
        certificate=cert,
        authority=tenant.authority_host,
        client=sent.async_client(),
        **kw,
    )


def tid(token: str) -> str:
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"].endswith(f"/{claims['tid']}/v2.0")
    return str(claims["tid"])


def endpoint(tenant: Emulator, name: str) -> str:
    return f"{tenant.authority_host}/{name}/oauth2/v2.0/token"


# -- tenants ------------------------------------------------------------------------------------


def test_an_allowed_tenant_gets_its_own_token_from_its_endpoint(
    tenant: Emulator, rsa_cert: Certificate, sent: TokenRequests, other: str
) -> None:
    cred = make(tenant, rsa_cert, sent, additionally_allowed_tenants=[other])
    home = cred.get_token(SCOPE)
    away = cred.get_token(SCOPE, tenant_id=other)
    assert tid(home.token) == tenant.tenant_id
    assert tid(away.token) == other
    assert sent.urls == [endpoint(tenant, tenant.tenant_id), endpoint(tenant, other)]
    # Each is cached under its tenant: the fast path serves each its own.
    for _ in range(3):
        assert cred.get_token(SCOPE) == home
        assert cred.get_token(SCOPE, tenant_id=other) == away
        assert cred.get_token_info(SCOPE, options={"tenant_id": other}).token == away.token
    assert len(sent.sent) == 2
    # The credential's own tenant, named per call (in any case), is the same cache entry.
    assert cred.get_token(SCOPE, tenant_id=tenant.tenant_id.upper()) == home
    assert len(sent.sent) == 2
    cred.close()


def test_a_tenant_that_is_not_allowed_is_refused_and_never_served_the_home_token(
    tenant: Emulator, rsa_cert: Certificate, sent: TokenRequests, other: str
) -> None:
    cred = make(tenant, rsa_cert, sent)
    cred.get_token(SCOPE)  # the home token is cached: the fast path must not hand it out
    for _ in range(2):
        with pytest.raises(TenantNotAllowedError) as caught:
            cred.get_token(SCOPE, tenant_id=other)
        assert str(caught.value) == refusal(other)
        assert caught.value.tenant_id == other
        assert caught.value.exit_code == 3
        with pytest.raises(TenantNotAllowedError, match="not configured to acquire tokens"):
            cred.get_token_info(SCOPE, options={"tenant_id": other})
        with pytest.raises(TenantNotAllowedError):
            cred.request_token(SCOPE, tenant_id=other)
    assert len(sent.sent) == 1
    cred.close()


def test_allowed_tenants_match_in_any_case_and_star_allows_any(
    tenant: Emulator, rsa_cert: Certificate, sent: TokenRequests, other: str
) -> None:
    listed = make(tenant, rsa_cert, sent, additionally_allowed_tenants=[OTHER_DOMAIN.upper()])
    assert tid(listed.get_token(SCOPE, tenant_id=OTHER_DOMAIN).token) == other
    anyone = make(tenant, rsa_cert, sent, additionally_allowed_tenants=["*"])
    assert tid(anyone.get_token(SCOPE, tenant_id=other).token) == other
    assert tid(anyone.get_token(SCOPE, tenant_id=OTHER_DOMAIN).token) == other
    assert sent.urls[-1] == endpoint(tenant, OTHER_DOMAIN)
    listed.close()
    anyone.close()


def test_the_environment_variable_lists_tenants_when_the_keyword_is_not_given(
    tenant: Emulator,
    rsa_cert: Certificate,
    sent: TokenRequests,
    other: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AZURE_ADDITIONALLY_ALLOWED_TENANTS", f" unrelated ;; {other} ")
    from_env = make(tenant, rsa_cert, sent)
    assert tid(from_env.get_token(SCOPE, tenant_id=other).token) == other
    explicit = make(tenant, rsa_cert, sent, additionally_allowed_tenants=[])
    with pytest.raises(TenantNotAllowedError, match="not configured"):
        explicit.get_token(SCOPE, tenant_id=other)
    monkeypatch.setenv("AZURE_ADDITIONALLY_ALLOWED_TENANTS", "*")
    star = make(tenant, rsa_cert, sent)
    assert tid(star.get_token(SCOPE, tenant_id=OTHER_DOMAIN).token) == other
    for cred in (from_env, explicit, star):
        cred.close()


@pytest.mark.parametrize(("value", "disabled"), [("1", True), ("true", True), ("0", False)])
def test_disable_multitenantauth_serves_the_credentials_own_tenant_as_azure_identity_does(
    tenant: Emulator,
    rsa_cert: Certificate,
    sent: TokenRequests,
    other: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    value: str,
    disabled: bool,
) -> None:
    monkeypatch.setenv("AZURE_IDENTITY_DISABLE_MULTITENANTAUTH", value)
    cred = make(tenant, rsa_cert, sent)
    if not disabled:
        with pytest.raises(TenantNotAllowedError):
            cred.get_token(SCOPE, tenant_id=other)
        return
    with caplog.at_level(logging.WARNING, logger="certauth"):
        token = cred.get_token(SCOPE, tenant_id=other)
    assert tid(token.token) == tenant.tenant_id
    assert "AZURE_IDENTITY_DISABLE_MULTITENANTAUTH" in caplog.text
    assert sent.urls == [endpoint(tenant, tenant.tenant_id)]
    cred.close()


def test_credentials_with_no_tenant_to_swap_refuse_another_tenant_plainly(
    tenant: Emulator, rsa_cert: Certificate, other: str
) -> None:
    by_endpoint = CertificateCredential(
        None,
        CLIENT,
        certificate=rsa_cert,
        token_endpoint=tenant.token_endpoint,
        additionally_allowed_tenants=["*"],
    )
    with pytest.raises(TenantNotAllowedError, match=r"token_endpoint=.*no tenant to swap"):
        by_endpoint.get_token(SCOPE, tenant_id=other)
    # Its own tenant (the one in the URL) is fine.
    assert tid(by_endpoint.get_token(SCOPE, tenant_id=tenant.tenant_id).token) == tenant.tenant_id
    by_issuer = CertificateCredential(
        None, CLIENT, certificate=rsa_cert, issuer=tenant.issuer, additionally_allowed_tenants=["*"]
    )
    with pytest.raises(TenantNotAllowedError, match=r"issuer=.*no tenant to swap"):
        by_issuer.get_token(SCOPE, tenant_id=other)
    adfs = CertificateCredential(
        "adfs",
        CLIENT,
        certificate=rsa_cert,
        authority="https://adfs.contoso.com",
        additionally_allowed_tenants=["*"],
    )
    with pytest.raises(TenantNotAllowedError, match="ADFS has no tenants"):
        adfs.get_token(SCOPE, tenant_id=other)
    b2c = ClientSecretCredential(
        "contoso",
        CLIENT,
        "secret-value-1234",
        b2c_policy="B2C_1_client",
        additionally_allowed_tenants=["*"],
    )
    with pytest.raises(TenantNotAllowedError, match="B2C"):
        b2c.get_token(SCOPE, tenant_id="fabrikam")
    for cred in (by_endpoint, by_issuer, adfs, b2c):
        cred.close()
    assert tenant.request_count == 1


def test_bad_tenant_arguments_are_usage_errors(tenant: Emulator, rsa_cert: Certificate) -> None:
    with pytest.raises(InvalidArgumentError, match=r"additionally_allowed_tenants=.*not a list"):
        CertificateCredential(
            tenant.tenant_id, CLIENT, certificate=rsa_cert, additionally_allowed_tenants="x"
        )  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="holds 7"):
        CertificateCredential(
            tenant.tenant_id, CLIENT, certificate=rsa_cert, additionally_allowed_tenants=[7]
        )  # type: ignore[list-item]
    cred = CertificateCredential(
        tenant.tenant_id,
        CLIENT,
        certificate=rsa_cert,
        authority=tenant.authority_host,
        additionally_allowed_tenants=["*"],
    )
    with pytest.raises(InvalidArgumentError, match=r"tenant_id='common' \(per call\)"):
        cred.get_token(SCOPE, tenant_id="common")
    with pytest.raises(InvalidArgumentError, match="tenant_id= must be a tenant ID string"):
        cred.get_token_info(SCOPE, options={"tenant_id": 42})
    cred.close()
    assert tenant.request_count == 0


def test_concurrent_callers_of_two_tenants_get_their_own_tokens_in_one_request_each(
    tenant: Emulator, rsa_cert: Certificate, sent: TokenRequests, other: str
) -> None:
    cred = make(tenant, rsa_cert, sent, additionally_allowed_tenants=[other])
    wanted = [None, other] * 8
    results: list[str | None] = [None] * len(wanted)
    start = threading.Barrier(len(wanted))

    def call(index: int) -> None:
        start.wait()
        results[index] = cred.get_token(SCOPE, tenant_id=wanted[index]).token

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(wanted))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(sent.sent) == 2
    for want, token in zip(wanted, results, strict=True):
        assert token is not None
        assert tid(token) == (want or tenant.tenant_id)
    cred.close()


def test_the_shared_store_keeps_tenants_apart(
    tenant: Emulator, rsa_cert: Certificate, other: str, tmp_path: Path
) -> None:
    store = tmp_path / "cache"
    first = TokenRequests()
    writer = make(
        tenant, rsa_cert, first, cache=FileTokenCache(store), additionally_allowed_tenants=[other]
    )
    home = writer.get_token(SCOPE)
    # Another process, allowed the other tenant, finds only the home token in the store: the
    # other tenant's token comes from the other tenant's endpoint.
    second = TokenRequests()
    reader = make(
        tenant, rsa_cert, second, cache=FileTokenCache(store), additionally_allowed_tenants=["*"]
    )
    away = reader.get_token(SCOPE, tenant_id=other)
    assert tid(away.token) == other
    assert second.urls == [endpoint(tenant, other)]
    assert reader.get_token(SCOPE) == home  # from the store
    # A third finds both tokens in the store, each under its tenant.
    third = TokenRequests()
    late = make(
        tenant, rsa_cert, third, cache=FileTokenCache(store), additionally_allowed_tenants=["*"]
    )
    assert late.get_token(SCOPE, tenant_id=other) == away
    assert late.get_token(SCOPE) == home
    assert third.sent == []
    # One that is not allowed the other tenant gets nothing from the store for it.
    closed = make(tenant, rsa_cert, TokenRequests(), cache=FileTokenCache(store))
    with pytest.raises(TenantNotAllowedError):
        closed.get_token(SCOPE, tenant_id=other)
    for cred in (writer, reader, late, closed):
        cred.close()


def test_async_tenants_cached_apart_refused_and_single_flight(
    tenant: Emulator, rsa_cert: Certificate, sent: TokenRequests, other: str
) -> None:
    async def main() -> None:
        async with make_async(
            tenant, rsa_cert, sent, additionally_allowed_tenants=[OTHER_DOMAIN]
        ) as cred:
            wanted = [None, OTHER_DOMAIN] * 8
            tokens = await asyncio.gather(
                *(cred.get_token(SCOPE, tenant_id=want) for want in wanted)
            )
            assert len(sent.sent) == 2
            for want, token in zip(wanted, tokens, strict=True):
                assert tid(token.token) == (other if want else tenant.tenant_id)
            info = await cred.get_token_info(SCOPE, options={"tenant_id": OTHER_DOMAIN})
            assert info.token == tokens[1].token
            with pytest.raises(TenantNotAllowedError) as caught:
                await cred.get_token(SCOPE, tenant_id=other)  # the GUID is not listed
            assert str(caught.value) == refusal(other)
            assert len(sent.sent) == 2

    asyncio.run(main())


# -- claims and CAE -----------------------------------------------------------------------------


def test_claims_are_sent_and_the_token_is_neither_taken_from_nor_written_to_the_cache(
    tenant: Emulator, rsa_cert: Certificate, sent: TokenRequests
) -> None:
    cred = make(tenant, rsa_cert, sent)
    plain = cred.get_token(SCOPE)
    claims = json.dumps(NBF)
    first = cred.get_token(SCOPE, claims=claims)
    second = cred.get_token_info(SCOPE, options={"claims": claims})
    assert len(sent.sent) == 3  # every claims call goes to the token endpoint
    assert sent.sent[1][1]["claims"] == claims  # sent as given
    assert sent.claims == [None, NBF, NBF]
    assert first.token != plain.token
    assert second.token not in (plain.token, first.token)
    assert cred.get_token(SCOPE) == plain  # the plain entry is untouched
    assert len(sent.sent) == 3
    cred.close()


def test_cae_sends_the_client_capability_and_is_cached_apart(
    tenant: Emulator, rsa_cert: Certificate, sent: TokenRequests
) -> None:
    cred = make(tenant, rsa_cert, sent)
    cae = cred.get_token(SCOPE, enable_cae=True)
    plain = cred.get_token(SCOPE)
    assert sent.claims == [{"access_token": CP1}, None]
    assert plain.token != cae.token
    for _ in range(2):
        assert cred.get_token(SCOPE, enable_cae=True) == cae
        assert cred.get_token_info(SCOPE, options={"enable_cae": True}).token == cae.token
        assert cred.get_token(SCOPE) == plain
        assert cred.get_token(SCOPE, enable_cae=False) == plain
    assert len(sent.sent) == 2
    # Claims with CAE: the capability is merged into the caller's access_token claims.
    cred.get_token(SCOPE, claims=json.dumps(NBF), enable_cae=True)
    assert sent.claims[-1] == {"access_token": {**NBF["access_token"], **CP1}}
    assert cred.get_token(SCOPE, enable_cae=True) == cae  # the CAE entry is untouched too
    cred.close()


def test_a_non_cae_credential_never_sends_xms_cc(
    tenant: Emulator, rsa_cert: Certificate, sent: TokenRequests, other: str
) -> None:
    cred = make(tenant, rsa_cert, sent, additionally_allowed_tenants=[other])
    cred.get_token(SCOPE)
    cred.get_token(SCOPE, tenant_id=other)
    cred.get_token(SCOPE, claims=json.dumps(NBF))
    cred.get_token_info(SCOPE, options={"claims": json.dumps(NBF), "enable_cae": False})
    cred.request_token(SCOPE, force=True)
    assert len(sent.sent) == 5
    assert all("xms_cc" not in json.dumps(form) for _, form in sent.sent)
    with pytest.raises(InvalidArgumentError, match="claims= declares the client capability"):
        cred.get_token(SCOPE, claims=json.dumps({"access_token": CP1}))
    assert len(sent.sent) == 5
    cred.close()


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ("not json", "claims= is not JSON"),
        ("[1, 2]", "claims= is JSON but not an object"),
        ('{"access_token": 1}', 'claims= has an "access_token" member that is not'),
        ('{"access_token": {"xms_cc": ["cp1"]}}', 'claims= has an "xms_cc" that is not'),
        ('{"access_token": {"xms_cc": {"values": [1]}}}', 'claims= has an "xms_cc" that is not'),
        (b'{"access_token": {}}', "claims= must be a JSON string"),
    ],
)
def test_malformed_claims_are_refused_before_sending(
    tenant: Emulator, rsa_cert: Certificate, sent: TokenRequests, claims: Any, message: str
) -> None:
    cred = make(tenant, rsa_cert, sent)
    with pytest.raises(InvalidArgumentError, match=message):
        cred.get_token(SCOPE, claims=claims, enable_cae=True)
    with pytest.raises(InvalidArgumentError, match=message):
        cred.get_token_info(SCOPE, options={"claims": claims, "enable_cae": True})
    with pytest.raises(InvalidArgumentError, match="enable_cae= must be True or False"):
        cred.get_token(SCOPE, enable_cae="yes")
    assert sent.sent == []
    cred.close()


def test_cae_and_claims_tokens_in_the_shared_store(
    tenant: Emulator, rsa_cert: Certificate, tmp_path: Path
) -> None:
    store = tmp_path / "cache"
    first = TokenRequests()
    writer = make(tenant, rsa_cert, first, cache=FileTokenCache(store))
    cae = writer.get_token(SCOPE, enable_cae=True)
    writer.get_token(SCOPE, claims=json.dumps(NBF))  # never stored
    second = TokenRequests()
    reader = make(tenant, rsa_cert, second, cache=FileTokenCache(store))
    plain = reader.get_token(SCOPE)
    assert second.claims == [None]  # neither the CAE nor the claims token was taken
    assert plain.token != cae.token
    assert reader.get_token(SCOPE, enable_cae=True) == cae  # the CAE one, from the store
    assert len(second.sent) == 1
    writer.close()
    reader.close()


def test_a_claims_caller_does_not_share_a_plain_callers_flight(
    tenant: Emulator, rsa_cert: Certificate, sent: TokenRequests
) -> None:
    tenant.inject_faults(delay=0.3, count=2)  # both requests in flight together
    cred = make(tenant, rsa_cert, sent)
    results: dict[str, str] = {}

    def plain() -> None:
        results["plain"] = cred.get_token(SCOPE).token

    def challenged() -> None:
        results["claims"] = cred.get_token(SCOPE, claims=json.dumps(NBF)).token

    threads = [threading.Thread(target=plain), threading.Thread(target=challenged)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(sent.claims, key=str) == sorted([None, NBF], key=str)
    assert results["plain"] != results["claims"]
    assert cred.get_token(SCOPE).token == results["plain"]
    cred.close()


def test_async_claims_and_cae(tenant: Emulator, rsa_cert: Certificate, sent: TokenRequests) -> None:
    async def main() -> None:
        async with make_async(tenant, rsa_cert, sent) as cred:
            plain, cae = await asyncio.gather(
                cred.get_token(SCOPE), cred.get_token(SCOPE, enable_cae=True)
            )
            assert plain.token != cae.token
            claims = await cred.get_token_info(
                SCOPE, options={"claims": json.dumps(NBF), "enable_cae": True}
            )
            assert claims.token not in (plain.token, cae.token)
            assert await cred.get_token(SCOPE) == plain
            assert await cred.get_token(SCOPE, enable_cae=True) == cae
            with pytest.raises(InvalidArgumentError, match="claims= is not JSON"):
                await cred.get_token(SCOPE, claims="{")
        assert sorted(sent.claims, key=str) == sorted(
            [None, {"access_token": CP1}, {"access_token": {**NBF["access_token"], **CP1}}],
            key=str,
        )

    asyncio.run(main())


def test_the_secret_credential_shares_the_rules(tenant: Emulator, other: str) -> None:
    tenant.register_secret(CLIENT, "s3cret-value-for-tests")
    tenant.register_secret(CLIENT, "s3cret-value-for-tests", tenant=OTHER_DOMAIN)
    sent = TokenRequests()
    cred = ClientSecretCredential(
        tenant.tenant_id,
        CLIENT,
        "s3cret-value-for-tests",
        authority=tenant.authority_host,
        additionally_allowed_tenants=[other],
        client=sent.client(),
    )
    assert tid(cred.get_token(SCOPE, tenant_id=other, enable_cae=True).token) == other
    assert sent.urls == [endpoint(tenant, other)]
    assert sent.claims == [{"access_token": CP1}]
    with pytest.raises(TenantNotAllowedError):
        cred.get_token(SCOPE, tenant_id=OTHER_DOMAIN)
    cred.close()

    async def main() -> None:
        async with AsyncClientSecretCredential(
            tenant.tenant_id,
            CLIENT,
            "s3cret-value-for-tests",
            authority=tenant.authority_host,
        ) as acred:
            with pytest.raises(TenantNotAllowedError):
                await acred.get_token(SCOPE, tenant_id=other)

    asyncio.run(main())
