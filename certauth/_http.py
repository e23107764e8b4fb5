"""The I/O half: HTTP clients, TLS trust, and the two drivers that run a sans-I/O flow.

A flow (:mod:`certauth._flow`) yields :class:`~certauth._flow.Send`,
:class:`~certauth._flow.Sleep` and :class:`~certauth._flow.Call` actions and decides everything
itself (what to send, what an answer means, whether to retry). :func:`run_sync` and
:func:`run_async` only perform the actions; they differ only in how they wait.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

from certauth._body import BodyDecoder, DecodingError
from certauth._files import open_regular_file
from certauth._flow import Failure, Flow, Reply, Send, Sleep
from certauth._version import __version__
from certauth.errors import ConfigurationError
from certauth.protocol import MAX_RESPONSE_BYTES

if TYPE_CHECKING:
    import ssl

    from certauth._httpx import httpx
    from certauth._transport import StdlibClient
    from certauth.certificates import Certificate

    #: What :func:`run_sync` drives: certauth's own client, or a caller's ``httpx.Client``.
    SyncClient: TypeAlias = StdlibClient | httpx.Client

T = TypeVar("T")

#: The connect timeout is fixed and short: a token endpoint that cannot be reached in 5 s
#: will not be reached by waiting longer, and retries follow.
CONNECT_TIMEOUT = 5.0
USER_AGENT = f"certauth/{__version__}"
#: The content codings certauth asks for (RFC 9110 section 12.5.3): the ones it decodes itself,
#: under the size cap (see :class:`BodyDecoder`).
ACCEPT_ENCODING = "gzip, deflate"


_contexts: dict[str, ssl.SSLContext] = {}
_contexts_lock = threading.Lock()


def ssl_context(ca_file: str | None = None) -> ssl.SSLContext:
    """One verifying TLS context per trust source, shared by every client in the process.

    Without ``ca_file``, trust is the system store (which honours ``SSL_CERT_FILE`` /
    ``SSL_CERT_DIR``). With it, trust is exactly the certificates in ``ca_file``, as requests'
    and httpx's ``verify=PATH`` and azure-identity's ``connection_verify`` give it: a private
    CA bundle does not quietly widen to every public CA. Building a context from a full CA
    bundle costs ~20 ms, so it is built once per process, not once per client.
    """

    def build() -> ssl.SSLContext:
        import ssl

        return _ca_file_context(ca_file) if ca_file else ssl.create_default_context()

    return _shared(ca_file or "", build)


def _ca_file_context(ca_file: str) -> ssl.SSLContext:
    """create_default_context's settings, trusting exactly ``ca_file`` (the system store is
    skipped when a cafile is given)."""
    import ssl

    try:
        # OpenSSL would block on a FIFO, or read /dev/zero for ever: a regular file only.
        os.close(open_regular_file(ca_file))
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(
            f"{ca_file}: cannot load CA certificates ({exc}); give a PEM CA file"
        ) from None


def _shared(key: str, build: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    context = _contexts.get(key)
    if context is not None:
        return context
    with _contexts_lock:
        context = _contexts.get(key)
        if context is None:
            context = _contexts[key] = build()
    return context


def resolve_verify(verify: Any) -> ssl.SSLContext:
    """``verify=`` as azure-identity and httpx users pass it: a CA file path (trusted alone),
    ``True`` or ``None`` (the system store), or an ``ssl.SSLContext`` (used as given).
    ``False`` is refused: certauth always verifies TLS."""
    import ssl

    if isinstance(verify, ssl.SSLContext):
        return verify
    if verify is None or verify is True:
        return ssl_context()
    return ssl_context(_ca_file(verify))


def _ca_file(verify: object) -> str:
    """``verify=`` as a CA file path (a ``str`` or an ``os.PathLike``); anything else is
    refused, naming what it is."""
    if verify is False:
        raise ConfigurationError(
            "verify=False is not supported: certauth always verifies TLS; pass a CA file instead"
        )
    if isinstance(verify, str | os.PathLike):
        path = os.fspath(verify)
        if isinstance(path, str):
            return path
    raise ConfigurationError(
        f"verify= takes a CA file path, True or an ssl.SSLContext, not {type(verify).__name__}"
    )


def client_certificate_context(verify: Any, certificate: Certificate) -> ssl.SSLContext:
    """A verifying TLS context (trust as :func:`resolve_verify` gives it) that presents
    ``certificate`` (and its chain) as the TLS client certificate: mutual TLS, RFC 8705.

    Not shared: it belongs to one credential, which loads a rotated certificate into it
    (:func:`load_client_certificate`). ``verify`` may not be an ``ssl.SSLContext``: certauth
    does not change a caller's context.
    """
    import ssl

    if isinstance(verify, ssl.SSLContext):
        raise ConfigurationError(
            "mtls=True builds its own TLS context to present the certificate: give verify= "
            "as a CA file (or leave it out for the system store), not an ssl.SSLContext"
        )
    context = (
        ssl.create_default_context()
        if verify is None or verify is True
        else _ca_file_context(_ca_file(verify))
    )
    load_client_certificate(context, certificate)
    return context


def load_client_certificate(context: ssl.SSLContext, certificate: Certificate) -> None:
    """Make ``context`` present ``certificate`` (leaf, then its chain) with its private key.

    The ``ssl`` module loads a key only from a file (``SSLContext.load_cert_chain``); the key
    must not touch the disk unprotected, so it goes through an anonymous in-memory file
    (``memfd_create``, Linux) or else a private temporary file removed at once, encrypted
    either way with a random one-time password.
    """
    import secrets
    import ssl

    from cryptography.hazmat.primitives import serialization

    password = secrets.token_urlsafe(24).encode()
    pem = certificate.pem + b"".join(
        c.public_bytes(serialization.Encoding.PEM) for c in certificate.chain
    )
    pem += certificate.private_key_pem(password)
    try:
        with _private_file(pem) as path:
            context.load_cert_chain(path, password=password)
    except ssl.SSLError as exc:
        raise ConfigurationError(
            f"cannot use the certificate for mutual TLS ({exc.reason or exc})"
        ) from None
    except OSError as exc:
        # No in-memory file and no private temporary one (a full or read-only temporary
        # folder, no descriptor left): nothing of the key is in the message.
        raise ConfigurationError(
            f"cannot hand the certificate's key to the TLS layer for mutual TLS "
            f"({exc.strerror or type(exc).__name__}); check TMPDIR (a private temporary file "
            "is used where memfd_create is not allowed)"
        ) from None


@contextlib.contextmanager
def _private_file(data: bytes) -> Iterator[str]:
    """A path holding ``data`` while the ``with`` block runs, readable by this process only."""
    fd = _memfd()
    if fd is not None:
        try:
            _write_all(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="certauth-tls-")  # mode 0700
    try:
        path = os.path.join(folder, "client.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _memfd() -> int | None:
    """An anonymous in-memory file (Linux), or ``None`` where there is none to be had."""
    memfd = getattr(os, "memfd_create", None)
    if memfd is None or not os.path.isdir("/proc/self/fd"):
        return None
    try:
        fd: int = memfd("certauth-tls", getattr(os, "MFD_CLOEXEC", 0))
    except OSError:
        # A seccomp profile that forbids the call (EPERM), a kernel before 3.17 (ENOSYS):
        # the private temporary file does the same job.
        return None
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _timeout(total: float) -> httpx.Timeout:
    from certauth._httpx import httpx

    return httpx.Timeout(total, connect=min(CONNECT_TIMEOUT, total))


C = TypeVar("C", "httpx.Client", "httpx.AsyncClient")


def given_client(client: object, kind: type[C]) -> C | None:
    """A caller's ``client=`` checked to be the kind its shell drives (``None``: make one)."""
    if client is not None and not isinstance(client, kind):
        raise TypeError(f"client= must be an httpx.{kind.__name__}, not {type(client).__name__}")
    return client


