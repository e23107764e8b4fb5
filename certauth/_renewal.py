"""Which cached token serves which request, and until when: the rules every reader of a token
cache applies, written once. The credentials' planner applies them
(:class:`~certauth.credential.planner.Planner`), and so does ``certauth token``'s file-cache
lookup (:mod:`certauth._cache_lookup`), which reads an entry before any credential is built.

Pure functions of their arguments; this module imports nothing, so the lookup stays cheap.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from certauth.protocol import Token

__all__ = [
    "DEFAULT_REFRESH_MARGIN",
    "cache_key",
    "certificate_fingerprint",
    "refresh_at",
    "usable_until",
]

#: A cached token is not served with less than this left (azure-identity and MSAL use 5 min).
DEFAULT_REFRESH_MARGIN = 300


def certificate_fingerprint(x5t_s256: str) -> str:
    """What distinguishes a certificate's tokens in cache keys: its SHA-256 thumbprint, so a
    rotated certificate never serves a token minted with the old one."""
    return f"x5t#S256:{x5t_s256}"


def cache_key(endpoint: str, client_id: str, fingerprint: str, scopes: Iterable[str]) -> str:
    """Token endpoint (it names the tenant; a CAE token's is marked ``#cae``), client id,
    credential fingerprint and the normalised scope set, in any order of the scopes."""
    return "\x1f".join((endpoint, client_id, fingerprint, *sorted(scopes)))


def usable_until(token: Token, margin: float = DEFAULT_REFRESH_MARGIN) -> float:
    """After this a token is not handed out any more (it must be renewed first).

    The safety margin is capped at half the token's lifetime so short-lived tokens are still
    reused for half their life instead of never.
    """
    return token.expires_on - min(margin, token.expires_in / 2)


def refresh_at(token: Token, margin: float = DEFAULT_REFRESH_MARGIN) -> float:
    """From this time on the token is renewed ahead of expiry while still served (and another
    process's stored token is no longer taken): the server's ``refresh_in`` when sent, else
    half the lifetime, never later than :func:`usable_until`."""
    ahead = token.refresh_on or token.expires_on - token.expires_in / 2
    return min(ahead, usable_until(token, margin))
