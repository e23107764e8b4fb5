"""``dpop=`` on the credentials (RFC 9449), over real loopback HTTP.

A scripted token endpoint (:class:`TokenServer`) plays what a real server may do and the
emulator does not: answer a DPoP request with a bearer token, demand a nonce twice, send a
nonce on a success, answer slowly. Every proof it receives is checked with
:func:`certauth.dpop.check_proof`, as a server checks it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

import jwt
import pytest
from _cae_helpers import TokenRequests

from certauth import (
    AsyncCertificateCredential,
    AsyncClientSecretCredential,
    AsyncWorkloadIdentityCredential,
    CertificateCredential,
    ClientSecretCredential,
    RetryPolicy,
    WorkloadIdentityCredential,
)
from certauth.certificates import Certificate
from certauth.dpop import DPoPKey, DPoPProof, check_proof
from certauth.emulator import Emulator
from certauth.errors import (
    ConfigurationError,
    InvalidArgumentError,
    TokenRequestError,
    TransportError,
)

CLIENT = "11111111-2222-3333-4444-555555555555"
SCOPE = "api://billing/.default"
FAST_RETRY = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.02)


def dpop_token(token: str = "dpop-bound", token_type: str = "DPoP") -> Answer:
    """A token response (RFC 6749 section 5.1) of the given type."""
    body = {"access_token": token, "token_type": token_type, "expires_in": 3600}
    return Answer(200, json.dumps(body).encode())


def nonce_demand(nonce: str) -> Answer:
    """RFC 9449 section 8: a token endpoint that requires a nonce."""
    body = {"error": "use_dpop_nonce", "error_description": "a nonce is required"}
    return Answer(400, json.dumps(body).encode(), {"DPoP-Nonce": nonce})


@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    #: Seconds the server waits before it answers.
    delay: float = 0.0


@dataclass
class Received:
    """A token request as the server saw it."""

    form: dict[str, str]
    proofs: list[str]


class TokenServer:
    """A token endpoint on 127.0.0.1 answering from ``script`` (then with a DPoP token)."""

    def __init__(self) -> None:
        self.script: list[Answer] = []
        self.received: list[Received] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                server.received.append(
                    Received(dict(parse_qsl(body.decode())), self.headers.get_all("DPoP") or [])
                )
                answer = server.script.pop(0) if server.script else dpop_token()
                time.sleep(answer.delay)
                self.send_response(answer.status)
                for name, value in {"Content-Type": "application/json", **answer.headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that gave up on a slow answer: nothing to report

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/tenant/oauth2/token"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def proof(self, index: int, *, nonce: str | None = None) -> DPoPProof:
        """The proof of request ``index``, checked as RFC 9449 section 4.3 says."""
        return check_proof(self.received[index].proofs, htm="POST", htu=self.url, nonce=nonce)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def server() -> Iterator[TokenServer]:
    endpoint = TokenServer()
    yield endpoint
    endpoint.close()


def secret_credential(server: TokenServer, **kw: Any) -> ClientSecretCredential:
    kw.setdefault("retry", FAST_RETRY)
    kw.setdefault("dpop", True)
    return ClientSecretCredential(None, CLIENT, "s3cr3t-value", token_endpoint=server.url, **kw)


def test_every_attempt_carries_a_fresh_proof_and_a_nonce_demand_is_answered_at_once(
    server: TokenServer,
) -> None:
    # A nonce demand, then a 503, then a token: with max_attempts=2 the nonce retry is not one
    # of the transient attempts (it is answered at once, no back-off).
    server.script = [nonce_demand("n-1"), Answer(503, b"{}"), dpop_token()]
    with secret_credential(server) as cred:
        info = cred.get_token_info(SCOPE)
        key = cred.dpop_key
    assert key is not None
    assert (info.token, info.token_type) == ("dpop-bound", "DPoP")
    assert len(server.received) == 3
    first = server.proof(0)
    assert "nonce" not in first.claims
    proofs = [first, server.proof(1, nonce="n-1"), server.proof(2, nonce="n-1")]
    assert {p.jkt for p in proofs} == {key.thumbprint}
    assert len({p.jti for p in proofs}) == 3  # fresh each time
    assert all("ath" not in p.claims for p in proofs)  # no access token on a token request


def test_a_second_nonce_demand_is_the_error_it_is(server: TokenServer) -> None:
    server.script = [nonce_demand("n-1"), nonce_demand("n-2")]
    with secret_credential(server) as cred:
        with pytest.raises(TokenRequestError) as caught:
            cred.get_token(SCOPE)
        assert caught.value.error == "use_dpop_nonce"
        assert caught.value.status_code == 400
        assert len(server.received) == 2
        # The nonce the refusal brought is the one the next call starts with: no demand.
        cred.get_token(SCOPE)
    server.proof(1, nonce="n-1")
    server.proof(2, nonce="n-2")
    assert len(server.received) == 3


def test_a_nonce_sent_with_any_answer_goes_into_the_next_proof(server: TokenServer) -> None:
    # RFC 9449 section 8.2: a fresh nonce may come with a success too.
    server.script = [Answer(200, dpop_token().body, {"DPoP-Nonce": "fresh-1"})]
    with secret_credential(server) as cred:
        cred.get_token(SCOPE)
        cred.request_token(SCOPE, force=True)
        other = server.url.replace("/tenant/oauth2/token", "/api/items")
        proof = cred.make_dpop_proof("GET", other)
    server.proof(1, nonce="fresh-1")
    # The nonce belongs to the origin: a proof for another path there carries it too.
    assert check_proof(proof, htm="GET", htu=other, nonce="fresh-1").htu == other


@pytest.mark.parametrize("token_type", ["Bearer", "N_A"])
def test_a_token_that_is_not_dpop_bound_is_refused_and_not_kept(
    server: TokenServer, token_type: str
) -> None:
    server.script = [dpop_token("unbound", token_type), dpop_token("unbound", token_type)]
    with secret_credential(server) as cred:
        for _ in range(2):  # not cached: asked for again, and refused again
            with pytest.raises(ConfigurationError, match="dpop=") as caught:
                cred.get_token(SCOPE)
            assert repr(token_type) in str(caught.value)
            assert "RFC 9449 section 5" in str(caught.value)
        assert len(server.received) == 2
        # The type is compared without regard to case (RFC 6749 section 5.1), and reported
        # as DPoP.
        server.script = [dpop_token(token_type="dpop")]
        assert cred.get_token_info(SCOPE).token_type == "DPoP"


def test_the_nonce_retry_stays_within_the_calls_bound(server: TokenServer) -> None:
    server.script = [
        dataclasses.replace(nonce_demand("n-1"), delay=0.3),
        dataclasses.replace(dpop_token(), delay=2.0),
    ]
    bound = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02, total_timeout=0.5)
    started = time.monotonic()
    with (
        secret_credential(server, retry=bound) as cred,
        pytest.raises(TransportError, match=r"total_timeout=0\.5"),
    ):
        cred.get_token(SCOPE)
    assert time.monotonic() - started < 1.5  # not the 2 s the second answer would take
    assert len(server.received) == 2  # the retry was sent, with what was left
    server.proof(1, nonce="n-1")


def test_the_dpop_keyword_is_checked_and_a_given_key_is_used(
    server: TokenServer, rsa_cert: Certificate
) -> None:
    for wrong in ("yes", 1, None, rsa_cert.private_key):
        with pytest.raises(InvalidArgumentError, match="dpop="):
            secret_credential(server, dpop=wrong)
    with secret_credential(server, dpop=False) as plain:
        assert plain.dpop_key is None
        with pytest.raises(InvalidArgumentError, match="dpop=True"):
            plain.make_dpop_proof("GET", "https://api.example/x")
        info = plain.get_token_info(SCOPE)
    # A plain credential's request has no proof, and its token is taken as it comes.
    assert server.received[-1].proofs == []
    assert info.token_type == "DPoP"
    key = DPoPKey.from_private_key(rsa_cert.private_key)
    with secret_credential(server, dpop=key) as cred:
        assert cred.dpop_key is key
        cred.get_token(SCOPE)
    assert server.proof(-1).jkt == key.thumbprint
    assert server.proof(-1).alg == "PS256"


def test_every_kind_of_credential_takes_dpop(server: TokenServer, tmp_path: Any) -> None:
    federated = tmp_path / "federated.jwt"
    federated.write_text("e30.e30.c2ln")

    async def main() -> list[str]:
        kinds = [
            AsyncClientSecretCredential(
                None, CLIENT, "s3cr3t-value", token_endpoint=server.url, dpop=True
            ),
            AsyncWorkloadIdentityCredential(
                None, CLIENT, str(federated), token_endpoint=server.url, dpop=True
            ),
        ]
        types = []
        for cred in kinds:
            async with cred:
                types.append((await cred.get_token_info(SCOPE)).token_type)
        return types

    assert asyncio.run(main()) == ["DPoP", "DPoP"]
    with WorkloadIdentityCredential(
        None, CLIENT, str(federated), token_endpoint=server.url, dpop=True
    ) as cred:
        assert cred.get_token_info(SCOPE).token_type == "DPoP"
    for index in range(3):
        server.proof(index)  # each request carried a proof


class RecordingStore:
    """A shared token store that records what is asked of it."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.data: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        self.calls.append("get")
        return self.data.get(key)

    def set(self, key: str, value: bytes, expires_on: float) -> None:
        self.calls.append("set")
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.calls.append("delete")
        self.data.pop(key, None)

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        self.calls.append("lock")
        yield


