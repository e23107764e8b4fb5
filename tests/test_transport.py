"""The http.client transport behind certauth's sync clients: keep-alive, stale connections,
timeouts, TLS failures and partial bodies, with httpx's exception types."""

from __future__ import annotations

import gzip
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from certauth import _http
from certauth._transport import StdlibTransport


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1

    def do_GET(self) -> None:
        if self.path == "/slow":
            time.sleep(1.0)
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"hello ", b"world"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
            return
        body = b"x" * 100_000 if self.path == "/big" else b'{"ok": true}'
        encoded = gzip.compress(body) if self.path == "/gzip" else body
        self.send_response(200)
        self.send_header("Content-Length", str(len(encoded)))
        if self.path == "/gzip":
            self.send_header("Content-Encoding", "gzip")
        if self.path == "/close":
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(encoded)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    connections = 0

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client hanging up mid-body is what some tests do


@pytest.fixture
def server() -> Iterator[_Server]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def _url(httpd: _Server, path: str) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}{path}"


def _client(timeout: float = 5.0) -> httpx.Client:
    client = _http.new_sync_client(timeout=timeout)
    assert isinstance(client._transport, StdlibTransport)
    return client


def test_keep_alive_reuses_one_connection(server: _Server) -> None:
    with _client() as client:
        for _ in range(3):
            assert client.get(_url(server, "/")).json() == {"ok": True}
        assert client.post(_url(server, "/"), content=b"echo").content == b"echo"
    assert server.connections == 1


def test_a_connection_the_server_closed_is_not_reused(server: _Server) -> None:
    with _client() as client:
        client.get(_url(server, "/close"))
        assert client.get(_url(server, "/")).status_code == 200
    assert server.connections == 2


def test_chunked_and_gzip_bodies_are_decoded(server: _Server) -> None:
    with _client() as client:
        assert client.get(_url(server, "/chunked")).content == b"hello world"
        assert client.get(_url(server, "/gzip")).json() == {"ok": True}
        assert client.get(_url(server, "/")).status_code == 200
    assert server.connections == 1


def test_a_body_not_read_to_the_end_closes_its_connection(server: _Server) -> None:
    with _client() as client:
        with client.stream("GET", _url(server, "/big")) as response:
            next(response.iter_bytes())
        assert client.get(_url(server, "/")).status_code == 200
    assert server.connections == 2


def test_read_timeout(server: _Server) -> None:
    with _client(timeout=0.2) as client, pytest.raises(httpx.ReadTimeout):
        client.get(_url(server, "/slow"))


def test_connection_refused_is_a_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with _client() as client, pytest.raises(httpx.ConnectError) as caught:
        client.get(f"http://127.0.0.1:{port}/")
    assert _http._failure(caught.value).kind == "connect"


def test_an_untrusted_server_certificate_is_a_tls_failure() -> None:
    from certauth.emulator import Emulator

    with Emulator(tls=True) as tenant, _client() as client:
        with pytest.raises(httpx.ConnectError) as caught:
            client.get(tenant.jwks_uri)
        assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
        assert _http._failure(caught.value).kind == "tls"
        with _http.new_sync_client(verify=tenant.ca_file) as trusting:
            assert trusting.get(tenant.jwks_uri).json()["keys"]


def test_a_ca_file_is_trusted_alone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from certauth.certificates import generate_certificate
    from certauth.emulator import Emulator

    monkeypatch.setattr(_http, "_contexts", {})
    with Emulator(tls=True) as tenant:
        assert tenant.ca_file is not None
        # The CA file covers the server: the system store is never loaded.
        with _http.new_sync_client(verify=tenant.ca_file) as client:
            assert client.get(tenant.jwks_uri).status_code == 200
        assert set(_http._contexts) == {tenant.ca_file}
        # It does not: refused, even though the system store (here: the tenant's CA through
        # SSL_CERT_FILE) would trust the server. verify=PATH is exactly that bundle, as in
        # requests, httpx and azure-identity's connection_verify.
        unrelated = tmp_path / "unrelated-ca.pem"
        unrelated.write_bytes(generate_certificate("CN=unrelated CA").pem)
        monkeypatch.setenv("SSL_CERT_FILE", tenant.ca_file)
        with _http.new_sync_client(verify=str(unrelated)) as client:
            with pytest.raises(httpx.ConnectError) as caught:
                client.get(tenant.jwks_uri)
            assert _http._failure(caught.value).kind == "tls"
        # The default is the system store, SSL_CERT_FILE honoured.
        with _http.new_sync_client() as client:
            assert client.get(tenant.jwks_uri).status_code == 200
