"""Client assertions (RFC 7523 section 3 + Entra's certificate-credential rules)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import time
from collections.abc import Iterator

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from certauth import build_client_assertion, generate_certificate
from certauth.certificates import Certificate
from certauth.emulator import Emulator
from certauth.errors import CertificateError, InvalidArgumentError, UnsupportedKeyError
from certauth.protocol import CLIENT_ASSERTION_TYPE

AUD = "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
CLIENT = "11111111-2222-3333-4444-555555555555"


def test_ps256_header_and_claims(rsa_cert: Certificate) -> None:
    now = time.time()
    token = build_client_assertion(rsa_cert, client_id=CLIENT, audience=AUD, now=now)
    assert jwt.get_unverified_header(token) == {
        "alg": "PS256",
        "typ": "JWT",
        "x5t#S256": rsa_cert.x5t_s256,
    }
    claims = jwt.decode(token, rsa_cert.x509.public_key(), algorithms=["PS256"], audience=AUD)
    assert claims["iss"] == claims["sub"] == CLIENT
    assert claims["aud"] == AUD  # one string, exactly the endpoint (AADSTS5002741 otherwise)
    assert claims["iat"] == claims["nbf"] == int(now)
    assert claims["exp"] == int(now) + 300
    assert len(claims["jti"]) == 36


def test_each_assertion_has_a_fresh_jti(rsa_cert: Certificate) -> None:
    jtis = {
        jwt.decode(
            build_client_assertion(rsa_cert, client_id=CLIENT, audience=AUD),
            options={"verify_signature": False},
        )["jti"]
        for _ in range(20)
    }
    assert len(jtis) == 20


def test_rs256_uses_sha1_x5t_and_x5c_sends_the_chain(rsa_cert: Certificate) -> None:
    token = build_client_assertion(
        rsa_cert, client_id=CLIENT, audience=AUD, alg="RS256", include_x5c=True
    )
    header = jwt.get_unverified_header(token)
    assert header["x5t"] == rsa_cert.x5t
    assert "x5t#S256" not in header
    assert header["x5c"] == [base64.b64encode(rsa_cert.der).decode()]  # standard base64, DER
    jwt.decode(token, rsa_cert.x509.public_key(), algorithms=["RS256"], audience=AUD)


def test_thumbprints_avoid_the_classic_aadsts700027_causes(rsa_cert: Certificate) -> None:
    sha1 = hashlib.sha1(rsa_cert.der, usedforsecurity=False).digest()
    sha256 = hashlib.sha256(rsa_cert.der).digest()
    assert rsa_cert.x5t == base64.urlsafe_b64encode(sha1).decode().rstrip("=")
    assert rsa_cert.x5t != base64.urlsafe_b64encode(sha1.hex().upper().encode()).decode()  # hex
    assert "=" not in rsa_cert.x5t  # padded
    assert "+" not in rsa_cert.x5t + rsa_cert.x5t_s256  # standard base64
    assert "/" not in rsa_cert.x5t + rsa_cert.x5t_s256
    assert len(base64.urlsafe_b64decode(rsa_cert.x5t + "=")) == 20  # not a SHA-256 digest
    assert rsa_cert.x5t_s256 == base64.urlsafe_b64encode(sha256).decode().rstrip("=")


@pytest.fixture
def tenant(rsa_cert: Certificate) -> Iterator[Emulator]:
    with Emulator() as emulator:
        emulator.register(CLIENT, rsa_cert)
        yield emulator


def _exchange(tenant: Emulator, assertion: str) -> httpx.Response:
    return httpx.post(
        tenant.token_endpoint,
        data={
            "grant_type": "client_credentials",
            "client_id": CLIENT,
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": assertion,
            "scope": "api://x/.default",
        },
    )


def _resign(cert: Certificate, header: dict[str, str], audience: str) -> str:
    claims = jwt.decode(
        build_client_assertion(cert, client_id=CLIENT, audience=audience),
        options={"verify_signature": False},
    )
    return jwt.encode(claims, cert.private_key, algorithm="RS256", headers=header)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "wrong",
    [
        "hex-then-base64",
        "standard-base64-padded",
        "sha256-in-x5t",
    ],
)
def test_the_classic_mistakes_are_refused_by_an_entra_faithful_tenant(
    tenant: Emulator, rsa_cert: Certificate, wrong: str
) -> None:
    sha1 = hashlib.sha1(rsa_cert.der, usedforsecurity=False).digest()
    value = {
        "hex-then-base64": base64.b64encode(sha1.hex().encode()).decode(),
        "standard-base64-padded": base64.b64encode(hashlib.sha256(rsa_cert.der).digest()).decode(),
        "sha256-in-x5t": rsa_cert.x5t_s256,
    }[wrong]
    answer = _exchange(tenant, _resign(rsa_cert, {"x5t": value}, tenant.token_endpoint))
    assert answer.status_code == 401
    assert answer.json()["error_codes"] == [700027]
    right = build_client_assertion(rsa_cert, client_id=CLIENT, audience=tenant.token_endpoint)
    assert _exchange(tenant, right).status_code == 200


def test_es256_for_ec_keys_is_raw_r_s(ec_cert: Certificate) -> None:
    token = build_client_assertion(ec_cert, client_id=CLIENT, audience="https://idp.example/t")
    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    assert len(base64.urlsafe_b64decode(token.split(".")[2] + "==")) == 64
    jwt.decode(
        token, ec_cert.x509.public_key(), algorithms=["ES256"], audience="https://idp.example/t"
    )


@pytest.mark.parametrize("lifetime", [0, -1, 601, 3600])
def test_lifetime_bounds(rsa_cert: Certificate, lifetime: int) -> None:
    with pytest.raises(InvalidArgumentError, match="1-600"):
        build_client_assertion(rsa_cert, client_id=CLIENT, audience=AUD, lifetime=lifetime)


def test_refusals_before_signing(rsa_cert: Certificate, ec_cert: Certificate) -> None:
    with pytest.raises(InvalidArgumentError, match="not supported"):
        build_client_assertion(rsa_cert, client_id=CLIENT, audience=AUD, alg="HS256")
    with pytest.raises(InvalidArgumentError, match="RSA key"):
        build_client_assertion(rsa_cert, client_id=CLIENT, audience=AUD, alg="ES256")
    with pytest.raises(InvalidArgumentError, match="EC key"):
        build_client_assertion(ec_cert, client_id=CLIENT, audience=AUD, alg="PS256")
    with pytest.raises(InvalidArgumentError, match="client id"):
        build_client_assertion(rsa_cert, client_id="", audience=AUD)
    public_only = Certificate(rsa_cert.x509)
    with pytest.raises(CertificateError, match="no private key"):
        build_client_assertion(public_only, client_id=CLIENT, audience=AUD)


def test_weak_rsa_key_is_refused_with_entra_code() -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - on purpose
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "weak")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(UnsupportedKeyError, match="AADSTS50032"):
        build_client_assertion(Certificate(cert, key), client_id=CLIENT, audience=AUD)


def test_expired_or_future_certificate_is_refused_with_dates() -> None:
    now = dt.datetime.now(dt.timezone.utc)
    expired = generate_certificate("CN=old", days=1, now=now - dt.timedelta(days=3))
    with pytest.raises(CertificateError, match="expired on"):
        build_client_assertion(expired, client_id=CLIENT, audience=AUD)
    future = generate_certificate("CN=new", days=10, now=now + dt.timedelta(days=2))
    with pytest.raises(CertificateError, match="not yet valid: valid from"):
        build_client_assertion(future, client_id=CLIENT, audience=AUD)
