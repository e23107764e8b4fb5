"""How :class:`~certauth.cache.RedisTokenCache` reaches Redis: one server or a Redis Cluster,
from a URL or a ready client; Lua scripts run by their SHA-1; writes a replica must hold
before they count (``WAIT``); and a cluster failover ridden out instead of reported.

A Redis Cluster moves a failed primary's hash slots to its replica once the other primaries
agree it is down: after ``cluster-node-timeout`` (15 s by default) and an election of up to
a second or two (cluster specification, "Failure detection" and "Replica election and
promotion": https://redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec/).
Meanwhile commands for those slots fail (connection refused, or ``CLUSTERDOWN`` once the
failure is agreed). Failing over is what a cluster is for, so the cache waits for it: an
operation that fails that way is retried, refreshing the slot map each time (redis-py does
that on a connection error, ``CLUSTERDOWN`` or ``MOVED``), until it succeeds or the outage
has lasted ``failover_timeout`` seconds. The window is one per outage, shared by every thread
of the cache: once it has passed, operations fail at once (the credential goes on without the
store) until one succeeds again, so a cluster that is down for good costs one window, not one
per call.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.exceptions import (
    AskError,
    ClusterDownError,
    NoScriptError,
    RedisClusterException,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.retry import Retry

from certauth._log import Logger
from certauth.cache import REDIS_CLUSTER_SCHEMES, REDIS_SERVER_SCHEMES
from certauth.errors import ConfigurationError, InvalidArgumentError

__all__ = ["CLUSTER_SCHEMES", "URL_SCHEMES", "Link", "Lua"]

log = Logger("certauth")

T = TypeVar("T")

#: URL schemes of one server and of a Redis Cluster (see certauth.cache).
SERVER_SCHEMES = REDIS_SERVER_SCHEMES
CLUSTER_SCHEMES = REDIS_CLUSTER_SCHEMES
URL_SCHEMES = SERVER_SCHEMES + CLUSTER_SCHEMES
_USAGE = (
    "use redis://HOST[:PORT][/DB], rediss://... (TLS), unix:///PATH/TO/SOCKET, or "
    "redis+cluster://HOST:PORT (rediss+cluster://... with TLS) for a Redis Cluster"
)

#: How long a cluster cache waits out a failover when not told: Redis's default
#: ``cluster-node-timeout`` (15 s) plus the replica's election.
DEFAULT_FAILOVER_TIMEOUT = 20.0

#: Retry pauses while a failover runs: from 50 ms, growing to 500 ms (with jitter).
_FIRST_PAUSE = 0.05
_MAX_PAUSE = 0.5


def _is_failover(exc: BaseException) -> bool:
    """Whether ``exc`` is what a cluster says while a primary is being replaced: the node
    does not answer, the cluster is down or the slot unserved (``CLUSTERDOWN``), a key of a
    slot being moved (``TRYAGAIN``, cluster spec "Multi-key operations"), a redirection seen
    outside redis-py's own handling (``MOVED``/``ASK``, e.g. in a pipeline to one node), or no
    node reachable to learn the slot map from (which redis-py raises without a RedisError)."""
    if isinstance(
        exc,
        (
            redis.ConnectionError,
            redis.TimeoutError,
            ClusterDownError,
            TryAgainError,
            AskError,
            SlotNotCoveredError,
        ),
    ):
        return not isinstance(exc, redis.AuthenticationError)
    return isinstance(exc, RedisClusterException) and isinstance(
        exc.__cause__, (redis.ConnectionError, redis.TimeoutError)
    )


class _Outage:
    """The failover window: starts at the first failure of an outage, ends at the next
    success; shared by the cache's threads."""

    def __init__(self, window: float, where: str) -> None:
        self.window = window
        self._where = where
        self._since: float | None = None
        self._guard = threading.Lock()

    def left(self, exc: BaseException) -> float:
        """Seconds of the window left after a failure (``<= 0``: fail now)."""
        with self._guard:
            now = time.monotonic()
            if self._since is None:
                self._since = now
                if self.window > 0:
                    log.warning(
                        "certauth: the token cache's Redis at %s did not answer (%s: %s); "
                        "waiting up to %g s for a failover",
                        self._where,
                        type(exc).__name__,
                        exc,
                        self.window,
                    )
            return self._since + self.window - now

    def ended(self) -> None:
        """An operation succeeded."""
        if self._since is None:  # the common case, without the lock
            return
        with self._guard:
            if self._since is not None and self.window > 0:
                log.warning(
                    "certauth: the token cache's Redis at %s answers again after %.1f s",
                    self._where,
                    time.monotonic() - self._since,
                )
            self._since = None


