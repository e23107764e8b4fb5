"""The emulator's own routes under ``/_emulator/``: a protected test API that behaves like a
CAE-aware Microsoft API, and the admin route that revokes a client's tokens.

``GET /_emulator/resource`` (any method is answered the same way) stands for "an API of this
tenant": it verifies the bearer token with certauth's own
:class:`~certauth.verify.TokenVerifier` against the emulator's signing keys (issuer
``{authority host}/{tid}/v2.0`` for any tenant of the emulator; audience: a declared resource
of the token's tenant, or, with none declared, any, as the token endpoint issues tokens for any
resource then), then applies continuous access evaluation the way Microsoft Graph does:

- a CAE token (``xms_cc`` holds ``cp1``) issued before its client's revocation time gets ``401``
  with the claims challenge (:func:`~certauth.emulator.cae.claims_challenge_header`) and Graph's
  error body ("Continuous access evaluation resulted in claims challenge with result:
  InteractionRequired and code: TokenIssuedBeforeRevocationTimestamp", the text Graph sends:
  microsoftgraph/msgraph-sdk-powershell issue 1741);
- a token without the CAE capability is accepted until it expires: Entra challenges only
  clients that declared they can handle a challenge ("Claims challenges, claims requests, and
  client capabilities": an app "will receive claims challenges ... only if it declares its
  client capabilities");
- a valid token gets ``200`` and a small JSON summary of it; an invalid one ``401`` with
  ``error="invalid_token"`` (RFC 6750 section 3.1), a request without a bearer token ``401``
  without an error code (RFC 6750 section 3.1: none when authentication is missing).

``POST /_emulator/revoke`` with ``client_id`` (and optionally ``tenant``) as form fields or
query parameters does what :meth:`Emulator.revoke <certauth.emulator.Emulator.revoke>` does,
for an emulator running in another process. It answers only loopback peers (``403``
otherwise): anyone who can reach an emulator bound to ``0.0.0.0`` must not be able to revoke.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from collections.abc import Mapping
from typing import Any

from certauth.cae import declares_cae
from certauth.dpop import JtiCache
from certauth.emulator.cae import RevocationList, bearer_challenge, claims_challenge_header
from certauth.emulator.clock import Clock
from certauth.emulator.dpop_checks import DPOP_SIGNING_ALGS, DPoPNonces
from certauth.emulator.registry import EMULATOR_ROUTES, Registry
from certauth.emulator.responses import json_response
from certauth.emulator.server import HttpRequest, HttpResponse
from certauth.emulator.tokens import KeyRing
from certauth.errors import InvalidArgumentError, TokenValidationError

__all__ = ["PREFIX", "EmulatorApi"]

#: The first path segment of the emulator's own routes (no tenant may take it).
PREFIX = EMULATOR_ROUTES

#: Graph's error code for a token it does not accept.
_GRAPH_CODE = "InvalidAuthenticationToken"


class EmulatorApi:
    """Answers ``/_emulator/...`` for one emulator (see the module's description)."""

    def __init__(
        self,
        *,
        registry: Registry,
        keys: KeyRing,
        clock: Clock,
        revocations: RevocationList,
        dpop_nonces: DPoPNonces | None = None,
    ) -> None:
        self.registry = registry
        self.keys = keys
        self.clock = clock
        self.revocations = revocations
        #: The server nonces DPoP proofs must carry when they are required (RFC 9449 section 9:
        #: a resource server may demand them too; this one shares the token endpoint's).
        self.dpop_nonces = dpop_nonces
        #: Proofs seen by this API, so a replayed one is refused (RFC 9449 section 11.1).
        self.seen_jti = JtiCache()

    def handle(self, request: HttpRequest, route: list[str]) -> HttpResponse:
        """Answer ``/_emulator/{route...}``."""
        if route == ["resource"]:
            return self.resource(request)
        if route == ["revoke"]:
            return self.revoke(request)
        return json_response(
            404,
            {
                "error": "not_found",
                "error_description": (
                    f"the emulator serves no {request.path}; its own routes are "
                    f"/{PREFIX}/resource and /{PREFIX}/revoke"
                ),
            },
        )

    # -- the protected test API -------------------------------------------------------------

    def resource(self, request: HttpRequest) -> HttpResponse:
        """Verify the token (and what binds it: the client certificate of a
        certificate-bound token, the proof of a DPoP-bound one) and apply CAE revocation, as a
        CAE-aware API does."""
        authorization_uri = f"{request.base_url}/common/oauth2/authorize"
        scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() not in ("bearer", "dpop") or not token:
            return _unauthorized(bearer_challenge(authorization_uri), "Access token is empty.")
        try:
            claims = self._verify(token, request, scheme)
        except TokenValidationError as exc:
            return self._refused(exc, authorization_uri, scheme)
        tenant_id = str(claims.get("tid", ""))
        client_id = str(claims.get("azp") or claims.get("appid") or "")
        revoked_at = self.revocations.revoked_at(tenant_id, client_id)
        issued = claims.get("iat")
        if (
            revoked_at is not None
            and _is_cae(claims)
            and (not isinstance(issued, int | float) or issued < revoked_at)
        ):
            return _unauthorized(
                claims_challenge_header(authorization_uri, revoked_at),
                "Continuous access evaluation resulted in claims challenge with result: "
                "InteractionRequired and code: TokenIssuedBeforeRevocationTimestamp",
            )
        summary: dict[str, Any] = {
            "tid": tenant_id,
            "aud": claims.get("aud"),
            "azp": claims.get("azp"),
            "appid": claims.get("appid"),
            "roles": list(claims.get("roles", [])),
            "iat": issued,
            "exp": claims.get("exp"),
            "cae": _is_cae(claims),
        }
        if "xms_cc" in claims:
            summary["xms_cc"] = claims["xms_cc"]
        if "cnf" in claims:
            summary["cnf"] = claims["cnf"]
        response = json_response(200, summary)
        self._announce_nonce(response)
        return response

    def _refused(
        self, exc: TokenValidationError, authorization_uri: str, scheme: str
    ) -> HttpResponse:
        """401 for a token (or its binding) that failed: Bearer ``invalid_token`` (RFC 6750
        section 3.1, and RFC 8705 section 3 for a certificate that does not match), or for a
        DPoP request the DPoP scheme's ``invalid_dpop_proof`` / ``use_dpop_nonce`` (RFC 9449
        sections 7.1 and 9)."""
        description = _header_text(str(exc))
        if scheme.lower() == "dpop" or exc.check.startswith("dpop_") or exc.check == "cnf_jkt":
            nonce = exc.check == "dpop_nonce"
            error = "use_dpop_nonce" if nonce else "invalid_dpop_proof"
            if exc.check in ("dpop_unbound", "dpop_scheme"):
                error = "invalid_token"
            algs = " ".join(DPOP_SIGNING_ALGS)
            challenge = f'DPoP algs="{algs}", error="{error}", error_description="{description}"'
            response = _unauthorized(challenge, str(exc))
            self._announce_nonce(response)
            return response
        challenge = bearer_challenge(
            authorization_uri, error="invalid_token", error_description=description
        )
        return _unauthorized(challenge, str(exc))

    def _announce_nonce(self, response: HttpResponse) -> None:
        # RFC 9449 section 9: the nonce the next proof to this API must carry.
        nonce = self.dpop_nonces.current if self.dpop_nonces is not None else None
        if nonce is not None:
            response.headers["DPoP-Nonce"] = nonce

    def _verify(self, token: str, request: HttpRequest, scheme: str) -> dict[str, Any]:
        from certauth.verify import TokenVerifier, decode_unverified

        _, unverified = decode_unverified(token)
        tenant = self.registry.tenant(str(unverified.get("tid", "")))
        if tenant is not None and tenant.resources:
            audiences = [resource.uri for resource in tenant.resources.values()]
        else:
            # No resource declared: the tenant issues tokens for any resource, and this API
            # stands for any of them. The signature and issuer are still checked.
            aud = unverified.get("aud")
            audiences = [aud] if isinstance(aud, str) and aud else ["(no audience)"]
        verifier = TokenVerifier(
            issuer=f"{request.base_url}/{{tenantid}}/v2.0",
            jwks=self.keys.jwks(),
            audience=audiences,
            dpop_jti_cache=self.seen_jti,
        )
        proofs = request.header_values("dpop")

        def verified(nonce: str | None) -> dict[str, Any]:
            return verifier.verify(
                token,
                now=self.clock.time(),
                # What binds a token (RFC 8705 section 3, RFC 9449 section 7.1): the
                # certificate this connection presented, the request's DPoP proof.
                client_certificate=request.peer_certificate,
                dpop_proof=proofs or None,
                htm=request.method,
                htu=f"{request.addressed_base_url}{request.path}",
                dpop_nonce=nonce,
                scheme=scheme,
            )

        with verifier:
            nonces = self.dpop_nonces
            claims = nonces.check_with(verified) if nonces is not None else verified(None)
        if tenant is None:
            raise TokenValidationError(
                f"the token's tenant {unverified.get('tid')!r} is not a tenant of this emulator",
                check="issuer",
            )
        return claims

    # -- the admin route --------------------------------------------------------------------

    def revoke(self, request: HttpRequest) -> HttpResponse:
        """``POST /_emulator/revoke``: revoke a client's tokens issued before now."""
        if not _is_loopback(request.client_address):
            return json_response(
                403,
                {
                    "error": "access_denied",
                    "error_description": "the emulator's admin routes answer loopback clients only",
                },
            )
        if request.method != "POST":
            return json_response(405, {"error": "invalid_request", "error_description": "use POST"})
        fields = {**request.query, **_form(request)}
        client_id = fields.get("client_id", "").strip()
        if not client_id:
            return json_response(
                400,
                {
                    "error": "invalid_request",
                    "error_description": "give the client to revoke: client_id=CLIENT_ID",
                },
            )
        tenant = fields.get("tenant", "").strip() or None
        try:
            revoked_at, tenants = revoke_client(
                self.registry, self.revocations, client_id, tenant, now=self.clock.time()
            )
        except InvalidArgumentError as exc:
            return json_response(400, {"error": "invalid_request", "error_description": str(exc)})
        return json_response(
            200, {"client_id": client_id, "tenants": tenants, "revoked_at": revoked_at}
        )


def revoke_client(
    registry: Registry,
    revocations: RevocationList,
    client_id: str,
    tenant: str | None,
    *,
    now: float,
) -> tuple[int, list[str]]:
    """Revoke ``client_id``'s tokens issued before ``now`` in ``tenant`` (id or domain), or in
    every tenant where it is registered; returns the revocation time and the tenant ids.

    Raises :class:`InvalidArgumentError` for an unknown tenant or client (a typo must not
    revoke nothing silently).
    """
    if tenant is not None:
        found = registry.tenant(tenant)
        if found is None:
            raise InvalidArgumentError(f"tenant {tenant!r} is not a tenant of this emulator")
        candidates = [found]
    else:
        candidates = registry.tenants
    tenant_ids = [t.tenant_id for t in candidates if t.app(client_id) is not None]
    if not tenant_ids:
        where = f"tenant {tenant!r}" if tenant is not None else "any tenant"
        raise InvalidArgumentError(f"client {client_id!r} is not registered in {where}")
    return revocations.revoke(tenant_ids, client_id, now=now), tenant_ids


def _is_cae(claims: Mapping[str, Any]) -> bool:
    return declares_cae(claims.get("xms_cc"))


def _unauthorized(challenge: str, message: str) -> HttpResponse:
    # Graph's error body: {"error": {"code": ..., "message": ...}}.
    response = json_response(401, {"error": {"code": _GRAPH_CODE, "message": message}})
    response.headers["WWW-Authenticate"] = challenge
    return response


def _header_text(text: str) -> str:
    # RFC 6750 section 3: error_description is printable ASCII without '"' or '\\'.
    return "".join(c for c in text[:200] if " " <= c <= "~" and c not in '"\\')


def _form(request: HttpRequest) -> dict[str, str]:
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return {}
    try:
        pairs = urllib.parse.parse_qsl(request.body.decode("utf-8"), max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return {}
    return dict(pairs)


def _is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))
