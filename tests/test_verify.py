"""certauth.verify without a network: the pure core (format, algorithms, keys, claims) and the
fetch/refetch/single-flight logic driven through httpx.MockTransport.

Tokens are made here with PyJWT and cryptography; forgeries (``alg: none``, HMAC signed with the
public key) are built by hand because PyJWT rightly refuses to make them.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

import certauth
from certauth import verify as verify_module
from certauth.errors import (
    ConfigurationError,
    InvalidArgumentError,
    TokenValidationError,
    TransportError,
)
from certauth.protocol import RetryPolicy
from certauth.verify import (
    CHECKS,
    AsyncTokenVerifier,
    KeySet,
    TokenVerifier,
    decode_unverified,
    discovery_url_for,
    verify_access_token,
)
from certauth.verify import keysource as keysource_module
from certauth.verify import verifier as verifier_module

NOW = 1_750_000_000
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
OTHER_TENANT = "11111111-2222-3333-4444-555555555555"
ISSUER = f"https://login.microsoftonline.com/{TENANT}/v2.0"
TEMPLATE = "https://login.microsoftonline.com/{tenantid}/v2.0"
APP_ID = "6e74172b-be56-4843-9ff4-e66a39bb12e3"
APP_URI = "api://billing"
JWKS_URI = f"https://login.microsoftonline.com/{TENANT}/discovery/v2.0/keys"

# -- helpers (also used by test_verify_emulator.py) ---------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def segment(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def jwk_for(key: Any, kid: str | None, **extra: Any) -> dict[str, Any]:
    """The public JWK of a private or public key."""
    public = key.public_key() if hasattr(key, "public_key") else key
    algorithm = RSAAlgorithm if isinstance(public, rsa.RSAPublicKey) else ECAlgorithm
    entry: dict[str, Any] = algorithm.to_jwk(public, as_dict=True)
    if kid is not None:
        entry["kid"] = kid
    entry.update(extra)
    return entry


def claims_for(**overrides: Any) -> dict[str, Any]:
    """Entra v2 app-only claims, valid at NOW."""
    claims: dict[str, Any] = {
        "aud": APP_ID,
        "iss": ISSUER,
        "iat": NOW - 300,
        "nbf": NOW - 300,
        "exp": NOW + 3600,
        "azp": "c0ffee00-0000-0000-0000-000000000001",
        "azpacr": "2",
        "idtyp": "app",
        "oid": "0d0d0d0d-0000-0000-0000-000000000002",
        "sub": "0d0d0d0d-0000-0000-0000-000000000002",
        "tid": TENANT,
        "roles": ["Invoices.Read"],
        "ver": "2.0",
    }
    for name, value in overrides.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def sign(
    claims: dict[str, Any], key: Any, alg: str = "RS256", kid: str | None = "k1", **hdr: Any
) -> str:
    headers: dict[str, Any] = {"typ": "JWT", **hdr}
    if kid is not None:
        headers["kid"] = kid
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


def forge_none(claims: dict[str, Any], kid: str = "k1") -> str:
    """An unsigned token (RFC 7519 section 6: ``alg: none``, empty signature)."""
    return f"{segment({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{segment(claims)}."


def forge_hmac(claims: dict[str, Any], public_key: Any, kid: str = "k1", alg: str = "HS256") -> str:
    """The algorithm-confusion forgery: HMAC keyed with the issuer's *public* key PEM."""
    pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = f"{segment({'alg': alg, 'typ': 'JWT', 'kid': kid})}.{segment(claims)}"
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    mac = hmac.new(pem, signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64url(mac)}"


def tamper_claims(token: str, **changes: Any) -> str:
    """Change claims but keep the original signature."""
    head, body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims.update(changes)
    return f"{head}.{segment(claims)}.{sig}"


def flip_signature(token: str) -> str:
    head, body, sig = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return f"{head}.{body}.{b64url(bytes(raw))}"


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rsa_key2() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def jwks(rsa_key: Any, ec_key: Any) -> dict[str, Any]:
    return {"keys": [jwk_for(rsa_key, "k1", use="sig"), jwk_for(ec_key, "e1", use="sig")]}


@pytest.fixture
def good(rsa_key: Any) -> str:
    return sign(claims_for(), rsa_key)


def check_of(excinfo: pytest.ExceptionInfo[TokenValidationError]) -> str:
    return excinfo.value.check


def verify_static(token: str, jwks: dict[str, Any], **kw: Any) -> dict[str, Any]:
    kw.setdefault("issuer", ISSUER)
    kw.setdefault("audience", APP_ID)
    kw.setdefault("now", NOW)
    return verify_access_token(token, jwks=jwks, **kw)


def assert_fails(check: str, token: str, jwks: dict[str, Any], **kw: Any) -> TokenValidationError:
    with pytest.raises(TokenValidationError) as excinfo:
        verify_static(token, jwks, **kw)
    assert excinfo.value.check == check, str(excinfo.value)
    assert excinfo.value.exit_code == 6
    # Errors never echo the token (or its signature) back.
    message = str(excinfo.value)
    for part in token.split("."):
        if len(part) >= 16:
            assert part[:16] not in message
    return excinfo.value


# -- valid tokens -------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["RS256", "PS256", "RS384", "PS512"])
def test_rsa_algorithms_verify(rsa_key: Any, jwks: dict[str, Any], alg: str) -> None:
    token = sign(claims_for(), rsa_key, alg)
    algorithms = ("RS256", "PS256", "RS384", "PS512")
    claims = verify_static(token, jwks, algorithms=algorithms)
    assert claims["tid"] == TENANT


