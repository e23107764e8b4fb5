"""``BearerAuth``: an ``httpx.Auth`` that puts a credential's token on every API request.

RFC 6750 section 2.1 (the ``Authorization: Bearer`` header). On a 401 the API refused the
token, so it is dropped and the request retried once with a new one:

- a claims challenge (``WWW-Authenticate: Bearer error="insufficient_claims", claims="..."``,
  Microsoft's "Claims challenges, claims requests and client capabilities",
  https://learn.microsoft.com/entra/identity-platform/claims-challenge): the new token is
  asked for with those claims and as CAE-capable, as "How to use Continuous Access Evaluation
  enabled APIs in your applications" describes
  (https://learn.microsoft.com/entra/identity-platform/app-resilience-continuous-access-evaluation);
- any other 401 (revoked, or the resource's keys changed; RFC 6750 section 3.1
  ``invalid_token``), or a challenge that does not parse: a new token as before.

A second 401 is the caller's: the flow never loops.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator
from typing import Any

from certauth._httpx import httpx
from certauth.cae import claims_from_challenge
from certauth.credential.shells import AsyncCredential, SyncCredential
from certauth.errors import InvalidArgumentError

__all__ = ["BearerAuth"]


class BearerAuth(httpx.Auth):
    """An ``httpx.Auth`` that sends ``Authorization: Bearer <token>`` from a credential.

    Works with httpx.Client (sync credential) and httpx.AsyncClient (async credential, or a
    sync one run in a worker thread so the event loop never blocks). On a 401 from the API it
    drops the cached token, fetches a new one (with the claims of a claims challenge, as a
    CAE-capable client) and retries the request once. ``enable_cae=True`` asks for CAE tokens
    on every request (long-lived, revocable, cached apart from the others), for APIs that
    evaluate access continuously such as Microsoft Graph.
    """

    requires_response_body = False

    def __init__(
        self, credential: SyncCredential | AsyncCredential, *scopes: str, enable_cae: bool = False
    ) -> None:
        if not scopes:
            raise InvalidArgumentError("BearerAuth needs at least one scope")
        if not isinstance(enable_cae, bool):
            raise InvalidArgumentError(
                f"BearerAuth(enable_cae=...) must be True or False, got {type(enable_cae).__name__}"
            )
        self.credential = credential
        self.scopes = scopes
        self.enable_cae = enable_cae

    def _retry_options(self, response: httpx.Response) -> dict[str, Any]:
        """How to ask for the retry's token after a 401: the one decision both flows share."""
        claims = claims_from_challenge(response.headers.get_list("www-authenticate"))
        if claims is None:
            return {"enable_cae": self.enable_cae}
        return {"claims": claims, "enable_cae": True}

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        """The flow httpx.Client runs."""
        credential = self.credential
        if not isinstance(credential, SyncCredential):
            raise TypeError("an async credential needs an httpx.AsyncClient")
        token = credential.get_token(*self.scopes, enable_cae=self.enable_cae)
        request.headers["Authorization"] = f"Bearer {token.token}"
        response = yield request
        if response.status_code == 401:
            options = self._retry_options(response)
            credential.invalidate(*self.scopes, enable_cae=self.enable_cae)
            token = credential.get_token(*self.scopes, **options)
            request.headers["Authorization"] = f"Bearer {token.token}"
            yield request

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """The flow httpx.AsyncClient runs."""
        options: dict[str, Any] = {"enable_cae": self.enable_cae}
        request.headers["Authorization"] = f"Bearer {await self._async_token(options)}"
        response = yield request
        if response.status_code == 401:
            retry = self._retry_options(response)
            credential = self.credential
            if isinstance(credential, SyncCredential):
                import asyncio

                # A sync credential's invalidate deletes from the shared store: off the loop.
                await asyncio.to_thread(credential.invalidate, *self.scopes, **options)
            else:
                credential.invalidate(*self.scopes, **options)
            request.headers["Authorization"] = f"Bearer {await self._async_token(retry)}"
            yield request

    async def _async_token(self, options: dict[str, Any]) -> str:
        credential = self.credential
        if isinstance(credential, AsyncCredential):
            return (await credential.get_token(*self.scopes, **options)).token
        import asyncio

        result = await asyncio.to_thread(credential.get_token, *self.scopes, **options)
        return result.token
