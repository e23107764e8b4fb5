"""Proxies from the environment (``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``, ``NO_PROXY``).

The rules alone (``certauth._proxies``), then end to end through a real proxy on loopback:
tinyproxy (Debian's tinyproxy-bin, installed by scripts/ensure-services), started per test
module, whose log says what went through it. The emulator is the token endpoint, over TLS: an
``https://`` request goes through a ``CONNECT`` tunnel and its certificate is checked end to end.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from certauth import AsyncCertificateCredential, CertificateCredential, RetryPolicy
from certauth._proxies import Proxies
from certauth.certificates import Certificate
from certauth.emulator import Emulator
from certauth.errors import ConfigurationError, TransportError

TINYPROXY = shutil.which("tinyproxy")
CLIENT = "11111111-2222-3333-4444-5555555555bb"
SCOPE = "api://proxied/.default"
USER, PASSWORD = "alice", "pr0xy-Secret"
ONE_ATTEMPT = RetryPolicy(max_attempts=1)
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "request_method")


# -- the rules ------------------------------------------------------------------------------------


def _route(env: dict[str, str], url: str) -> str | None:
    """Where ``url`` goes under ``env``: the proxy's URL and variable, or ``None`` (direct)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    proxy = Proxies.from_environment(env).for_url(parts.scheme, parts.hostname or "", port)
    return None if proxy is None else f"{proxy.url} {proxy.variable}"


@pytest.mark.parametrize(
    ("env", "url", "route"),
    [
        ({}, "https://login.example/t", None),
        ({"HTTPS_PROXY": "http://p:3128"}, "https://login.example/t", "http://p:3128 HTTPS_PROXY"),
        ({"HTTPS_PROXY": "http://p:3128"}, "http://login.example/t", None),
        ({"HTTP_PROXY": "p:8080"}, "http://login.example/t", "http://p:8080 HTTP_PROXY"),
        ({"HTTP_PROXY": "p"}, "http://login.example/t", "http://p:80 HTTP_PROXY"),
        # The lower-case name wins; an empty one is unset.
        (
            {"https_proxy": "http://low:1", "HTTPS_PROXY": "http://up:2"},
            "https://h/",
            "http://low:1 https_proxy",
        ),
        (
            {"https_proxy": " ", "HTTPS_PROXY": "http://up:2"},
            "https://h/",
            "http://up:2 HTTPS_PROXY",
        ),
        # ALL_PROXY when the scheme's own is not set.
        ({"ALL_PROXY": "http://all:9"}, "https://h/", "http://all:9 ALL_PROXY"),
        (
            {"ALL_PROXY": "http://all:9", "HTTPS_PROXY": "http://s:1"},
            "https://h/",
            "http://s:1 HTTPS_PROXY",
        ),
        # httpoxy: HTTP_PROXY in a CGI script is a request header, not a setting.
        ({"HTTP_PROXY": "http://evil:1", "REQUEST_METHOD": "GET"}, "http://h/", None),
        (
            {"http_proxy": "http://ok:1", "REQUEST_METHOD": "GET"},
            "http://h/",
            "http://ok:1 http_proxy",
        ),
        # NO_PROXY, as httpx reads it.
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "*"}, "https://h/", None),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "example.com"}, "https://example.com/", None),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "example.com"}, "https://a.example.com/", None),
        (
            {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "example.com"},
            "https://badexample.com/",
            "http://p:1 HTTPS_PROXY",
        ),
        (
            {"HTTPS_PROXY": "http://p:1", "NO_PROXY": ".example.com"},
            "https://example.com/",
            "http://p:1 HTTPS_PROXY",
        ),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": ".example.com"}, "https://a.example.com/", None),
        (
            {"HTTPS_PROXY": "http://p:1", "no_proxy": "a.test, 127.0.0.1"},
            "https://127.0.0.1:8/",
            None,
        ),
        (
            {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "127.0.0.1"},
            "https://127.0.0.10/",
            "http://p:1 HTTPS_PROXY",
        ),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "::1"}, "https://[::1]:8443/", None),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "https://h:8443"}, "https://h:8443/", None),
        (
            {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "https://h:8443"},
            "https://h/",
            "http://p:1 HTTPS_PROXY",
        ),
        (
            {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "http://h"},
            "https://h/",
            "http://p:1 HTTPS_PROXY",
        ),
        # Credentials are never shown.
        (
            {"HTTPS_PROXY": "http://u:pw@p:1"},
            "https://h/",
            "http://p:1 HTTPS_PROXY",
        ),
    ],
)
def test_which_proxy_a_request_takes(env: dict[str, str], url: str, route: str | None) -> None:
    assert _route(env, url) == route


