"""Token credentials: a certificate (or secret, or federated assertion) in, access tokens out.

``CertificateCredential`` (httpx.Client) and ``AsyncCertificateCredential``
(httpx.AsyncClient) are drop-ins for azure-identity's classes of the same name and implement
azure-core's ``get_token`` / ``get_token_info`` protocols. Both run the same sans-I/O
``_Core.flow`` (discovery, request building, retries, response parsing); they differ only in
how they wait.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from certauth import _http
from certauth._files import read_input_file
from certauth._http import Failure, Flow, Reply, Send, Sleep
from certauth._httpx import httpx
from certauth.assertion import DEFAULT_LIFETIME, build_client_assertion, check_entra_key
from certauth.authority import Authority
from certauth.certificates import Certificate, load_certificate
from certauth.errors import (
    CertauthError,
    CertificateError,
    ConfigurationError,
    InputFileError,
    InvalidArgumentError,
)
from certauth.protocol import (
    RetryPolicy,
    SecretMethod,
    Token,
    build_token_request,
    normalize_scopes,
    parse_token_response,
)

if TYPE_CHECKING:
    # Imported where they are used instead: asyncio costs a sync-only process ~25 ms of
    # start-up, the cache module's AEAD and HKDF a few more, for a process without a shared
    # cache (every CI step that runs `certauth token` pays the start-up again).
    import asyncio

    from certauth.cache import EntryCipher, TokenCache

__all__ = [
    "AccessToken",
    "AccessTokenInfo",
    "AsyncCertificateCredential",
    "AsyncClientSecretCredential",
    "AsyncWorkloadIdentityCredential",
    "BearerAuth",
    "CertificateCredential",
    "ClientSecretCredential",
    "WorkloadIdentityCredential",
]

log = logging.getLogger("certauth")

#: A cached token is not served with less than this left (azure-identity and MSAL use 5 min).
DEFAULT_REFRESH_MARGIN = 300
#: Distinct scope tuples whose cache key is memoised per credential (callers normally use one
#: or two; the bound keeps a caller that builds scopes dynamically from growing the memo).
_MAX_MEMOISED_SCOPES = 64


class AccessToken(NamedTuple):
    """azure-core's ``AccessToken``: the token and its expiry (epoch seconds)."""

    token: str
    expires_on: int

    def __repr__(self) -> str:
        return f"AccessToken(token='***', expires_on={self.expires_on})"


@dataclass(frozen=True)
class AccessTokenInfo:
    """azure-core's ``AccessTokenInfo`` (returned by ``get_token_info``)."""

    token: str
    expires_on: int
    token_type: str = "Bearer"
    refresh_on: int | None = None

    def __repr__(self) -> str:
        return (
            f"AccessTokenInfo(token='***', expires_on={self.expires_on}, "
            f"token_type={self.token_type!r}, refresh_on={self.refresh_on})"
        )


# -- client authentication ----------------------------------------------------------------------


class _ClientAuth(Protocol):
    """How the client proves who it is: an assertion it signs or reads, or a secret."""

    #: Distinguishes credentials in cache keys (a certificate's thumbprint, a secret's hash).
    fingerprint: str
    #: The OAuth client authentication method (for discovery checks).
    method: str

    def credential_fields(self, audience: str, now: float) -> dict[str, str]:
        """``assertion=`` or ``client_secret=`` (+ ``secret_method=``) for the request."""
        ...

    def check(self, authority: Authority) -> None:
        """Refuse, before sending, what this authority is known to reject."""
        ...

    def cipher(self) -> EntryCipher | None:
        """The key that encrypts this client's entries in a shared cache (``None``: no
        secret to derive one from, so nothing is stored)."""
        ...

    def maybe_reload(self) -> None:
        """Pick up a credential that changed on disk (certificate rotation)."""
        ...


