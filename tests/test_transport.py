"""The HTTP stacks under certauth's flows: keep-alive, stale connections, timeouts, TLS
failures, partial bodies, the body cap, gzip, connect failures.

The sync credentials send through certauth's own client on ``http.client``
(``_http.new_sync_client``: ``StdlibClient``), the async ones through httpx's ``AsyncClient``
(httpcore), and a caller's ``httpx.Client`` through httpx: three stacks under one flow. Every
behaviour is run through each (``stack`` is ``sync``, ``async`` or ``httpx``), driven the way
the credentials drive them (``_http.run_sync`` / ``_http.run_async`` with ``Send`` actions),
against a real server on 127.0.0.1 that misbehaves on purpose. The last tests are about
``StdlibClient`` alone.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from certauth import RetryPolicy, __version__, _http
from certauth._flow import Failure, Flow, Reply, Send, Sleep, get_json
from certauth._transport import StdlibClient
from certauth.certificates import Certificate
from certauth.errors import TransportError
from certauth.protocol import MAX_RESPONSE_BYTES

T = TypeVar("T")

#: A body twice the cap, and a gzip body that inflates to eight times the cap.
HUGE = 2 * MAX_RESPONSE_BYTES
BOMB = gzip.compress(b"\0" * (8 * MAX_RESPONSE_BYTES))
#: The most one read hands up (both stacks read 64 KiB at a time).
READ_SIZE = 64 * 1024
#: One attempt: these tests are about what one answer turns into.
_NO_RETRY = RetryPolicy(max_attempts=1)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1

    def do_GET(self) -> None:
        name = self.path.strip("/").replace("-", "_")
        route = getattr(self, f"_get_{name}", None) if name else None
        if route is None:
            self._send(200, b'{"ok": true}')
        else:
            route()

    def do_POST(self) -> None:
        self._send(200, self.rfile.read(int(self.headers["Content-Length"])))

    def _send(self, status: int, body: bytes, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def _get_slow(self) -> None:
        time.sleep(1.0)
        self._send(200, b'{"ok": true}')

    def _get_close(self) -> None:
        self._send(200, b'{"ok": true}', Connection="close")

    def _get_stale(self) -> None:
        # Kept alive as far as the client can tell, then closed by the server (an idle timeout).
        self._send(200, b'{"ok": true}')
        self.close_connection = True

    def _get_chunked(self) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for part in (b"hello ", b"world"):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
        self.wfile.write(b"0\r\n\r\n")

    def _get_gzip(self) -> None:
        self._send(200, gzip.compress(b'{"ok": true}'), Content_Encoding="gzip")

    def _get_http10(self) -> None:
        # No length: the body ends when the server closes the connection.
        self.wfile.write(b'HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{"ok": 10}')
        self.close_connection = True

    def _get_huge(self) -> None:
        self._send(200, b"x" * HUGE)

    def _get_bomb(self) -> None:
        self._send(200, BOMB, Content_Encoding="gzip", Content_Type="application/json")

    def _get_drip(self) -> None:
        # One byte every 50 ms: no single read ever waits long enough to time out.
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        for _ in range(200):  # 10 s at most, whoever hangs up first
            self.wfile.write(b" ")
            self.wfile.flush()
            time.sleep(0.05)

    def _get_partial(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "100")
        self.end_headers()
        self.wfile.write(b'{"cut": ')
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True

    def _get_partial_chunked(self) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.write(b'8\r\n{"cut": \r\n')  # and never the last, empty chunk
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True

    def _get_hangup(self) -> None:
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True

    def _get_html(self) -> None:
        self._send(200, b"<html><body>Sign in</body></html>", Content_Type="text/html")

    def _get_missing(self) -> None:
        self._send(404, b"<html>Not Found</html>", Content_Type="text/html")

    def _get_two_headers(self) -> None:
        self.send_response(200)
        self.send_header("X-Twice", "one")
        self.send_header("X-Twice", "two")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def _get_user_agent(self) -> None:
        self._send(200, self.headers["User-Agent"].encode())

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


# -- the two stacks ------------------------------------------------------------------------------


class Stack:
    """Runs a flow with one fresh client of one stack, as a credential would."""

    def __init__(self, name: str) -> None:
        self.name = name

    def run(self, flow: Flow[T], *, timeout: float = 5.0, verify: Any = None) -> T:
        if self.name == "sync":
            with _http.new_sync_client(verify=verify, timeout=timeout) as client:
                assert isinstance(client, StdlibClient)
                return _http.run_sync(flow, client)
        if self.name == "httpx":  # a caller's client= (httpcore underneath)
            context = _http.resolve_verify(verify)
            with httpx.Client(verify=context, timeout=timeout) as caller:
                return _http.run_sync(flow, caller)

        async def main() -> T:
            async with _http.new_async_client(verify=verify, timeout=timeout) as client:
                return await _http.run_async(flow, client)

        return asyncio.run(main())

    def exchange(
        self, *actions: Send | Sleep, timeout: float = 5.0, verify: Any = None
    ) -> list[Reply | Failure]:
        """Send each request in turn on one client; the answer to each."""
        return self.run(_each(actions), timeout=timeout, verify=verify)

    def one(self, url: str, *, timeout: float = 5.0, verify: Any = None) -> Reply | Failure:
        (answer,) = self.exchange(Send("GET", url), timeout=timeout, verify=verify)
        return answer


def _each(actions: Sequence[Send | Sleep]) -> Flow[list[Reply | Failure]]:
    answers: list[Reply | Failure] = []
    for action in actions:
        answer = yield action
        if isinstance(action, Send):
            assert answer is not None
            answers.append(answer)
    return answers


@pytest.fixture(params=["sync", "async", "httpx"])
def stack(request: pytest.FixtureRequest) -> Stack:
    return Stack(request.param)


def _reply(answer: Reply | Failure) -> Reply:
    assert isinstance(answer, Reply), answer
    return answer


def _failure(answer: Reply | Failure, kind: str) -> Failure:
    assert isinstance(answer, Failure), f"expected a {kind} failure, got {answer}"
    assert answer.kind == kind, answer
    return answer


def _get(url: str) -> Send:
    return Send("GET", url)


# -- connections -----------------------------------------------------------------------------------


def test_keep_alive_reuses_one_connection(stack: Stack, server: _Server) -> None:
    url = _url(server, "/")
    answers = stack.exchange(_get(url), _get(url), _get(url), Send("POST", url, {}, b"echo"))
    assert [_reply(a).body for a in answers] == [b'{"ok": true}'] * 3 + [b"echo"]
    assert server.connections == 1


def test_a_connection_the_server_closed_is_not_reused(stack: Stack, server: _Server) -> None:
    answers = stack.exchange(_get(_url(server, "/close")), _get(_url(server, "/")))
    assert [_reply(a).status for a in answers] == [200, 200]
    assert server.connections == 2


def test_a_connection_closed_without_notice_is_replaced(stack: Stack, server: _Server) -> None:
    # The server closes an idle keep-alive connection; the next request must not fail on it.
    answers = stack.exchange(_get(_url(server, "/stale")), Sleep(0.2), _get(_url(server, "/")))
    assert [_reply(a).status for a in answers] == [200, 200]
    assert server.connections == 2


def test_chunked_gzip_and_http10_bodies_are_decoded(stack: Stack, server: _Server) -> None:
    answers = stack.exchange(
        _get(_url(server, "/chunked")),
        _get(_url(server, "/gzip")),
        _get(_url(server, "/")),
        _get(_url(server, "/http10")),
        _get(_url(server, "/")),
    )
    assert [_reply(a).body for a in answers] == [
        b"hello world",
        b'{"ok": true}',
        b'{"ok": true}',
        b'{"ok": 10}',
        b'{"ok": true}',
    ]
    assert server.connections == 2  # the HTTP/1.0 answer ended its connection


def test_the_user_agent_names_certauth(stack: Stack, server: _Server) -> None:
    agent = _reply(stack.one(_url(server, "/user-agent"))).body
    # A caller's own client keeps its own User-Agent.
    expected = (
        f"python-httpx/{httpx.__version__}" if stack.name == "httpx" else f"certauth/{__version__}"
    )
    assert agent == expected.encode()


# -- the body cap ----------------------------------------------------------------------------------


def test_a_body_past_the_cap_is_cut_and_its_connection_dropped(
    stack: Stack, server: _Server
) -> None:
    huge, after = stack.exchange(_get(_url(server, "/huge")), _get(_url(server, "/")))
    # Reading stops at the first read past the cap: enough to know the answer is too big.
    assert MAX_RESPONSE_BYTES < len(_reply(huge).body) <= MAX_RESPONSE_BYTES + READ_SIZE
    assert _reply(after).body == b'{"ok": true}'
    assert server.connections == 2  # the half-read connection was not reused


def test_an_inflated_body_past_the_cap_is_refused(stack: Stack, server: _Server) -> None:
    assert len(BOMB) < 64 * 1024  # 8 KiB on the wire, 8 MiB once inflated
    flow = get_json(
        _url(server, "/bomb"), what="JWKS", hint="check the jwks_uri", retry=_NO_RETRY, now=0
    )
    with pytest.raises(TransportError, match="larger than 1024 KiB; refused"):
        stack.run(flow)


def test_an_inflated_body_is_cut_at_the_cap_too(stack: Stack, server: _Server) -> None:
    body = _reply(stack.one(_url(server, "/bomb"))).body
    assert MAX_RESPONSE_BYTES < len(body) <= MAX_RESPONSE_BYTES + READ_SIZE


# -- documents (the GET flow discovery and JWKS share) ---------------------------------------------


def test_a_document_that_is_not_json_names_its_content_type(stack: Stack, server: _Server) -> None:
    flow = get_json(
        _url(server, "/html"),
        what="discovery document",
        hint="check --issuer",
        retry=_NO_RETRY,
        now=0,
    )
    with pytest.raises(TransportError) as caught:
        stack.run(flow)
    assert "HTTP 200 with a text/html body that is not JSON: '<html><body>Sign in" in str(
        caught.value
    )
    assert caught.value.status_code == 200


def test_a_missing_document_is_refused_with_the_hint(stack: Stack, server: _Server) -> None:
    url = _url(server, "/missing")
    flow = get_json(url, what="discovery document", hint="check --issuer", retry=_NO_RETRY, now=0)
    with pytest.raises(TransportError) as caught:
        stack.run(flow)
    assert str(caught.value) == f"{url}: HTTP 404 for the discovery document; check --issuer"
    assert caught.value.status_code == 404


# -- failures --------------------------------------------------------------------------------------


def test_read_timeout(stack: Stack, server: _Server) -> None:
    started = time.monotonic()
    failure = _failure(stack.one(_url(server, "/slow"), timeout=0.2), "timeout")
    assert failure.detail.startswith("timed out after 0.2 s")  # how long, where it stopped
    assert time.monotonic() - started < 0.9  # did not wait for the server's answer


def test_a_dripping_body_is_cut_off_at_the_deadline(stack: Stack, server: _Server) -> None:
    # No single read times out; the answer as a whole must arrive within the timeout.
    started = time.monotonic()
    _failure(stack.one(_url(server, "/drip"), timeout=0.5), "timeout")
    assert time.monotonic() - started < 2.5


@pytest.mark.parametrize("path", ["/partial", "/partial-chunked"], ids=["length", "chunked"])
def test_a_body_cut_short_is_a_protocol_failure(stack: Stack, server: _Server, path: str) -> None:
    # The server hangs up after 8 of the bytes it announced: not an answer to parse.
    _failure(stack.one(_url(server, path)), "protocol")


def test_a_hang_up_without_an_answer_is_a_protocol_failure(stack: Stack, server: _Server) -> None:
    _failure(stack.one(_url(server, "/hangup")), "protocol")


def test_connection_refused_is_a_connect_failure(stack: Stack) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    failure = _failure(stack.one(f"http://127.0.0.1:{port}/"), "connect")
    assert failure.detail.startswith("cannot connect (")


def test_a_connect_that_never_completes_times_out(stack: Stack) -> None:
    # A listener whose accept queue is full: the kernel drops further SYNs, so connect() waits.
    with socket.create_server(("127.0.0.1", 0), backlog=0) as listener:
        port = listener.getsockname()[1]
        fillers = []
        try:
            for _ in range(8):  # enough to fill the queue whatever the kernel rounds 0 up to
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
                fillers.append(filler)
            time.sleep(0.1)
            started = time.monotonic()
            _failure(stack.one(f"http://127.0.0.1:{port}/", timeout=0.5), "timeout")
            assert time.monotonic() - started < 2
        finally:
            for filler in fillers:
                filler.close()


def test_an_untrusted_server_certificate_is_a_tls_failure(stack: Stack) -> None:
    from certauth.emulator import Emulator

    with Emulator(tls=True) as tenant:
        failure = _failure(stack.one(tenant.jwks_uri), "tls")
        assert failure.detail.startswith("TLS certificate verification failed: ")
        trusted = _reply(stack.one(tenant.jwks_uri, verify=tenant.ca_file))
        assert trusted.status == 200
        assert b'"keys"' in trusted.body


def test_tls_to_a_plain_http_server_is_a_tls_failure(stack: Stack, server: _Server) -> None:
    url = _url(server, "/").replace("http://", "https://")
    failure = _failure(stack.one(url), "tls")
    assert failure.detail.startswith("TLS error: ")


# -- through the credentials ------------------------------------------------------------------


class _CutOnce(BaseHTTPRequestHandler):
    """A token endpoint whose first answer is cut short by a dropped connection."""

    protocol_version = "HTTP/1.1"
    answered = 0
    BODY = b'{"access_token": "t", "token_type": "Bearer", "expires_in": 3600}'

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).answered += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.BODY)))
        self.end_headers()
        if self.answered == 1:
            self.wfile.write(self.BODY[:10])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
        else:
            self.wfile.write(self.BODY)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_token_response_cut_short_is_retried(stack: Stack, rsa_cert: Certificate) -> None:
    from certauth import AsyncCertificateCredential, CertificateCredential

    handler = type("CutOnce", (_CutOnce,), {"answered": 0})
    httpd = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/token"
    retry = RetryPolicy(max_attempts=2, base_delay=0.01)
    try:
        if stack.name == "sync":
            with CertificateCredential(
                None, "app", certificate=rsa_cert, token_endpoint=url, retry=retry
            ) as credential:
                token = credential.get_token("api://x/.default").token
        else:

            async def main() -> str:
                async with AsyncCertificateCredential(
                    None, "app", certificate=rsa_cert, token_endpoint=url, retry=retry
                ) as credential:
                    return (await credential.get_token("api://x/.default")).token

            token = asyncio.run(main())
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
    assert token == "t"
    assert handler.answered == 2


# -- StdlibClient alone ---------------------------------------------------------------------------


def test_a_body_past_the_cap_drops_its_connection_and_a_read_one_is_kept(server: _Server) -> None:
    with _http.new_sync_client() as client:
        assert isinstance(_reply(client.send(_get(_url(server, "/huge")))), Reply)
        assert _reply(client.send(_get(_url(server, "/")))).status == 200
        assert _reply(client.send(_get(_url(server, "/")))).status == 200
    assert server.connections == 2


def test_a_request_that_asked_to_close_does_not_keep_its_connection(server: _Server) -> None:
    with _http.new_sync_client() as client:
        _reply(client.send(Send("GET", _url(server, "/"), {"Connection": "close"})))
        _reply(client.send(_get(_url(server, "/"))))
    assert server.connections == 2


def test_a_header_of_the_request_replaces_the_clients_whatever_its_case(server: _Server) -> None:
    with _http.new_sync_client() as client:
        reply = client.send(Send("GET", _url(server, "/user-agent"), {"user-agent": "flow/1"}))
    assert _reply(reply).body == b"flow/1"


def test_no_time_left_sends_nothing(server: _Server) -> None:
    with _http.new_sync_client() as client:
        failure = _failure(client.send(Send("GET", _url(server, "/"), timeout=0.0)), "timeout")
    assert failure.detail == "timed out: no time left for another attempt"
    assert server.connections == 0


@pytest.mark.parametrize(
    ("url", "detail"),
    [
        ("ftp://127.0.0.1/x", "ValueError: unsupported URL scheme 'ftp://' in 'ftp://127.0.0.1/x'"),
        ("https:///no-host", "ValueError: no host in 'https:///no-host'"),
    ],
)
def test_a_url_it_cannot_send_to_is_a_protocol_failure(url: str, detail: str) -> None:
    with _http.new_sync_client() as client:
        assert _failure(client.send(_get(url)), "protocol").detail == detail


def test_the_headers_are_lower_case_and_repeated_ones_joined(server: _Server) -> None:
    with _http.new_sync_client() as client:
        reply = _reply(client.send(_get(_url(server, "/two-headers"))))
    assert reply.headers["x-twice"] == "one, two"
    assert reply.headers["content-length"] == "2"


def test_a_ca_file_is_trusted_alone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from certauth.certificates import generate_certificate
    from certauth.emulator import Emulator

    monkeypatch.setattr(_http, "_contexts", {})
    with Emulator(tls=True) as tenant:
        assert tenant.ca_file is not None
        # The CA file covers the server: the system store is never loaded.
        with _http.new_sync_client(verify=tenant.ca_file) as client:
            assert _reply(client.send(_get(tenant.jwks_uri))).status == 200
        assert set(_http._contexts) == {tenant.ca_file}
        # It does not: refused, even though the system store (here: the tenant's CA through
        # SSL_CERT_FILE) would trust the server. verify=PATH is exactly that bundle, as in
        # requests, httpx and azure-identity's connection_verify.
        unrelated = tmp_path / "unrelated-ca.pem"
        unrelated.write_bytes(generate_certificate("CN=unrelated CA").pem)
        monkeypatch.setenv("SSL_CERT_FILE", tenant.ca_file)
        with _http.new_sync_client(verify=str(unrelated)) as client:
            failure = _failure(client.send(_get(tenant.jwks_uri)), "tls")
        assert failure.detail.startswith("TLS certificate verification failed: ")
        # The default is the system store, SSL_CERT_FILE honoured.
        with _http.new_sync_client() as client:
            assert _reply(client.send(_get(tenant.jwks_uri))).status == 200