def test_a_shared_store_is_left_alone_by_a_dpop_credential(server: TokenServer) -> None:
    store = RecordingStore()
    with secret_credential(server, dpop=False, cache=store) as plain:
        plain.get_token(SCOPE)
    assert "set" in store.calls  # the control: a bearer token is shared
    store.calls.clear()
    with secret_credential(server, cache=store) as cred:
        cred.get_token(SCOPE)
        cred.request_token(SCOPE, force=True)
        cred.invalidate(SCOPE)
    # Not written (another process holds another key), nor read, locked or deleted.
    assert store.calls == []
    assert len(server.received) == 3  # the plain token in the store was not taken either


# -- against the emulator, which binds tokens as an RFC 9449 server does ------------------------


@pytest.fixture
def tenant(rsa_cert: Certificate) -> Iterator[Emulator]:
    with Emulator(strict=True) as emulator:
        emulator.register(CLIENT, rsa_cert)
        yield emulator


@pytest.fixture
def nonce_tenant(rsa_cert: Certificate) -> Iterator[Emulator]:
    with Emulator(strict=True, dpop_nonce=True) as emulator:
        emulator.register(CLIENT, rsa_cert)
        yield emulator


def certificate_credential(
    tenant: Emulator, cert: Certificate, sent: TokenRequests | None = None, **kw: Any
) -> CertificateCredential:
    kw.setdefault("dpop", True)
    if sent is not None:
        kw["client"] = sent.client()
    return CertificateCredential(
        tenant.tenant_id, CLIENT, certificate=cert, authority=tenant.authority_host, **kw
    )


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})  # type: ignore[no-any-return]


