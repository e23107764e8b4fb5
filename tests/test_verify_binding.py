"""Sender-constrained tokens: the verifiers check the ``cnf`` claim (RFC 8705 section 3.1,
RFC 9449 sections 6.1, 7.1 and 7.2) after every other check.

Tokens are signed here with a local key set, as in test_verify.py; client certificates come
from the session fixtures, their ``x5t#S256`` computed with hashlib (not certauth) so a slip in
certauth's thumbprint cannot hide itself; DPoP proofs are made with certauth.dpop.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest
from _cert_helpers import self_signed
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from test_verify import APP_ID, ISSUER, NOW, claims_for, jwk_for, sign

from certauth.certificates import Certificate
from certauth.dpop import DPoPKey, JtiCache, make_proof
from certauth.errors import InvalidArgumentError, TokenValidationError
from certauth.verify import (
    BINDING_CHECKS,
    AsyncTokenVerifier,
    TokenVerifier,
    verify_access_token,
)
from certauth.verify import verifier as verifier_module

URL = "https://billing.example/invoices"

# -- helpers -----------------------------------------------------------------------------------


def x5t_s256(cert: Certificate) -> str:
    """RFC 8705 section 3.1, computed here: base64url (no padding) SHA-256 of the DER."""
    digest = hashlib.sha256(cert.der).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def xfcc_hash(cert: Certificate) -> str:
    """An X-Forwarded-Client-Cert value as Envoy's SANITIZE_SET writes it (Hash always)."""
    return (
        f"By=spiffe://mesh.example/ns/edge/sa/envoy;Hash={hashlib.sha256(cert.der).hexdigest()};"
        'Subject="CN=billing-client,O=Contoso\\"s, Inc.";URI=spiffe://mesh.example/client'
    )


def xfcc_cert(cert: Certificate) -> str:
    """...and with the certificate itself (Cert: URL-encoded PEM), without Hash."""
    return f'By=spiffe://mesh.example/envoy;Cert="{quote(cert.pem.decode(), safe="")}"'


Verify = Callable[..., dict[str, Any]]


@pytest.fixture(scope="module")
def issuer_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def jwks(issuer_key: rsa.RSAPrivateKey) -> dict[str, Any]:
    return {"keys": [jwk_for(issuer_key, "k1", use="sig")]}


@pytest.fixture(scope="module")
def dpop_key() -> DPoPKey:
    return DPoPKey.generate()


@pytest.fixture(scope="module")
def other_dpop_key() -> DPoPKey:
    return DPoPKey.generate()


@pytest.fixture
def bound(issuer_key: rsa.RSAPrivateKey) -> Callable[..., str]:
    """A token signed by the issuer whose claims carry ``cnf`` (any value, for the malformed)."""

    def make(cnf: Any = None, **claims: Any) -> str:
        overrides = dict(claims)
        if cnf is not None:
            overrides["cnf"] = cnf
        return sign(claims_for(**overrides), issuer_key)

    return make


@pytest.fixture(params=["verify_access_token", "TokenVerifier", "AsyncTokenVerifier"])
def verify(request: pytest.FixtureRequest, jwks: dict[str, Any]) -> Iterator[Verify]:
    """One verification through each public entry point, each with its own replay cache."""
    cache = JtiCache()
    if request.param == "verify_access_token":

        def call(token: str, **kw: Any) -> dict[str, Any]:
            kw.setdefault("now", NOW)
            kw.setdefault("dpop_jti_cache", cache)
            return verify_access_token(token, jwks=jwks, issuer=ISSUER, audience=APP_ID, **kw)

        yield call
    elif request.param == "TokenVerifier":
        with TokenVerifier(jwks=jwks, issuer=ISSUER, audience=APP_ID, dpop_jti_cache=cache) as sync:

            def call_sync(token: str, **kw: Any) -> dict[str, Any]:
                kw.setdefault("now", NOW)
                return sync.verify(token, **kw)

            yield call_sync
    else:
        yield _async_call(jwks, cache)


