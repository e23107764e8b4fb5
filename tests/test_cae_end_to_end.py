"""Issue 15's "Done when", end to end against the emulator alone: no test-local API.

The emulator plays both parts Microsoft plays: Entra ID's token endpoint (it honours
``claims``, issues CAE tokens to clients that declare ``cp1``, and counts every token request
in ``request_count`` / ``claims_received``) and a CAE-aware API such as Microsoft Graph
(``resource_url``, which answers a CAE token issued before ``revoke(client_id)`` with Graph's
``insufficient_claims`` challenge). Between them run the real clients: ``BearerAuth`` on
``httpx.Client`` / ``httpx.AsyncClient``, and azure-core's ``Pipeline`` / ``AsyncPipeline`` with
``BearerTokenCredentialPolicy``. Calls to the API are counted on the client side (an httpx
event hook, an azure-core policy after the bearer policy), since the emulator counts only
token requests.

What is shown:

- a revoked CAE token is challenged, and each client recovers with exactly one extra token
  request (carrying the challenge's ``nbf`` and the ``cp1`` capability) and one retried call;
- a second revocation is handled the same way, and a retried call that is refused again comes
  back to the caller after that one retry: nothing loops;
- a credential used without ``enable_cae`` never sends ``xms_cc``, and its tokens are not
  challenged (Entra challenges only clients that declared the capability);
- a token for an allowed second tenant carries that tenant's ``tid`` and ``iss`` and is
  accepted as that tenant's by the API, and the home tenant's token is never returned for it,
  from memory or from a shared ``FileTokenCache``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from certauth import (
    AsyncCertificateCredential,
    BearerAuth,
    CertificateCredential,
    FileTokenCache,
)
from certauth.cae import claims_from_challenge
from certauth.certificates import Certificate
from certauth.emulator import Emulator
from certauth.emulator.cae import challenge_claims
from certauth.errors import TenantNotAllowedError

CLIENT = "11111111-2222-3333-4444-555555555555"
SCOPE = "api://billing/.default"
OTHER = "0b1e7a2c-0000-4000-8000-0000000000bb"
CP1 = {"xms_cc": {"values": ["cp1"]}}


pytestmark = pytest.mark.usefixtures("no_tenant_variables")


@pytest.fixture
def tenant(rsa_cert: Certificate) -> Iterator[Emulator]:
    with Emulator(strict=True) as emulator:
        emulator.register(CLIENT, rsa_cert)
        yield emulator


def sync_credential(tenant: Emulator, cert: Certificate, **kw: Any) -> CertificateCredential:
    return CertificateCredential(
        tenant.tenant_id, CLIENT, certificate=cert, authority=tenant.authority_host, **kw
    )


def async_credential(tenant: Emulator, cert: Certificate) -> AsyncCertificateCredential:
    return AsyncCertificateCredential(
        tenant.tenant_id, CLIENT, certificate=cert, authority=tenant.authority_host
    )


def token_claims(tenant: Emulator) -> list[dict[str, Any] | None]:
    """The ``claims`` of every token request the emulator read, parsed."""
    return [None if c is None else json.loads(c) for c in tenant.claims_received]


def challenged_with(revoked_at: int) -> dict[str, Any]:
    """The ``claims`` a CAE client sends back for the emulator's challenge: the challenge's
    ``nbf`` with the client capability merged in."""
    nbf = json.loads(challenge_claims(revoked_at))["access_token"]
    return {"access_token": {**nbf, **CP1}}


class ApiCalls:
    """The answers to the calls a client made to the emulator's API, in order: status and
    decoded claims challenge (``None``: none). ``on_answer`` runs after each is recorded."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: list[tuple[int, dict[str, Any] | None]] = []
        self.on_answer: Callable[[int], None] = lambda status: None

    def record(self, url: str, status: int, challenges: list[str]) -> None:
        if url != self.url:
            return
        claims = claims_from_challenge(challenges)
        self.answers.append((status, None if claims is None else json.loads(claims)))
        self.on_answer(status)

    @property
    def statuses(self) -> list[int]:
        return [status for status, _ in self.answers]

    def hook(self, response: httpx.Response) -> None:
        self.record(
            str(response.request.url),
            response.status_code,
            response.headers.get_list("www-authenticate"),
        )

    async def ahook(self, response: httpx.Response) -> None:
        self.hook(response)


# -- the scenario every CAE client goes through -------------------------------------------------


