"""Token caches that outlive one credential object: the cache protocol, the encrypted entry
format, and the file cache that CLI invocations (and opted-in services) share.

Entries are encrypted with AES-256-GCM under a key derived (HKDF-SHA256) from the client's own
private key (or client secret), so whoever can read the cache but not the key learns nothing,
and an entry written for another certificate simply does not decrypt: it is ignored and
replaced, never a crash.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from certauth._files import open_regular_file, write_private_file
from certauth.errors import ConfigurationError
from certauth.protocol import Token

#: URL schemes ``RedisTokenCache`` takes: one server (TCP, TLS, a Unix socket) and a Redis
#: Cluster (TCP, TLS): ``redis+cluster://HOST:PORT`` is what ``RedisCluster.from_url(
#: "redis://HOST:PORT")`` takes, marked as a cluster (it speaks the same protocol; only the
#: client differs). Here, not in the Redis modules, so that a wrong scheme is refused without
#: importing redis.
REDIS_SERVER_SCHEMES = ("redis", "rediss", "unix")
REDIS_CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")

__all__ = [
    "MAX_ENTRY_BYTES",
    "EntryCipher",
    "FileTokenCache",
    "TokenCache",
    "default_cache_dir",
    "lock_takes_timeout",
]


_FORMAT = b"certauth-cache-v1"
_NONCE_BYTES = 12
#: An entry is a few KiB (an access token and its response fields, sealed); a stored value
#: larger than this is never read whole: it is treated as corrupt (ignored, then replaced).
MAX_ENTRY_BYTES = 64 * 1024
#: How long ``FileTokenCache.lock`` waits for another process's lock when the caller gives no
#: ``timeout``.
DEFAULT_LOCK_WAIT = 120.0


@runtime_checkable
class TokenCache(Protocol):
    """What a shared token store provides. Values are opaque encrypted bytes.

    ``lock`` serialises token fetches for one key across processes (or machines), so that
    callers starting together cause one token request: the holder fetches and stores, the
    others then find the entry. A ``lock`` that accepts the ``timeout`` keyword waits at most
    that many seconds for another holder (then goes on without the lock); credentials pass
    it only to stores whose ``lock`` accepts it (:func:`lock_takes_timeout`), so stores
    written before it existed keep working.
    """

    def get(self, key: str) -> bytes | None:
        """The stored value for ``key``, or ``None``."""
        ...

    def set(self, key: str, value: bytes, expires_on: float) -> None:
        """Store ``value`` until ``expires_on`` (epoch seconds)."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key`` if present."""
        ...

    def lock(self, key: str) -> contextlib.AbstractContextManager[object]:
        """A lock held while one caller fetches the token for ``key``.

        Optionally ``lock(key, *, timeout: float | None = None)``: wait at most ``timeout``
        seconds for it (``None``: the store's own limit).
        """
        ...


def lock_takes_timeout(store: TokenCache) -> bool:
    """Whether ``store.lock`` accepts the ``timeout`` keyword (by its signature, so call this
    once per store, not per lock). Stores written before the keyword existed do not."""
    import inspect  # here: ~3 ms of imports that a token read from the cache does not need

    try:
        parameters = inspect.signature(store.lock).parameters
    except (TypeError, ValueError):  # a builtin or C method without a signature
        return False
    timeout = parameters.get("timeout")
    if timeout is not None:
        return timeout.kind in (timeout.KEYWORD_ONLY, timeout.POSITIONAL_OR_KEYWORD)
    return any(p.kind is p.VAR_KEYWORD for p in parameters.values())


