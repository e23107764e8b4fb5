"""A credential's DPoP binding (RFC 9449): its proof key, the nonces servers gave it, and the
rules of a DPoP token request.

``dpop=`` on a credential makes one :class:`DPoPBinding`. The planner hands it every token
request (a fresh proof per attempt, a nonce demand answered once, a token that is not DPoP
refused) and keys its cache by the key's thumbprint; :class:`~certauth.auth.BearerAuth` and
:meth:`DPoPCredential.make_dpop_proof` make the proofs of API calls with it. The proofs
themselves, the nonce rules and the key are :mod:`certauth.dpop`'s (imported here on first
use, so a credential without ``dpop=`` never loads it).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from certauth._flow import Budget, Failure, Flow, Reply, Send
from certauth.errors import ConfigurationError, InvalidArgumentError
from certauth.protocol import Token

if TYPE_CHECKING:
    from certauth.credential.planner import Planner
    from certauth.dpop import DPoPKey

__all__ = ["DPoPBinding", "DPoPCredential", "binding_for"]

#: RFC 9449 section 5: the ``token_type`` of a DPoP-bound access token (compared without
#: regard to case, as RFC 6749 section 5.1 says of token types).
TOKEN_TYPE = "DPoP"
#: Origins whose nonce is remembered at once: a credential talks to a handful of servers; the
#: bound keeps a client that calls many APIs from growing the table for ever.
_MAX_ORIGINS = 256

Headers = Mapping[str, str] | Iterable[tuple[str, str]]


def binding_for(dpop: object, clock: Callable[[], float]) -> DPoPBinding | None:
    """The binding ``dpop=`` asks for: ``None`` for ``False``, a fresh EC P-256 key for
    ``True``, the key itself for a :class:`~certauth.dpop.DPoPKey`. Anything else is an
    :class:`~certauth.errors.InvalidArgumentError` naming ``dpop=``."""
    if dpop is False:
        return None
    from certauth.dpop import DPoPKey

    if dpop is True:
        return DPoPBinding(DPoPKey.generate(), clock)
    if isinstance(dpop, DPoPKey):
        return DPoPBinding(dpop, clock)
    raise InvalidArgumentError(
        f"dpop= must be True, False or a certauth.dpop.DPoPKey, not {type(dpop).__name__}; "
        "for a key of your own, pass DPoPKey.from_private_key(key)"
    )


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``, normalised as a proof's ``htu`` is: the unit a
    server's nonce belongs to (RFC 9449 section 8: the nonce of the server that sent it)."""
    from certauth.dpop import normalize_htu

    parts = urlsplit(normalize_htu(url))
    return f"{parts.scheme}://{parts.netloc}"


def _json_object(body: bytes) -> Mapping[str, Any] | None:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return document if isinstance(document, dict) else None


