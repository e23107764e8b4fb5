"""The two shells around the planning core: blocking (threads) and asyncio (tasks).

They share every decision (:class:`~certauth.credential.planner.Planner`) and the single
flight (:mod:`certauth._singleflight`); they differ only in how they wait and do I/O. The
cached path of ``get_token`` is written out in both on purpose: two dict lookups and a clock
comparison, with no call in between, is what keeps a cache hit near 0.2 us. A call with
``tenant_id`` or ``enable_cae`` takes the fast path too, under its own memo key (one more
small call); a call with ``claims`` never does (its token is fetched).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Mapping
from typing import TYPE_CHECKING, Any

from certauth._singleflight import AsyncSingleFlight, SingleFlight
from certauth.authority import Authority
from certauth.credential.client_auth import CertificateAuth
from certauth.credential.dpop_binding import DPoPCredential
from certauth.credential.mtls import MtlsAuth
from certauth.credential.planner import PLAIN, Call, Decision, Planner
from certauth.credential.types import AccessToken, AccessTokenInfo
from certauth.errors import CertauthError, TokenRequestError
from certauth.protocol import Token, name_certificate

if TYPE_CHECKING:
    import ssl

    from certauth._http import SyncClient
    from certauth._httpx import httpx


def _explained(exc: CertauthError, core: Planner) -> None:
    """Let a refusal of the certificate name it by its thumbprints (only the credential knows
    which certificate signed the assertion)."""
    if isinstance(exc, TokenRequestError) and isinstance(core.auth, CertificateAuth):
        certificate = core.auth.certificate
        name_certificate(
            exc, sha1=certificate.thumbprint_sha1, sha256=certificate.thumbprint_sha256
        )


def _memo(scopes: tuple[str, ...], tenant_id: object, enable_cae: object) -> Hashable:
    """The memo key (see :attr:`Planner.keys`) the fast path looks up for a call with
    options (``None`` for arguments of the wrong type: the slow path names them in its
    error). A plain call's key is its scopes, looked up inline."""
    if (tenant_id is None or isinstance(tenant_id, str)) and isinstance(enable_cae, bool):
        return (scopes, tenant_id, enable_cae)
    return None


def _flight(key: str, options: Call) -> Hashable:
    """Callers of one cache key share a fetch; a call with claims shares only with callers
    asking for the same claims (its token is not the cached one)."""
    return (key, options.claims) if options.uncached else key


def _given_client(client: object, kind: str) -> Any:
    """The caller's ``client=``, checked to be an ``httpx.<kind>`` (httpx is imported only
    when one is given: a process whose tokens come from a cache never imports it)."""
    if client is None:
        return None
    from certauth import _http
    from certauth._httpx import httpx

    return _http.given_client(client, getattr(httpx, kind))


