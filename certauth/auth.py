"""``BearerAuth``: an ``httpx.Auth`` that puts a credential's token on every API request.

RFC 6750 section 2.1 (the ``Authorization: Bearer`` header); on a 401 the API refused the token
(revoked, or the resource's keys changed), so it is dropped and the request retried once with a
new one (RFC 6750 section 3.1: ``invalid_token``).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator

from certauth._httpx import httpx
from certauth.credential.shells import AsyncCredential, SyncCredential
from certauth.errors import InvalidArgumentError

__all__ = ["BearerAuth"]


class BearerAuth(httpx.Auth):
    """An ``httpx.Auth`` that sends ``Authorization: Bearer <token>`` from a credential.

    Works with httpx.Client (sync credential) and httpx.AsyncClient (async credential, or a
    sync one run in a worker thread so the event loop never blocks). On a 401 from the API it
    drops the cached token, fetches a new one and retries the request once.
    """

    requires_response_body = False

    def __init__(self, credential: SyncCredential | AsyncCredential, *scopes: str) -> None:
        if not scopes:
            raise InvalidArgumentError("BearerAuth needs at least one scope")
        self.credential = credential
        self.scopes = scopes

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        """The flow httpx.Client runs."""
        credential = self.credential
        if not isinstance(credential, SyncCredential):
            raise TypeError("an async credential needs an httpx.AsyncClient")
        request.headers["Authorization"] = f"Bearer {credential.get_token(*self.scopes).token}"
        response = yield request
        if response.status_code == 401:
            credential.invalidate(*self.scopes)
            token = credential.get_token(*self.scopes).token
            request.headers["Authorization"] = f"Bearer {token}"
            yield request

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """The flow httpx.AsyncClient runs."""
        request.headers["Authorization"] = f"Bearer {await self._async_token()}"
        response = yield request
        if response.status_code == 401:
            credential = self.credential
            if isinstance(credential, SyncCredential):
                import asyncio

                # A sync credential's invalidate deletes from the shared store: off the loop.
                await asyncio.to_thread(credential.invalidate, *self.scopes)
            else:
                credential.invalidate(*self.scopes)
            request.headers["Authorization"] = f"Bearer {await self._async_token()}"
            yield request

    async def _async_token(self) -> str:
        credential = self.credential
        if isinstance(credential, AsyncCredential):
            return (await credential.get_token(*self.scopes)).token
        import asyncio

        result = await asyncio.to_thread(credential.get_token, *self.scopes)
        return result.token
