"""Independent JOSE libraries accept what certauth and its emulator sign.

certauth's client assertions, in every algorithm it offers, verify with PyJWT and with joserfc
(a second implementation, sharing no code with PyJWT or certauth), including their claim checks;
the thumbprint and ``x5c`` headers equal what ``hashlib`` and ``base64`` compute from the DER on
their own. The emulator's access tokens verify with both libraries from its published JWKS.
Each check is paired with a tampered copy that both refuse, so a verifier that accepts
anything would fail here.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import time
from typing import Any

import jwt as pyjwt
import pytest
from _interop import CLIENT_ID, SCOPE, Generated
from cryptography.hazmat.primitives import serialization

from certauth import CertificateCredential, build_client_assertion
from certauth.certificates import Certificate, generate_certificate
from certauth.emulator import Emulator

pytestmark = pytest.mark.interop
joserfc_jwt = pytest.importorskip("joserfc.jwt")
joserfc_jwk = pytest.importorskip("joserfc.jwk")
joserfc_errors = pytest.importorskip("joserfc.errors")
joserfc_jws = pytest.importorskip("joserfc.jws")

AUDIENCE = "https://login.example/tenant/oauth2/v2.0/token"
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _public_pem(certificate: Certificate) -> bytes:
    return certificate.x509.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _utc(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc)


def _tampered(token: str) -> str:
    header, claims, signature = token.split(".")
    changed = claims[:-2] + ("A" if claims[-2] != "A" else "B") + claims[-1]
    return f"{header}.{changed}.{signature}"


def _verify_with_pyjwt(token: str, certificate: Certificate, alg: str) -> dict[str, Any]:
    return pyjwt.decode(
        token,
        key=_public_pem(certificate),
        algorithms=[alg],
        audience=AUDIENCE,
        issuer=CLIENT_ID,
        options={"require": ["exp", "iat", "nbf", "iss", "sub", "aud", "jti"]},
    )


def _jws_registry(alg: str) -> Any:
    # joserfc caps JOSE headers at 512 bytes by default; one with x5c (the certificate, as
    # certauth --x5c and MSAL's public_certificate send) is about 1.1 KiB.
    registry = joserfc_jws.JWSRegistry(algorithms=[alg])
    registry.max_header_length = 4096
    return registry


def _verify_with_joserfc(token: str, certificate: Certificate, alg: str) -> dict[str, Any]:
    key_type = joserfc_jwk.ECKey if certificate.key_type == "EC" else joserfc_jwk.RSAKey
    key = key_type.import_key(_public_pem(certificate))
    decoded = joserfc_jwt.decode(token, key, algorithms=[alg], registry=_jws_registry(alg))
    registry = joserfc_jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": CLIENT_ID},
        sub={"essential": True, "value": CLIENT_ID},
        aud={"essential": True, "value": AUDIENCE},
        exp={"essential": True},
        nbf={"essential": True},
        iat={"essential": True},
        jti={"essential": True},
    )
    registry.validate(decoded.claims)  # exp, nbf and iat against the clock, too
    return {"header": decoded.header, **decoded.claims}


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_certauth_assertions_verify_with_pyjwt_and_joserfc(generated: Generated, alg: str) -> None:
    certificate = generated.certificate
    token = build_client_assertion(
        certificate, client_id=CLIENT_ID, audience=AUDIENCE, alg=alg, include_x5c=True
    )
    claims = _verify_with_pyjwt(token, certificate, alg)
    other = _verify_with_joserfc(token, certificate, alg)
    header = other.pop("header")
    assert claims == other
    assert claims["exp"] - claims["iat"] == 300
    assert header["alg"] == alg
    assert header["typ"] == "JWT"
    # The thumbprints and the chain, computed from the DER without certauth.
    der = certificate.der
    if alg.startswith("RS"):
        assert header["x5t"] == _b64url(hashlib.sha1(der, usedforsecurity=False).digest())
        assert header["x5t"] == _b64url(bytes.fromhex(generated.report["thumbprint_sha1"]))
    else:
        assert header["x5t#S256"] == _b64url(hashlib.sha256(der).digest())
    assert header["x5c"] == [base64.b64encode(der).decode()]
    with pytest.raises(pyjwt.InvalidSignatureError, match="Signature verification failed"):
        _verify_with_pyjwt(_tampered(token), certificate, alg)
    with pytest.raises(joserfc_errors.BadSignatureError, match=r"^bad_signature"):
        _verify_with_joserfc(_tampered(token), certificate, alg)


def test_certauth_es256_assertions_verify_with_pyjwt_and_joserfc(ec_cert: Certificate) -> None:
    token = build_client_assertion(ec_cert, client_id=CLIENT_ID, audience=AUDIENCE)
    assert pyjwt.get_unverified_header(token)["alg"] == "ES256"
    assert _verify_with_pyjwt(token, ec_cert, "ES256")["aud"] == AUDIENCE
    assert _verify_with_joserfc(token, ec_cert, "ES256")["aud"] == AUDIENCE
    with pytest.raises(joserfc_errors.BadSignatureError, match=r"^bad_signature"):
        _verify_with_joserfc(_tampered(token), ec_cert, "ES256")


def test_expired_assertions_are_refused_by_both() -> None:
    day = 24 * 3600
    certificate = generate_certificate("CN=yesterday", days=2, now=_utc(time.time() - day))
    token = build_client_assertion(
        certificate, client_id=CLIENT_ID, audience=AUDIENCE, alg="PS256", now=time.time() - 900
    )
    with pytest.raises(pyjwt.ExpiredSignatureError, match="Signature has expired"):
        _verify_with_pyjwt(token, certificate, "PS256")
    with pytest.raises(joserfc_errors.ExpiredTokenError, match=r"^expired_token"):
        _verify_with_joserfc(token, certificate, "PS256")


def test_emulator_access_tokens_verify_with_pyjwt_and_joserfc(
    generated: Generated, no_ca_bundle_variables: None
) -> None:
    with Emulator() as tenant:
        tenant.register(CLIENT_ID, generated.path(".crt"), roles=["Interop.Read"])
        with CertificateCredential(
            tenant.tenant_id,
            CLIENT_ID,
            certificate=generated.certificate,
            token_endpoint=tenant.token_endpoint,
        ) as credential:
            token = credential.get_token(SCOPE).token
        jwks = tenant.jwks()
        issuer = tenant.issuer
    kid = pyjwt.get_unverified_header(token)["kid"]
    # PyJWT: the key from the JWKS by kid.
    signing_key = pyjwt.PyJWKSet.from_dict(jwks)[kid]
    claims = pyjwt.decode(
        token, signing_key.key, algorithms=["RS256"], audience="api://interop", issuer=issuer
    )
    assert claims["roles"] == ["Interop.Read"]
    # joserfc: the whole key set; it picks the key by kid itself.
    key_set = joserfc_jwk.KeySet.import_key_set(jwks)
    decoded = joserfc_jwt.decode(token, key_set, algorithms=["RS256"])
    joserfc_jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": issuer}, aud={"essential": True, "value": "api://interop"}
    ).validate(decoded.claims)
    assert decoded.claims == claims
    with pytest.raises(joserfc_errors.BadSignatureError, match=r"^bad_signature"):
        joserfc_jwt.decode(_tampered(token), key_set, algorithms=["RS256"])
