"""The :class:`Emulator`: a local Entra ID tenant over real HTTP, for tests and offline work.

It owns the state (directory, signing keys, clock, revocations) and starts and stops the
server. Requests are routed by :mod:`certauth.emulator.routes` (discovery, key sets) and
answered at the token endpoints by :mod:`certauth.emulator.token_endpoint` (faults, counters,
issuing) and under ``/_emulator/`` by :mod:`certauth.emulator.resource` (a CAE-aware test API,
revocation); the rules themselves live in :mod:`certauth.emulator.checks` and
:mod:`certauth.emulator.cae`.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from certauth.certificates import Certificate, load_certificate
from certauth.emulator.cae import CAE_TOKEN_LIFETIME, RevocationList
from certauth.emulator.checks import DEFAULT_MAX_ASSERTION_LIFETIME, DEFAULT_SKEW, Policy
from certauth.emulator.clock import Clock
from certauth.emulator.config import EmulatorConfig, load_config
from certauth.emulator.controls import TokenEndpointControls
from certauth.emulator.dpop_checks import TokenEndpointDPoP
from certauth.emulator.graph import GraphAPI
from certauth.emulator.graph_checks import DEFAULT_MAX_KEY_CREDENTIALS, key_credential_json
from certauth.emulator.keyvault import VaultHosting
from certauth.emulator.mtls import ClientCAs, MtlsListener
from certauth.emulator.registry import (
    DEFAULT_TENANT_ID,
    FEDERATED_AUDIENCE,
    App,
    FederatedCredential,
    RegisteredSecret,
    Registry,
    Resource,
    Tenant,
    federated_keys,
)
from certauth.emulator.resource import EmulatorApi, revoke_client
from certauth.emulator.routes import Router
from certauth.emulator.server import EmulatorHTTPServer, HttpRequest, HttpResponse, ServerLimits
from certauth.emulator.token_endpoint import FaultPlan, TokenEndpoint
from certauth.emulator.tokens import DEFAULT_TOKEN_LIFETIME, KeyRing
from certauth.errors import InvalidArgumentError

__all__ = ["Emulator", "FaultPlan"]

log = logging.getLogger("certauth.emulator")


class Emulator(TokenEndpointControls, VaultHosting):
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

    Continuous access evaluation: a token request whose ``claims`` declare the ``cp1`` client
    capability gets a token with ``xms_cc`` living ``cae_token_lifetime`` seconds (default 24
    hours less a second); :meth:`revoke` and :attr:`resource_url` (a CAE-aware test API) let a
    test see a claims challenge and its recovery (see :mod:`certauth.emulator.cae`).

    Microsoft Graph's application ``keyCredentials``, ``addKey`` and ``removeKey`` are served
    under :attr:`graph_url` (see :mod:`certauth.emulator.graph`). ``propagation_delay``
    (seconds, default 0) is how long a key added or removed there takes to reach the token
    endpoint; ``max_key_credentials`` caps an app's keys for addKey (default 1000).
    Azure Key Vaults: :meth:`create_vault` (see :mod:`certauth.emulator.keyvault`).

    DPoP (RFC 9449): a token request with a ``DPoP`` proof gets a token bound to the proof's
    key (``cnf.jkt``, ``token_type`` ``DPoP``); ``dpop_nonce=True`` makes proofs carry the
    server's nonce (:attr:`dpop_nonce`, :meth:`rotate_dpop_nonce`). See
    :mod:`certauth.emulator.dpop_checks`.

    Mutual TLS (RFC 8705): with ``tls=True`` a second listener (:attr:`mtls_token_endpoint`)
    asks for a client certificate, authenticates apps by it (``self_signed_tls_client_auth``
    for a registered certificate, ``tls_client_auth`` for one a CA in ``client_ca`` issued
    with the subject given to :meth:`register`) and binds the tokens it issues to it
    (``cnf.x5t#S256``). See :mod:`certauth.emulator.mtls`.
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
        cae_token_lifetime: int = CAE_TOKEN_LIFETIME,
        propagation_delay: float | None = None,
        max_key_credentials: int | None = None,
        dpop_nonce: bool = False,
        client_ca: Sequence[str | os.PathLike[str]] = (),
    ) -> None:
        parsed = (
            config if isinstance(config, EmulatorConfig) or config is None else load_config(config)
        )
        lifetime = token_lifetime or (parsed.token_lifetime if parsed else None)
        lifetime = lifetime or DEFAULT_TOKEN_LIFETIME
        if isinstance(lifetime, bool) or not isinstance(lifetime, int) or lifetime <= 0:
            raise InvalidArgumentError(f"token lifetime must be seconds above 0: {lifetime!r}")
        if (
            isinstance(cae_token_lifetime, bool)
            or not isinstance(cae_token_lifetime, int)
            or cae_token_lifetime <= 0
        ):
            raise InvalidArgumentError(
                f"CAE token lifetime must be seconds above 0: {cae_token_lifetime!r}"
            )
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise InvalidArgumentError(f"port must be 0-65535, got {port!r}")
        if propagation_delay is None:
            propagation_delay = parsed.propagation_delay if parsed else None
        delay = _seconds(propagation_delay or 0.0, "propagation_delay")
        cap = DEFAULT_MAX_KEY_CREDENTIALS if max_key_credentials is None else max_key_credentials
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            raise InvalidArgumentError(f"max_key_credentials must be 1 or more: {cap!r}")
        if client_ca and not tls:
            raise InvalidArgumentError(
                "client_ca is for the mutual-TLS listener, which runs with tls=True (--tls)"
            )
        client_cas = ClientCAs.load(
            [client_ca] if isinstance(client_ca, str | os.PathLike) else client_ca
        )
        self.host = host
        self.clock = clock if isinstance(clock, Clock) else Clock(clock)
        policy = Policy(
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
        self._token_endpoint = TokenEndpoint(
            registry=self.registry,
            clock=self.clock,
            keys=self._keys,
            policy=policy,
            token_lifetime=lifetime,
            cae_token_lifetime=cae_token_lifetime,
            dpop=TokenEndpointDPoP(require_nonce=bool(dpop_nonce)),
        )
        self._token_endpoint.client_ca_anchors = client_cas.anchors
        self._mtls = (
            MtlsListener(
                registry=self.registry,
                client_cas=client_cas,
                handle=self._handle,
                main_port=lambda: self.port,
            )
            if tls
            else None
        )
        self._revocations = RevocationList()
        self._graph = GraphAPI(
            registry=self.registry,
            keys=self._keys,
            clock=self.clock,
            skew=lambda: self._token_endpoint.policy.skew,
            propagation_delay=delay,
            max_key_credentials=cap,
        )
        self._router = Router(
            registry=self.registry,
            keys=self._keys,
            clock=self.clock,
            token_endpoint=self._token_endpoint,
            port=lambda: self.port,
            default_tenant_id=self._default_tenant.tenant_id,
            api=EmulatorApi(
                registry=self.registry,
                keys=self._keys,
                clock=self.clock,
                revocations=self._revocations,
                dpop_nonces=self._token_endpoint.dpop.nonces,
            ),
            graph=self._graph,
            mtls_port=lambda: self._mtls.port if self._mtls is not None else None,
        )
        self._server: EmulatorHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def policy(self) -> Policy:
        """How strictly token requests are checked (strict mode, clock skew, assertion
        lifetime); a new value applies from the next request."""
        return self._token_endpoint.policy

    @policy.setter
    def policy(self, policy: Policy) -> None:
        self._token_endpoint.policy = policy

    @property
    def token_lifetime(self) -> int:
        """Lifetime in seconds of the access tokens issued; a new value applies from the next
        token."""
        return self._token_endpoint.token_lifetime

    @token_lifetime.setter
    def token_lifetime(self, seconds: int) -> None:
        self._token_endpoint.token_lifetime = seconds

    @property
    def cae_token_lifetime(self) -> int:
        """Lifetime in seconds of the tokens issued to clients that declared the CAE capability
        (``cp1``); a new value applies from the next token."""
        return self._token_endpoint.cae_token_lifetime

    @cae_token_lifetime.setter
    def cae_token_lifetime(self, seconds: int) -> None:
        self._token_endpoint.cae_token_lifetime = seconds

    @property
    def propagation_delay(self) -> float:
        """Seconds before a key added or removed through Graph (addKey, removeKey) is accepted,
        or refused, by the token endpoint; Graph's own reads see the change at once. A new
        value applies to the next change."""
        return self._graph.propagation_delay

    @propagation_delay.setter
    def propagation_delay(self, seconds: float) -> None:
        self._graph.propagation_delay = _seconds(seconds, "propagation_delay")

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> Emulator:
        """Bind and serve in a background thread (idempotent). Returns ``self``."""
        if self._server is not None:
            return self
        context = files = None
        if self._tls:
            from certauth.emulator.tls import generate_tls_files, server_context

            folder = self._tls_dir
            if folder is None:
                folder = self._own_tls_dir = Path(tempfile.mkdtemp(prefix="certauth-emulator-"))
            try:
                files = generate_tls_files(folder, now=self.clock.now())
            except OSError as exc:  # a file in the way, a name too long, no permission
                self._remove_own_tls_dir()
                from certauth.errors import ConfigurationError

                raise ConfigurationError(
                    f"{folder}: cannot write the TLS files there ({exc.strerror or exc}); give "
                    "a directory that exists or can be created"
                ) from None
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
        self._thread = self._server.serve_in_thread(f"certauth-emulator-{self._server.port}")
        log.info("emulator listening on %s (tenant %s)", self.authority_host, self.tenant_id)
        if self._mtls is not None and files is not None:
            try:
                self._mtls.start(self.host, files, self._limits)
            except OSError as exc:
                self.stop()
                from certauth.errors import ConfigurationError

                raise ConfigurationError(
                    f"cannot listen for mutual TLS on {self.host}: {exc.strerror or exc}"
                ) from None
        return self

    def stop(self) -> None:
        """Stop serving, close connections and remove generated TLS files (idempotent)."""
        self._token_endpoint.release_holds()  # held requests' threads must not outlive us
        self._stop_vaults()
        if self._mtls is not None:
            self._mtls.stop()
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
    def resource_url(self) -> str:
        """A protected test API that checks tokens as a CAE-aware Microsoft API does: ``200``
        with a summary of a valid token, ``401`` ``invalid_token`` otherwise, and the
        ``insufficient_claims`` challenge for a CAE token issued before :meth:`revoke`. A
        bound token must come with what binds it: a DPoP proof (``Authorization: DPoP``), or
        over :attr:`mtls_resource_url` with its client certificate."""
        return f"{self.authority_host}/_emulator/resource"

    @property
    def revoke_url(self) -> str:
        """``POST`` ``client_id=...`` (and optionally ``tenant=...``) here to :meth:`revoke`
        from another process (loopback clients only)."""
        return f"{self.authority_host}/_emulator/revoke"

    @property
    def graph_url(self) -> str:
        """``{authority_host}/graph``: the emulator's Microsoft Graph, called as
        ``{graph_url}/v1.0/applications/{id}/addKey`` like ``https://graph.microsoft.com``."""
        return f"{self.authority_host}/graph"

    @property
    def mtls_token_endpoint(self) -> str | None:
        """With ``tls=True``: the v2 token endpoint on the mutual-TLS listener (RFC 8705 section
        5's alias), where a TLS client certificate authenticates and binds; ``None`` without."""
        base = self._mtls.base_url if self._mtls is not None else None
        return f"{base}/{self.tenant_id}/oauth2/v2.0/token" if base is not None else None

    @property
    def mtls_resource_url(self) -> str | None:
        """With ``tls=True``: :attr:`resource_url` on the mutual-TLS listener, where a
        certificate-bound token is accepted with its certificate; ``None`` without."""
        base = self._mtls.base_url if self._mtls is not None else None
        return f"{base}/_emulator/resource" if base is not None else None

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
            "graph_url": self.graph_url,
            "resource_url": self.resource_url,
        }
        if self.ca_file is not None:
            result["ca_file"] = self.ca_file
        if self.mtls_token_endpoint is not None:
            result["mtls_token_endpoint"] = self.mtls_token_endpoint
        if self.mtls_resource_url is not None:
            result["mtls_resource_url"] = self.mtls_resource_url
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
        tls_client_auth_subject_dn: str | None = None,
    ) -> App:
        """Register an app, or add a certificate and roles to one (like uploading a key).

        ``certificate`` is a :class:`~certauth.certificates.Certificate`, a path, or file bytes
        (PEM/DER/PFX; only the public part is used). ``roles`` are app roles granted on every
        resource, or ``{resource: [roles]}`` for specific ones. ``tls_client_auth_subject_dn``
        (RFC 4514, e.g. ``"CN=billing,O=Contoso"``) lets the app authenticate on the mutual-TLS
        listener with any certificate a client CA issued with that subject (``tls_client_auth``,
        RFC 8705 section 2.1); its certificates work there as themselves
        (``self_signed_tls_client_auth``, section 2.2).
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
            display_name=display_name, tls_client_auth_subject_dn=tls_client_auth_subject_dn,
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

    def _app(self, client_id: str, tenant: str | None) -> App:
        found = self._tenant(tenant).app(client_id)
        if found is None:
            raise InvalidArgumentError(
                f"no app {client_id!r} is registered in tenant {self._tenant(tenant).tenant_id}"
            )
        return found

    def app_object_id(self, client_id: str, *, tenant: str | None = None) -> str:
        """The application's object id (Graph's ``id``, the ``iss`` of a proof of possession):
        a stable GUID, not the client id."""
        return self._app(client_id, tenant).object_id

    def key_credentials(self, client_id: str, *, tenant: str | None = None) -> list[dict[str, Any]]:
        """The app's ``keyCredentials`` as Graph shows them now (``key`` null): added or
        removed through Graph at once, whatever the propagation delay."""
        return [key_credential_json(c) for c in self._app(client_id, tenant).certificates]

    def add_resource(
        self, uri: str, *, roles: Sequence[str] = (), tenant: str | None = None
    ) -> Resource:
        """Declare a resource and the roles every client gets on it.

        Until one is declared the emulator issues tokens for any ``RESOURCE/.default``; after
        that an undeclared resource gets AADSTS500011.
        """
        return self.registry.add_resource(self._tenant(tenant), uri, roles)

    # -- continuous access evaluation -----------------------------------------------------

    def revoke(self, client_id: str, *, tenant: str | None = None) -> int:
        """Revoke the tokens issued to ``client_id`` before now (a CAE revocation event, such
        as its service principal being disabled); returns the revocation time (epoch seconds).

        From then on :attr:`resource_url` answers a CAE token (``xms_cc`` with ``cp1``) whose
        ``iat`` is earlier with the ``insufficient_claims`` challenge; tokens without the CAE
        capability are accepted until they expire, as Entra does. New tokens are still issued
        (Entra backdates ``iat`` five minutes, so for the next five minutes only a token
        requested with the challenge's claims passes). ``tenant`` (an id or domain) limits
        it to one tenant; by default every tenant where the client is registered.
        Raises :class:`~certauth.errors.InvalidArgumentError` for an unknown client or tenant.
        """
        revoked_at, tenants = revoke_client(
            self.registry, self._revocations, client_id, tenant, now=self.clock.time()
        )
        log.info("tokens of client_id=%s revoked in %s", client_id, ", ".join(tenants))
        return revoked_at

    def clear_revocations(self) -> None:
        """Forget every :meth:`revoke`."""
        self._revocations.clear()

    def _handle(self, request: HttpRequest) -> HttpResponse:
        # The HTTP server's callback (tests also call it directly, without a socket).
        return self._router.handle(request)


def _seconds(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e9:
        raise InvalidArgumentError(f"{name} must be seconds, 0 or more: {value!r}")
    return float(value)
