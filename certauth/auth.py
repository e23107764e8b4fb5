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

With a credential made with ``dpop=`` (RFC 9449), every request carries ``Authorization: DPoP
<token>`` and a fresh ``DPoP`` proof for its method and URL, hashing the token (section 7.1).
A 401 with ``WWW-Authenticate: DPoP error="use_dpop_nonce"`` and a ``DPoP-Nonce`` header is
answered once with a proof carrying the nonce and the same token, which the server did not
refuse (section 9); the nonce of any answer is kept for the next proof to that origin
(section 8.2). The 401 handling above then works as for bearer tokens, with fresh proofs.

The token a claims challenge got is kept for the requests that follow, as azure-core's
``BearerTokenCredentialPolicy`` keeps it, until it nears expiry or the API refuses it. The
credential does not cache a token asked for with claims, and the token it would serve
instead does not satisfy the challenge (after a CAE revocation, Entra backdates a new token's
``iat`` to before the revocation time; a step-up's claims are not in a plain token), so
without it every request would be refused and retried again.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Generator
from typing import TYPE_CHECKING, Any

from certauth._httpx import httpx
from certauth.cae import claims_from_challenge
from certauth.credential.shells import AsyncCredential, SyncCredential
from certauth.credential.types import AccessToken
from certauth.errors import InvalidArgumentError

if TYPE_CHECKING:
    from certauth.credential.dpop_binding import DPoPBinding

__all__ = ["BearerAuth"]

#: A kept challenge token is given up this many seconds before it expires (azure-core's
#: policy renews its token five minutes ahead too).
_KEEP_MARGIN = 300


class BearerAuth(httpx.Auth):
    """An ``httpx.Auth`` that sends ``Authorization: Bearer <token>`` from a credential.

    Works with httpx.Client (sync credential) and httpx.AsyncClient (async credential, or a
    sync one run in a worker thread so the event loop never blocks). On a 401 from the API it
    drops the cached token, fetches a new one (with the claims of a claims challenge, as a
    CAE-capable client) and retries the request once; a token that satisfied a challenge is
    kept for the next requests. ``enable_cae=True`` asks for CAE tokens
    on every request (long-lived, revocable, cached apart from the others), for APIs that
    evaluate access continuously such as Microsoft Graph. A credential made with ``dpop=``
    gets ``Authorization: DPoP <token>`` and a ``DPoP`` proof on every request instead, and a
    server's demand for a nonce is answered once (RFC 9449 section 9).
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
        self._challenge_token: AccessToken | None = None
        #: The credential's DPoP binding, fixed when it was made (``None``: bearer tokens).
        self._dpop: DPoPBinding | None = credential._core.dpop

    def _retry_options(self, response: httpx.Response) -> dict[str, Any]:
        """How to ask for the retry's token after a 401: the one decision both flows share."""
        claims = claims_from_challenge(response.headers.get_list("www-authenticate"))
        if claims is None:
            return {"enable_cae": self.enable_cae}
        return {"claims": claims, "enable_cae": True}

    def _kept(self) -> AccessToken | None:
        """The token the last satisfied claims challenge got, while it is good to send."""
        kept = self._challenge_token
        if kept is not None and time.time() < kept.expires_on - _KEEP_MARGIN:
            return kept
        return None

    def _refused(self, sent: AccessToken) -> None:
        # Only the token this request sent: another request may have kept a newer one since.
        if self._challenge_token is sent:
            self._challenge_token = None

    def _retried(self, options: dict[str, Any], token: AccessToken, status: int) -> None:
        """After the retry: keep its token if it satisfied a claims challenge."""
        if "claims" in options and status != 401:
            self._challenge_token = token

    def _authorize(self, request: httpx.Request, token: AccessToken) -> None:
        dpop = self._dpop
        if dpop is None:
            request.headers["Authorization"] = f"Bearer {token.token}"
            return
        # RFC 9449 section 7.1: the DPoP scheme, and a proof of this request hashing the token
        # (a new one on every send: a server refuses a proof it has seen, section 11.1).
        request.headers["Authorization"] = f"DPoP {token.token}"
        request.headers["DPoP"] = dpop.proof(
            request.method, str(request.url), access_token=token.token
        )

    def _demands_nonce(self, request: httpx.Request, response: httpx.Response) -> bool:
        """Keep the answer's DPoP nonce; ``True`` when it is a 401 demanding one (RFC 9449
        section 9). Never for a bearer credential."""
        dpop = self._dpop
        if dpop is None:
            return False
        return dpop.demands_nonce(
            str(request.url), response.status_code, response.headers.multi_items()
        )

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        """The flow httpx.Client runs."""
        credential = self.credential
        if not isinstance(credential, SyncCredential):
            raise TypeError("an async credential needs an httpx.AsyncClient")
        token = self._kept() or credential.get_token(*self.scopes, enable_cae=self.enable_cae)
        self._authorize(request, token)
        response = yield request
        if self._demands_nonce(request, response):
            # RFC 9449 section 9: the same token again, its proof now carrying the nonce.
            self._authorize(request, token)
            response = yield request
            if self._demands_nonce(request, response):
                return  # a second demand is the caller's: never a loop
        if response.status_code == 401:
            self._refused(token)
            options = self._retry_options(response)
            credential.invalidate(*self.scopes, enable_cae=self.enable_cae)
            token = credential.get_token(*self.scopes, **options)
            self._authorize(request, token)
            response = yield request
            self._demands_nonce(request, response)  # only to keep its nonce
            self._retried(options, token, response.status_code)

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """The flow httpx.AsyncClient runs."""
        options: dict[str, Any] = {"enable_cae": self.enable_cae}
        token = self._kept() or await self._async_token(options)
        self._authorize(request, token)
        response = yield request
        if self._demands_nonce(request, response):
            # RFC 9449 section 9, as in the sync flow.
            self._authorize(request, token)
            response = yield request
            if self._demands_nonce(request, response):
                return
        if response.status_code == 401:
            self._refused(token)
            retry = self._retry_options(response)
            credential = self.credential
            if isinstance(credential, SyncCredential):
                import asyncio

                # A sync credential's invalidate deletes from the shared store: off the loop.
                await asyncio.to_thread(credential.invalidate, *self.scopes, **options)
            else:
                credential.invalidate(*self.scopes, **options)
            token = await self._async_token(retry)
            self._authorize(request, token)
            response = yield request
            self._demands_nonce(request, response)
            self._retried(retry, token, response.status_code)

    async def _async_token(self, options: dict[str, Any]) -> AccessToken:
        credential = self.credential
        if isinstance(credential, AsyncCredential):
            return await credential.get_token(*self.scopes, **options)
        import asyncio

        return await asyncio.to_thread(credential.get_token, *self.scopes, **options)