def dpop_proofs(sent: TokenRequests) -> list[str]:
    return [headers.get("dpop", "") for headers in sent.headers]


def test_sync_and_async_credentials_get_tokens_bound_to_their_key(
    tenant: Emulator, rsa_cert: Certificate
) -> None:
    with certificate_credential(tenant, rsa_cert) as cred:
        info = cred.get_token_info(SCOPE)
        key = cred.dpop_key
        assert key is not None
        assert key.alg == "ES256"  # a fresh P-256 key, not the certificate's RSA key
        assert info.token_type == "DPoP"
        assert claims_of(info.token)["cnf"] == {"jkt": key.thumbprint}
        assert cred.request_token(SCOPE).token_type == "DPoP"
        assert cred.get_token(SCOPE).token == info.token  # cached
    assert tenant.request_count == 1

    async def main() -> tuple[str, str, str]:
        cred = AsyncCertificateCredential(
            tenant.tenant_id,
            CLIENT,
            certificate=rsa_cert,
            authority=tenant.authority_host,
            dpop=True,
        )
        async with cred:
            info = await cred.get_token_info(SCOPE)
            assert cred.dpop_key is not None
            return info.token_type, info.token, cred.dpop_key.thumbprint

    token_type, token, jkt = asyncio.run(main())
    assert token_type == "DPoP"
    assert claims_of(token)["cnf"] == {"jkt": jkt}
    assert jkt != key.thumbprint  # each credential its own key


