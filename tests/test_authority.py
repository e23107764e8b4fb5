"""Authority resolution: Entra clouds, B2C, explicit endpoints, discovery documents."""

from __future__ import annotations

import re

import pytest

from certauth.authority import Authority, check_endpoint_url, normalize_authority_host
from certauth.errors import ConfigurationError, InvalidArgumentError

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        (None, "https://login.microsoftonline.com"),
        ("login.microsoftonline.us", "https://login.microsoftonline.us"),
        ("https://login.microsoftonline.us/", "https://login.microsoftonline.us"),
        ("login.partner.microsoftonline.cn", "https://login.partner.microsoftonline.cn"),
        ("http://127.0.0.1:8400", "http://127.0.0.1:8400"),
        ("http://[::1]:8400", "http://[::1]:8400"),
        ("http://localhost:1", "http://localhost:1"),
    ],
)
def test_authority_host_with_or_without_scheme(host: str | None, expected: str) -> None:
    assert normalize_authority_host(host) == expected


def test_entra_v2_endpoint_in_each_cloud() -> None:
    assert (
        Authority.entra(TENANT).token_endpoint
        == f"https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token"
    )
    gov = Authority.entra("contoso.onmicrosoft.us", host="login.microsoftonline.us")
    assert (
        gov.token_endpoint
        == "https://login.microsoftonline.us/contoso.onmicrosoft.us/oauth2/v2.0/token"
    )
    assert gov.is_entra
    assert not gov.is_v1
    assert Authority.entra(TENANT, v1=True).is_v1


@pytest.mark.parametrize("tenant", ["organizations", "common", "Consumers"])
def test_multi_tenant_aliases_are_refused_for_app_only(tenant: str) -> None:
    with pytest.raises(InvalidArgumentError, match="single directory"):
        Authority.entra(tenant)


@pytest.mark.parametrize("tenant", ["", "has space", "a/b", "-x"])
def test_malformed_tenants_are_refused(tenant: str) -> None:
    with pytest.raises(InvalidArgumentError, match=f"tenant '{tenant}' is not a tenant ID"):
        Authority.entra(tenant)


def test_plain_http_is_refused_except_on_loopback() -> None:
    with pytest.raises(ConfigurationError, match="plain http"):
        Authority.from_token_endpoint("http://login.example.com/token")
    with pytest.raises(ConfigurationError, match="plain http"):
        normalize_authority_host("http://login.microsoftonline.com")
    assert check_endpoint_url("http://127.0.0.5:99/t") == "http://127.0.0.5:99/t"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://x/token", "is not an absolute http(s) URL"),
        ("login.example.com/token", "is not an absolute http(s) URL"),
        ("https:///token", "is not an absolute http(s) URL"),
        ("https://x:bad/", "is not a valid URL"),
    ],
)
def test_not_an_endpoint_url(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(f"token endpoint {url!r} {message}")):
        Authority.from_token_endpoint(url)


def test_b2c_from_short_name_or_domain_and_custom_domain() -> None:
    by_short = Authority.b2c("contoso", "B2C_1A_partnerIntegration_v1")
    by_domain = Authority.b2c("contoso.onmicrosoft.com", "B2C_1A_partnerIntegration_v1")
    expected = (
        "https://contoso.b2clogin.com/contoso.onmicrosoft.com/"
        "B2C_1A_partnerIntegration_v1/oauth2/v2.0/token"
    )
    assert by_short.token_endpoint == by_domain.token_endpoint == expected
    assert by_short.kind == "b2c"
    custom = Authority.from_token_endpoint(
        "https://login.contoso.com/contoso.onmicrosoft.com/b2c_1a_partner/oauth2/v2.0/token"
    )
    assert custom.kind == "b2c"
    assert custom.policy == "b2c_1a_partner"


def test_token_endpoint_is_classified_by_shape() -> None:
    entra = Authority.from_token_endpoint(
        f"https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token"
    )
    assert entra.kind == "entra"
    assert entra.tenant == TENANT
    emulator = Authority.from_token_endpoint(f"http://127.0.0.1:8400/{TENANT}/oauth2/token")
    assert emulator.is_entra
    assert emulator.is_v1
    generic = Authority.from_token_endpoint("https://idp.example.com/oauth/token")
    assert generic.kind == "generic"
    assert generic.default_alg("RSA") == "RS256"
    assert entra.default_alg("RSA") == "PS256"
    assert generic.default_alg("EC") == "ES256"


def test_entra_issuer_resolves_without_discovery() -> None:
    authority = Authority.entra_from_issuer(f"https://login.microsoftonline.com/{TENANT}/v2.0")
    assert authority is not None
    assert authority.token_endpoint.endswith(f"/{TENANT}/oauth2/v2.0/token")
    assert Authority.entra_from_issuer("https://idp.example.com") is None