def test_es256_verifies(ec_key: Any, jwks: dict[str, Any]) -> None:
    assert verify_static(sign(claims_for(), ec_key, "ES256", kid="e1"), jwks)["ver"] == "2.0"


def test_es384_and_es512_when_allowed() -> None:
    for curve, alg in ((ec.SECP384R1(), "ES384"), (ec.SECP521R1(), "ES512")):
        key = ec.generate_private_key(curve)
        keys = {"keys": [jwk_for(key, "x")]}
        token = sign(claims_for(), key, alg, kid="x")
        assert verify_static(token, keys, algorithms=[alg])["aud"] == APP_ID


def test_returns_claims_and_exports(good: str, jwks: dict[str, Any]) -> None:
    assert verify_static(good, jwks) == claims_for()
    assert certauth.verify_access_token is verify_access_token
    assert certauth.TokenVerifier is TokenVerifier
    assert certauth.AsyncTokenVerifier is AsyncTokenVerifier
    assert "verify_access_token" in certauth.__all__


def test_audience_can_be_several_and_token_aud_a_list(rsa_key: Any, jwks: dict[str, Any]) -> None:
    v1_style = sign(claims_for(aud=APP_URI), rsa_key)
    assert verify_static(v1_style, jwks, audience=[APP_ID, APP_URI])["aud"] == APP_URI
    listed = sign(claims_for(aud=["other", APP_URI]), rsa_key)
    assert verify_static(listed, jwks, audience=(APP_ID, APP_URI))


def test_now_as_datetime(good: str, jwks: dict[str, Any]) -> None:
    when = dt.datetime.fromtimestamp(NOW, dt.timezone.utc)
    assert verify_static(good, jwks, now=when)
    with pytest.raises(InvalidArgumentError, match="timezone-aware"):
        verify_static(good, jwks, now=dt.datetime(2025, 1, 1))


def test_no_kid_with_a_single_fitting_key(rsa_key: Any) -> None:
    keys = {"keys": [jwk_for(rsa_key, None)]}
    assert verify_static(sign(claims_for(), rsa_key, kid=None), keys)


def test_surrounding_whitespace_is_tolerated(good: str, jwks: dict[str, Any]) -> None:
    assert verify_static(f"  {good}\n", jwks)


# -- algorithm confusion and forgeries (RFC 8725 sections 2.1, 3.1) -----------------------------


def test_alg_none_is_refused(jwks: dict[str, Any]) -> None:
    error = assert_fails("algorithm", forge_none(claims_for()), jwks)
    assert "'none'" in str(error)
    assert_fails("algorithm", forge_none(claims_for()).replace("bm9uZQ", "Tm9uZQ"), jwks)


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hmac_signed_with_the_public_key_is_refused(
    rsa_key: Any, jwks: dict[str, Any], alg: str
) -> None:
    forged = forge_hmac(claims_for(), rsa_key.public_key(), alg=alg)
    error = assert_fails("algorithm", forged, jwks)
    assert "HMAC" in str(error)
    # Even when a caller lists every algorithm certauth knows.
    assert_fails("algorithm", forged, jwks, algorithms=verify_module.SUPPORTED_ALGORITHMS)


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("none", "is never accepted"),
        ("HS256", "is never accepted"),
        ("hs512", "is never accepted"),
        ("RS1", "is not supported"),
        ("EdDSA", "is not supported"),
    ],
)
def test_weak_or_unknown_algorithms_cannot_be_allowed(
    good: str, jwks: dict[str, Any], bad: str, why: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=f"algorithm '{bad}' {why}"):
        verify_static(good, jwks, algorithms=[bad])
    with pytest.raises(InvalidArgumentError, match=f"algorithm '{bad}' {why}"):
        TokenVerifier(jwks=jwks, audience=APP_ID, algorithms=["RS256", bad])


def test_alg_outside_the_allowed_list(rsa_key: Any, jwks: dict[str, Any]) -> None:
    token = sign(claims_for(), rsa_key, "PS256")
    error = assert_fails("algorithm", token, jwks, algorithms=["RS256"])
    assert "PS256" in str(error)


def test_missing_alg(jwks: dict[str, Any]) -> None:
    token = f"{segment({'kid': 'k1'})}.{segment(claims_for())}.{b64url(b'x' * 256)}"
    assert_fails("algorithm", token, jwks)


def test_key_type_must_fit_the_alg(rsa_key: Any, ec_key: Any, jwks: dict[str, Any]) -> None:
    # An RS256 token naming the EC key, and an ES256 token naming the RSA key.
    assert_fails("algorithm", sign(claims_for(), rsa_key, "RS256", kid="e1"), jwks)
    assert_fails("algorithm", sign(claims_for(), ec_key, "ES256", kid="k1"), jwks)


def test_curve_must_fit_the_alg() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    keys = {"keys": [jwk_for(key, "p384")]}
    token = sign(claims_for(), key, "ES384", kid="p384")
    _, body, sig = token.split(".")
    relabelled = f"{segment({'alg': 'ES256', 'kid': 'p384'})}.{body}.{sig}"
    assert_fails("algorithm", relabelled, keys)