class _CertificateAuth:
    method = "private_key_jwt"

    def __init__(
        self,
        certificate: Certificate,
        *,
        alg: str | None,
        lifetime: int,
        send_chain: bool,
        reload_from: _CertificateFiles | None = None,
    ) -> None:
        certificate.require_private_key()
        self.alg = alg
        self.lifetime = lifetime
        self.send_chain = send_chain
        self._files = reload_from
        self._seen = reload_from.signature() if reload_from else None
        self._use(certificate)

    def _use(self, certificate: Certificate) -> None:
        self.certificate = certificate
        self.fingerprint = f"x5t#S256:{certificate.x5t_s256}"
        self._cipher: EntryCipher | None = None

    def cipher(self) -> EntryCipher | None:
        if self._cipher is None:
            from certauth.cache import EntryCipher

            self._cipher = EntryCipher.from_private_key(self.certificate.require_private_key())
        return self._cipher

    def maybe_reload(self) -> None:
        """Reload the certificate when its file changed (new content, or a Kubernetes
        secret's symlink swap). A broken new state (half-written file, a key that does not
        match) keeps the old certificate working and is logged once per change."""
        files = self._files
        if files is None:
            return
        signature = files.signature()
        if signature == self._seen:
            return
        self._seen = signature
        try:
            fresh = files.load()
            if self._authority is not None:
                self.check(self._authority)
        except CertauthError as exc:
            log.warning(
                "certauth: kept the current certificate: the changed file is unusable: %s", exc
            )
            return
        if fresh.x5t_s256 != self.certificate.x5t_s256:
            log.info(
                "certauth: certificate rotated: %s -> %s",
                self.certificate.thumbprint_sha1,
                fresh.thumbprint_sha1,
            )
            self._use(fresh)

    def check(self, authority: Authority) -> None:
        self._authority = authority
        if authority.kind == "b2c":
            raise ConfigurationError(
                f"{authority.token_endpoint}: Azure AD B2C takes only client secrets for the "
                "client credentials grant, not certificates (it answers AADB2C99027); use a "
                "client secret for B2C, or a regular Entra ID tenant"
            )
        if authority.is_entra:
            check_entra_key(self.certificate)
        authority.check_auth_method(self.method)
        authority.check_signing_alg(self._alg_for(authority))

    def _alg_for(self, authority: Authority) -> str:
        return self.alg or authority.default_alg(self.certificate.key_type)

    def credential_fields(self, audience: str, now: float) -> dict[str, str]:
        # Every request gets a freshly signed assertion (new jti), retries included.
        return {
            "assertion": build_client_assertion(
                self.certificate,
                client_id=self._client_id,
                audience=audience,
                alg=self._alg,
                lifetime=self.lifetime,
                include_x5c=self.send_chain,
                now=now,
            )
        }

    # Bound by _Core once the authority is known.
    _client_id: str = ""
    _alg: str | None = None
    _authority: Authority | None = None


@dataclass(frozen=True)
class _CertificateFiles:
    """Where a certificate was loaded from, to notice and load a rotated one."""

    cert_path: str
    key_path: str | None
    password: str | bytes | None = field(repr=False)

    def signature(self) -> tuple[object, ...]:
        parts: list[object] = []
        for path in (self.cert_path, self.key_path):
            if path is None:
                continue
            try:
                info = os.stat(path)  # follows symlinks: a swapped link target shows up here
                parts.append((os.path.realpath(path), info.st_ino, info.st_size, info.st_mtime_ns))
            except OSError as exc:
                parts.append((path, exc.errno))
        return tuple(parts)

    def load(self) -> Certificate:
        return load_certificate(
            self.cert_path, key=self.key_path, password=self.password, require_key=True
        )


class _FileAssertionAuth:
    """A pre-made assertion (workload identity federation), re-read on every request because
    the platform rotates the file."""

    method = "private_key_jwt"

    def __init__(self, path: str) -> None:
        self.path = path
        self.fingerprint = f"federated:{os.path.abspath(path)}"

    def check(self, authority: Authority) -> None:
        authority.check_auth_method(self.method)

    def cipher(self) -> EntryCipher | None:
        return None  # the assertion file is public to the pod: no secret to encrypt with

    def maybe_reload(self) -> None:
        return None  # re-read on every request anyway

    def credential_fields(self, audience: str, now: float) -> dict[str, str]:
        data = read_input_file(self.path, what="federated token", error=InputFileError)
        try:
            text = data.decode("ascii").strip()
        except UnicodeDecodeError:
            text = ""
        if text.count(".") != 2:
            raise InputFileError(
                f"{self.path}: not a JWT (expected header.claims.signature); check "
                "AZURE_FEDERATED_TOKEN_FILE",
                path=self.path,
            )
        return {"assertion": text}