def revoke_and_recover(tenant: Emulator, api: ApiCalls, call: Callable[[], int]) -> None:
    """A CAE client's life through two revocations and one it cannot satisfy.

    ``call`` makes one API request through the client under test and returns the status the
    caller sees. Counts are compared as differences, so the client may have asked for tokens
    before (azure-core's policy asks on its first request, as BearerAuth does).
    """
    # A CAE token works until its client is revoked.
    assert call() == 200
    assert api.statuses == [200]
    assert tenant.request_count == 1
    assert token_claims(tenant) == [{"access_token": CP1}]

    for _ in range(2):  # a revocation, and a second one right after the recovery
        tenant.clock.advance(1)
        requests, answers = tenant.request_count, len(api.answers)
        revoked_at = tenant.revoke(CLIENT)
        assert call() == 200
        # The first answer was Graph's challenge; one retried call got through...
        assert api.answers[answers:] == [
            (401, json.loads(challenge_claims(revoked_at))),
            (200, None),
        ]
        # ...with exactly one extra token request, carrying the challenge's claims.
        assert tenant.request_count == requests + 1
        assert token_claims(tenant)[-1] == challenged_with(revoked_at)
        # The recovered token serves the next call without another token request.
        assert call() == 200
        assert api.statuses[-1] == 200
        assert tenant.request_count == requests + 1

    # A revocation while the client fetches its new token: the retried call is refused
    # again, and that answer is the caller's after one retry and one token request.
    def revoke_again(status: int) -> None:
        if status == 401 and len(api.answers) == answers + 1:
            tenant.clock.advance(1)
            tenant.revoke(CLIENT)

    tenant.clock.advance(1)
    requests, answers = tenant.request_count, len(api.answers)
    tenant.revoke(CLIENT)
    api.on_answer = revoke_again
    assert call() == 401
    assert api.statuses[answers:] == [401, 401]
    assert tenant.request_count == requests + 1


def revoke_and_recover_async(
    tenant: Emulator,
    api: ApiCalls,
    call: Callable[[], Awaitable[int]],
    *closing: Callable[[], Awaitable[object]],
) -> None:
    """:func:`revoke_and_recover` for an async client: its calls on one event loop, then the
    ``closing`` calls on that loop."""
    loop = asyncio.new_event_loop()
    try:
        revoke_and_recover(tenant, api, lambda: loop.run_until_complete(call()))
    finally:
        for close in closing:
            loop.run_until_complete(close())
        loop.close()


def test_bearer_auth_recovers_from_the_emulators_challenge(
    tenant: Emulator, rsa_cert: Certificate
) -> None:
    api = ApiCalls(tenant.resource_url)
    with (
        sync_credential(tenant, rsa_cert) as credential,
        httpx.Client(
            auth=BearerAuth(credential, SCOPE, enable_cae=True),
            event_hooks={"response": [api.hook]},
        ) as client,
    ):
        revoke_and_recover(tenant, api, lambda: client.get(tenant.resource_url).status_code)


def test_async_bearer_auth_recovers_from_the_emulators_challenge(
    tenant: Emulator, rsa_cert: Certificate
) -> None:
    api = ApiCalls(tenant.resource_url)
    credential = async_credential(tenant, rsa_cert)
    client = httpx.AsyncClient(
        auth=BearerAuth(credential, SCOPE, enable_cae=True),
        event_hooks={"response": [api.ahook]},
    )

    async def call() -> int:
        return (await client.get(tenant.resource_url)).status_code

    revoke_and_recover_async(tenant, api, call, client.aclose, credential.close)


# -- azure-core pipelines -----------------------------------------------------------------------


def azure_core() -> Any:
    """azure-core's pipeline modules (the test is skipped without azure-core)."""
    pytest.importorskip("azure.core")
    from azure.core import pipeline, rest
    from azure.core.pipeline import policies, transport

    return pipeline, policies, transport, rest


def counting_policy(api: ApiCalls) -> Any:
    """An azure-core policy placed after the bearer policy: it sees every call, retries
    included."""
    _, policies, _, _ = azure_core()

    class Count(policies.SansIOHTTPPolicy):  # type: ignore[misc, name-defined]
        def on_response(self, request: Any, response: Any) -> None:
            http = response.http_response
            api.record(
                http.request.url, http.status_code, [http.headers.get("WWW-Authenticate", "")]
            )

    return Count()


def cae_pipeline(kind: Any, transport: Any, policy: Any, credential: Any, api: ApiCalls) -> Any:
    """A real azure-core pipeline of ``kind`` (sync or async, with the matching transport and
    bearer policy class): the bearer policy with ``enable_cae=True``, then the call counter."""
    return kind(
        transport=transport(),
        policies=[policy(credential, SCOPE, enable_cae=True), counting_policy(api)],
    )


#: The emulator's API is plain http on loopback: azure-core's https rule is lifted per request.
RUN = {"enforce_https": False}