class DPoPBinding:
    """A credential's DPoP key, and the last nonce each server origin sent (RFC 9449 sections
    8.2 and 9: a server may send a fresh ``DPoP-Nonce`` on any answer, for the client's next
    proof to it). Thread-safe: one table entry is replaced in one assignment."""

    __slots__ = ("_clock", "_nonces", "key")

    def __init__(self, key: DPoPKey, clock: Callable[[], float]) -> None:
        self.key = key
        #: The credential's clock: a proof's ``iat`` reads it, as an assertion's does.
        self._clock = clock
        self._nonces: dict[str, str] = {}

    @property
    def cache_tag(self) -> str:
        """What the cache key of a token bound to this key carries: its ``jkt``, so a token
        bound to one key is never served to a credential holding another (section 6.1)."""
        return f"#dpop={self.key.thumbprint}"

    def proof(self, htm: str, htu: str, *, access_token: str | None = None) -> str:
        """A proof for a request (section 4.2), with the nonce last received from ``htu``'s
        origin when there is one (section 8)."""
        from certauth.dpop import make_proof

        return make_proof(
            self.key,
            htm=htm,
            htu=htu,
            access_token=access_token,
            nonce=self._nonces.get(origin(htu)),
            now=self._clock(),
        )

    def remember(self, url: str, headers: Headers) -> None:
        """Keep the ``DPoP-Nonce`` of an answer from ``url`` for the next proof to its origin
        (section 8.2: any answer may carry a fresh one)."""
        from certauth.dpop import next_nonce

        nonce = next_nonce(headers)
        if nonce is None:
            return
        key = origin(url)
        if key not in self._nonces and len(self._nonces) >= _MAX_ORIGINS:
            self._nonces.pop(next(iter(self._nonces)), None)
        self._nonces[key] = nonce

    def demands_nonce(
        self, url: str, status: int, headers: Headers, body: Mapping[str, Any] | None = None
    ) -> bool:
        """Remember the answer's nonce; ``True`` when the answer demands one (a token
        endpoint's 400 ``use_dpop_nonce``, section 8; a resource's 401 with ``DPoP
        error="use_dpop_nonce"``, section 9), so the request is to be sent again with it."""
        from certauth.dpop import nonce_from_response

        self.remember(url, headers)
        return nonce_from_response(status, headers, body) is not None

    # -- the token request (section 5) ---------------------------------------------------------

    def token_post(
        self, url: str, headers: Mapping[str, str], body: bytes, budget: Budget
    ) -> Flow[tuple[Reply | Failure, bool]]:
        """Send one attempt of a token request (``POST url`` with ``headers`` and ``body``)
        with a fresh proof (section 5); the answer, and whether it demands a nonce (section
        8), which is then remembered for the request sent again. The caller sends it again
        with a fresh assertion: a server refuses an assertion ``jti`` it has seen (RFC 7523
        section 3, item 7)."""
        answer = yield from self._post(url, headers, body, budget)
        if not isinstance(answer, Reply):
            return answer, False
        body_json = _json_object(answer.body) if answer.status == 400 else None
        return answer, self.demands_nonce(url, answer.status, answer.headers, body_json)

    def _post(
        self, url: str, headers: Mapping[str, str], body: bytes, budget: Budget
    ) -> Flow[Reply | Failure]:
        proven = {**headers, "DPoP": self.proof("POST", url)}
        answer: Reply | Failure = yield Send("POST", url, proven, body, timeout=budget.left)
        budget.charge(answer.elapsed)
        return answer

    def bound(self, token: Token, url: str) -> Token:
        """``token`` if the server bound it to this key (``token_type`` DPoP), else a
        :class:`~certauth.errors.ConfigurationError`."""
        if token.token_type.lower() != TOKEN_TYPE.lower():
            # RFC 9449 section 5: "The client MUST discard the response in this case if this
            # protection is deemed important for the security of the application". A
            # credential made with dpop= deems it so: a token any holder can use is not what
            # it asked for, and its API calls would not be sender-constrained.
            raise ConfigurationError(
                f"{url}: the server answered a DPoP token request (dpop=) with a "
                f"{token.token_type[:40]!r} token, not one bound to this credential's DPoP key "
                "(RFC 9449 section 5); refused. Enable DPoP for this client at the server, or "
                "drop dpop= to use bearer tokens"
            )
        if token.token_type != TOKEN_TYPE:
            token = dataclasses.replace(token, token_type=TOKEN_TYPE)
        return token


class DPoPCredential:
    """What a credential offers for DPoP (mixed into both shells): its key, and proofs for
    HTTP clients other than :class:`~certauth.auth.BearerAuth`."""

    _core: Planner

    @property
    def dpop_key(self) -> DPoPKey | None:
        """The DPoP key this credential's tokens are bound to (``None`` without ``dpop=``)."""
        binding = self._core.dpop
        return None if binding is None else binding.key

    def make_dpop_proof(self, htm: str, htu: str, *, access_token: str | None = None) -> str:
        """A DPoP proof (RFC 9449 section 4.2) for a request ``htm htu`` made with another
        HTTP client: send it as the ``DPoP`` header, with ``Authorization: DPoP <token>``.

        Give the ``access_token`` the request carries (its hash becomes ``ath``). The proof
        carries the nonce this credential last received from ``htu``'s origin, on a token
        request or through :class:`~certauth.auth.BearerAuth`. Signing is local and quick
        (no I/O), on an async credential too. Without ``dpop=`` an
        :class:`~certauth.errors.InvalidArgumentError`.
        """
        binding = self._core.dpop
        if binding is None:
            raise InvalidArgumentError(
                "this credential has no DPoP key: create it with dpop=True (or a DPoPKey) to "
                "get DPoP-bound tokens and make proofs"
            )
        return binding.proof(htm, htu, access_token=access_token)