class _SecretAuth:
    method: str

    def __init__(self, secret: str, method: SecretMethod) -> None:
        if not secret:
            raise InvalidArgumentError("the client secret is empty")
        if method not in ("client_secret_post", "client_secret_basic"):
            raise InvalidArgumentError(
                f"secret method {method!r}: use client_secret_post or client_secret_basic"
            )
        self.secret = secret
        self.method = method
        self.fingerprint = "secret:" + hashlib.sha256(secret.encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"_SecretAuth(method={self.method!r})"

    def check(self, authority: Authority) -> None:
        authority.check_auth_method(self.method)

    def cipher(self) -> EntryCipher | None:
        from certauth.cache import EntryCipher

        return EntryCipher.from_secret(self.secret)

    def maybe_reload(self) -> None:
        return None

    def credential_fields(self, audience: str, now: float) -> dict[str, str]:
        return {"client_secret": self.secret, "secret_method": self.method}


# -- the sans-I/O core --------------------------------------------------------------------------


class _Core:
    """Everything both credential shells share: where to ask, how to ask, what answers mean,
    and the in-memory token cache. No I/O happens here: :meth:`flow` yields actions."""

    def __init__(
        self,
        *,
        client_id: str,
        auth: _ClientAuth,
        authority: Authority | None,
        issuer: str | None,
        retry: RetryPolicy,
        refresh_margin: float,
        store: TokenCache | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not client_id:
            raise InvalidArgumentError("client id is empty; give client_id / --client-id")
        self.client_id = client_id
        self.auth = auth
        self.authority = authority
        self.issuer = issuer
        self.retry = retry
        self.refresh_margin = refresh_margin
        self.store = store
        #: Every time decision (cache, assertion iat/exp) reads this clock; tests control it.
        self.clock = clock
        self._store_failed = False
        self._tokens: dict[str, Token] = {}
        #: key -> (refresh_at, AccessToken) of every remembered token: what the fast path of
        #: get_token reads (a dict lookup and a clock comparison, nothing recomputed).
        self.fresh: dict[str, tuple[float, AccessToken]] = {}
        #: scopes as the caller passed them -> cache key, valid for ``keys_fingerprint`` and
        #: the current authority (cleared when either changes), so scopes are normalised
        #: (and checked) once per distinct tuple rather than on every call.
        self.keys: dict[tuple[str, ...], str] = {}
        self.keys_fingerprint = auth.fingerprint
        if isinstance(auth, _CertificateAuth):
            auth._client_id = client_id
        if authority is not None:
            self._bind(authority)

    def _bind(self, authority: Authority) -> None:
        self.auth.check(authority)
        if isinstance(self.auth, _CertificateAuth):
            self.auth._alg = self.auth._alg_for(authority)
        self.authority = authority
        self.keys = {}  # normalisation and keys depend on the authority

    # cache -----------------------------------------------------------------------------------

    def cache_key(self, scopes: tuple[str, ...]) -> str:
        """Token endpoint, client id, credential fingerprint (a rotated certificate never
        serves a token minted with the old one) and the normalised scope set."""
        endpoint = self.authority.token_endpoint if self.authority else f"issuer:{self.issuer}"
        return "\x1f".join((endpoint, self.client_id, self.auth.fingerprint, *sorted(scopes)))

    def usable_until(self, token: Token) -> float:
        """After this a token is not handed out any more (it must be renewed first).

        The safety margin is capped at half the token's lifetime so short-lived tokens are
        still reused for half their life instead of never.
        """
        return token.expires_on - min(self.refresh_margin, token.expires_in / 2)

    def refresh_at(self, token: Token) -> float:
        """From this time on the token is renewed ahead of expiry while still served: the
        server's ``refresh_in`` when sent, else half the lifetime."""
        ahead = token.refresh_on or token.expires_on - token.expires_in / 2
        return min(ahead, self.usable_until(token))

    def key_for(self, scopes: tuple[str, ...]) -> str:
        """:meth:`cache_key` of the normalised ``scopes``, memoised per scopes tuple (the memo
        is dropped when the certificate's fingerprint changes: a rotation)."""
        fingerprint = self.auth.fingerprint
        if fingerprint is not self.keys_fingerprint:
            self.keys = {}
            self.keys_fingerprint = fingerprint
        key = self.keys.get(scopes)
        if key is None:
            key = self.cache_key(self.scopes_for(scopes))
            if len(self.keys) < _MAX_MEMOISED_SCOPES:
                self.keys[scopes] = key
        return key

    def remembered(self, key: str) -> Token | None:
        """The in-memory token for ``key`` (whatever its age)."""
        return self._tokens.get(key)

    def remember(self, key: str, token: Token) -> None:
        self._tokens[key] = token
        self.fresh[key] = (
            self.refresh_at(token),
            AccessToken(token.access_token, token.expires_on),
        )

    def forget(self, key: str) -> None:
        self._tokens.pop(key, None)
        self.fresh.pop(key, None)
        if self.store is not None:
            self._store_call("delete", key)

    # the shared store -------------------------------------------------------------------------

    def load_stored(self, key: str, now: float) -> Token | None:
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
        return token if now < self.refresh_at(token) else None

    def save_stored(self, key: str, token: Token) -> None:
        if self.store is None:
            return  # before deriving the cipher: that costs ~0.5 ms of key encoding and HKDF
        cipher = self.auth.cipher()
        if cipher is not None:
            self._store_call("set", key, cipher.seal(key, token), token.expires_on)

    @contextlib.contextmanager
    def store_lock(self, key: str) -> Iterator[None]:
        """Hold the shared store's lock for ``key`` while fetching (no-op without a store; a
        lock that cannot be taken is bypassed like any store failure)."""
        manager = self._store_call("lock", key) if self.store is not None else None
        entered = False
        if manager is not None:
            try:
                manager.__enter__()
                entered = True
            except ConfigurationError:
                raise
            except Exception as exc:  # noqa: BLE001 - a broken lock must not stop tokens
                self._store_failure(exc)
        try:
            yield
        finally:
            if entered and manager is not None:
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

    def _store_call(self, method: str, *args: Any) -> Any:
        """Call the shared store; a store that fails is logged once and bypassed, never fatal
        (the token endpoint is still there). Configuration errors are the user's to fix."""
        assert self.store is not None
        try:
            result = getattr(self.store, method)(*args)
        except ConfigurationError:
            raise
        except Exception as exc:  # noqa: BLE001 - any store failure degrades to no store
            self._store_failure(exc)
            return None
        if self._store_failed:
            log.warning("certauth: token cache %r works again", self.store)
            self._store_failed = False
        return result

    # the exchange ----------------------------------------------------------------------------

    def scopes_for(self, scopes: tuple[str, ...]) -> tuple[str, ...]:
        """Normalised scopes (Entra's rules apply once the authority is known to be Entra)."""
        entra = self.authority.is_entra if self.authority else False
        return normalize_scopes(scopes, entra=entra)

    def flow(self, scopes: tuple[str, ...]) -> Flow[Token]:
        """Resolve the authority if needed, then request a token, retrying transient failures."""
        if self.authority is None:
            yield from self._discover()
        self.auth.maybe_reload()
        authority = self.authority
        assert authority is not None
        scopes = normalize_scopes(scopes, entra=authority.is_entra)
        attempt = 0
        while True:
            attempt += 1
            now = self.clock()
            fields = self.auth.credential_fields(authority.token_endpoint, now)
            request = build_token_request(
                authority.token_endpoint,
                self.client_id,
                scopes,
                assertion=fields.get("assertion"),
                client_secret=fields.get("client_secret"),
                secret_method=fields.get("secret_method", "client_secret_post"),  # type: ignore[arg-type]
                v1_resource=authority.is_v1,
            )
            answer = yield Send("POST", request.url, dict(request.headers), request.body)
            delay = self._retry_delay(answer, attempt, authority.token_endpoint)
            if delay is not None:
                log.info(
                    "certauth: token request to %s failed (%s); retry %d in %.2f s",
                    authority.token_endpoint,
                    _describe(answer),
                    attempt,
                    delay,
                )
                yield Sleep(delay)
                continue
            assert isinstance(answer, Reply)
            token = parse_token_response(
                answer.status,
                answer.body,
                url=authority.token_endpoint,
                now=self.clock(),
                content_type=answer.headers.get("content-type", ""),
            )
            log.debug(
                "certauth: token for %s from %s, expires in %d s",
                " ".join(scopes),
                authority.token_endpoint,
                token.expires_in,
            )
            return token

    def _retry_delay(self, answer: Reply | Failure | None, attempt: int, url: str) -> float | None:
        return _http.retry_delay(answer, attempt, url=url, retry=self.retry, now=self.clock())

    def _discover(self) -> Generator[Send | Sleep, Reply | Failure | None, None]:
        assert self.issuer is not None
        document = yield from _http.get_json(
            Authority.discovery_url(self.issuer),
            what="discovery document",
            hint="check --issuer",
            retry=self.retry,
            now=self.clock(),
        )
        self._bind(Authority.from_discovery(self.issuer, document))


def _still_valid(token: Token | None, now: float) -> bool:
    """Whether a token may still be handed out when renewing it failed: until it expires."""
    return token is not None and now < token.expires_on


def _log_refresh_failure(failing: set[str], key: str, exc: BaseException) -> None:
    # Once per failure streak: a refresh retried on every call must not flood the log.
    if key not in failing:
        failing.add(key)
        log.warning("certauth: renewing a token failed; serving the still-valid one: %s", exc)


def _describe(answer: Reply | Failure | None) -> str:
    if isinstance(answer, Failure):
        return answer.detail
    if isinstance(answer, Reply):
        return f"HTTP {answer.status}"
    return "no answer"


# -- construction shared by every public credential ------------------------------------------


def _authority_from(
    tenant_id: str | None,
    *,
    authority: str | None,
    token_endpoint: str | None,
    issuer: str | None,
    b2c_policy: str | None,
) -> tuple[Authority | None, str | None]:
    """The authority (or the issuer still to discover) from the constructor's arguments."""
    if token_endpoint:
        return Authority.from_token_endpoint(token_endpoint), None
    if issuer:
        entra = Authority.entra_from_issuer(issuer)
        return (entra, None) if entra else (None, issuer)
    if not tenant_id:
        raise InvalidArgumentError(
            "no tenant: give tenant_id (--tenant / AZURE_TENANT_ID), a token_endpoint or an issuer"
        )
    if b2c_policy:
        return Authority.b2c(tenant_id, b2c_policy, host=authority), None
    return Authority.entra(tenant_id, host=authority), None


def _load_certificate_arg(
    certificate_path: str | os.PathLike[str] | None,
    certificate_data: bytes | None,
    certificate: Certificate | None,
    password: str | bytes | None,
    key_path: str | os.PathLike[str] | None,
) -> tuple[Certificate, _CertificateFiles | None]:
    given = [x is not None for x in (certificate_path, certificate_data, certificate)]
    if sum(given) != 1:
        raise InvalidArgumentError(
            "give exactly one of certificate_path, certificate_data or certificate"
        )
    if certificate is not None:
        certificate.require_private_key()
        return certificate, None
    if certificate_path is not None:
        files = _CertificateFiles(
            os.fspath(certificate_path), os.fspath(key_path) if key_path else None, password
        )
        return files.load(), files
    assert certificate_data is not None
    key = (
        read_input_file(key_path, what="private key", error=CertificateError) if key_path else None
    )
    return load_certificate(certificate_data, key=key, password=password, require_key=True), None


#: azure-identity keywords accepted for drop-in compatibility; they change nothing here
#: (certauth never does instance discovery, and has no persistent cache by those names).
_IGNORED_AZURE_KWARGS = frozenset(
    {
        "disable_instance_discovery",
        "additionally_allowed_tenants",
        "cache_persistence_options",
        "enable_support_logging",
        "logging_enable",
        "authority_validation",
    }
)


def _check_kwargs(kwargs: Mapping[str, Any]) -> Any:
    """Return ``connection_verify`` if given; refuse keywords that are neither ours nor
    azure-identity's (a typo must not be silently ignored)."""
    unknown = set(kwargs) - _IGNORED_AZURE_KWARGS - {"connection_verify"}
    if unknown:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(unknown))}")
    return kwargs.get("connection_verify")


