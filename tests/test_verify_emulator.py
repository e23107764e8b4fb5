"""certauth.verify end to end against the emulator's real HTTP endpoints: tokens it issues
verify, forgeries and mismatches fail with the right check, key rotation while a verifier runs,
the refetch rate limit, shared fetches; and PyJWT's own ``PyJWKClient`` path agrees with every
verdict.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from test_verify import flip_signature, forge_hmac, forge_none, sign, tamper_claims

from certauth.assertion import build_client_assertion
from certauth.certificates import Certificate, generate_certificate
from certauth.credential import CertificateCredential
from certauth.emulator import Emulator
from certauth.errors import TokenValidationError, TransportError
from certauth.protocol import build_token_request
from certauth.verify import AsyncTokenVerifier, KeySet, TokenVerifier, verify_access_token

CLIENT_ID = "9d0a2d8e-5b1f-4c33-9a57-6f1f3f0c0b11"
RESOURCE = "api://billing"
ROLE = "Invoices.Read"
OTHER_TENANT = "22222222-3333-4444-5555-666666666666"


def token_for(tenant: Emulator, cert: Certificate, *, tenant_id: str | None = None) -> str:
    """An access token the emulator issues to CLIENT_ID for RESOURCE."""
    credential = CertificateCredential(
        tenant_id or tenant.tenant_id,
        CLIENT_ID,
        certificate=cert,
        token_endpoint=(
            tenant.token_endpoint
            if tenant_id is None
            else f"{tenant.authority_host}/{tenant_id}/oauth2/v2.0/token"
        ),
    )
    with credential:
        return credential.get_token(f"{RESOURCE}/.default").token


class CountingClient(httpx.Client):
    """An httpx.Client that counts GETs per path kind (discovery / keys)."""

    def __init__(self) -> None:
        self.hits = {"discovery": 0, "keys": 0}
        self._lock = threading.Lock()
        super().__init__(timeout=10, event_hooks={"request": [self._count]})

    def _count(self, request: httpx.Request) -> None:
        kind = "keys" if request.url.path.endswith("/keys") else "discovery"
        with self._lock:
            self.hits[kind] += 1


class Clock:
    def __init__(self) -> None:
        self.value = 1000.0

    def __call__(self) -> float:
        return self.value


@pytest.fixture(scope="module")
def tenant(rsa_cert: Certificate) -> Iterator[Emulator]:
    """One emulator for the read-only tests; CLIENT_ID holds ROLE (also in OTHER_TENANT)."""
    with Emulator() as emulator:
        emulator.register(CLIENT_ID, rsa_cert, roles=[ROLE])
        emulator.add_tenant(OTHER_TENANT)
        emulator.register(CLIENT_ID, rsa_cert, roles=[ROLE], tenant=OTHER_TENANT)
        yield emulator


@pytest.fixture(scope="module")
def token(tenant: Emulator, rsa_cert: Certificate) -> str:
    return token_for(tenant, rsa_cert)


@pytest.fixture
def fresh(rsa_cert: Certificate) -> Iterator[Emulator]:
    """A private emulator for tests that rotate keys."""
    with Emulator() as emulator:
        emulator.register(CLIENT_ID, rsa_cert, roles=[ROLE])
        yield emulator


@pytest.fixture(scope="module")
def attacker_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


# -- tokens the emulator issues verify ------------------------------------------------------------


def test_emulator_token_verifies_through_discovery(tenant: Emulator, token: str) -> None:
    with TokenVerifier(issuer=tenant.issuer, audience=RESOURCE, required_roles=ROLE) as verifier:
        claims = verifier.verify(token)
        assert claims["roles"] == [ROLE]
        assert claims["tid"] == tenant.tenant_id
        assert verifier.jwks_uri == tenant.jwks_uri


def test_function_and_async_forms(tenant: Emulator, token: str) -> None:
    assert verify_access_token(token, issuer=tenant.issuer, audience=[CLIENT_ID, RESOURCE])

    async def main() -> dict[str, Any]:
        async with AsyncTokenVerifier(issuer=tenant.issuer, audience=RESOURCE) as verifier:
            return await verifier.verify(token, required_roles=[ROLE])

    assert asyncio.run(main())["azp"] == CLIENT_ID


def test_jwks_uri_only_uses_the_keys_issuer(
    tenant: Emulator, token: str, foreign_token: str
) -> None:
    verifier = TokenVerifier(jwks_uri=tenant.jwks_uri, audience=RESOURCE)
    assert verifier.verify(token)
    # The tenant's key set names its own issuer: a token from another tenant signed with the
    # same keys is refused even though no issuer was given.
    with pytest.raises(TokenValidationError) as excinfo:
        verifier.verify(foreign_token)
    assert excinfo.value.check == "issuer"


def test_multi_tenant_template_via_common_discovery(
    tenant: Emulator, token: str, foreign_token: str
) -> None:
    template = f"{tenant.authority_host}/{{tenantid}}/v2.0"
    verifier = TokenVerifier(issuer=template, audience=RESOURCE)
    foreign = foreign_token
    assert verifier.verify(token)["tid"] == tenant.tenant_id
    assert verifier.verify(foreign)["tid"] == OTHER_TENANT
    assert verifier.jwks_uri == f"{tenant.authority_host}/common/discovery/v2.0/keys"
    # A single-tenant verifier refuses the other tenant's token.
    single = TokenVerifier(issuer=tenant.issuer, audience=RESOURCE)
    with pytest.raises(TokenValidationError) as excinfo:
        single.verify(foreign)
    assert excinfo.value.check == "issuer"


def test_https_emulator_needs_its_ca(rsa_cert: Certificate) -> None:
    with Emulator(tls=True) as secure:
        secure.register(CLIENT_ID, rsa_cert, roles=[ROLE])
        assert secure.ca_file is not None
        credential = CertificateCredential(
            secure.tenant_id,
            CLIENT_ID,
            certificate=rsa_cert,
            token_endpoint=secure.token_endpoint,
            verify=secure.ca_file,
        )
        with credential:
            access = credential.get_token(f"{RESOURCE}/.default").token
        verifier = TokenVerifier(issuer=secure.issuer, audience=RESOURCE, verify=secure.ca_file)
        assert verifier.verify(access)
        untrusted = TokenVerifier(issuer=secure.issuer, audience=RESOURCE)
        with pytest.raises(TransportError, match="TLS") as excinfo:
            untrusted.verify(access)
        assert excinfo.value.exit_code == 5


# -- and everything else fails, with the right check --------------------------------------------


def claims_of(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


@pytest.fixture(scope="module")
def foreign_token(tenant: Emulator, rsa_cert: Certificate) -> str:
    """A genuine token of OTHER_TENANT (same emulator keys, other iss/tid)."""
    return token_for(tenant, rsa_cert, tenant_id=OTHER_TENANT)


def refusals(
    tenant: Emulator, token: str, foreign: str, attacker_key: Any
) -> list[tuple[str, str, str, str]]:
    """(name, token, expected check, audience) for every refusal case against ``tenant``."""
    kid = tenant.signing_kid
    claims = claims_of(token)
    public_key = KeySet.from_jwks(tenant.jwks()).keys[0].public_key
    return [
        ("tampered", tamper_claims(token, roles=["Admin"]), "signature", RESOURCE),
        ("bit-flipped", flip_signature(token), "signature", RESOURCE),
        ("attacker-same-kid", sign(claims, attacker_key, kid=kid), "signature", RESOURCE),
        ("unknown-kid", sign(claims, attacker_key, kid="attacker"), "kid", RESOURCE),
        ("alg-none", forge_none(claims, kid=kid), "algorithm", RESOURCE),
        ("hs256-public-key", forge_hmac(claims, public_key, kid=kid), "algorithm", RESOURCE),
        ("wrong-audience", token, "audience", "api://payroll"),
        ("other-tenant", foreign, "issuer", RESOURCE),
    ]


@pytest.mark.parametrize(
    "case",
    [
        "tampered",
        "bit-flipped",
        "attacker-same-kid",
        "unknown-kid",
        "alg-none",
        "hs256-public-key",
        "wrong-audience",
        "other-tenant",
    ],
)
def test_refused_tokens(
    tenant: Emulator, token: str, foreign_token: str, attacker_key: Any, case: str
) -> None:
    cases = {
        name: (bad, check, aud)
        for name, bad, check, aud in refusals(tenant, token, foreign_token, attacker_key)
    }
    bad, check, audience = cases[case]
    with pytest.raises(TokenValidationError) as excinfo:
        verify_access_token(bad, issuer=tenant.issuer, audience=audience)
    assert excinfo.value.check == check, str(excinfo.value)
    assert token.split(".")[2][:16] not in str(excinfo.value)


def test_wrong_issuer(tenant: Emulator, token: str) -> None:
    other = f"{tenant.authority_host}/{OTHER_TENANT}/v2.0"
    # The other tenant's discovery document points at the same (shared) keys; iss differs.
    with pytest.raises(TokenValidationError) as excinfo:
        verify_access_token(token, issuer=other, audience=RESOURCE)
    assert excinfo.value.check == "issuer"
    assert tenant.tenant_id in str(excinfo.value)


def test_expired_token(tenant: Emulator, rsa_cert: Certificate) -> None:
    now = time.time()
    access = token_for(tenant, rsa_cert)
    exp = claims_of(access)["exp"]
    verifier = TokenVerifier(issuer=tenant.issuer, audience=RESOURCE)
    assert verifier.verify(access, now=exp + 59)  # inside the default leeway
    with pytest.raises(TokenValidationError) as excinfo:
        verifier.verify(access, now=exp + 61)
    assert excinfo.value.check == "expired"
    with pytest.raises(TokenValidationError) as excinfo:
        verifier.verify(access, now=now - 3600)
    assert excinfo.value.check == "not_yet_valid"


def test_missing_role(tenant: Emulator, token: str) -> None:
    with pytest.raises(TokenValidationError) as excinfo:
        verify_access_token(token, issuer=tenant.issuer, audience=RESOURCE, required_roles="Admin")
    assert excinfo.value.check == "role"


# -- PyJWT's PyJWKClient path agrees -----------------------------------------------------------


def pyjwt_accepts(token: str, *, jwks_uri: str, issuer: str, audience: str) -> bool:
    """PyJWT's documented path: PyJWKClient picks the key by kid, jwt.decode checks the rest."""
    try:
        key = jwt.PyJWKClient(jwks_uri, cache_keys=False).get_signing_key_from_jwt(token)
        jwt.decode(
            token,
            key.key,
            algorithms=["RS256", "PS256", "ES256"],
            audience=audience,
            issuer=issuer,
            leeway=60,
            options={"require": ["exp", "iss", "aud"]},
        )
    except jwt.exceptions.PyJWTError:
        return False
    return True


