"""Every parser of outside input, fed hostile input: only the documented typed errors come out.

Outside input: certificate and key files (PEM/DER/PFX), JWTs (``certauth decode``/``verify``),
token responses, OpenID discovery documents and JWKS from servers, and, on the emulator's side,
HTTP forms, headers and client assertions from clients. For each, the property is the same:
the function returns a value or raises the error its docstring names (a
:class:`~certauth.errors.CertauthError` subclass, or the emulator's ``EntraError``) and never
anything else (an ``OverflowError`` or ``RecursionError`` escaping would be a crash, and in the
emulator an HTTP 500). Inputs are bounded (the parsers cap what they read), so each call is
also checked for time; memory is checked on the worst cases in ``test_hardening_limits.py``.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from _hardening import (
    JSON_SCALARS,
    JSON_VALUES,
    NASTY_NUMBERS,
    NASTY_STRINGS,
    b64url,
    budget,
    documents,
    json_bytes,
    jwt_shaped,
    objects,
)
from hypothesis import given
from hypothesis import strategies as st

from certauth.authority import Authority, check_endpoint_url, normalize_authority_host
from certauth.certificates import Certificate, load_certificate
from certauth.emulator import Emulator
from certauth.emulator.checks import EntraError, Policy, ReplayCache, TokenRequest
from certauth.emulator.checks import check_token_request as check
from certauth.emulator.server import HttpRequest, HttpResponse
from certauth.emulator.tokens import Grant
from certauth.errors import (
    CertificateError,
    ConfigurationError,
    InvalidArgumentError,
    TokenRequestError,
    TokenValidationError,
    TransportError,
)
from certauth.protocol import CLIENT_ASSERTION_TYPE, Token, parse_token_response
from certauth.verify import KeySet, decode_unverified, verify_access_token

# Damaged PFX files make cryptography warn before it falls back to BER; the warning is noise here.
pytestmark = pytest.mark.filterwarnings("ignore:PKCS#12 bundle could not be parsed:UserWarning")

CLIENT_ID = "22222222-3333-4444-5555-666666666666"
#: One parser call on at most a few KiB of input; far above what any of them needs.
SLOW = 2.0


class Timer:
    """Fails when a single parser call takes longer than ``SLOW`` seconds."""

    def __enter__(self) -> Timer:
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        elapsed = time.perf_counter() - self.started
        assert elapsed < SLOW, f"one call took {elapsed:.2f} s"


# -- certificates and keys: PEM, DER, PFX ---------------------------------------------------------


def _mutations(data: bytes) -> st.SearchStrategy[bytes]:
    """``data`` truncated, with bytes flipped, or with a slice duplicated."""

    def flip(position: int, value: int) -> bytes:
        at = position % len(data)
        return data[:at] + bytes([value]) + data[at + 1 :]

    return (
        st.integers(0, len(data)).map(lambda n: data[:n])
        | st.builds(flip, st.integers(0, 10**6), st.integers(0, 255))
        | st.builds(
            lambda a, b: data[: a % len(data)] + data[b % len(data) :] + data[b % len(data) :],
            st.integers(0, 10**6),
            st.integers(0, 10**6),
        )
    )


PEM_LABELS = st.sampled_from(
    [
        "CERTIFICATE",
        "PRIVATE KEY",
        "ENCRYPTED PRIVATE KEY",
        "RSA PRIVATE KEY",
        "EC PRIVATE KEY",
        "OPENSSH PRIVATE KEY",
        "PUBLIC KEY",
        "X509 CRL",
        "TRUSTED CERTIFICATE",
    ]
)


@st.composite
def pem_files(draw: st.DrawFn) -> bytes:
    """PEM-looking files: random blocks, bodies of base64 or junk, missing END lines."""
    blocks = []
    for _ in range(draw(st.integers(1, 3))):
        label = draw(PEM_LABELS)
        body = draw(st.binary(max_size=120).map(b64url) | st.text(max_size=40))
        end = draw(st.sampled_from([label, label, "OTHER", ""]))
        blocks.append(f"-----BEGIN {label}-----\n{body}\n-----END {end}-----\n")
    return "".join(blocks).encode("utf-8", "surrogatepass")


@pytest.fixture(scope="module")
def cert_files(rsa_cert: Certificate) -> dict[str, bytes]:
    return {
        "pem": rsa_cert.private_key_pem() + rsa_cert.pem,
        "der": rsa_cert.der,
        "pfx": rsa_cert.to_pfx("pfx-hardening"),
    }


@pytest.mark.slow
@budget(150)
@given(
    data=st.binary(max_size=600)
    | pem_files()
    | st.binary(max_size=60).map(lambda b: b"\x30\x82\x01\x00\x02\x01\x03" + b),
    # Sampled, not generated: every password certauth sees joins the secret scan's registry,
    # and a generated "https" would then be flagged in every URL error that follows.
    password=st.sampled_from([None, "", "hardening-password"]),
)
def test_load_certificate_on_arbitrary_bytes(data: bytes, password: str | None) -> None:
    with Timer():
        try:
            loaded = load_certificate(data, password=password)
        except CertificateError:
            return  # includes PasswordError, KeyMismatchError, UnsupportedKeyError
    assert isinstance(loaded, Certificate)


@budget(120)
@given(data=st.data(), form=st.sampled_from(["pem", "der", "pfx"]))
def test_load_certificate_on_damaged_real_files(
    cert_files: dict[str, bytes], data: st.DataObject, form: str
) -> None:
    damaged = data.draw(_mutations(cert_files[form]))
    password = data.draw(st.sampled_from([None, "pfx-hardening", "wrong"]))
    with Timer():
        try:
            loaded = load_certificate(damaged, password=password)
        except CertificateError:
            return
    assert isinstance(loaded, Certificate)


@budget(60)
@given(key=st.binary(max_size=300) | pem_files())
def test_separate_key_file_of_arbitrary_bytes(rsa_cert: Certificate, key: bytes) -> None:
    with Timer(), contextlib.suppress(CertificateError):
        load_certificate(rsa_cert.pem, key=key, password="x")


def test_a_megabyte_of_pem_headers_is_refused_quickly() -> None:
    # A file of BEGIN lines without END lines: a back-referencing regex rescans the rest of
    # the input for each of them (minutes for 1 MiB); the loader must stay linear.
    data = b"-----BEGIN CERTIFICATE-----\n" * (1024 * 1024 // 28)
    started = time.perf_counter()
    with pytest.raises(CertificateError, match="a PEM header without a matching END line"):
        load_certificate(data)
    assert time.perf_counter() - started < 2


# -- JWTs: decode and verify ----------------------------------------------------------------------

HEADERS = objects(
    {
        "alg": st.sampled_from(["RS256", "PS256", "ES256", "none", "HS256", "RS1"]) | JSON_SCALARS,
        "kid": st.sampled_from(["k1", "k2"]) | JSON_SCALARS,
        "typ": JSON_SCALARS,
        "crit": JSON_VALUES,
        "x5t": JSON_SCALARS,
        "nonce": JSON_SCALARS,
    }
)
CLAIMS = objects(
    {
        "iss": st.just("https://issuer.example/tenant/v2.0") | JSON_SCALARS,
        "aud": st.just("api://hardening") | JSON_VALUES,
        "exp": NASTY_NUMBERS | JSON_SCALARS,
        "nbf": NASTY_NUMBERS | JSON_SCALARS,
        "iat": NASTY_NUMBERS | JSON_SCALARS,
        "tid": JSON_SCALARS,
        "scp": JSON_VALUES,
        "roles": JSON_VALUES,
    }
)
TOKENS = jwt_shaped(HEADERS, CLAIMS) | st.sampled_from(
    ["", ".", "..", "a.b.c.d.e", "Bearer x.y.z", "x" * 70_000]
)


@pytest.fixture(scope="module")
def signing(rsa_cert: Certificate) -> dict[str, Any]:
    """A JWKS with rsa_cert's public key as kid ``k1``, and the key to sign with."""
    numbers = rsa_cert.x509.public_key().public_numbers()  # type: ignore[union-attr]
    jwk = {
        "kty": "RSA",
        "kid": "k1",
        "n": b64url(numbers.n.to_bytes(256, "big")),
        "e": b64url(numbers.e.to_bytes(3, "big")),
    }
    return {"jwks": {"keys": [jwk]}, "key": rsa_cert.private_key}


