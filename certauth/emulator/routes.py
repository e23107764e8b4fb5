"""Which part of the emulator answers a request, and the metadata routes.

The token endpoints go to :class:`~certauth.emulator.token_endpoint.TokenEndpoint`,
``/graph/...`` to :class:`~certauth.emulator.graph.GraphAPI` and the emulator's own routes
(``/_emulator/...``: a CAE-aware test API, revocation) to
:class:`~certauth.emulator.resource.EmulatorApi`; this module answers the rest as Entra ID
does: OIDC discovery (v2, v1 and B2C policies), the signing key sets (JWKS) and instance
discovery. Unknown tenants get AADSTS90002, other paths a 404.
"""

from __future__ import annotations

import urllib.parse
import uuid
from collections.abc import Callable

from certauth.emulator.checks import EntraError
from certauth.emulator.clock import Clock
from certauth.emulator.discovery import (
    b2c_openid_configuration,
    instance_discovery,
    v1_openid_configuration,
    v2_openid_configuration,
    with_port,
)
from certauth.emulator.graph import GraphAPI
from certauth.emulator.registry import MULTI_TENANT_NAMES, Registry
from certauth.emulator.resource import PREFIX, EmulatorApi
from certauth.emulator.responses import correlation_id, error_response, json_response
from certauth.emulator.server import HttpRequest, HttpResponse
from certauth.emulator.token_endpoint import TokenEndpoint
from certauth.emulator.tokens import KeyRing

__all__ = ["Router"]


