"""MSAL Python with certificates made by ``certauth cert create``, against the strict emulator.

Every way MSAL takes a certificate (PEM key + SHA-1 thumbprint, PEM key + public certificate,
PFX, each with or without a passphrase): MSAL gets a token, so its assertion passed every
check of the strict emulator (the Entra rules plus RFC 7523's jti, lifetime cap, exact aud and
the PS256/x5t#S256 pairing). Then MSAL's assertion and certauth's for the same input are laid
side by side: same header and claims except the random parts (jti, signature, times) and the
two deliberate differences, which the test pins down (certauth adds ``nbf`` and signs for
300 s where MSAL signs for 600 s; MSAL pads its thumbprint header).
"""

from __future__ import annotations

import base64
import hashlib
import ssl
from typing import Any

import httpx
import jwt
import pytest
from _interop import CLIENT_ID, SCOPE, Generated, IssuedTokens, recording_session

from certauth import build_client_assertion
from certauth.emulator import Emulator
from certauth.protocol import CLIENT_ASSERTION_TYPE, GRANT_CLIENT_CREDENTIALS

pytestmark = pytest.mark.interop
msal = pytest.importorskip("msal")


def _credential(form: str, plain: Generated, encrypted: Generated) -> dict[str, Any]:
    """MSAL's ``client_credential`` for each way it takes a certificate."""
    if form == "pem+thumbprint":
        return {
            "private_key": plain.path(".key").read_text(),
            "thumbprint": plain.report["thumbprint_sha1"],
        }
    if form == "pem+public_certificate":
        return {
            "private_key": plain.path(".key").read_text(),
            "public_certificate": plain.path(".crt").read_text(),
        }
    if form == "encrypted-pem+thumbprint":
        return {
            "private_key": encrypted.path(".key").read_text(),
            "passphrase": encrypted.password,
            "thumbprint": encrypted.report["thumbprint_sha1"],
        }
    if form == "pfx":
        return {"private_key_pfx_path": str(plain.path(".pfx"))}
    assert form == "encrypted-pfx"
    return {"private_key_pfx_path": str(encrypted.path(".pfx")), "passphrase": encrypted.password}


#: form -> (alg MSAL signs with, the thumbprint header it sends)
FORMS = {
    "pem+thumbprint": ("RS256", "x5t"),
    "pem+public_certificate": ("PS256", "x5t#S256"),
    "encrypted-pem+thumbprint": ("RS256", "x5t"),
    "pfx": ("PS256", "x5t#S256"),
    "encrypted-pfx": ("PS256", "x5t#S256"),
}