def certauth_accepts(token: str, *, issuer: str, audience: str) -> bool:
    try:
        verify_access_token(token, issuer=issuer, audience=audience)
    except TokenValidationError:
        return False
    return True


def test_pyjwt_agrees_on_every_verdict(
    tenant: Emulator, token: str, foreign_token: str, attacker_key: Any
) -> None:
    cases: list[tuple[str, str, str | None, str]] = [("valid", token, None, RESOURCE)]
    cases += refusals(tenant, token, foreign_token, attacker_key)
    verdicts = {}
    for name, candidate, check, audience in cases:
        ours = certauth_accepts(candidate, issuer=tenant.issuer, audience=audience)
        theirs = pyjwt_accepts(
            candidate, jwks_uri=tenant.jwks_uri, issuer=tenant.issuer, audience=audience
        )
        verdicts[name] = (ours, theirs)
        assert ours == (check is None), name
    assert all(ours == theirs for ours, theirs in verdicts.values()), verdicts


def test_pyjwt_agrees_on_an_expired_token() -> None:
    # An emulator whose clock runs two hours behind issues a token that expired an hour ago;
    # the assertion is signed at the emulator's time so that it accepts it.
    issued = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2)
    cert = generate_certificate("CN=verify-past", days=2, now=issued - dt.timedelta(hours=1))
    with Emulator(clock=lambda: time.time() - 7200, token_lifetime=3600) as past:
        past.register(CLIENT_ID, cert, roles=[ROLE])
        assertion = build_client_assertion(
            cert, client_id=CLIENT_ID, audience=past.token_endpoint, now=past.clock.time()
        )
        request = build_token_request(
            past.token_endpoint, CLIENT_ID, [f"{RESOURCE}/.default"], assertion=assertion
        )
        answer = httpx.post(request.url, content=request.body, headers=dict(request.headers))
        assert answer.status_code == 200, answer.text
        stale = answer.json()["access_token"]
        with pytest.raises(TokenValidationError) as excinfo:
            verify_access_token(stale, issuer=past.issuer, audience=RESOURCE)
        assert excinfo.value.check == "expired"
        assert not pyjwt_accepts(
            stale, jwks_uri=past.jwks_uri, issuer=past.issuer, audience=RESOURCE
        )