def test_jwk_alg_binds_the_key(rsa_key: Any) -> None:
    keys = {"keys": [jwk_for(rsa_key, "k1", alg="RS256")]}
    error = assert_fails("algorithm", sign(claims_for(), rsa_key, "PS256"), keys)
    assert "RS256 only" in str(error)


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_small_rsa_keys_are_refused() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the weak key under test
    keys = {"keys": [jwk_for(weak, "weak")]}
    token = sign(claims_for(), weak, kid="weak")
    assert "2048" in str(assert_fails("algorithm", token, keys))


def test_critical_header_extensions_are_refused(rsa_key: Any, jwks: dict[str, Any]) -> None:
    token = sign(claims_for(), rsa_key, crit=["exp"], exp=1)
    assert_fails("format", token, jwks)


# -- signature ---------------------------------------------------------------------------------


def test_tampered_claims_fail_the_signature(good: str, jwks: dict[str, Any]) -> None:
    assert_fails("signature", tamper_claims(good, roles=["Admin"]), jwks)


def test_altered_signature_fails(good: str, jwks: dict[str, Any]) -> None:
    assert_fails("signature", flip_signature(good), jwks)
    head, body, _ = good.split(".")
    assert_fails("signature", f"{head}.{body}.", jwks)


def test_non_canonical_signature_encoding_is_refused(good: str, jwks: dict[str, Any]) -> None:
    # 256 signature bytes -> 342 characters; the last one carries 4 unused bits.
    head, body, sig = good.split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    value = alphabet.index(sig[-1])
    sibling = alphabet[value ^ 0x01]
    assert_fails("format", f"{head}.{body}.{sig[:-1]}{sibling}", jwks)


def test_signed_by_another_key_with_the_same_kid(rsa_key2: Any, jwks: dict[str, Any]) -> None:
    assert_fails("signature", sign(claims_for(), rsa_key2, kid="k1"), jwks)


def test_es256_signature_must_be_raw_r_s(ec_key: Any, jwks: dict[str, Any]) -> None:
    token = sign(claims_for(), ec_key, "ES256", kid="e1")
    head, body, sig = token.split(".")
    raw = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    assert len(raw) == 64
    assert_fails("signature", f"{head}.{body}.{b64url(raw[:-2])}", jwks)
    # A DER-encoded ECDSA signature (what some libraries emit by mistake) is not R || S.
    der = ec_key.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
    assert_fails("signature", f"{head}.{body}.{b64url(der)}", jwks)


def test_graph_token_signature_hint(rsa_key: Any, jwks: dict[str, Any]) -> None:
    token = sign(claims_for(), rsa_key, nonce="abc")
    error = assert_fails("signature", tamper_claims(token, x=1), jwks)
    assert "Microsoft Graph" in str(error)


# -- kid -----------------------------------------------------------------------------------------


def test_unknown_kid(rsa_key2: Any, jwks: dict[str, Any]) -> None:
    error = assert_fails("kid", sign(claims_for(), rsa_key2, kid="nope"), jwks)
    assert "'nope'" in str(error)
    assert "k1" in str(error)


def test_no_kid_and_several_keys(rsa_key: Any, rsa_key2: Any) -> None:
    keys = {"keys": [jwk_for(rsa_key, "a"), jwk_for(rsa_key2, "b")]}
    assert_fails("kid", sign(claims_for(), rsa_key, kid=None), keys)


# -- issuer --------------------------------------------------------------------------------------


def test_wrong_issuer(rsa_key: Any, jwks: dict[str, Any]) -> None:
    token = sign(claims_for(iss=f"https://login.microsoftonline.com/{OTHER_TENANT}/v2.0"), rsa_key)
    assert_fails("issuer", token, jwks)
    assert_fails("issuer", sign(claims_for(iss=None), rsa_key), jwks)


def test_issuer_is_compared_exactly(rsa_key: Any, jwks: dict[str, Any]) -> None:
    token = sign(claims_for(iss=ISSUER + "/"), rsa_key)
    assert "trailing slash" in str(assert_fails("issuer", token, jwks))


def test_v1_issuer(rsa_key: Any, jwks: dict[str, Any]) -> None:
    v1 = f"https://sts.windows.net/{TENANT}/"
    token = sign(claims_for(iss=v1, aud=APP_URI, ver="1.0"), rsa_key)
    assert verify_static(token, jwks, issuer=v1, audience=[APP_ID, APP_URI])
    # A v1 token checked against the v2 issuer says what to change.
    error = assert_fails("issuer", token, jwks, audience=APP_URI)
    assert "requestedAccessTokenVersion" in str(error)


def test_multi_tenant_template_matches_tid(rsa_key: Any, jwks: dict[str, Any]) -> None:
    other = f"https://login.microsoftonline.com/{OTHER_TENANT}/v2.0"
    token = sign(claims_for(iss=other, tid=OTHER_TENANT), rsa_key)
    assert verify_static(token, jwks, issuer=TEMPLATE)["tid"] == OTHER_TENANT
    # The issuer must be the template filled with the token's own tid.
    mixed = sign(claims_for(iss=other, tid=TENANT), rsa_key)
    assert_fails("issuer", mixed, jwks, issuer=TEMPLATE)
    assert_fails("issuer", sign(claims_for(iss=other, tid=None), rsa_key), jwks, issuer=TEMPLATE)
    assert_fails("issuer", sign(claims_for(iss=other, tid="../x"), rsa_key), jwks, issuer=TEMPLATE)