@budget(200)
@given(token=TOKENS)
def test_decode_unverified_on_arbitrary_tokens(token: str) -> None:
    with Timer():
        try:
            header, claims = decode_unverified(token)
        except TokenValidationError as exc:
            failed = exc.check
        else:
            failed = None
    if failed is not None:
        assert failed == "format"
        return
    assert isinstance(header, dict)
    assert isinstance(claims, dict)


#: The checks that can refuse a token no key of the set signed: the claims come after these.
UNSIGNED_CHECKS = ("format", "algorithm", "kid", "signature")


@budget(150)
@given(token=TOKENS)
def test_verify_access_token_on_arbitrary_tokens(signing: dict[str, Any], token: str) -> None:
    with Timer(), pytest.raises(TokenValidationError) as caught:
        verify_access_token(token, jwks=signing["jwks"], audience="api://hardening")
    # Not signed by the key: refused before any claim is looked at.
    assert caught.value.check in UNSIGNED_CHECKS


@budget(80)
@given(header=HEADERS, claims=CLAIMS)
def test_verify_access_token_on_validly_signed_hostile_claims(
    signing: dict[str, Any], header: dict[str, Any], claims: dict[str, Any]
) -> None:
    # A correct RS256 signature over whatever header and claims: every claim check runs.
    header = {**header, "alg": "RS256", "kid": "k1"}
    head, body = b64url(json_bytes(header)), b64url(json_bytes(claims))
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    signature = signing["key"].sign(f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
    token = f"{head}.{body}.{b64url(signature)}"
    with Timer():
        try:
            result = verify_access_token(
                token,
                jwks=signing["jwks"],
                issuer="https://issuer.example/tenant/v2.0",
                audience="api://hardening",
                now=1_700_000_000,
            )
        except TokenValidationError:
            return
    # Accepted: then every rule held.
    assert result["aud"] == "api://hardening" or "api://hardening" in result["aud"]
    assert math.isfinite(result["exp"])
    assert result["exp"] + 60 >= 1_700_000_000


JWKS = objects(
    {
        "keys": st.lists(
            objects(
                {
                    "kty": st.sampled_from(["RSA", "EC", "oct", "OKP"]) | JSON_SCALARS,
                    "kid": st.sampled_from(["k1", "k2"]) | JSON_SCALARS,
                    "n": st.binary(max_size=300).map(b64url) | JSON_SCALARS,
                    "e": st.sampled_from(["AQAB", "AQ", "AA", ""]) | JSON_SCALARS,
                    "crv": st.sampled_from(["P-256", "P-384", "P-521", "X25519"]) | JSON_SCALARS,
                    "x": st.binary(max_size=70).map(b64url) | JSON_SCALARS,
                    "y": st.binary(max_size=70).map(b64url) | JSON_SCALARS,
                    "alg": st.sampled_from(["RS256", "HS256", "ES256"]) | JSON_SCALARS,
                    "use": st.sampled_from(["sig", "enc"]) | JSON_SCALARS,
                    "key_ops": JSON_VALUES,
                }
            )
            | JSON_SCALARS,
            max_size=4,
        )
        | JSON_SCALARS
    }
)


@budget(150)
@given(document=JWKS | JSON_VALUES, token=TOKENS)
def test_keyset_from_arbitrary_jwks(document: Any, token: str) -> None:
    with Timer():
        try:
            keys = KeySet.from_jwks(document)
        except ConfigurationError:
            return
        assert len(keys) + len(keys.skipped) == len(document["keys"])
        with pytest.raises(TokenValidationError) as caught:
            verify_access_token(token, jwks=keys, audience="api://hardening")
        assert caught.value.check in UNSIGNED_CHECKS


# -- token responses ------------------------------------------------------------------------------

TOKEN_FIELDS = {
    "access_token": st.just("eyJ0eXAi.x.y") | JSON_SCALARS,
    "token_type": JSON_SCALARS,
    "expires_in": NASTY_NUMBERS | NASTY_STRINGS | JSON_SCALARS,
    "expires_on": NASTY_NUMBERS | NASTY_STRINGS | JSON_SCALARS,
    "refresh_in": NASTY_NUMBERS | NASTY_STRINGS | JSON_SCALARS,
    "ext_expires_in": JSON_SCALARS,
    "error": st.sampled_from(["invalid_client", "invalid_request"]) | JSON_SCALARS,
    "error_description": st.sampled_from(["AADSTS700027: no", "AADSTS99999999999999999999"])
    | JSON_SCALARS,
    "error_codes": st.lists(NASTY_NUMBERS | NASTY_STRINGS | JSON_SCALARS, max_size=3)
    | JSON_SCALARS,
    "trace_id": JSON_SCALARS,
    "correlation_id": JSON_SCALARS,
}


@budget(300)
@given(status=st.integers(100, 599), body=documents(TOKEN_FIELDS))
def test_parse_token_response_on_arbitrary_answers(status: int, body: bytes) -> None:
    with Timer():
        try:
            token = parse_token_response(
                status, body, url="https://sts.example/t/oauth2/v2.0/token", now=1_700_000_000
            )
        except TokenRequestError as exc:
            refused: TokenRequestError | None = exc
        except TransportError:
            return
        else:
            refused = None
    if refused is not None:
        assert isinstance(refused.error, str)
        assert all(isinstance(code, int) for code in refused.error_codes)
        return
    assert isinstance(token, Token)
    assert isinstance(token.access_token, str)
    assert token.access_token
    assert isinstance(token.expires_on, int)
    assert isinstance(token.expires_in, int)
    assert token.refresh_on is None or isinstance(token.refresh_on, int)
    # What is accepted can be printed into a header line and is not dead on arrival.
    assert re.fullmatch(r"[A-Za-z0-9\-._~+/]+=*", token.access_token)
    assert re.fullmatch(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+", token.token_type)
    assert token.expires_in > 0
    assert token.expires_on > 1_700_000_000


# -- discovery documents and endpoint URLs --------------------------------------------------------

URLS = (
    st.sampled_from(
        [
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token",
            "https://login.microsoftonline.com/common/oauth2/v2.0/token",
            "https://x.b2clogin.com/x.onmicrosoft.com/B2C_1_a/oauth2/v2.0/token",
            "http://127.0.0.1:1/t/oauth2/token",
            "http://example.com/token",
            "https://[::1/token",
            "https://h:99999/token",
            "https://h/t#frag",
            "https://\u2100/t",
            "https://h/\r\n/t",
            "ftp://h/t",
            "//h/t",
        ]
    )
    | st.text(max_size=40)
    | st.builds(lambda p: f"https://sts.example/{p}", st.text(max_size=30))
)


@pytest.mark.slow
@budget(200)
@given(
    document=objects(
        {
            "issuer": st.just("https://sts.example/t") | URLS | JSON_SCALARS,
            "token_endpoint": URLS | JSON_SCALARS,
            "jwks_uri": URLS | JSON_SCALARS,
            "token_endpoint_auth_methods_supported": JSON_VALUES,
            "token_endpoint_auth_signing_alg_values_supported": JSON_VALUES,
        }
    )
    | JSON_VALUES
)
def test_authority_from_arbitrary_discovery_documents(document: Any) -> None:
    with Timer():
        try:
            authority = Authority.from_discovery("https://sts.example/t", document)
        except (ConfigurationError, InvalidArgumentError):
            return
    assert authority.token_endpoint == document["token_endpoint"]
    assert authority.default_alg("RSA") in {"RS256", "PS256", "RS384", "PS384", "RS512", "PS512"}


@budget(200)
@given(url=URLS)
def test_endpoint_urls_and_authority_hosts(url: str) -> None:
    with Timer():
        for parse in (check_endpoint_url, normalize_authority_host, Authority.from_token_endpoint):
            with contextlib.suppress(ConfigurationError, InvalidArgumentError):
                parse(url)


# -- the emulator: forms, headers, assertions, routes ---------------------------------------------


@pytest.fixture(scope="module")
def tenant(rsa_cert: Certificate) -> Iterator[Emulator]:
    with Emulator() as emulator:
        emulator.register(CLIENT_ID, rsa_cert, roles=["Things.Read"])
        emulator.register_secret(CLIENT_ID, "hardening-client-secret")
        yield emulator


def _request(
    tenant: Emulator,
    *,
    method: str = "POST",
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
) -> HttpRequest:
    return HttpRequest(
        method=method,
        path=path,
        query=query or {},
        headers={"content-type": "application/x-www-form-urlencoded", **(headers or {})},
        body=body,
        base_url=tenant.authority_host,
    )


def _assertion_strategy(rsa_cert: Certificate) -> st.SearchStrategy[str]:
    thumbprints = st.sampled_from([rsa_cert.x5t, rsa_cert.x5t_s256, rsa_cert.x5t + "=="])
    header = objects(
        {
            "alg": st.sampled_from(["RS256", "PS256", "PS512", "ES256", "none"]) | JSON_SCALARS,
            "x5t": thumbprints | NASTY_STRINGS | JSON_SCALARS,
            "x5t#S256": thumbprints | NASTY_STRINGS | JSON_SCALARS,
            "kid": JSON_SCALARS,
        }
    )
    claims = objects(
        {
            "iss": st.just(CLIENT_ID) | JSON_SCALARS,
            "sub": st.just(CLIENT_ID) | JSON_SCALARS,
            "aud": JSON_VALUES,
            "exp": NASTY_NUMBERS | JSON_SCALARS,
            "nbf": NASTY_NUMBERS | JSON_SCALARS,
            "iat": NASTY_NUMBERS | JSON_SCALARS,
            "jti": JSON_SCALARS,
        }
    )
    return jwt_shaped(header, claims)


@pytest.mark.slow
@budget(250)
@given(data=st.data(), strict=st.booleans(), endpoint=st.sampled_from(["v2", "v1", "b2c"]))
def test_check_token_request_on_arbitrary_forms(
    tenant: Emulator, rsa_cert: Certificate, data: st.DataObject, strict: bool, endpoint: str
) -> None:
    form = data.draw(
        st.fixed_dictionaries(
            {},
            optional={
                "grant_type": st.just("client_credentials") | NASTY_STRINGS,
                "client_id": st.just(CLIENT_ID) | NASTY_STRINGS,
                "scope": st.sampled_from(["api://x/.default", "a/.default b/.default", "/.default"])
                | NASTY_STRINGS
                | st.text(max_size=20),
                "resource": NASTY_STRINGS,
                "client_assertion_type": st.just(CLIENT_ASSERTION_TYPE) | NASTY_STRINGS,
                "client_assertion": _assertion_strategy(rsa_cert),
                "client_secret": st.just("hardening-client-secret") | NASTY_STRINGS,
            },
        )
    )
    authorization = data.draw(
        st.none() | NASTY_STRINGS | st.text(max_size=30).map("Basic ".__add__)
    )
    url = f"{tenant.authority_host}/{tenant.tenant_id}/oauth2/v2.0/token"
    request = TokenRequest(
        endpoint=endpoint,  # type: ignore[arg-type]
        tenant=data.draw(st.sampled_from([tenant.tenant_id, "common", "nobody"]) | NASTY_STRINGS),
        url=url,
        base_url=tenant.authority_host,
        form=form,
        policy="B2C_1_x" if endpoint == "b2c" else None,
        authorization=authorization,
    )
    with Timer():
        try:
            grant = check(
                request,
                tenant.registry,
                now=time.time(),
                policy=Policy(strict=strict),
                replay=ReplayCache(),
            )
        except EntraError as error:
            refusal: EntraError | None = error
        else:
            refusal = None
    if refusal is not None:
        assert refusal.status in (400, 401)
        return
    assert isinstance(grant, Grant)


def _form_body(fields: dict[str, str]) -> bytes:
    from urllib.parse import urlencode

    return urlencode(fields).encode()


@pytest.mark.slow
@budget(200)
@given(
    data=st.data(),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
)
def test_emulator_routes_never_answer_500(
    tenant: Emulator, rsa_cert: Certificate, data: st.DataObject, method: str
) -> None:
    segment = st.sampled_from(
        [
            tenant.tenant_id,
            "common",
            "oauth2",
            "v2.0",
            "token",
            "discovery",
            "keys",
            "B2C_1_x",
            ".well-known",
            "openid-configuration",
            "instance",
            "%2F",
            "%00",
            "..",
            "",
        ]
    ) | st.text(max_size=8)
    path = "/" + "/".join(data.draw(st.lists(segment, max_size=5)))
    body = data.draw(
        st.binary(max_size=200)
        | st.builds(
            _form_body,
            st.dictionaries(
                st.sampled_from(
                    [
                        "grant_type",
                        "client_id",
                        "scope",
                        "client_assertion",
                        "client_assertion_type",
                        "client_secret",
                        "resource",
                    ]
                ),
                NASTY_STRINGS | st.text(max_size=20),
            ),
        )
        | _assertion_strategy(rsa_cert).map(
            lambda a: _form_body(
                {
                    "grant_type": "client_credentials",
                    "client_id": CLIENT_ID,
                    "scope": "api://x/.default",
                    "client_assertion": a,
                    "client_assertion_type": CLIENT_ASSERTION_TYPE,
                }
            )
        )
    )
    headers = data.draw(
        st.fixed_dictionaries(
            {},
            optional={
                "authorization": NASTY_STRINGS | st.text(max_size=30),
                "client-request-id": NASTY_STRINGS | st.uuids().map(str),
                "content-type": st.sampled_from(
                    ["application/json", "application/x-www-form-urlencoded; charset=latin-1"]
                )
                | NASTY_STRINGS,
            },
        )
    )
    query = data.draw(
        st.dictionaries(
            st.sampled_from(["authorization_endpoint", "api-version", "x"]),
            NASTY_STRINGS | st.text(max_size=30),
            max_size=2,
        )
    )
    request = _request(tenant, method=method, path=path, body=body, headers=headers, query=query)
    with Timer():
        response = tenant._handle(request)
    assert isinstance(response, HttpResponse)
    assert response.status < 500, (path, response.body[:200])


@budget(100)
@given(header=NASTY_STRINGS | st.text(max_size=40) | st.binary(max_size=30).map(b64url))
def test_basic_authorization_headers_of_any_shape(tenant: Emulator, header: str) -> None:
    form = {"grant_type": "client_credentials", "scope": "api://x/.default"}
    for value in (header, f"Basic {header}", f"basic  {header} "):
        request = _request(
            tenant,
            path=f"/{tenant.tenant_id}/oauth2/v2.0/token",
            body=_form_body(form),
            headers={"authorization": value},
        )
        response = tenant._handle(request)
        assert response.status in (400, 401), response.body[:200]


@pytest.mark.slow
@budget(120)
@given(data=st.data(), strict=st.booleans(), alg=st.sampled_from(["RS256", "PS256"]))
def test_validly_signed_assertions_with_hostile_claims(
    tenant: Emulator, rsa_cert: Certificate, data: st.DataObject, strict: bool, alg: str
) -> None:
    # Past the signature check: iss/sub, aud, exp/nbf, jti and the strict rules see any value.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    url = f"{tenant.authority_host}/{tenant.tenant_id}/oauth2/v2.0/token"
    now = int(time.time())
    claims = data.draw(
        objects(
            {
                "iss": st.just(CLIENT_ID) | JSON_SCALARS,
                "sub": st.just(CLIENT_ID) | JSON_SCALARS,
                "aud": st.sampled_from([url, [url], [url, url], [], url.upper()]) | JSON_VALUES,
                "exp": st.sampled_from([now + 300, now - 10**6]) | NASTY_NUMBERS | JSON_SCALARS,
                "nbf": st.sampled_from([now, now + 10**6]) | NASTY_NUMBERS | JSON_SCALARS,
                "iat": st.just(now) | NASTY_NUMBERS | JSON_SCALARS,
                "jti": st.uuids().map(str) | JSON_SCALARS,
            }
        )
    )
    header = {"alg": alg, "typ": "JWT", "x5t": rsa_cert.x5t, "x5t#S256": rsa_cert.x5t_s256}
    signing_input = f"{b64url(json_bytes(header))}.{b64url(json_bytes(claims))}".encode()
    scheme = (
        padding.PKCS1v15()
        if alg == "RS256"
        else padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    )
    signature = rsa_cert.private_key.sign(signing_input, scheme, hashes.SHA256())  # type: ignore[union-attr,arg-type]
    form = {
        "grant_type": "client_credentials",
        "client_id": CLIENT_ID,
        "scope": "api://x/.default",
        "client_assertion_type": CLIENT_ASSERTION_TYPE,
        "client_assertion": f"{signing_input.decode()}.{b64url(signature)}",
    }
    request = TokenRequest(
        endpoint="v2", tenant=tenant.tenant_id, url=url, base_url=tenant.authority_host, form=form
    )
    with Timer():
        try:
            grant = check(
                request,
                tenant.registry,
                now=now,
                policy=Policy(strict=strict),
                replay=ReplayCache(),
            )
        except EntraError as error:
            refusal: EntraError | None = error
        else:
            refusal = None
    if refusal is not None:
        assert refusal.status in (400, 401)
        assert "\n" not in refusal.text.replace("\r\n", "")  # no forged description lines
        return
    assert grant.client_id == CLIENT_ID
    assert claims["iss"] == claims["sub"] == CLIENT_ID