def _async_call(jwks: dict[str, Any], cache: JtiCache) -> Verify:

    def call_async(token: str, **kw: Any) -> dict[str, Any]:
        kw.setdefault("now", NOW)

        async def run() -> dict[str, Any]:
            async with AsyncTokenVerifier(
                jwks=jwks, issuer=ISSUER, audience=APP_ID, dpop_jti_cache=cache
            ) as verifier:
                return await verifier.verify(token, **kw)

        return asyncio.run(run())

    return call_async


def refused(verify: Verify, check: str, token: str, **kw: Any) -> str:
    """The refusal's message, after checking its ``check`` and exit code; the token, its
    signature and a proof never appear in it."""
    with pytest.raises(TokenValidationError) as caught:
        verify(token, **kw)
    assert caught.value.check == check, str(caught.value)
    assert caught.value.exit_code == 6
    message = caught.value.message
    for part in [*token.split("."), *str(kw.get("dpop_proof") or "").split(".")]:
        if len(part) >= 16:
            assert part[:16] not in message
    return message


def proof(key: DPoPKey, token: str, **kw: Any) -> str:
    kw.setdefault("htm", "GET")
    kw.setdefault("htu", URL)
    kw.setdefault("now", NOW)
    return make_proof(key, access_token=token, **kw)


def test_the_binding_check_names() -> None:
    assert BINDING_CHECKS == (
        "cnf",
        "dpop_scheme",
        "dpop_unbound",
        "cnf_x5t#S256",
        "dpop_header",
        "cnf_jkt",
    )


# -- certificate-bound tokens (RFC 8705) ---------------------------------------------------------


@pytest.mark.parametrize(
    "form",
    [
        "der",
        "pem-bytes",
        "pem-str",
        "x509",
        "certauth",
        "xfcc-hash",
        "xfcc-hash-upper",
        "xfcc-cert",
    ],
)
def test_the_right_certificate_in_every_form(
    verify: Verify, bound: Callable[..., str], rsa_cert: Certificate, form: str
) -> None:
    token = bound({"x5t#S256": x5t_s256(rsa_cert)})
    given: dict[str, Any] = {
        "der": {"client_certificate": rsa_cert.der},
        "pem-bytes": {"client_certificate": rsa_cert.pem},
        "pem-str": {"client_certificate": rsa_cert.pem.decode()},
        "x509": {"client_certificate": rsa_cert.x509},
        "certauth": {"client_certificate": rsa_cert},
        "xfcc-hash": {"forwarded_client_cert": xfcc_hash(rsa_cert)},
        "xfcc-hash-upper": {
            "forwarded_client_cert": f"Hash={hashlib.sha256(rsa_cert.der).hexdigest().upper()}"
        },
        "xfcc-cert": {"forwarded_client_cert": xfcc_cert(rsa_cert)},
    }[form]
    claims = verify(token, **given)
    assert claims["cnf"] == {"x5t#S256": x5t_s256(rsa_cert)}


def test_a_certificate_key_type_certauth_does_not_sign_with_still_binds(
    verify: Verify, bound: Callable[..., str]
) -> None:
    # The client's certificate is only hashed: its key type is the TLS layer's business.
    cert = Certificate(self_signed(ed25519.Ed25519PrivateKey.generate(), "CN=ed25519-client"))
    token = bound({"x5t#S256": x5t_s256(cert)})
    assert verify(token, client_certificate=cert.der)["cnf"]["x5t#S256"] == x5t_s256(cert)
    assert verify(token, client_certificate=cert.pem.decode())


