"""The public verifiers: :class:`TokenVerifier` (threads), :class:`AsyncTokenVerifier`
(asyncio) and :func:`verify_access_token` (one call, keys shared per process).

Each is a claims policy (:mod:`certauth.verify.claims`), a key source
(:mod:`certauth.verify.keysource`) and the ``cnf`` binding rules
(:mod:`certauth.verify.binding`, with a DPoP replay cache); they add the public arguments and
nothing else.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from certauth import _http
from certauth._httpx import httpx
from certauth.dpop import JtiCache
from certauth.errors import InvalidArgumentError
from certauth.protocol import RetryPolicy
from certauth.verify.binding import ClientCertificate, _Presented
from certauth.verify.claims import _as_epoch, _Policy
from certauth.verify.jwks import KeySet
from certauth.verify.jwt import DEFAULT_ALGORITHMS
from certauth.verify.keysource import (
    DEFAULT_KEYS_MAX_AGE,
    DEFAULT_REFETCH_INTERVAL,
    _AsyncKeys,
    _KeyCore,
    _SyncKeys,
)


class _VerifierBase:
    """The constructor both verifiers share (written once); they differ in how they wait."""

    _keys: _SyncKeys | _AsyncKeys

    def __init__(
        self,
        *,
        issuer: str | None = None,
        jwks_uri: str | None = None,
        jwks: Mapping[str, Any] | KeySet | None = None,
        audience: str | Iterable[str],
        required_scopes: str | Iterable[str] = (),
        required_roles: str | Iterable[str] = (),
        leeway: float = 60,
        algorithms: str | Iterable[str] = DEFAULT_ALGORITHMS,
        refetch_interval: float = DEFAULT_REFETCH_INTERVAL,
        keys_max_age: float = DEFAULT_KEYS_MAX_AGE,
        verify: Any = None,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        client: httpx.Client | httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
        dpop_jti_cache: JtiCache | None = None,
    ) -> None:
        #: The DPoP proofs already seen (RFC 9449 section 11.1), shared by every verification.
        self._dpop_jti = _jti_cache(dpop_jti_cache)
        self._policy = _Policy.build(
            issuer=issuer,
            audience=audience,
            required_scopes=required_scopes,
            required_roles=required_roles,
            leeway=leeway,
            algorithms=algorithms,
        )
        self._core = _KeyCore(
            issuer=self._policy.issuer,
            jwks_uri=jwks_uri,
            jwks=jwks,
            refetch_interval=refetch_interval,
            keys_max_age=keys_max_age,
            retry=retry,
        )
        if isinstance(self, AsyncTokenVerifier):
            self._keys = _AsyncKeys(
                self._core,
                verify=verify,
                timeout=timeout,
                client=_http.given_client(client, httpx.AsyncClient),
                clock=clock,
            )
        else:
            self._keys = _SyncKeys(
                self._core,
                verify=verify,
                timeout=timeout,
                client=_http.given_client(client, httpx.Client),
                clock=clock,
            )

    @property
    def issuer(self) -> str | None:
        """The issuer tokens must name (``None``: not checked beyond the keys' own issuer)."""
        return self._policy.issuer

    @property
    def audiences(self) -> tuple[str, ...]:
        """The accepted audiences."""
        return self._policy.audiences

    @property
    def jwks_uri(self) -> str | None:
        """Where the keys come from (known after discovery when only ``issuer`` was given)."""
        return self._core.state.jwks_uri

    @property
    def keys(self) -> KeySet | None:
        """The keys in memory (``None`` before the first fetch)."""
        return self._core.state.keys


class TokenVerifier(_VerifierBase):
    """Verifies access tokens for one API; keeps the issuer's keys in memory.

    ``TokenVerifier(issuer="https://login.microsoftonline.com/TENANT/v2.0",
    audience=("CLIENT_ID", "api://billing"))`` then ``verifier.verify(token)`` in every
    request. Keys are found through the issuer's discovery document (or taken from
    ``jwks_uri``, or from a ``jwks`` document for offline use) and fetched once; a token whose
    ``kid`` is unknown triggers one refetch, at most every ``refetch_interval`` seconds, so a
    flood of forged kids cannot hammer the issuer; threads that need keys at the same time
    share one fetch. Keys older than ``keys_max_age`` are refetched (and kept if that fails).

    ``issuer`` may be a template with ``{tenantid}`` (multi-tenant apps: the token's ``tid``
    fills it in). With ``jwks_uri`` and no ``issuer``, ``iss`` is checked only where the key
    set names an issuer per key (Entra v2): pass ``issuer`` too whenever you can.
    ``verify`` is a CA file or ``ssl.SSLContext`` for the https fetches, ``client`` an
    ``httpx.Client`` to use, ``clock`` the monotonic clock behind the rate limit (for tests).
    ``dpop_jti_cache`` is the :class:`~certauth.dpop.JtiCache` that refuses replayed DPoP
    proofs (default: the verifier's own); share one between verifiers of the same API.
    """

    _keys: _SyncKeys

    def verify(
        self,
        token: str,
        *,
        now: float | dt.datetime | None = None,
        required_scopes: str | Iterable[str] = (),
        required_roles: str | Iterable[str] = (),
        client_certificate: ClientCertificate | None = None,
        forwarded_client_cert: str | None = None,
        dpop_proof: str | Sequence[str] | None = None,
        htm: str | None = None,
        htu: str | None = None,
        dpop_nonce: str | None = None,
        scheme: str | None = None,
    ) -> dict[str, Any]:
        """The token's claims if it is valid; raises :class:`TokenValidationError` otherwise.

        ``required_scopes`` / ``required_roles`` add to the verifier's own (all must be held).
        ``now`` (epoch seconds or an aware datetime) defaults to the current time, for the
        token and for a DPoP proof's ``iat``. :class:`TransportError` means the keys could not
        be fetched.

        Sender-constrained tokens (checked after everything else passed; see
        :mod:`certauth.verify.binding`): a token whose ``cnf`` names a certificate
        (``x5t#S256``, RFC 8705) needs ``client_certificate`` (the one the TLS layer saw: DER
        or PEM bytes, PEM str, an ``x509.Certificate`` or a :class:`~certauth.Certificate`) or,
        behind a trusted proxy only, ``forwarded_client_cert`` (Envoy's
        ``X-Forwarded-Client-Cert`` value, one element). A DPoP-bound token (``cnf.jkt``,
        RFC 9449) needs ``dpop_proof`` (the ``DPoP`` header) and the request's ``htm`` (method)
        and ``htu`` (URL), and ``dpop_nonce`` when the API requires its nonce in proofs.
        ``scheme`` is the ``Authorization`` header's scheme: a DPoP-bound token sent as
        ``Bearer`` is refused, and so is an unbound one sent as ``DPoP``.
        """
        policy = self._policy.requiring(required_scopes, required_roles)
        presented = _Presented.build(
            client_certificate=client_certificate,
            forwarded_client_cert=forwarded_client_cert,
            dpop_proof=dpop_proof,
            htm=htm,
            htu=htu,
            dpop_nonce=dpop_nonce,
            scheme=scheme,
        )
        at = _as_epoch(now)
        parsed = policy.parse(token)
        keys = self._keys.key_for(parsed)
        claims = policy.finish(parsed, keys, at)
        presented.check(token, claims, now=at, seen_jti=self._dpop_jti)
        return claims

    def close(self) -> None:
        """Close the HTTP client (when the verifier created it)."""
        self._keys.close()

    def __enter__(self) -> TokenVerifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TokenVerifier(issuer={self.issuer!r}, audience={list(self.audiences)!r})"


class AsyncTokenVerifier(_VerifierBase):
    """The asyncio twin of :class:`TokenVerifier` (same arguments; ``client`` is an
    ``httpx.AsyncClient``); ``await verifier.verify(token)``. Tasks share one fetch."""

    _keys: _AsyncKeys

    async def verify(
        self,
        token: str,
        *,
        now: float | dt.datetime | None = None,
        required_scopes: str | Iterable[str] = (),
        required_roles: str | Iterable[str] = (),
        client_certificate: ClientCertificate | None = None,
        forwarded_client_cert: str | None = None,
        dpop_proof: str | Sequence[str] | None = None,
        htm: str | None = None,
        htu: str | None = None,
        dpop_nonce: str | None = None,
        scheme: str | None = None,
    ) -> dict[str, Any]:
        """The token's claims if it is valid; see :meth:`TokenVerifier.verify`."""
        policy = self._policy.requiring(required_scopes, required_roles)
        presented = _Presented.build(
            client_certificate=client_certificate,
            forwarded_client_cert=forwarded_client_cert,
            dpop_proof=dpop_proof,
            htm=htm,
            htu=htu,
            dpop_nonce=dpop_nonce,
            scheme=scheme,
        )
        at = _as_epoch(now)
        parsed = policy.parse(token)
        keys = await self._keys.key_for(parsed)
        claims = policy.finish(parsed, keys, at)
        presented.check(token, claims, now=at, seen_jti=self._dpop_jti)
        return claims

    async def close(self) -> None:
        """Close the HTTP client (when the verifier created it)."""
        await self._keys.close()

    async def __aenter__(self) -> AsyncTokenVerifier:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncTokenVerifier(issuer={self.issuer!r}, audience={list(self.audiences)!r})"


def _jti_cache(given: JtiCache | None) -> JtiCache:
    if given is None:
        return JtiCache()
    if not isinstance(given, JtiCache):
        raise InvalidArgumentError(
            f"dpop_jti_cache= takes a certauth.dpop.JtiCache, not {type(given).__name__}"
        )
    return given


class _SharedSource(NamedTuple):
    """One of verify_access_token's key sources, with the DPoP replay cache of its tokens."""

    keys: _SyncKeys
    dpop_jti: JtiCache


#: verify_access_token's key sources, shared per (issuer, jwks_uri, CA file) so that calling it
#: on every request fetches keys once per process, with the same rate limit as a TokenVerifier.
_shared: dict[
    tuple[str | None, str | None, str | bool | None, float, RetryPolicy | None], _SharedSource
] = {}
_shared_lock = threading.Lock()
_SHARED_MAX = 32
#: The DPoP replay cache of verify_access_token's offline calls (``jwks=``), which have no
#: shared key source.
_offline_dpop_jti = JtiCache()


def _shared_keys(
    issuer: str | None,
    jwks_uri: str | None,
    verify: Any,
    timeout: float,
    retry: RetryPolicy | None = None,
) -> _SharedSource:
    # Trust is part of the key: keys fetched under one CA must not serve a caller with another.
    trust = verify if verify is None or isinstance(verify, str | bool) else f"id:{id(verify)}"
    cache_key = (issuer, jwks_uri, trust, timeout, retry)
    with _shared_lock:
        source = _shared.get(cache_key)
        if source is None:
            core = _KeyCore(
                issuer=issuer,
                jwks_uri=jwks_uri,
                jwks=None,
                refetch_interval=DEFAULT_REFETCH_INTERVAL,
                keys_max_age=DEFAULT_KEYS_MAX_AGE,
                retry=retry,
            )
            keys = _SyncKeys(
                core, verify=verify, timeout=timeout, client=None, clock=time.monotonic
            )
            if len(_shared) >= _SHARED_MAX:
                # Dropped, not closed: another thread may be fetching with it right now.
                _shared.pop(next(iter(_shared)))
            source = _shared[cache_key] = _SharedSource(keys, JtiCache())
    return source


def verify_access_token(
    token: str,
    *,
    issuer: str | None = None,
    jwks_uri: str | None = None,
    jwks: Mapping[str, Any] | KeySet | None = None,
    audience: str | Iterable[str],
    required_scopes: str | Iterable[str] = (),
    required_roles: str | Iterable[str] = (),
    leeway: float = 60,
    algorithms: str | Iterable[str] = DEFAULT_ALGORITHMS,
    now: float | dt.datetime | None = None,
    verify: Any = None,
    timeout: float = 10.0,
    retry: RetryPolicy | None = None,
    client_certificate: ClientCertificate | None = None,
    forwarded_client_cert: str | None = None,
    dpop_proof: str | Sequence[str] | None = None,
    htm: str | None = None,
    htu: str | None = None,
    dpop_nonce: str | None = None,
    scheme: str | None = None,
    dpop_jti_cache: JtiCache | None = None,
) -> dict[str, Any]:
    """Verify an access token; return its claims or raise :class:`TokenValidationError`.

    The checks, in order (``TokenValidationError.check``): ``format``, ``algorithm`` (never
    ``none`` or HMAC; the key must fit the alg), ``kid``, ``signature``, ``issuer``,
    ``audience`` (``audience`` may list the application id and the App ID URI), ``expired``,
    ``not_yet_valid`` (both with ``leeway`` seconds of clock skew), ``scope`` (every one of
    ``required_scopes`` in ``scp``/``scope``), ``role`` (every one of ``required_roles`` in
    ``roles``); then, for a sender-constrained token, its ``cnf`` binding: ``cnf``,
    ``dpop_scheme``, ``dpop_unbound``, ``cnf_x5t#S256``, ``dpop_header``, the
    :func:`~certauth.dpop.check_proof` checks (``dpop_*``), ``cnf_jkt``. The binding arguments
    (``client_certificate``, ``forwarded_client_cert``, ``dpop_proof``, ``htm``, ``htu``,
    ``dpop_nonce``, ``scheme``) are :meth:`TokenVerifier.verify`'s; DPoP proofs already seen
    are refused through ``dpop_jti_cache`` (default: one per shared key source, and one for
    every offline call).

    Keys: ``issuer`` alone (found through OIDC discovery), ``jwks_uri`` (with or without
    ``issuer``; B2C needs both) or a ``jwks`` document (offline). Keys fetched from the network
    are kept in memory for the whole process and shared by every call with the same source
    (see :class:`TokenVerifier` for the refetch rules). :class:`TransportError` means they could
    not be fetched. ``verify``: a CA file or ``ssl.SSLContext`` for https; ``timeout``: seconds
    per fetch attempt; ``retry``: a :class:`~certauth.protocol.RetryPolicy` (its
    ``total_timeout`` bounds a whole fetch, retries included).
    """
    policy = _Policy.build(
        issuer=issuer,
        audience=audience,
        required_scopes=required_scopes,
        required_roles=required_roles,
        leeway=leeway,
        algorithms=algorithms,
    )
    presented = _Presented.build(
        client_certificate=client_certificate,
        forwarded_client_cert=forwarded_client_cert,
        dpop_proof=dpop_proof,
        htm=htm,
        htu=htu,
        dpop_nonce=dpop_nonce,
        scheme=scheme,
    )
    given_jti = None if dpop_jti_cache is None else _jti_cache(dpop_jti_cache)
    at = _as_epoch(now)
    if jwks is not None:
        # Offline: a throwaway key core over the given keys (it never fetches).
        static = _KeyCore(
            issuer=policy.issuer,
            jwks_uri=jwks_uri,
            jwks=jwks,
            refetch_interval=DEFAULT_REFETCH_INTERVAL,
            keys_max_age=DEFAULT_KEYS_MAX_AGE,
            retry=None,
        )
        parsed = policy.parse(token)
        step = static.lookup(parsed, 0.0)
        assert isinstance(step, tuple)  # a static core raises instead of asking to fetch
        keys = step
        seen_jti = _offline_dpop_jti
    else:
        source = _shared_keys(policy.issuer, jwks_uri, verify, timeout, retry)
        parsed = policy.parse(token)
        keys = source.keys.key_for(parsed)
        seen_jti = source.dpop_jti
    claims = policy.finish(parsed, keys, at)
    presented.check(token, claims, now=at, seen_jti=seen_jti if given_jti is None else given_jti)
    return claims