def new_sync_client(
    verify: Any = None,
    timeout: float = 30.0,
    *,
    tls_context: Callable[[], ssl.SSLContext] | None = None,
) -> StdlibClient:
    """certauth's own blocking client (:class:`~certauth._transport.StdlibClient`, on
    ``http.client``) with certauth's TLS trust, timeouts and proxies from the environment.

    Not httpx: a short-lived process (a CI step that gets one token) would pay for importing
    it on every run. With ``tls_context`` (under mutual TLS: what returns the context for the
    certificate in use now, a new one per certificate), connections are opened with it, and
    none opened before a rotation is reused after it.
    """
    from certauth._transport import StdlibClient

    context = resolve_verify(verify)
    return StdlibClient(
        tls_context or (lambda: context),
        timeout=timeout,
        connect_timeout=CONNECT_TIMEOUT,
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": ACCEPT_ENCODING},
    )


def new_async_client(
    verify: Any = None,
    timeout: float = 30.0,
    *,
    tls_context: Callable[[], ssl.SSLContext] | None = None,
) -> httpx.AsyncClient:
    """The async twin of :func:`new_sync_client`."""
    from certauth._httpx import httpx

    context = resolve_verify(verify)
    transport = None
    if tls_context is not None:
        from certauth._rotating_transport import AsyncRotatingTransport

        current = tls_context
        transport = AsyncRotatingTransport(
            lambda: httpx.AsyncHTTPTransport(verify=current()), current
        )
    return httpx.AsyncClient(
        verify=context,
        transport=transport,
        timeout=_timeout(timeout),
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": ACCEPT_ENCODING},
    )