@pytest.mark.parametrize("via", ["client_certificate", "forwarded_client_cert"])
def test_another_certificate_is_refused(
    verify: Verify,
    bound: Callable[..., str],
    rsa_cert: Certificate,
    other_rsa_cert: Certificate,
    via: str,
) -> None:
    token = bound({"x5t#S256": x5t_s256(rsa_cert)})
    given = other_rsa_cert.pem if via == "client_certificate" else xfcc_hash(other_rsa_cert)
    message = refused(verify, "cnf_x5t#S256", token, **{via: given})
    assert message.startswith("the token is bound to another client certificate than the one")
    assert x5t_s256(rsa_cert) in message
    assert x5t_s256(other_rsa_cert) in message


def test_no_certificate_is_refused(
    verify: Verify, bound: Callable[..., str], rsa_cert: Certificate
) -> None:
    token = bound({"x5t#S256": x5t_s256(rsa_cert)})
    message = refused(verify, "cnf_x5t#S256", token)
    assert "the token is bound to a client certificate (cnf x5t#S256) and none was " in message
    assert "client_certificate=" in message
    # A DPoP proof is no substitute for the certificate.
    refused(verify, "cnf_x5t#S256", token, dpop_proof="a.b.c", htm="GET", htu=URL)


def test_several_xfcc_elements_are_refused_even_when_one_matches(
    verify: Verify, bound: Callable[..., str], rsa_cert: Certificate, other_rsa_cert: Certificate
) -> None:
    token = bound({"x5t#S256": x5t_s256(rsa_cert)})
    for value in (
        f"{xfcc_hash(other_rsa_cert)},{xfcc_hash(rsa_cert)}",
        f"{xfcc_hash(rsa_cert)},{xfcc_hash(rsa_cert)}",
        f"{xfcc_cert(rsa_cert)},By=spiffe://second-proxy",
    ):
        message = refused(verify, "cnf_x5t#S256", token, forwarded_client_cert=value)
        assert message.startswith("forwarded_client_cert= is not a usable X-Forwarded-Client-Cert")
        assert "holds 2 elements" in message
        assert "cannot be told reliably" in message
        assert "SANITIZE_SET" in message


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "it is empty"),
        (" , ", "it is empty"),
        ("Hash", "'Hash' is not a key=value pair"),
        ("=abc", "a pair has no key before its '='"),
        ('Hash="0a1b', "a double-quoted value has no closing quote"),
        ("Hash=not-hex", "Hash is not a hex SHA-256 digest"),
        ("Hash=" + "ab" * 31, "Hash is not a hex SHA-256 digest"),
        ("Hash=" + "ab" * 32 + ";hash=" + "cd" * 32, "more than one Hash or Cert"),
        ("By=spiffe://proxy;URI=spiffe://client", "neither Hash nor Cert"),
        ('Cert="not%20a%20certificate"', "Cert is not a PEM or DER certificate"),
        (
            'Cert="-----BEGIN%20CERTIFICATE-----%0Agarbage%0A-----END%20CERTIFICATE-----%0A"',
            "Cert is not a PEM certificate",
        ),
        ("Hash=" + "a" * 70_000, "over 65,536 characters"),
    ],
)
def test_a_malformed_xfcc_is_refused_saying_why(
    verify: Verify, bound: Callable[..., str], rsa_cert: Certificate, value: str, reason: str
) -> None:
    token = bound({"x5t#S256": x5t_s256(rsa_cert)})
    message = refused(verify, "cnf_x5t#S256", token, forwarded_client_cert=value)
    assert message.startswith("forwarded_client_cert= is not a usable X-Forwarded-Client-Cert")
    assert reason in message


def test_xfcc_quoting_follows_envoy(
    verify: Verify, bound: Callable[..., str], rsa_cert: Certificate
) -> None:
    # Quoted values may hold , ; = and \" ; keys are case-insensitive; spaces around pairs go.
    token = bound({"x5t#S256": x5t_s256(rsa_cert)})
    digest = hashlib.sha256(rsa_cert.der).hexdigest()
    value = f'Subject="C=US, O=a;b=c \\"d\\""; HASH = {digest} ;By="spiffe://x,y"'
    assert verify(token, forwarded_client_cert=value)["cnf"]["x5t#S256"] == x5t_s256(rsa_cert)