def test_b2c_and_plain_oidc_issuers(rsa_key: Any, jwks: dict[str, Any]) -> None:
    b2c = f"https://contoso.b2clogin.com/{TENANT}/v2.0/"
    token = sign(claims_for(iss=b2c, scp="invoices.read"), rsa_key)
    assert verify_static(token, jwks, issuer=b2c, required_scopes="invoices.read")
    oidc = "https://accounts.example.com"
    assert verify_static(sign(claims_for(iss=oidc), rsa_key), jwks, issuer=oidc)


def test_keys_only_mode_honours_the_keys_issuer(rsa_key: Any) -> None:
    # Entra's v2 key sets name the issuer per key: a token of another tenant signed with the
    # shared key must not pass when the caller gave only a jwks_uri/jwks.
    keys = {"keys": [jwk_for(rsa_key, "k1", issuer=TEMPLATE)]}
    other = f"https://login.microsoftonline.com/{OTHER_TENANT}/v2.0"
    assert verify_static(sign(claims_for(), rsa_key), keys, issuer=None)
    forwarded = sign(claims_for(iss=other, tid=TENANT), rsa_key)
    assert_fails("issuer", forwarded, keys, issuer=None)
    # Without a per-key issuer, keys-only mode checks no issuer (documented).
    plain = {"keys": [jwk_for(rsa_key, "k1")]}
    assert verify_static(sign(claims_for(iss="anyone"), rsa_key), plain, issuer=None)


# -- audience ----------------------------------------------------------------------------------


def test_wrong_audience(rsa_key: Any, jwks: dict[str, Any]) -> None:
    error = assert_fails("audience", sign(claims_for(aud="api://other"), rsa_key), jwks)
    assert "api://other" in str(error)
    assert_fails("audience", sign(claims_for(aud=None), rsa_key), jwks)
    assert_fails("format", sign(claims_for(aud=5), rsa_key), jwks)


def test_graph_audience_hint(rsa_key: Any, jwks: dict[str, Any]) -> None:
    token = sign(claims_for(aud="00000003-0000-0000-c000-000000000000"), rsa_key)
    assert "Microsoft Graph" in str(assert_fails("audience", token, jwks))


def test_audience_is_required(good: str, jwks: dict[str, Any]) -> None:
    for audience in ("", (), [""]):
        with pytest.raises(InvalidArgumentError, match="audience"):
            verify_static(good, jwks, audience=audience)


# -- times -------------------------------------------------------------------------------------


def test_expiry_with_leeway(rsa_key: Any, jwks: dict[str, Any]) -> None:
    token = sign(claims_for(exp=NOW - 30), rsa_key)
    assert verify_static(token, jwks)  # within the default 60 s leeway
    error = assert_fails("expired", token, jwks, leeway=0)
    assert "30 s ago" in str(error)
    # RFC 7519 4.1.4: not accepted *on or after* exp (+ leeway).
    at_edge = sign(claims_for(exp=NOW - 60), rsa_key)
    assert_fails("expired", at_edge, jwks)
    assert verify_static(sign(claims_for(exp=NOW - 59), rsa_key), jwks)


def test_missing_or_malformed_exp(rsa_key: Any, jwks: dict[str, Any]) -> None:
    assert_fails("expired", sign(claims_for(exp=None), rsa_key), jwks)
    assert_fails("format", sign(claims_for(exp="tomorrow"), rsa_key), jwks)
    assert_fails("format", sign(claims_for(exp=True), rsa_key), jwks)


def test_not_yet_valid(rsa_key: Any, jwks: dict[str, Any]) -> None:
    token = sign(claims_for(nbf=NOW + 120), rsa_key)
    assert_fails("not_yet_valid", token, jwks)
    assert verify_static(token, jwks, leeway=120)
    assert verify_static(sign(claims_for(nbf=None), rsa_key), jwks)


def test_leeway_must_be_sane(good: str, jwks: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgumentError, match="leeway must be a number of seconds >= 0"):
        verify_static(good, jwks, leeway=-1)


# -- scopes and roles --------------------------------------------------------------------------


def test_required_roles(rsa_key: Any, jwks: dict[str, Any]) -> None:
    token = sign(claims_for(roles=["Invoices.Read", "Invoices.Write"]), rsa_key)
    assert verify_static(token, jwks, required_roles=["Invoices.Read", "Invoices.Write"])
    assert verify_static(token, jwks, required_roles="Invoices.Read")
    error = assert_fails("role", token, jwks, required_roles=["Admin"])
    assert "Admin" in str(error)
    assert "Invoices.Read" in str(error)
    assert_fails("role", sign(claims_for(roles=None), rsa_key), jwks, required_roles="X")


def test_required_scopes_from_scp_or_scope(rsa_key: Any, jwks: dict[str, Any]) -> None:
    scp = sign(claims_for(scp="User.Read Files.Read", roles=None), rsa_key)
    assert verify_static(scp, jwks, required_scopes=["Files.Read"])
    assert verify_static(scp, jwks, required_scopes="User.Read Files.Read")
    scope = sign(claims_for(scope="read write", roles=None), rsa_key)
    assert verify_static(scope, jwks, required_scopes=("write",))
    assert_fails("scope", scope, jwks, required_scopes=["admin"])


def test_app_only_token_scope_hint(good: str, jwks: dict[str, Any]) -> None:
    error = assert_fails("scope", good, jwks, required_scopes=["Invoices.Read"])
    assert "roles" in str(error)