@pytest.mark.interop
def test_azure_core_pipeline_recovers_from_the_emulators_challenge(
    tenant: Emulator, rsa_cert: Certificate
) -> None:
    pipeline, policies, transport, rest = azure_core()
    api = ApiCalls(tenant.resource_url)
    with sync_credential(tenant, rsa_cert) as credential:
        runner = cae_pipeline(
            pipeline.Pipeline,
            transport.RequestsTransport,
            policies.BearerTokenCredentialPolicy,
            credential,
            api,
        )
        with runner:

            def call() -> int:
                request = rest.HttpRequest("GET", tenant.resource_url)
                return int(runner.run(request, **RUN).http_response.status_code)

            revoke_and_recover(tenant, api, call)


@pytest.mark.interop
def test_azure_core_async_pipeline_recovers_from_the_emulators_challenge(
    tenant: Emulator, rsa_cert: Certificate
) -> None:
    pipeline, policies, transport, rest = azure_core()
    api = ApiCalls(tenant.resource_url)
    credential = async_credential(tenant, rsa_cert)
    runner = cae_pipeline(
        pipeline.AsyncPipeline,
        transport.AsyncioRequestsTransport,
        policies.AsyncBearerTokenCredentialPolicy,
        credential,
        api,
    )

    async def call() -> int:
        response = await runner.run(rest.HttpRequest("GET", tenant.resource_url), **RUN)
        return int(response.http_response.status_code)

    revoke_and_recover_async(tenant, api, call, runner.__aexit__, credential.close)


# -- without CAE --------------------------------------------------------------------------------


def test_a_credential_without_enable_cae_never_sends_xms_cc(
    tenant: Emulator, rsa_cert: Certificate
) -> None:
    nbf = json.loads(challenge_claims(1_700_000_000))
    with (
        sync_credential(tenant, rsa_cert) as credential,
        httpx.Client(auth=BearerAuth(credential, SCOPE)) as client,
    ):
        first = client.get(tenant.resource_url)
        credential.get_token(SCOPE)
        credential.get_token_info(SCOPE)
        credential.get_token(SCOPE, claims=json.dumps(nbf))
        credential.get_token_info(SCOPE, options={"claims": json.dumps(nbf)})
        tenant.revoke(CLIENT)
        # Not CAE-capable, so not challenged: the token is good until it expires.
        second = client.get(tenant.resource_url)
    assert first.status_code == second.status_code == 200
    assert first.json()["cae"] is second.json()["cae"] is False
    assert "xms_cc" not in first.json()
    assert token_claims(tenant) == [None, nbf, nbf]
    assert all(c is None or "xms_cc" not in c.get("access_token", {}) for c in token_claims(tenant))


# -- a second tenant ----------------------------------------------------------------------------


def test_an_allowed_tenants_token_is_that_tenants_and_never_the_home_one(
    tenant: Emulator, rsa_cert: Certificate, tmp_path: Path
) -> None:
    tenant.add_tenant(OTHER)
    tenant.register(CLIENT, rsa_cert, tenant=OTHER)  # the multi-tenant app, consented there
    store = tmp_path / "tokens"

    def claims_of(token: str) -> dict[str, Any]:
        return dict(jwt.decode(token, options={"verify_signature": False}))

    with (
        sync_credential(
            tenant, rsa_cert, cache=FileTokenCache(store), additionally_allowed_tenants=[OTHER]
        ) as credential,
        httpx.Client() as http,
    ):
        home = credential.get_token(SCOPE).token
        away = credential.get_token(SCOPE, tenant_id=OTHER).token
        assert tenant.request_count == 2  # the home token is not served for OTHER
        assert claims_of(home)["tid"] == tenant.tenant_id
        assert claims_of(away)["tid"] == OTHER
        assert claims_of(away)["iss"] == f"{tenant.authority_host}/{OTHER}/v2.0"
        # The API verifies it as OTHER's token (OTHER's issuer, the emulator's keys).
        answer = http.get(tenant.resource_url, headers={"Authorization": f"Bearer {away}"})
        assert answer.status_code == 200
        assert answer.json()["tid"] == OTHER
        # From memory, each tenant gets its own token back.
        assert credential.get_token(SCOPE, tenant_id=OTHER).token == away
        assert credential.get_token(SCOPE).token == home

    # Another process sharing the store: the same, without a token request.
    with sync_credential(
        tenant, rsa_cert, cache=FileTokenCache(store), additionally_allowed_tenants=[OTHER]
    ) as reader:
        assert reader.get_token(SCOPE, tenant_id=OTHER).token == away
        assert reader.get_token(SCOPE).token == home
    assert tenant.request_count == 2
    # One not allowed OTHER gets nothing for it, not even the home token.
    with (
        sync_credential(tenant, rsa_cert, cache=FileTokenCache(store)) as closed,
        pytest.raises(TenantNotAllowedError),
    ):
        closed.get_token(SCOPE, tenant_id=OTHER)
    assert tenant.request_count == 2
