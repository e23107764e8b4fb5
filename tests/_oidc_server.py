"""A small OpenID Connect issuer on 127.0.0.1 whose discovery document a test writes.

Not a test module (leading underscore). Real HTTP, no mocks: the credentials and the verifier
fetch ``{issuer}/.well-known/openid-configuration`` exactly as they would from a real issuer,
and the test decides what comes back (any document, or any status, content type and bytes).
Token requests are counted and kept, so a test can prove that nothing was sent.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

#: What a token request gets unless the test says otherwise.
TOKEN_ANSWER = (
    200,
    "application/json",
    b'{"access_token": "issued", "token_type": "Bearer", "expires_in": 3600}',
)


class OidcServer:
    """``with OidcServer() as server: ... server.issuer ... server.document[...] = ...``"""

    def __init__(self) -> None:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.oidc = self  # type: ignore[attr-defined]
        port = self._httpd.server_address[1]
        self.issuer = f"http://127.0.0.1:{port}/tenant"
        self.discovery_url = f"{self.issuer}/.well-known/openid-configuration"
        #: The discovery document served (any JSON value), unless :attr:`raw_discovery` is set.
        self.document: Any = {
            "issuer": self.issuer,
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/keys",
        }
        #: (status, content type, body) to answer discovery with instead of :attr:`document`.
        self.raw_discovery: tuple[int, str, bytes] | None = None
        self.jwks: dict[str, Any] = {"keys": []}
        self.token_answer = TOKEN_ANSWER
        #: The form of every token request received.
        self.token_requests: list[dict[str, str]] = []
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> OidcServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    @property
    def oidc(self) -> OidcServer:
        return self.server.oidc  # type: ignore[attr-defined,no-any-return]

    def do_GET(self) -> None:
        oidc = self.oidc
        url = f"{oidc.issuer.rsplit('/', 1)[0]}{self.path}"
        if url == oidc.discovery_url:
            if oidc.raw_discovery is not None:
                self._answer(*oidc.raw_discovery)
            else:
                self._answer(200, "application/json", json.dumps(oidc.document).encode())
        elif url == f"{oidc.issuer}/keys":
            self._answer(200, "application/json", json.dumps(oidc.jwks).encode())
        else:
            self._answer(404, "text/plain", b"not found")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        form = {name: values[0] for name, values in parse_qs(body.decode()).items()}
        self.oidc.token_requests.append(form)
        self._answer(*self.oidc.token_answer)

    def _answer(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass
