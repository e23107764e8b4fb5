"""What the emulator's checks are given: the parsed token request and how strict to be."""

from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography import x509

from certauth import _jose
from certauth.emulator.tokens import Endpoint

__all__ = [
    "DEFAULT_MAX_ASSERTION_LIFETIME",
    "DEFAULT_SKEW",
    "PeerCertificate",
    "Policy",
    "ReplayCache",
    "TokenRequest",
]

#: Entra ID documents no skew; five minutes is the .NET (and Entra's observed) tolerance.
DEFAULT_SKEW = 300
#: Strict mode's assertion lifetime cap (Microsoft recommends 5-10 minutes).
DEFAULT_MAX_ASSERTION_LIFETIME = 600


@dataclass(frozen=True)
class Policy:
    """How picky the emulator is: Entra's rules (default) or ``strict`` RFC 7523 on top."""

    strict: bool = False
    skew: int = DEFAULT_SKEW
    max_assertion_lifetime: int = DEFAULT_MAX_ASSERTION_LIFETIME


@dataclass(frozen=True)
class PeerCertificate:
    """The TLS client certificate a request on the mutual-TLS listener came with."""

    #: The certificate, DER.
    der: bytes
    #: Whether the handshake verified it through a client CA (the PKI path of RFC 8705
    #: section 2.1), rather than as a registered certificate trusting itself; ``None`` when the
    #: session does not say (a resumed TLS session keeps no verified chain).
    via_client_ca: bool | None = None

    @functools.cached_property
    def sha256(self) -> bytes:
        """SHA-256 of the DER: how a registered certificate is matched (RFC 8705 section 2.2)."""
        return hashlib.sha256(self.der).digest()

    @property
    def x5t_s256(self) -> str:
        """The ``x5t#S256`` confirmation a bound token carries (RFC 8705 section 3.1)."""
        return _jose.b64url_encode(self.sha256)

    @property
    def sha1_hex(self) -> str:
        """The SHA-1 thumbprint as uppercase hex, as the portal and AADSTS texts show it."""
        return hashlib.sha1(self.der, usedforsecurity=False).hexdigest().upper()

    @functools.cached_property
    def certificate(self) -> x509.Certificate:
        """The parsed certificate."""
        return x509.load_der_x509_certificate(self.der)


@dataclass(frozen=True)
class TokenRequest:
    """One POST to a token endpoint, as the HTTP layer parsed it.

    ``url`` is the endpoint as the client addressed it (scheme, ``Host`` header, path) and
    ``base_url`` its scheme and host: what an assertion's ``aud`` must name. ``mtls`` says the
    request came in on the mutual-TLS listener, ``peer`` the certificate it presented there.
    """

    endpoint: Endpoint
    tenant: str
    url: str
    base_url: str
    form: Mapping[str, str]
    policy: str | None = None
    authorization: str | None = None
    mtls: bool = False
    peer: PeerCertificate | None = None


class ReplayCache:
    """Strict mode's memory of used ``jti`` values, each kept until its assertion expires."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], float] = {}
        self._max = max_entries

    def add(self, client_id: str, jti: str, *, expires: float, now: float) -> bool:
        """Record ``jti``; ``False`` if it was already used and has not expired."""
        key = (client_id.lower(), jti)
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and seen >= now:
                return False
            if len(self._seen) >= self._max:
                self._seen = {k: v for k, v in self._seen.items() if v >= now}
            self._seen[key] = expires
            return True

    def clear(self) -> None:
        """Forget every ``jti``."""
        with self._lock:
            self._seen.clear()
