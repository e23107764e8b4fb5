"""The Redis token cache: one token request per fleet, whatever the number of replicas.

Past one machine certauth uses a distributed store that already exists rather than inventing
one: Redis, or anything speaking its protocol (Valkey, KeyDB, Azure Cache for Redis). The store
only ever sees opaque entries: the credential seals them with
:class:`~certauth.cache.EntryCipher` (a key derived from its private key) before they leave the
process.

Layout, for a cache key ``K`` (``H`` = SHA-256 of ``K``, so no scope or client id appears in
Redis): ``{namespace}:{H}:token`` holds the entry, with an expiry (``PX``) equal to the token's
remaining life; ``{namespace}:{H}:lock`` is the fetch lock. The braces are a Redis Cluster hash
tag: both keys of one token live in the same slot, as the Lua scripts below need (a script's
keys must all hash to one slot: https://redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec/,
"Hash tags"). How the cache reaches one server or a cluster, and rides out a failover, is
:mod:`certauth._redis_client`.

This module imports ``redis``; :mod:`certauth.cache` re-exports :class:`RedisTokenCache` lazily
so that the file cache never pays for (or needs) that import.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import secrets
import threading
import time
from collections.abc import Iterator

from certauth._log import Logger
from certauth.cache import MAX_ENTRY_BYTES
from certauth.errors import ConfigurationError, InvalidArgumentError

__all__ = ["RedisTokenCache", "check_namespace"]

log = Logger("certauth")


class MissingRedisError(ConfigurationError, ImportError):
    """The optional ``redis`` package is not installed (an ``ImportError`` too, so the usual
    ``except ImportError`` around optional features keeps working)."""


try:
    import redis
except ImportError:
    # The distribution is named certauth-toolkit: "certauth" on PyPI is another project.
    raise MissingRedisError(
        "RedisTokenCache needs the redis package, which is not installed: "
        "pip install 'certauth-toolkit[redis]' (or pip install redis; "
        "from a checkout: pip install '.[redis]')"
    ) from None

from certauth._redis_client import Link, Lua  # noqa: E402 - needs redis

# One round trip per attempt: take the lock if it is free, unless an entry different from the
# one seen when waiting began has appeared (the holder finished: re-read it instead of queueing
# for a lock nobody needs any more). Comparing digests (not mere presence) matters for
# refresh-ahead: the old, still valid entry is there all along and must not release waiters.
# An entry over the size cap is not hashed (it is corrupt; the holder replaces it). A lock
# that already holds this caller's owner token is its own: an attempt retried through a
# failover whose first run took the lock but whose reply was lost. A busy lock without an
# expiry (PTTL -1: set by hand, or by a client that crashed between SET and PEXPIRE) would
# hold every fetch for the whole wait: it gets the lock lifetime, as a dead holder's lock has,
# so it ends within lock_timeout.
# KEYS: lock, entry. ARGV: owner token, lock PX, digest seen before ("*": not yet known), cap.
# Returns {status, digest}: 1 lock taken, 0 lock busy, 2 a new entry appeared.
_ACQUIRE = """
local digest = ''
local size = redis.call('STRLEN', KEYS[2])
if size > tonumber(ARGV[4]) then
    digest = 'oversized'
elseif size > 0 then
    digest = redis.sha1hex(redis.call('GET', KEYS[2]))
end
if ARGV[3] ~= '*' and digest ~= '' and digest ~= ARGV[3] then
    return {2, digest}
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    return {1, digest}
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return {1, digest}
end
if redis.call('PTTL', KEYS[1]) == -1 then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return {0, digest}
"""

# The entry if it is at most ARGV[1] bytes; its size (a number) when larger, so a huge value is
# never sent whole. KEYS: entry.
_GET_CAPPED = """
local size = redis.call('STRLEN', KEYS[1])
if size > tonumber(ARGV[1]) then
    return size
