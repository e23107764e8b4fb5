"""``BearerAuth`` with a DPoP credential (RFC 9449 sections 7 and 9), sync and async.

The API is a small resource server on loopback (:class:`DPoPResource`) that does what a DPoP
resource must: it verifies the emulator's token and its binding with ``verify_access_token``,
checks the request's proof with :func:`certauth.dpop.check_proof` (method, URL, ``ath`` against
the token presented) and that the proof's key is the one the token is bound to (``cnf.jkt``),
and demands a nonce when it has one the proof does not carry.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from _cae_helpers import TokenRequests, claims_challenge

from certauth import AsyncCertificateCredential, BearerAuth, CertificateCredential
from certauth.certificates import Certificate
from certauth.dpop import DPoPProof, JtiCache, check_proof
from certauth.emulator import Emulator
from certauth.errors import TokenValidationError
from certauth.verify import verify_access_token

CLIENT = "11111111-2222-3333-4444-555555555555"
AUDIENCE = "api://billing"
SCOPE = f"{AUDIENCE}/.default"


@dataclass
class Seen:
    """One request as the resource saw it, and what it answered."""

    method: str
    url: str
    authorization: str
    proof: DPoPProof | None
    status: int


class DPoPResource:
    """An API on 127.0.0.1 that takes DPoP-bound tokens (and bearer tokens without ``cnf``).

    ``nonce``: the nonce proofs must carry (``None``: none required); ``next_nonce``: a fresh
    one to send on every success (section 8.2); ``refuse``: a callable returning the
    ``WWW-Authenticate`` value of a 401 for a request that passed (``None``: accept).
    """

    def __init__(self, tenant: Emulator) -> None:
        self.tenant = tenant
        self.nonce: str | None = None
        self.next_nonce: str | None = None
        self.refuse: Callable[[], str | None] = lambda: None
        #: Replace the nonce after each demand (a server whose nonces go stale at once).
        self.rotate_on_demand = False
        self.seen: list[Seen] = []
        self._jti = JtiCache()
        resource = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                if length:
                    self.rfile.read(length)
                url = f"{resource.origin}{self.path}"
                status, headers = resource._answer(
                    self.command,
                    url,
                    self.headers.get("Authorization", ""),
                    self.headers.get_all("DPoP") or [],
                )
                body = b'{"ok":true}' if status == 200 else b'{"error":"unauthorized"}'
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self.url = f"{self.origin}/invoices"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def _answer(
        self, method: str, url: str, authorization: str, proofs: list[str]
    ) -> tuple[int, dict[str, str]]:
        scheme, _, token = authorization.partition(" ")
        proof: DPoPProof | None = None
        status, headers = 200, {}
        try:
            # The verifier checks the token and its binding, the proof included (replays
            # too), as a resource would.
            claims = verify_access_token(
                token,
                jwks=self.tenant.jwks(),
                issuer=self.tenant.issuer,
                audience=AUDIENCE,
                scheme=scheme,
                dpop_proof=proofs or None,
                htm=method,
                htu=url,
                dpop_nonce=self.nonce,
                dpop_jti_cache=self._jti,
            )
            if proofs:
                # And the test's own reading of the proof (section 4.3): ath against the
                # token presented, its key against the token's cnf.jkt (section 6.1).
                proof = check_proof(proofs, htm=method, htu=url, access_token=token)
                if proof.jkt != claims.get("cnf", {}).get("jkt"):
                    raise TokenValidationError("the proof is not by the token's key", check="x")
        except TokenValidationError as exc:
            if exc.check != "dpop_nonce":
                return self._record(
                    method,
                    url,
                    authorization,
                    proof,
                    401,
                    {"WWW-Authenticate": 'DPoP algs="ES256 PS256", error="invalid_token"'},
                )
            demanded = self.nonce
            assert demanded is not None
            if self.rotate_on_demand:
                self.nonce = f"{demanded}+"
            # Section 9: the resource's nonce demand.
            return self._record(
                method,
                url,
                authorization,
                None,
                401,
                {
                    "WWW-Authenticate": 'DPoP error="use_dpop_nonce", '
                    'error_description="Resource server requires nonce in DPoP proof"',
                    "DPoP-Nonce": demanded,
                },
            )
        refusal = self.refuse()
        if refusal is not None:
            status, headers = 401, {"WWW-Authenticate": refusal}
        elif self.next_nonce is not None:
            headers = {"DPoP-Nonce": self.next_nonce}
        return self._record(method, url, authorization, proof, status, headers)

    def _record(
        self,
        method: str,
        url: str,
        authorization: str,
        proof: DPoPProof | None,
        status: int,
        headers: dict[str, str],
    ) -> tuple[int, dict[str, str]]:
        self.seen.append(Seen(method, url, authorization, proof, status))
        return status, headers

    @property
    def statuses(self) -> list[int]:
        return [seen.status for seen in self.seen]

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def tenant(rsa_cert: Certificate) -> Iterator[Emulator]:
    with Emulator(strict=True) as emulator:
        emulator.register(CLIENT, rsa_cert)
        yield emulator


@pytest.fixture
def api(tenant: Emulator) -> Iterator[DPoPResource]:
    resource = DPoPResource(tenant)
    yield resource
    resource.close()


@pytest.fixture
def sent() -> TokenRequests:
    return TokenRequests()


def credential(
    tenant: Emulator, cert: Certificate, sent: TokenRequests, **kw: Any
) -> CertificateCredential:
    kw.setdefault("dpop", True)
    return CertificateCredential(
        tenant.tenant_id,
        CLIENT,
        certificate=cert,
        authority=tenant.authority_host,
        client=sent.client(),
        **kw,
    )


def scheme_and_token(seen: Seen) -> tuple[str, str]:
    scheme, _, token = seen.authorization.partition(" ")
    return scheme, token


def test_requests_carry_the_token_as_dpop_with_a_proof_and_a_nonce_demand_is_met_once(
    tenant: Emulator, rsa_cert: Certificate, api: DPoPResource, sent: TokenRequests
) -> None:
    api.nonce = "resource-nonce-1"
    with (
        credential(tenant, rsa_cert, sent) as cred,
        httpx.Client(auth=BearerAuth(cred, SCOPE)) as client,
    ):
        assert client.get(api.url, params={"page": "2"}).status_code == 200
        assert api.statuses == [401, 200]  # one demand, one retry
        # The same token both times: a nonce demand does not refuse it.
        assert scheme_and_token(api.seen[0]) == scheme_and_token(api.seen[1])
        scheme, token = scheme_and_token(api.seen[1])
        assert scheme == "DPoP"
        assert token == cred.get_token(SCOPE).token
        proof = api.seen[1].proof
        assert proof is not None
        assert cred.dpop_key is not None
        assert proof.jkt == cred.dpop_key.thumbprint
        # htm and htu are the request's (htu without its query, section 4.2).
        assert (proof.htm, proof.htu) == ("GET", api.url)
        assert proof.claims["nonce"] == "resource-nonce-1"
        # The nonce is kept: the next requests carry it at once, each with a fresh proof.
        assert client.post(api.url, json={"n": 1}).status_code == 200
        assert client.get(api.url).status_code == 200
        assert api.statuses == [401, 200, 200, 200]
        later = [seen.proof for seen in api.seen[2:]]
        assert [(p.htm, p.claims["nonce"]) for p in later if p] == [
            ("POST", "resource-nonce-1"),
            ("GET", "resource-nonce-1"),
        ]
    assert len(sent.sent) == 1  # one token for all of it


def test_a_fresh_nonce_on_any_answer_is_used_next(
    tenant: Emulator, rsa_cert: Certificate, api: DPoPResource, sent: TokenRequests
) -> None:
    with (
        credential(tenant, rsa_cert, sent) as cred,
        httpx.Client(auth=BearerAuth(cred, SCOPE)) as client,
    ):
        api.next_nonce = "rotated-1"  # section 8.2: sent with a success
        assert client.get(api.url).status_code == 200
        api.nonce = "rotated-1"  # from now on required: the client has it already
        assert client.get(api.url).status_code == 200
        # make_dpop_proof, for another HTTP client, applies it too.
        proof = check_proof(
            cred.make_dpop_proof("DELETE", f"{api.origin}/x", access_token="abc"),
            htm="DELETE",
            htu=f"{api.origin}/x",
            access_token="abc",
        )
        assert proof.claims["nonce"] == "rotated-1"
    assert api.statuses == [200, 200]


def test_a_second_nonce_demand_is_returned_and_the_token_kept(
    tenant: Emulator, rsa_cert: Certificate, api: DPoPResource, sent: TokenRequests
) -> None:
    api.nonce = "n-1"
    api.rotate_on_demand = True  # each demand's nonce is stale by the time the retry comes
    with (
        credential(tenant, rsa_cert, sent) as cred,
        httpx.Client(auth=BearerAuth(cred, SCOPE)) as client,
    ):
        response = client.get(api.url)
        assert response.status_code == 401
        assert response.headers["DPoP-Nonce"] == "n-1+"
        assert api.statuses == [401, 401]  # no loop
        assert len(sent.sent) == 1  # the token was neither dropped nor renewed
        # Once the server settles, a request is one demand and one retry again.
        api.rotate_on_demand = False
        assert client.get(api.url).status_code == 200
        assert api.statuses == [401, 401, 401, 200]


@pytest.mark.parametrize(
    "refusal",
    [
        'DPoP error="invalid_token"',  # revoked, say
        claims_challenge({"access_token": {"nbf": {"essential": True, "value": "1"}}}),
    ],
)
def test_the_401_handling_keeps_working_with_proofs_on_the_retry(
    tenant: Emulator,
    rsa_cert: Certificate,
    api: DPoPResource,
    sent: TokenRequests,
    refusal: str,
) -> None:
    api.nonce = "n-1"
    refusals = iter([refusal])
    api.refuse = lambda: next(refusals, None)
    api.next_nonce = "n-2"  # sent with the retry's success
    with (
        credential(tenant, rsa_cert, sent) as cred,
        httpx.Client(auth=BearerAuth(cred, SCOPE)) as client,
    ):
        assert client.get(api.url).status_code == 200
        api.nonce = "n-2"
        assert client.get(api.url).status_code == 200  # the retry's nonce was kept
    # The nonce demand, the refusal, then the retry with a new token and a new proof.
    assert api.statuses == [401, 401, 200, 200]
    assert len(sent.sent) == 2
    first, retried = scheme_and_token(api.seen[1]), scheme_and_token(api.seen[2])
    assert first[0] == retried[0] == "DPoP"
    assert first[1] != retried[1]
    assert api.seen[2].proof is not None  # checked: ath of the new token, the nonce
    if "insufficient_claims" in refusal:
        assert sent.claims[-1] is not None


def test_async_bearer_auth_with_a_dpop_credential(
    tenant: Emulator, rsa_cert: Certificate, api: DPoPResource, sent: TokenRequests
) -> None:
    api.nonce = "async-nonce"

    async def main() -> None:
        cred = AsyncCertificateCredential(
            tenant.tenant_id,
            CLIENT,
            certificate=rsa_cert,
            authority=tenant.authority_host,
            client=sent.async_client(),
            dpop=True,
        )
        async with cred, httpx.AsyncClient(auth=BearerAuth(cred, SCOPE)) as client:
            assert (await client.get(api.url)).status_code == 200
            assert (await client.put(api.url, content=b"x")).status_code == 200
            refusals = iter(['DPoP error="invalid_token"'])
            api.refuse = lambda: next(refusals, None)
            assert (await client.get(api.url)).status_code == 200  # a new token, a new proof
            assert cred.dpop_key is not None
            assert {s.proof.jkt for s in api.seen if s.proof} == {cred.dpop_key.thumbprint}
        assert api.statuses == [401, 200, 200, 401, 200]
        assert [s.proof.htm for s in api.seen if s.proof] == ["GET", "PUT", "GET", "GET"]
        assert scheme_and_token(api.seen[3]) != scheme_and_token(api.seen[4])
        assert len(sent.sent) == 2

    asyncio.run(main())


def test_an_async_client_with_a_sync_dpop_credential(
    tenant: Emulator, rsa_cert: Certificate, api: DPoPResource, sent: TokenRequests
) -> None:
    api.nonce = "n-1"
    cred = credential(tenant, rsa_cert, sent)

    async def main() -> list[int]:
        async with httpx.AsyncClient(auth=BearerAuth(cred, SCOPE)) as client:
            return [(await client.get(api.url)).status_code for _ in range(2)]

    assert asyncio.run(main()) == [200, 200]
    assert api.statuses == [401, 200, 200]
    cred.close()


def test_a_plain_credential_sends_bearer_tokens_as_before(
    tenant: Emulator, rsa_cert: Certificate, api: DPoPResource, sent: TokenRequests
) -> None:
    api.nonce = "unused"  # only DPoP requests are asked for one
    with (
        credential(tenant, rsa_cert, sent, dpop=False) as cred,
        httpx.Client(auth=BearerAuth(cred, SCOPE)) as client,
    ):
        response = client.get(api.url)
        assert response.status_code == 200
        assert response.request.headers["Authorization"].startswith("Bearer ")
        assert "DPoP" not in response.request.headers
    assert api.statuses == [200]