# -- key rotation, rate limit, single flight -----------------------------------------------------


def test_key_rotation_while_a_verifier_runs(fresh: Emulator, rsa_cert: Certificate) -> None:
    client = CountingClient()
    clock = Clock()
    verifier = TokenVerifier(issuer=fresh.issuer, audience=RESOURCE, client=client, clock=clock)
    before = token_for(fresh, rsa_cert)
    assert verifier.verify(before)
    assert client.hits == {"discovery": 1, "keys": 1}

    new_kid = fresh.rotate_keys()
    after = token_for(fresh, rsa_cert)
    assert jwt.get_unverified_header(after)["kid"] == new_kid
    # Within the refetch interval the new kid is not fetched yet...
    with pytest.raises(TokenValidationError) as excinfo:
        verifier.verify(after)
    assert excinfo.value.check == "kid"
    assert client.hits["keys"] == 1
    # ...after it, one refetch (JWKS only) picks the new key up; the old one still verifies.
    clock.value += 31
    assert verifier.verify(after)
    assert verifier.verify(before)
    assert client.hits == {"discovery": 1, "keys": 2}


def test_refetch_rate_limit_against_a_flood_of_forged_kids(
    fresh: Emulator, rsa_cert: Certificate, attacker_key: Any
) -> None:
    client = CountingClient()
    clock = Clock()
    verifier = TokenVerifier(
        issuer=fresh.issuer, audience=RESOURCE, client=client, clock=clock, refetch_interval=30
    )
    good = token_for(fresh, rsa_cert)
    assert verifier.verify(good)
    claims = claims_of(good)
    forged = [sign(claims, attacker_key, kid=f"forged-{i}") for i in range(200)]
    for candidate in forged:
        with pytest.raises(TokenValidationError, match="refetched at most every 30 s") as caught:
            verifier.verify(candidate)
        assert caught.value.check == "kid"
    assert client.hits["keys"] == 1
    for _ in range(3):
        clock.value += 30
        for candidate in forged[:50]:
            with pytest.raises(TokenValidationError) as caught:
                verifier.verify(candidate)
            assert caught.value.check == "kid"
    assert client.hits["keys"] == 4  # one per elapsed interval, not one per forged token
    assert verifier.verify(good)