class _Settings(NamedTuple):
    core: _Core
    verify: Any
    timeout: float


def _settings(
    *,
    tenant_id: str | None,
    client_id: str | None,
    auth: _ClientAuth,
    authority: str | None,
    token_endpoint: str | None,
    issuer: str | None,
    b2c_policy: str | None,
    verify: Any,
    timeout: float,
    retry: RetryPolicy | None,
    refresh_margin: float,
    cache: TokenCache | None,
    clock: Callable[[], float],
    kwargs: Mapping[str, Any],
) -> _Settings:
    connection_verify = _check_kwargs(kwargs)
    if timeout <= 0:
        raise InvalidArgumentError(f"timeout must be above 0 seconds, got {timeout}")
    resolved, pending_issuer = _authority_from(
        tenant_id,
        authority=authority,
        token_endpoint=token_endpoint,
        issuer=issuer,
        b2c_policy=b2c_policy,
    )
    core = _Core(
        client_id=client_id or "",
        auth=auth,
        authority=resolved,
        issuer=pending_issuer,
        retry=retry or RetryPolicy(),
        refresh_margin=refresh_margin,
        store=cache,
        clock=clock,
    )
    return _Settings(core, verify if verify is not None else connection_verify, timeout)


# -- the shells ---------------------------------------------------------------------------------


