"""No user info in URLs, and URLs a resolver can take: one check (``authority.check_endpoint_url``
and ``normalize_authority_host``) for every URL certauth is given or discovers.

A password in ``https://user:pass@host/`` must not travel (RFC 9110 section 4.2.4) nor show up
in any message; a DNS label over 63 characters or a name over 253 (RFC 1035 section 2.3.4) and
a URL over ``MAX_URL_CHARS`` used to fail deep in the HTTP stack (exit 1). Each is a usage
error (``InvalidArgumentError``, exit 2) naming the option, raised before anything is sent: the
loopback server below counts connections and must see none.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from _cert_helpers import assert_one_line_error, run_cli
from _hostile_server import Connection, HostileServer, serving
from _secret_scan import SecretRegistry

from certauth import CertificateCredential, RetryPolicy, TokenVerifier, verify_access_token
from certauth.authority import (
    MAX_HOST_CHARS,
    MAX_LABEL_CHARS,
    MAX_URL_CHARS,
    Authority,
    check_endpoint_url,
    normalize_authority_host,
)
from certauth.certificates import Certificate
from certauth.errors import InvalidArgumentError
from certauth.verify import verifier as verifier_module

TENANT = "13131313-2424-3535-4646-575757575757"
CLIENT_ID = "24242424-3535-4646-5757-686868686868"
SCOPE = "api://urls/.default"
PASSWORD = "url-pass-9b3e1f7a"
Capsys = pytest.CaptureFixture[str]


@pytest.fixture(autouse=True)
def _registered(secret_registry: SecretRegistry) -> Iterator[None]:
    # The suite's scan fails the test if the password shows in any log line or error message.
    secret_registry.add(PASSWORD, "a password in a URL")
    verifier_module._shared.clear()
    yield
    verifier_module._shared.clear()


@pytest.fixture
def server() -> Iterator[HostileServer]:
    """A loopback server that would answer anything: it must never be asked."""

    def refuse(conn: Connection) -> None:
        conn.send(b"HTTP/1.1 500 X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    with serving(refuse) as hostile:
        yield hostile


def _with_user(url: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://billing:{PASSWORD}@{rest}"


@pytest.fixture
def pem(rsa_cert: Certificate, tmp_path: Path) -> Path:
    path = tmp_path / "app.pem"
    path.write_bytes(rsa_cert.private_key_pem() + rsa_cert.pem)
    return path


def _token(rsa_cert: Certificate) -> str:
    return jwt.encode(
        {"aud": "api://urls", "exp": 2_000_000_000}, rsa_cert.private_key, algorithm="RS256"
    )


# -- user info ------------------------------------------------------------------------------------


def test_the_one_check_refuses_user_info_in_every_form() -> None:
    for url in (
        f"https://billing:{PASSWORD}@login.example.com/t/oauth2/v2.0/token",
        f"https://{PASSWORD}@login.example.com/token",
        f"http://billing:{PASSWORD}@127.0.0.1:8400/t/oauth2/v2.0/token",
        f"https://a@b:{PASSWORD}@login.example.com/token",
        f"https://billing:{PASSWORD}@login.example.com?x=1",
        f"https://billing:{PASSWORD}@login.example.com:99999/token",  # bad port too
        f"https://billing:{PASSWORD}@[::1/token",  # not even a valid URL
        f"billing:{PASSWORD}@login.example.com/token",  # no scheme
    ):
        with pytest.raises(InvalidArgumentError, match="user info") as excinfo:
            check_endpoint_url(url)
        assert PASSWORD not in str(excinfo.value)
        # A library caller is told the keyword; the CLI shows its option (test_cli_wording.py).
        assert "(fix token_endpoint=)" in str(excinfo.value)
    for host in (f"billing:{PASSWORD}@login.microsoftonline.us", f"https://x:{PASSWORD}@h.example"):
        with pytest.raises(InvalidArgumentError, match="user info") as excinfo:
            normalize_authority_host(host)
        assert "authority= / AZURE_AUTHORITY_HOST" in str(excinfo.value)
    # An '@' after the authority is just part of the path or query.
    assert check_endpoint_url("https://h.example/t/a@b?c=d@e") == "https://h.example/t/a@b?c=d@e"


def _library_calls(url: str, rsa_cert: Certificate) -> dict[str, Callable[[], Any]]:
    def credential(**kwargs: Any) -> Callable[[], Any]:
        def make() -> Any:
            with CertificateCredential(
                kwargs.pop("tenant", None),
                CLIENT_ID,
                certificate=rsa_cert,
                retry=RetryPolicy(max_attempts=1),
                **kwargs,
            ) as made:
                return made.get_token(SCOPE)

        return make

    token = _token(rsa_cert)
    return {
        "token_endpoint=": credential(
            token_endpoint=_with_user(f"{url}/{TENANT}/oauth2/v2.0/token")
        ),
        "authority=": credential(tenant=TENANT, authority=_with_user(url)),
        "issuer= (credential)": credential(issuer=_with_user(f"{url}/issuer")),
        "issuer= (verifier)": lambda: TokenVerifier(
            issuer=_with_user(f"{url}/issuer"), audience="api://urls"
        ).verify(token),
        "jwks_uri=": lambda: TokenVerifier(
            jwks_uri=_with_user(f"{url}/keys"), audience="api://urls"
        ).verify(token),
        "verify_access_token(issuer=, jwks_uri=)": lambda: verify_access_token(
            token, issuer=_with_user(f"{url}/i"), jwks_uri=f"{url}/keys", audience="api://urls"
        ),
        "verify_access_token(jwks_uri=)": lambda: verify_access_token(
            token, jwks_uri=_with_user(f"{url}/keys"), audience="api://urls"
        ),
    }


@pytest.mark.parametrize(
    "name",
    [
        "token_endpoint=",
        "authority=",
        "issuer= (credential)",
        "issuer= (verifier)",
        "jwks_uri=",
        "verify_access_token(issuer=, jwks_uri=)",
        "verify_access_token(jwks_uri=)",
    ],
)
def test_the_library_refuses_user_info_before_sending(
    server: HostileServer, rsa_cert: Certificate, name: str
) -> None:
    call = _library_calls(server.url, rsa_cert)[name]
    with pytest.raises(InvalidArgumentError, match="user info") as excinfo:
        call()
    assert excinfo.value.exit_code == 2
    assert PASSWORD not in str(excinfo.value)
    assert server.connections == []


CLI_CASES = {
    "token --token-endpoint": (
        "token",
        "--token-endpoint",
        lambda url: _with_user(f"{url}/{TENANT}/oauth2/v2.0/token"),
    ),
    "token --authority-host": ("token", "--authority-host", _with_user),
    "token --issuer": ("token", "--issuer", lambda url: _with_user(f"{url}/issuer")),
    "verify --issuer": ("verify", "--issuer", lambda url: _with_user(f"{url}/issuer")),
    "verify --jwks-uri": ("verify", "--jwks-uri", lambda url: _with_user(f"{url}/keys")),
}


def _cli_args(command: str, option: str, value: str, pem: Path, token: str) -> list[Any]:
    if command == "token":
        tenant = ["--tenant", TENANT] if option == "--authority-host" else []
        return [
            "token",
            "--client-id",
            CLIENT_ID,
            *tenant,
            option,
            value,
            "--cert",
            pem,
            "--scope",
            SCOPE,
            "--timeout",
            "2",
        ]
    return ["verify", token, option, value, "--audience", "api://urls", "--timeout", "2"]


@pytest.mark.usefixtures("cli_env")
@pytest.mark.parametrize("case", list(CLI_CASES))
def test_the_cli_refuses_user_info_with_exit_2(
    capsys: Capsys, server: HostileServer, rsa_cert: Certificate, pem: Path, case: str
) -> None:
    command, option, make = CLI_CASES[case]
    args = _cli_args(command, option, make(server.url), pem, _token(rsa_cert))
    line = assert_one_line_error(run_cli(capsys, *args), 2, "user info", option)
    assert PASSWORD not in line
    assert server.connections == []


def test_environment_authority_host_with_user_info_is_exit_2(
    capsys: Capsys, server: HostileServer, pem: Path, cli_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", _with_user(server.url))
    result = run_cli(
        capsys, "token", "--client-id", CLIENT_ID, "--tenant", TENANT, "--cert", pem,
        "--scope", SCOPE,
    )  # fmt: skip
    line = assert_one_line_error(result, 2, "user info", "AZURE_AUTHORITY_HOST")
    assert PASSWORD not in line
    assert server.connections == []


def _discovery_server(field: str) -> HostileServer:
    """An OIDC issuer whose discovery document puts user info into ``field``; it answers
    every other request with a 500 (which the test proves is never asked for)."""
    state: dict[str, str] = {}

    def behave(conn: Connection) -> None:
        if b"/.well-known/openid-configuration" not in conn.request.split(b"\r\n", 1)[0]:
            conn.send(b"HTTP/1.1 500 X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        issuer = state["issuer"]
        document = {
            "issuer": issuer,
            "token_endpoint": f"{issuer}/token",
            "jwks_uri": f"{issuer}/keys",
        }
        document[field] = _with_user(document[field])
        body = json.dumps(document).encode()
        conn.send(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )

    hostile = HostileServer(behave)
    state["issuer"] = f"{hostile.url}/issuer"
    return hostile


def test_a_discovered_token_endpoint_with_user_info_is_refused(rsa_cert: Certificate) -> None:
    with _discovery_server("token_endpoint") as hostile:
        with (
            CertificateCredential(
                None,
                CLIENT_ID,
                certificate=rsa_cert,
                issuer=f"{hostile.url}/issuer",
                retry=RetryPolicy(max_attempts=1),
            ) as credential,
            pytest.raises(InvalidArgumentError, match="user info") as excinfo,
        ):
            credential.get_token(SCOPE)
        assert len(hostile.connections) == 1  # the discovery document, no token request
    assert "token_endpoint in" in str(excinfo.value)
    assert PASSWORD not in str(excinfo.value)


def test_a_discovered_jwks_uri_with_user_info_is_refused(rsa_cert: Certificate) -> None:
    with _discovery_server("jwks_uri") as hostile:
        verifier = TokenVerifier(
            issuer=f"{hostile.url}/issuer", audience="api://urls", retry=RetryPolicy(1)
        )
        with verifier, pytest.raises(InvalidArgumentError, match="user info") as excinfo:
            verifier.verify(_token(rsa_cert))
        assert len(hostile.connections) == 1  # the discovery document, no JWKS request
    assert "jwks_uri in" in str(excinfo.value)
    assert PASSWORD not in str(excinfo.value)


# -- host names a resolver can take, URLs of a sane length ----------------------------------------


def _bad_hosts() -> dict[str, str]:
    long_label = "a" * (MAX_LABEL_CHARS + 1)
    long_name = ".".join(["a" * 49] * 5) + ".comm"  # 254 characters
    assert len(long_name) == MAX_HOST_CHARS + 1
    return {
        "label of 64": f"{long_label}.example.com",
        "name of 254": long_name,
        "empty label": "login..example.com",
        "leading dot": ".example.com",
    }


@pytest.mark.parametrize("host", list(_bad_hosts().values()), ids=list(_bad_hosts()))
def test_hosts_that_are_not_dns_names_are_usage_errors(host: str) -> None:
    with pytest.raises(InvalidArgumentError, match=r"RFC 1035 section 2\.3\.4|empty label"):
        Authority.from_token_endpoint(f"https://{host}/t/oauth2/v2.0/token")
    with pytest.raises(InvalidArgumentError, match="authority= / AZURE_AUTHORITY_HOST"):
        normalize_authority_host(host)
    with pytest.raises(InvalidArgumentError, match="jwks_uri="):
        TokenVerifier(jwks_uri=f"https://{host}/keys", audience="a")


def test_the_longest_labels_and_names_pass() -> None:
    label = "a" * MAX_LABEL_CHARS
    name = ".".join(["a" * 49] * 5) + ".com"  # 253 characters
    for host in (f"{label}.example.com", name, f"{name}.", "127.0.0.1", "[::1]"):
        url = f"https://{host}/t/oauth2/v2.0/token"
        assert check_endpoint_url(url) == url


def test_urls_over_the_length_limit_are_usage_errors() -> None:
    base = "https://login.example.com/"
    fits = base + "p" * (MAX_URL_CHARS - len(base))
    assert check_endpoint_url(fits) == fits
    with pytest.raises(InvalidArgumentError, match="2,049 characters long") as excinfo:
        check_endpoint_url(fits + "p")
    assert "token_endpoint=" in str(excinfo.value)
    with pytest.raises(InvalidArgumentError, match="issuer="):
        Authority.discovery_url(base + "i" * MAX_URL_CHARS)


@pytest.mark.usefixtures("cli_env")
@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--token-endpoint", f"https://{'a' * 64}.example.com/t/oauth2/v2.0/token"),
        ("--token-endpoint", "http://127.0.0.1:1/" + "p" * MAX_URL_CHARS),
        ("--authority-host", f"{'b' * 64}.example.com"),
        ("--issuer", f"https://{'c' * 64}.example.com/t/v2.0"),
    ],
)
def test_the_cli_names_the_option_with_exit_2(
    capsys: Capsys, pem: Path, option: str, value: str
) -> None:
    tenant = ["--tenant", TENANT] if option == "--authority-host" else []
    result = run_cli(
        capsys, "token", "--client-id", CLIENT_ID, *tenant, option, value, "--cert", pem,
        "--scope", SCOPE,
    )  # fmt: skip
    assert_one_line_error(result, 2, option)


@pytest.mark.parametrize("option", ["--jwks-uri", "--issuer"])
def test_certauth_verify_names_the_option_with_exit_2(
    capsys: Capsys, rsa_cert: Certificate, option: str
) -> None:
    value = f"https://{'d' * 64}.example.com/keys"
    result = run_cli(capsys, "verify", _token(rsa_cert), option, value, "--audience", "a")
    assert_one_line_error(result, 2, option, "RFC 1035")