def test_concurrent_threads_share_one_fetch(fresh: Emulator, rsa_cert: Certificate) -> None:
    client = CountingClient()
    verifier = TokenVerifier(issuer=fresh.issuer, audience=RESOURCE, client=client)
    access = token_for(fresh, rsa_cert)
    barrier = threading.Barrier(24)
    results: list[object] = []

    def worker() -> None:
        barrier.wait()
        try:
            results.append(verifier.verify(access)["azp"])
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            results.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [CLIENT_ID] * 24
    assert client.hits == {"discovery": 1, "keys": 1}


def test_concurrent_tasks_share_one_fetch(fresh: Emulator, rsa_cert: Certificate) -> None:
    access = token_for(fresh, rsa_cert)
    hits = {"n": 0}

    async def count(request: httpx.Request) -> None:
        hits["n"] += 1

    async def main() -> None:
        client = httpx.AsyncClient(timeout=10, event_hooks={"request": [count]})
        async with client:
            verifier = AsyncTokenVerifier(issuer=fresh.issuer, audience=RESOURCE, client=client)
            results = await asyncio.gather(*(verifier.verify(access) for _ in range(24)))
        assert {r["azp"] for r in results} == {CLIENT_ID}

    asyncio.run(main())
    assert hits["n"] == 2  # one discovery document, one JWKS