def test_a_client_certificate_that_is_not_one_is_a_caller_error(
    verify: Verify, bound: Callable[..., str], rsa_cert: Certificate, other_rsa_cert: Certificate
) -> None:
    token = bound({"x5t#S256": x5t_s256(rsa_cert)})
    with pytest.raises(InvalidArgumentError, match=r"^client_certificate= not a PEM or DER cert"):
        verify(token, client_certificate=b"\x30\x03garbage")
    with pytest.raises(InvalidArgumentError, match=r"^client_certificate= holds 2 certificates"):
        verify(token, client_certificate=rsa_cert.pem + other_rsa_cert.pem)
    # A wrong type is refused whatever the token (a bug in the caller, not the client's doing).
    with pytest.raises(InvalidArgumentError, match=r"^client_certificate= takes .*, not int$"):
        verify(bound(), client_certificate=42)
    with pytest.raises(InvalidArgumentError, match=r"client_certificate=.*forwarded_client_cert="):
        verify(token, client_certificate=rsa_cert, forwarded_client_cert=xfcc_hash(rsa_cert))
    with pytest.raises(InvalidArgumentError, match=r"^forwarded_client_cert= must be a str"):
        verify(token, forwarded_client_cert=b"Hash=00")


# -- the cnf claim itself ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cnf",
    ["x5t", ["x5t#S256"], 7, True, {"x5t#S256": ""}, {"x5t#S256": 5}, {"jkt": None}],
)
def test_a_cnf_that_is_not_an_object_of_thumbprints_is_refused(
    verify: Verify, bound: Callable[..., str], rsa_cert: Certificate, cnf: Any
) -> None:
    message = refused(verify, "cnf", bound(cnf), client_certificate=rsa_cert)
    assert "malformed" in message
    if not isinstance(cnf, dict):
        kind = {str: "a string", list: "an array", int: "a number", bool: "a boolean"}[type(cnf)]
        assert message.startswith(f"the token's 'cnf' claim is {kind}, not a JSON object")


def test_a_null_cnf_is_refused(verify: Verify, issuer_key: rsa.RSAPrivateKey) -> None:
    token = sign({**claims_for(), "cnf": None}, issuer_key)
    assert "'cnf' claim is null, not a JSON object" in refused(verify, "cnf", token)


def test_plain_bearer_tokens_and_unknown_cnf_members_are_as_before(
    verify: Verify, bound: Callable[..., str], rsa_cert: Certificate
) -> None:
    assert "cnf" not in verify(bound())
    assert "cnf" not in verify(bound(), scheme="Bearer", client_certificate=rsa_cert)
    # Nothing to bind to: what the request showed is not even parsed.
    assert "cnf" not in verify(bound(), forwarded_client_cert="a,b", dpop_proof="x.y.z")
    # RFC 7800 section 3.1: members not understood are ignored.
    jwk_bound = bound({"kid": "key-1", "jwk": {"kty": "EC"}})
    assert verify(jwk_bound)["cnf"]["kid"] == "key-1"


def test_the_binding_is_checked_after_every_other_check(
    verify: Verify, bound: Callable[..., str], rsa_cert: Certificate
) -> None:
    token = bound({"x5t#S256": x5t_s256(rsa_cert)}, exp=NOW - 3600)
    refused(verify, "expired", token)
    refused(verify, "audience", bound({"jkt": "x"}, aud="api://other"), scheme="Bearer")


# -- DPoP-bound tokens (RFC 9449) ----------------------------------------------------------------


@pytest.mark.parametrize("scheme", [None, "DPoP", "dpop", "DPOP"])
def test_a_good_proof_passes(
    verify: Verify, bound: Callable[..., str], dpop_key: DPoPKey, scheme: str | None
) -> None:
    token = bound({"jkt": dpop_key.thumbprint})
    claims = verify(token, dpop_proof=proof(dpop_key, token), htm="GET", htu=URL, scheme=scheme)
    assert claims["cnf"] == {"jkt": dpop_key.thumbprint}


