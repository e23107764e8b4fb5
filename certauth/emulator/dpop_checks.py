"""DPoP on the emulator's token endpoint (RFC 9449 section 5): the proof a token request
carries, the server's nonces (section 8), and the errors a refused proof gets.

The checks of a proof are :func:`certauth.dpop.check_proof`'s (section 4.3): this module only
decides what the token endpoint passes to it (the method, the URL as the client addressed it,
the nonce it requires, one replay cache per emulator) and how a refusal is answered:
``invalid_dpop_proof``, or ``use_dpop_nonce`` when only the nonce was missing or stale
(section 8). An accepted proof's ``jkt`` becomes the token's ``cnf.jkt`` and its
``token_type`` ``DPoP`` (section 5, in :mod:`certauth.emulator.token_endpoint`).
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from certauth import _jose
from certauth.dpop import DPoPProof, JtiCache, check_proof
from certauth.emulator.entra_errors import OAuthError
from certauth.errors import TokenValidationError

__all__ = ["DPOP_SIGNING_ALGS", "DPoPNonces", "TokenEndpointDPoP", "new_nonce"]

T = TypeVar("T")

#: The proof algorithms :func:`~certauth.dpop.check_proof` accepts, as discovery lists them in
#: ``dpop_signing_alg_values_supported`` (RFC 9449 section 5.1).
DPOP_SIGNING_ALGS: tuple[str, ...] = tuple(_jose.ALGORITHMS)

#: Random bytes in a nonce: 16 give 22 base64url characters, all in the NQCHAR set of
#: RFC 9449 section 8.1, and 128 bits no client can guess.
_NONCE_BYTES = 16


def new_nonce() -> str:
    """A fresh server nonce: 22 random base64url characters (RFC 9449 section 8.1 allows any
    printable ASCII but ``"`` and ``\\``)."""
    return secrets.token_urlsafe(_NONCE_BYTES)


class DPoPNonces:
    """The server-provided nonces of RFC 9449 section 8: off, or a current nonce plus the one
    before it (a client that fetched the previous nonce just before a rotation is not sent
    round again). Thread-safe."""

    def __init__(self, *, required: bool) -> None:
        self._lock = threading.Lock()
        self._current = new_nonce() if required else None
        self._previous: str | None = None

    @property
    def required(self) -> bool:
        """Whether proofs must carry a nonce."""
        return self._current is not None

    @property
    def current(self) -> str | None:
        """The nonce every token response announces in ``DPoP-Nonce`` (``None``: off)."""
        with self._lock:
            return self._current

    def accepted(self) -> tuple[str, ...]:
        """The nonces a proof may carry now, current first (empty: none required)."""
        with self._lock:
            return tuple(n for n in (self._current, self._previous) if n is not None)

    def check_with(self, check: Callable[[str | None], T]) -> T:
        """``check(nonce)``'s result for a nonce the server accepts now (current first; ``None``
        when none is required). A :class:`TokenValidationError` other than ``dpop_nonce``
        stops at once; ``dpop_nonce`` is raised only once no accepted nonce passed."""
        accepted = self.accepted() or (None,)
        for nonce in accepted:
            try:
                return check(nonce)
            except TokenValidationError as exc:
                if exc.check != "dpop_nonce" or nonce == accepted[-1]:
                    raise
        raise AssertionError("unreachable: the last nonce's refusal is raised")

    def rotate(self) -> str:
        """Make a new current nonce; the current one stays accepted until the next rotation.
        Turns nonces on if they were off."""
        with self._lock:
            self._previous, self._current = self._current, new_nonce()
            return self._current


class TokenEndpointDPoP:
    """Checks the ``DPoP`` header of token requests for one emulator (RFC 9449 section 5).

    ``require_nonce`` makes the server demand its nonce in every proof (section 8).
    """

    def __init__(self, *, require_nonce: bool = False) -> None:
        self.nonces = DPoPNonces(required=require_nonce)
        #: The ``jti`` of every proof accepted within its window (section 11.1).
        self.seen_jti = JtiCache()

    def check(self, values: Sequence[str], *, htu: str, now: float) -> DPoPProof | None:
        """The accepted proof among the request's ``DPoP`` header ``values`` (``None``: the
        request has none, so the token is a bearer token).

        ``htu`` is the token endpoint as the client addressed it. Raises :class:`OAuthError`
        ``invalid_dpop_proof``, or ``use_dpop_nonce`` when the proof lacks the current nonce.
        """
        if not values:
            return None
        try:
            return self.nonces.check_with(
                lambda nonce: check_proof(
                    values, htm="POST", htu=htu, nonce=nonce, now=now, seen_jti=self.seen_jti
                )
            )
        except TokenValidationError as exc:
            if exc.check != "dpop_nonce":
                # Section 5: a token request whose proof is not valid gets invalid_dpop_proof.
                raise OAuthError("invalid_dpop_proof", str(exc)) from None
        # Section 8: the nonce is missing or no longer current; the answer names the current one
        # in its DPoP-Nonce header (the token endpoint puts it on every response).
        raise OAuthError(
            "use_dpop_nonce",
            "Authorization server requires nonce in DPoP proof: put the DPoP-Nonce header's "
            "value in the proof's 'nonce' claim and send the request again (RFC 9449 section 8).",
        )
