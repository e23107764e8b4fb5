"""What a test does to the emulator's token endpoint: signing keys, faults, counters, replay
caches and DPoP nonces (the :class:`~certauth.emulator.Emulator` methods, as a mixin so the
emulator's service module stays small)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from certauth.emulator.token_endpoint import FaultPlan, RequestHold, TokenEndpoint
from certauth.errors import InvalidArgumentError

if TYPE_CHECKING:
    from certauth.emulator.tokens import KeyRing

__all__ = ["TokenEndpointControls"]

log = logging.getLogger("certauth.emulator")


class TokenEndpointControls:
    """The :class:`~certauth.emulator.Emulator` methods that steer its token endpoint."""

    if TYPE_CHECKING:
        _keys: KeyRing
        _token_endpoint: TokenEndpoint

        @property
        def issuer(self) -> str: ...

    # -- signing keys, faults, counters ---------------------------------------------------------

    def rotate_keys(self) -> str:
        """Sign with a new key from now on; the previous ones stay in the JWKS. Returns its kid."""
        key = self._keys.rotate()
        log.info("signing key rotated; new kid %s", key.kid)
        return key.kid

    @property
    def signing_kid(self) -> str:
        """The ``kid`` new access tokens carry."""
        return self._keys.current.kid

    def jwks(self) -> dict[str, Any]:
        """The key set the JWKS endpoint serves (v2 form, with ``issuer``)."""
        return self._keys.jwks(self.issuer)

    def inject_faults(
        self,
        status: int | None = None,
        *,
        count: int = 1,
        retry_after: int | None = None,
        delay: float = 0.0,
        html: bool = False,
        body: bytes | None = None,
        hold: RequestHold | None = None,
    ) -> None:
        """Answer the next ``count`` token requests abnormally (replacing earlier plans).

        ``status`` (e.g. 429, 503) with an Entra-style JSON body and, with ``retry_after``, a
        ``Retry-After`` header; ``delay`` waits that many seconds first (alone, it only delays
        normal answers); ``html`` sends an HTML page instead of JSON, with ``status`` or 200
        (what captive portals and proxy login pages send); ``body`` sends those bytes as JSON
        with ``status`` or 200 (for example a 200 that is not a token response); ``hold``
        keeps each of them unanswered until the test releases it (before the rest of the
        plan applies; alone, it only holds normal answers), so a test acts while a request is
        in flight instead of racing a ``delay``.
        """
        if count < 1:
            raise InvalidArgumentError("count must be at least 1")
        if status is not None and not 100 <= status <= 599:
            raise InvalidArgumentError(f"status {status} is not an HTTP status")
        if delay < 0:
            raise InvalidArgumentError("delay cannot be negative")
        plan = FaultPlan(count, status, retry_after, float(delay), html, body, hold)
        self._token_endpoint.plan_faults(plan)

    def clear_faults(self) -> None:
        """Answer normally again."""
        self._token_endpoint.plan_faults(None)

    @property
    def request_count(self) -> int:
        """Token requests received (every POST to a token endpoint, whatever the answer)."""
        return self._token_endpoint.request_count

    def reset_request_count(self) -> int:
        """Set :attr:`request_count` back to 0; returns the count before."""
        return self._token_endpoint.reset_request_count()

    @property
    def last_thumbprint(self) -> str | None:
        """``x5t#S256`` of the certificate behind the last accepted assertion, or of the TLS
        client certificate that authenticated on the mutual-TLS listener (for rotation tests:
        which of an app's certificates did the client use?)."""
        return self._token_endpoint.last_thumbprint

    @property
    def claims_received(self) -> list[str | None]:
        """The ``claims`` parameter of each token request received since the last
        :meth:`reset_request_count` (``None`` for a request without one), oldest first;
        requests answered by an injected fault are not read."""
        return self._token_endpoint.claims_received

    @property
    def last_claims(self) -> str | None:
        """The ``claims`` parameter of the last token request (``None``: it had none, or no
        request was read yet)."""
        received = self._token_endpoint.claims_received
        return received[-1] if received else None

    def reset_replay_cache(self) -> None:
        """Forget the ``jti`` values strict mode has seen."""
        self._token_endpoint.replay.clear()

    # -- DPoP nonces (RFC 9449 section 8) -----------------------------------------------------

    @property
    def dpop_nonce(self) -> str | None:
        """The nonce DPoP proofs must carry now (``None`` unless ``dpop_nonce=True`` or
        :meth:`rotate_dpop_nonce`); every token response names it in ``DPoP-Nonce``."""
        return self._token_endpoint.dpop.nonces.current

    def rotate_dpop_nonce(self) -> str:
        """Make a new DPoP nonce and return it; proofs carrying the previous one are accepted
        until the next rotation, older ones get ``use_dpop_nonce`` (RFC 9449 section 8).
        Turns nonces on if the emulator did not require them."""
        nonce = self._token_endpoint.dpop.nonces.rotate()
        log.info("DPoP nonce rotated")
        return nonce