class Link:
    """The cache's way to Redis: builds the client (a cluster's lazily: redis-py's
    ``RedisCluster`` connects as it is made, and a cache must never fail where it is made),
    runs operations through the failover window, and pipelines writes with ``WAIT``."""

    def __init__(
        self,
        url_or_client: str | redis.Redis | RedisCluster,
        *,
        socket_timeout: float,
        failover_timeout: float | None,
        replicas: int,
    ) -> None:
        self.replicas = replicas
        # WAIT must answer before the socket gives up on the reply: half its timeout.
        self.wait_ms = max(1, int(socket_timeout * 500))
        self._client: redis.Redis | RedisCluster | None = None
        self._build: Callable[[], RedisCluster] | None = None
        self._building = threading.Lock()
        self._short_replicas = False  # whether the last WAIT fell short (logged once)
        if isinstance(url_or_client, str):
            self.where, self.cluster = _describe_url(url_or_client)
            if self.cluster:
                self._build = _cluster_factory(url_or_client, socket_timeout)
            else:
                self._client = redis.Redis.from_url(
                    url_or_client,
                    socket_timeout=socket_timeout,
                    socket_connect_timeout=socket_timeout,
                    # redis-py's default retries with backoff for seconds; a cache must fail
                    # fast (the token endpoint is still there). One immediate retry on a
                    # connection error replaces a pooled connection that died with a
                    # restarted server, so recovery costs no failure; a timeout is not retried
                    # (it would only double).
                    retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
                    decode_responses=False,
                )
            self.owns_client = True
        else:
            self._client = _check_client(url_or_client)
            self.cluster = isinstance(url_or_client, RedisCluster)
            self.where = f"client={url_or_client!r}"
            self.owns_client = False
        if failover_timeout is None:
            failover_timeout = DEFAULT_FAILOVER_TIMEOUT if self.cluster else 0.0
        self.failover_timeout = float(failover_timeout)
        self._outage = _Outage(self.failover_timeout, self.where)

    def client(self) -> redis.Redis | RedisCluster:
        """The client, made on first use for a cluster URL (a failure to reach any node is a
        ``redis.ConnectionError``, tried again at the next operation)."""
        client = self._client
        if client is not None:
            return client
        with self._building:
            if self._client is None:
                assert self._build is not None
                try:
                    self._client = self._build()
                except RedisClusterException as exc:
                    if _is_failover(exc):
                        raise redis.ConnectionError(
                            f"cannot reach the Redis Cluster at {self.where}: {exc.__cause__}"
                        ) from exc
                    raise
            return self._client

    def call(
        self,
        operation: Callable[[redis.Redis | RedisCluster], T],
        *,
        ride_out: bool = True,
        deadline: float | None = None,
    ) -> T:
        """``operation(client)``, retried through a failover while the window lasts (and,
        when given, until the monotonic ``deadline``); ``ride_out=False`` tries once."""
        pause = _FIRST_PAUSE
        while True:
            try:
                result = operation(self.client())
            except Exception as exc:
                # A cluster never reached (a wrong address, all of it down) is not failing
                # over: only one whose slot map was learnt is waited for.
                if not ride_out or self._client is None or not _is_failover(exc):
                    raise
                left = self._outage.left(exc)
                if deadline is not None:
                    left = min(left, deadline - time.monotonic())
                if left <= 0:
                    raise
                time.sleep(min(left, pause * random.uniform(0.5, 1.0)))  # noqa: S311
                pause = min(pause * 1.5, _MAX_PAUSE)
                continue
            self._outage.ended()
            return result

    def replicated(
        self,
        key: str,
        commands: Sequence[Sequence[Any]],
        *,
        scripts: Sequence[Lua] = (),
        deadline: float | None = None,
    ) -> list[Any]:
        """Run ``commands`` (all about ``key``'s slot) then ``WAIT replicas`` on one
        connection to the primary serving ``key``: WAIT counts the replicas that hold every
        write made earlier on the same connection (https://redis.io/docs/latest/commands/wait/),
        so it has to share the connection with the writes. redis-py's cluster client would
        send a keyless WAIT to every primary; this asks the slot's primary alone. Returns the
        commands' replies; a WAIT that falls short is logged, not an error (the write is on
        the primary, and a failover in the meantime may or may not keep it)."""

        def operation(client: redis.Redis | RedisCluster) -> list[Any]:
            try:
                return send(client)
            except Exception as exc:
                if isinstance(client, RedisCluster) and _is_failover(exc):
                    # Outside redis-py's command path nothing relearns the slot map for us
                    # (cluster spec, "MOVED Redirection"): do it before the retry.
                    try:
                        client.nodes_manager.initialize()
                    except Exception as refresh:  # noqa: BLE001 - the retry reports
                        log.debug("certauth: refreshing the cluster's slot map: %s", refresh)
                raise

        def send(client: redis.Redis | RedisCluster) -> list[Any]:
            if isinstance(client, RedisCluster):
                owner = client.get_node_from_key(key)  # type: ignore[no-untyped-call]
                node = client.get_redis_connection(owner)
            else:
                node = client
            try:
                return self._pipeline(node, commands)
            except NoScriptError:
                for script in scripts:  # the node lost its scripts (restarted, or promoted)
                    node.script_load(script.text)
                return self._pipeline(node, commands)

        return self.call(operation, deadline=deadline)

    def _pipeline(self, node: redis.Redis, commands: Sequence[Sequence[Any]]) -> list[Any]:
        pipe = node.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)  # type: ignore[no-untyped-call]
        pipe.wait(self.replicas, self.wait_ms)
        *replies, acknowledged = pipe.execute()
        self._check_replicas(int(acknowledged))
        return replies

    def _check_replicas(self, acknowledged: int) -> None:
        if acknowledged >= self.replicas:
            self._short_replicas = False
            return
        if not self._short_replicas:
            self._short_replicas = True
            log.warning(
                "certauth: a token cache write reached %d of the %d replicas asked for "
                "(replicas=) within %d ms; it is on the primary, but a failover before it "
                "replicates would lose it (logged once until WAIT succeeds again)",
                acknowledged,
                self.replicas,
                self.wait_ms,
            )

    def close(self) -> None:
        """Close the connections of a client this link made."""
        if self.owns_client and self._client is not None:
            self._client.close()


