"""DPoP on the emulator's token endpoint (RFC 9449): bound tokens, refused proofs, replays,
server nonces, discovery and the CLI option.

Requests are raw httpx posts to a running emulator; proofs come from ``certauth.dpop``
(``DPoPKey.generate()`` + ``make_proof``) or, when a test needs a proof that module would
never make, from PyJWT with a hand-made header.
"""

from __future__ import annotations

import re
import signal
import time
import urllib.parse
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from _emulator_helpers import (
    CLIENT_ID,
    assertion_form,
    claims_of,
    make_assertion,
    secret_form,
)
from cryptography.hazmat.primitives.asymmetric import ec

from certauth.certificates import Certificate
from certauth.dpop import DPoPKey, make_proof, nonce_from_response
from certauth.emulator import Emulator

#: What ``check_proof`` accepts, as discovery must list it (RFC 9449 section 5.1).
PROOF_ALGS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"]
#: RFC 9449 section 8.1: ``nonce = 1*NQCHAR``.
NQCHARS = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")


@pytest.fixture
def key() -> DPoPKey:
    """A fresh DPoP key (EC P-256)."""
    return DPoPKey.generate()


@pytest.fixture
def nonce_emulator(rsa_cert: Certificate) -> Iterator[Emulator]:
    """An emulator that requires DPoP nonces, ``CLIENT_ID`` registered with a secret too."""
    with Emulator(dpop_nonce=True) as tenant:
        tenant.register(CLIENT_ID, rsa_cert, roles=["Things.Read"])
        tenant.register_secret(CLIENT_ID, "s3cret")
        yield tenant


def _post(
    http: httpx.Client, url: str, form: Mapping[str, str], proofs: list[str] | str | None
) -> httpx.Response:
    headers: list[tuple[str, str]] = []
    if proofs is not None:
        for proof in [proofs] if isinstance(proofs, str) else proofs:
            headers.append(("DPoP", proof))
    return http.post(url, data=dict(form), headers=headers)


def _hand_made(
    key: DPoPKey,
    url: str,
    *,
    header: Mapping[str, Any] | None = None,
    claims: Mapping[str, Any] | None = None,
    signer: Any = None,
    alg: str = "ES256",
) -> str:
    """A proof built with PyJWT, any member overridden (``None`` removes it; PyJWT leaves a
    ``typ`` of ``None`` out of the header)."""
    head: dict[str, Any] = {"typ": "dpop+jwt", "jwk": key.public_jwk}
    body: dict[str, Any] = {
        "jti": str(uuid.uuid4()),
        "htm": "POST",
        "htu": url,
        "iat": int(time.time()),
    }
    for target, overrides in ((head, header), (body, claims)):
        for name, value in (overrides or {}).items():
            if value is None and name != "typ":
                target.pop(name, None)
            else:
                target[name] = value
    return jwt.encode(body, signer or key.private_key, algorithm=alg, headers=head)


def _assert_dpop_error(response: httpx.Response, error: str, fragment: str) -> dict[str, Any]:
    """RFC 9449 section 5 (or 8): HTTP 400 with ``error``; the emulator's usual body fields
    that fit (no AADSTS code: Entra ID has none for DPoP)."""
    body: dict[str, Any] = response.json()
    assert response.status_code == 400, body
    assert body["error"] == error, body
    text, _, trace = body["error_description"].partition("\r\nTrace ID: ")
    assert fragment in text, body
    assert trace.startswith(body["trace_id"])
    assert f"Correlation ID: {body['correlation_id']}" in trace
    assert f"Timestamp: {body['timestamp']}" in trace
    assert "error_codes" not in body
    assert response.headers["cache-control"] == "no-store"
    return body


# -- bound tokens -------------------------------------------------------------------------------


def test_a_proof_binds_the_token_to_its_key(
    emulator: Emulator, http: httpx.Client, rsa_cert: Certificate, key: DPoPKey
) -> None:
    url = emulator.token_endpoint
    form = assertion_form(make_assertion(rsa_cert, url))
    response = _post(http, url, form, make_proof(key, htm="POST", htu=url))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "DPoP"
    claims = claims_of(body["access_token"])
    assert claims["cnf"] == {"jkt": key.thumbprint}
    assert claims["appid"] == CLIENT_ID
    assert "DPoP-Nonce" not in response.headers  # nonces are off by default


def test_without_a_proof_the_token_is_a_bearer_token(
    emulator: Emulator, http: httpx.Client, rsa_cert: Certificate
) -> None:
    url = emulator.token_endpoint
    body = http.post(url, data=assertion_form(make_assertion(rsa_cert, url))).json()
    assert body["token_type"] == "Bearer"
    assert "cnf" not in claims_of(body["access_token"])


