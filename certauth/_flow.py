"""Sans-I/O flows: the actions a flow yields, the retry decision, and the GET-a-document flow.

A flow is a generator that yields :class:`Send` (an HTTP request), :class:`Sleep` (a wait) or
:class:`Call` (a blocking call such as a shared-cache read or a file reload) and is resumed with
the outcome. It decides everything itself; the drivers in :mod:`certauth._http` only perform
the actions, with blocking I/O (``run_sync``) or with asyncio (``run_async``, which runs a
:class:`Call` in a worker thread so the event loop never blocks). Credentials (token POST,
discovery) and verifiers (discovery, JWKS) share :func:`retry_delay` and :func:`get_json`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from certauth.errors import TransportError
from certauth.protocol import RetryPolicy, parse_json_document, read_oauth_error

__all__ = ["Action", "Call", "Failure", "Flow", "Reply", "Send", "Sleep", "get_json", "retry_delay"]

T = TypeVar("T")


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
class Call:
    """Action: call ``function(*args)`` (blocking I/O: a cache store, a file) and resume the
    flow with its result; an exception it raises is thrown into the flow."""

    function: Callable[..., Any]
    args: tuple[Any, ...] = ()

    def __repr__(self) -> str:
        return f"Call({getattr(self.function, '__qualname__', self.function)!s})"


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


Action = Send | Sleep | Call
#: What a flow is resumed with: a :class:`Reply` or :class:`Failure` after a :class:`Send`,
#: ``None`` after a :class:`Sleep`, the call's result after a :class:`Call`.
Flow = Generator[Action, Any, T]


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
) -> float | None:
    """Seconds to wait before retrying, ``None`` to use ``answer`` as it is.

    Transient failures (connect, timeout, 429, 5xx) are retried per ``retry``; when retries run
    out, or TLS verification fails (it fails the same way every time), a
    :class:`TransportError` is raised. ``what`` names the document being fetched, for messages.
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
                + _oauth_error_text(answer, url)
                + "; the server is overloaded or failing, try again later",
                url=url,
                status_code=answer.status,
            )
        return delay
    return None


def _oauth_error_text(answer: Reply, url: str) -> str:
    """`` (error: description)`` from an OAuth error body, or nothing."""
    error = read_oauth_error(answer.body, status=answer.status, url=url)
    if error is None:
        return ""
    lines = (error.error_description or "").splitlines()
    return f" ({error.error}: {lines[0][:200]})" if lines else f" ({error.error})"


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


def call(function: Callable[..., T], *args: Any) -> Generator[Call, Any, T]:
    """``result = yield from call(f, x)``: a typed way for a flow to ask for a blocking call."""
    result: T = yield Call(function, args)
    return result
