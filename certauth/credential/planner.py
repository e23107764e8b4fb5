"""The pure planning core every credential shell shares: what to do, never how to wait.

Given the in-memory cache state and the time, :meth:`Planner.plan` says serve, renew ahead or
renew for one call (its scopes and its :class:`Call`: tenant, claims, CAE);
:meth:`Planner.fetch` is the renewal as a flow (:mod:`certauth._flow`): take the shared
store's lock, use a token another process stored meanwhile, else discover the authority if
needed, pick up a rotated certificate, request a token with retries, and store it. Every I/O
step (HTTP, sleeps, store calls, file reads) is an action the shell performs: the sync shell
blocking, the async shell without ever blocking its event loop.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Generator, Hashable, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from certauth import _renewal
from certauth._flow import Budget, Flow, Send, Sleep, call, get_json, log_retry, retry_delay
from certauth._log import Logger
from certauth._record import Record
from certauth.authority import Authority
from certauth.credential.client_auth import ClientAuth
from certauth.credential.tenants import TenantRules
from certauth.credential.types import AccessToken
from certauth.errors import CertauthError, ConfigurationError, InvalidArgumentError
from certauth.protocol import (
    RetryPolicy,
    Token,
    build_token_request,
    normalize_scopes,
    parse_token_response,
)

if TYPE_CHECKING:
    from certauth.cache import TokenCache
    from certauth.credential.dpop_binding import DPoPBinding

log = Logger("certauth")

#: A cached token is not served with less than this left (azure-identity and MSAL use 5 min).
DEFAULT_REFRESH_MARGIN = _renewal.DEFAULT_REFRESH_MARGIN
#: Distinct scope tuples whose cache key is memoised per credential (callers normally use one
#: or two; the bound keeps a caller that builds scopes dynamically from growing the memo).
_MAX_MEMOISED_SCOPES = 64


def _lock_takes_timeout(store: TokenCache) -> bool:
    from certauth.cache import lock_takes_timeout  # imported once a store is in use

    return lock_takes_timeout(store)


class Call(Record):
    """What one call asks for beyond its scopes: azure-core's ``TokenRequestOptions``.

    Build it with :meth:`of`. ``tenant`` is the ``tenant_id`` as the caller passed it (the
    planner decides whether it is allowed); ``cae`` asks for a CAE token, cached apart;
    ``claims`` is the ``claims`` parameter to send (the caller's, client capability merged;
    ``None``: none); ``uncached``: the caller gave claims, so the token is fetched for them
    and kept in no cache.
    """

    __slots__ = ("cae", "claims", "tenant", "uncached")

    def __init__(
        self,
        tenant: str | None = None,
        cae: bool = False,
        claims: str | None = None,
        uncached: bool = False,
    ) -> None:
        self.tenant = tenant
        self.cae = cae
        self.claims = claims
        self.uncached = uncached

    @classmethod
    def of(
        cls, claims: object = None, tenant_id: object = None, enable_cae: object = False
    ) -> Call:
        """The call ``get_token(claims=..., tenant_id=..., enable_cae=...)`` makes; empty
        values count as not given (as in azure-identity). Typed errors name the keyword."""
        if tenant_id is not None and not isinstance(tenant_id, str):
            raise InvalidArgumentError(
                f"tenant_id= must be a tenant ID string, got {type(tenant_id).__name__}"
            )
        if enable_cae is None:
            enable_cae = False
        if not isinstance(enable_cae, bool):
            raise InvalidArgumentError(
                f"enable_cae= must be True or False, got {type(enable_cae).__name__}"
            )
        given = claims or None
        if given is None and not enable_cae:
            # No claims to send (token_request_claims(None, cae=False) is None), so most calls
            # never import certauth.cae and its parsers.
            return cls(tenant_id) if tenant_id else PLAIN
        from certauth.cae import token_request_claims

        sent = token_request_claims(given, cae=enable_cae)
        return cls(tenant_id or None, enable_cae, sent, given is not None)

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None) -> Call:
        """The call ``get_token_info(options={...})`` makes (unknown options are ignored, as
        azure-core's ``TokenRequestOptions`` says)."""
        if not options:
            return PLAIN
        if not isinstance(options, Mapping):
            raise InvalidArgumentError(
                f"options= must be a mapping such as {{'tenant_id': ...}}, got "
                f"{type(options).__name__}"
            )
        return cls.of(
            options.get("claims"), options.get("tenant_id"), options.get("enable_cae", False)
        )


#: A call with no options: the credential's tenant, no claims, not CAE.
PLAIN = Call()


class Decision(enum.Enum):
    """What to do with the cached token for a request."""

    #: Hand it out.
    SERVE = "serve"
    #: Hand it out, and renew it now (one caller renews; the others keep the valid token).
    RENEW_AHEAD = "renew ahead"
    #: Renew first (none cached, too close to expiry, or the caller forced it).
    RENEW = "renew"


class Planner:
    """Where to ask, how to ask, what answers mean, and the in-memory token cache. No I/O
    happens here: the flows yield it as actions."""

    def __init__(
        self,
        *,
        client_id: str,
        auth: ClientAuth,
        authority: Authority | None,
        issuer: str | None,
        retry: RetryPolicy,
        refresh_margin: float,
        store: TokenCache | None = None,
        clock: Callable[[], float] = time.time,
        timeout: float | None = None,
        tenants: TenantRules | None = None,
        dpop: DPoPBinding | None = None,
    ) -> None:
        if not client_id:
            raise InvalidArgumentError("client id is empty; give client_id=")
        self.client_id = client_id
        self.auth = auth
        self.authority = authority
        self.issuer = issuer
        self.retry = retry
        self.refresh_margin = refresh_margin
        self.store = store
        #: The DPoP key tokens are bound to (RFC 9449), and the servers' nonces; ``None``: bearer
        #: tokens.
        self.dpop = dpop
        #: Which tenants a call may ask for (default: only the credential's own).
        self.tenants = tenants or TenantRules(
            names=frozenset({authority.tenant.lower()} if authority and authority.tenant else ())
        )
        #: The authorities of the other tenants calls asked for, by lower-cased name.
        self._tenant_authorities: dict[str, Authority] = {}
        #: How long the shared store's lock may be waited for (``lock(key, timeout=...)``, to
        #: stores whose ``lock`` takes it: checked once here).
        self.timeout = timeout
        self._lock_takes_timeout = store is not None and _lock_takes_timeout(store)
        #: Every time decision (cache, assertion iat/exp) reads this clock; tests control it.
        self.clock = clock
        self._store_failed = False
        self._tokens: dict[str, Token] = {}
        #: Keys whose renewal failed and whose still-valid token is being served (logged once).
        self._failing: set[str] = set()
        #: Keys dropped by an async ``invalidate``: their shared-store entry is not taken again
        #: (the next renewal replaces it), since deleting it there would block the event loop.
        self._stale: set[str] = set()
        #: key -> (refresh_at, AccessToken) of every remembered token: what the fast path of
        #: get_token reads (a dict lookup and a clock comparison, nothing recomputed).
        self.fresh: dict[str, tuple[float, AccessToken]] = {}
        #: scopes as the caller passed them -> cache key, valid for ``keys_fingerprint`` and
        #: the current authority (cleared when either changes), so scopes are normalised
        #: (and checked) once per distinct tuple rather than on every call. A call with
        #: options is memoised under ``(scopes, tenant, cae)``, what the shells' fast path
        #: looks up: a tenant that is refused is never memoised, so the fast path cannot
        #: skip the check.
        self.keys: dict[Hashable, str] = {}
        self.keys_fingerprint = auth.fingerprint
        if authority is not None:
            self._bind(authority)

    def _bind(self, authority: Authority) -> None:
        self.auth.bind(self.client_id, authority)
        if self.auth.mtls:
            authority = authority.for_mtls()
        self.authority = authority
        self.keys = {}  # normalisation and keys depend on the authority

    # the decision -----------------------------------------------------------------------------

    def cache_key(
        self, scopes: tuple[str, ...], authority: Authority | None = None, *, cae: bool = False
    ) -> str:
        """Token endpoint, client id, credential fingerprint (a rotated certificate never
        serves a token minted with the old one) and the normalised scope set.

        The token endpoint names the tenant (``/TENANT/oauth2/v2.0/token``; ``authority`` is
        another tenant's, for a call that asked for it), so a token is never served for
        another tenant; a CAE token's endpoint is marked ``#cae`` (an endpoint has no
        fragment, so no plain key can look like it): CAE and non-CAE tokens live apart. A
        DPoP-bound token's endpoint is marked with its key's thumbprint (``#dpop=JKT``): it is
        served only to a credential holding that key.
        """
        authority = authority or self.authority
        endpoint = authority.token_endpoint if authority else f"issuer:{self.issuer}"
        if cae:
            endpoint += "#cae"
        if self.dpop is not None:
            endpoint += self.dpop.cache_tag
        return _renewal.cache_key(endpoint, self.client_id, self.auth.fingerprint, scopes)

    def authority_for(self, options: Call) -> Authority | None:
        """Where ``options`` gets its token: the credential's authority, or an allowed tenant's
        (:class:`~certauth.errors.TenantNotAllowedError` for one that is not)."""
        tenant = self.tenants.resolve(options.tenant)
        if tenant is None:
            return self.authority
        authority = self._tenant_authorities.get(tenant.lower())
        if authority is None:
            authority = self.tenants.authority(tenant)
            self._tenant_authorities[tenant.lower()] = authority
        return authority

    def usable_until(self, token: Token) -> float:
        """After this a token is not handed out any more (:func:`certauth._renewal.usable_until`
        with this credential's margin)."""
        return _renewal.usable_until(token, self.refresh_margin)

    def refresh_at(self, token: Token) -> float:
        """From this time on the token is renewed ahead of expiry while still served
        (:func:`certauth._renewal.refresh_at` with this credential's margin)."""
        return _renewal.refresh_at(token, self.refresh_margin)

    def key_for(self, scopes: tuple[str, ...], options: Call = PLAIN) -> str:
        """:meth:`cache_key` of the normalised ``scopes`` for ``options``, memoised per scopes
        tuple and call (the memo is dropped when the certificate's fingerprint changes: a
        rotation)."""
        fingerprint = self.auth.fingerprint
        if fingerprint is not self.keys_fingerprint:
            self.keys = {}
            self.keys_fingerprint = fingerprint
        memo = (
            scopes
            if options.tenant is None and not options.cae
            else (scopes, options.tenant, options.cae)
        )
        key = self.keys.get(memo)
        if key is None:
            key = self._key(scopes, options)
            if len(self.keys) < _MAX_MEMOISED_SCOPES:
                self.keys[memo] = key
        return key

    def _key(self, scopes: tuple[str, ...], options: Call) -> str:
        authority = self.authority_for(options)
        return self.cache_key(self.scopes_for(scopes), authority, cae=options.cae)

    def plan(
        self, scopes: tuple[str, ...], *, force: bool, options: Call = PLAIN
    ) -> tuple[str, Token | None, Decision]:
        """The cache key for ``scopes`` and ``options``, the token cached under it (``None``
        with ``force`` or claims: a token asked for with claims is fetched, never taken from
        the cache), and what to do with it now."""
        key = self.key_for(scopes, options)
        force = force or options.uncached
        token = None if force else self._tokens.get(key)
        if token is not None:
            now = self.clock()
            if now < self.refresh_at(token):
                return key, token, Decision.SERVE
            if now < self.usable_until(token):
                return key, token, Decision.RENEW_AHEAD
        return key, token, Decision.RENEW

    def recover(self, key: str, fallback: Token | None, exc: CertauthError) -> Token | None:
        """After renewing failed: the token to serve instead (one that has not expired yet,
        its failure logged once per streak), or ``None`` to raise ``exc``."""
        if fallback is None or self.clock() >= fallback.expires_on:
            return None
        if key not in self._failing:
            self._failing.add(key)
            log.warning("certauth: renewing a token failed; serving the still-valid one: %s", exc)
        return fallback

    # the in-memory cache ----------------------------------------------------------------------

    def remember(self, key: str, token: Token) -> None:
        """Keep ``token`` as the one to serve for ``key``."""
        self._tokens[key] = token
        self.fresh[key] = (
            self.refresh_at(token),
            AccessToken(token.access_token, token.expires_on),
        )
        self._failing.discard(key)

    def forget(self, scopes: tuple[str, ...], options: Call = PLAIN) -> str | None:
        """Drop the remembered token for ``scopes`` and ``options``; the key, for the shared
        store (``None`` before the authority is known: nothing can be cached yet)."""
        if self.authority is None:
            return None
        key = self.key_for(scopes, options)
        self._tokens.pop(key, None)
        self.fresh.pop(key, None)
        if self.store is not None:
            self._stale.add(key)
        return key

    # the renewal ------------------------------------------------------------------------------

    def fetch(
        self, key: str, scopes: tuple[str, ...], *, force: bool, options: Call = PLAIN
    ) -> Flow[Token]:
        """Renew the token for ``scopes`` and ``options`` (cached under ``key``), as a flow,
        within the call's bound (``RetryPolicy.total_timeout``). A token asked for with
        claims is the caller's alone: neither read from nor written to either cache."""
        budget = Budget(self.retry.total_timeout)
        if self.authority is None:
            # Discover first, so the shared store is read under the key tokens are stored
            # under (an issuer's credentials would otherwise never find each other's).
            yield from self._discover(budget)
            key = self.key_for(scopes, options)
        authority = self.authority_for(options)
        assert authority is not None
        keep = not options.uncached
        store = self.store is not None and keep
        readable = store and not force and key not in self._stale
        if readable:
            # Read first: a token another process stored costs one store read, not the lock's
            # round trips (most renewals in a fleet find the token already there).
            stored = yield from call(self.load_stored, key)
            if stored is not None:
                self.remember(key, stored)
                return stored
        lock = (yield from call(self._store_lock_enter, key)) if store else None
        try:
            if readable:
                stored = yield from call(self.load_stored, key)
                if stored is not None:
                    # Another process fetched it while this one waited for the lock.
                    self.remember(key, stored)
                    return stored
            token = yield from self._request(scopes, budget, authority, options.claims)
            # The key changes when a rotated certificate was loaded.
            fresh_key = self._key(scopes, options)
            if store:
                yield from call(self.save_stored, fresh_key, token)
                self._stale.discard(key)
        except GeneratorExit:
            # The driver abandoned the flow (its task or coroutine was closed): no more
            # actions can be asked for, so the lock is released here and now.
            if lock is not None:
                self._store_lock_exit(lock)
                lock = None
            raise
        finally:
            if lock is not None:
                yield from call(self._store_lock_exit, lock)
        if keep:
            self.remember(fresh_key, token)
        return token

    def scopes_for(self, scopes: tuple[str, ...]) -> tuple[str, ...]:
        """Normalised scopes (Entra's rules apply once the authority is known to be Entra)."""
        entra = self.authority.is_entra if self.authority else False
        return normalize_scopes(scopes, entra=entra)

    def _request(
        self, scopes: tuple[str, ...], budget: Budget, authority: Authority, claims: str | None
    ) -> Flow[Token]:
        """Request a token from ``authority`` (with the ``claims`` parameter when given),
        retrying transient failures within ``budget``."""
        auth = self.auth
        if auth.reads_files:
            yield from call(auth.maybe_reload, self.clock())
        scopes = normalize_scopes(scopes, entra=authority.is_entra)
        attempt = 0
        nonce_demanded = False
        while True:
            attempt += 1
            now = self.clock()
            # A fresh assertion per attempt (new jti); a signer's signature is a step here.
            fields = yield from auth.credential_flow(
                authority.token_endpoint, now, retry=self.retry, budget=budget
            )
            request = build_token_request(
                authority.token_endpoint,
                self.client_id,
                scopes,
                assertion=fields.get("assertion"),
                client_secret=fields.get("client_secret"),
                secret_method=fields.get("secret_method", "client_secret_post"),  # type: ignore[arg-type]
                v1_resource=authority.is_v1,
                claims=claims,
                tls_client_auth=auth.mtls,
            )
            headers = dict(request.headers)
            if auth.mtls:
                # A connection of its own for each token request: a pooled one may have been
                # opened with the certificate a rotation has since replaced, and the token
                # would be bound to that one (RFC 8705 section 3).
                headers["Connection"] = "close"
            if self.dpop is None:
                answer = yield Send("POST", request.url, headers, request.body, timeout=budget.left)
                budget.charge(answer.elapsed)
            else:
                # RFC 9449 sections 5 and 8: a fresh proof per attempt.
                answer, demand = yield from self.dpop.token_post(
                    request.url, headers, request.body, budget
                )
                if demand and not nonce_demanded:
                    # The server's nonce, asked for once: sent again at once with it (and a
                    # fresh assertion), not counted as a failed attempt; a second demand is
                    # the error it reads as below.
                    nonce_demanded = True
                    attempt -= 1
                    continue
            delay = retry_delay(
                answer,
                attempt,
                url=authority.token_endpoint,
                retry=self.retry,
                now=self.clock(),
                budget=budget,
            )
            if delay is not None:
                log_retry("token", authority.token_endpoint, answer, attempt, self.retry, delay)
                budget.charge(delay)
                yield Sleep(delay)
                continue
            token = parse_token_response(
                answer.status,
                answer.body,
                url=authority.token_endpoint,
                now=self.clock(),
                content_type=answer.headers.get("content-type", ""),
            )
            if self.dpop is not None:
                token = self.dpop.bound(token, authority.token_endpoint)
            log.debug(
                "certauth: token for %s from %s, expires in %d s",
                " ".join(scopes),
                authority.token_endpoint,
                token.expires_in,
            )
            return token

    def _discover(self, budget: Budget) -> Generator[Any, Any, None]:
        assert self.issuer is not None
        document = yield from get_json(
            Authority.discovery_url(self.issuer),
            what="discovery document",
            hint="check issuer=",
            retry=self.retry,
            now=self.clock(),
            budget=budget,
        )
        self._bind(Authority.from_discovery(self.issuer, document))

    # the shared store: run by the shells as blocking I/O (Call actions) --------------------------

    def load_stored(self, key: str) -> Token | None:
        """A fresh token another process stored (``None`` when absent, stale or unreadable)."""
        if self.store is None:
            return None
        cipher = self.auth.cipher()
        blob = self._store_call("get", key)
        if cipher is None or not isinstance(blob, bytes):
            return None
        token = cipher.open(key, blob)
        if token is None:
            return None  # corrupt or written with another key: ignored, and replaced below
        return token if self.clock() < self.refresh_at(token) else None

    def save_stored(self, key: str, token: Token) -> None:
        """Store ``token`` for other processes, sealed with this client's key."""
        if self.store is None:
            return  # before deriving the cipher: that costs ~0.5 ms of key encoding and HKDF
        cipher = self.auth.cipher()
        if cipher is not None:
            self._store_call("set", key, cipher.seal(key, token), token.expires_on)

    def delete_stored(self, key: str) -> None:
        """Drop ``key`` from the shared store (after the API refused its token)."""
        if self.store is not None:
            self._store_call("delete", key)
            if not self._store_failed:  # else the entry may still be there: keep skipping it
                self._stale.discard(key)

    def _store_lock_enter(self, key: str) -> AbstractContextManager[object] | None:
        """Take the shared store's lock for ``key``; the held lock (``None``: a lock that
        cannot be taken is bypassed like any store failure)."""
        wait = {"timeout": self.timeout} if self._lock_takes_timeout else {}
        manager = self._store_call("lock", key, **wait)
        if manager is None:
            return None
        try:
            manager.__enter__()
        except ConfigurationError:
            raise
        except Exception as exc:  # noqa: BLE001 - a broken lock must not stop tokens
            self._store_failure(exc)
            return None
        return manager  # type: ignore[no-any-return]

    def _store_lock_exit(self, manager: AbstractContextManager[object]) -> None:
        try:
            manager.__exit__(None, None, None)
        except Exception as exc:  # noqa: BLE001
            self._store_failure(exc)

    def _store_failure(self, exc: BaseException) -> None:
        if not self._store_failed:
            log.warning(
                "certauth: token cache %r failed (%s); going on without it", self.store, exc
            )
        self._store_failed = True

    def _store_call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call the shared store; a store that fails is logged once and bypassed, never fatal
        (the token endpoint is still there). Configuration errors are the user's to fix."""
        assert self.store is not None
        try:
            result = getattr(self.store, method)(*args, **kwargs)
        except ConfigurationError:
            raise
        except Exception as exc:  # noqa: BLE001 - any store failure degrades to no store
            self._store_failure(exc)
            return None
        if self._store_failed:
            log.warning("certauth: token cache %r works again", self.store)
            self._store_failed = False
        return result
