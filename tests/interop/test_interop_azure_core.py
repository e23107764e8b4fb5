"""certauth's credentials in an Azure SDK pipeline, with no azure-identity and no mocks.

azure-core's ``BearerTokenCredentialPolicy`` / ``AsyncBearerTokenCredentialPolicy`` take
certauth's sync and async credentials (azure-core's ``get_token``/``get_token_info``
protocols, duck-typed), fetch a token from the emulator, and send it over a real transport
to a small https API on loopback that records what it received. The token the API saw
verifies with certauth's own verifier against the emulator's keys, and repeated calls reuse it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from _interop import CLIENT_ID, SCOPE, Generated

from certauth import AsyncCertificateCredential, CertificateCredential, verify_access_token
from certauth.emulator import Emulator
from certauth.emulator.tls import generate_tls_files, server_context

pytestmark = pytest.mark.interop
pipeline_module = pytest.importorskip("azure.core.pipeline")
policies = pytest.importorskip("azure.core.pipeline.policies")
transports = pytest.importorskip("azure.core.pipeline.transport")
rest = pytest.importorskip("azure.core.rest")


class RecordingApi:
    """An https server on loopback that answers 200 and keeps each Authorization header."""

    def __init__(self, folder: Path) -> None:
        files = generate_tls_files(folder, now=dt.datetime.now(dt.timezone.utc))
        self.ca_file = str(files.ca_file)
        self.authorizations: list[str | None] = []
        seen = self.authorizations

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append(self.headers.get("Authorization"))
                body = b'{"ok":true}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = server_context(files).wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}/things"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[RecordingApi]:
    server = RecordingApi(tmp_path / "api-tls")
    yield server
    server.close()


@pytest.fixture
def tenant(generated: Generated, no_ca_bundle_variables: None) -> Iterator[Emulator]:
    with Emulator(tls=True, strict=True) as emulator:
        emulator.register(CLIENT_ID, generated.path(".crt"), roles=["Interop.Read"])
        yield emulator


def _bearer_token(authorization: str | None) -> str:
    assert authorization is not None
    scheme, _, token = authorization.partition(" ")
    assert scheme == "Bearer"
    return token


def _check_token(tenant: Emulator, token: str) -> None:
    claims = verify_access_token(
        token,
        jwks=tenant.jwks(),
        issuer=tenant.issuer,
        audience="api://interop",
        required_roles="Interop.Read",
    )
    assert claims["azp"] == CLIENT_ID


def test_sync_pipeline_sends_the_bearer_token(
    tenant: Emulator, api: RecordingApi, generated: Generated
) -> None:
    credential = CertificateCredential(
        tenant.tenant_id,
        CLIENT_ID,
        str(generated.path(".pem")),
        authority=tenant.authority_host,
        verify=tenant.ca_file,
    )
    pipeline = pipeline_module.Pipeline(
        transport=transports.RequestsTransport(connection_verify=api.ca_file),
        policies=[policies.BearerTokenCredentialPolicy(credential, SCOPE)],
    )
    with pipeline:
        for _ in range(3):
            response = pipeline.run(rest.HttpRequest("GET", api.url))
            assert response.http_response.status_code == 200
    credential.close()
    tokens = {_bearer_token(a) for a in api.authorizations}
    assert len(api.authorizations) == 3
    assert len(tokens) == 1  # the policy kept the token; one token request in all
    assert tenant.request_count == 1
    _check_token(tenant, tokens.pop())


def test_async_pipeline_sends_the_bearer_token(
    tenant: Emulator, api: RecordingApi, generated: Generated
) -> None:
    async def main() -> None:
        credential = AsyncCertificateCredential(
            tenant.tenant_id,
            CLIENT_ID,
            str(generated.path(".pfx")),
            authority=tenant.authority_host,
            verify=tenant.ca_file,
        )
        pipeline = pipeline_module.AsyncPipeline(
            transport=transports.AsyncioRequestsTransport(connection_verify=api.ca_file),
            policies=[policies.AsyncBearerTokenCredentialPolicy(credential, SCOPE)],
        )
        async with pipeline:
            for _ in range(3):
                response = await pipeline.run(rest.HttpRequest("GET", api.url))
                assert response.http_response.status_code == 200
        await credential.close()

    asyncio.run(main())
    tokens = {_bearer_token(a) for a in api.authorizations}
    assert len(api.authorizations) == 3
    assert len(tokens) == 1
    assert tenant.request_count == 1
    _check_token(tenant, tokens.pop())


def test_the_policy_refuses_plain_http_before_asking_for_a_token(
    tenant: Emulator, generated: Generated
) -> None:
    # azure-core's own rule (bearer tokens only over https) holds with certauth's credential.
    from azure.core.exceptions import ServiceRequestError

    credential = CertificateCredential(
        tenant.tenant_id,
        CLIENT_ID,
        certificate=generated.certificate,
        authority=tenant.authority_host,
        verify=tenant.ca_file,
    )
    pipeline = pipeline_module.Pipeline(
        transport=transports.RequestsTransport(),
        policies=[policies.BearerTokenCredentialPolicy(credential, SCOPE)],
    )
    with pytest.raises(ServiceRequestError, match="https"):
        pipeline.run(rest.HttpRequest("GET", "http://127.0.0.1:9/things"))
    assert tenant.request_count == 0