def test_discovery_document_is_honoured() -> None:
    issuer = "https://idp.example.com/realms/x"
    assert Authority.discovery_url(issuer + "/") == issuer + "/.well-known/openid-configuration"
    doc = {
        "issuer": issuer,
        "token_endpoint": "https://idp.example.com/realms/x/token",
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic"],
        "token_endpoint_auth_signing_alg_values_supported": ["PS256", "ES256"],
    }
    authority = Authority.from_discovery(issuer, doc)
    assert authority.token_endpoint == doc["token_endpoint"]
    assert authority.default_alg("RSA") == "PS256"
    authority.check_auth_method("private_key_jwt")
    with pytest.raises(ConfigurationError, match="does not accept client_secret_post"):
        authority.check_auth_method("client_secret_post")
    with pytest.raises(ConfigurationError, match="does not accept RS256"):
        authority.check_signing_alg("RS256")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "the discovery document is not a JSON object"),
        (
            {"issuer": "https://other.example.com", "token_endpoint": "https://idp.example.com/t"},
            "names issuer 'https://other.example.com', not 'https://idp.example.com'",
        ),
        ({"issuer": "https://idp.example.com"}, "the discovery document has no token_endpoint"),
        (
            {"issuer": "https://idp.example.com", "token_endpoint": "http://idp.example.com/t"},
            "the token_endpoint in https://idp.example.com/.well-known/openid-configuration "
            "'http://idp.example.com/t' uses plain http",
        ),
        # OIDC Discovery 1.0 section 4.3: the issuer is required, and must be the one asked for.
        ({"token_endpoint": "https://idp.example.com/t"}, "names issuer None"),
        (
            {
                "issuer": "https://idp.example.com/other",
                "token_endpoint": "https://idp.example.com/t",
            },
            "names issuer 'https://idp.example.com/other'",
        ),
    ],
)
def test_bad_discovery_documents(doc: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        Authority.from_discovery("https://idp.example.com", doc)


def test_discovery_issuer_may_differ_by_a_trailing_slash() -> None:
    # Keycloak and others publish "https://host/realms/x" while users paste ".../x/": one
    # issuer (the verifier, which compares token iss values, is exact; see test_discovery.py).
    doc = {
        "issuer": "https://idp.example.com/realms/x/",
        "token_endpoint": "https://idp.example.com/t",
    }
    assert Authority.from_discovery("https://idp.example.com/realms/x", doc).token_endpoint == (
        "https://idp.example.com/t"
    )
    doc["issuer"] = "https://idp.example.com/realms/x"
    assert Authority.from_discovery("https://idp.example.com/realms/x/", doc).issuer == (
        "https://idp.example.com/realms/x/"
    )


def test_discovery_keeps_the_issuer_and_the_document() -> None:
    doc = {
        "issuer": "https://idp.example.com",
        "token_endpoint": "https://idp.example.com/t",
        "token_endpoint_auth_methods_supported": [
            "private_key_jwt",
            7,
            None,
            "client_secret_basic",
        ],
        "token_endpoint_auth_signing_alg_values_supported": "RS256",  # not a list: ignored
    }
    authority = Authority.from_discovery("https://idp.example.com", doc)
    assert authority.issuer == "https://idp.example.com"
    assert authority.metadata == doc
    assert authority.kind == "generic"
    # Entries that are not strings are dropped, not compared or printed.
    assert authority.auth_methods == ("private_key_jwt", "client_secret_basic")
    assert authority.signing_algs == ()
    with pytest.raises(ConfigurationError, match=r"lists private_key_jwt, client_secret_basic\)"):
        authority.check_auth_method("client_secret_post")


@pytest.mark.parametrize(
    ("token_endpoint", "kind", "tenant", "policy"),
    [
        (f"https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token", "entra", TENANT, None),
        (f"http://127.0.0.1:8400/{TENANT}/oauth2/v2.0/token", "entra", TENANT, None),
        (
            "https://contoso.b2clogin.com/contoso.onmicrosoft.com/B2C_1A_signin/oauth2/v2.0/token",
            "b2c",
            "contoso.onmicrosoft.com",
            "B2C_1A_signin",
        ),
        ("https://idp.example.com/oauth/token", "generic", None, None),
    ],
)
def test_discovery_classifies_the_token_endpoint_it_names(
    token_endpoint: str, kind: str, tenant: str | None, policy: str | None
) -> None:
    # An issuer found by discovery that points at Entra (or the emulator) gets Entra's rules.
    issuer = "https://issuer.example.com"
    authority = Authority.from_discovery(
        issuer, {"issuer": issuer, "token_endpoint": token_endpoint}
    )
    assert (authority.kind, authority.tenant, authority.policy) == (kind, tenant, policy)
    assert authority.token_endpoint == token_endpoint
    assert authority.default_alg("RSA") == ("PS256" if kind == "entra" else "RS256")


def test_a_discovery_document_without_an_issuer_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="issuer"):
        Authority.from_discovery(
            "https://idp.example.com", {"token_endpoint": "https://idp.example.com/t"}
        )


def test_the_server_is_named_one_way() -> None:
    from certauth.authority import resolve_authority
    from certauth.errors import InvalidArgumentError

    endpoint = "https://login.microsoftonline.com/fabrikam.onmicrosoft.com/oauth2/v2.0/token"
    with pytest.raises(InvalidArgumentError, match="give one"):
        resolve_authority(token_endpoint=endpoint, issuer="https://idp.example.com")
    with pytest.raises(InvalidArgumentError, match=r"b2c_policy= name the server"):
        resolve_authority("contoso", b2c_policy="B2C_1_x", token_endpoint=endpoint)
    with pytest.raises(InvalidArgumentError, match=r"authority= name the server"):
        resolve_authority(host="login.microsoftonline.us", issuer="https://idp.example.com")
    with pytest.raises(InvalidArgumentError, match="'contoso' does not match"):
        resolve_authority("contoso", token_endpoint=endpoint)
    # The drop-in form: the tenant next to its own endpoint (any case), or a generic endpoint.
    same = resolve_authority("FABRIKAM.onmicrosoft.com", token_endpoint=endpoint)
    assert same is not None
    assert same.token_endpoint == endpoint
    generic = resolve_authority("contoso", token_endpoint="https://idp.example.com/token")
    assert generic is not None
    assert generic.kind == "generic"