def test_the_proof_may_come_as_the_headers_values(
    verify: Verify, bound: Callable[..., str], dpop_key: DPoPKey
) -> None:
    token = bound({"jkt": dpop_key.thumbprint})
    one = proof(dpop_key, token)
    assert verify(token, dpop_proof=[one], htm="GET", htu=URL)["cnf"]
    two = [proof(dpop_key, token), proof(dpop_key, token)]
    message = refused(verify, "dpop_header", token, dpop_proof=two, htm="GET", htu=URL)
    assert "2 DPoP headers; exactly one is allowed" in message


def test_a_proof_from_another_key_is_refused(
    verify: Verify, bound: Callable[..., str], dpop_key: DPoPKey, other_dpop_key: DPoPKey
) -> None:
    token = bound({"jkt": dpop_key.thumbprint})
    message = refused(
        verify, "cnf_jkt", token, dpop_proof=proof(other_dpop_key, token), htm="GET", htu=URL
    )
    assert message == (
        f"the DPoP proof is signed with key {other_dpop_key.thumbprint!r}, and the token is "
        f"bound to key {dpop_key.thumbprint!r} (cnf jkt); only the holder of the token's key "
        "may use it"
    )


def test_a_missing_proof_is_refused(
    verify: Verify, bound: Callable[..., str], dpop_key: DPoPKey
) -> None:
    token = bound({"jkt": dpop_key.thumbprint})
    for kw in ({}, {"scheme": "DPoP", "htm": "GET", "htu": URL}):
        message = refused(verify, "dpop_header", token, **kw)
        assert message.startswith(
            "the token is DPoP-bound (cnf jkt) and the request has no DPoP proof"
        )
        assert "dpop_proof=" in message


@pytest.mark.parametrize(
    ("made", "check"),
    [
        ({"htm": "POST"}, "dpop_htm"),
        ({"htu": "https://billing.example/other"}, "dpop_htu"),
        ({"htu": "https://evil.example/invoices"}, "dpop_htu"),
        ({"access_token": "another.access.token"}, "dpop_ath"),
        ({"now": NOW - 3600}, "dpop_iat"),
    ],
)
def test_a_proof_for_another_request_is_refused(
    verify: Verify,
    bound: Callable[..., str],
    dpop_key: DPoPKey,
    made: dict[str, Any],
    check: str,
) -> None:
    token = bound({"jkt": dpop_key.thumbprint})
    kw = {"htm": "GET", "htu": URL, "now": NOW, "access_token": token, **made}
    wrong = make_proof(dpop_key, **kw)
    message = refused(verify, check, token, dpop_proof=wrong, htm="GET", htu=URL)
    assert message.startswith("DPoP proof refused: ")


def test_a_replayed_proof_is_refused(
    verify: Verify, bound: Callable[..., str], dpop_key: DPoPKey
) -> None:
    token = bound({"jkt": dpop_key.thumbprint})
    once = proof(dpop_key, token)
    assert verify(token, dpop_proof=once, htm="GET", htu=URL)
    message = refused(verify, "dpop_replay", token, dpop_proof=once, htm="GET", htu=URL)
    assert "already used" in message
    assert verify(token, dpop_proof=proof(dpop_key, token), htm="GET", htu=URL)


def test_now_sets_the_proofs_time_window_too(
    verify: Verify, bound: Callable[..., str], dpop_key: DPoPKey
) -> None:
    token = bound({"jkt": dpop_key.thumbprint})
    later = proof(dpop_key, token, now=NOW + 1800)
    refused(verify, "dpop_iat", token, dpop_proof=later, htm="GET", htu=URL)
    assert verify(token, dpop_proof=later, htm="GET", htu=URL, now=NOW + 1800)


