"""The I/O half of the token exchange: HTTP clients, TLS trust, and the drivers that run a
sans-I/O flow (a generator of :class:`Send` / :class:`Sleep` actions) with httpx, sync or async.

Everything the flows decide (what to send, whether to retry, how long to wait, what an answer
means) lives in ``credential._Core`` and ``protocol``; the two drivers below differ only in how
they wait.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from certauth._version import __version__
from certauth.errors import ConfigurationError
from certauth.protocol import MAX_RESPONSE_BYTES

T = TypeVar("T")

#: The connect timeout is fixed and short: a token endpoint that cannot be reached in 5 s
#: will not be reached by waiting longer, and retries follow.
CONNECT_TIMEOUT = 5.0
USER_AGENT = f"certauth/{__version__}"


@dataclass(frozen=True)
class Send:
    """Action: send this HTTP request and resume the flow with a :class:`Reply` or
    :class:`Failure`."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None

    def __repr__(self) -> str:
        return f"Send({self.method} {self.url})"  # the body may hold a secret


@dataclass(frozen=True)
class Sleep:
    """Action: wait this many seconds, then resume the flow with ``None``."""

    seconds: float


@dataclass(frozen=True)
class Reply:
    """An HTTP answer (the body capped at ``MAX_RESPONSE_BYTES`` + 1)."""

    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Failure:
    """No HTTP answer: ``kind`` is ``connect``, ``timeout``, ``tls`` or ``protocol``."""

    kind: str
    detail: str


Action = Send | Sleep
Flow = Generator[Action, Reply | Failure | None, T]

_contexts: dict[str, ssl.SSLContext] = {}
_contexts_lock = threading.Lock()


def ssl_context(ca_file: str | None = None) -> ssl.SSLContext:
    """One verifying TLS context per trust source, shared by every client in the process.

    Trust comes from the system store (which honours ``SSL_CERT_FILE``/``SSL_CERT_DIR``) plus
    ``ca_file`` when given. Building a context from a full CA bundle costs ~20 ms, so it is
    built once (ANCHORS.md: the peers pay it per client).
    """
    key = ca_file or ""
    context = _contexts.get(key)
    if context is not None:
        return context
    with _contexts_lock:
        context = _contexts.get(key)
        if context is None:
            context = ssl.create_default_context()
            if ca_file:
                try:
                    context.load_verify_locations(cafile=ca_file)
                except (OSError, ssl.SSLError) as exc:
                    raise ConfigurationError(
                        f"{ca_file}: cannot load CA certificates ({exc}); give a PEM CA file"
                    ) from None
            _contexts[key] = context
    return context


def resolve_verify(verify: Any) -> ssl.SSLContext:
    """``verify=`` as azure-identity and httpx users pass it: a CA file path, ``True``, or an
    ``ssl.SSLContext``. ``False`` is refused: certauth always verifies TLS."""
    if isinstance(verify, ssl.SSLContext):
        return verify
    if verify is None or verify is True:
        return ssl_context()
    if isinstance(verify, str):
        return ssl_context(verify)
    raise ConfigurationError(
        "verify=False is not supported: certauth always verifies TLS; pass a CA file instead"
    )


def _timeout(total: float) -> httpx.Timeout:
    return httpx.Timeout(total, connect=min(CONNECT_TIMEOUT, total))


def new_sync_client(verify: Any = None, timeout: float = 30.0) -> httpx.Client:
    """An httpx client with certauth's TLS trust and timeouts (always set)."""
    return httpx.Client(
        verify=resolve_verify(verify),
        timeout=_timeout(timeout),
        headers={"User-Agent": USER_AGENT},
    )


def new_async_client(verify: Any = None, timeout: float = 30.0) -> httpx.AsyncClient:
    """The async twin of :func:`new_sync_client`."""
    return httpx.AsyncClient(
        verify=resolve_verify(verify),
        timeout=_timeout(timeout),
        headers={"User-Agent": USER_AGENT},
    )


def _failure(exc: Exception) -> Failure:
    if isinstance(exc, httpx.TimeoutException):
        return Failure("timeout", f"timed out ({type(exc).__name__})")
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return Failure("tls", f"TLS certificate verification failed: {cause.verify_message}")
        if isinstance(cause, ssl.SSLError):
            return Failure("tls", f"TLS error: {cause.reason or cause}")
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, httpx.ConnectError):
        return Failure("connect", f"cannot connect ({exc or type(exc).__name__})")
    return Failure("protocol", f"{type(exc).__name__}: {exc}")


def run_sync(flow: Flow[T], client: httpx.Client) -> T:
    """Drive a flow with blocking I/O."""
    answer: Reply | Failure | None = None
    try:
        while True:
            action = flow.send(answer)
            if isinstance(action, Sleep):
                time.sleep(action.seconds)
                answer = None
                continue
            try:
                request = client.build_request(
                    action.method, action.url, headers=action.headers, content=action.body
                )
                response = client.send(request, stream=True)
                try:
                    body = _read_capped(response.iter_bytes())
                finally:
                    response.close()
                answer = Reply(response.status_code, dict(response.headers), body)
            except httpx.HTTPError as exc:
                answer = _failure(exc)
    except StopIteration as done:
        result: T = done.value
        return result


async def run_async(flow: Flow[T], client: httpx.AsyncClient) -> T:
    """Drive a flow with asyncio."""
    answer: Reply | Failure | None = None
    try:
        while True:
            action = flow.send(answer)
            if isinstance(action, Sleep):
                await asyncio.sleep(action.seconds)
                answer = None
                continue
            try:
                request = client.build_request(
                    action.method, action.url, headers=action.headers, content=action.body
                )
                response = await client.send(request, stream=True)
                try:
                    chunks = bytearray()
                    async for chunk in response.aiter_bytes():
                        chunks += chunk
                        if len(chunks) > MAX_RESPONSE_BYTES:
                            break
                finally:
                    await response.aclose()
                answer = Reply(response.status_code, dict(response.headers), bytes(chunks))
            except httpx.HTTPError as exc:
                answer = _failure(exc)
    except StopIteration as done:
        result: T = done.value
        return result


def _read_capped(chunks: Any) -> bytes:
    # Stop reading past the cap: a 100 MB "token response" is refused, not buffered.
    data = bytearray()
    for chunk in chunks:
        data += chunk
        if len(data) > MAX_RESPONSE_BYTES:
            break
    return bytes(data)