def _msal_assertion(
    tenant: Emulator, credential: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    assert tenant.ca_file is not None
    session = recording_session(tenant.ca_file)
    app = msal.ConfidentialClientApplication(
        CLIENT_ID,
        authority=f"{tenant.authority_host}/{tenant.tenant_id}",
        client_credential=credential,
        http_client=session,
        instance_discovery=False,
    )
    result = app.acquire_token_for_client([SCOPE])
    token_forms = [f for f in session.forms if f.get("grant_type") == GRANT_CLIENT_CREDENTIALS]
    assert len(token_forms) == 1
    return result, token_forms[0]


@pytest.mark.parametrize("form", list(FORMS))
def test_msal_gets_a_token_with_each_form_of_a_certauth_certificate(
    strict_tenant: Emulator,
    generated: Generated,
    generated_encrypted: Generated,
    issued: IssuedTokens,
    form: str,
) -> None:
    alg, thumbprint_header = FORMS[form]
    which = generated_encrypted if form.startswith("encrypted") else generated
    result, sent = _msal_assertion(strict_tenant, _credential(form, generated, generated_encrypted))
    assert "access_token" in result, result
    assert issued.algs() == [alg]
    # The emulator matched the certificate certauth wrote (by its SHA-256 thumbprint).
    assert strict_tenant.last_thumbprint == which.report["x5t#S256"]
    header = jwt.get_unverified_header(sent["client_assertion"])
    assert header["alg"] == alg
    assert thumbprint_header in header
    assert sent["client_assertion_type"] == CLIENT_ASSERTION_TYPE


@pytest.mark.parametrize("form", ["pem+thumbprint", "pem+public_certificate", "pfx"])
def test_msal_and_certauth_build_the_same_assertion(
    strict_tenant: Emulator, generated: Generated, generated_encrypted: Generated, form: str
) -> None:
    alg, _ = FORMS[form]
    _, sent = _msal_assertion(strict_tenant, _credential(form, generated, generated_encrypted))
    theirs = sent["client_assertion"]
    with_x5c = "x5c" in jwt.get_unverified_header(theirs)
    ours = build_client_assertion(
        generated.certificate,
        client_id=CLIENT_ID,
        audience=strict_tenant.token_endpoint,
        alg=alg,
        include_x5c=with_x5c,
    )
    their_header, our_header = jwt.get_unverified_header(theirs), jwt.get_unverified_header(ours)
    their_claims = jwt.decode(theirs, options={"verify_signature": False})
    our_claims = jwt.decode(ours, options={"verify_signature": False})

    # Header: the same fields with the same values. MSAL pads its base64url thumbprint
    # (Entra accepts it) and keeps the PEM line breaks inside x5c, which RFC 7515
    # section 4.1.6 defines as plain base64: certauth sends neither.
    assert set(our_header) == set(their_header)
    for name in our_header:
        mine, msal_value = our_header[name], their_header[name]
        if name in ("x5t", "x5t#S256"):
            assert msal_value.endswith("=")
            msal_value = msal_value.rstrip("=")
        if name == "x5c":
            assert all(entry == "".join(entry.split()) for entry in mine)
            msal_value = ["".join(entry.split()) for entry in msal_value]
        assert mine == msal_value, name
    digest = hashlib.sha1 if alg.startswith("RS") else hashlib.sha256
    expected = base64.urlsafe_b64encode(digest(generated.certificate.der).digest()).rstrip(b"=")
    assert our_header["x5t" if alg.startswith("RS") else "x5t#S256"] == expected.decode()

    # Claims: certauth's are MSAL's plus nbf; the fixed ones are equal.
    assert set(our_claims) == set(their_claims) | {"nbf"}
    for name in ("aud", "iss", "sub"):
        assert our_claims[name] == their_claims[name], name
    assert our_claims["aud"] == strict_tenant.token_endpoint
    assert our_claims["iss"] == our_claims["sub"] == CLIENT_ID
    assert our_claims["jti"] != their_claims["jti"]
    # Lifetimes: MSAL 600 s (reused for ~9 min), certauth 300 s from nbf = iat.
    assert round(their_claims["exp"] - their_claims["iat"]) == 600
    assert our_claims["exp"] - our_claims["iat"] == 300
    assert our_claims["nbf"] == our_claims["iat"]

    # And certauth's passes the same strict checks MSAL's just passed.
    assert strict_tenant.ca_file is not None
    trust = ssl.create_default_context(cafile=strict_tenant.ca_file)
    with httpx.Client(verify=trust) as client:
        answer = client.post(
            strict_tenant.token_endpoint,
            data={
                "grant_type": GRANT_CLIENT_CREDENTIALS,
                "client_id": CLIENT_ID,
                "scope": SCOPE,
                "client_assertion_type": CLIENT_ASSERTION_TYPE,
                "client_assertion": ours,
            },
        )
    assert answer.status_code == 200, answer.text


def test_msal_reuses_its_assertion_which_strict_mode_calls_a_replay(
    strict_tenant: Emulator, generated: Generated, generated_encrypted: Generated
) -> None:
    # MSAL reuses one assertion for ~9 minutes and Entra accepts that; strict mode
    # enforces RFC 7523's single-use jti, and says so. (certauth signs a new one each time.)
    credential = _credential("pfx", generated, generated_encrypted)
    assert strict_tenant.ca_file is not None
    session = recording_session(strict_tenant.ca_file)
    app = msal.ConfidentialClientApplication(
        CLIENT_ID,
        authority=f"{strict_tenant.authority_host}/{strict_tenant.tenant_id}",
        client_credential=credential,
        http_client=session,
        instance_discovery=False,
    )
    assert "access_token" in app.acquire_token_for_client([SCOPE])
    again = app.acquire_token_for_client(["api://other/.default"])  # not cached: a new POST
    forms = [f for f in session.forms if f.get("grant_type") == GRANT_CLIENT_CREDENTIALS]
    assert forms[0]["client_assertion"] == forms[1]["client_assertion"]
    assert again.get("error") == "invalid_request", again
    assert "(strict mode)" in again["error_description"]
    assert "already used" in again["error_description"]
