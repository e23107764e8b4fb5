"""The :class:`Emulator`: a local Entra ID tenant over real HTTP, for tests and offline work.

It owns the state (directory, signing keys, clock, faults, counters), routes requests to the
discovery documents, the key sets and the token endpoints, and starts and stops the server.
The rules themselves live in :mod:`certauth.emulator.checks`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from certauth.certificates import Certificate, load_certificate
from certauth.emulator.checks import (
    DEFAULT_MAX_ASSERTION_LIFETIME,
    DEFAULT_SKEW,
    EntraError,
    Policy,
    ReplayCache,
    TokenRequest,
    check_token_request,
)
from certauth.emulator.clock import Clock
from certauth.emulator.config import EmulatorConfig, load_config
from certauth.emulator.discovery import (
    b2c_openid_configuration,
    instance_discovery,
    v1_openid_configuration,
    v2_openid_configuration,
)
from certauth.emulator.registry import (
    DEFAULT_TENANT_ID,
    FEDERATED_AUDIENCE,
    MULTI_TENANT_NAMES,
    App,
    FederatedCredential,
    RegisteredSecret,
    Registry,
    Resource,
    Tenant,
    federated_keys,
)
from certauth.emulator.server import EmulatorHTTPServer, HttpRequest, HttpResponse, ServerLimits
from certauth.emulator.tokens import (
    DEFAULT_TOKEN_LIFETIME,
    Grant,
    KeyRing,
    access_token_claims,
    sign_access_token,
    token_response,
)
from certauth.errors import InvalidArgumentError

__all__ = ["Emulator", "FaultPlan"]

log = logging.getLogger("certauth.emulator")


@dataclass
class FaultPlan:
    """How the next ``remaining`` token requests are answered instead of normally."""

    remaining: int
    status: int | None = None
    retry_after: int | None = None
    delay: float = 0.0
    html: bool = False
    body: bytes | None = None


class Emulator:
    """A local Entra ID tenant that checks client assertions the way Entra ID does.

    Use it as a context manager (it binds a free port by default)::

        with Emulator(strict=True) as tenant:
            tenant.register("my-client-id", "billing.crt", roles=["Billing.Read"])
            credential = CertificateCredential(
                tenant.tenant_id, "my-client-id", "billing.pem",
                token_endpoint=tenant.token_endpoint,
            )

    ``strict=True`` adds RFC 7523's rules to Entra's (see :mod:`certauth.emulator.checks`).
    ``tls=True`` serves https with a generated CA (``ca_file``), which MSAL and azure-identity
    need. ``clock`` is a callable returning epoch seconds or an aware ``datetime`` (default: real
    time); ``tenant.clock.advance(seconds)`` moves time in either case. ``config`` is a path to
    a TOML/JSON file or a parsed :class:`~certauth.emulator.config.EmulatorConfig`; explicit
    arguments win over its settings.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tenant_id: str = DEFAULT_TENANT_ID,
        strict: bool | None = None,
        tls: bool = False,
        tls_dir: str | os.PathLike[str] | None = None,
        clock: Clock | Callable[[], float | dt.datetime] | None = None,
        token_lifetime: int | None = None,
        config: str | os.PathLike[str] | EmulatorConfig | None = None,
        skew: int = DEFAULT_SKEW,
        max_assertion_lifetime: int = DEFAULT_MAX_ASSERTION_LIFETIME,
        limits: ServerLimits | None = None,
    ) -> None:
        parsed = (
            config if isinstance(config, EmulatorConfig) or config is None else load_config(config)
        )
        lifetime = token_lifetime or (parsed.token_lifetime if parsed else None)
        lifetime = lifetime or DEFAULT_TOKEN_LIFETIME
        if isinstance(lifetime, bool) or not isinstance(lifetime, int) or lifetime <= 0:
            raise InvalidArgumentError(f"token lifetime must be seconds above 0: {lifetime!r}")
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise InvalidArgumentError(f"port must be 0-65535, got {port!r}")
        self.host = host
        self.clock = clock if isinstance(clock, Clock) else Clock(clock)
        self.token_lifetime = lifetime
        self.policy = Policy(
            strict=bool(strict if strict is not None else (parsed.strict if parsed else False)),
            skew=skew,
            max_assertion_lifetime=max_assertion_lifetime,
        )
        self.registry = Registry()
        self._default_tenant = self.registry.add_tenant(tenant_id)
        if parsed is not None:
            parsed.apply(self.registry, self._default_tenant)
        self._requested_port = port
        self._tls = tls
        self._tls_dir = Path(tls_dir) if tls_dir is not None else None
        self._own_tls_dir: Path | None = None
        self._ca_file: Path | None = None
        self._limits = limits or ServerLimits()
        self._keys = KeyRing(self.clock.now)
        self._replay = ReplayCache()
        self._lock = threading.Lock()
        self._request_count = 0
        self._last_thumbprint: str | None = None
        self._faults: FaultPlan | None = None
        self._server: EmulatorHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> Emulator:
        """Bind and serve in a background thread (idempotent). Returns ``self``."""
        if self._server is not None:
            return self
        context = None
        if self._tls:
            from certauth.emulator.tls import generate_tls_files, server_context

            folder = self._tls_dir
            if folder is None:
                folder = self._own_tls_dir = Path(tempfile.mkdtemp(prefix="certauth-emulator-"))
            files = generate_tls_files(folder, now=self.clock.now())
            self._ca_file = files.ca_file
            context = server_context(files)
        try:
            self._server = EmulatorHTTPServer(
                (self.host, self._requested_port),
                self._handle,
                scheme="https" if self._tls else "http",
                tls=context,
                limits=self._limits,
            )
        except OSError as exc:
            self._remove_own_tls_dir()
            from certauth.errors import ConfigurationError

            raise ConfigurationError(
                f"cannot listen on {self.host}:{self._requested_port}: {exc.strerror or exc}; "
                "choose another --port (0 picks a free one)"
            ) from None
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            # How long stop() may wait for the serving loop to notice.
            kwargs={"poll_interval": 0.05},
            name=f"certauth-emulator-{self._server.port}",
            daemon=True,
        )
        self._thread.start()
        log.info("emulator listening on %s (tenant %s)", self.authority_host, self.tenant_id)
        return self

    def stop(self) -> None:
        """Stop serving, close connections and remove generated TLS files (idempotent)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._remove_own_tls_dir()

    def _remove_own_tls_dir(self) -> None:
        if self._own_tls_dir is not None:
            shutil.rmtree(self._own_tls_dir, ignore_errors=True)
            self._own_tls_dir = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the server is accepting connections."""
        return self._server is not None

    # -- addresses ------------------------------------------------------------------------

    def _running_server(self) -> EmulatorHTTPServer:
        if self._server is None:
            raise RuntimeError("the emulator is not running; use 'with Emulator() as tenant:'")
        return self._server

    @property
    def port(self) -> int:
        """The bound port."""
        return self._running_server().port

    @property
    def authority_host(self) -> str:
        """``http(s)://127.0.0.1:PORT``: what MSAL and azure-identity call the authority host."""
        return self._running_server().default_base_url

    @property
    def tenant_id(self) -> str:
        """The default tenant's GUID."""
        return self._default_tenant.tenant_id

    @property
    def issuer(self) -> str:
        """The ``iss`` of the access tokens: ``{authority_host}/{tenant}/v2.0``."""
        return f"{self.authority_host}/{self.tenant_id}/v2.0"

    @property
    def token_endpoint(self) -> str:
        """The v2 token endpoint (the ``aud`` client assertions must name)."""
        return f"{self.authority_host}/{self.tenant_id}/oauth2/v2.0/token"

    @property
    def token_endpoint_v1(self) -> str:
        """The v1 token endpoint (takes ``resource=`` instead of ``scope=``)."""
        return f"{self.authority_host}/{self.tenant_id}/oauth2/token"

    def b2c_token_endpoint(self, policy: str = "B2C_1_client") -> str:
        """An Azure AD B2C policy's token endpoint (client secrets only)."""
        return f"{self.authority_host}/{self.tenant_id}/{policy}/oauth2/v2.0/token"

    @property
    def jwks_uri(self) -> str:
        """Where the signing keys are published (JWKS)."""
        return f"{self.authority_host}/{self.tenant_id}/discovery/v2.0/keys"

    @property
    def openid_configuration_url(self) -> str:
        """The v2 OIDC discovery document of the default tenant."""
        return f"{self.authority_host}/{self.tenant_id}/v2.0/.well-known/openid-configuration"

    @property
    def ca_file(self) -> str | None:
        """With ``tls=True``: the PEM file of the CA that signed the server certificate."""
        return str(self._ca_file) if self._ca_file is not None else None

    def info(self) -> dict[str, str]:
        """What ``certauth emulator`` prints at start (and writes to ``--ready-file``)."""
        result = {
            "tenant": self.tenant_id,
            "issuer": self.issuer,
            "token_endpoint": self.token_endpoint,
            "jwks_uri": self.jwks_uri,
            "authority_host": self.authority_host,
        }
        if self.ca_file is not None:
            result["ca_file"] = self.ca_file
        return result

    # -- the directory ----------------------------------------------------------------------

    def _tenant(self, tenant: str | None) -> Tenant:
        if tenant is None:
            return self._default_tenant
        found = self.registry.tenant(tenant)
        return found if found is not None else self.registry.add_tenant(tenant)

    def add_tenant(self, tenant: str, *, domains: Sequence[str] = ()) -> str:
        """Add a tenant (a GUID, or a domain name that gets a stable GUID); returns its id."""
        return self.registry.add_tenant(tenant, domains=domains).tenant_id

    def register(
        self,
        client_id: str,
        certificate: Certificate | str | os.PathLike[str] | bytes | None = None,
        *,
        roles: Sequence[str] | Mapping[str, Sequence[str]] = (),
        tenant: str | None = None,
        display_name: str | None = None,
    ) -> App:
        """Register an app, or add a certificate and roles to one (like uploading a key).

        ``certificate`` is a :class:`~certauth.certificates.Certificate`, a path, or file bytes
        (PEM/DER/PFX; only the public part is used). ``roles`` are app roles granted on every
        resource, or ``{resource: [roles]}`` for specific ones.
        """
        certs = []
        if certificate is not None:
            certs.append(
                certificate
                if isinstance(certificate, Certificate)
                else load_certificate(
                    certificate if isinstance(certificate, bytes) else os.fspath(certificate),
                    load_key=False,
                )
            )
        return self.registry.register_app(
            self._tenant(tenant), client_id, certificates=certs, roles=roles,
            display_name=display_name,
        )  # fmt: skip

    def register_secret(
        self,
        client_id: str,
        secret: str,
        *,
        expires: dt.datetime | None = None,
        roles: Sequence[str] | Mapping[str, Sequence[str]] = (),
        tenant: str | None = None,
    ) -> App:
        """Add a client secret (kept only as a digest) to an app, registering it if needed."""
        return self.registry.register_app(
            self._tenant(tenant),
            client_id,
            secrets=[RegisteredSecret.from_value(secret, expires)],
            roles=roles,
        )

    def register_federated(
        self,
        client_id: str,
        *,
        issuer: str,
        subject: str,
        keys: object,
        audience: str = FEDERATED_AUDIENCE,
        tenant: str | None = None,
    ) -> App:
        """Trust tokens from an external ``issuer`` about ``subject`` (workload identity).

        ``keys`` verify the external tokens: a Certificate, a public key or a JWKS mapping.
        """
        credential = FederatedCredential(issuer, subject, (audience,), federated_keys(keys))
        return self.registry.register_app(self._tenant(tenant), client_id, federated=[credential])

    def add_resource(
        self, uri: str, *, roles: Sequence[str] = (), tenant: str | None = None
    ) -> Resource:
        """Declare a resource and the roles every client gets on it.

        Until one is declared the emulator issues tokens for any ``RESOURCE/.default``; after
        that an undeclared resource gets AADSTS500011.
        """
        return self.registry.add_resource(self._tenant(tenant), uri, roles)

    # -- keys, faults, counters -----------------------------------------------------------

    def rotate_keys(self) -> str:
        """Sign with a new key from now on; the previous ones stay in the JWKS. Returns its kid."""
        key = self._keys.rotate()
        log.info("signing key rotated; new kid %s", key.kid)
        return key.kid

    @property
    def signing_kid(self) -> str:
        """The ``kid`` new access tokens carry."""
        return self._keys.current.kid

    def jwks(self) -> dict[str, Any]:
        """The key set the JWKS endpoint serves (v2 form, with ``issuer``)."""
        return self._keys.jwks(self.issuer)

    def inject_faults(
        self,
        status: int | None = None,
        *,
        count: int = 1,
        retry_after: int | None = None,
        delay: float = 0.0,
        html: bool = False,
        body: bytes | None = None,
    ) -> None:
        """Answer the next ``count`` token requests abnormally (replacing earlier plans).

        ``status`` (e.g. 429, 503) with an Entra-style JSON body and, with ``retry_after``, a
        ``Retry-After`` header; ``delay`` waits that many seconds first (alone, it only delays
        normal answers); ``html`` sends an HTML page instead of JSON, with ``status`` or 200
        (what captive portals and proxy login pages send); ``body`` sends those bytes as JSON
        with ``status`` or 200 (for example a 200 that is not a token response).
        """
        if count < 1:
            raise InvalidArgumentError("count must be at least 1")
        if status is not None and not 100 <= status <= 599:
            raise InvalidArgumentError(f"status {status} is not an HTTP status")
        if delay < 0:
            raise InvalidArgumentError("delay cannot be negative")
        with self._lock:
            self._faults = FaultPlan(count, status, retry_after, float(delay), html, body)

    def clear_faults(self) -> None:
        """Answer normally again."""
        with self._lock:
            self._faults = None

    @property
    def request_count(self) -> int:
        """Token requests received (every POST to a token endpoint, whatever the answer)."""
        with self._lock:
            return self._request_count

    def reset_request_count(self) -> int:
        """Set :attr:`request_count` back to 0; returns the count before."""
        with self._lock:
            count, self._request_count = self._request_count, 0
            return count

    @property
    def last_thumbprint(self) -> str | None:
        """``x5t#S256`` of the certificate behind the last accepted assertion (for rotation
        tests: which of an app's certificates did the client use?)."""
        with self._lock:
            return self._last_thumbprint

    def reset_replay_cache(self) -> None:
        """Forget the ``jti`` values strict mode has seen."""
        self._replay.clear()

    def _take_fault(self) -> FaultPlan | None:
        with self._lock:
            self._request_count += 1
            plan = self._faults
            if plan is None:
                return None
            plan.remaining -= 1
            if plan.remaining <= 0:
                self._faults = None
            return plan

    # -- routes -------------------------------------------------------------------------------

    def _handle(self, request: HttpRequest) -> HttpResponse:
        segments = [urllib.parse.unquote(s) for s in request.path.split("/") if s]
        lowered = [s.lower() for s in segments]
        tail = lowered[1:]
        if len(segments) >= 3 and tail[-2:] == ["oauth2", "token"] and len(segments) == 3:
            return self._token_route(request, "v1", segments[0], None)
        if len(segments) in (4, 5) and tail[-3:] == ["oauth2", "v2.0", "token"]:
            if len(segments) == 4:
                return self._token_route(request, "v2", segments[0], None)
            if _is_b2c_policy(segments[1]):
                return self._token_route(request, "b2c", segments[0], segments[1])
        if request.method != "GET":
            return _json(405, {"error": "invalid_request", "error_description": "use GET"})
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
        return _json(
            404,
            {
                "error": "not_found",
                "error_description": (
                    f"the emulator serves no {request.path}; try /{self.tenant_id}/v2.0/"
                    ".well-known/openid-configuration"
                ),
            },
        )

    def _token_route(
        self, request: HttpRequest, endpoint: str, tenant: str, policy: str | None
    ) -> HttpResponse:
        if request.method != "POST":
            return self._error_response(
                EntraError(
                    900561,
                    f"The endpoint only accepts POST requests. Received a {request.method} "
                    "request.",
                ),
                request,
            )
        fault = self._take_fault()
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.status is not None or fault.html or fault.body is not None:
                return _fault_response(fault)
        form = _parse_form(request)
        token_request = TokenRequest(
            endpoint=endpoint,  # type: ignore[arg-type]
            tenant=tenant,
            url=f"{request.base_url}{request.path}",
            base_url=request.base_url,
            form=form,
            policy=policy,
            authorization=request.headers.get("authorization"),
        )
        now = self.clock.time()
        try:
            grant = check_token_request(
                token_request, self.registry, now=now, policy=self.policy, replay=self._replay
            )
        except EntraError as error:
            log.warning(
                "token request refused: %s %s (client_id=%s tenant=%s endpoint=%s)",
                error.aadsts,
                _loggable(error.summary, 300),
                _loggable(form.get("client_id", "-")),
                _loggable(tenant),
                endpoint,
            )
            return self._error_response(error, request)
        return self._issue(grant, request, now)

    def _issue(self, grant: Grant, request: HttpRequest, now: float) -> HttpResponse:
        base = request.base_url
        issuer = f"{base}/{grant.tenant_id}/v2.0" + ("/" if grant.endpoint == "b2c" else "")
        claims = access_token_claims(grant, issuer=issuer, now=now, lifetime=self.token_lifetime)
        token = sign_access_token(claims, self._keys.current)
        if grant.thumbprint is not None:
            with self._lock:
                self._last_thumbprint = grant.thumbprint
        body = token_response(grant, token, now=now, lifetime=self.token_lifetime)
        log.info(
            "token issued: client_id=%s aud=%s auth=%s alg=%s roles=%s",
            grant.client_id,
            grant.resource,
            grant.auth_method,
            grant.assertion_alg or "-",
            ",".join(grant.roles) or "-",
        )
        response = _json(200, body)
        # RFC 6749 section 5.1: token responses must not be cached.
        response.headers.update({"Cache-Control": "no-store", "Pragma": "no-cache"})
        response.headers.update(_trace_headers(request, str(uuid.uuid4())))
        return response

    def _error_response(self, error: EntraError, request: HttpRequest) -> HttpResponse:
        trace_id = str(uuid.uuid4())
        correlation_id = _correlation_id(request)
        body = error.body(
            trace_id=trace_id,
            correlation_id=correlation_id,
            now=self.clock.now(),
            base_url=request.base_url,
        )
        response = _json(error.status, body)
        response.headers.update({"Cache-Control": "no-store", "Pragma": "no-cache"})
        response.headers.update(_trace_headers(request, trace_id))
        if error.status == 401 and error.basic_auth:
            response.headers["WWW-Authenticate"] = 'Basic realm="certauth-emulator"'
        return response

    def _unknown_tenant(self, request: HttpRequest, name: str) -> HttpResponse:
        return self._error_response(
            EntraError(
                90002,
                f"Tenant '{name}' not found. Check to make sure you have the correct tenant ID "
                "and are signing into the correct cloud.",
            ),
            request,
        )

    def _discovery(self, request: HttpRequest, name: str, *, v2: bool) -> HttpResponse:
        build = v2_openid_configuration if v2 else v1_openid_configuration
        if name.lower() in MULTI_TENANT_NAMES:
            return _json(200, build(request.base_url, name.lower(), None))
        tenant = self.registry.tenant(name)
        if tenant is None:
            return self._unknown_tenant(request, name)
        return _json(200, build(request.base_url, name, tenant.tenant_id))

    def _b2c_discovery(self, request: HttpRequest, name: str, policy: str) -> HttpResponse:
        tenant = self.registry.tenant(name)
        if tenant is None:
            return self._unknown_tenant(request, name)
        document = b2c_openid_configuration(request.base_url, name, policy, tenant.tenant_id)
        return _json(200, document)

    def _keys_route(self, request: HttpRequest, name: str, *, v2: bool) -> HttpResponse:
        if name.lower() in MULTI_TENANT_NAMES:
            issuer = f"{request.base_url}/{{tenantid}}/v2.0"
        else:
            tenant = self.registry.tenant(name)
            if tenant is None:
                return self._unknown_tenant(request, name)
            issuer = f"{request.base_url}/{tenant.tenant_id}/v2.0"
        # Only the v2 key set carries "issuer", as in Entra ID.
        return _json(200, self._keys.jwks(issuer if v2 else None))

    def _instance_discovery(self, request: HttpRequest) -> HttpResponse:
        endpoint = request.query.get("authorization_endpoint", "")
        if not endpoint:
            return self._error_response(
                EntraError(
                    900144,
                    "The request body must contain the following parameter: "
                    "'authorization_endpoint'.",
                ),
                request,
            )
        port = self._running_server().port
        aliases = [f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"]
        own = urllib.parse.urlsplit(request.base_url).netloc.lower()
        if own not in aliases:
            aliases.insert(0, own)
        api_version = request.query.get("api-version", "1.1")
        body = instance_discovery(endpoint, request.base_url, aliases, api_version)
        if body is None:
            trace_id, correlation_id = str(uuid.uuid4()), _correlation_id(request)
            stamp = self.clock.now().strftime("%Y-%m-%d %H:%M:%SZ")
            return _json(
                400,
                {
                    "error": "invalid_instance",
                    "error_description": (
                        f"AADSTS50049: Unknown or invalid instance.\r\nTrace ID: {trace_id}\r\n"
                        f"Correlation ID: {correlation_id}\r\nTimestamp: {stamp}"
                    ),
                    "error_codes": [50049],
                    "timestamp": stamp,
                    "trace_id": trace_id,
                    "correlation_id": correlation_id,
                    "error_uri": f"{request.base_url}/error?code=50049",
                },
            )
        return _json(200, body)


# -- helpers --------------------------------------------------------------------------------------


def _loggable(text: str, limit: int = 64) -> str:
    # Request values end up in log lines: no line breaks or control characters (log forging).
    return "".join(c if c.isprintable() else "?" for c in text[:limit])


def _is_b2c_policy(name: str) -> bool:
    # B2C user flows are B2C_1_*, custom policies B2C_1A_* (MSAL detects B2C the same way).
    return name.lower().startswith("b2c_1")


def _json(status: int, body: Mapping[str, Any]) -> HttpResponse:
    return HttpResponse(status, json.dumps(body, separators=(",", ":")).encode("utf-8"))


def _parse_form(request: HttpRequest) -> dict[str, str]:
    """The urlencoded body; anything else reads as an empty form (Entra then asks for
    ``grant_type``, AADSTS900144, which is what it answers to a JSON body)."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return {}
    try:
        text = request.body.decode("utf-8")
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, max_num_fields=100)
    except (UnicodeDecodeError, ValueError):
        return {}
    form: dict[str, str] = {}
    for name, value in pairs:
        form.setdefault(name, value)  # a repeated parameter: the first one counts
    return form


def _correlation_id(request: HttpRequest) -> str:
    # Entra echoes the client's client-request-id as the correlation id.
    value = request.headers.get("client-request-id", "")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return str(uuid.uuid4())


def _trace_headers(request: HttpRequest, trace_id: str) -> dict[str, str]:
    headers = {"x-ms-request-id": trace_id, "x-ms-ests-server": "certauth-emulator"}
    if "client-request-id" in request.headers:
        headers["client-request-id"] = _correlation_id(request)
    return headers


def _fault_response(fault: FaultPlan) -> HttpResponse:
    headers = {}
    if fault.retry_after is not None:
        headers["Retry-After"] = str(fault.retry_after)
    if fault.body is not None:
        return HttpResponse(fault.status or 200, fault.body, headers)
    if fault.html:
        status = fault.status or 200
        page = (
            "<!DOCTYPE html><html><head><title>Service unavailable</title></head><body>"
            f"<h1>{status}</h1><p>certauth emulator: injected HTML page.</p></body></html>"
        )
        return HttpResponse(status, page.encode(), headers, "text/html; charset=utf-8")
    status = fault.status or 503
    error = "temporarily_unavailable" if status in (429, 503) else "server_error"
    body = {
        "error": error,
        "error_description": f"certauth emulator: injected HTTP {status}",
    }
    response = _json(status, body)
    response.headers.update(headers)
    return response