class _SyncCredential:
    """Blocking shell: httpx.Client, threads, single flight per token."""

    def __init__(self, settings: _Settings, client: httpx.Client | None) -> None:
        self._core = settings.core
        self._owns_client = client is None
        self._client = client or _http.new_sync_client(settings.verify, settings.timeout)
        self._inflight: dict[str, concurrent.futures.Future[Token]] = {}
        self._inflight_lock = threading.Lock()
        self._failing: set[str] = set()

    @property
    def authority(self) -> Authority | None:
        """The resolved authority (``None`` until an issuer's discovery document is read)."""
        return self._core.authority

    def _token(self, scopes: tuple[str, ...], *, force: bool = False) -> Token:
        core = self._core
        key = core.key_for(scopes)
        now = core.clock()
        token = None if force else core.remembered(key)
        if token is not None:
            if now < core.refresh_at(token):
                return token  # a dict lookup, no lock
            if now < core.usable_until(token):
                # Refresh ahead: one caller renews; the others keep the still-valid token.
                return self._renew(key, scopes, fallback=token, wait=False, force=False)
        return self._renew(key, scopes, fallback=token, wait=True, force=force)

    def _renew(
        self, key: str, scopes: tuple[str, ...], *, fallback: Token | None, wait: bool, force: bool
    ) -> Token:
        # Single flight: the first caller fetches; concurrent callers wait for its result or
        # its error instead of sending their own request.
        with self._inflight_lock:
            future = self._inflight.get(key)
            leader = future is None
            if future is None:
                future = concurrent.futures.Future()
                self._inflight[key] = future
        if not leader:
            if not wait and fallback is not None:
                return fallback
            try:
                return future.result()
            except CertauthError:
                if _still_valid(fallback, self._core.clock()):
                    assert fallback is not None
                    return fallback
                raise
        try:
            token = self._fetch(key, scopes, force)
            future.set_result(token)
            self._failing.discard(key)
            return token
        except BaseException as exc:
            future.set_exception(exc)
            if isinstance(exc, CertauthError) and _still_valid(fallback, self._core.clock()):
                assert fallback is not None
                _log_refresh_failure(self._failing, key, exc)
                return fallback
            raise
        finally:
            with self._inflight_lock:
                self._inflight.pop(key, None)

    def _fetch(self, key: str, scopes: tuple[str, ...], force: bool) -> Token:
        core = self._core
        with core.store_lock(key):
            # Another process may have fetched while we waited for the lock.
            stored = None if force else core.load_stored(key, core.clock())
            if stored is not None:
                core.remember(key, stored)
                return stored
            token = _http.run_sync(core.flow(scopes), self._client)
            # The key changes once discovery resolved the endpoint or a rotated certificate
            # was loaded.
            fresh_key = core.cache_key(core.scopes_for(scopes))
            core.save_stored(fresh_key, token)
        core.remember(fresh_key, token)
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

        Served from the cache while it has more than the refresh margin left.
        """
        core = self._core
        if not claims and core.auth.fingerprint is core.keys_fingerprint:
            # The fast path (~0.5 us): two dict lookups and a clock comparison. Everything
            # else (normalising scopes, refresh ahead, single flight) is in _token.
            key = core.keys.get(scopes)
            entry = core.fresh.get(key) if key is not None else None
            if entry is not None and core.clock() < entry[0]:
                return entry[1]
        token = self._token(scopes, force=bool(claims))
        return AccessToken(token.access_token, token.expires_on)

    def get_token_info(
        self, *scopes: str, options: Mapping[str, Any] | None = None
    ) -> AccessTokenInfo:
        """azure-core ``SupportsTokenInfo.get_token_info``."""
        token = self._token(scopes, force=bool(options and options.get("claims")))
        return AccessTokenInfo(
            token.access_token, token.expires_on, token.token_type, token.refresh_on
        )

    def request_token(self, *scopes: str, force: bool = False) -> Token:
        """The full :class:`~certauth.protocol.Token` (every response field), cached like
        :meth:`get_token`; ``force`` skips the cache."""
        return self._token(scopes, force=force)

    def invalidate(self, *scopes: str) -> None:
        """Drop the cached token for ``scopes`` (after the API answered 401 to it)."""
        core = self._core
        if core.authority is not None:
            core.forget(core.key_for(scopes))

    def close(self) -> None:
        """Close the HTTP client (when the credential created it)."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> _SyncCredential:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _AsyncCredential:
    """asyncio shell: httpx.AsyncClient, tasks, single flight per token."""

    def __init__(self, settings: _Settings, client: httpx.AsyncClient | None) -> None:
        self._core = settings.core
        self._owns_client = client is None
        self._client = client or _http.new_async_client(settings.verify, settings.timeout)
        self._inflight: dict[str, asyncio.Future[Token]] = {}
        self._failing: set[str] = set()

    @property
    def authority(self) -> Authority | None:
        """The resolved authority (``None`` until an issuer's discovery document is read)."""
        return self._core.authority

    async def _token(self, scopes: tuple[str, ...], *, force: bool = False) -> Token:
        core = self._core
        key = core.key_for(scopes)
        now = core.clock()
        token = None if force else core.remembered(key)
        if token is not None:
            if now < core.refresh_at(token):
                return token  # the fast path: a dict lookup, no await
            if now < core.usable_until(token):
                return await self._renew(key, scopes, fallback=token, wait=False, force=False)
        return await self._renew(key, scopes, fallback=token, wait=True, force=force)

    async def _renew(
        self, key: str, scopes: tuple[str, ...], *, fallback: Token | None, wait: bool, force: bool
    ) -> Token:
        import asyncio

        future = self._inflight.get(key)
        if future is not None:
            if not wait and fallback is not None:
                return fallback
            try:
                return await asyncio.shield(future)
            except CertauthError:
                if _still_valid(fallback, self._core.clock()):
                    assert fallback is not None
                    return fallback
                raise
        future = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            token = await self._fetch(key, scopes, force)
            future.set_result(token)
            self._failing.discard(key)
            return token
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: no "never retrieved" warning without waiters
            if isinstance(exc, CertauthError) and _still_valid(fallback, self._core.clock()):
                assert fallback is not None
                _log_refresh_failure(self._failing, key, exc)
                return fallback
            raise
        finally:
            self._inflight.pop(key, None)

    async def _fetch(self, key: str, scopes: tuple[str, ...], force: bool) -> Token:
        core = self._core
        if core.store is None:
            token = await _http.run_async(core.flow(scopes), self._client)
            core.remember(core.cache_key(core.scopes_for(scopes)), token)
            return token
        # The shared store is blocking I/O (a file lock, Redis): run it in a worker thread so
        # the event loop never waits on it.
        import asyncio

        lock = core.store_lock(key)
        await asyncio.to_thread(lock.__enter__)
        try:
            stored = None if force else await asyncio.to_thread(core.load_stored, key, core.clock())
            if stored is not None:
                core.remember(key, stored)
                return stored
            token = await _http.run_async(core.flow(scopes), self._client)
            fresh_key = core.cache_key(core.scopes_for(scopes))
            await asyncio.to_thread(core.save_stored, fresh_key, token)
        finally:
            await asyncio.to_thread(lock.__exit__, None, None, None)
        core.remember(fresh_key, token)
        return token

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        """azure-core ``AsyncTokenCredential.get_token``."""
        core = self._core
        if not claims and core.auth.fingerprint is core.keys_fingerprint:
            # The fast path, as in the sync credential: no await, no lock.
            key = core.keys.get(scopes)
            entry = core.fresh.get(key) if key is not None else None
            if entry is not None and core.clock() < entry[0]:
                return entry[1]
        token = await self._token(scopes, force=bool(claims))
        return AccessToken(token.access_token, token.expires_on)

    async def get_token_info(
        self, *scopes: str, options: Mapping[str, Any] | None = None
    ) -> AccessTokenInfo:
        """azure-core ``AsyncSupportsTokenInfo.get_token_info``."""
        token = await self._token(scopes, force=bool(options and options.get("claims")))
        return AccessTokenInfo(
            token.access_token, token.expires_on, token.token_type, token.refresh_on
        )

    async def request_token(self, *scopes: str, force: bool = False) -> Token:
        """The full :class:`~certauth.protocol.Token`, cached like :meth:`get_token`."""
        return await self._token(scopes, force=force)

    def invalidate(self, *scopes: str) -> None:
        """Drop the cached token for ``scopes`` (after the API answered 401 to it)."""
        core = self._core
        if core.authority is not None:
            core.forget(core.key_for(scopes))

    async def close(self) -> None:
        """Close the HTTP client (when the credential created it)."""
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> _AsyncCredential:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


