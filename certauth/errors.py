"""Typed exceptions raised by certauth.

Every exception derives from :class:`CertauthError` and carries the CLI exit code that the
failure maps to (see docs/exit-codes.md). Messages are one line: what happened, where
(the file, field or URL) and what to do. They never contain private keys, passwords, client
secrets, assertions or access tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "CertauthError",
    "CertificateError",
    "ConfigurationError",
    "GraphError",
    "InputFileError",
    "InvalidArgumentError",
    "KeyMismatchError",
    "LocalInputError",
    "OutputExistsError",
    "PasswordError",
    "SignerError",
    "TenantNotAllowedError",
    "TokenRequestError",
    "TokenValidationError",
    "TransportError",
    "UnsupportedKeyError",
]


class CertauthError(Exception):
    """Base class of every error certauth raises on purpose."""

    #: The ``certauth`` CLI exits with this code when the error reaches it.
    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidArgumentError(CertauthError, ValueError):
    """A parameter has a value certauth refuses (a usage error; CLI exit 2)."""

    exit_code = 2


class LocalInputError(CertauthError):
    """Something local is wrong: a file, a password, a configuration (CLI exit 3)."""

    exit_code = 3


class CertificateError(LocalInputError):
    """A certificate or key file is missing, unreadable or not what was expected."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class PasswordError(CertificateError):
    """A private key or PFX needs a password, or the password given is wrong."""


class KeyMismatchError(CertificateError):
    """The private key does not belong to the certificate."""


class UnsupportedKeyError(CertificateError):
    """The key type or size cannot be used (for example an EC key or RSA < 2048 for Entra ID)."""


class SignerError(LocalInputError):
    """A signer could not sign (CLI exit 3): a PKCS#11 token removed or locked, a wrong PIN, a
    Key Vault key missing or not allowed to sign, the vault unreachable or throttling.

    ``backend`` names it (``pkcs11``, ``keyvault``, ...); ``transient`` says whether a retry
    may help (a throttled or unreachable vault), so callers retry it with the same policy as
    the token endpoint. The message never holds a PIN, a vault token or key material.
    """

    def __init__(self, message: str, *, backend: str, transient: bool = False) -> None:
        super().__init__(message)
        self.backend = backend
        self.transient = transient


class OutputExistsError(LocalInputError):
    """An output file exists and ``force`` was not given; nothing was written."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class ConfigurationError(LocalInputError):
    """A configuration value (authority, endpoint, cache, environment variable) is unusable."""


class InputFileError(ConfigurationError):
    """A local input file that is not a certificate or key is refused (CLI exit 3).

    Password files, client secret files, federated token files, JWKS files and emulator
    configuration files: missing, unreadable, too large, empty, or not what they should hold.
    ``path`` names the file. Certificate and key files raise :class:`CertificateError` instead.
    A subclass of :class:`ConfigurationError` because these files are how certauth is
    configured (a flag or an environment variable names each one), and code that caught
    ``ConfigurationError`` for them keeps working.
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class TenantNotAllowedError(ConfigurationError):
    """A call asked for a token from a tenant this credential is not configured for (CLI exit 3).

    Raised by ``get_token(..., tenant_id=T)`` / ``get_token_info(..., options={"tenant_id": T})``
    before anything is sent, when ``T`` is neither the credential's tenant nor allowed by
    ``additionally_allowed_tenants`` (or ``AZURE_ADDITIONALLY_ALLOWED_TENANTS``), or when the
    credential has no tenant to swap (ADFS, Azure AD B2C, a ``token_endpoint=`` or ``issuer=``).
    ``tenant_id`` is the tenant asked for.
    """

    def __init__(self, message: str, *, tenant_id: str) -> None:
        super().__init__(message)
        self.tenant_id = tenant_id


class TokenRequestError(CertauthError):
    """The token server refused the request (an OAuth 2.0 error response; CLI exit 4).

    Carries everything the server said that helps diagnosis: ``error`` (RFC 6749 code),
    ``error_description``, ``error_codes`` (Entra ID's numeric codes), ``aadsts`` (the first
    code as ``"AADSTS700027"``), ``trace_id``, ``correlation_id``, ``timestamp``, the HTTP
    ``status_code``, a human ``hint`` for the common causes and the ``url`` that refused.
    """

    exit_code = 4

    def __init__(
        self,
        message: str,
        *,
        error: str | None = None,
        error_description: str | None = None,
        error_codes: Sequence[int] = (),
        trace_id: str | None = None,
        correlation_id: str | None = None,
        timestamp: str | None = None,
        status_code: int | None = None,
        hint: str | None = None,
        response: Mapping[str, Any] | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(message)
        #: The token endpoint that refused (``None`` when not known).
        self.url = url
        self.error = error
        self.error_description = error_description
        self.error_codes = tuple(error_codes)
        self.trace_id = trace_id
        self.correlation_id = correlation_id
        self.timestamp = timestamp
        self.status_code = status_code
        self.hint = hint
        self.response: Mapping[str, Any] = dict(response or {})

    @property
    def aadsts(self) -> str | None:
        """The first Entra ID error code as ``"AADSTSnnnn"`` (``None`` for other servers)."""
        if self.error_codes:
            return f"AADSTS{self.error_codes[0]}"
        if self.error_description and self.error_description.startswith("AADSTS"):
            return self.error_description.split(":", 1)[0]
        return None

    def to_dict(self) -> dict[str, Any]:
        """The diagnostic fields as a JSON-ready mapping (for ``--json`` output and logs)."""
        return {
            "error": self.error,
            "error_description": self.error_description,
            "error_codes": list(self.error_codes),
            "aadsts": self.aadsts,
            "trace_id": self.trace_id,
            "correlation_id": self.correlation_id,
            "timestamp": self.timestamp,
            "status_code": self.status_code,
            "hint": self.hint,
        }


class GraphError(CertauthError):
    """Microsoft Graph refused a request (CLI exit 4), e.g. ``addKey`` during a rotation.

    Carries what Graph's error answer holds and what Microsoft support asks for: the HTTP
    status, Graph's error ``code`` (``Authorization_RequestDenied``...), its message, and the
    ``request_id`` and ``date`` of the request (https://learn.microsoft.com/en-us/graph/errors).
    """

    exit_code = 4

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        status_code: int | None = None,
        code: str | None = None,
        graph_message: str | None = None,
        request_id: str | None = None,
        date: str | None = None,
    ) -> None:
        super().__init__(message)
        self.url = url
        self.status_code = status_code
        self.code = code
        self.graph_message = graph_message
        self.request_id = request_id
        self.date = date

    def to_dict(self) -> dict[str, Any]:
        """The diagnostic fields as a JSON-ready mapping (for ``--json`` output and logs)."""
        return {
            "error": "graph_error",
            "message": self.message,
            "status_code": self.status_code,
            "code": self.code,
            "graph_message": self.graph_message,
            "request_id": self.request_id,
            "date": self.date,
        }


class TransportError(CertauthError):
    """The server could not be reached or did not answer usably (CLI exit 5).

    Covers connection failures, timeouts, TLS verification failures, 5xx and 429 after the
    retries, and 2xx answers that are not token responses.
    """

    exit_code = 5

    def __init__(self, message: str, *, url: str | None = None, status_code: int | None = None):
        super().__init__(message)
        self.url = url
        self.status_code = status_code


class TokenValidationError(CertauthError):
    """An access token failed verification (CLI exit 6). ``check`` names the failed check."""

    exit_code = 6

    def __init__(self, message: str, *, check: str) -> None:
        super().__init__(message)
        self.check = check