def test_a_required_nonce_costs_one_retry_once(
    nonce_tenant: Emulator, rsa_cert: Certificate
) -> None:
    sent = TokenRequests()
    with certificate_credential(nonce_tenant, rsa_cert, sent) as cred:
        assert cred.get_token_info(SCOPE).token_type == "DPoP"
        assert len(sent.sent) == 2  # use_dpop_nonce, then the token
        # The nonce is reused: the next token request needs no retry.
        cred.request_token(SCOPE, force=True)
        cred.get_token("api://other/.default")
        assert len(sent.sent) == 4
        # A nonce that went stale (rotated twice) costs one retry again.
        nonce_tenant.rotate_dpop_nonce()
        nonce_tenant.rotate_dpop_nonce()
        cred.request_token(SCOPE, force=True)
        assert len(sent.sent) == 6
    nonces = [
        check_proof(proof, htm="POST", htu=nonce_tenant.token_endpoint).claims.get("nonce")
        for proof in dpop_proofs(sent)
    ]
    assert nonces[0] is None
    assert nonces[1] == nonces[2] == nonces[3] == nonces[4] is not None
    assert nonces[5] == nonce_tenant.dpop_nonce != nonces[4]


def test_the_async_credential_meets_a_nonce_demand_too(
    nonce_tenant: Emulator, rsa_cert: Certificate
) -> None:
    sent = TokenRequests()

    async def main() -> str:
        cred = AsyncCertificateCredential(
            nonce_tenant.tenant_id,
            CLIENT,
            certificate=rsa_cert,
            authority=nonce_tenant.authority_host,
            client=sent.async_client(),
            dpop=True,
        )
        async with cred:
            await cred.request_token(SCOPE)
            return (await cred.request_token(SCOPE, force=True)).token_type

    assert asyncio.run(main()) == "DPoP"
    assert len(sent.sent) == 3


def test_credentials_with_different_keys_never_share_a_token(
    tenant: Emulator, rsa_cert: Certificate
) -> None:
    store = RecordingStore()
    plain = certificate_credential(tenant, rsa_cert, dpop=False, cache=store)
    first = certificate_credential(tenant, rsa_cert, cache=store)
    second = certificate_credential(tenant, rsa_cert, cache=store)
    with plain, first, second:
        bearer = plain.get_token_info(SCOPE)
        assert "set" in store.calls  # the plain token is in the shared store
        store.calls.clear()
        tokens = [cred.get_token(SCOPE).token for cred in (first, second)]
        assert store.calls == []  # DPoP tokens: not written, not read
        assert len({bearer.token, *tokens}) == 3
        for cred, token in zip((first, second), tokens, strict=True):
            assert cred.dpop_key is not None
            assert claims_of(token)["cnf"]["jkt"] == cred.dpop_key.thumbprint
    assert bearer.token_type == "Bearer"
    assert "cnf" not in claims_of(bearer.token)
    assert tenant.request_count == 3


def test_a_plain_credential_is_unchanged(nonce_tenant: Emulator, rsa_cert: Certificate) -> None:
    sent = TokenRequests()
    with certificate_credential(nonce_tenant, rsa_cert, sent, dpop=False) as cred:
        info = cred.get_token_info(SCOPE)
        assert cred.dpop_key is None
    # No proof, so no nonce demanded: one request, a bearer token without cnf.
    assert dpop_proofs(sent) == [""]
    assert info.token_type == "Bearer"
    assert "cnf" not in claims_of(info.token)