def failure_for(exc: BaseException, phase: str, elapsed: float = 0.0) -> Failure:
    """What an attempt that ended in ``exc`` while ``phase`` (``connecting``, ``sending the
    request``, ``waiting for the answer``) comes to: a timeout, a TLS failure (an ``ssl``
    error anywhere in the chain of causes), a failure to connect, or a protocol failure (the
    answer was cut short, or is not HTTP)."""
    if isinstance(exc, TimeoutError):
        return _timed_out(phase, elapsed)
    tls = _tls_failure(exc, elapsed)
    if tls is not None:
        return tls
    if phase == "connecting" and isinstance(exc, OSError):
        return _cannot_connect(exc, elapsed)
    return _protocol(exc, elapsed)


def _protocol(exc: BaseException, elapsed: float) -> Failure:
    return Failure("protocol", f"{type(exc).__name__}: {exc}", elapsed)


def _timed_out(phase: str, elapsed: float) -> Failure:
    return Failure("timeout", f"timed out after {elapsed:.1f} s {phase}", elapsed)


def _cannot_connect(exc: BaseException, elapsed: float) -> Failure:
    return Failure("connect", f"cannot connect ({exc or type(exc).__name__})", elapsed)


def _tls_failure(exc: BaseException, elapsed: float) -> Failure | None:
    import ssl

    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return Failure(
                "tls", f"TLS certificate verification failed: {cause.verify_message}", elapsed
            )
        if isinstance(cause, ssl.SSLError):
            return Failure("tls", f"TLS error: {cause.reason or cause}", elapsed)
        cause = cause.__cause__ or cause.__context__
    return None


def _failure(exc: Exception, *, elapsed: float = 0.0) -> Failure:
    """:func:`failure_for` of an httpx exception (a caller's client, the async stack)."""
    from certauth._httpx import httpx

    if isinstance(exc, httpx.TimeoutException):
        phase = (
            "connecting"
            if isinstance(exc, httpx.ConnectTimeout)
            else "sending the request"
            if isinstance(exc, httpx.WriteTimeout)
            else "waiting for a connection"
            if isinstance(exc, httpx.PoolTimeout)
            else "waiting for the answer"
        )
        return _timed_out(phase, elapsed)
    tls = _tls_failure(exc, elapsed)
    if tls is not None:
        return tls
    if isinstance(exc, httpx.ConnectError):
        return _cannot_connect(exc, elapsed)
    return _protocol(exc, elapsed)


# -- one attempt: one deadline ------------------------------------------------------------------


def _attempt_limits(
    timeout: httpx.Timeout, cap: float | None
) -> tuple[float, dict[str, float | None]]:
    """How long the attempt may take (the client's timeout, shortened to ``cap``: what is left
    of the call's bound) and the per-operation timeouts, none longer than the attempt."""
    seconds = math.inf if timeout.read is None else timeout.read
    timeouts = timeout.as_dict()
    if cap is not None and cap < seconds:
        seconds = cap
    if seconds < math.inf and not all(t is not None and t <= seconds for t in timeouts.values()):
        timeouts = {op: seconds if t is None else min(t, seconds) for op, t in timeouts.items()}
    return seconds, timeouts


def _request(
    client: httpx.Client | httpx.AsyncClient, action: Send, timeouts: dict[str, float | None]
) -> httpx.Request:
    extensions: dict[str, Any] = {"timeout": timeouts}
    headers = action.headers
    if client.headers.get("Accept-Encoding") != ACCEPT_ENCODING:
        # Only codings the driver can decode under the cap, whatever a client of the caller's
        # would ask for (certauth's own clients ask for just these).
        headers = {**headers, "Accept-Encoding": ACCEPT_ENCODING}
    return client.build_request(
        action.method, action.url, headers=headers, content=action.body, extensions=extensions
    )


def spent() -> Failure:
    """The failure of an attempt there is no time left for (the call's bound is used up)."""
    return Failure("timeout", "timed out: no time left for another attempt")


def _resolved(client: Any) -> Any:
    """A client, or what makes it when the first request is due (a flow served from a shared
    store sends nothing: its process never builds a client, nor a TLS context)."""
    return client() if callable(client) else client


