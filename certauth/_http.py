"""The I/O half: HTTP clients, TLS trust, and the two drivers that run a sans-I/O flow.

A flow (:mod:`certauth._flow`) yields :class:`~certauth._flow.Send`,
:class:`~certauth._flow.Sleep` and :class:`~certauth._flow.Call` actions and decides everything
itself (what to send, what an answer means, whether to retry). :func:`run_sync` and
:func:`run_async` only perform the actions; they differ only in how they wait.
"""

from __future__ import annotations

import functools
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from certauth._flow import Failure, Flow, Reply, Send, Sleep
from certauth._httpx import httpx
from certauth._version import __version__
from certauth.errors import ConfigurationError
from certauth.protocol import MAX_RESPONSE_BYTES

T = TypeVar("T")

#: The connect timeout is fixed and short: a token endpoint that cannot be reached in 5 s
#: will not be reached by waiting longer, and retries follow.
CONNECT_TIMEOUT = 5.0
USER_AGENT = f"certauth/{__version__}"


_contexts: dict[str, ssl.SSLContext] = {}
_contexts_lock = threading.Lock()


def ssl_context(ca_file: str | None = None) -> ssl.SSLContext:
    """One verifying TLS context per trust source, shared by every client in the process.

    Trust comes from the system store (which honours ``SSL_CERT_FILE``/``SSL_CERT_DIR``) plus
    ``ca_file`` when given. Building a context from a full CA bundle costs ~20 ms, so it is
    built once per process, not once per client.
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
    answer: Any = None
    error: BaseException | None = None
    while True:
        try:
            action = flow.send(answer) if error is None else flow.throw(error)
        except StopIteration as done:
            result: T = done.value
            return result
        answer, error = None, None
        try:
            if isinstance(action, Send):
                answer = _send_sync(action, client)
            elif isinstance(action, Sleep):
                time.sleep(action.seconds)
            else:
                answer = action.function(*action.args)
        except GeneratorExit:
            flow.close()
            raise
        except BaseException as exc:  # noqa: BLE001 - the flow decides (and its finally runs)
            error = exc


def _send_sync(action: Send, client: httpx.Client) -> Reply | Failure:
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
        return Reply(response.status_code, dict(response.headers), body)
    except httpx.HTTPError as exc:
        return _failure(exc)


async def run_async(flow: Flow[T], client: httpx.AsyncClient) -> T:
    """Drive a flow with asyncio; a :class:`~certauth._flow.Call` runs in a worker thread."""
    import asyncio  # here, not at the top: a sync-only process never pays for it

    answer: Any = None
    error: BaseException | None = None
    while True:
        try:
            action = flow.send(answer) if error is None else flow.throw(error)
        except StopIteration as done:
            result: T = done.value
            return result
        answer, error = None, None
        try:
            if isinstance(action, Send):
                answer = await _send_async(action, client)
            elif isinstance(action, Sleep):
                await asyncio.sleep(action.seconds)
            else:
                answer = await asyncio.to_thread(action.function, *action.args)
        except GeneratorExit:
            # This coroutine is being closed, not cancelled: it may not await any more, so
            # the flow is closed (it releases what it holds without asking for actions).
            flow.close()
            raise
        except BaseException as exc:  # noqa: BLE001 - cancellation too: the flow's finally runs
            error = exc


async def _send_async(action: Send, client: httpx.AsyncClient) -> Reply | Failure:
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
        return Reply(response.status_code, dict(response.headers), bytes(chunks))
    except httpx.HTTPError as exc:
        return _failure(exc)


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