# -- format ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not-a-token",
        "a.b",
        "a.b.c.d",
        "!!.@@.##",
        "e30.e30",  # two parts
        f"{b64url(b'[1]')}.{segment({})}.",
        f"{segment({'alg': 'RS256'})}.{b64url(b'not json')}.",
        f"{segment({'alg': 'RS256'})}.{b64url(b'[]')}.",
        b64url(b'{"alg":"RS256","alg":"none"}') + "." + segment({}) + ".",
        segment({"alg": "RS256"}) + "." + b64url(b'{"aud":"a","aud":"b"}') + ".",
        f"{segment({'alg': 'RS256'})}.{b64url(bytes([0xFF, 0xFE]))}.",
        "x" * 70_000,
    ],
)
def test_malformed_tokens(jwks: dict[str, Any], token: str) -> None:
    assert_fails("format", token, jwks)


def test_encrypted_tokens_say_so(jwks: dict[str, Any]) -> None:
    error = assert_fails("format", "a.b.c.d.e", jwks)
    assert "JWE" in str(error)


def test_non_string_token(jwks: dict[str, Any]) -> None:
    with pytest.raises(TokenValidationError) as excinfo:
        verify_static(b"abc", jwks)  # type: ignore[arg-type]
    assert excinfo.value.check == "format"


def test_decode_unverified(good: str) -> None:
    header, claims = decode_unverified(good)
    assert header == {"alg": "RS256", "kid": "k1", "typ": "JWT"}
    assert claims == claims_for()
    with pytest.raises(TokenValidationError) as caught:
        decode_unverified("nope")
    assert caught.value.check == "format"


def test_every_check_name_is_documented() -> None:
    assert CHECKS == (
        "format",
        "algorithm",
        "kid",
        "signature",
        "issuer",
        "audience",
        "expired",
        "not_yet_valid",
        "scope",
        "role",
    )


# -- JWKS parsing ------------------------------------------------------------------------------


def test_keyset_skips_unusable_keys(rsa_key: Any, ec_key: Any) -> None:
    bad_point = jwk_for(ec_key, "badpoint")
    bad_point["y"] = bad_point["x"]
    document = {
        "keys": [
            {"kty": "oct", "kid": "sym", "k": "c2VjcmV0"},
            jwk_for(rsa_key, "enc", use="enc"),
            jwk_for(rsa_key, "ops", key_ops=["encrypt"]),
            jwk_for(rsa_key, "hs", alg="HS256"),
            {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
            {"kty": "RSA", "kid": "half", "e": "AQAB"},
            {"kty": "EC", "kid": "curve", "crv": "secp256k1", "x": "AA", "y": "AA"},
            bad_point,
            "not an object",
            jwk_for(rsa_key, "good"),
        ]
    }
    keys = KeySet.from_jwks(document, source="test")
    assert keys.kids == ("good",)
    assert len(keys) == 1
    assert len(keys.skipped) == 9
    assert "good" in repr(keys)
    # The unknown-kid message lists what was skipped and why.
    token = sign(claims_for(), rsa_key, kid="sym")
    assert "sym" in str(assert_fails("kid", token, document))


@pytest.mark.parametrize("document", [[], {}, {"keys": {}}, "x", None])
def test_not_a_jwks(document: Any) -> None:
    with pytest.raises(ConfigurationError, match="not a JWKS"):
        KeySet.from_jwks(document)


def test_keyset_can_be_passed_parsed(good: str, jwks: dict[str, Any]) -> None:
    keys = KeySet.from_jwks(jwks)
    assert verify_static(good, keys)  # type: ignore[arg-type]


def test_source_arguments() -> None:
    with pytest.raises(InvalidArgumentError, match="where the keys are"):
        verify_access_token("a.b.c", audience=APP_ID)
    with pytest.raises(InvalidArgumentError, match="not both"):
        TokenVerifier(jwks_uri=JWKS_URI, jwks={"keys": []}, audience=APP_ID)
    with pytest.raises(ConfigurationError, match="plain http"):
        TokenVerifier(jwks_uri="http://example.com/keys", audience=APP_ID)
    with pytest.raises(ConfigurationError, match="issuer 'not a url' is not an absolute"):
        TokenVerifier(issuer="not a url", audience=APP_ID)
    # http is fine on loopback (the emulator).
    TokenVerifier(jwks_uri="http://127.0.0.1:1/keys", audience=APP_ID).close()


def test_discovery_urls() -> None:
    assert discovery_url_for(ISSUER) == ISSUER + "/.well-known/openid-configuration"
    assert discovery_url_for(TEMPLATE) == (
        "https://login.microsoftonline.com/common/v2.0/.well-known/openid-configuration"
    )
    assert discovery_url_for(f"https://sts.windows.net/{TENANT}/") == (
        f"https://login.microsoftonline.com/{TENANT}/.well-known/openid-configuration"
    )
    assert discovery_url_for("https://sts.windows.net/{tenantid}/") == (
        "https://login.microsoftonline.com/common/.well-known/openid-configuration"
    )


# -- fetching: discovery, JWKS, refetch rate limit, single flight (MockTransport) ---------------


class FakeIssuer:
    """An OIDC issuer behind httpx.MockTransport: serves discovery and a mutable JWKS, counts
    requests, and can fail or stall on demand."""

    def __init__(self, jwks: dict[str, Any], issuer: str = ISSUER) -> None:
        self.issuer = issuer
        self.jwks = jwks
        self.hits: dict[str, int] = {"discovery": 0, "jwks": 0}
        self.delay = 0.0
        self.fail_with: int | Exception | None = None
        self.discovery_issuer = issuer
        self.lock = threading.Lock()

    def document(self) -> dict[str, Any]:
        return {"issuer": self.discovery_issuer, "jwks_uri": JWKS_URI}

    def respond(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        kind = "jwks" if url == JWKS_URI else "discovery"
        with self.lock:
            self.hits[kind] += 1
        if isinstance(self.fail_with, Exception):
            raise self.fail_with
        if isinstance(self.fail_with, int):
            return httpx.Response(self.fail_with, text="down")
        if kind == "jwks":
            return httpx.Response(200, json=self.jwks)
        if url != discovery_url_for(self.issuer):
            return httpx.Response(404)
        return httpx.Response(200, json=self.document())

    def handler(self, request: httpx.Request) -> httpx.Response:
        if self.delay:
            time.sleep(self.delay)
        return self.respond(request)

    async def async_handler(self, request: httpx.Request) -> httpx.Response:
        if self.delay:
            await asyncio.sleep(self.delay)
        return self.respond(request)

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handler))

    def async_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.async_handler))


