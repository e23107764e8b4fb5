"""OAuth 2.0 client-credentials messages: token requests and token responses (sans-I/O).

Shared by the sync and async credentials (which send what this builds) and by the emulator
(which receives it). RFC 6749 section 4.4 (client credentials), RFC 7521/7523 (assertions),
Entra ID's error format and codes ("Microsoft identity platform error codes",
https://learn.microsoft.com/entra/identity-platform/reference-error-codes).
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, urlencode

from certauth._record import Record
from certauth.errors import InvalidArgumentError, TokenRequestError, TransportError

if TYPE_CHECKING:
    import random

__all__ = [
    "CLIENT_ASSERTION_TYPE",
    "GRANT_CLIENT_CREDENTIALS",
    "MAX_RESPONSE_BYTES",
    "RetryPolicy",
    "Token",
    "TokenRequest",
    "build_token_request",
    "description_lines",
    "hint_for",
    "name_certificate",
    "normalize_scopes",
    "parse_json_document",
    "parse_token_response",
    "read_oauth_error",
    "shorten",
]

#: RFC 7523 section 2.2: the client_assertion_type for a JWT client assertion.
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: RFC 6749 section 4.4.2.
GRANT_CLIENT_CREDENTIALS = "client_credentials"
#: A token response is a few KiB; anything far larger is refused rather than buffered.
MAX_RESPONSE_BYTES = 1024 * 1024

SecretMethod = Literal["client_secret_post", "client_secret_basic"]

# -- scopes -------------------------------------------------------------------------------------

#: Scopes that need a signed-in user; app-only tokens cannot carry them.
_USER_SCOPES = frozenset({"openid", "profile", "email", "offline_access"})
#: The app-only scope of Microsoft Graph, whose permissions have bare names (User.Read).
_GRAPH_DEFAULT = "https://graph.microsoft.com/.default"
_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


def normalize_scopes(scopes: Iterable[str], *, entra: bool) -> tuple[str, ...]:
    """Split, de-duplicate and (for Entra ID) check the scopes of an app-only token request.

    Entra ID issues app-only tokens only for ``RESOURCE/.default`` (AADSTS1002012 otherwise)
    and for one resource at a time (AADSTS700022). A bare resource such as
    ``https://graph.microsoft.com`` or ``api://billing`` gets ``/.default`` appended, as
    azure-identity users expect; anything else is refused here with the rule explained.
    """
    result: list[str] = []
    for item in scopes:
        for scope in item.split():
            if scope not in result:
                result.append(scope)
    if not result:
        raise InvalidArgumentError(
            "no scope given; ask for one, RESOURCE/.default (e.g. "
            "https://graph.microsoft.com/.default)"
        )
    if not entra:
        return tuple(result)
    fixed = tuple(_entra_scope(scope) for scope in result)
    resources = {s[: -len("/.default")] for s in fixed}
    if len(resources) > 1:
        raise InvalidArgumentError(
            f"scopes {' '.join(fixed)} name {len(resources)} resources; Entra ID issues a token "
            "for one resource at a time (it would answer AADSTS700022): request one token each"
        )
    return tuple(dict.fromkeys(fixed))


def _entra_scope(scope: str) -> str:
    if scope.endswith("/.default"):
        return scope
    if scope.lower() in _USER_SCOPES:
        raise InvalidArgumentError(
            f"scope {scope!r} needs a signed-in user; app-only tokens (client credentials) take "
            "only RESOURCE/.default (Entra ID would answer AADSTS1002012)"
        )
    if _GUID.match(scope):
        return f"{scope}/.default"
    scheme, sep, rest = scope.partition("://")
    if sep and scheme and rest and "/" not in rest.rstrip("/"):
        return f"{scope.rstrip('/')}/.default"
    if "/" not in scope:
        # A bare permission name (User.Read, Mail.Send) is Microsoft Graph's: the app-only
        # scope is Graph's .default, never "User.Read/.default" (AADSTS500011).
        raise InvalidArgumentError(
            f"scope {scope!r} is a delegated permission; app-only tokens (client credentials) "
            f"take only RESOURCE/.default, e.g. '{_GRAPH_DEFAULT}' for a Microsoft Graph "
            "permission (Entra ID would answer AADSTS1002012); the app's application "
            "permissions (roles) come with it"
        )
    resource = scope.rsplit("/", 1)[0]
    raise InvalidArgumentError(
        f"scope {scope!r} is a delegated permission; app-only tokens (client credentials) "
        f"take only RESOURCE/.default, e.g. '{resource}/.default' (Entra ID would answer "
        "AADSTS1002012); the app's application permissions (roles) come with it"
    )


# -- requests -----------------------------------------------------------------------------------


class TokenRequest(Record):
    """An HTTP request to send: form-encoded body, UTF-8, expecting JSON back."""

    __slots__ = ("form", "headers", "url")

    def __init__(
        self, url: str, form: Mapping[str, str], headers: Mapping[str, str] | None = None
    ) -> None:
        self.url = url
        self.form = form
        self.headers: Mapping[str, str] = {} if headers is None else headers

    @property
    def body(self) -> bytes:
        """The ``application/x-www-form-urlencoded`` body (RFC 6749 appendix B)."""
        return urlencode(dict(self.form)).encode("utf-8")

    def __repr__(self) -> str:
        # The form holds an assertion or a secret: never show values.
        return f"TokenRequest(url={self.url!r}, fields={sorted(self.form)})"


def build_token_request(
    token_endpoint: str,
    client_id: str,
    scopes: Sequence[str],
    *,
    assertion: str | None = None,
    client_secret: str | None = None,
    secret_method: SecretMethod = "client_secret_post",
    v1_resource: bool = False,
    claims: str | None = None,
    tls_client_auth: bool = False,
) -> TokenRequest:
    """A client-credentials token request authenticated by an assertion, a client secret, or
    (``tls_client_auth``) the TLS client certificate the request is sent with.

    ``v1_resource``: the Entra v1 endpoint takes ``resource=`` (the scope minus
    ``/.default``) instead of ``scope=`` (a v2 request with ``resource`` is AADSTS901002).
    ``claims``: the ``claims`` parameter, a JSON object string (see :mod:`certauth.cae`).
    """
    if (assertion is not None) + (client_secret is not None) + tls_client_auth != 1:
        raise InvalidArgumentError(
            "give exactly one client credential: an assertion, a secret or tls_client_auth"
        )
    form: dict[str, str] = {"grant_type": GRANT_CLIENT_CREDENTIALS}
    headers = {
        "Accept": "application/json",
        "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
    }
    if v1_resource:
        form["resource"] = scopes[0].removesuffix("/.default")
    else:
        form["scope"] = " ".join(scopes)
    if claims is not None:
        form["claims"] = claims
    if tls_client_auth:
        # RFC 8705 section 2: the client_id parameter identifies the client; the certificate
        # in the TLS handshake authenticates it.
        form["client_id"] = client_id
    elif assertion is not None:
        form["client_id"] = client_id
        form["client_assertion_type"] = CLIENT_ASSERTION_TYPE
        form["client_assertion"] = assertion
    elif secret_method == "client_secret_basic":
        # RFC 6749 section 2.3.1: both parts form-urlencoded before base64.
        pair = f"{quote(client_id, safe='')}:{quote(client_secret or '', safe='')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    else:
        form["client_id"] = client_id
        form["client_secret"] = client_secret or ""
    return TokenRequest(token_endpoint, form, headers)


# -- responses ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    """An access token and when it expires (epoch seconds). Its ``repr`` hides the token."""

    access_token: str = field(repr=False)
    expires_on: int
    token_type: str = "Bearer"
    expires_in: int = 0
    #: When to renew ahead of expiry (from the server's ``refresh_in``), epoch seconds.
    refresh_on: int | None = None
    #: Every other response field (``ext_expires_in``, ``scope``, ...), for ``--output json``.
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def as_response(self, *, now: float | None = None) -> dict[str, Any]:
        """The response as the server sent it, plus ``expires_on`` (``--output json``).

        With ``now``, ``expires_in`` is the seconds actually left at ``now`` (a token served
        from a cache has less than the server's original ``expires_in``)."""
        expires_in = self.expires_in if now is None else max(0, self.expires_on - int(now))
        return {
            **self.extra,
            "access_token": self.access_token,
            "token_type": self.token_type,
            "expires_in": expires_in,
            "expires_on": self.expires_on,
        }


#: Seconds and error codes fit in 64 bits; a larger number is not one of them.
_INT_LIMIT = 2**63


def _as_int(value: Any) -> int | None:
    # Some servers (Entra v1, ADFS) send numbers as strings. NaN, 1e400, "\u00b2" (a digit to
    # str.isdigit, not to int) and 5,000-digit numbers read as absent rather than crashing.
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and abs(value) < _INT_LIMIT else None
    if isinstance(value, int):
        return value if abs(value) < _INT_LIMIT else None
    if isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit() and len(text) <= 18:
            return int(text)
    return None


#: RFC 6750 section 2.1: ``b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" )
#: *"="``, the characters a bearer token may have in an ``Authorization`` header (the same as
#: RFC 9110 section 11.2's token68). Used with ``fullmatch``: ``$`` would let a final ``\n`` in.
#: This and the other patterns only a server's answer needs are strings, compiled by ``re`` when
#: first used (and cached there): a token served from the file cache parses no answer.
_B64TOKEN = r"[A-Za-z0-9\-._~+/]+=*"
#: RFC 9110 section 11.1: ``auth-scheme = token`` (section 5.6.2's tchar), e.g. ``Bearer``.
_AUTH_SCHEME = r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+"


def _lifetime(document: Mapping[str, Any], now: float, *, url: str, status: int) -> tuple[int, int]:
    """``(expires_in, expires_on)`` of a token response; a token that is dead on arrival is a
    :class:`TransportError`.

    RFC 6749 section 5.1: ``expires_in`` is the lifetime in seconds; Entra's v1 endpoint and
    ADFS add ``expires_on`` (epoch seconds). A stated ``expires_in`` must be above 0; without
    a usable one, ``expires_on`` must lie in the future. ``expires_on`` wins when it is in the
    future (it was computed where the token was issued); otherwise it is derived from
    ``expires_in``.
    """
    expires_in = _as_int(document.get("expires_in"))
    expires_on = _as_int(document.get("expires_on"))
    if expires_in is None and expires_on is None:
        raise TransportError(
            f"{url}: the token response has no usable expires_in", url=url, status_code=status
        )
    if expires_in is not None and expires_in <= 0:
        raise TransportError(
            f"{url}: the token response says expires_in {expires_in}: the token is already "
            "expired; refused (check the server's token lifetime policy and clock)",
            url=url,
            status_code=status,
        )
    if expires_in is None:
        assert expires_on is not None
        if expires_on <= now:
            raise TransportError(
                f"{url}: the token response has no usable expires_in and its expires_on "
                f"{expires_on} is already past; refused (check the server's and this host's "
                "clocks)",
                url=url,
                status_code=status,
            )
        return expires_on - int(now), expires_on
    if expires_on is None or expires_on < now:
        expires_on = int(now) + expires_in
    return expires_in, expires_on


def _preview(body: bytes) -> str:
    text = body[:120].decode("utf-8", errors="replace")
    return " ".join(text.split())


def parse_json_document(body: bytes, *, url: str, status: int, content_type: str) -> Any:
    """Decode a JSON response body, or raise a :class:`TransportError` quoting its first bytes."""
    if len(body) > MAX_RESPONSE_BYTES:
        raise TransportError(
            f"{url}: the response is larger than {MAX_RESPONSE_BYTES // 1024} KiB; refused",
            url=url,
            status_code=status,
        )
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: [[[[...]]]]
        shown = _preview(body) or "(empty body)"
        raise TransportError(
            f"{url}: HTTP {status} with a {content_type or 'untyped'} body that is not JSON: "
            f"{shown!r}; check the endpoint URL",
            url=url,
            status_code=status,
        ) from None


def parse_token_response(
    status: int, body: bytes, *, url: str, now: float, content_type: str = ""
) -> Token:
    """Turn a token endpoint's answer into a :class:`Token` or a typed error.

    4xx with an OAuth error body -> :class:`TokenRequestError` (with Entra's codes, trace and
    correlation ids, and a hint); anything else unusable -> :class:`TransportError`.
    """
    document = parse_json_document(body, url=url, status=status, content_type=content_type)
    if not isinstance(document, dict):
        raise TransportError(
            f"{url}: HTTP {status} with JSON that is not an object", url=url, status_code=status
        )
    if status >= 400 or "error" in document:
        if isinstance(document.get("error"), str):
            raise _oauth_error(document, status, url)
        raise TransportError(
            f"{url}: HTTP {status} without an OAuth error body: {_preview(body)!r}",
            url=url,
            status_code=status,
        )
    token = document.get("access_token")
    if not isinstance(token, str) or not token:
        raise TransportError(
            f"{url}: HTTP {status} but the answer has no access_token (fields: "
            f"{', '.join(sorted(document)) or 'none'}); this is not a token endpoint",
            url=url,
            status_code=status,
        )
    if not re.fullmatch(_B64TOKEN, token):
        # The token is a secret: say what is wrong with it, never what it is.
        raise TransportError(
            f"{url}: the access_token in the answer holds characters a bearer token cannot "
            "(RFC 6750 section 2.1 allows only letters, digits and -._~+/ then trailing =; "
            "a space or line break could inject a header line); refused: check the endpoint",
            url=url,
            status_code=status,
        )
    token_type = document.get("token_type")
    if not isinstance(token_type, str):
        token_type = "Bearer"
    elif not re.fullmatch(_AUTH_SCHEME, token_type):
        raise TransportError(
            f"{url}: the token_type {token_type[:40]!r} in the answer is not an authentication "
            "scheme name such as Bearer (RFC 9110 section 11.1); refused: check the endpoint",
            url=url,
            status_code=status,
        )
    expires_in, expires_on = _lifetime(document, now, url=url, status=status)
    refresh_in = _as_int(document.get("refresh_in"))
    extra = {
        k: v
        for k, v in document.items()
        if k not in {"access_token", "token_type", "expires_in", "expires_on"}
    }
    return Token(
        access_token=token,
        expires_on=expires_on,
        token_type=token_type,
        expires_in=expires_in,
        refresh_on=int(now) + refresh_in if refresh_in else None,
        extra=extra,
    )


#: Human hints for the common failures, by Entra ID error code (the AADSTS codes of
#: https://learn.microsoft.com/entra/identity-platform/reference-error-codes).
_HINTS: dict[int, str] = {
    700027: (
        "the assertion's signature or certificate thumbprint was not accepted: upload this "
        "certificate (the .crt) to the app registration, check the thumbprint with "
        "`certauth cert thumbprint`, and that the key matches the certificate"
    ),
    50027: "the assertion is malformed or lacks the x5t/x5t#S256 thumbprint header",
    700024: (
        "the assertion is outside its valid time range: this host's clock is probably wrong "
        "(sync it with NTP); assertions are valid for a few minutes"
    ),
    700023: "the assertion's aud must be exactly the token endpoint URL the request went to",
    5002741: "the assertion must have exactly one aud, the token endpoint URL",
    700016: (
        "no app with this client id in this tenant: check client_id= and tenant_id=, and that "
        "the app (or its service principal) exists in that tenant"
    ),
    90002: "the tenant does not exist: check tenant_id= (a GUID or a verified domain)",
    9001023: "client credentials need a specific tenant, not /common",
    50048: "the assertion's iss and sub must both be the client id",
    700021: "the assertion's iss/sub must equal the client_id sent with it",
    50032: "Entra ID needs an RSA key of at least 2048 bits",
    5002738: "Entra ID accepts only RSA (RS256/PS256) assertions; use an RSA certificate",
    1000502: "the registered certificate is expired or not yet valid: register a new one",
    1002012: "app-only tokens take only RESOURCE/.default as scope",
    70011: "the scope is malformed: use RESOURCE/.default",
    500011: (
        "the resource is not known in this tenant: check the App ID URI, and that the API's "
        "service principal exists (admin consent)"
    ),
    700022: "request one resource per token",
    7000215: "the client secret is wrong: use the secret's value, not its ID",
    7000222: "the client secret has expired: create a new one",
    7000218: "the request carries no client credential (assertion or secret)",
    70003: "the server does not support this grant type for this app",
    900144: "the request lacks grant_type",
    901002: "the v2 endpoint takes scope=, not resource=",
    700025: "public clients cannot use client credentials: enable them as confidential clients",
    7000112: "the app is disabled in this tenant",
    50105: "roles/consent are missing: an admin must grant the application permissions",
    65001: "consent is missing: an admin must grant the API permissions (admin consent)",
}
_ERROR_HINTS: dict[str, str] = {
    "invalid_client": "the client credential was refused: check the client id and credential",
    "unauthorized_client": "this client may not use this grant: check the app's configuration",
    "invalid_scope": "the scope is not valid for app-only tokens: use RESOURCE/.default",
    "invalid_grant": "the grant was refused",
}


def hint_for(error: str | None, codes: Sequence[int], description: str | None) -> str | None:
    """A human hint for an OAuth error: by Entra code first, then by ``error``.

    Branches on codes, never on the description text (which Microsoft changes).
    """
    for code in codes:
        if code in _HINTS:
            return _HINTS[code]
    if description and description.startswith("AADB2C99027"):
        return "Azure AD B2C takes only client secrets for client credentials, not certificates"
    return _ERROR_HINTS.get(error or "")


#: Entra ID's code for "the assertion's signing certificate is not registered on the app".
_UNKNOWN_CERTIFICATE = 700027


def name_certificate(exc: TokenRequestError, *, sha1: str, sha256: str) -> None:
    """Add the thumbprints of the certificate that signed the assertion to an AADSTS700027
    refusal's hint (in place). Entra ID's text quotes the SHA-256 thumbprint; the portal and
    ``certauth cert thumbprint`` show SHA-1: both, labelled, let the user match them."""
    if _UNKNOWN_CERTIFICATE not in exc.error_codes or (exc.hint and sha1 in exc.hint):
        return
    known = (
        f"this credential's certificate has SHA-1 thumbprint {sha1} (as the portal and "
        f"`certauth cert thumbprint` show it) and SHA-256 thumbprint {sha256}"
    )
    old_hint = exc.hint
    exc.hint = f"{old_hint}; {known}" if old_hint else known
    if old_hint and exc.message.endswith(f"; hint: {old_hint}"):
        exc.message = f"{exc.message[: -len(old_hint)]}{exc.hint}"
    else:
        exc.message = f"{exc.message}; hint: {exc.hint}"
    exc.args = (exc.message,)


#: The server's first line is quoted in the one-line message up to about this many characters.
_SUMMARY_CHARS = 300
#: The lines Entra ID appends to ``error_description``; their values are the response's own
#: ``trace_id``, ``correlation_id`` and ``timestamp`` fields, reported as such.
_ENTRA_TRAILER = r"(?i)(Trace ID|Correlation ID|Timestamp):"


def description_lines(description: str | None) -> list[str]:
    """The lines of an ``error_description`` that say what went wrong: blank lines and the
    ``Trace ID:`` / ``Correlation ID:`` / ``Timestamp:`` lines Entra ID appends dropped."""
    if not description:
        return []
    lines = (line.strip() for line in description.splitlines())
    return [line for line in lines if line and not re.match(_ENTRA_TRAILER, line)]


def shorten(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters at a space, never inside a word (``" ..."``
    marks the cut); only a run without spaces over half of ``limit`` long (a token, a dump:
    no prose) is cut where it must (``"..."``)."""
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit + 1)
    if cut < limit // 2:
        return f"{text[:limit]}..."
    return f"{text[:cut].rstrip()} ..."


def read_oauth_error(body: bytes, *, status: int, url: str) -> TokenRequestError | None:
    """The OAuth error (RFC 6749 section 5.2) a response body carries, or ``None`` when the
    body is not a JSON object with a string ``error``."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: [[[[...]]]]
        return None
    if not isinstance(document, dict) or not isinstance(document.get("error"), str):
        return None
    return _oauth_error(document, status, url)


def _oauth_error(document: Mapping[str, Any], status: int, url: str) -> TokenRequestError:
    error = str(document.get("error"))
    description = document.get("error_description")
    description = description if isinstance(description, str) else None
    raw_codes = document.get("error_codes")
    codes = (
        [c for c in (_as_int(v) for v in raw_codes) if c is not None]
        if isinstance(raw_codes, list)
        else []
    )
    if not codes and description:
        match = re.match(r"AADSTS([0-9]{1,18})", description)
        if match:
            codes = [int(match[1])]
    hint = hint_for(error, codes, description)
    lines = description_lines(description)
    parts = [f"{url}: the server refused the token request: {error}"]
    if lines:
        parts.append(f"({shorten(lines[0], _SUMMARY_CHARS)})")
    message = " ".join(parts)
    if hint:
        message += f"; hint: {hint}"

    def text(name: str) -> str | None:
        value = document.get(name)
        return value if isinstance(value, str) else None

    return TokenRequestError(
        message,
        error=error,
        error_description=description,
        error_codes=codes,
        trace_id=text("trace_id"),
        correlation_id=text("correlation_id"),
        timestamp=text("timestamp"),
        status_code=status,
        hint=hint,
        response=document,
        url=url,
    )


# -- retries ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter for transient failures.

    Retried: connection errors, timeouts, 429 (honouring ``Retry-After``) and 5xx. Never
    retried: 4xx OAuth errors (the same request would fail the same way).

    ``total_timeout`` bounds one whole call (``get_token``, ``request_token``, a verifier's key
    fetch): every attempt and every wait between attempts, discovery included. Each attempt
    also has the credential's ``timeout``, whichever ends first; no wait runs past the bound,
    and a call that spent it fails with a :class:`~certauth.errors.TransportError` saying so.
    ``None`` (the default): only ``max_attempts`` and the per-attempt ``timeout`` bound it.
    """

    max_attempts: int = 4
    base_delay: float = 0.25
    max_delay: float = 8.0
    #: A ``Retry-After`` longer than this is not waited for: the failure is reported instead.
    max_retry_after: float = 30.0
    #: Seconds for all attempts and back-off of one call (``None``: no bound of its own).
    total_timeout: float | None = None

    def __post_init__(self) -> None:
        if self.total_timeout is not None and not self.total_timeout > 0:
            raise InvalidArgumentError(
                f"total_timeout must be above 0 seconds (or None), got {self.total_timeout}"
            )

    def delay(
        self,
        attempt: int,
        *,
        status: int | None = None,
        retry_after: str | None = None,
        now: float = 0.0,
        rng: random.Random | None = None,
    ) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or ``None`` to stop retrying.

        ``attempt`` counts from 1. ``status`` is ``None`` for a transport error.
        """
        if attempt >= self.max_attempts:
            return None
        if status is not None and status != 429 and status < 500:
            return None
        if status is not None and retry_after:
            waited = parse_retry_after(retry_after, now=now)
            if waited is not None:
                return waited if waited <= self.max_retry_after else None
        ceiling = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        if rng is None:
            import random  # here: only a retry needs it (a token from a cache never does)

            return random.uniform(0, ceiling)  # noqa: S311 - jitter, not security
        return rng.uniform(0, ceiling)


def parse_retry_after(value: str, *, now: float) -> float | None:
    """RFC 9110 section 10.2.3: delay-seconds or an HTTP-date."""
    value = value.strip()
    if value.isdigit():
        return float(value)
    import email.utils  # here: ~10 ms of imports that only a Retry-After date needs

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)