class Router:
    """Routes requests by path for one emulator (``handle`` is the HTTP server's callback).

    ``port`` returns the port the server is bound to (instance discovery lists it);
    ``default_tenant_id`` is named in the 404 answer's hint; ``mtls_port`` the mutual-TLS
    listener's port, or ``None`` when it is not running (discovery then lists no alias).
    """

    def __init__(
        self,
        *,
        registry: Registry,
        keys: KeyRing,
        clock: Clock,
        token_endpoint: TokenEndpoint,
        port: Callable[[], int],
        default_tenant_id: str,
        api: EmulatorApi,
        graph: GraphAPI | None = None,
        mtls_port: Callable[[], int | None] = lambda: None,
    ) -> None:
        self.registry = registry
        self.keys = keys
        self.clock = clock
        self.token_endpoint = token_endpoint
        self._port = port
        self._default_tenant_id = default_tenant_id
        self.api = api
        self.graph = graph
        self._mtls_port = mtls_port

    def handle(self, request: HttpRequest) -> HttpResponse:
        """The answer to one request."""
        segments = [urllib.parse.unquote(s) for s in request.path.split("/") if s]
        lowered = [s.lower() for s in segments]
        tail = lowered[1:]
        if lowered[:1] == [PREFIX]:
            return self.api.handle(request, lowered[1:])
        if self.graph is not None and lowered[:1] == ["graph"]:
            return self.graph.handle(request, segments[1:])
        token = self.token_endpoint
        if len(segments) >= 3 and tail[-2:] == ["oauth2", "token"] and len(segments) == 3:
            return token.handle(request, "v1", segments[0], None)
        if len(segments) in (4, 5) and tail[-3:] == ["oauth2", "v2.0", "token"]:
            if len(segments) == 4:
                return token.handle(request, "v2", segments[0], None)
            if _is_b2c_policy(segments[1]):
                return token.handle(request, "b2c", segments[0], segments[1])
        if request.method != "GET":
            return json_response(405, {"error": "invalid_request", "error_description": "use GET"})
        if tail == ["discovery", "instance"]:
            return self._instance_discovery(request)
        if tail == ["v2.0", ".well-known", "openid-configuration"]:
            return self._discovery(request, segments[0], v2=True)
        if tail == [".well-known", "openid-configuration"]:
            return self._discovery(request, segments[0], v2=False)
        if (
            len(segments) == 5
            and tail[1:] == ["v2.0", ".well-known", "openid-configuration"]
            and _is_b2c_policy(segments[1])
        ):
            return self._b2c_discovery(request, segments[0], segments[1])
        if tail in (["discovery", "v2.0", "keys"], ["discovery", "keys"]):
            return self._keys_route(request, segments[0], v2=tail[1] == "v2.0")
        if (
            len(segments) == 5
            and tail[1:] == ["discovery", "v2.0", "keys"]
            and _is_b2c_policy(segments[1])
        ):
            return self._keys_route(request, segments[0], v2=True)
        return json_response(
            404,
            {
                "error": "not_found",
                "error_description": (
                    f"the emulator serves no {request.path}; try /{self._default_tenant_id}/v2.0/"
                    ".well-known/openid-configuration"
                ),
            },
        )

    def _unknown_tenant(self, request: HttpRequest, name: str) -> HttpResponse:
        return error_response(
            EntraError(
                90002,
                f"Tenant '{name}' not found. Check to make sure you have the correct tenant ID "
                "and are signing into the correct cloud.",
            ),
            request,
            self.clock.now(),
        )

    def _discovery(self, request: HttpRequest, name: str, *, v2: bool) -> HttpResponse:
        build = v2_openid_configuration if v2 else v1_openid_configuration
        port = self._mtls_port()
        # RFC 8705 section 5: the alias is on the host the client used, at the listener's port.
        mtls = with_port(request.base_url, port) if port is not None else None
        if name.lower() in MULTI_TENANT_NAMES:
            return json_response(200, build(request.base_url, name.lower(), None, mtls_base=mtls))
        tenant = self.registry.tenant(name)
        if tenant is None:
            return self._unknown_tenant(request, name)
        return json_response(200, build(request.base_url, name, tenant.tenant_id, mtls_base=mtls))

    def _b2c_discovery(self, request: HttpRequest, name: str, policy: str) -> HttpResponse:
        tenant = self.registry.tenant(name)
        if tenant is None:
            return self._unknown_tenant(request, name)
        document = b2c_openid_configuration(request.base_url, name, policy, tenant.tenant_id)
        return json_response(200, document)

    def _keys_route(self, request: HttpRequest, name: str, *, v2: bool) -> HttpResponse:
        if name.lower() in MULTI_TENANT_NAMES:
            issuer = f"{request.base_url}/{{tenantid}}/v2.0"
        else:
            tenant = self.registry.tenant(name)
            if tenant is None:
                return self._unknown_tenant(request, name)
            issuer = f"{request.base_url}/{tenant.tenant_id}/v2.0"
        # Only the v2 key set carries "issuer", as in Entra ID.
        return json_response(200, self.keys.jwks(issuer if v2 else None))

    def _instance_discovery(self, request: HttpRequest) -> HttpResponse:
        endpoint = request.query.get("authorization_endpoint", "")
        if not endpoint:
            return error_response(
                EntraError(
                    900144,
                    "The request body must contain the following parameter: "
                    "'authorization_endpoint'.",
                ),
                request,
                self.clock.now(),
            )
        port = self._port()
        aliases = [f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"]
        own = urllib.parse.urlsplit(request.base_url).netloc.lower()
        if own not in aliases:
            aliases.insert(0, own)
        api_version = request.query.get("api-version", "1.1")
        body = instance_discovery(endpoint, request.base_url, aliases, api_version)
        if body is None:
            trace_id, correlation = str(uuid.uuid4()), correlation_id(request)
            stamp = self.clock.now().strftime("%Y-%m-%d %H:%M:%SZ")
            return json_response(
                400,
                {
                    "error": "invalid_instance",
                    "error_description": (
                        f"AADSTS50049: Unknown or invalid instance.\r\nTrace ID: {trace_id}\r\n"
                        f"Correlation ID: {correlation}\r\nTimestamp: {stamp}"
                    ),
                    "error_codes": [50049],
                    "timestamp": stamp,
                    "trace_id": trace_id,
                    "correlation_id": correlation,
                    "error_uri": f"{request.base_url}/error?code=50049",
                },
            )
        return json_response(200, body)


def _is_b2c_policy(name: str) -> bool:
    # B2C user flows are B2C_1_*, custom policies B2C_1A_* (MSAL detects B2C the same way).
    return name.lower().startswith("b2c_1")
