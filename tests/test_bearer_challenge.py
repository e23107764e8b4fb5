"""Claims challenges: the ``WWW-Authenticate`` parser, and ``BearerAuth`` recovering from a
CAE ``insufficient_claims`` challenge with exactly one extra token request and one retried
call (sync and async), never looping, and treating anything malformed as a plain 401.

The API is a small protected resource on loopback (``_cae_helpers.ProtectedResource``) that
verifies the emulator's tokens and challenges the ones issued before a revocation.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from _cae_helpers import (
    ProtectedResource,
    TokenRequests,
    claims_challenge,
    encode_claims,
    nbf_claims,
)

from certauth import AsyncCertificateCredential, BearerAuth, CertificateCredential
from certauth.cae import Challenge, claims_from_challenge, parse_www_authenticate
from certauth.certificates import Certificate
from certauth.emulator import Emulator
from certauth.emulator.tokens import ISSUED_AT_BACKDATE
from certauth.errors import InvalidArgumentError

CLIENT = "11111111-2222-3333-4444-555555555555"
AUDIENCE = "api://billing"
SCOPE = f"{AUDIENCE}/.default"
CP1 = {"xms_cc": {"values": ["cp1"]}}
#: Microsoft's example ("Claims challenges, claims requests and client capabilities").
DOC_EXAMPLE = (
    'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/'
    'authorize", error="insufficient_claims", claims="eyJhY2Nlc3NfdG9rZW4iOnsiYWNycyI6eyJlc3Nl'
    'bnRpYWwiOnRydWUsInZhbHVlIjoiY3AxIn19fQ=="'
)

# -- the parser ---------------------------------------------------------------------------------


def test_the_documented_claims_challenge_parses() -> None:
    [challenge] = parse_www_authenticate([DOC_EXAMPLE])
    assert challenge.scheme == "bearer"
    assert challenge.params["realm"] == ""
    assert challenge.params["error"] == "insufficient_claims"
    assert claims_from_challenge([DOC_EXAMPLE]) == (
        '{"access_token":{"acrs":{"essential":true,"value":"cp1"}}}'
    )


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        # RFC 9110 section 11.6.1's example: several challenges, an escaped quote, a token.
        (
            ['Newauth realm="apps", type=1, title="Login to \\"apps\\"", Basic realm="simple"'],
            [
                Challenge("newauth", {"realm": "apps", "type": "1", "title": 'Login to "apps"'}),
                Challenge("basic", {"realm": "simple"}),
            ],
        ),
        # Several field lines, a token68, a bare scheme, empty list elements, odd spacing.
        (
            ["Negotiate abc+/==", ' , BEARER  Error = "x, y" ,, ', "PoP"],
            [
                Challenge("negotiate", {}, "abc+/=="),
                Challenge("bearer", {"error": "x, y"}),
                Challenge("pop", {}),
            ],
        ),
        ([""], []),
    ],
)
def test_challenges_parse(lines: list[str], expected: list[Challenge]) -> None:
    assert parse_www_authenticate(lines) == expected


@pytest.mark.parametrize(
    "line",
    [
        'Bearer realm="unterminated',
        'Bearer error="a", error="b"',  # a parameter twice in one challenge
        'Bearer error="a" trailing',
        '="no scheme"',
        'Bearer "just a string"',
        'Bearer error="a\x00"',
        "Basic abc==, realm=x",  # a parameter after a token68
        "Bearer realm=x=y",
        'Bearer Basic realm="x"',  # two schemes without a comma
    ],
)
def test_malformed_challenges_raise_and_read_as_no_claims(line: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - any ValueError: the caller treats it alike
        parse_www_authenticate([line])
    assert claims_from_challenge([line, DOC_EXAMPLE]) is None


@pytest.mark.parametrize(
    ("value", "claims"),
    [
        (encode_claims({"a": 1}), '{"a": 1}'),
        (encode_claims({"a": "~~~?"}, urlsafe=True, padding=False), '{"a": "~~~?"}'),
        (encode_claims({"ab": 1}, padding=False), '{"ab": 1}'),
        ("", None),  # no claims
        ("!!!!", None),  # not base64
        ("e3!!!!0", None),  # base64 with stray characters (not skipped)
        ("e30", "{}"),
        ("eyJh", None),  # base64, but not JSON
        (encode_claims([1]), None),  # type: ignore[arg-type]  # JSON, but not an object
        ("/w==", None),  # not UTF-8
        ("eyJhIjox" + "=" * 5 + "fQ", None),  # padding inside
        ("a", None),  # a length base64 cannot have
    ],
)
def test_claims_are_base64_of_a_json_object_padded_or_not(value: str, claims: str | None) -> None:
    header = f'Bearer error="insufficient_claims", claims="{value}"'
    assert claims_from_challenge([header]) == claims


def test_only_a_bearer_insufficient_claims_challenge_counts() -> None:
    encoded = encode_claims({"a": 1})
    assert claims_from_challenge([f'Bearer error="invalid_token", claims="{encoded}"']) is None
    assert claims_from_challenge([f'PoP error="insufficient_claims", claims="{encoded}"']) is None
    assert claims_from_challenge([]) is None
    second_line = ['Basic realm="x"', f'bearer ERROR=insufficient_claims, Claims="{encoded}"']
    assert claims_from_challenge(second_line) == '{"a": 1}'


# -- BearerAuth against a protected resource ----------------------------------------------------


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


@pytest.fixture
def sent() -> TokenRequests:
    return TokenRequests()


def credential(tenant: Emulator, cert: Certificate, sent: TokenRequests) -> CertificateCredential:
    return CertificateCredential(
        tenant.tenant_id,
        CLIENT,
        certificate=cert,
        authority=tenant.authority_host,
        client=sent.client(),
    )


def async_credential(
    tenant: Emulator, cert: Certificate, sent: TokenRequests
) -> AsyncCertificateCredential:
    return AsyncCertificateCredential(
        tenant.tenant_id,
        CLIENT,
        certificate=cert,
        authority=tenant.authority_host,
        client=sent.async_client(),
    )


def issued(authorization: str | None) -> int:
    assert authorization is not None
    claims = jwt.decode(authorization.split()[1], options={"verify_signature": False})
    return int(claims["iat"]) + ISSUED_AT_BACKDATE  # when the emulator issued it


def test_bearer_auth_satisfies_a_cae_challenge_with_one_token_request_and_one_retry(
    tenant: Emulator, rsa_cert: Certificate, api: ProtectedResource, sent: TokenRequests
) -> None:
    with (
        credential(tenant, rsa_cert, sent) as cred,
        httpx.Client(auth=BearerAuth(cred, SCOPE)) as client,
    ):
        assert client.get(api.url).status_code == 200
        revoked = api.revoke()
        assert client.get(api.url).status_code == 200
        assert len(sent.sent) == 2  # exactly one extra token request...
        assert len(api.authorizations) == 3  # ...and one retried call
        # It carried the challenge's claims, as a CAE-capable client.
        nbf = nbf_claims(revoked)["access_token"]
        assert sent.claims == [None, {"access_token": {**nbf, **CP1}}]
        assert issued(api.authorizations[-1]) >= revoked
        # The next call sends the token the challenge got, as azure-core's policy does: a
        # fresh plain token would not carry the claims the API asked for.
        assert client.get(api.url).status_code == 200
        assert len(sent.sent) == 2
        assert len(api.authorizations) == 4
        assert api.authorizations[3] == api.authorizations[2] != api.authorizations[1]


def test_a_second_challenge_is_returned_not_looped(
    tenant: Emulator, rsa_cert: Certificate, api: ProtectedResource, sent: TokenRequests
) -> None:
    api.refuse_all = True
    with (
        credential(tenant, rsa_cert, sent) as cred,
        httpx.Client(auth=BearerAuth(cred, SCOPE)) as client,
    ):
        response = client.get(api.url)
    assert response.status_code == 401
    assert claims_from_challenge(response.headers.get_list("www-authenticate")) is not None
    assert len(api.authorizations) == 2
    assert len(sent.sent) == 2


@pytest.mark.parametrize(
    "header",
    [
        'Bearer error="invalid_token"',  # an ordinary 401
        None,  # no challenge at all
        'Bearer error="insufficient_claims", claims="%%%"',  # claims that are not base64
        'Bearer error="insufficient_claims"',  # no claims
        'Bearer error="insufficient_claims", claims="e30=" junk',  # does not parse
        'Bearer realm="unterminated, error="insufficient_claims", claims="e30="',
    ],
)
def test_other_401s_and_malformed_challenges_are_a_plain_401(
    tenant: Emulator,
    rsa_cert: Certificate,
    api: ProtectedResource,
    sent: TokenRequests,
    header: str | None,
) -> None:
    api.challenge = lambda: header
    with (
        credential(tenant, rsa_cert, sent) as cred,
        httpx.Client(auth=BearerAuth(cred, SCOPE)) as client,
    ):
        cred.get_token(SCOPE)
        api.revoke()
        assert client.get(api.url).status_code == 200
    # As before: the token is dropped and a new plain one (no claims) tried once.
    assert sent.claims == [None, None]
    assert len(api.authorizations) == 2


def test_bearer_auth_with_enable_cae_asks_for_cae_tokens_throughout(
    tenant: Emulator, rsa_cert: Certificate, api: ProtectedResource, sent: TokenRequests
) -> None:
    with (
        credential(tenant, rsa_cert, sent) as cred,
        httpx.Client(auth=BearerAuth(cred, SCOPE, enable_cae=True)) as client,
    ):
        assert client.get(api.url).status_code == 200
        assert client.get(api.url).status_code == 200  # the cached CAE token
        revoked = api.revoke()
        assert client.get(api.url).status_code == 200
        assert client.get(api.url).status_code == 200
        nbf = nbf_claims(revoked)["access_token"]
        assert sent.claims == [{"access_token": CP1}, {"access_token": {**nbf, **CP1}}]
        # The challenge's token serves the call after the recovery too.
        assert api.authorizations[-1] == api.authorizations[-2] != api.authorizations[-3]
        # The revoked CAE token was dropped from the credential's cache.
        assert api.authorizations[-3] != f"Bearer {cred.get_token(SCOPE, enable_cae=True).token}"
    with pytest.raises(InvalidArgumentError, match="enable_cae"):
        BearerAuth(cred, SCOPE, enable_cae="yes")  # type: ignore[arg-type]


def test_async_bearer_auth_recovers_once_and_never_loops(
    tenant: Emulator, rsa_cert: Certificate, api: ProtectedResource, sent: TokenRequests
) -> None:
    async def main() -> None:
        async with (
            async_credential(tenant, rsa_cert, sent) as cred,
            httpx.AsyncClient(auth=BearerAuth(cred, SCOPE)) as client,
        ):
            assert (await client.get(api.url)).status_code == 200
            revoked = api.revoke()
            assert (await client.get(api.url)).status_code == 200
            assert len(sent.sent) == 2
            assert len(api.authorizations) == 3
            nbf = nbf_claims(revoked)["access_token"]
            assert sent.claims[-1] == {"access_token": {**nbf, **CP1}}
            api.refuse_all = True
            assert (await client.get(api.url)).status_code == 401
            assert len(api.authorizations) == 5
            api.challenge = lambda: "Bearer realm="  # malformed: a plain 401
            assert (await client.get(api.url)).status_code == 401
            assert sent.claims[-1] is None

    asyncio.run(main())


def test_async_client_with_a_sync_credential_satisfies_a_challenge(
    tenant: Emulator, rsa_cert: Certificate, api: ProtectedResource, sent: TokenRequests
) -> None:
    cred = credential(tenant, rsa_cert, sent)

    async def main() -> int:
        async with httpx.AsyncClient(auth=BearerAuth(cred, SCOPE)) as client:
            await client.get(api.url)
            api.revoke()
            return (await client.get(api.url)).status_code

    assert asyncio.run(main()) == 200
    assert len(sent.sent) == 2
    assert sent.claims[-1] is not None
    cred.close()


def test_a_challenge_on_a_request_with_a_body_resends_the_body(
    tenant: Emulator, rsa_cert: Certificate, sent: TokenRequests
) -> None:
    bodies: list[bytes] = []
    challenge: dict[str, Any] = {"access_token": {"nbf": {"essential": True, "value": "1"}}}

    def app(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        if len(bodies) == 1:
            return httpx.Response(401, headers={"WWW-Authenticate": claims_challenge(challenge)})
        return httpx.Response(200)

    with (
        credential(tenant, rsa_cert, sent) as cred,
        httpx.Client(auth=BearerAuth(cred, SCOPE), transport=httpx.MockTransport(app)) as client,
    ):
        assert client.post("https://api.example/x", json={"n": 1}).status_code == 200
    assert len(bodies) == 2
    assert json.loads(bodies[0]) == json.loads(bodies[1]) == {"n": 1}
    assert sent.claims[-1] == {"access_token": {**challenge["access_token"], **CP1}}


def test_a_challenge_token_near_its_expiry_is_not_kept(rsa_cert: Certificate) -> None:
    # A CAE token living 200 s is within BearerAuth's five-minute margin as soon as it is
    # issued: the next request asks the credential again instead of sending it.
    challenge: dict[str, Any] = {"access_token": {"nbf": {"essential": True, "value": "1"}}}
    answers = iter([401, 200, 200])
    sent_tokens: list[str] = []

    def app(request: httpx.Request) -> httpx.Response:
        sent_tokens.append(request.headers["Authorization"])
        status = next(answers)
        headers = {"WWW-Authenticate": claims_challenge(challenge)} if status == 401 else {}
        return httpx.Response(status, headers=headers)

    records = TokenRequests()
    with Emulator(strict=True, cae_token_lifetime=200) as short:
        short.register(CLIENT, rsa_cert)
        with (
            credential(short, rsa_cert, records) as cred,
            httpx.Client(auth=BearerAuth(cred, SCOPE), transport=httpx.MockTransport(app)) as api,
        ):
            assert api.get("https://api.example/x").status_code == 200
            assert api.get("https://api.example/x").status_code == 200
    assert sent_tokens[2] != sent_tokens[1]
    assert records.claims == [None, {"access_token": {**challenge["access_token"], **CP1}}, None]