def test_a_required_nonce(verify: Verify, bound: Callable[..., str], dpop_key: DPoPKey) -> None:
    token = bound({"jkt": dpop_key.thumbprint})
    kw = {"htm": "GET", "htu": URL, "dpop_nonce": "eyJ7S_zG.nonce-1"}
    message = refused(verify, "dpop_nonce", token, dpop_proof=proof(dpop_key, token), **kw)
    assert "does not carry the server's current nonce" in message
    stale = proof(dpop_key, token, nonce="eyJ7S_zG.nonce-0")
    refused(verify, "dpop_nonce", token, dpop_proof=stale, **kw)
    fresh = proof(dpop_key, token, nonce="eyJ7S_zG.nonce-1")
    assert verify(token, dpop_proof=fresh, **kw)


def test_a_dpop_bound_token_sent_as_bearer_is_refused(
    verify: Verify, bound: Callable[..., str], dpop_key: DPoPKey
) -> None:
    token = bound({"jkt": dpop_key.thumbprint})
    for scheme in ("Bearer", "bearer"):
        message = refused(
            verify,
            "dpop_scheme",
            token,
            scheme=scheme,
            dpop_proof=proof(dpop_key, token),
            htm="GET",
            htu=URL,
        )
        assert "presented with the Bearer scheme" in message
        assert "RFC 9449 section 7.2" in message


def test_an_unknown_scheme_is_refused(verify: Verify, bound: Callable[..., str]) -> None:
    message = refused(verify, "dpop_scheme", bound(), scheme="Basic")
    assert message.startswith("the Authorization scheme is 'Basic'; an access token comes as")


def test_an_unbound_token_sent_as_dpop_is_refused(
    verify: Verify, bound: Callable[..., str], rsa_cert: Certificate, dpop_key: DPoPKey
) -> None:
    for token in (bound(), bound({"x5t#S256": x5t_s256(rsa_cert)})):
        message = refused(
            verify,
            "dpop_unbound",
            token,
            scheme="DPoP",
            dpop_proof=proof(dpop_key, token),
            htm="GET",
            htu=URL,
            client_certificate=rsa_cert,
        )
        assert "presented with the DPoP scheme but is not DPoP-bound" in message


def test_htm_and_htu_are_required_for_a_dpop_bound_token(
    verify: Verify, bound: Callable[..., str], dpop_key: DPoPKey
) -> None:
    token = bound({"jkt": dpop_key.thumbprint})
    good = proof(dpop_key, token)
    with pytest.raises(InvalidArgumentError, match=r"^htm= is required to check the DPoP proof"):
        verify(token, dpop_proof=good, htu=URL)
    with pytest.raises(InvalidArgumentError, match=r"^htu= is required to check the DPoP proof"):
        verify(token, dpop_proof=good, htm="GET", htu="")
    # Neither was given, so the proof was never looked at (nor its jti spent).
    assert verify(token, dpop_proof=good, htm="GET", htu=URL)


def test_both_bindings_need_both(
    verify: Verify, bound: Callable[..., str], rsa_cert: Certificate, dpop_key: DPoPKey
) -> None:
    token = bound({"x5t#S256": x5t_s256(rsa_cert), "jkt": dpop_key.thumbprint})
    dpop = {"htm": "GET", "htu": URL}
    refused(verify, "cnf_x5t#S256", token, dpop_proof=proof(dpop_key, token), **dpop)
    refused(verify, "dpop_header", token, client_certificate=rsa_cert)
    both = verify(token, client_certificate=rsa_cert, dpop_proof=proof(dpop_key, token), **dpop)
    assert set(both["cnf"]) == {"x5t#S256", "jkt"}


def test_wrong_argument_types_are_caller_errors(verify: Verify, bound: Callable[..., str]) -> None:
    with pytest.raises(InvalidArgumentError, match=r"^dpop_proof= takes the DPoP header's value"):
        verify(bound(), dpop_proof=b"a.b.c")
    with pytest.raises(InvalidArgumentError, match=r"^htm= must be a str, not bytes$"):
        verify(bound(), htm=b"GET")
    with pytest.raises(InvalidArgumentError, match=r"^scheme= must be a str"):
        verify(bound(), scheme=1)