def run_sync(flow: Flow[T], client: SyncClient | Callable[[], SyncClient]) -> T:
    """Drive a flow with blocking I/O.

    Each :class:`~certauth._flow.Send` is one attempt with one deadline (the client's timeout,
    or what is left of the call's bound when that is shorter) covering connect, the TLS
    handshake, the status line, the headers and the body: certauth's own client
    (:class:`~certauth._transport.StdlibClient`) holds every socket operation to it, without
    a thread; a caller's ``httpx.Client`` gets per-operation timeouts no longer than the
    attempt and the deadline checked as the body arrives.
    """
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
                answer = _send_sync(action, _resolved(client))
            elif isinstance(action, Sleep):
                time.sleep(action.seconds)
            else:
                answer = action.function(*action.args)
        except GeneratorExit:
            flow.close()
            raise
        except BaseException as exc:  # noqa: BLE001 - the flow decides (and its finally runs)
            error = exc


def _send_sync(action: Send, client: SyncClient) -> Reply | Failure:
    from certauth._transport import StdlibClient

    if isinstance(client, StdlibClient):
        return client.send(action)
    from certauth._httpx import httpx

    seconds, timeouts = _attempt_limits(client.timeout, action.timeout)
    if seconds <= 0:
        return spent()
    started = time.monotonic()
    deadline = started + seconds if seconds < math.inf else None
    try:
        response = client.send(_request(client, action, timeouts), stream=True)
        try:
            body = _in_memory(response)
            if body is None:
                decoder = BodyDecoder(response.headers.get("content-encoding", ""))
                body = bytearray()
                for chunk in response.iter_raw():
                    if decoder.take(body, chunk):
                        break
                    _check_deadline(deadline)
        finally:
            response.close()
        elapsed = time.monotonic() - started
        return Reply(response.status_code, dict(response.headers), bytes(body), elapsed)
    except (httpx.HTTPError, DecodingError) as exc:
        return _failure(exc, elapsed=time.monotonic() - started)


async def run_async(
    flow: Flow[T], client: httpx.AsyncClient | Callable[[], httpx.AsyncClient]
) -> T:
    """Drive a flow with asyncio; a :class:`~certauth._flow.Call` runs in a worker thread
    (or, when it has a coroutine twin such as a signer's ``sign_async``, is awaited).

    Each :class:`~certauth._flow.Send` is one attempt run under one deadline (as in
    :func:`run_sync`) by ``asyncio.wait_for``: connect, TLS handshake, status line, headers
    and body, whatever the client's transport.
    """
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
                answer = await _send_async(action, _resolved(client))
            elif isinstance(action, Sleep):
                await asyncio.sleep(action.seconds)
            elif action.coroutine_function is not None:
                answer = await action.coroutine_function(*action.args)
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
    import asyncio

    from certauth._httpx import httpx

    seconds, timeouts = _attempt_limits(client.timeout, action.timeout)
    if seconds <= 0:
        return spent()
    started = time.monotonic()
    try:
        # asyncio.wait_for, not asyncio.timeout: Python 3.10 has only the former.
        return await asyncio.wait_for(
            _exchange_async(action, client, timeouts, started),
            None if seconds == math.inf else seconds,
        )
    except asyncio.TimeoutError:
        elapsed = time.monotonic() - started
        return Failure("timeout", f"timed out after {elapsed:.1f} s without a full answer", elapsed)
    except (httpx.HTTPError, DecodingError) as exc:
        return _failure(exc, elapsed=time.monotonic() - started)


async def _exchange_async(
    action: Send, client: httpx.AsyncClient, timeouts: dict[str, float | None], started: float
) -> Reply:
    response = await client.send(_request(client, action, timeouts), stream=True)
    try:
        body = _in_memory(response)
        if body is None:
            decoder = BodyDecoder(response.headers.get("content-encoding", ""))
            body = bytearray()
            async for chunk in response.aiter_raw():
                if decoder.take(body, chunk):
                    break
    finally:
        await response.aclose()
    elapsed = time.monotonic() - started
    return Reply(response.status_code, dict(response.headers), bytes(body), elapsed)


def _in_memory(response: httpx.Response) -> bytearray | None:
    """The body of an answer built in memory (an ``httpx.MockTransport`` handler's), which
    httpx has already read and decoded; ``None`` for one still on the wire."""
    if not response.is_stream_consumed:
        return None
    return bytearray(response.content[: MAX_RESPONSE_BYTES + 1])


def _check_deadline(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        from certauth._httpx import httpx

        raise httpx.ReadTimeout("the answer did not arrive in full within the timeout")