class Clock:
    def __init__(self) -> None:
        self.value = 1000.0

    def __call__(self) -> float:
        return self.value


NO_RETRY = RetryPolicy(max_attempts=1)


def make_verifier(
    issuer: FakeIssuer, clock: Callable[[], float] | None = None, **kw: Any
) -> TokenVerifier:
    kw.setdefault("audience", APP_ID)
    return TokenVerifier(issuer=issuer.issuer, client=issuer.client(), clock=clock or Clock(), **kw)


def test_discovery_then_keys_fetched_once(rsa_key: Any, jwks: dict[str, Any], good: str) -> None:
    fake = FakeIssuer(jwks)
    with make_verifier(fake) as verifier:
        assert verifier.keys is None
        for _ in range(5):
            assert verifier.verify(good, now=NOW)["tid"] == TENANT
        assert fake.hits == {"discovery": 1, "jwks": 1}
        assert verifier.jwks_uri == JWKS_URI
        assert verifier.keys is not None
        assert "k1" in verifier.keys.kids
        assert "TokenVerifier" in repr(verifier)


def test_jwks_uri_skips_discovery(jwks: dict[str, Any], good: str) -> None:
    fake = FakeIssuer(jwks)
    verifier = TokenVerifier(
        jwks_uri=JWKS_URI, issuer=ISSUER, audience=APP_ID, client=fake.client()
    )
    assert verifier.verify(good, now=NOW)
    assert fake.hits == {"discovery": 0, "jwks": 1}


def test_malformed_tokens_fetch_nothing(jwks: dict[str, Any], rsa_key: Any) -> None:
    fake = FakeIssuer(jwks)
    verifier = make_verifier(fake)
    malformed = {
        "junk": "format",
        forge_none(claims_for()): "algorithm",
        forge_hmac(claims_for(), rsa_key.public_key()): "algorithm",
    }
    for token, check in malformed.items():
        with pytest.raises(TokenValidationError) as caught:
            verifier.verify(token, now=NOW)
        assert caught.value.check == check
    assert fake.hits == {"discovery": 0, "jwks": 0}


def test_unknown_kid_refetch_is_rate_limited(
    rsa_key: Any, rsa_key2: Any, jwks: dict[str, Any], good: str
) -> None:
    fake = FakeIssuer(jwks)
    clock = Clock()
    verifier = make_verifier(fake, clock, refetch_interval=30)
    assert verifier.verify(good, now=NOW)
    forged = [sign(claims_for(), rsa_key2, kid=f"forged-{i}") for i in range(3)]
    # Within 30 s of the last fetch: no refetch at all, however many forged kids arrive.
    for token in forged * 10:
        with pytest.raises(TokenValidationError) as excinfo:
            verifier.verify(token, now=NOW)
        assert excinfo.value.check == "kid"
        assert "refetched at most every 30 s" in str(excinfo.value)
    assert fake.hits["jwks"] == 1
    # After the interval: exactly one refetch, then the limit applies again.
    clock.value += 31
    for token in forged * 10:
        with pytest.raises(TokenValidationError) as excinfo:
            verifier.verify(token, now=NOW)
        assert excinfo.value.check == "kid"
    assert fake.hits["jwks"] == 2
    # Known kids keep verifying without any fetch.
    assert verifier.verify(good, now=NOW)
    assert fake.hits == {"discovery": 1, "jwks": 2}


def test_key_rotation_is_picked_up(rsa_key: Any, rsa_key2: Any, good: str) -> None:
    fake = FakeIssuer({"keys": [jwk_for(rsa_key, "k1")]})
    clock = Clock()
    verifier = make_verifier(fake, clock)
    assert verifier.verify(good, now=NOW)
    fake.jwks = {"keys": [jwk_for(rsa_key2, "k2"), jwk_for(rsa_key, "k1")]}
    clock.value += 31
    rotated = sign(claims_for(), rsa_key2, kid="k2")
    assert verifier.verify(rotated, now=NOW)
    assert verifier.verify(good, now=NOW)  # the old key is still published
    assert fake.hits["jwks"] == 2
    # Once the issuer withdraws k1 and the keys are refreshed, k1 tokens fail.
    fake.jwks = {"keys": [jwk_for(rsa_key2, "k2")]}
    clock.value += verify_module.DEFAULT_KEYS_MAX_AGE
    assert verifier.verify(rotated, now=NOW)
    with pytest.raises(TokenValidationError) as excinfo:
        verifier.verify(good, now=NOW)
    assert excinfo.value.check == "kid"