class Lua:
    """One Lua script of the cache, run by its SHA-1 (``EVALSHA``) and loaded where a node
    does not have it (a restarted server, a replica promoted in a failover: scripts are
    not replicated). Called as ``script(keys=[...], args=[...])``."""

    def __init__(self, link: Link, text: str) -> None:
        self.link = link
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()  # noqa: S324 - Redis names scripts so

    def command(self, keys: Sequence[Any], args: Sequence[Any]) -> tuple[Any, ...]:
        """The ``EVALSHA`` command, for :meth:`Link.replicated`."""
        return ("EVALSHA", self.sha, len(keys), *keys, *args)

    def run(
        self, client: redis.Redis | RedisCluster, keys: Sequence[Any], args: Sequence[Any]
    ) -> Any:
        """Run once on ``client`` (a cluster routes it by the keys, which must share a slot)."""
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            client.script_load(self.text)
            return client.evalsha(self.sha, len(keys), *keys, *args)

    def __call__(
        self,
        keys: Sequence[Any],
        args: Sequence[Any],
        *,
        ride_out: bool = True,
        deadline: float | None = None,
    ) -> Any:
        return self.link.call(
            lambda client: self.run(client, keys, args), ride_out=ride_out, deadline=deadline
        )


def _cluster_factory(url: str, socket_timeout: float) -> Callable[[], RedisCluster]:
    scheme, rest = url.split("://", 1)
    plain = f"{scheme.removesuffix('+cluster')}://{rest}"

    def build() -> RedisCluster:
        return RedisCluster.from_url(
            plain,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            # One immediate retry after redis-py refreshed the slot map (on a connection error,
            # CLUSTERDOWN, an unserved slot); the failover window does the waiting.
            retry=Retry(NoBackoff(), 1),
            # The map is learnt from any node; slots lost with a primary are served again
            # once its replica is promoted, and the rest meanwhile.
            require_full_coverage=False,
            decode_responses=False,
        )

    return build


