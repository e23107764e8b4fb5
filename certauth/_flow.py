"""Sans-I/O flows: the actions a flow yields, the retry decision, and the GET-a-document flow.

A flow is a generator that yields :class:`Send` (an HTTP request), :class:`Sleep` (a wait) or
:class:`Call` (a blocking call such as a shared-cache read, a file reload or a signer's
signature) and is resumed with the outcome. It decides everything itself; the drivers in
:mod:`certauth._http` only perform the actions, with blocking I/O (``run_sync``) or with asyncio
(``run_async``, which awaits a :class:`Call`'s coroutine twin when it has one and otherwise runs
it in a worker thread, so the event loop never blocks). Credentials (token POST, discovery,
signing) and verifiers (discovery, JWKS) share :func:`retry_delay` and :func:`get_json`.

Time, too, comes from outside: the driver measures how long each attempt took and hands it
back in the answer (``elapsed``), so a flow keeps a call's :class:`Budget` (the bound of
``RetryPolicy.total_timeout``) without ever reading a clock.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any, TypeVar

from certauth._log import Logger
from certauth._record import Record
from certauth.errors import SignerError, TransportError
from certauth.protocol import RetryPolicy, parse_json_document, read_oauth_error

if TYPE_CHECKING:
    from certauth.signers import Signer

__all__ = [
    "Action",
    "Budget",
    "Call",
    "Failure",
    "Flow",
    "Reply",
    "Send",
    "Sleep",
    "get_json",
    "log_retry",
    "retry_delay",
    "signature",
]

T = TypeVar("T")

#: One INFO line per retry: the library logs it, and the CLI shows it on stderr.
retry_log = Logger("certauth.retry")


class Send(Record):
    """Action: send this HTTP request and resume the flow with a :class:`Reply` or
    :class:`Failure`. ``timeout``: at most this many seconds for the attempt (connect to last
    body byte), on top of the client's own per-attempt timeout: what is left of the call's
    bound (``None``: no bound)."""

    __slots__ = ("body", "headers", "method", "timeout", "url")

    def __init__(
        self,
        method: str,
        url: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        timeout: float | None = None,
    ) -> None:
        self.method = method
        self.url = url
        self.headers: dict[str, str] = {} if headers is None else headers
        self.body = body
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"Send({self.method} {self.url})"  # the body may hold a secret


class Sleep(Record):
    """Action: wait this many seconds, then resume the flow with ``None``."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


class Call(Record):
    """Action: call ``function(*args)`` (blocking I/O: a cache store, a file, a signer) and
    resume the flow with its result; an exception it raises is thrown into the flow. The asyncio
    driver awaits ``coroutine_function(*args)`` instead when given (a remote signer's
    ``sign_async``), else runs ``function`` in a worker thread."""

    __slots__ = ("args", "coroutine_function", "function")

    def __init__(
        self,
        function: Callable[..., Any],
        args: tuple[Any, ...] = (),
        coroutine_function: Callable[..., Awaitable[Any]] | None = None,
    ) -> None:
        self.function = function
        self.args = args
        self.coroutine_function = coroutine_function

    def __repr__(self) -> str:
        return f"Call({getattr(self.function, '__qualname__', self.function)!s})"


