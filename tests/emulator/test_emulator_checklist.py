"""Entra ID's refusals (AADSTS codes), one bad request per check, sent over real HTTP.

Each case asserts the AADSTS code, the HTTP status (invalid_client is 401, the rest 400) and
Entra's error body shape.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
from _emulator_helpers import (
    CLIENT_ID,
    DROP,
    assert_entra_error,
    assertion_form,
    make_assertion,
    raw_jwt,
    secret_form,
)

from certauth.certificates import Certificate
from certauth.emulator import Emulator


@dataclass
class Ctx:
    """What a case may use."""

    tenant: Emulator
    http: httpx.Client
    cert: Certificate
    other: Certificate
    ec: Certificate
    weak: Certificate
    expired: Certificate
    future: Certificate

    def post(self, data: dict[str, str], url: str | None = None, **kwargs: Any) -> httpx.Response:
        return self.http.post(url or self.tenant.token_endpoint, data=data, **kwargs)

    def assertion(self, **kwargs: Any) -> str:
        cert = kwargs.pop("cert", self.cert)
        audience = kwargs.pop("audience", self.tenant.token_endpoint)
        return make_assertion(cert, audience, **kwargs)


@dataclass(frozen=True)
class Case:
    id: str
    code: int
    status: int
    send: Callable[[Ctx], httpx.Response]
    text: str = ""


def _other_tenant_url(ctx: Ctx, tenant: str) -> str:
    return ctx.tenant.token_endpoint.replace(ctx.tenant.tenant_id, tenant)


def _register_and_sign(ctx: Ctx, cert: Certificate, alg: str = "RS256") -> httpx.Response:
    ctx.tenant.register(CLIENT_ID, cert)
    return ctx.post(assertion_form(ctx.assertion(cert=cert, alg=alg)))


def _secret(ctx: Ctx, secret: str, *, expired: bool = False) -> httpx.Response:
    expires = None
    if expired:
        import datetime as dt

        expires = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)
    ctx.tenant.register_secret(CLIENT_ID, "the-right-secret", expires=expires)
    return ctx.post(secret_form(secret))


def _two_thumbprints_wrong_signature(ctx: Ctx) -> httpx.Response:
    # Signed with another key, but names the registered certificate.
    token = ctx.assertion(alg="RS256", key=ctx.other.private_key)
    return ctx.post(assertion_form(token))


CASES = [
    Case(
        "tenant unknown",
        90002,
        400,
        lambda c: c.post(assertion_form(c.assertion()), _other_tenant_url(c, str(uuid.uuid4()))),
        "not found",
    ),
    Case(
        "client credentials on /common",
        9001023,
        400,
        lambda c: c.post(assertion_form(c.assertion()), _other_tenant_url(c, "common")),
    ),
    Case(
        "client credentials on /organizations",
        9001023,
        400,
        lambda c: c.post(assertion_form(c.assertion()), _other_tenant_url(c, "organizations")),
    ),
    Case(
        "grant_type missing",
        900144,
        400,
        lambda c: c.post(assertion_form(c.assertion(), grant_type=None)),
        "'grant_type'",
    ),
    Case(
        "grant_type unsupported",
        70003,
        400,
        lambda c: c.post(assertion_form(c.assertion(), grant_type="password")),
        "unsupported grant type 'password'",
    ),
    Case(
        "v2 with resource",
        901002,
        400,
        lambda c: c.post(assertion_form(c.assertion(), resource="api://things")),
    ),
    Case(
        "client_id missing",
        900144,
        400,
        lambda c: c.post(assertion_form(c.assertion(), client_id=None)),
        "'client_id'",
    ),
    Case(
        "client id unknown",
        700016,
        400,
        lambda c: c.post(
            assertion_form(
                c.assertion(client_id="99999999-0000-0000-0000-000000000000"),
                client_id="99999999-0000-0000-0000-000000000000",
            )
        ),
        "was not found in the directory",
    ),
    Case(
        "no credential",
        7000218,
        401,
        lambda c: c.post(assertion_form(None, client_assertion_type=None)),
        "'client_assertion' or 'client_secret'",
    ),
    Case(
        "client_assertion_type wrong",
        50027,
        400,
        lambda c: c.post(
            assertion_form(c.assertion(), client_assertion_type="urn:ietf:params:oauth:jwt")
        ),
    ),
    Case(
        "client_assertion_type missing",
        900144,
        400,
        lambda c: c.post(assertion_form(c.assertion(), client_assertion_type=None)),
        "'client_assertion_type'",
    ),
    Case(
        "assertion not a JWT",
        50027,
        400,
        lambda c: c.post(assertion_form("not-a-jwt")),
        "invalid or malformed",
    ),
    Case(
        "assertion segments not JSON",
        50027,
        400,
        lambda c: c.post(assertion_form("abc.def.ghi")),
        "invalid or malformed",
    ),
    Case(
        "alg ES256",
        5002738,
        400,
        lambda c: c.post(assertion_form(c.assertion(cert=c.ec, alg="ES256"))),
        "'ES256' is not a supported signature algorithm",
    ),
    Case(
        "alg HS256",
        5002738,
        400,
        lambda c: c.post(
            assertion_form(
                jwt.encode(
                    {"iss": CLIENT_ID, "sub": CLIENT_ID, "aud": c.tenant.token_endpoint},
                    "a-shared-secret-that-is-long-enough-for-hs256",
                    algorithm="HS256",
                    headers={"x5t": c.cert.x5t},
                )
            )
        ),
    ),
    Case(
        "alg none",
        5002738,
        400,
        lambda c: c.post(
            assertion_form(
                raw_jwt({"alg": "none", "x5t": c.cert.x5t}, {"iss": CLIENT_ID}, signature=b"")
            )
        ),
    ),
    Case(
        "no thumbprint header",
        50027,
        400,
        lambda c: c.post(assertion_form(c.assertion(header={"x5t#S256": DROP}))),
        "No certificate thumbprint specified in token header",
    ),
    Case(
        "thumbprint (x5t) not registered",
        700027,
        401,
        lambda c: c.post(assertion_form(c.assertion(cert=c.other, alg="RS256"))),
        "The key was not found., Thumbprint of key used by client: '{other_sha1}'",
    ),
    Case(
        "thumbprint (x5t#S256) not registered",
        700027,
        401,
        lambda c: c.post(assertion_form(c.assertion(cert=c.other, alg="PS256"))),
        "The key was not found., Thumbprint of key used by client: '{other_sha256}'",
    ),
    Case(
        "hex thumbprint in x5t (a classic mistake)",
        700027,
        401,
        lambda c: c.post(
            assertion_form(c.assertion(alg="RS256", header={"x5t": c.cert.thumbprint_sha1}))
        ),
        "The key was not found.",
    ),
    Case(
        "bad signature",
        700027,
        401,
        _two_thumbprints_wrong_signature,
        "Client assertion contains an invalid signature",
    ),
    Case("RSA key under 2048 bits", 50032, 401, lambda c: _register_and_sign(c, c.weak)),
    Case(
        "registered certificate expired",
        1000502,
        401,
        lambda c: _register_and_sign(c, c.expired),
        "outside its validity period",
    ),
    Case(
        "registered certificate not yet valid",
        1000502,
        401,
        lambda c: _register_and_sign(c, c.future),
    ),
    Case(
        "iss != sub",
        50048,
        401,
        lambda c: c.post(assertion_form(c.assertion(claims={"sub": "someone-else"}))),
        "Subject mismatches Issuer",
    ),
    Case(
        "iss (= sub) != client_id",
        700021,
        401,
        lambda c: c.post(
            assertion_form(c.assertion(claims={"iss": "another-app", "sub": "another-app"}))
        ),
        "doesn't match 'client_id' parameter",
    ),
    Case(
        "more than one aud",
        5002741,
        401,
        lambda c: c.post(
            assertion_form(
                c.assertion(claims={"aud": [c.tenant.token_endpoint, c.tenant.token_endpoint_v1]})
            )
        ),
    ),
    Case(
        "aud is the real Entra endpoint",
        700023,
        401,
        lambda c: c.post(
            assertion_form(
                c.assertion(
                    audience=f"https://login.microsoftonline.com/{c.tenant.tenant_id}"
                    "/oauth2/v2.0/token"
                )
            )
        ),
        "audience claim does not match Realm issuer",
    ),
    Case(
        "aud names another tenant",
        700023,
        401,
        lambda c: c.post(
            assertion_form(c.assertion(audience=_other_tenant_url(c, str(uuid.uuid4()))))
        ),
    ),
    Case(
        "aud is the issuer, not the token endpoint",
        700023,
        401,
        lambda c: c.post(assertion_form(c.assertion(audience=c.tenant.issuer))),
    ),
    Case(
        "exp past the 5-minute skew",
        700024,
        401,
        lambda c: c.post(assertion_form(c.assertion(now=time.time() - 700, lifetime=300))),
        "Client assertion is not within its valid time range. Current time: ",
    ),
    Case(
        "nbf beyond the 5-minute skew",
        700024,
        401,
        lambda c: c.post(assertion_form(c.assertion(now=time.time() + 400))),
    ),
    Case(
        "exp missing",
        50027,
        400,
        lambda c: c.post(assertion_form(c.assertion(claims={"exp": DROP}))),
        "'exp'",
    ),
    Case(
        "scope not /.default",
        1002012,
        400,
        lambda c: c.post(assertion_form(c.assertion(), scope="api://things/Things.Read")),
        "/.default suffixed",
    ),
    Case(
        "scope missing",
        900144,
        400,
        lambda c: c.post(assertion_form(c.assertion(), scope=None)),
        "'scope'",
    ),
    Case(
        "scope malformed (no resource)",
        70011,
        400,
        lambda c: c.post(assertion_form(c.assertion(), scope="/.default")),
    ),
    Case(
        "several resources",
        700022,
        400,
        lambda c: c.post(
            assertion_form(c.assertion(), scope="api://things/.default api://other/.default")
        ),
        "more than one resource",
    ),
    Case(
        "wrong secret",
        7000215,
        401,
        lambda c: _secret(c, "a-wrong-secret"),
        "Invalid client secret provided",
    ),
    Case(
        "expired secret",
        7000222,
        401,
        lambda c: _secret(c, "the-right-secret", expired=True),
        "are expired",
    ),
]


@pytest.fixture
def ctx(
    emulator: Emulator,
    http: httpx.Client,
    rsa_cert: Certificate,
    other_rsa_cert: Certificate,
    ec_cert: Certificate,
    weak_cert: Certificate,
    expired_cert: Certificate,
    future_cert: Certificate,
) -> Ctx:
    return Ctx(
        emulator, http, rsa_cert, other_rsa_cert, ec_cert, weak_cert, expired_cert, future_cert
    )


@pytest.mark.filterwarnings("ignore:The RSA key is 1024 bits")  # PyJWT, for the weak-key case
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_checklist_1(case: Case, ctx: Ctx) -> None:
    response = case.send(ctx)
    body = assert_entra_error(response, case.code, status=case.status)
    text = case.text.format(
        other_sha1=ctx.other.thumbprint_sha1, other_sha256=ctx.other.thumbprint_sha256
    )
    assert text in body["error_description"]


def test_unknown_resource_once_resources_are_declared(ctx: Ctx) -> None:
    ok = ctx.post(assertion_form(ctx.assertion(), scope="api://anything/.default"))
    assert ok.status_code == 200  # nothing declared: any resource
    ctx.tenant.add_resource("api://things")
    response = ctx.post(assertion_form(ctx.assertion(), scope="api://unknown/.default"))
    body = assert_entra_error(response, 500011, status=400, error="invalid_resource")
    assert "api://unknown" in body["error_description"]
    assert ctx.post(assertion_form(ctx.assertion())).status_code == 200


def test_assertion_to_a_b2c_policy_is_refused(ctx: Ctx) -> None:
    url = ctx.tenant.b2c_token_endpoint("B2C_1_signin")
    response = ctx.post(assertion_form(ctx.assertion(audience=url)), url)
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_request"
    assert body["error_description"].startswith("AADB2C99027: Policy 'B2C_1_signin' ")
    assert "\r\nCorrelation ID: " in body["error_description"]


def test_secret_over_http_basic_wrong_secret_names_the_scheme(ctx: Ctx) -> None:
    ctx.tenant.register_secret(CLIENT_ID, "right")
    basic = base64.b64encode(f"{CLIENT_ID}:wrong".encode()).decode()
    form = secret_form(None, client_id=None)
    response = ctx.post(form, headers={"Authorization": f"Basic {basic}"})
    assert_entra_error(response, 7000215, status=401)
    assert response.headers["WWW-Authenticate"].startswith("Basic")


def test_within_the_skew_window_is_accepted(ctx: Ctx) -> None:
    # exp 4 minutes ago and nbf 4 minutes ahead are both inside Entra's 5 minutes.
    late = ctx.assertion(now=time.time() - 540, lifetime=300)
    early = ctx.assertion(now=time.time() + 240)
    assert ctx.post(assertion_form(late)).status_code == 200
    assert ctx.post(assertion_form(early)).status_code == 200
