"""Where the keys come from: OIDC discovery and the JWKS, fetched, cached and rate-limited.

``_KeyCore`` is the sans-I/O key source: it decides when to fetch (no keys yet, keys past
``keys_max_age``, an unknown ``kid`` at most once per ``refetch_interval``), builds the fetch
flow (a generator run by :mod:`certauth._http`'s drivers) and keeps the result. Two thin shells
run that flow and add only waiting and the single flight of :mod:`certauth._singleflight`
(the one the credentials use): ``_SyncKeys`` (threads share one fetch) and ``_AsyncKeys``
(tasks share one).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from certauth import _http
from certauth._flow import Budget, Flow, get_json
from certauth._httpx import httpx
from certauth._log import Logger
from certauth._singleflight import AsyncSingleFlight, SingleFlight
from certauth.authority import Authority, check_discovery_issuer, check_endpoint_url
from certauth.errors import (
    CertauthError,
    ConfigurationError,
    InvalidArgumentError,
    TokenValidationError,
    TransportError,
)
from certauth.protocol import RetryPolicy
from certauth.verify.claims import TENANT_PLACEHOLDER, _ago
from certauth.verify.jwks import KeySet, _Key
from certauth.verify.jwt import _fail, _Parsed

if TYPE_CHECKING:
    from certauth._http import SyncClient

log = Logger("certauth")

#: An unknown ``kid`` triggers at most one refetch per this many seconds (per key source).
DEFAULT_REFETCH_INTERVAL = 30.0
#: Keys are refetched (in the background of a verification) once they are this old, so keys
#: the issuer has withdrawn stop being trusted.
DEFAULT_KEYS_MAX_AGE = 24 * 3600.0
#: A verification runs in a request path: fetch retries stay short.
DEFAULT_FETCH_RETRY = RetryPolicy(
    max_attempts=2, base_delay=0.2, max_delay=1.0, max_retry_after=2.0
)


def discovery_url_for(issuer: str) -> str:
    """The OIDC discovery document that names ``issuer`` (OIDC Discovery 1.0 section 4).

    An issuer template (``{tenantid}``) is looked up under ``common``, whose Entra document
    names exactly that template; a v1 issuer (``https://sts.windows.net/TENANT/``) is published
    by ``login.microsoftonline.com/TENANT``.
    """
    concrete = issuer.replace(TENANT_PLACEHOLDER, "common")
    parts = urlsplit(concrete)
    if parts.scheme == "https" and (parts.hostname or "").lower() == "sts.windows.net":
        concrete = f"https://login.microsoftonline.com{parts.path}"
    return Authority.discovery_url(concrete)


@dataclass(frozen=True)
class _State:
    """A snapshot of what a key source knows; replaced whole, so readers need no lock."""

    keys: KeySet | None = None
    jwks_uri: str | None = None
    #: Bumped by every fetch attempt: a waiter that saw an older generation re-looks.
    generation: int = 0
    #: Monotonic time of the last fetch attempt (success or failure).
    attempted_at: float = -math.inf
    #: Monotonic time after which the keys count as stale and are refetched.
    stale_at: float = math.inf


@dataclass(frozen=True)
class _Refresh:
    """The core's answer "fetch the keys first" (``reason`` is for the log)."""

    reason: str
    generation: int
    #: Read the discovery document again too (first fetch, or keys past their max age); an
    #: unknown kid only refetches the JWKS.
    rediscover: bool = False


@dataclass(frozen=True)
class _Fetched:
    jwks_uri: str
    keys: KeySet


class _KeyCore:
    """The key source: decides when to fetch, builds the fetch flow, and keeps the result.

    The shells call :meth:`lookup`; on :class:`_Refresh` they run :meth:`fetch_flow` (one
    at a time) and hand the result to :meth:`installed` or :meth:`failed`.
    """

    def __init__(
        self,
        *,
        issuer: str | None,
        jwks_uri: str | None,
        jwks: Mapping[str, Any] | KeySet | None,
        refetch_interval: float,
        keys_max_age: float,
        retry: RetryPolicy | None,
    ) -> None:
        given = [n for n, v in (("jwks_uri", jwks_uri), ("jwks", jwks)) if v is not None]
        if len(given) > 1:
            raise InvalidArgumentError("give jwks_uri or jwks, not both")
        if issuer is None and not given:
            raise InvalidArgumentError(
                "say where the keys are: issuer (OIDC discovery), jwks_uri, or jwks"
            )
        if refetch_interval < 0 or keys_max_age <= 0:
            raise InvalidArgumentError("refetch_interval must be >= 0 and keys_max_age > 0")
        self.issuer = issuer
        self.jwks_uri = check_endpoint_url(jwks_uri, what="jwks_uri") if jwks_uri else None
        if issuer is not None and jwks_uri is None and jwks is None:
            discovery_url_for(issuer)  # refuse an unusable issuer URL now, not at first use
        self.refetch_interval = float(refetch_interval)
        self.keys_max_age = float(keys_max_age)
        self.retry = retry or DEFAULT_FETCH_RETRY
        self.static = jwks is not None
        if jwks is not None:
            keys = jwks if isinstance(jwks, KeySet) else KeySet.from_jwks(jwks, source="jwks")
            self.state = _State(keys=keys)
        else:
            self.state = _State(jwks_uri=self.jwks_uri)

    @property
    def where(self) -> str:
        return self.state.jwks_uri or self.jwks_uri or f"the keys of {self.issuer}"

    def lookup(self, parsed: _Parsed, at: float) -> tuple[_Key, ...] | _Refresh:
        """The keys that may have signed this token (see :meth:`KeySet.select`), or a request
        to fetch keys first; raises ``kid`` when the key is unknown and a refetch is not
        allowed yet (the rate limit)."""
        state = self.state
        if state.keys is None:
            return _Refresh("no keys yet", state.generation, rediscover=True)
        if not self.static and at >= state.stale_at:
            return _Refresh("keys older than keys_max_age", state.generation, rediscover=True)
        keys = state.keys.select(parsed)
        if keys:
            return keys
        kid = parsed.kid
        since = at - state.attempted_at
        if not self.static and since >= self.refetch_interval:
            # The issuer may have rotated keys since the last fetch.
            return _Refresh(f"unknown kid {kid!r}", state.generation)
        raise self._unknown_kid(parsed, state, since)

    def _unknown_kid(self, parsed: _Parsed, state: _State, since: float) -> TokenValidationError:
        keys = state.keys
        assert keys is not None
        known = ", ".join(keys.kids) or "none"
        if keys.skipped:
            known += f"; skipped: {'; '.join(keys.skipped)}"
        what = f"kid {parsed.kid!r}" if parsed.kid else f"no kid and no {parsed.alg} key"
        if self.static:
            when = "the given jwks"
        else:
            when = (
                f"{self.where} (fetched {_ago(since)} ago; refetched at most every "
                f"{self.refetch_interval:g} s)"
            )
        return _fail(
            "kid",
            f"the token names {what}, which is not in {when}; keys there: {known}. The token "
            "is from another issuer or forged; an Entra app with its own signing key needs "
            "?appid=CLIENT_ID on the jwks_uri",
        )

    def gave_up(self) -> TransportError:
        """Lookups kept asking for keys (other callers' fetches kept failing or racing)."""
        return TransportError(f"{self.where}: the signing keys could not be loaded; try again")

    def fetch_flow(self, step: _Refresh, now: float) -> Flow[_Fetched]:
        """GET the discovery document (unless the JWKS location is configured, or known and
        ``step`` does not ask to rediscover) and then the JWKS, both within one bound
        (``RetryPolicy.total_timeout``)."""
        budget = Budget(self.retry.total_timeout)
        jwks_uri = self.jwks_uri or (None if step.rediscover else self.state.jwks_uri)
        if jwks_uri is None:
            assert self.issuer is not None
            url = discovery_url_for(self.issuer)
            document = yield from self._get_json(url, "discovery document", now, budget)
            jwks_uri = self._read_discovery(url, document)
        document = yield from self._get_json(jwks_uri, "JWKS", now, budget)
        keys = KeySet.from_jwks(document, source=jwks_uri, error=TransportError)
        return _Fetched(jwks_uri, keys)

    def _read_discovery(self, url: str, document: Any) -> str:
        assert self.issuer is not None
        document = check_discovery_issuer(self.issuer, document, where=url)
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri:
            # As a credential treats a document without a token_endpoint (the same fault).
            raise ConfigurationError(f"{url}: the discovery document has no jwks_uri")
        return check_endpoint_url(jwks_uri, what=f"the jwks_uri in {url}")

    def _get_json(self, url: str, what: str, now: float, budget: Budget) -> Flow[Any]:
        document = yield from get_json(
            url,
            what=what,
            hint="check the issuer / jwks_uri",
            retry=self.retry,
            now=now,
            budget=budget,
        )
        return document

    def installed(self, fetched: _Fetched, at: float) -> None:
        """Keep freshly fetched keys."""
        previous = self.state
        self.state = _State(
            keys=fetched.keys,
            jwks_uri=fetched.jwks_uri,
            generation=previous.generation + 1,
            attempted_at=at,
            stale_at=at + self.keys_max_age,
        )
        log.info(
            "certauth: fetched %d signing keys from %s (kids: %s)",
            len(fetched.keys),
            fetched.jwks_uri,
            ", ".join(fetched.keys.kids) or "none",
        )

    def keep_after(self, exc: CertauthError, at: float) -> bool:
        """After a failed fetch: True when the previous keys stay in use (logged), False when
        ``exc`` is the caller's to see."""
        keep = self.failed(at)
        if keep:
            log.warning("certauth: keeping the previous signing keys: %s", exc)
        return keep

    def failed(self, at: float) -> bool:
        """Record a failed fetch. True when the previous keys stay in use (a stale-refresh
        failure: an issuer outage must not take every API down with it)."""
        previous = self.state
        stale_refresh = previous.keys is not None and at >= previous.stale_at
        self.state = replace(
            previous,
            generation=previous.generation + 1,
            attempted_at=at,
            # Try again after the refetch interval, not on every request.
            stale_at=at + self.refetch_interval if stale_refresh else previous.stale_at,
        )
        return stale_refresh


#: A lookup ends within this many rounds (fetch, look again); more means a bug.
_MAX_ROUNDS = 4


# -- the sync shell ----------------------------------------------------------------------------


class _SyncKeys:
    """Runs the key core with httpx.Client; concurrent threads share one fetch."""

    def __init__(
        self,
        core: _KeyCore,
        *,
        verify: Any,
        timeout: float,
        client: httpx.Client | None,
        clock: Callable[[], float],
    ) -> None:
        self.core = core
        self._verify = verify
        self._timeout = timeout
        self._client: SyncClient | None = client
        self._owns_client = client is None
        self._clock = clock
        self._lock = threading.Lock()
        self._flights: SingleFlight[None] = SingleFlight()

    def key_for(self, parsed: _Parsed) -> tuple[_Key, ...]:
        for _ in range(_MAX_ROUNDS):
            step = self.core.lookup(parsed, self._clock())
            if isinstance(step, tuple):
                return step
            self._refresh(step)
        raise self.core.gave_up()  # pragma: no cover - the rounds end well before

    def _refresh(self, step: _Refresh) -> None:
        # Threads that need keys at once share one fetch; a thread arriving after it finished
        # finds a newer generation and looks again instead of fetching.
        self._flights.run("keys", lambda: self._fetch(step))

    def _fetch(self, step: _Refresh) -> None:
        with self._lock:
            if self.core.state.generation != step.generation:
                return  # another thread fetched meanwhile: look again
        try:
            log.debug("certauth: fetching signing keys (%s)", step.reason)
            fetched = _http.run_sync(self.core.fetch_flow(step, time.time()), self._http())
            with self._lock:
                self.core.installed(fetched, self._clock())
        except CertauthError as exc:
            with self._lock:
                if not self.core.keep_after(exc, self._clock()):
                    raise

    def _http(self) -> SyncClient:
        if self._client is None:
            self._client = _http.new_sync_client(self._verify, self._timeout)
        return self._client

    def close(self) -> None:
        if self._owns_client and self._client is not None:
            self._client.close()
            self._client = None


class _AsyncKeys:
    """Runs the key core with httpx.AsyncClient; concurrent tasks share one fetch."""

    def __init__(
        self,
        core: _KeyCore,
        *,
        verify: Any,
        timeout: float,
        client: httpx.AsyncClient | None,
        clock: Callable[[], float],
    ) -> None:
        self.core = core
        self._verify = verify
        self._timeout = timeout
        self._client = client
        self._owns_client = client is None
        self._clock = clock
        self._flights: AsyncSingleFlight[None] = AsyncSingleFlight()

    async def key_for(self, parsed: _Parsed) -> tuple[_Key, ...]:
        for _ in range(_MAX_ROUNDS):
            step = self.core.lookup(parsed, self._clock())
            if isinstance(step, tuple):
                return step
            await self._refresh(step)
        raise self.core.gave_up()  # pragma: no cover - the rounds end well before

    async def _refresh(self, step: _Refresh) -> None:
        # As in _SyncKeys; a cancelled leader hands the fetch to a waiting task, and records
        # no attempt (the refetch rate limit is not spent).
        await self._flights.run("keys", lambda: self._fetch(step))

    async def _fetch(self, step: _Refresh) -> None:
        if self.core.state.generation != step.generation:
            return
        try:
            log.debug("certauth: fetching signing keys (%s)", step.reason)
            fetched = await _http.run_async(self.core.fetch_flow(step, time.time()), self._http())
            self.core.installed(fetched, self._clock())
        except CertauthError as exc:
            if not self.core.keep_after(exc, self._clock()):
                raise

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = _http.new_async_client(self._verify, self._timeout)
        return self._client

    async def close(self) -> None:
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None
