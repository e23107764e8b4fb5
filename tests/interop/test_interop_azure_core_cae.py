"""azure-core's own claims-challenge handling with certauth's credentials (issue 15).

A real ``Pipeline`` / ``AsyncPipeline`` with ``BearerTokenCredentialPolicy`` /
``AsyncBearerTokenCredentialPolicy`` (``enable_cae=True``) calls a protected resource on
loopback that challenges a revoked token with ``insufficient_claims``. The policy handles the
challenge itself, by asking the credential for a token with the challenge's claims and
``enable_cae``: through ``get_token_info(options=...)`` when the credential has it (certauth's
do) and through ``get_token(**kwargs)`` otherwise; both paths are shown, by wrapping the
credential in a recorder that has only the methods under test. Each recovery costs exactly one
extra token request (carrying the claims and the ``cp1`` capability) and one retried call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from _cae_helpers import ProtectedResource, TokenRequests, nbf_claims

from certauth import AsyncCertificateCredential, CertificateCredential
from certauth.certificates import Certificate
from certauth.emulator import Emulator

pytestmark = pytest.mark.interop
pipeline_module = pytest.importorskip("azure.core.pipeline")
policies = pytest.importorskip("azure.core.pipeline.policies")
transports = pytest.importorskip("azure.core.pipeline.transport")
rest = pytest.importorskip("azure.core.rest")

CLIENT = "11111111-2222-3333-4444-555555555555"
AUDIENCE = "api://billing"
SCOPE = f"{AUDIENCE}/.default"
CP1 = {"xms_cc": {"values": ["cp1"]}}
#: The resource is plain http on loopback: azure-core's https rule is lifted per request.
RUN = {"enforce_https": False}


class Calls:
    """A credential wrapper recording how azure-core calls it (``get_token`` only)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        assert scopes == (SCOPE,)
        self.calls.append(("get_token", kwargs))
        return self.inner.get_token(*scopes, **kwargs)


class InfoCalls(Calls):
    """... with ``get_token_info`` too, which azure-core then prefers."""

    def get_token_info(self, *scopes: str, options: Any = None) -> Any:
        assert scopes == (SCOPE,)
        self.calls.append(("get_token_info", dict(options or {})))
        return self.inner.get_token_info(*scopes, options=options)


class AsyncCalls:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        self.calls.append(("get_token", kwargs))
        return await self.inner.get_token(*scopes, **kwargs)


class AsyncInfoCalls(AsyncCalls):
    async def get_token_info(self, *scopes: str, options: Any = None) -> Any:
        self.calls.append(("get_token_info", dict(options or {})))
        return await self.inner.get_token_info(*scopes, options=options)


@pytest.fixture
def tenant(rsa_cert: Certificate) -> Iterator[Emulator]:
    with Emulator(strict=True) as emulator:
        emulator.register(CLIENT, rsa_cert)
        yield emulator


@pytest.fixture
def api(tenant: Emulator) -> Iterator[ProtectedResource]:
    resource = ProtectedResource(tenant, AUDIENCE)
    yield resource
    resource.close()


def _check(
    recorder: Calls | AsyncCalls, method: str, sent: TokenRequests, api: ProtectedResource
) -> None:
    assert api.revoked_before is not None
    challenge_claims = nbf_claims(api.revoked_before)
    # The policy asked twice: for its first token, then with the challenge's claims.
    [(first, first_args), (second, second_args)] = recorder.calls
    assert first == second == method
    assert first_args == {"enable_cae": True}
    import json

    assert json.loads(second_args.pop("claims")) == challenge_claims
    assert second_args == {"enable_cae": True}
    # One extra token request, carrying those claims and the client capability...
    assert sent.claims == [
        {"access_token": CP1},
        {"access_token": {**challenge_claims["access_token"], **CP1}},
    ]
    # ...and one retried call; the next call reuses the policy's new token.
    assert len(api.authorizations) == 4
    assert api.authorizations[2] == api.authorizations[3] != api.authorizations[1]


@pytest.mark.parametrize(
    ("wrapper", "method"), [(InfoCalls, "get_token_info"), (Calls, "get_token")]
)
def test_sync_pipeline_satisfies_a_cae_challenge(
    tenant: Emulator,
    rsa_cert: Certificate,
    api: ProtectedResource,
    wrapper: type[Calls],
    method: str,
) -> None:
    sent = TokenRequests()
    credential = CertificateCredential(
        tenant.tenant_id,
        CLIENT,
        certificate=rsa_cert,
        authority=tenant.authority_host,
        client=sent.client(),
    )
    recorder = wrapper(credential)
    pipeline = pipeline_module.Pipeline(
        transport=transports.RequestsTransport(),
        policies=[policies.BearerTokenCredentialPolicy(recorder, SCOPE, enable_cae=True)],
    )
    with pipeline, credential:
        assert (
            pipeline.run(rest.HttpRequest("GET", api.url), **RUN).http_response.status_code == 200
        )
        api.revoke()
        for _ in range(2):
            response = pipeline.run(rest.HttpRequest("GET", api.url), **RUN)
            assert response.http_response.status_code == 200
    _check(recorder, method, sent, api)


@pytest.mark.parametrize(
    ("wrapper", "method"), [(AsyncInfoCalls, "get_token_info"), (AsyncCalls, "get_token")]
)
def test_async_pipeline_satisfies_a_cae_challenge(
    tenant: Emulator,
    rsa_cert: Certificate,
    api: ProtectedResource,
    wrapper: type[AsyncCalls],
    method: str,
) -> None:
    sent = TokenRequests()

    async def main() -> AsyncCalls:
        credential = AsyncCertificateCredential(
            tenant.tenant_id,
            CLIENT,
            certificate=rsa_cert,
            authority=tenant.authority_host,
            client=sent.async_client(),
        )
        recorder = wrapper(credential)
        pipeline = pipeline_module.AsyncPipeline(
            transport=transports.AsyncioRequestsTransport(),
            policies=[policies.AsyncBearerTokenCredentialPolicy(recorder, SCOPE, enable_cae=True)],
        )
        async with pipeline, credential:
            first = await pipeline.run(rest.HttpRequest("GET", api.url), **RUN)
            assert first.http_response.status_code == 200
            api.revoke()
            for _ in range(2):
                response = await pipeline.run(rest.HttpRequest("GET", api.url), **RUN)
                assert response.http_response.status_code == 200
        return recorder

    recorder = asyncio.run(main())
    _check(recorder, method, sent, api)


def test_a_policy_without_cae_sends_the_claims_without_the_capability(
    tenant: Emulator, rsa_cert: Certificate, api: ProtectedResource
) -> None:
    sent = TokenRequests()
    credential = CertificateCredential(
        tenant.tenant_id,
        CLIENT,
        certificate=rsa_cert,
        authority=tenant.authority_host,
        client=sent.client(),
    )
    pipeline = pipeline_module.Pipeline(
        transport=transports.RequestsTransport(),
        policies=[policies.BearerTokenCredentialPolicy(credential, SCOPE)],
    )
    with pipeline, credential:
        pipeline.run(rest.HttpRequest("GET", api.url), **RUN)
        revoked = api.revoke()
        response = pipeline.run(rest.HttpRequest("GET", api.url), **RUN)
    assert response.http_response.status_code == 200
    assert sent.claims == [None, nbf_claims(revoked)]