# -- public credentials -------------------------------------------------------------------------


def _certificate_settings(
    tenant_id: str | None,
    client_id: str | None,
    certificate_path: str | os.PathLike[str] | None,
    kw: dict[str, Any],
) -> _Settings:
    certificate, files = _load_certificate_arg(
        certificate_path,
        kw.pop("certificate_data", None),
        kw.pop("certificate", None),
        kw.pop("password", None),
        kw.pop("key_path", None),
    )
    lifetime = kw.pop("assertion_lifetime", DEFAULT_LIFETIME)
    auth = _CertificateAuth(
        certificate,
        alg=kw.pop("alg", None),
        lifetime=lifetime,
        send_chain=bool(kw.pop("send_certificate_chain", False)),
        reload_from=files,
    )
    return _common_settings(tenant_id, client_id, auth, kw)


def _check_cache(cache: Any) -> TokenCache | None:
    if cache is None:
        return None
    from certauth.cache import TokenCache

    if isinstance(cache, TokenCache):
        return cache
    raise InvalidArgumentError(
        f"cache={cache!r} is not a token cache: pass FileTokenCache(), RedisTokenCache(...) or "
        "an object with get/set/delete/lock"
    )


def _common_settings(
    tenant_id: str | None, client_id: str | None, auth: _ClientAuth, kw: dict[str, Any]
) -> _Settings:
    return _settings(
        tenant_id=tenant_id,
        client_id=client_id,
        auth=auth,
        authority=kw.pop("authority", None),
        token_endpoint=kw.pop("token_endpoint", None),
        issuer=kw.pop("issuer", None),
        b2c_policy=kw.pop("b2c_policy", None),
        verify=kw.pop("verify", None),
        timeout=float(kw.pop("timeout", 30.0)),
        retry=kw.pop("retry", None),
        refresh_margin=float(kw.pop("refresh_margin", DEFAULT_REFRESH_MARGIN)),
        cache=_check_cache(kw.pop("cache", None)),
        clock=kw.pop("clock", time.time),
        kwargs=kw,
    )