def test_stale_keys_survive_an_issuer_outage(jwks: dict[str, Any], good: str) -> None:
    fake = FakeIssuer(jwks)
    clock = Clock()
    verifier = make_verifier(fake, clock, keys_max_age=100, retry=NO_RETRY)
    assert verifier.verify(good, now=NOW)
    fake.fail_with = 503
    clock.value += 101
    assert verifier.verify(good, now=NOW)  # refresh failed: the previous keys stay in use
    hits = fake.hits["jwks"]
    assert verifier.verify(good, now=NOW)  # and the next try waits for the refetch interval
    assert fake.hits["jwks"] == hits
    fake.fail_with = None
    clock.value += 31
    assert verifier.verify(good, now=NOW)
    assert fake.hits["jwks"] == hits + 1


def test_fetch_failures_are_transport_errors(jwks: dict[str, Any], good: str) -> None:
    fake = FakeIssuer(jwks)
    fake.fail_with = 500
    with pytest.raises(TransportError, match="HTTP 500") as excinfo:
        make_verifier(fake, retry=RetryPolicy(max_attempts=2, base_delay=0.001)).verify(good)
    assert excinfo.value.exit_code == 5
    assert fake.hits["discovery"] == 2  # one retry
    fake.fail_with = httpx.ConnectError("refused")
    with pytest.raises(TransportError, match="cannot fetch the discovery document"):
        make_verifier(fake, retry=NO_RETRY).verify(good)
    fake.fail_with = 404
    with pytest.raises(TransportError, match="HTTP 404 for the discovery document; check the"):
        make_verifier(fake).verify(good)