# -- the replay caches -------------------------------------------------------------------------


def test_a_verifier_keeps_one_replay_cache_and_may_share_it(
    jwks: dict[str, Any], bound: Callable[..., str], dpop_key: DPoPKey
) -> None:
    token = bound({"jkt": dpop_key.thumbprint})
    once = proof(dpop_key, token)
    kw = {"dpop_proof": once, "htm": "GET", "htu": URL, "now": NOW}
    with TokenVerifier(jwks=jwks, issuer=ISSUER, audience=APP_ID) as own:
        assert own.verify(token, **kw)
        with pytest.raises(TokenValidationError) as caught:
            own.verify(token, **kw)
        assert caught.value.check == "dpop_replay"
    shared = JtiCache()
    first = TokenVerifier(jwks=jwks, issuer=ISSUER, audience=APP_ID, dpop_jti_cache=shared)
    second = TokenVerifier(jwks=jwks, issuer=ISSUER, audience=APP_ID, dpop_jti_cache=shared)
    assert first.verify(token, **kw)
    assert len(shared) == 1
    with pytest.raises(TokenValidationError) as caught:
        second.verify(token, **kw)
    assert caught.value.check == "dpop_replay"
    with pytest.raises(InvalidArgumentError, match=r"^dpop_jti_cache= takes a certauth\.dpop"):
        TokenVerifier(jwks=jwks, issuer=ISSUER, audience=APP_ID, dpop_jti_cache=set())  # type: ignore[arg-type]


def test_verify_access_token_remembers_proofs_across_calls(
    jwks: dict[str, Any], bound: Callable[..., str], dpop_key: DPoPKey
) -> None:
    token = bound({"jkt": dpop_key.thumbprint})
    kw: dict[str, Any] = {
        "jwks": jwks,
        "issuer": ISSUER,
        "audience": APP_ID,
        "now": NOW,
        "dpop_proof": proof(dpop_key, token),
        "htm": "GET",
        "htu": URL,
    }
    assert verify_access_token(token, **kw)
    with pytest.raises(TokenValidationError) as caught:
        verify_access_token(token, **kw)
    assert caught.value.check == "dpop_replay"
    assert len(verifier_module._offline_dpop_jti) >= 1
    with pytest.raises(InvalidArgumentError, match=r"^dpop_jti_cache= takes"):
        verify_access_token(token, dpop_jti_cache={}, **kw)


def test_verify_access_token_keeps_a_replay_cache_per_shared_key_source(
    issuer_key: rsa.RSAPrivateKey, jwks: dict[str, Any], dpop_key: DPoPKey
) -> None:
    from _oidc_server import OidcServer

    verifier_module._shared.clear()
    try:
        with OidcServer() as first, OidcServer() as second:
            for server in (first, second):
                server.jwks = jwks
            tokens = {
                server: sign(
                    claims_for(iss=server.issuer, cnf={"jkt": dpop_key.thumbprint}), issuer_key
                )
                for server in (first, second)
            }
            proofs = {server: proof(dpop_key, token) for server, token in tokens.items()}
            for server in (first, second):
                kw = {"dpop_proof": proofs[server], "htm": "GET", "htu": URL, "now": NOW}
                call = {"issuer": server.issuer, "audience": APP_ID, **kw}
                assert verify_access_token(tokens[server], **call)
                with pytest.raises(TokenValidationError) as caught:
                    verify_access_token(tokens[server], **call)
                assert caught.value.check == "dpop_replay"
            caches = [source.dpop_jti for source in verifier_module._shared.values()]
            assert len(caches) == 2
            assert caches[0] is not caches[1]
            assert [len(cache) for cache in caches] == [1, 1]
    finally:
        verifier_module._shared.clear()