def _check_client(client: Any) -> redis.Redis | RedisCluster:
    if isinstance(client, (redis.Redis, RedisCluster)):
        kwargs = client.get_connection_kwargs()
        if kwargs.get("decode_responses"):
            raise ConfigurationError(
                "RedisTokenCache needs a client with decode_responses=False: entries are "
                "binary (encrypted)"
            )
        return client
    if client.__class__.__module__.startswith("redis.asyncio"):
        raise InvalidArgumentError(
            "RedisTokenCache needs a synchronous redis.Redis or redis.RedisCluster client "
            "(async credentials call the cache from a worker thread); pass a URL or "
            "redis.Redis(...)"
        )
    raise InvalidArgumentError(
        "RedisTokenCache takes a Redis URL (redis://, rediss://, unix://, redis+cluster:// or "
        f"rediss+cluster://), a redis.Redis client or a redis.RedisCluster client, "
        f"not {type(client).__name__}"
    )


def _describe_url(url: str) -> tuple[str, bool]:
    """The URL without user name, password or query (for repr and logs), and whether it
    names a cluster; checks the scheme (and, for a cluster, what redis-py would refuse only
    once it connects)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in URL_SCHEMES:
        # Only the scheme is quoted back: the rest of a URL may hold a password.
        scheme = f"{parts.scheme}://" if parts.scheme else "a URL without a scheme"
        raise InvalidArgumentError(f"the token cache URL has {scheme}, not a Redis one; {_USAGE}")
    # The database: redis-py reads a number from the path (``?db=`` for a socket, or to
    # override it) and quietly takes 0 for anything else, so "/zero" or "/1x" would put the
    # tokens in another database than the one meant.
    path_db = "" if parts.scheme == "unix" else parts.path.strip("/")
    db = urllib.parse.parse_qs(parts.query).get("db", [path_db or "0"])[0]
    if not (db.isascii() and db.isdigit()):
        raise InvalidArgumentError(
            f"the token cache URL names database {db[:40]!r}, not a number; {_USAGE}"
        )
    if parts.scheme == "unix":
        return f"'unix://{parts.path}'", False
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        raise InvalidArgumentError(f"the token cache URL has an invalid port; {_USAGE}") from None
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    cluster = parts.scheme in CLUSTER_SCHEMES
    if cluster:
        # A cluster has one database, 0 (cluster spec, "Implemented subset").
        if int(db) != 0:
            raise InvalidArgumentError(
                "a Redis Cluster has only database 0; drop the database from the token cache "
                f"URL; {_USAGE}"
            )
        # What RedisCluster.from_url will parse, checked now (a ValueError, like redis-py's).
        redis.connection.parse_url(  # type: ignore[no-untyped-call]
            f"{parts.scheme.removesuffix('+cluster')}://{url.split('://', 1)[1]}"
        )
    return f"'{parts.scheme}://{host}{port}{parts.path}'", cluster
