"""Strict mode (RFC 7523 to the letter) against entra mode (exactly what Entra ID enforces)."""

from __future__ import annotations

import time

import httpx
import pytest
from _emulator_helpers import DROP, assert_entra_error, assertion_form, make_assertion

from certauth.certificates import Certificate
from certauth.emulator import Emulator


def _post(tenant: Emulator, http: httpx.Client, assertion: str) -> httpx.Response:
    return http.post(tenant.token_endpoint, data=assertion_form(assertion))


def test_reused_jti(
    emulator: Emulator, strict_emulator: Emulator, http: httpx.Client, rsa_cert: Certificate
) -> None:
    # Entra does not enforce single use: MSAL reuses one assertion for about 9 minutes.
    entra = make_assertion(rsa_cert, emulator.token_endpoint)
    assert _post(emulator, http, entra).status_code == 200
    assert _post(emulator, http, entra).status_code == 200
    strict = make_assertion(rsa_cert, strict_emulator.token_endpoint)
    assert _post(strict_emulator, http, strict).status_code == 200
    body = assert_entra_error(_post(strict_emulator, http, strict), 50027)
    assert "already used" in body["error_description"]
    strict_emulator.reset_replay_cache()
    assert _post(strict_emulator, http, strict).status_code == 200


def test_jti_required_only_in_strict(
    emulator: Emulator, strict_emulator: Emulator, http: httpx.Client, rsa_cert: Certificate
) -> None:
    for tenant, ok in ((emulator, True), (strict_emulator, False)):
        token = make_assertion(rsa_cert, tenant.token_endpoint, claims={"jti": DROP})
        response = _post(tenant, http, token)
        if ok:
            assert response.status_code == 200
        else:
            assert "'jti'" in assert_entra_error(response, 50027)["error_description"]


def test_lifetime_cap(
    emulator: Emulator, strict_emulator: Emulator, http: httpx.Client, rsa_cert: Certificate
) -> None:
    hour = make_assertion(rsa_cert, emulator.token_endpoint, lifetime=3600)
    assert _post(emulator, http, hour).status_code == 200  # Entra caps nothing
    strict_hour = make_assertion(rsa_cert, strict_emulator.token_endpoint, lifetime=3600)
    body = assert_entra_error(_post(strict_emulator, http, strict_hour), 700024, status=401)
    assert "strict mode" in body["error_description"]
    ten_minutes = make_assertion(rsa_cert, strict_emulator.token_endpoint, lifetime=600)
    assert _post(strict_emulator, http, ten_minutes).status_code == 200


@pytest.mark.parametrize(
    ("alg", "header"),
    [
        ("PS256", {"x5t#S256": DROP, "x5t": "SHA1"}),
        ("RS256", {"x5t": DROP, "x5t#S256": "SHA256"}),
    ],
)
def test_alg_thumbprint_pairing(
    emulator: Emulator,
    strict_emulator: Emulator,
    http: httpx.Client,
    rsa_cert: Certificate,
    alg: str,
    header: dict[str, object],
) -> None:
    values = {"SHA1": rsa_cert.x5t, "SHA256": rsa_cert.x5t_s256}
    header = {k: values.get(v, v) if isinstance(v, str) else v for k, v in header.items()}
    for tenant in (emulator, strict_emulator):
        token = make_assertion(rsa_cert, tenant.token_endpoint, alg=alg, header=header)
        response = _post(tenant, http, token)
        if tenant is emulator:
            assert response.status_code == 200
        else:
            assert "(strict mode)" in assert_entra_error(response, 50027)["error_description"]


def test_strict_aud_is_exactly_the_url_posted_to(
    emulator: Emulator, strict_emulator: Emulator, http: httpx.Client, rsa_cert: Certificate
) -> None:
    assert _post(emulator, http, make_assertion(rsa_cert, emulator.token_endpoint_v1)).is_success
    v1_aud = make_assertion(rsa_cert, strict_emulator.token_endpoint_v1)
    assert_entra_error(_post(strict_emulator, http, v1_aud), 700023, status=401)


def test_strict_from_config_and_clock_driven_expiry(rsa_cert: Certificate) -> None:
    # The emulator's clock, not the wall clock, judges exp.
    with Emulator(strict=True, clock=lambda: time.time() + 3600) as tenant:
        tenant.register("11111111-2222-3333-4444-555555555555", rsa_cert)
        with httpx.Client() as http:
            now_token = make_assertion(rsa_cert, tenant.token_endpoint)
            assert_entra_error(_post(tenant, http, now_token), 700024, status=401)
            later = make_assertion(rsa_cert, tenant.token_endpoint, now=tenant.clock.time())
            assert _post(tenant, http, later).status_code == 200
