"""The I/O half of the token exchange: HTTP clients, TLS trust, and the drivers that run a
sans-I/O flow (a generator of :class:`Send` / :class:`Sleep` actions) with httpx, sync or async.

What to send and what an answer means live in ``credential._Core``, ``verify`` and
``protocol``; whether and how long to retry is :func:`retry_delay`, and :func:`get_json` is the
one GET-a-document flow (discovery, JWKS). The two drivers below differ only in how they wait.
"""

from __future__ import annotations

import functools
import json
import ssl
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from certauth._httpx import httpx
from certauth._version import __version__
from certauth.errors import ConfigurationError, TransportError
from certauth.protocol import MAX_RESPONSE_BYTES, RetryPolicy, parse_json_document

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


def retry_delay(
    answer: Reply | Failure | None,
    attempt: int,
    *,
    url: str,
    retry: RetryPolicy,
    now: float,
    what: str | None = None,
) -> float | None:
    """Seconds to wait before retrying, ``None`` to use ``answer`` as it is.

    Shared by every flow (token POST, discovery, JWKS): transient failures (connect, timeout,
    429, 5xx) are retried per ``retry``; when retries run out, or TLS verification fails (it
    fails the same way every time), a :class:`TransportError` is raised. ``what`` names the
    document being fetched, for messages.
    """
    fetching = f"cannot fetch the {what}: " if what else ""
    if isinstance(answer, Failure):
        if answer.kind == "tls":
            raise TransportError(
                f"{url}: {fetching}{answer.detail}; trust the server's CA with --ca-file / "
                "verify= or SSL_CERT_FILE",
                url=url,
            )
        delay = retry.delay(attempt, status=None)
        if delay is None:
            raise TransportError(
                f"{url}: {fetching}{answer.detail} (after {attempt} attempts); check the URL, "
                "the network and proxy settings",
                url=url,
            )
        return delay
    assert isinstance(answer, Reply)
    if answer.status == 429 or answer.status >= 500:
        retry_after = answer.headers.get("retry-after")
        delay = retry.delay(attempt, status=answer.status, retry_after=retry_after, now=now)
        if delay is None:
            # Out of retries: a transport failure (exit 5) even when the body is an OAuth
            # error such as temporarily_unavailable, whose text is kept for diagnosis.
            raise TransportError(
                f"{url}: {fetching}HTTP {answer.status} after {attempt} attempts"
                + (f" (Retry-After: {retry_after})" if retry_after else "")
                + _oauth_error_text(answer)
                + "; the server is overloaded or failing, try again later",
                url=url,
                status_code=answer.status,
            )
        return delay
    return None


def _oauth_error_text(answer: Reply) -> str:
    """`` (error: description)`` from an OAuth error body, or nothing."""
    try:
        document = json.loads(answer.body)
    except (ValueError, RecursionError):  # RecursionError: [[[[...]]]]
        return ""
    if not isinstance(document, dict) or not isinstance(document.get("error"), str):
        return ""
    description = str(document.get("error_description") or "").splitlines()
    return (
        f" ({document['error']}: {description[0][:200]})"
        if description
        else f" ({document['error']})"
    )


def get_json(url: str, *, what: str, hint: str, retry: RetryPolicy, now: float) -> Flow[Any]:
    """GET a JSON document (discovery, JWKS) with retries; ``hint`` says what to check when the
    server answers anything but 200."""
    attempt = 0
    while True:
        attempt += 1
        answer = yield Send("GET", url, {"Accept": "application/json"})
        delay = retry_delay(answer, attempt, url=url, retry=retry, now=now, what=what)
        if delay is None:
            break
        yield Sleep(delay)
    assert isinstance(answer, Reply)
    if answer.status != 200:
        raise TransportError(
            f"{url}: HTTP {answer.status} for the {what}; {hint}",
            url=url,
            status_code=answer.status,
        )
    return parse_json_document(
        answer.body,
        url=url,
        status=answer.status,
        content_type=answer.headers.get("content-type", ""),
    )