def test_credentials_become_basic_proxy_authorization() -> None:
    proxies = Proxies.from_environment({"HTTPS_PROXY": "http://al%40ice:p%3Aw%2F@p:1"})
    proxy = proxies.for_url("https", "h", 443)
    assert proxy is not None
    # RFC 7617: base64 of "user:password", percent-decoded.
    assert proxy.authorization == "Basic YWxAaWNlOnA6dy8="
    assert "p:w" not in repr(proxy)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "https://p:1",
            "HTTPS_PROXY: certauth's HTTP client takes an http:// proxy (https:// requests go "
            "through it in a CONNECT tunnel), not https://; give http://host:port, or list the "
            "token endpoint's host in NO_PROXY",
        ),
        (
            "socks5://u:secret@p:1080",
            "HTTPS_PROXY: certauth's HTTP client takes an http:// proxy (https:// requests go "
            "through it in a CONNECT tunnel), not socks5://; give http://host:port, or list the "
            "token endpoint's host in NO_PROXY",
        ),
        ("http://p:port", "HTTPS_PROXY: not a proxy URL ("),
        ("http://:8080", "HTTPS_PROXY: the proxy URL names no host; give http://host:port"),
    ],
)
def test_an_unusable_proxy_is_refused_naming_its_variable(value: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Proxies.from_environment({"HTTPS_PROXY": value})
    assert str(caught.value).startswith(message)
    assert "secret" not in str(caught.value)


# -- through a real proxy ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Tinyproxy:
    """A tinyproxy on loopback; :meth:`requests` are the request lines it logged."""

    def __init__(self, folder: Path, *, credentials: bool = False, connect_port: int | None = None):
        assert TINYPROXY, "tinyproxy is missing: run scripts/ensure-services"
        self.port = _free_port()
        self.log = folder / "tinyproxy.log"
        lines = [
            f"Port {self.port}",
            "Listen 127.0.0.1",
            "Timeout 30",
            "MaxClients 50",
            "Allow 127.0.0.1",
            "LogLevel Connect",
            f'LogFile "{self.log}"',
            "DisableViaHeader Yes",
        ]
        if credentials:
            lines.append(f"BasicAuth {USER} {PASSWORD}")
        if connect_port is not None:
            lines.append(f"ConnectPort {connect_port}")  # CONNECT to that port only
        config = folder / "tinyproxy.conf"
        config.write_text("\n".join(lines) + "\n")
        self.process = subprocess.Popen(
            [TINYPROXY, "-d", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"tinyproxy did not start: {self.process.stderr}") from None
                time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self) -> list[str]:
        """The request lines the proxy received ("CONNECT host:port HTTP/1.1", ...)."""
        text = self.log.read_text() if self.log.exists() else ""
        return [line.split("): ", 1)[1] for line in text.splitlines() if "Request (file" in line]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        assert self.process.stderr is not None
        self.process.stderr.close()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tinyproxy]:
    running = Tinyproxy(tmp_path_factory.mktemp("proxy"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tinyproxy]:
    """A proxy that asks for Basic credentials (407 without them)."""
    running = Tinyproxy(tmp_path_factory.mktemp("guarded"), credentials=True)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def tenant(rsa_cert: Certificate) -> Iterator[Emulator]:
    with Emulator(tls=True) as emulator:
        emulator.register(CLIENT, rsa_cert)
        yield emulator


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


def _authority(tenant: Emulator) -> str:
    return tenant.token_endpoint.split("/")[2]


def _credential(tenant: Emulator, cert: Certificate, **kw: object) -> CertificateCredential:
    return CertificateCredential(
        None,
        CLIENT,
        certificate=cert,
        token_endpoint=tenant.token_endpoint,
        verify=tenant.ca_file,
        retry=ONE_ATTEMPT,
        **kw,
    )


def test_a_token_request_goes_through_the_https_proxy_in_a_tunnel(
    proxy: Tinyproxy, tenant: Emulator, rsa_cert: Certificate, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("HTTPS_PROXY", proxy.url)
    before = len(proxy.requests())
    with _credential(tenant, rsa_cert) as credential:
        assert credential.get_token(SCOPE).token
        assert credential.get_token(SCOPE, enable_cae=True).token  # a second token request
    # One tunnel (the connection is kept alive inside it), to the endpoint's host and port.
    assert proxy.requests()[before:] == [f"CONNECT {_authority(tenant)} HTTP/1.1"]


def test_the_server_certificate_is_checked_through_the_tunnel(
    proxy: Tinyproxy, tenant: Emulator, rsa_cert: Certificate, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("HTTPS_PROXY", proxy.url)
    with (
        CertificateCredential(
            None,
            CLIENT,
            certificate=rsa_cert,
            token_endpoint=tenant.token_endpoint,
            retry=ONE_ATTEMPT,
        ) as credential,
        pytest.raises(TransportError) as caught,
    ):
        credential.get_token(SCOPE)  # the system store does not trust the emulator's CA
    assert "TLS certificate verification failed" in str(caught.value)


def test_no_proxy_sends_the_request_direct(
    proxy: Tinyproxy, tenant: Emulator, rsa_cert: Certificate, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("HTTPS_PROXY", proxy.url)
    clean_env.setenv("NO_PROXY", "localhost,127.0.0.1")
    before = len(proxy.requests())
    with _credential(tenant, rsa_cert) as credential:
        assert credential.get_token(SCOPE).token
    assert proxy.requests()[before:] == []


def test_a_plain_http_request_names_the_whole_url_to_the_proxy(
    proxy: Tinyproxy, rsa_cert: Certificate, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("HTTP_PROXY", proxy.url)
    with Emulator() as plain:
        plain.register(CLIENT, rsa_cert)
        before = len(proxy.requests())
        with _credential(plain, rsa_cert) as credential:
            assert credential.get_token(SCOPE).token
        assert proxy.requests()[before:] == [f"POST {plain.token_endpoint} HTTP/1.1"]


def test_a_proxy_that_asks_for_credentials_gets_them_from_the_url(
    guarded: Tinyproxy,
    tenant: Emulator,
    rsa_cert: Certificate,
    clean_env: pytest.MonkeyPatch,
    secret_registry: object,
) -> None:
    from _secret_scan import SecretRegistry

    assert isinstance(secret_registry, SecretRegistry)
    secret_registry.add(PASSWORD, "proxy password")
    with_credentials = guarded.url.replace("http://", f"http://{USER}:{PASSWORD}@")
    clean_env.setenv("HTTPS_PROXY", with_credentials)
    with _credential(tenant, rsa_cert) as credential:
        assert credential.get_token(SCOPE).token
    clean_env.setenv("HTTPS_PROXY", guarded.url)
    with _credential(tenant, rsa_cert) as credential, pytest.raises(TransportError) as caught:
        credential.get_token(SCOPE)
    assert str(caught.value) == (
        f"{tenant.token_endpoint}: cannot connect (the proxy {guarded.url} (from HTTPS_PROXY) "
        f"refused a tunnel to {_authority(tenant)}: HTTP 407 Proxy Authentication Required; "
        "give the proxy's credentials in the proxy URL (http://user:password@host:port)) "
        "(after 1 attempts); check the URL, the network and proxy settings"
    )


def test_a_tunnel_the_proxy_refuses_is_a_connect_failure_naming_it(
    tmp_path: Path, tenant: Emulator, rsa_cert: Certificate, clean_env: pytest.MonkeyPatch
) -> None:
    strict = Tinyproxy(tmp_path, connect_port=443)  # not the emulator's port
    try:
        clean_env.setenv("HTTPS_PROXY", strict.url)
        with _credential(tenant, rsa_cert) as credential, pytest.raises(TransportError) as caught:
            credential.get_token(SCOPE)
    finally:
        strict.stop()
    assert "cannot connect (" in str(caught.value)
    assert f"the proxy {strict.url} (from HTTPS_PROXY) refused a tunnel to" in str(caught.value)
    assert "list 127.0.0.1 in NO_PROXY if it is to be reached directly" in str(caught.value)


def test_an_unusable_proxy_variable_is_a_configuration_error(
    tenant: Emulator, rsa_cert: Certificate, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("HTTPS_PROXY", "socks5://127.0.0.1:1080")
    with _credential(tenant, rsa_cert) as credential, pytest.raises(ConfigurationError) as caught:
        credential.get_token(SCOPE)
    assert str(caught.value).startswith("HTTPS_PROXY: certauth's HTTP client takes an http://")


def test_the_async_credential_takes_the_same_proxy(
    proxy: Tinyproxy, tenant: Emulator, rsa_cert: Certificate, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("HTTPS_PROXY", proxy.url)
    before = len(proxy.requests())

    async def main() -> str:
        async with AsyncCertificateCredential(
            None,
            CLIENT,
            certificate=rsa_cert,
            token_endpoint=tenant.token_endpoint,
            verify=tenant.ca_file,
            retry=ONE_ATTEMPT,
        ) as credential:
            return (await credential.get_token(SCOPE)).token

    assert asyncio.run(main())
    assert proxy.requests()[before:] == [f"CONNECT {_authority(tenant)} HTTP/1.1"]


def test_certauth_token_in_a_shell_goes_through_the_proxy(
    proxy: Tinyproxy, tenant: Emulator, rsa_cert: Certificate, tmp_path: Path
) -> None:
    pem = tmp_path / "app.pem"
    pem.write_bytes(rsa_cert.private_key_pem() + rsa_cert.pem)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AZURE_", "CERTAUTH_")) and k.lower() not in PROXY_VARIABLES
    }
    env |= {"HTTPS_PROXY": proxy.url, "CERTAUTH_CACHE_DIR": str(tmp_path / "cache")}
    before = len(proxy.requests())
    argv = [sys.executable, "-m", "certauth", "token", "--client-id", CLIENT]
    argv += ["--token-endpoint", tenant.token_endpoint, "--cert", str(pem)]
    argv += ["--ca-file", str(tenant.ca_file), "--scope", SCOPE]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(".") == 2  # a JWT
    assert proxy.requests()[before:] == [f"CONNECT {_authority(tenant)} HTTP/1.1"]
