"""``certauth token``'s token cache options: ``--no-cache``, ``--cache URL`` (Redis, or a Redis
Cluster) and ``--cache-namespace``, with their environment variables; the user's file cache
otherwise."""

from __future__ import annotations

from typing import Any

import click

from certauth.cli._common import env_value as _env

ENV_CACHE_URL = "CERTAUTH_CACHE_URL"
ENV_CACHE_NAMESPACE = "CERTAUTH_CACHE_NAMESPACE"


def token_cache(no_cache: bool, cache_url: str | None, namespace: str | None = None) -> Any:
    """The shared token cache: none with --no-cache, Redis for --cache URL (or
    CERTAUTH_CACHE_URL) under ``namespace`` (--cache-namespace, CERTAUTH_CACHE_NAMESPACE), else
    the user's file cache."""
    from certauth.cache import REDIS_CLUSTER_SCHEMES, REDIS_SERVER_SCHEMES, FileTokenCache

    ns_source = _namespace_source(namespace)
    if no_cache and cache_url:
        raise click.UsageError("--cache and --no-cache are exclusive")
    if no_cache and ns_source == "--cache-namespace":
        raise click.UsageError("--cache-namespace and --no-cache are exclusive")
    if no_cache:
        return None  # the flag also wins over CERTAUTH_CACHE_URL and CERTAUTH_CACHE_NAMESPACE
    url = cache_url or _env(ENV_CACHE_URL)
    if not url:
        if ns_source:
            # The file cache has no namespaces: taking the run as uncached-by-Redis would let a
            # forgotten CERTAUTH_CACHE_URL pass unnoticed.
            raise click.UsageError(
                f"{ns_source} names a Redis cache namespace, but no Redis cache is given: "
                f"add --cache redis://HOST:6379/0 (or set {ENV_CACHE_URL})"
            )
        return FileTokenCache()
    source = "--cache" if cache_url else ENV_CACHE_URL
    schemes = REDIS_SERVER_SCHEMES + REDIS_CLUSTER_SCHEMES  # refused without importing redis
    if url.split("://", 1)[0] not in schemes or "://" not in url:
        # Only the scheme is named: the URL may hold a password.
        raise click.UsageError(
            f"{source}: expected a redis://, rediss:// or unix:// URL, e.g. "
            "redis://localhost:6379/0, or redis+cluster://HOST:PORT for a Redis Cluster"
        )
    from certauth.cache import RedisTokenCache
    from certauth.errors import InvalidArgumentError

    if namespace is not None:
        from certauth._redis import check_namespace

        try:
            check_namespace(namespace)
        except InvalidArgumentError as exc:
            raise click.UsageError(f"{ns_source}: {exc}") from None
    try:
        if namespace is None:
            return RedisTokenCache(url)
        return RedisTokenCache(url, namespace=namespace)
    except InvalidArgumentError as exc:
        raise click.UsageError(f"{source}: {exc}") from None
    except ValueError:
        # urllib and redis-py refuse a malformed URL ("[bad", a database that is not a
        # number) with a message that may quote it, password included: name only the option.
        raise click.UsageError(
            f"{source}: not a valid Redis URL; write it as redis://[:PASSWORD@]HOST[:PORT][/DB], "
            "rediss://... (TLS), unix:///PATH/TO/SOCKET or redis+cluster://[:PASSWORD@]HOST:PORT"
        ) from None


def _namespace_source(namespace: str | None) -> str | None:
    """Where ``--cache-namespace``'s value came from, as a message names it (``None``: unset)."""
    if namespace is None:
        return None
    source = click.get_current_context().get_parameter_source("cache_namespace")
    if source is click.core.ParameterSource.ENVIRONMENT:
        return ENV_CACHE_NAMESPACE
    return "--cache-namespace"