class EntryCipher:
    """Seals and opens cache entries with a key only the credential's owner can derive."""

    def __init__(self, secret_material: bytes) -> None:
        key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=_FORMAT, info=b"token cache key"
        ).derive(secret_material)
        self._aead = AESGCM(key)
        # A public, stable name for the key (not the key): tells entries of different keys apart.
        self.key_id = hashlib.sha256(b"key-id" + key).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"EntryCipher(key_id={self.key_id!r})"

    @classmethod
    def from_private_key(cls, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> EntryCipher:
        """Derive from the private key itself (its DER encoding is secret and deterministic)."""
        der = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return cls(der)

    @classmethod
    def from_secret(cls, secret: str) -> EntryCipher:
        """Derive from a client secret."""
        return cls(b"client-secret:" + secret.encode("utf-8"))

    def seal(self, name: str, token: Token) -> bytes:
        """Encrypt ``token``; ``name`` (the cache key) is bound as associated data."""
        plain = json.dumps(
            {
                "access_token": token.access_token,
                "expires_on": token.expires_on,
                "token_type": token.token_type,
                "expires_in": token.expires_in,
                "refresh_on": token.refresh_on,
                "extra": dict(token.extra),
            }
        ).encode("utf-8")
        nonce = os.urandom(_NONCE_BYTES)
        return _FORMAT + b":" + nonce + self._aead.encrypt(nonce, plain, name.encode())

    def open(self, name: str, blob: bytes) -> Token | None:
        """Decrypt an entry; anything corrupt, foreign or malformed is ``None``."""
        prefix = _FORMAT + b":"
        if not blob.startswith(prefix) or len(blob) < len(prefix) + _NONCE_BYTES + 16:
            return None
        body = blob[len(prefix) :]
        try:
            plain = self._aead.decrypt(body[:_NONCE_BYTES], body[_NONCE_BYTES:], name.encode())
            data: Any = json.loads(plain)
            return Token(
                access_token=str(data["access_token"]),
                expires_on=int(data["expires_on"]),
                token_type=str(data["token_type"]),
                expires_in=int(data["expires_in"]),
                refresh_on=int(data["refresh_on"]) if data.get("refresh_on") else None,
                extra=dict(data.get("extra") or {}),
            )
        except (InvalidTag, ValueError, KeyError, TypeError):
            return None


def _warn(message: str, *args: object) -> None:
    """Log a warning on the ``certauth`` logger, which is imported only then: ~4 ms of
    imports that reading a token from the cache does not need."""
    import logging

    logging.getLogger("certauth").warning(message, *args)


def default_cache_dir() -> Path:
    """``$CERTAUTH_CACHE_DIR``, else ``$XDG_CACHE_HOME/certauth``, else ``~/.cache/certauth``."""
    explicit = os.environ.get("CERTAUTH_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg) / "certauth"
    return Path.home() / ".cache" / "certauth"


class FileTokenCache:
    """Encrypted token entries in a private directory, shared by processes of one user.

    The directory is created 0700; an existing one must belong to this user (one owned by
    another user is refused), and if others can read or write it, it is repaired with a
    warning. Files are 0600 and written atomically; only regular files are read (a FIFO or
    device planted as an entry is ignored and replaced). ``lock`` is an ``flock`` on a per-key
    lock file, so processes starting together cause one token request.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self._ready = False

    def __repr__(self) -> str:
        return f"FileTokenCache({str(self.directory)!r})"

    def _prepare(self) -> Path:
        if self._ready:
            return self.directory
        directory = self.directory
        try:
            # Each missing level 0700, not just the last: mkdir(parents=True) makes the parents
            # 0777 & ~umask, world-writable under umask 000.
            for level in reversed([d for d in (directory, *directory.parents) if not d.exists()]):
                level.mkdir(mode=0o700, exist_ok=True)
            info = directory.lstat()
        except OSError as exc:
            raise ConfigurationError(
                f"{directory}: cannot use as token cache directory ({exc.strerror or exc}); "
                "set CERTAUTH_CACHE_DIR to a writable directory or pass cache=None"
            ) from None
        if not stat.S_ISDIR(info.st_mode):
            raise ConfigurationError(
                f"{directory}: the token cache path is not a directory (a symlink?); "
                "set CERTAUTH_CACHE_DIR to a private directory"
            )
        if info.st_uid != os.getuid():
            # Its owner can read, replace or plant entries and locks whatever the mode: the
            # same reason ssh refuses a ~/.ssh that is not the user's own.
            raise ConfigurationError(
                f"{directory}: the token cache directory belongs to another user (uid "
                f"{info.st_uid}, mode {stat.S_IMODE(info.st_mode):o}); use a private directory "
                "of your own (set CERTAUTH_CACHE_DIR, or remove this one so it is recreated), "
                "or pass cache=None"
            )
        if info.st_mode & 0o077:
            os.chmod(directory, 0o700)
            _warn(
                "certauth: warning: %s was open to other users (mode %o); made it 0700",
                directory,
                stat.S_IMODE(info.st_mode),
            )
        self._ready = True
        return directory

    def _path(self, key: str, suffix: str) -> Path:
        # Hashing the key keeps scopes and client ids out of file names.
        name = hashlib.sha256(key.encode("utf-8")).hexdigest()[:40]
        return self._prepare() / f"{name}{suffix}"

    def get(self, key: str) -> bytes | None:
        """The entry for ``key``, or ``None`` (missing, unreadable, too large, or not a
        regular file)."""
        path = self._path(key, ".token")
        try:
            # O_NOFOLLOW: an entry replaced by a symlink is not read through it (ELOOP); a FIFO
            # or device is refused before any read (it could block, or never end).
            with os.fdopen(open_regular_file(path, os.O_NOFOLLOW), "rb") as handle:
                data = handle.read(MAX_ENTRY_BYTES + 1)
        except OSError:
            return None
        return data if len(data) <= MAX_ENTRY_BYTES else None

    def set(self, key: str, value: bytes, expires_on: float) -> None:
        """Write the entry atomically, mode 0600 (expiry is inside the encrypted entry)."""
        write_private_file(self._path(key, ".token"), value)

    def delete(self, key: str) -> None:
        """Remove the entry for ``key``."""
        with contextlib.suppress(FileNotFoundError):
            self._path(key, ".token").unlink()

    @contextlib.contextmanager
    def lock(self, key: str, *, timeout: float | None = None) -> Iterator[object]:
        """An exclusive ``flock`` on ``KEY.lock``: waits until the holder is done, at most
        ``timeout`` seconds (default 120), then goes on without it (a stuck holder must not
        stop a caller past its own deadline)."""
        path = self._path(key, ".lock")
        wait = DEFAULT_LOCK_WAIT if timeout is None else max(0.0, timeout)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EINVAL, "the token cache lock is not a regular file", path)
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    left = deadline - time.monotonic()
                    if left <= 0:
                        _warn(
                            "certauth: cache lock %s held by another process for %.1f s; "
                            "going on without it",
                            path,
                            wait,
                        )
                        break
                    time.sleep(min(0.01, left))
            yield path
        finally:
            os.close(fd)  # closing releases the flock


# -- RedisTokenCache: importable from here, loaded on first use -------------------------------

if TYPE_CHECKING:
    from certauth._redis import RedisTokenCache as RedisTokenCache


def __getattr__(name: str) -> Any:
    """PEP 562: ``RedisTokenCache`` is imported when first asked for, so importing this module
    never imports redis (an optional extra). Without redis installed the import fails with a
    :class:`~certauth.errors.ConfigurationError` (also an ``ImportError``) saying what to
    install."""
    if name == "RedisTokenCache":
        from certauth._redis import RedisTokenCache

        return RedisTokenCache
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