def ssl_context(ca_file: str | None = None) -> ssl.SSLContext:
    """One verifying TLS context per trust source, shared by every client in the process.

    Trust comes from the system store (which honours ``SSL_CERT_FILE``/``SSL_CERT_DIR``) plus
    ``ca_file`` when given. Building a context from a full CA bundle costs ~20 ms, so it is
    built once (ANCHORS.md: the peers pay it per client).
    """

    def build() -> ssl.SSLContext:
        context = ssl.create_default_context()
        if ca_file:
            _load_ca_file(context, ca_file)
        return context

    return _shared(ca_file or "", build)


def ca_file_context(ca_file: str) -> ssl.SSLContext:
    """A verifying TLS context that trusts ``ca_file`` alone (shared like :func:`ssl_context`):
    what the sync clients try first, see :func:`new_sync_client`."""

    def build() -> ssl.SSLContext:
        # create_default_context's settings, with cafile given: it skips the system store.
        try:
            return ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(
                f"{ca_file}: cannot load CA certificates ({exc}); give a PEM CA file"
            ) from None

    return _shared(f"only:{ca_file}", build)


def _shared(key: str, build: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    context = _contexts.get(key)
    if context is not None:
        return context
    with _contexts_lock:
        context = _contexts.get(key)
        if context is None:
            context = _contexts[key] = build()
    return context


def _load_ca_file(context: ssl.SSLContext, ca_file: str) -> None:
    try:
        context.load_verify_locations(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(
            f"{ca_file}: cannot load CA certificates ({exc}); give a PEM CA file"
        ) from None


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
    """An httpx client with certauth's TLS trust and timeouts (always set).

    Requests go through :class:`~certauth._transport.StdlibTransport` (``http.client``), which
    spares a short-lived process httpcore's import; proxies from the environment still get
    httpx's own transports (built with the same ``verify``).
    """
    from certauth._transport import StdlibTransport

    if isinstance(verify, str) and not _environment_proxies():
        # Trust is the system store plus the CA file, and loading the system bundle costs a
        # process ~20 ms. A certificate that verifies against the CA file alone verifies
        # against both, so the CA file is tried first and the system store is loaded only
        # when a server's certificate does not verify without it (the transport then redoes
        # the handshake with the full trust: same outcome, one handshake later).
        context = ca_file_context(verify)
        transport = StdlibTransport(context, fallback=functools.partial(ssl_context, verify))
    else:
        # With a proxy from the environment, httpx's proxy transports take ``verify``: the
        # full trust, as before.
        context = resolve_verify(verify)
        transport = StdlibTransport(context)
    return httpx.Client(
        verify=context,
        transport=transport,
        timeout=_timeout(timeout),
        headers={"User-Agent": USER_AGENT},
    )


def _environment_proxies() -> bool:
    """Whether httpx will route some requests through a proxy from the environment."""
    import urllib.request  # already imported by httpx

    return any(scheme != "no" for scheme in urllib.request.getproxies())


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
                deadline = _deadline(client.timeout)
                response = client.send(request, stream=True)
                try:
                    body = _read_capped(response.iter_bytes(), deadline)
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
    import asyncio  # here, not at the top: a sync-only process never pays for it

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
                deadline = _deadline(client.timeout)
                response = await client.send(request, stream=True)
                try:
                    chunks = bytearray()
                    async for chunk in response.aiter_bytes():
                        chunks += chunk
                        if len(chunks) > MAX_RESPONSE_BYTES:
                            break
                        _check_deadline(deadline)
                finally:
                    await response.aclose()
                answer = Reply(response.status_code, dict(response.headers), bytes(chunks))
            except httpx.HTTPError as exc:
                answer = _failure(exc)
    except StopIteration as done:
        result: T = done.value
        return result


def _read_capped(chunks: Any, deadline: float) -> bytes:
    # Stop reading past the cap: a 100 MB "token response" is refused, not buffered.
    data = bytearray()
    for chunk in chunks:
        data += chunk
        if len(data) > MAX_RESPONSE_BYTES:
            break
        _check_deadline(deadline)
    return bytes(data)


def _deadline(timeout: httpx.Timeout) -> float:
    """When the answer must be complete: the read timeout bounds each read, and a server
    dripping one byte at a time never trips it, so the whole body gets the same budget."""
    return time.monotonic() + timeout.read if timeout.read is not None else float("inf")


def _check_deadline(deadline: float) -> None:
    if time.monotonic() > deadline:
        raise httpx.ReadTimeout("the answer did not arrive in full within the timeout")
