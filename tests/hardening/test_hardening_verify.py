"""The verifier against odd but signed input: a JWKS that lists one ``kid`` twice, and time
claims no date can hold.

A ``kid`` is a hint, not a unique name (RFC 7517 section 4.5): when a key set lists it twice,
each matching key is tried, so a valid token signed by the second is accepted (it used to be
refused). ``exp``/``nbf`` of ``1e308`` or ``10**400`` are a :class:`TokenValidationError`
(exit 6), not an ``OverflowError`` (exit 1); ``certauth decode`` shows them without failing.
Real RSA signatures throughout; the HTTP cases fetch the JWKS from a loopback server.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from _cert_helpers import run_cli
from _hostile_server import answer, serving
from cryptography.hazmat.primitives.asymmetric import rsa
from test_verify import APP_ID, ISSUER, NOW, claims_for, jwk_for, sign

from certauth.errors import TokenValidationError
from certauth.verify import AsyncTokenVerifier, KeySet, TokenVerifier, verify_access_token
from certauth.verify import verifier as verifier_module

Capsys = pytest.CaptureFixture[str]


@pytest.fixture(scope="module")
def keys() -> list[rsa.RSAPrivateKey]:
    return [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(3)]


@pytest.fixture
def twice(keys: list[rsa.RSAPrivateKey]) -> dict[str, Any]:
    """A JWKS listing kid 'k1' twice: two different keys (a rotation gone wrong)."""
    return {"keys": [jwk_for(keys[0], "k1", use="sig"), jwk_for(keys[1], "k1", use="sig")]}


@pytest.fixture(autouse=True)
def _fresh_key_cache() -> Iterator[None]:
    verifier_module._shared.clear()
    yield
    verifier_module._shared.clear()


# -- a kid listed twice ---------------------------------------------------------------------------


@pytest.mark.parametrize("signer", [0, 1], ids=["first key", "second key"])
def test_a_token_signed_by_either_key_of_a_doubled_kid_verifies(
    keys: list[rsa.RSAPrivateKey], twice: dict[str, Any], signer: int
) -> None:
    token = sign(claims_for(), keys[signer])
    claims = verify_access_token(token, jwks=twice, issuer=ISSUER, audience=APP_ID, now=NOW)
    assert claims["aud"] == APP_ID
    keyset = KeySet.from_jwks(twice)
    assert len(keyset) == 2
    with TokenVerifier(jwks=keyset, issuer=ISSUER, audience=APP_ID) as verifier:
        assert verifier.verify(token, now=NOW)["tid"] == claims["tid"]


def test_a_token_signed_by_neither_key_names_both(
    keys: list[rsa.RSAPrivateKey], twice: dict[str, Any]
) -> None:
    token = sign(claims_for(), keys[2])
    with pytest.raises(TokenValidationError) as excinfo:
        verify_access_token(token, jwks=twice, issuer=ISSUER, audience=APP_ID, now=NOW)
    assert excinfo.value.check == "signature"
    assert "any of the 2 keys kid='k1'" in str(excinfo.value)


def test_only_the_signing_keys_issuer_counts(keys: list[rsa.RSAPrivateKey]) -> None:
    # Entra v2 key sets name the issuer each key signs for; with the kid doubled, the key that
    # verifies the signature decides the issuer, never the other one.
    other = "https://login.microsoftonline.com/11111111-2222-3333-4444-555555555555/v2.0"
    jwks = {
        "keys": [
            jwk_for(keys[0], "k1", issuer=other),
            jwk_for(keys[1], "k1", issuer=ISSUER),
        ]
    }
    token = sign(claims_for(), keys[1])  # iss = ISSUER
    assert verify_access_token(token, jwks=jwks, audience=APP_ID, now=NOW)
    forwarded = sign(claims_for(iss=other), keys[1])  # signed by ISSUER's key, claims the other
    with pytest.raises(TokenValidationError) as excinfo:
        verify_access_token(forwarded, jwks=jwks, audience=APP_ID, now=NOW)
    assert excinfo.value.check == "issuer"


def test_a_doubled_kid_over_http_sync_async_and_cli(
    capsys: Capsys, keys: list[rsa.RSAPrivateKey], twice: dict[str, Any]
) -> None:
    now = int(time.time())
    token = sign(claims_for(iat=now - 60, nbf=now - 60, exp=now + 3600), keys[1])
    with serving(answer(200, json.dumps(twice).encode())) as server:
        jwks_uri = f"{server.url}/keys"
        with TokenVerifier(jwks_uri=jwks_uri, issuer=ISSUER, audience=APP_ID) as verifier:
            assert verifier.verify(token)["aud"] == APP_ID

        async def main() -> dict[str, Any]:
            async with AsyncTokenVerifier(
                jwks_uri=jwks_uri, issuer=ISSUER, audience=APP_ID
            ) as verifier:
                return await verifier.verify(token)

        assert asyncio.run(main())["aud"] == APP_ID
        result = run_cli(
            capsys, "verify", token, "--jwks-uri", jwks_uri, "--issuer", ISSUER,
            "--audience", APP_ID,
        )  # fmt: skip
    assert result.code == 0, result.err
    assert result.out.startswith("VALID")


# -- time claims too large for a float or a date --------------------------------------------------

HUGE = {
    "exp 10**400": {"exp": 10**400},
    "exp 1e308": {"exp": 1e308},
    "exp -1e308": {"exp": -1e308},
    "exp Infinity": {"exp": float("inf")},
    "exp NaN": {"exp": float("nan")},
    "exp year 10000": {"exp": 253_402_300_800},
    "nbf 10**400": {"nbf": 10**400},
    "nbf 1e308": {"nbf": 1e308},
    "nbf -(10**400)": {"nbf": -(10**400)},
}


@pytest.mark.parametrize("claims", list(HUGE.values()), ids=list(HUGE))
def test_huge_time_claims_are_a_validation_error(
    keys: list[rsa.RSAPrivateKey], claims: dict[str, Any]
) -> None:
    token = sign(claims_for(**claims), keys[0])
    jwks = {"keys": [jwk_for(keys[0], "k1")]}
    with pytest.raises(TokenValidationError) as excinfo:
        verify_access_token(token, jwks=jwks, issuer=ISSUER, audience=APP_ID, now=NOW)
    assert excinfo.value.check == "format"
    assert "between years 1 and 9999" in str(excinfo.value)
    assert len(str(excinfo.value)) < 300  # no 400-digit number in the message


def test_the_edges_of_the_date_range_still_verify(keys: list[rsa.RSAPrivateKey]) -> None:
    jwks = {"keys": [jwk_for(keys[0], "k1")]}
    far = sign(claims_for(exp=253_402_300_799), keys[0])  # 9999-12-31T23:59:59Z
    assert verify_access_token(far, jwks=jwks, issuer=ISSUER, audience=APP_ID, now=NOW)
    ancient = sign(claims_for(exp=-62_135_596_800), keys[0])  # 0001-01-01: long expired
    with pytest.raises(TokenValidationError) as excinfo:
        verify_access_token(ancient, jwks=jwks, issuer=ISSUER, audience=APP_ID, now=NOW)
    assert excinfo.value.check == "expired"


@pytest.mark.parametrize("claims", list(HUGE.values()), ids=list(HUGE))
def test_certauth_verify_exits_6_and_decode_shows_them(
    capsys: Capsys, keys: list[rsa.RSAPrivateKey], claims: dict[str, Any]
) -> None:
    now = int(time.time())
    fields = {"iat": now - 60, "nbf": now - 60, "exp": now + 3600, **claims}
    token = sign(claims_for(**fields), keys[0])
    jwks = json.dumps({"keys": [jwk_for(keys[0], "k1")]}).encode()
    with serving(answer(200, jwks)) as server:
        verified = run_cli(
            capsys, "verify", token, "--jwks-uri", f"{server.url}/keys", "--audience", APP_ID
        )
    assert verified.code == 6, verified.err
    assert "between years 1 and 9999" in verified.err
    assert "Traceback" not in verified.err
    decoded = run_cli(capsys, "decode", token)
    assert decoded.code == 0, decoded.err
    (name,) = claims
    assert f"{name}  not a date: outside years 1-9999" in decoded.out


def test_decode_shows_huge_iat_too(capsys: Capsys, keys: list[rsa.RSAPrivateKey]) -> None:
    token = sign({"iat": 10**400, "exp": 1e308, "nbf": -1e308}, keys[0])
    decoded = run_cli(capsys, "decode", token)
    assert decoded.code == 0, decoded.err
    for name in ("iat", "nbf", "exp"):
        assert f"{name}  not a date" in decoded.out