class CertificateCredential(_SyncCredential):
    """Authenticates as a service principal with a certificate (azure-identity compatible).

    ``CertificateCredential(tenant_id, client_id, "cert.pem")`` works as azure-identity's.
    The certificate is PEM (key + certificate), PFX or DER (with ``password``), given as
    ``certificate_path``, ``certificate_data`` (bytes) or a loaded ``certificate``. Keyword-only
    extras: ``authority`` (cloud host), ``token_endpoint`` or ``issuer`` (any OAuth/OIDC
    server), ``b2c_policy``, ``alg`` (``PS256`` default for Entra, ``RS256`` elsewhere),
    ``send_certificate_chain`` (``x5c``), ``assertion_lifetime`` (seconds, <= 600), ``verify``
    (CA file or ``ssl.SSLContext``), ``timeout`` (seconds), ``retry`` (a
    :class:`~certauth.protocol.RetryPolicy`), ``refresh_margin`` (seconds), ``client`` (an
    ``httpx.Client`` to use). Problems with the certificate, key or authority raise at
    construction, not at the first request.
    """

    def __init__(
        self,
        tenant_id: str | None = None,
        client_id: str | None = None,
        certificate_path: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> None:
        client = kwargs.pop("client", None)
        super().__init__(
            _certificate_settings(tenant_id, client_id, certificate_path, kwargs), client
        )

    def __repr__(self) -> str:
        return f"CertificateCredential(client_id={self._core.client_id!r})"


class AsyncCertificateCredential(_AsyncCredential):
    """The asyncio twin of :class:`CertificateCredential` (same arguments; ``client`` is an
    ``httpx.AsyncClient``). Honours ``send_certificate_chain`` like the sync one."""

    def __init__(
        self,
        tenant_id: str | None = None,
        client_id: str | None = None,
        certificate_path: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> None:
        client = kwargs.pop("client", None)
        super().__init__(
            _certificate_settings(tenant_id, client_id, certificate_path, kwargs), client
        )

    def __repr__(self) -> str:
        return f"AsyncCertificateCredential(client_id={self._core.client_id!r})"


def _secret_settings(
    tenant_id: str | None, client_id: str | None, client_secret: str, kw: dict[str, Any]
) -> _Settings:
    auth = _SecretAuth(client_secret, kw.pop("secret_method", "client_secret_post"))
    return _common_settings(tenant_id, client_id, auth, kw)


class ClientSecretCredential(_SyncCredential):
    """Authenticates with a client secret (for servers, such as B2C, that take only secrets).

    Same keywords as :class:`CertificateCredential`, plus ``secret_method``
    (``client_secret_post`` default, or ``client_secret_basic``).
    """

    def __init__(
        self, tenant_id: str | None, client_id: str, client_secret: str, **kwargs: Any
    ) -> None:
        client = kwargs.pop("client", None)
        super().__init__(_secret_settings(tenant_id, client_id, client_secret, kwargs), client)

    def __repr__(self) -> str:
        return f"ClientSecretCredential(client_id={self._core.client_id!r})"


class AsyncClientSecretCredential(_AsyncCredential):
    """The asyncio twin of :class:`ClientSecretCredential`."""

    def __init__(
        self, tenant_id: str | None, client_id: str, client_secret: str, **kwargs: Any
    ) -> None:
        client = kwargs.pop("client", None)
        super().__init__(_secret_settings(tenant_id, client_id, client_secret, kwargs), client)

    def __repr__(self) -> str:
        return f"AsyncClientSecretCredential(client_id={self._core.client_id!r})"


def _federated_settings(
    tenant_id: str | None, client_id: str | None, token_file_path: str | None, kw: dict[str, Any]
) -> _Settings:
    path = token_file_path or os.environ.get("AZURE_FEDERATED_TOKEN_FILE")
    if not path:
        raise InvalidArgumentError(
            "no federated token file: give token_file_path or AZURE_FEDERATED_TOKEN_FILE"
        )
    return _common_settings(tenant_id, client_id, _FileAssertionAuth(path), kw)


class WorkloadIdentityCredential(_SyncCredential):
    """Exchanges a federated token file (``AZURE_FEDERATED_TOKEN_FILE``) for an access token.

    The file is re-read on every request because the platform rotates it.
    """

    def __init__(
        self,
        tenant_id: str | None = None,
        client_id: str | None = None,
        token_file_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        client = kwargs.pop("client", None)
        super().__init__(_federated_settings(tenant_id, client_id, token_file_path, kwargs), client)


class AsyncWorkloadIdentityCredential(_AsyncCredential):
    """The asyncio twin of :class:`WorkloadIdentityCredential`."""

    def __init__(
        self,
        tenant_id: str | None = None,
        client_id: str | None = None,
        token_file_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        client = kwargs.pop("client", None)
        super().__init__(_federated_settings(tenant_id, client_id, token_file_path, kwargs), client)


# -- httpx integration --------------------------------------------------------------------------


class BearerAuth(httpx.Auth):
    """An ``httpx.Auth`` that sends ``Authorization: Bearer <token>`` from a credential.

    Works with httpx.Client (sync credential) and httpx.AsyncClient (async credential, or a
    sync one run in a worker thread so the event loop never blocks). On a 401 from the API it
    drops the cached token, fetches a new one and retries the request once.
    """

    requires_response_body = False

    def __init__(self, credential: _SyncCredential | _AsyncCredential, *scopes: str) -> None:
        if not scopes:
            raise InvalidArgumentError("BearerAuth needs at least one scope")
        self.credential = credential
        self.scopes = scopes

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        credential = self.credential
        if not isinstance(credential, _SyncCredential):
            raise TypeError("an async credential needs an httpx.AsyncClient")
        request.headers["Authorization"] = f"Bearer {credential.get_token(*self.scopes).token}"
        response = yield request
        if response.status_code == 401:
            credential.invalidate(*self.scopes)
            token = credential.get_token(*self.scopes).token
            request.headers["Authorization"] = f"Bearer {token}"
            yield request

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        request.headers["Authorization"] = f"Bearer {await self._async_token()}"
        response = yield request
        if response.status_code == 401:
            self.credential.invalidate(*self.scopes)
            request.headers["Authorization"] = f"Bearer {await self._async_token()}"
            yield request

    async def _async_token(self) -> str:
        credential = self.credential
        if isinstance(credential, _AsyncCredential):
            return (await credential.get_token(*self.scopes)).token
        import asyncio

        result = await asyncio.to_thread(credential.get_token, *self.scopes)
        return result.token
