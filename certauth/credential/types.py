"""azure-core's token types, so certauth's credentials plug into Azure SDK clients without
azure-identity (``azure.core.credentials.AccessToken`` / ``AccessTokenInfo``, matched by shape)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


class AccessToken(NamedTuple):
    """azure-core's ``AccessToken``: the token and its expiry (epoch seconds)."""

    token: str
    expires_on: int

    def __repr__(self) -> str:
        return f"AccessToken(token='***', expires_on={self.expires_on})"


@dataclass(frozen=True)
class AccessTokenInfo:
    """azure-core's ``AccessTokenInfo`` (returned by ``get_token_info``)."""

    token: str
    expires_on: int
    token_type: str = "Bearer"
    refresh_on: int | None = None

    def __repr__(self) -> str:
        return (
            f"AccessTokenInfo(token='***', expires_on={self.expires_on}, "
            f"token_type={self.token_type!r}, refresh_on={self.refresh_on})"
        )