class _TLS:
    """What both shells expose of their TLS settings, for the API calls that follow.

    The HTTP client, and with it the TLS context (loading the system store costs ~30 ms), is
    made when the first request is due, not with the credential: a token served from a cache
    never pays for either (nor for importing httpx).
    """

    _verify: Any
    _timeout: float
    _core: Planner

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context of this credential's token requests: its trust (``verify=``) and,
        with ``mtls=True``, the client certificate it presents. API calls with a
        certificate-bound token (RFC 8705 section 3) must present the same certificate: give
        this to their HTTP client (``httpx.Client(verify=credential.ssl_context)``), or use
        :meth:`http_client`. A certificate rotated on disk is presented by new connections."""
        from certauth import _http

        return _http.resolve_verify(self._verify)

    def _pool_context(self) -> Callable[[], ssl.SSLContext] | None:
        """Under ``mtls=True``, what returns the TLS context for the certificate in use now, a
        new one per certificate (``None`` otherwise): a client that sees it change opens new
        connections with it (see :mod:`certauth._rotating_transport`)."""
        auth = self._core.auth
        return auth.pool_context if isinstance(auth, MtlsAuth) else None

    def _check_client_kwargs(self, kwargs: dict[str, Any]) -> None:
        """Refuse the ``http_client`` keywords that would take its TLS context or its tokens
        away: ``verify``/``auth`` are its own, and under ``mtls=True`` a ``transport``/
        ``mounts`` of the caller's would not present the certificate."""
        from certauth.errors import InvalidArgumentError

        for name in ("verify", "auth"):
            if name in kwargs:
                raise InvalidArgumentError(
                    f"http_client() sets {name}= itself (the credential's ssl_context and "
                    "BearerAuth); give the CA file as the credential's verify=, or build an "
                    "httpx client of your own with those"
                )
        if self._pool_context() is not None:
            for name in ("transport", "mounts"):
                if name in kwargs:
                    raise InvalidArgumentError(
                        f"http_client({name}=...) with mtls=True: a transport of yours does "
                        "not present the client certificate, and the API refuses the "
                        "certificate-bound token without it; leave it out, or build your "
                        "transport with verify=credential.ssl_context"
                    )

    def _transport_settings(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The ``httpx.Client`` keywords its default transport takes: an API client's inner
        transports are made with them."""
        names = ("http1", "http2", "limits", "trust_env")
        return {name: kwargs[name] for name in names if name in kwargs}


class SyncCredential(_TLS, DPoPCredential):
    """Blocking shell: certauth's own HTTP client (or a caller's ``httpx.Client``), threads,
    single flight per token."""

    _core: Planner

    def _setup(self, core: Planner, client: object, verify: Any, timeout: float) -> None:
        given = _given_client(client, "Client")
        self._core = core
        self._verify, self._timeout = verify, timeout
        self._owns_client = given is None
        #: The caller's ``client=``, or the one made when the first request is due.
        self._client: SyncClient | None = given
        self._client_lock = threading.Lock()
        self._flights: SingleFlight[Token] = SingleFlight()

    def _make_client(self) -> SyncClient:
        client = self._client
        if client is None:
            with self._client_lock:
                client = self._client
                if client is None:
                    from certauth import _http

                    client = self._client = _http.new_sync_client(
                        self._verify,
                        self._timeout,
                        tls_context=self._pool_context(),
                    )
        return client

    def http_client(self, *scopes: str, **kwargs: Any) -> httpx.Client:
        """An ``httpx.Client`` for the API that ``scopes`` are for: this credential's TLS
        context (:attr:`ssl_context`, the client certificate included with ``mtls=True``) and
        :class:`~certauth.BearerAuth` with its tokens. ``kwargs`` go to ``httpx.Client``
        (``base_url=``, ``timeout=`` ...; not ``verify=`` nor ``auth=``, which are these, nor
        with ``mtls=True`` a ``transport=``/``mounts=``, which would not present the
        certificate: :class:`~certauth.errors.InvalidArgumentError`). Close it when done
        (``with`` does)."""
        from certauth._httpx import httpx
        from certauth.auth import BearerAuth

        self._check_client_kwargs(kwargs)
        kwargs.setdefault("timeout", self._timeout)
        context = self.ssl_context
        current = self._pool_context()
        if current is not None and "transport" not in kwargs:
            from certauth._rotating_transport import RotatingTransport

            settings = self._transport_settings(kwargs)
            kwargs["transport"] = RotatingTransport(
                lambda: httpx.HTTPTransport(verify=current(), **settings), current
            )
        return httpx.Client(verify=context, auth=BearerAuth(self, *scopes), **kwargs)

    @property
    def authority(self) -> Authority | None:
        """The resolved authority (``None`` until an issuer's discovery document is read)."""
        return self._core.authority

    def _token(
        self, scopes: tuple[str, ...], *, force: bool = False, options: Call = PLAIN
    ) -> Token:
        core = self._core
        key, cached, decision = core.plan(scopes, force=force, options=options)
        if decision is Decision.SERVE:
            assert cached is not None
            return cached

        def fetch() -> Token:
            from certauth import _http

            flow = core.fetch(key, scopes, force=force, options=options)
            return _http.run_sync(flow, self._make_client)

        try:
            # Renewing ahead, a caller that finds another one renewing keeps the cached token.
            token = self._flights.run(_flight(key, options), fetch, wait=decision is Decision.RENEW)
        except CertauthError as exc:
            fallback = core.recover(key, cached, exc)
            if fallback is None:
                _explained(exc, core)
                raise
            return fallback
        if token is None:  # renewing ahead, and another caller is at it
            assert cached is not None
            return cached
        return token

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        """azure-core ``TokenCredential.get_token``: a valid token for ``scopes``.

        Served from the cache while it has more than the refresh margin left. ``tenant_id``
        asks for another tenant's token (allowed by ``additionally_allowed_tenants``, else
        :class:`~certauth.errors.TenantNotAllowedError`); ``claims`` (a JSON object string,
        such as a claims challenge's) is sent to the token endpoint and the token fetched for
        it is not cached; ``enable_cae`` asks for a CAE token (client capability ``cp1``),
        cached apart from the others. Other keywords are accepted and ignored, as
        azure-core's protocol allows.
        """
        core = self._core
        if not claims and core.auth.fingerprint is core.keys_fingerprint:
            # The fast path (~0.2 us), see the module docstring. Only a call whose tenant was
            # allowed once has a memoised key.
            if tenant_id is None and enable_cae is False:
                key = core.keys.get(scopes)
            else:
                key = core.keys.get(_memo(scopes, tenant_id, enable_cae))
            entry = core.fresh.get(key) if key is not None else None
            if entry is not None and core.clock() < entry[0]:
                return entry[1]
        token = self._token(scopes, options=Call.of(claims, tenant_id, enable_cae))
        return AccessToken(token.access_token, token.expires_on)

    def get_token_info(
        self, *scopes: str, options: Mapping[str, Any] | None = None
    ) -> AccessTokenInfo:
        """azure-core ``SupportsTokenInfo.get_token_info``: ``options`` holds ``tenant_id``,
        ``claims`` and ``enable_cae`` as :meth:`get_token` takes them."""
        token = self._token(scopes, options=Call.from_options(options))
        return AccessTokenInfo(
            token.access_token, token.expires_on, token.token_type, token.refresh_on
        )

    def request_token(
        self,
        *scopes: str,
        force: bool = False,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
    ) -> Token:
        """The full :class:`~certauth.protocol.Token` (every response field), cached like
        :meth:`get_token` (same keywords); ``force`` skips the cache."""
        return self._token(scopes, force=force, options=Call.of(claims, tenant_id, enable_cae))

    def invalidate(
        self, *scopes: str, tenant_id: str | None = None, enable_cae: bool = False
    ) -> None:
        """Drop the cached token for ``scopes`` (of ``tenant_id``, CAE or not), here and in
        the shared store (after the API answered 401 to it)."""
        key = self._core.forget(scopes, Call.of(None, tenant_id, enable_cae))
        if key is not None:
            self._core.delete_stored(key)

    def close(self) -> None:
        """Close the HTTP client (when the credential created it). The credential stays
        usable: its next request opens a new one, as azure-core's transports reopen."""
        if not self._owns_client:
            return
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def __enter__(self) -> SyncCredential:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncCredential(_TLS, DPoPCredential):
    """asyncio shell: httpx.AsyncClient, tasks, single flight per token."""

    _core: Planner

    def _setup(self, core: Planner, client: object, verify: Any, timeout: float) -> None:
        given = _given_client(client, "AsyncClient")
        self._core = core
        self._verify, self._timeout = verify, timeout
        self._owns_client = given is None
        #: The caller's ``client=``, or the one made when the first request is due.
        self._client: httpx.AsyncClient | None = given
        self._flights: AsyncSingleFlight[Token] = AsyncSingleFlight()

    def _make_client(self) -> httpx.AsyncClient:
        # One event loop runs this: nothing can interleave between the test and the set.
        client = self._client
        if client is None:
            from certauth import _http

            client = self._client = _http.new_async_client(
                self._verify, self._timeout, tls_context=self._pool_context()
            )
        return client

    def http_client(self, *scopes: str, **kwargs: Any) -> httpx.AsyncClient:
        """The ``httpx.AsyncClient`` twin of :meth:`SyncCredential.http_client`."""
        from certauth._httpx import httpx
        from certauth.auth import BearerAuth

        self._check_client_kwargs(kwargs)
        kwargs.setdefault("timeout", self._timeout)
        context = self.ssl_context
        current = self._pool_context()
        if current is not None and "transport" not in kwargs:
            from certauth._rotating_transport import AsyncRotatingTransport

            settings = self._transport_settings(kwargs)
            kwargs["transport"] = AsyncRotatingTransport(
                lambda: httpx.AsyncHTTPTransport(verify=current(), **settings), current
            )
        return httpx.AsyncClient(verify=context, auth=BearerAuth(self, *scopes), **kwargs)

    @property
    def authority(self) -> Authority | None:
        """The resolved authority (``None`` until an issuer's discovery document is read)."""
        return self._core.authority

    async def _token(
        self, scopes: tuple[str, ...], *, force: bool = False, options: Call = PLAIN
    ) -> Token:
        core = self._core
        key, cached, decision = core.plan(scopes, force=force, options=options)
        if decision is Decision.SERVE:
            assert cached is not None
            return cached  # no await

        async def fetch() -> Token:
            from certauth import _http

            flow = core.fetch(key, scopes, force=force, options=options)
            return await _http.run_async(flow, self._make_client)

        try:
            flight = _flight(key, options)
            token = await self._flights.run(flight, fetch, wait=decision is Decision.RENEW)
        except CertauthError as exc:
            fallback = core.recover(key, cached, exc)
            if fallback is None:
                _explained(exc, core)
                raise
            return fallback
        if token is None:  # renewing ahead, and another caller is at it
            assert cached is not None
            return cached
        return token

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        """azure-core ``AsyncTokenCredential.get_token`` (keywords as the sync credential's
        :meth:`SyncCredential.get_token`)."""
        core = self._core
        if not claims and core.auth.fingerprint is core.keys_fingerprint:
            # The fast path, as in the sync credential: no await, no lock.
            if tenant_id is None and enable_cae is False:
                key = core.keys.get(scopes)
            else:
                key = core.keys.get(_memo(scopes, tenant_id, enable_cae))
            entry = core.fresh.get(key) if key is not None else None
            if entry is not None and core.clock() < entry[0]:
                return entry[1]
        token = await self._token(scopes, options=Call.of(claims, tenant_id, enable_cae))
        return AccessToken(token.access_token, token.expires_on)

    async def get_token_info(
        self, *scopes: str, options: Mapping[str, Any] | None = None
    ) -> AccessTokenInfo:
        """azure-core ``AsyncSupportsTokenInfo.get_token_info`` (``options`` as the sync
        credential's)."""
        token = await self._token(scopes, options=Call.from_options(options))
        return AccessTokenInfo(
            token.access_token, token.expires_on, token.token_type, token.refresh_on
        )

    async def request_token(
        self,
        *scopes: str,
        force: bool = False,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
    ) -> Token:
        """The full :class:`~certauth.protocol.Token`, cached like :meth:`get_token`."""
        options = Call.of(claims, tenant_id, enable_cae)
        return await self._token(scopes, force=force, options=options)

    def invalidate(
        self, *scopes: str, tenant_id: str | None = None, enable_cae: bool = False
    ) -> None:
        """Drop the cached token for ``scopes`` (of ``tenant_id``, CAE or not), here and in
        the shared store (after the API answered 401 to it). Nothing blocks the event loop:
        the store's entry is deleted in a worker thread, and skipped by this credential until
        then."""
        core = self._core
        key = core.forget(scopes, Call.of(None, tenant_id, enable_cae))
        if key is None or core.store is None:
            return
        import asyncio

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside the loop: blocking is fine here
            core.delete_stored(key)
            return
        loop.run_in_executor(None, core.delete_stored, key)

    async def close(self) -> None:
        """Close the HTTP client (when the credential created it). The credential stays
        usable: its next request opens a new one."""
        client = self._client
        if self._owns_client and client is not None:
            self._client = None
            await client.aclose()

    async def __aenter__(self) -> AsyncCredential:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
