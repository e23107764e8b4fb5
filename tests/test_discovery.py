"""OpenID Connect discovery as the credentials and the verifier read it, over real HTTP.

A generic issuer (``issuer=``) is found through ``{issuer}/.well-known/openid-configuration``
(OIDC Discovery 1.0 section 4). What the document says is obeyed, and what it must say is
checked: the issuer it names (section 4.3), a usable ``token_endpoint`` / ``jwks_uri``, and the
client authentication methods and assertion algorithms it lists, which a credential checks
before it sends anything. ``tests/_oidc_server.py`` plays the issuer on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from _oidc_server import OidcServer

from certauth import (
    AsyncCertificateCredential,
    CertificateCredential,
    ClientSecretCredential,
    RetryPolicy,
    TokenVerifier,
)
from certauth.certificates import Certificate
from certauth.errors import ConfigurationError, TokenValidationError, TransportError

SCOPE = "api://things/.default"
ONE_TRY = RetryPolicy(max_attempts=1)


@pytest.fixture
def server() -> Iterator[OidcServer]:
    with OidcServer() as oidc:
        yield oidc


# -- the verifier ------------------------------------------------------------------------------


def _token(rsa_cert: Certificate) -> str:
    """A well-formed RS256 token with a kid: the verifier needs the issuer's keys for it."""
    return jwt.encode(
        {"iss": "x", "aud": "api://things", "exp": 2_000_000_000},
        rsa_cert.private_key,  # type: ignore[arg-type]
        algorithm="RS256",
        headers={"kid": "k1"},
    )


def _verify(server: OidcServer, rsa_cert: Certificate) -> None:
    with TokenVerifier(issuer=server.issuer, audience="api://things", retry=ONE_TRY) as verifier:
        verifier.verify(_token(rsa_cert))


@pytest.mark.parametrize(
    "named",
    ["https://evil.example.com/tenant", "{issuer}/other", None],
    ids=["another-issuer", "a-longer-path", "no-issuer"],
)
def test_the_verifier_takes_keys_only_from_the_issuer_it_was_given(
    server: OidcServer, rsa_cert: Certificate, named: str | None
) -> None:
    # OIDC Discovery 1.0 section 4.3: the document must name exactly the issuer asked for.
    stated = named.format(issuer=server.issuer) if named else None
    server.document["issuer"] = stated
    with pytest.raises(ConfigurationError) as caught:
        _verify(server, rsa_cert)
    assert str(caught.value) == (
        f"{server.discovery_url}: the discovery document names issuer {stated!r}, not "
        f"{server.issuer!r}; pass the issuer exactly as the document (and the tokens) name it"
    )


def test_a_trailing_slash_is_the_same_issuer_for_verifiers_and_credentials(
    server: OidcServer, rsa_cert: Certificate
) -> None:
    # certauth.authority.check_discovery_issuer, one rule for both: the document is accepted
    # and its keys fetched (this server has none for the token's kid); a token's own iss is
    # still compared exactly with the issuer given.
    server.document["issuer"] = server.issuer + "/"
    with pytest.raises(TokenValidationError) as caught:
        _verify(server, rsa_cert)
    assert caught.value.check == "kid"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "the discovery document is not a JSON object"),
        ("a string", "the discovery document is not a JSON object"),
        ({"issuer": "{issuer}"}, "the discovery document has no jwks_uri"),
        ({"issuer": "{issuer}", "jwks_uri": ""}, "the discovery document has no jwks_uri"),
        ({"issuer": "{issuer}", "jwks_uri": 7}, "the discovery document has no jwks_uri"),
    ],
    ids=["list", "string", "no-jwks_uri", "empty-jwks_uri", "number-jwks_uri"],
)
def test_the_verifier_refuses_a_document_without_usable_keys(
    server: OidcServer, rsa_cert: Certificate, document: Any, message: str
) -> None:
    if isinstance(document, dict):
        document = {
            k: v.format(issuer=server.issuer) if k == "issuer" else v for k, v in document.items()
        }
    server.document = document
    # The credentials' error for the same fault (a ConfigurationError, exit 3).
    with pytest.raises(ConfigurationError) as caught:
        _verify(server, rsa_cert)
    assert str(caught.value) == f"{server.discovery_url}: {message}"


@pytest.mark.parametrize(
    ("jwks_uri", "message"),
    [
        ("http://keys.example.com/keys", "uses plain http"),
        ("keys.example.com/keys", "is not an absolute http(s) URL"),
        ("https://keys.example.com/keys#frag", "has a #fragment"),
    ],
)
def test_the_verifier_refuses_a_jwks_uri_it_must_not_fetch(
    server: OidcServer, rsa_cert: Certificate, jwks_uri: str, message: str
) -> None:
    server.document["jwks_uri"] = jwks_uri
    named = f"the jwks_uri in {server.discovery_url} {jwks_uri!r} {message}"
    with pytest.raises(ConfigurationError, match=re.escape(named)):
        _verify(server, rsa_cert)