end
return redis.call('GET', KEYS[1])
"""

# Only the owner may release or extend: after an expiry the lock may belong to someone else.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""

_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_LOCK_TAKEN, _LOCK_BUSY, _ENTRY_APPEARED = 1, 0, 2

#: Waiters poll the lock starting this often, backing off to _MAX_POLL (with jitter).
_FIRST_POLL = 0.01
_MAX_POLL = 0.1


def check_namespace(namespace: object) -> str:
    """``namespace`` if it can prefix key names, else :class:`InvalidArgumentError` (the CLI's
    ``--cache-namespace`` is checked here too). Braces are refused: in a key name they are a
    Redis Cluster hash tag, which must be the token's hash alone (see the module docstring)."""
    if not isinstance(namespace, str) or not namespace or any(c in namespace for c in "{}"):
        shown = repr(namespace)
        if len(shown) > 80:  # a runaway value is not echoed whole
            length = len(namespace) if isinstance(namespace, str) else len(shown)
            shown = f"{shown[:60]}... ({length} characters)"
        raise InvalidArgumentError(
            f"namespace must be a non-empty string without braces, got {shown}"
        )
    return namespace


class RedisTokenCache:
    """A token cache shared by every process and machine that reaches one Redis server or
    one Redis Cluster.

    ``url_or_client`` is a ``redis://``, ``rediss://`` (TLS) or ``unix://`` URL; a
    ``redis+cluster://HOST:PORT`` or ``rediss+cluster://HOST:PORT`` URL naming any node of a
    Redis Cluster (the others are discovered); or a ready ``redis.Redis`` or
    ``redis.RedisCluster`` client (used as is: give it short timeouts and
    ``decode_responses=False``). Entries live under ``namespace`` with an expiry equal to the
    token's remaining life.

    ``lock(key)`` is distributed single flight: ``SET NX PX`` with a random owner token, kept
    alive while its holder lives and released only by its owner. A holder that dies stops
    extending it, so it expires within ``lock_timeout`` seconds and another replica takes over.
    Waiters poll (with backoff) until the lock is free or a new entry appears, and give up after
    ``wait_timeout`` seconds (the caller then fetches without the lock).

    One server down or slow makes operations fail within ``socket_timeout`` seconds (no retry
    loop beyond one immediate reconnect): the credential then goes on without the store and
    uses it again as soon as Redis answers. On a cluster, a primary that stops answering is
    taken for a failover in progress: operations are retried (the slot map relearnt) until its
    replica serves them, for at most ``failover_timeout`` seconds per outage (default 20 s
    on a cluster, 0 on one server), and only then fail. ``replicas=N`` makes the lock and entry
    writes wait (``WAIT``, at most half of ``socket_timeout``) until N replicas hold them, so
    a failover right after them does not lose them.

    Example::

        from certauth import CertificateCredential, RedisTokenCache

        cache = RedisTokenCache("rediss://:secret@cache.example:6380/0")
        credential = CertificateCredential(tenant, client_id, "app.pem", cache=cache)
    """

    def __init__(
        self,
        url_or_client: str | redis.Redis | redis.RedisCluster,
        *,
        namespace: str = "certauth",
        lock_timeout: float = 10.0,
        wait_timeout: float = 120.0,
        socket_timeout: float = 1.0,
        failover_timeout: float | None = None,
        replicas: int = 0,
    ) -> None:
        for name, value in (
            ("lock_timeout", lock_timeout),
            ("wait_timeout", wait_timeout),
            ("socket_timeout", socket_timeout),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise InvalidArgumentError(f"{name} must be seconds above 0, got {value!r}")
        if failover_timeout is not None and (
            isinstance(failover_timeout, bool)
            or not isinstance(failover_timeout, (int, float))
            or failover_timeout < 0
        ):
            raise InvalidArgumentError(
                f"failover_timeout must be seconds (0 or more) or None, got {failover_timeout!r}"
            )
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            raise InvalidArgumentError(f"replicas must be a count (0 or more), got {replicas!r}")
        self.namespace = check_namespace(namespace)
        self.lock_timeout = float(lock_timeout)
        self.wait_timeout = float(wait_timeout)
        self.socket_timeout = float(socket_timeout)
        self.replicas = replicas
        self._lock_ms = max(1, int(self.lock_timeout * 1000))
        self._link = Link(
            url_or_client,
            socket_timeout=self.socket_timeout,
            failover_timeout=failover_timeout,
            replicas=replicas,
        )
        #: Seconds a failing cluster is waited for (see the class docstring).
        self.failover_timeout = self._link.failover_timeout
        self._acquire = Lua(self._link, _ACQUIRE)
        self._get_capped = Lua(self._link, _GET_CAPPED)
        self._release = Lua(self._link, _RELEASE)
        self._extend = Lua(self._link, _EXTEND)
        self._keeper = _Keeper(self)

    def __repr__(self) -> str:
        # The URL's password never shows: the credential logs this repr when the store fails.
        return f"RedisTokenCache({self._link.where}, namespace={self.namespace!r})"

    def _key(self, key: str, kind: str) -> str:
        # Hashing keeps scopes, client ids and endpoints out of key names; the braces make
        # the digest the key's hash tag, so a token's entry and lock share a cluster slot.
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
        return f"{self.namespace}:{{{digest}}}:{kind}"

    def get(self, key: str) -> bytes | None:
        """The entry for ``key``, or ``None`` (missing, or larger than
        :data:`~certauth.cache.MAX_ENTRY_BYTES`: corrupt, never read whole, replaced by the
        next fetch)."""
        name = self._key(key, "token")
        value = self._get_capped(keys=[name], args=[MAX_ENTRY_BYTES])
        if isinstance(value, int):
            log.warning(
                "certauth: token cache entry %s holds %d bytes, over the %d an entry can be; "
                "ignored (the next token replaces it)",
                name,
                value,
                MAX_ENTRY_BYTES,
            )
            return None
        return value if isinstance(value, bytes) else None

    def set(self, key: str, value: bytes, expires_on: float) -> None:
        """Store the entry until ``expires_on`` (epoch seconds): ``PX`` = its remaining life,
        so Redis drops it when the token dies. A token already expired is not stored."""
        name = self._key(key, "token")
        remaining_ms = int((expires_on - time.time()) * 1000)
        if remaining_ms <= 0:
            self._link.call(lambda client: client.delete(name))
        elif self.replicas:
            self._link.replicated(name, [("SET", name, value, "PX", remaining_ms)])
        else:
            self._link.call(lambda client: client.set(name, value, px=remaining_ms))

    def delete(self, key: str) -> None:
        """Remove the entry for ``key``."""
        name = self._key(key, "token")
        self._link.call(lambda client: client.delete(name))

    @contextlib.contextmanager
    def lock(self, key: str, *, timeout: float | None = None) -> Iterator[bool]:
        """Hold the fleet-wide fetch lock for ``key``.

        Yields ``True`` when this caller holds the lock (it should fetch and store), ``False``
        when it stopped waiting without it: another caller stored a new entry (re-read it) or
        the wait ended (``wait_timeout``, or the caller's ``timeout`` if shorter). Redis errors
        propagate (the credential then goes on without the store).
        """
        lock_name, entry_name = self._key(key, "lock"), self._key(key, "token")
        owner = secrets.token_hex(16)  # the fencing token: only its owner releases the lock
        wait = self.wait_timeout if timeout is None else max(0.0, min(timeout, self.wait_timeout))
        held = self._wait_for_lock(lock_name, entry_name, owner, wait)
        if held:
            self._keeper.hold(lock_name, owner)
        try:
            yield held
        finally:
            if held:
                self._keeper.drop(lock_name, owner)
                self._release_lock(lock_name, owner)

    def _release_lock(self, lock_name: str, owner: str) -> None:
        attempts = 0

        def release(client: redis.Redis | redis.RedisCluster) -> object:
            nonlocal attempts
            attempts += 1
            return self._release.run(client, [lock_name], [owner])

        # A release retried through a failover may find its first attempt already deleted it.
        if not self._link.call(release) and attempts == 1:
            log.warning(
                "certauth: the token cache lock expired while held (Redis restarted or "
                "did not answer for %.1f s); another replica may have fetched too",
                self.lock_timeout,
            )

    def _wait_for_lock(self, lock_name: str, entry_name: str, owner: str, wait: float) -> bool:
        deadline = time.monotonic() + wait
        seen = "*"
        pause = _FIRST_POLL
        while True:
            status, digest = self._try_lock(lock_name, entry_name, owner, seen, deadline)
            if status == _LOCK_TAKEN:
                return True
            if status == _ENTRY_APPEARED:
                return False
            if seen == "*":
                seen = digest.decode() if isinstance(digest, bytes) else str(digest)
            left = deadline - time.monotonic()
            if left <= 0:
                log.warning(
                    "certauth: waited %.1f s for another replica's token cache lock; "
                    "fetching without it",
                    wait,
                )
                return False
            # Jitter keeps a fleet's waiters from polling in lock step.
            time.sleep(min(left, pause * random.uniform(0.5, 1.0)))  # noqa: S311 - not security
            pause = min(pause * 1.5, _MAX_POLL)

    def _try_lock(
        self, lock_name: str, entry_name: str, owner: str, seen: str, deadline: float
    ) -> tuple[int, object]:
        """One attempt of :data:`_ACQUIRE` (its reply), ridden through a failover no longer
        than the caller waits; with ``replicas``, pipelined with WAIT so a lock taken is held
        by the replicas before its holder fetches."""
        keys, args = [lock_name, entry_name], [owner, self._lock_ms, seen, MAX_ENTRY_BYTES]
        if self.replicas:
            command = self._acquire.command(keys, args)
            (reply,) = self._link.replicated(
                lock_name, [command], scripts=[self._acquire], deadline=deadline
            )
        else:
            reply = self._acquire(keys=keys, args=args, deadline=deadline)
        status, digest = reply
        return int(status), digest

    def close(self) -> None:
        """Close the connections (when this cache created the client from a URL)."""
        self._link.close()


class _Keeper:
    """Extends the locks this cache holds, every third of ``lock_timeout``, while their holder
    lives: a slow fetch (retries, a long Retry-After) keeps the fleet waiting instead of letting
    a second replica fetch, while a holder that dies stops extending, so its lock expires.

    One thread per cache serves all its locks; it starts with the first lock held and ends once
    none is, so an idle cache runs no thread. A lock is extended for at most ``wait_timeout``:
    waiters stop waiting then anyway, and a lock leaked by a caller that never exits its block
    must not live for ever.
    """

    def __init__(self, cache: RedisTokenCache) -> None:
        self._cache = cache
        self._interval = cache.lock_timeout / 3
        self._held: dict[tuple[str, str], float] = {}  # (lock name, owner) -> extend until
        self._guard = threading.Lock()
        self._thread: threading.Thread | None = None

    def hold(self, lock_name: str, owner: str) -> None:
        """Keep extending ``lock_name`` while ``owner`` holds it."""
        with self._guard:
            self._held[(lock_name, owner)] = time.monotonic() + self._cache.wait_timeout
            # After a fork the parent's thread does not exist in the child: is_alive() says so.
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="certauth-redis-lock-keeper", daemon=True
                )
                self._thread.start()

    def drop(self, lock_name: str, owner: str) -> None:
        """Stop extending (the holder is about to release). An extension already in flight is
        harmless: it only ever extends a lock that ``owner`` still holds."""
        with self._guard:
            self._held.pop((lock_name, owner), None)

    def _run(self) -> None:
        while True:
            time.sleep(self._interval)
            with self._guard:
                now = time.monotonic()
                for held, until in list(self._held.items()):
                    if now >= until:
                        del self._held[held]
                if not self._held:
                    self._thread = None  # under the guard: hold() starts a new one if needed
                    return
                due = list(self._held)
            for lock_name, owner in due:
                try:
                    # Tried once, not ridden through a failover: the next round (a third of
                    # the lock's life later) tries again.
                    still_ours = self._cache._extend(
                        keys=[lock_name], args=[owner, self._cache._lock_ms], ride_out=False
                    )
                except Exception as exc:  # noqa: BLE001 - the keeper thread must not die
                    # The next round may succeed; if none does, the lock simply expires.
                    log.debug("certauth: extending a token cache lock failed: %s", exc)
                    continue
                if not still_ours:
                    self.drop(lock_name, owner)