def test_the_v1_and_b2c_endpoints_and_a_client_secret_bind_too(
    emulator: Emulator, http: httpx.Client, key: DPoPKey
) -> None:
    emulator.register_secret(CLIENT_ID, "s3cret")
    v1 = emulator.token_endpoint_v1
    b2c = emulator.b2c_token_endpoint()
    for url, form in (
        (v1, secret_form("s3cret", scope=None, resource="api://things")),
        (b2c, secret_form("s3cret")),
    ):
        response = _post(http, url, form, make_proof(key, htm="POST", htu=url))
        assert response.status_code == 200, response.text
        assert response.json()["token_type"] == "DPoP"
        assert claims_of(response.json()["access_token"])["cnf"] == {"jkt": key.thumbprint}


def test_htu_is_compared_after_normalisation(
    emulator: Emulator, http: httpx.Client, rsa_cert: Certificate, key: DPoPKey
) -> None:
    # RFC 9449 section 4.3 step 9 (RFC 3986 section 6.2.2/6.2.3): scheme and host case.
    url = emulator.token_endpoint
    proof = _hand_made(key, url.replace("http://", "HTTP://"))
    response = _post(http, url, assertion_form(make_assertion(rsa_cert, url)), proof)
    assert response.status_code == 200, response.text


def test_an_rsa_proof_key_works(
    emulator: Emulator, http: httpx.Client, rsa_cert: Certificate, other_rsa_cert: Certificate
) -> None:
    rsa_key = DPoPKey.from_private_key(other_rsa_cert.private_key)
    url = emulator.token_endpoint
    response = _post(
        http,
        url,
        assertion_form(make_assertion(rsa_cert, url)),
        make_proof(rsa_key, htm="POST", htu=url),
    )
    assert response.status_code == 200, response.text
    assert claims_of(response.json()["access_token"])["cnf"] == {"jkt": rsa_key.thumbprint}


# -- refused proofs -----------------------------------------------------------------------------

OTHER_KEY = ec.generate_private_key(ec.SECP256R1())