class Reply(Record):
    """An HTTP answer (the body, decoded, capped at ``MAX_RESPONSE_BYTES`` + 1); ``elapsed``:
    the seconds the attempt took, as the driver measured them."""

    __slots__ = ("body", "elapsed", "headers", "status")

    def __init__(
        self, status: int, headers: dict[str, str], body: bytes, elapsed: float = 0.0
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.elapsed = elapsed


class Failure(Record):
    """No HTTP answer: ``kind`` is ``connect``, ``timeout``, ``tls`` or ``protocol``;
    ``elapsed``: the seconds the attempt took, as the driver measured them."""

    __slots__ = ("detail", "elapsed", "kind")

    def __init__(self, kind: str, detail: str, elapsed: float = 0.0) -> None:
        self.kind = kind
        self.detail = detail
        self.elapsed = elapsed


Action = Send | Sleep | Call
#: What a flow is resumed with: a :class:`Reply` or :class:`Failure` after a :class:`Send`,
#: ``None`` after a :class:`Sleep`, the call's result after a :class:`Call`.
Flow = Generator[Action, Any, T]


class Budget:
    """What is left of one call's bound (``RetryPolicy.total_timeout``) for attempts and waits.

    Bookkeeping only: the flow charges what each attempt took (measured by the driver and
    carried by the answer) and each wait it asks for; nothing here reads a clock.
    """

    __slots__ = ("spent", "total")

    def __init__(self, total: float | None) -> None:
        self.total = total
        self.spent = 0.0

    @property
    def left(self) -> float | None:
        """Seconds left (``None``: no bound)."""
        return None if self.total is None else max(0.0, self.total - self.spent)

    def charge(self, seconds: float) -> None:
        """Count ``seconds`` as spent."""
        self.spent += seconds

    def __repr__(self) -> str:
        return f"Budget(total={self.total}, spent={self.spent:.3f})"


def describe(answer: Reply | Failure | None) -> str:
    """A short text for a failed attempt (for retry log lines)."""
    if isinstance(answer, Failure):
        return answer.detail
    if isinstance(answer, Reply):
        return f"HTTP {answer.status}"
    return "no answer"


def retry_delay(
    answer: Reply | Failure | None,
    attempt: int,
    *,
    url: str,
    retry: RetryPolicy,
    now: float,
    what: str | None = None,
    budget: Budget | None = None,
) -> float | None:
    """Seconds to wait before retrying, ``None`` to use ``answer`` as it is.

    Transient failures (connect, timeout, 429, 5xx) are retried per ``retry``; when retries run
    out, or TLS verification fails (it fails the same way every time), or the wait would run
    past what is left of ``budget`` (the call's ``total_timeout``), a :class:`TransportError`
    is raised. ``what`` names the document being fetched, for messages; ``now`` (epoch
    seconds) dates an HTTP-date ``Retry-After``.
    """
    fetching = f"cannot fetch the {what}: " if what else ""
    if isinstance(answer, Failure):
        if answer.kind == "tls":
            raise TransportError(
                f"{url}: {fetching}{answer.detail}; trust the server's CA with verify= or "
                "SSL_CERT_FILE",
                url=url,
            )
        delay = retry.delay(attempt, status=None)
        stopped = _past_bound(budget, delay)
        if delay is None or stopped:
            raise TransportError(
                f"{url}: {fetching}{answer.detail} (after {attempt} attempts{stopped}); check "
                "the URL, the network and proxy settings",
                url=url,
            )
        return delay
    assert isinstance(answer, Reply)
    if answer.status == 429 or answer.status >= 500:
        retry_after = answer.headers.get("retry-after")
        delay = retry.delay(attempt, status=answer.status, retry_after=retry_after, now=now)
        stopped = _past_bound(budget, delay)
        if delay is None or stopped:
            # Out of retries: a transport failure (exit 5) even when the body is an OAuth
            # error such as temporarily_unavailable, whose text is kept for diagnosis.
            raise TransportError(
                f"{url}: {fetching}HTTP {answer.status} after {attempt} attempts"
                + (f" (Retry-After: {retry_after})" if retry_after else "")
                + _oauth_error_text(answer, url)
                + (f" ({stopped.lstrip('; ')})" if stopped else "")
                + "; the server is overloaded or failing, try again later",
                url=url,
                status_code=answer.status,
            )
        return delay
    return None


def _past_bound(budget: Budget | None, delay: float | None) -> str:
    """Why the call stops short of its next attempt because of its bound, or ``""``: no wait
    runs past the bound, and an attempt needs some time left after its wait."""
    left = budget.left if budget is not None else None
    if delay is None or left is None or delay < left:
        return ""
    assert budget is not None
    assert budget.total is not None
    bound = f"the call's bound, total_timeout={budget.total:g} s,"
    if left < 0.05:
        return f"; {bound} is spent"
    return f"; {bound} leaves {left:.1f} s, less than the {delay:.1f} s wait for the next attempt"


def log_retry(
    what: str,
    url: str,
    answer: Reply | Failure | None,
    attempt: int,
    retry: RetryPolicy,
    delay: float,
) -> None:
    """Log (INFO, ``certauth.retry``) that attempt ``attempt`` failed and when the next runs:
    ``certauth: token request to URL failed (HTTP 503); attempt 2 of 4 in 0.80 s``."""
    retry_log.info(
        "certauth: %s request to %s failed (%s); attempt %d of %d in %s s",
        what,
        url,
        describe(answer),
        attempt + 1,
        retry.max_attempts,
        f"{delay:.1f}" if delay >= 1 else f"{delay:.2f}",
    )


def _oauth_error_text(answer: Reply, url: str) -> str:
    """`` (error: description)`` from an OAuth error body, or nothing."""
    error = read_oauth_error(answer.body, status=answer.status, url=url)
    if error is None:
        return ""
    lines = (error.error_description or "").splitlines()
    return f" ({error.error}: {lines[0][:200]})" if lines else f" ({error.error})"


def get_json(
    url: str,
    *,
    what: str,
    hint: str,
    retry: RetryPolicy,
    now: float,
    budget: Budget | None = None,
) -> Flow[Any]:
    """GET a JSON document (discovery, JWKS) with retries; ``hint`` says what to check when the
    server answers anything but 200. ``budget`` is the call's bound, shared with the other
    requests of the same call."""
    budget = budget if budget is not None else Budget(retry.total_timeout)
    attempt = 0
    while True:
        attempt += 1
        answer = yield Send("GET", url, {"Accept": "application/json"}, timeout=budget.left)
        budget.charge(answer.elapsed)
        delay = retry_delay(
            answer, attempt, url=url, retry=retry, now=now, what=what, budget=budget
        )
        if delay is None:
            break
        log_retry(what, url, answer, attempt, retry, delay)
        budget.charge(delay)
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


def call(function: Callable[..., T], *args: Any) -> Generator[Call, Any, T]:
    """``result = yield from call(f, x)``: a typed way for a flow to ask for a blocking call."""
    result: T = yield Call(function, args)
    return result


def signature(
    signer: Signer, data: bytes, alg: str, *, retry: RetryPolicy, budget: Budget
) -> Flow[bytes]:
    """``signer``'s signature of ``data`` with ``alg``, as one :class:`Call` (its
    ``sign_async`` awaited by the asyncio driver when it has one).

    A :class:`~certauth.errors.SignerError` marked ``transient`` (a throttled or unreachable
    vault) is retried like a transport failure of the token endpoint, with the same ``retry``
    policy, within the same ``budget``; once retries run out, or for any other error, the
    signer's own error is raised as it is (it names the backend and the fix). The signer's own
    time is its backend's to bound (a remote signer has its own timeouts): only the waits
    between attempts are charged to ``budget``.
    """
    sign_async = getattr(signer, "sign_async", None)
    attempt = 0
    while True:
        attempt += 1
        try:
            result: bytes = yield Call(
                signer.sign, (data, alg), sign_async if callable(sign_async) else None
            )
            return result
        except SignerError as exc:
            if not exc.transient:
                raise
            delay = retry.delay(attempt, status=None)
            if delay is None or _past_bound(budget, delay):
                raise
            retry_log.info(
                "certauth: signing with %s failed (%s); attempt %d of %d in %s s",
                signer.description,
                exc,
                attempt + 1,
                retry.max_attempts,
                f"{delay:.1f}" if delay >= 1 else f"{delay:.2f}",
            )
            budget.charge(delay)
            yield Sleep(delay)
