"""Entra ID's refusals: the OAuth error, the AADSTS code and the error body it sends.

The codes, and the body's shape (``error``, ``error_description`` with trace and correlation
ids and a timestamp, ``error_codes``, ``trace_id``, ``correlation_id``, ``timestamp``,
``error_uri``), are those of "Microsoft Entra authentication and authorization error codes",
https://learn.microsoft.com/entra/identity-platform/reference-error-codes.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

__all__ = ["EntraError", "OAuthError", "missing_parameter"]

# code -> (OAuth error, HTTP status). RFC 6749 section 5.2: a failed client authentication
# (invalid_client) may be 401, everything else is 400. Entra ID answers invalid_client with 401.
_ERRORS: dict[int, tuple[str, int]] = {
    90002: ("invalid_request", 400),
    90100: ("invalid_request", 400),
    9001023: ("invalid_request", 400),
    900144: ("invalid_request", 400),
    900561: ("invalid_request", 400),
    70003: ("unsupported_grant_type", 400),
    901002: ("invalid_request", 400),
    700016: ("unauthorized_client", 400),
    7000218: ("invalid_client", 401),
    50027: ("invalid_request", 400),
    5002738: ("invalid_request", 400),
    5002730: ("invalid_request", 400),
    700027: ("invalid_client", 401),
    50032: ("invalid_client", 401),
    1000502: ("invalid_client", 401),
    50048: ("invalid_client", 401),
    700021: ("invalid_client", 401),
    5002741: ("invalid_client", 401),
    700023: ("invalid_client", 401),
    700024: ("invalid_client", 401),
    70021: ("invalid_client", 401),
    1002012: ("invalid_scope", 400),
    500011: ("invalid_resource", 400),
    70011: ("invalid_scope", 400),
    700022: ("invalid_scope", 400),
    7000215: ("invalid_client", 401),
    7000222: ("invalid_client", 401),
    99027: ("invalid_request", 400),  # AADB2C99027
}


class EntraError(Exception):
    """A refusal in Entra ID's terms: OAuth ``error``, AADSTS ``code``, text and HTTP status.

    ``b2c`` errors are numbered AADB2Cnnnnn and rendered the way Azure AD B2C renders them
    (no ``error_codes``, no trace id).
    """

    def __init__(
        self, code: int, text: str, *, b2c: bool = False, basic_auth: bool = False
    ) -> None:
        super().__init__(f"{'AADB2C' if b2c else 'AADSTS'}{code}: {text}")
        self.code = code
        self.text = text
        self.b2c = b2c
        self.error, self.status = _ERRORS[code]
        #: RFC 6749 section 5.2: a 401 after HTTP Basic authentication names the scheme.
        self.basic_auth = basic_auth

    @property
    def aadsts(self) -> str:
        """The code as Entra writes it, e.g. ``AADSTS700027`` or ``AADB2C99027``."""
        return f"{'AADB2C' if self.b2c else 'AADSTS'}{self.code}"

    @property
    def summary(self) -> str:
        """The text's first sentence, for log lines."""
        return self.text.split(". ", 1)[0].split(" [", 1)[0]

    def body(
        self, *, trace_id: str, correlation_id: str, now: dt.datetime, base_url: str
    ) -> dict[str, Any]:
        """The JSON error body, shaped like the sample response of "Microsoft Entra
        authentication and authorization error codes"
        (https://learn.microsoft.com/entra/identity-platform/reference-error-codes)."""
        stamp = now.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
        if self.b2c:
            return {
                "error": self.error,
                "error_description": (
                    f"{self.aadsts}: {self.text}\r\nCorrelation ID: {correlation_id}\r\n"
                    f"Timestamp: {stamp}\r\n"
                ),
            }
        return {
            "error": self.error,
            "error_description": (
                f"{self.aadsts}: {self.text}\r\nTrace ID: {trace_id}\r\n"
                f"Correlation ID: {correlation_id}\r\nTimestamp: {stamp}"
            ),
            "error_codes": [self.code],
            "timestamp": stamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": f"{base_url}/error?code={self.code}",
        }


class OAuthError(EntraError):
    """A refusal under a rule Entra ID has no AADSTS code for: DPoP (RFC 9449) and mutual TLS
    client authentication (RFC 8705) on the emulator's token endpoint.

    The body keeps the emulator's usual fields that fit (``error``, ``error_description`` with
    the trace and correlation ids and the timestamp, ``trace_id``, ``correlation_id``,
    ``timestamp``) and leaves out those that name a code (``error_codes``, ``error_uri``).
    """

    def __init__(self, error: str, text: str, *, status: int = 400) -> None:
        Exception.__init__(self, f"{error}: {text}")
        self.code = 0
        self.text = text
        self.b2c = False
        self.error = error
        self.status = status
        self.basic_auth = False

    @property
    def aadsts(self) -> str:
        """No AADSTS code: the OAuth ``error`` stands in for it in log lines."""
        return self.error

    def body(
        self, *, trace_id: str, correlation_id: str, now: dt.datetime, base_url: str
    ) -> dict[str, Any]:
        """The JSON error body: Entra's shape without a code."""
        stamp = now.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
        return {
            "error": self.error,
            "error_description": (
                f"{self.text}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\n"
                f"Timestamp: {stamp}"
            ),
            "timestamp": stamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
        }


def missing_parameter(parameter: str) -> EntraError:
    return EntraError(
        900144, f"The request body must contain the following parameter: '{parameter}'."
    )