def _other_port(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    port = parts.port or 80
    other = port + 1 if port < 65535 else port - 1
    return parts._replace(netloc=f"{parts.hostname}:{other}").geturl()


def _bad_proofs(key: DPoPKey, url: str) -> dict[str, tuple[list[str] | str, str]]:
    """Each kind of bad proof, with a fragment of the refusal's text."""
    good = make_proof(key, htm="POST", htu=url)
    now = time.time()
    private_jwk = {**key.public_jwk, "d": "AAAA"}
    return {
        "two headers": ([good, make_proof(key, htm="POST", htu=url)], "2 DPoP headers"),
        "empty": ("", "compact JWS"),
        "not a JWT": ("not.a.jwt", "not base64url JSON"),
        "typ JWT": (_hand_made(key, url, header={"typ": "JWT"}), "typ is 'JWT'"),
        "no typ": (_hand_made(key, url, header={"typ": None}), "typ is 'None'"),
        "HS256": (
            jwt.encode(
                {"jti": "x", "htm": "POST", "htu": url, "iat": int(now)},
                "k" * 32,
                algorithm="HS256",
                headers={"typ": "dpop+jwt", "jwk": key.public_jwk},
            ),
            "not an asymmetric JWS algorithm",
        ),
        "no jwk": (_hand_made(key, url, header={"jwk": None}), "no 'jwk' header"),
        "private jwk": (_hand_made(key, url, header={"jwk": private_jwk}), "private key members"),
        "signed by another key": (
            _hand_made(key, url, signer=OTHER_KEY),
            "signature does not verify",
        ),
        "no jti": (_hand_made(key, url, claims={"jti": None}), "'jti'"),
        "iat a string": (_hand_made(key, url, claims={"iat": "now"}), "'iat' must be a number"),
        "htm GET": (make_proof(key, htm="GET", htu=url), "htm 'GET'"),
        "htu another path": (
            make_proof(key, htm="POST", htu=url.replace("/v2.0/token", "/token")),
            "htu",
        ),
        "htu another port": (make_proof(key, htm="POST", htu=_other_port(url)), "htu"),
        "htu https": (make_proof(key, htm="POST", htu=url.replace("http:", "https:")), "htu"),
        "iat too old": (make_proof(key, htm="POST", htu=url, now=now - 3600), "iat is"),
        "iat in the future": (make_proof(key, htm="POST", htu=url, now=now + 3600), "iat is"),
    }


@pytest.mark.parametrize(
    "kind",
    list(_bad_proofs(DPoPKey.generate(), "http://127.0.0.1:1/t/oauth2/v2.0/token")),
)
def test_every_kind_of_bad_proof_is_invalid_dpop_proof(
    kind: str, emulator: Emulator, http: httpx.Client, rsa_cert: Certificate, key: DPoPKey
) -> None:
    url = emulator.token_endpoint
    proofs, fragment = _bad_proofs(key, url)[kind]
    response = _post(http, url, assertion_form(make_assertion(rsa_cert, url)), proofs)
    _assert_dpop_error(response, "invalid_dpop_proof", fragment)
    assert "DPoP-Nonce" not in response.headers


def test_a_replayed_proof_is_refused(
    emulator: Emulator, http: httpx.Client, rsa_cert: Certificate, key: DPoPKey
) -> None:
    url = emulator.token_endpoint
    proof = make_proof(key, htm="POST", htu=url)
    first = _post(http, url, assertion_form(make_assertion(rsa_cert, url)), proof)
    assert first.status_code == 200, first.text
    again = _post(http, url, assertion_form(make_assertion(rsa_cert, url)), proof)
    _assert_dpop_error(again, "invalid_dpop_proof", "already used")
    # A fresh proof with the same key is fine.
    fresh = make_proof(key, htm="POST", htu=url)
    assert _post(http, url, assertion_form(make_assertion(rsa_cert, url)), fresh).is_success


def test_a_refused_proof_does_not_spend_its_jti(
    emulator: Emulator, http: httpx.Client, key: DPoPKey
) -> None:
    # The replay cache records a jti only once every other check passed (section 11.1), so a
    # proof refused for its htm does not make a later proof with the same jti a "replay".
    url = emulator.token_endpoint
    emulator.register_secret(CLIENT_ID, "s3cret")
    wrong = make_proof(key, htm="PUT", htu=url, jti="same-jti")
    _assert_dpop_error(_post(http, url, secret_form("s3cret"), wrong), "invalid_dpop_proof", "htm")
    right = make_proof(key, htm="POST", htu=url, jti="same-jti")
    assert _post(http, url, secret_form("s3cret"), right).status_code == 200


def test_a_bad_proof_is_refused_before_the_client_is_authenticated(
    emulator: Emulator, http: httpx.Client, key: DPoPKey
) -> None:
    url = emulator.token_endpoint
    proof = make_proof(key, htm="GET", htu=url)
    response = _post(http, url, secret_form("wrong secret"), proof)
    _assert_dpop_error(response, "invalid_dpop_proof", "htm")


# -- server nonces (RFC 9449 section 8) ----------------------------------------------------------


def test_nonce_flow_use_dpop_nonce_then_success(
    nonce_emulator: Emulator, http: httpx.Client, key: DPoPKey
) -> None:
    url = nonce_emulator.token_endpoint
    first = _post(http, url, secret_form("s3cret"), make_proof(key, htm="POST", htu=url))
    body = _assert_dpop_error(first, "use_dpop_nonce", "requires nonce")
    nonce = nonce_from_response(first.status_code, first.headers.items(), body)
    assert nonce is not None
    assert nonce == nonce_emulator.dpop_nonce
    assert len(nonce) >= 22
    assert NQCHARS.match(nonce)

    proof = make_proof(key, htm="POST", htu=url, nonce=nonce)
    second = _post(http, url, secret_form("s3cret"), proof)
    assert second.status_code == 200, second.text
    assert second.headers["DPoP-Nonce"] == nonce  # success answers carry it too
    assert second.json()["token_type"] == "DPoP"
    assert claims_of(second.json()["access_token"])["cnf"] == {"jkt": key.thumbprint}


def test_every_token_response_carries_the_nonce(
    nonce_emulator: Emulator, http: httpx.Client
) -> None:
    url = nonce_emulator.token_endpoint
    nonce = nonce_emulator.dpop_nonce
    bearer = http.post(url, data=secret_form("s3cret"))  # no proof: a bearer token, no nonce
    assert bearer.status_code == 200
    assert bearer.json()["token_type"] == "Bearer"
    assert bearer.headers["DPoP-Nonce"] == nonce
    refused = http.post(url, data=secret_form("wrong"))
    assert refused.status_code == 401
    assert refused.headers["DPoP-Nonce"] == nonce
    nonce_emulator.inject_faults(503)
    fault = http.post(url, data=secret_form("s3cret"))
    assert fault.status_code == 503
    assert fault.headers["DPoP-Nonce"] == nonce


def test_rotation_keeps_the_previous_nonce_for_one_round(
    nonce_emulator: Emulator, http: httpx.Client, key: DPoPKey
) -> None:
    url = nonce_emulator.token_endpoint
    first = nonce_emulator.dpop_nonce
    assert first is not None
    second = nonce_emulator.rotate_dpop_nonce()
    assert second != first
    assert nonce_emulator.dpop_nonce == second
    assert len(second) >= 22
    assert NQCHARS.match(second)

    proof = make_proof(key, htm="POST", htu=url, nonce=first)
    late = _post(http, url, secret_form("s3cret"), proof)
    assert late.status_code == 200, late.text
    assert late.headers["DPoP-Nonce"] == second  # told of the new one

    nonce_emulator.rotate_dpop_nonce()
    stale = _post(
        http, url, secret_form("s3cret"), make_proof(key, htm="POST", htu=url, nonce=first)
    )
    _assert_dpop_error(stale, "use_dpop_nonce", "requires nonce")
    assert stale.headers["DPoP-Nonce"] == nonce_emulator.dpop_nonce


def test_a_wrong_nonce_gets_use_dpop_nonce_and_other_faults_come_first(
    nonce_emulator: Emulator, http: httpx.Client, key: DPoPKey
) -> None:
    url = nonce_emulator.token_endpoint
    made_up = make_proof(key, htm="POST", htu=url, nonce="made-up")
    _assert_dpop_error(
        _post(http, url, secret_form("s3cret"), made_up), "use_dpop_nonce", "requires nonce"
    )
    # A proof that is wrong in another way as well is invalid, not sent round for a nonce.
    bad = _hand_made(key, url, signer=OTHER_KEY)
    _assert_dpop_error(
        _post(http, url, secret_form("s3cret"), bad), "invalid_dpop_proof", "signature"
    )


def test_the_nonce_round_trip_does_not_spend_a_strict_assertion(
    rsa_cert: Certificate, http: httpx.Client, key: DPoPKey
) -> None:
    # Strict mode makes an assertion's jti single-use; the proof is checked first, so the
    # assertion sent with a nonce-less proof can be sent again with the nonce.
    with Emulator(strict=True, dpop_nonce=True) as tenant:
        tenant.register(CLIENT_ID, rsa_cert)
        url = tenant.token_endpoint
        form = assertion_form(make_assertion(rsa_cert, url))
        first = _post(http, url, form, make_proof(key, htm="POST", htu=url))
        assert first.json()["error"] == "use_dpop_nonce"
        proof = make_proof(key, htm="POST", htu=url, nonce=first.headers["DPoP-Nonce"])
        assert _post(http, url, form, proof).status_code == 200


def test_rotating_turns_nonces_on(emulator: Emulator, http: httpx.Client, key: DPoPKey) -> None:
    assert emulator.dpop_nonce is None
    nonce = emulator.rotate_dpop_nonce()
    emulator.register_secret(CLIENT_ID, "s3cret")
    url = emulator.token_endpoint
    response = _post(http, url, secret_form("s3cret"), make_proof(key, htm="POST", htu=url))
    _assert_dpop_error(response, "use_dpop_nonce", "requires nonce")
    assert response.headers["DPoP-Nonce"] == nonce


# -- discovery and the CLI ------------------------------------------------------------------------


def test_discovery_lists_the_proof_algorithms(emulator: Emulator, http: httpx.Client) -> None:
    doc = http.get(emulator.openid_configuration_url).json()
    assert doc["dpop_signing_alg_values_supported"] == PROOF_ALGS
    common = http.get(f"{emulator.authority_host}/common/v2.0/.well-known/openid-configuration")
    assert common.json()["dpop_signing_alg_values_supported"] == PROOF_ALGS


def test_cli_dpop_nonce(tmp_path: Path, key: DPoPKey) -> None:
    from test_emulator_cli import running

    ready = tmp_path / "ready.json"
    with running(["--dpop-nonce"], ready) as (process, info):
        url = info["token_endpoint"]
        with httpx.Client(timeout=10) as http:
            # No app needed: the proof is checked before the client.
            response = _post(http, url, secret_form("x"), make_proof(key, htm="POST", htu=url))
            assert response.json()["error"] == "use_dpop_nonce"
            assert NQCHARS.match(response.headers["DPoP-Nonce"])
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    assert "use_dpop_nonce" in err  # the refusal's log line


def test_the_docs_example_runs() -> None:
    from _docs import section

    blocks = re.findall(r"```python\n(.*?)```", section("emulator"), re.DOTALL)
    example = next(b for b in blocks if "dpop_nonce=True" in b)
    exec(compile(example, "docs/emulator.md", "exec"), {})  # noqa: S102