def test_the_verifier_says_which_document_it_could_not_get(
    server: OidcServer, rsa_cert: Certificate
) -> None:
    server.raw_discovery = (404, "text/html", b"<html>Not Found</html>")
    with pytest.raises(TransportError) as caught:
        _verify(server, rsa_cert)
    assert str(caught.value) == (
        f"{server.discovery_url}: HTTP 404 for the discovery document; check the issuer / jwks_uri"
    )
    assert caught.value.status_code == 404
    # A 200 that is not JSON (a login page): its content type and first bytes are shown.
    server.raw_discovery = (200, "text/html; charset=utf-8", b"<html><body>Sign in</body></html>")
    with pytest.raises(TransportError) as caught:
        _verify(server, rsa_cert)
    assert str(caught.value) == (
        f"{server.discovery_url}: HTTP 200 with a text/html; charset=utf-8 body that is not "
        "JSON: '<html><body>Sign in</body></html>'; check the endpoint URL"
    )


# -- the credentials -------------------------------------------------------------------------------


def _get_token(kind: str, server: OidcServer, rsa_cert: Certificate, **kw: Any) -> str:
    """A token from ``server`` through the sync or the async certificate credential."""
    if kind == "sync":
        with CertificateCredential(
            None, "app", certificate=rsa_cert, issuer=server.issuer, retry=ONE_TRY, **kw
        ) as credential:
            return credential.get_token(SCOPE).token

    async def main() -> str:
        async with AsyncCertificateCredential(
            None, "app", certificate=rsa_cert, issuer=server.issuer, retry=ONE_TRY, **kw
        ) as credential:
            return (await credential.get_token(SCOPE)).token

    return asyncio.run(main())


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _sent_alg(server: OidcServer) -> str:
    (form,) = server.token_requests
    return str(jwt.get_unverified_header(form["client_assertion"])["alg"])


def test_a_credential_follows_the_discovery_document(
    server: OidcServer, rsa_cert: Certificate, kind: str
) -> None:
    server.document["token_endpoint_auth_methods_supported"] = ["private_key_jwt"]
    server.document["token_endpoint_auth_signing_alg_values_supported"] = ["PS256", "ES256"]
    assert _get_token(kind, server, rsa_cert) == "issued"
    # RS256 is not listed: the assertion is signed with the first RSA algorithm that is.
    assert _sent_alg(server) == "PS256"
    assert server.token_requests[0]["client_id"] == "app"


def test_a_credential_refuses_a_server_that_takes_no_assertions(
    server: OidcServer, rsa_cert: Certificate, kind: str
) -> None:
    server.document["token_endpoint_auth_methods_supported"] = ["client_secret_basic"]
    with pytest.raises(ConfigurationError) as caught:
        _get_token(kind, server, rsa_cert)
    assert str(caught.value) == (
        f"the server at {server.issuer}/token does not accept private_key_jwt (its discovery "
        "document lists client_secret_basic)"
    )
    assert server.token_requests == []  # refused before anything was sent


@pytest.mark.parametrize(
    ("listed", "alg", "refused"),
    [(["ES256"], None, "RS256"), (["RS256"], "PS256", "PS256")],
    ids=["default-alg-not-listed", "chosen-alg-not-listed"],
)
def test_a_credential_refuses_an_algorithm_the_server_does_not_list(
    server: OidcServer,
    rsa_cert: Certificate,
    kind: str,
    listed: list[str],
    alg: str | None,
    refused: str,
) -> None:
    server.document["token_endpoint_auth_signing_alg_values_supported"] = listed
    with pytest.raises(ConfigurationError, match=f"does not accept {refused} assertions") as caught:
        _get_token(kind, server, rsa_cert, **({"alg": alg} if alg else {}))
    assert f"its discovery document lists {', '.join(listed)}" in str(caught.value)
    assert server.token_requests == []


def test_a_secret_credential_refuses_a_server_that_takes_no_secrets(server: OidcServer) -> None:
    server.document["token_endpoint_auth_methods_supported"] = ["private_key_jwt"]
    with (
        ClientSecretCredential(None, "app", "s3cret", issuer=server.issuer) as credential,
        pytest.raises(ConfigurationError, match="does not accept client_secret_post"),
    ):
        credential.get_token(SCOPE)
    assert server.token_requests == []


def test_a_credential_refuses_a_document_from_another_issuer(
    server: OidcServer, rsa_cert: Certificate, kind: str
) -> None:
    server.document["issuer"] = "https://evil.example.com/tenant"
    with pytest.raises(
        ConfigurationError, match=re.escape("names issuer 'https://evil.example.com/tenant'")
    ):
        _get_token(kind, server, rsa_cert)
    assert server.token_requests == []
