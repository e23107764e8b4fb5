"""The transports that follow a rotated TLS client certificate (mutual TLS): after a change
every request goes over a new pool of connections, an answer still being read on the old one
is read to its end, and the old pool is closed once nothing of it is in use. Against a real
server on 127.0.0.1 that counts its connections; the certificate is stood for by any object
(the transports compare identities). certauth's own sync client (``StdlibClient``) ties each
connection to the TLS context it was opened with: the last tests."""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from certauth._flow import Reply, Send
from certauth._rotating_transport import AsyncRotatingTransport, RotatingTransport
from certauth._transport import StdlibClient

BODY = b"x" * 200_000  # more than one read: an answer can be open while another is sent


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    connections = 0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[_Server]:
    running = _Server(("127.0.0.1", 0), _Handler)
    threading.Thread(target=running.serve_forever, daemon=True).start()
    yield running
    running.shutdown()
    running.server_close()


def _url(server: _Server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/"


class _Watched(httpx.HTTPTransport):
    closed = False

    def close(self) -> None:
        self.closed = True
        super().close()


class _AsyncWatched(httpx.AsyncHTTPTransport):
    closed = False

    async def aclose(self) -> None:
        self.closed = True
        await super().aclose()


def test_a_new_certificate_gets_new_connections_and_the_old_pool_is_closed_when_idle(
    server: _Server,
) -> None:
    certificate = [object()]
    made: list[_Watched] = []

    def make() -> _Watched:
        made.append(_Watched(verify=ssl.create_default_context()))
        return made[-1]

    transport = RotatingTransport(make, lambda: certificate[0])
    with httpx.Client(transport=transport) as client:
        client.get(_url(server))
        client.get(_url(server))
        assert server.connections == 1  # kept alive while the certificate stays
        with client.stream("GET", _url(server)) as reading:
            certificate[0] = object()  # a rotation while an answer is being read
            assert client.get(_url(server)).content == BODY
            assert server.connections == 2
            assert len(made) == 2
            assert not made[0].closed  # its answer is still being read
            assert reading.read() == BODY
        assert made[0].closed
        client.get(_url(server))
        assert server.connections == 2  # the new pool's connection is kept alive
        assert not made[1].closed
    assert made[1].closed


def test_the_async_transport_follows_the_certificate_too(server: _Server) -> None:
    certificate = [object()]
    made: list[_AsyncWatched] = []

    def make() -> _AsyncWatched:
        made.append(_AsyncWatched())
        return made[-1]

    async def scenario() -> None:
        transport = AsyncRotatingTransport(make, lambda: certificate[0])
        async with httpx.AsyncClient(transport=transport) as client:
            await client.get(_url(server))
            await client.get(_url(server))
            assert server.connections == 1
            async with client.stream("GET", _url(server)) as reading:
                certificate[0] = object()
                assert (await client.get(_url(server))).content == BODY
                assert server.connections == 2
                assert not made[0].closed
                assert await reading.aread() == BODY
            assert made[0].closed
        assert made[1].closed

    asyncio.run(scenario())


def test_a_rotation_with_no_answer_open_closes_the_old_pool_at_once(server: _Server) -> None:
    certificate = [object()]
    made: list[_Watched] = []

    def make() -> _Watched:
        made.append(_Watched(verify=ssl.create_default_context()))
        return made[-1]

    with httpx.Client(transport=RotatingTransport(make, lambda: certificate[0])) as client:
        client.get(_url(server))
        certificate[0] = object()
        client.get(_url(server))
        assert made[0].closed
        assert not made[1].closed
        assert server.connections == 2


# -- certauth's own sync client ------------------------------------------------------------------


def _get(client: StdlibClient, server: _Server) -> bytes:
    reply = client.send(Send("GET", _url(server)))
    assert isinstance(reply, Reply), reply
    return reply.body


def test_certauths_client_opens_new_connections_with_a_new_context(server: _Server) -> None:
    contexts = [ssl.create_default_context()]
    with StdlibClient(lambda: contexts[0], timeout=5, connect_timeout=5, headers={}) as client:
        assert _get(client, server) == BODY
        assert _get(client, server) == BODY
        assert server.connections == 1  # kept alive while the context stays
        contexts[0] = ssl.create_default_context()  # a rotation
        assert _get(client, server) == BODY
        assert server.connections == 2
        assert _get(client, server) == BODY
        assert server.connections == 2  # the new context's connection is kept alive


def test_a_connection_whose_context_changed_while_in_use_is_not_kept(server: _Server) -> None:
    old, new = ssl.create_default_context(), ssl.create_default_context()
    calls = [0]

    def context() -> ssl.SSLContext:
        # The first request is opened with the old context; by the time its answer is read
        # the credential has rotated.
        calls[0] += 1
        return old if calls[0] == 1 else new

    with StdlibClient(context, timeout=5, connect_timeout=5, headers={}) as client:
        assert _get(client, server) == BODY
        assert client._idle == {}  # closed, not kept for the next request
        assert _get(client, server) == BODY
        assert server.connections == 2
        assert _get(client, server) == BODY
        assert server.connections == 2