def test_bad_documents(jwks: dict[str, Any], good: str) -> None:
    fake = FakeIssuer(jwks)
    fake.discovery_issuer = "https://evil.example.com"
    with pytest.raises(ConfigurationError, match="names issuer"):
        make_verifier(fake).verify(good, now=NOW)
    # The rule the credentials apply too: a trailing slash is not told apart (the token's iss
    # is still compared exactly), a document naming no issuer is refused.
    fake.discovery_issuer = ISSUER + "/"
    assert make_verifier(fake).verify(good, now=NOW)
    fake.discovery_issuer = None
    with pytest.raises(ConfigurationError, match="names issuer None"):
        make_verifier(fake).verify(good, now=NOW)
    fake.discovery_issuer = ISSUER
    fake.jwks = {"nokeys": []}
    with pytest.raises(TransportError, match="not a JWKS"):
        make_verifier(fake).verify(good, now=NOW)

    def not_json(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>")

    client = httpx.Client(transport=httpx.MockTransport(not_json))
    verifier = TokenVerifier(jwks_uri=JWKS_URI, audience=APP_ID, client=client)
    with pytest.raises(TransportError, match="not JSON"):
        verifier.verify(good, now=NOW)


def test_a_failed_first_fetch_is_retried_by_the_next_call(jwks: dict[str, Any], good: str) -> None:
    fake = FakeIssuer(jwks)
    verifier = make_verifier(fake, retry=NO_RETRY)
    fake.fail_with = 503
    with pytest.raises(TransportError, match="HTTP 503") as caught:
        verifier.verify(good, now=NOW)
    assert caught.value.status_code == 503
    fake.fail_with = None
    assert verifier.verify(good, now=NOW)


def test_concurrent_threads_share_one_fetch(jwks: dict[str, Any], good: str) -> None:
    fake = FakeIssuer(jwks)
    fake.delay = 0.05
    verifier = make_verifier(fake, clock=time.monotonic)
    barrier = threading.Barrier(16)
    results: list[Any] = []

    def worker() -> None:
        barrier.wait()
        try:
            results.append(verifier.verify(good, now=NOW)["tid"])
        except Exception as exc:  # noqa: BLE001 - collected for the assertion below
            results.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [TENANT] * 16
    assert fake.hits == {"discovery": 1, "jwks": 1}


def test_concurrent_threads_share_a_failure(jwks: dict[str, Any], good: str) -> None:
    fake = FakeIssuer(jwks)
    fake.delay = 0.05
    fake.fail_with = 503
    verifier = make_verifier(fake, clock=time.monotonic, retry=NO_RETRY)
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        try:
            verifier.verify(good, now=NOW)
        except TransportError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(errors) == 8
    # Waiters that arrived during the failing fetch shared it; late ones may retry once.
    assert fake.hits["discovery"] <= 3


def test_async_verifier_shares_one_fetch(
    rsa_key: Any, rsa_key2: Any, jwks: dict[str, Any], good: str
) -> None:
    fake = FakeIssuer(jwks)
    fake.delay = 0.05

    async def main() -> None:
        clock = Clock()
        async with AsyncTokenVerifier(
            issuer=ISSUER, audience=APP_ID, client=fake.async_client(), clock=clock
        ) as verifier:
            results = await asyncio.gather(*(verifier.verify(good, now=NOW) for _ in range(20)))
            assert all(r["tid"] == TENANT for r in results)
            assert fake.hits == {"discovery": 1, "jwks": 1}
            forged = sign(claims_for(), rsa_key2, kid="forged")
            for _ in range(5):
                with pytest.raises(TokenValidationError, match="refetched at most"):
                    await verifier.verify(forged, now=NOW)
            assert fake.hits["jwks"] == 1
            clock.value += 31
            outcomes = await asyncio.gather(
                *(verifier.verify(forged, now=NOW) for _ in range(10)), return_exceptions=True
            )
            assert all(isinstance(o, TokenValidationError) and o.check == "kid" for o in outcomes)
            assert fake.hits["jwks"] == 2
            assert "AsyncTokenVerifier" in repr(verifier)
            with pytest.raises(TokenValidationError) as excinfo:
                await verifier.verify(good, now=NOW, required_roles=["Admin"])
            assert excinfo.value.check == "role"

    asyncio.run(main())


def test_async_fetch_failure_reaches_every_waiter(jwks: dict[str, Any], good: str) -> None:
    fake = FakeIssuer(jwks)
    fake.delay = 0.02
    fake.fail_with = 502

    async def main() -> None:
        verifier = AsyncTokenVerifier(
            issuer=ISSUER, audience=APP_ID, client=fake.async_client(), retry=NO_RETRY
        )
        outcomes = await asyncio.gather(
            *(verifier.verify(good, now=NOW) for _ in range(5)), return_exceptions=True
        )
        assert all(isinstance(o, TransportError) for o in outcomes)
        assert fake.hits["discovery"] == 1
        fake.fail_with = None
        assert await verifier.verify(good, now=NOW)
        await verifier.close()

    asyncio.run(main())


def test_per_call_requirements_add_to_the_verifiers(
    rsa_key2: Any, jwks: dict[str, Any], good: str
) -> None:
    verifier = TokenVerifier(
        jwks=jwks, issuer=ISSUER, audience=APP_ID, required_roles="Invoices.Read"
    )
    assert verifier.verify(good, now=NOW)
    with pytest.raises(TokenValidationError) as excinfo:
        verifier.verify(good, now=NOW, required_roles=["Invoices.Write"])
    assert excinfo.value.check == "role"
    # A static key set never refetches: an unknown kid fails at once.
    with pytest.raises(TokenValidationError, match="the given jwks"):
        verifier.verify(sign(claims_for(), rsa_key2, kid="zz"), now=NOW)


@pytest.fixture
def shared_reset() -> Iterator[None]:
    verifier_module._shared.clear()
    yield
    verifier_module._shared.clear()


def test_verify_access_token_caches_keys_per_process(
    monkeypatch: pytest.MonkeyPatch, jwks: dict[str, Any], good: str, shared_reset: None
) -> None:
    fake = FakeIssuer(jwks)
    monkeypatch.setattr(keysource_module._http, "new_sync_client", lambda *a, **k: fake.client())
    for _ in range(3):
        assert verify_access_token(good, issuer=ISSUER, audience=APP_ID, now=NOW)
    assert fake.hits == {"discovery": 1, "jwks": 1}
    with pytest.raises(TokenValidationError, match="someone-else") as caught:
        verify_access_token(good, issuer=ISSUER, audience="someone-else", now=NOW)
    assert caught.value.check == "audience"
    assert fake.hits == {"discovery": 1, "jwks": 1}


def test_async_leader_cancelled_waiters_still_verify(jwks: dict[str, Any], good: str) -> None:
    fake = FakeIssuer(jwks)
    fake.delay = 0.1

    async def main() -> None:
        verifier = AsyncTokenVerifier(issuer=ISSUER, audience=APP_ID, client=fake.async_client())
        leader = asyncio.create_task(verifier.verify(good, now=NOW))
        await asyncio.sleep(0.02)  # the leader is fetching
        waiter = asyncio.create_task(verifier.verify(good, now=NOW))
        await asyncio.sleep(0.02)
        leader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leader
        assert (await waiter)["tid"] == TENANT
        await verifier.close()

    asyncio.run(main())


def test_now_must_be_a_time(good: str, jwks: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgumentError, match="epoch seconds"):
        verify_static(good, jwks, now="2025-01-01")


def test_discovery_faults_are_the_credentials_faults(jwks: dict[str, Any], good: str) -> None:
    # One rule (certauth.authority.check_discovery_issuer) for verifiers and credentials: a
    # document that is not an object, or lacks the endpoint asked for, is a ConfigurationError.
    fake = FakeIssuer(jwks)
    fake.document = lambda: []  # type: ignore[method-assign]
    with pytest.raises(ConfigurationError, match="not a JSON object"):
        make_verifier(fake).verify(good, now=NOW)
    fake.document = lambda: {"issuer": ISSUER}  # type: ignore[method-assign]
    with pytest.raises(ConfigurationError, match="has no jwks_uri"):
        make_verifier(fake).verify(good, now=NOW)


def test_a_verifier_refuses_a_client_of_the_other_kind() -> None:
    from certauth import AsyncTokenVerifier

    with (
        httpx.Client() as sync_client,
        pytest.raises(TypeError, match=r"client= must be an httpx\.AsyncClient, not Client"),
    ):
        AsyncTokenVerifier(issuer=ISSUER, audience="a", client=sync_client)
    with pytest.raises(TypeError, match=r"client= must be an httpx\.Client, not AsyncClient"):
        TokenVerifier(issuer=ISSUER, audience="a", client=httpx.AsyncClient())
