"""The emulated Key Vault's REST surface: the 401 challenge, bearer tokens, the access policy,
get key, create key, sign and get certificate, in Key Vault's shapes.

A vault is served at the root of its own listener (``https://127.0.0.1:PORT``), because the
azure-keyvault SDK takes a key identifier's vault as ``scheme://host:port`` and its name as the
second path segment (``parse_key_vault_id``): a vault under a path prefix cannot be addressed
by ``CryptographyClient``. Routes ("Key Vault REST API reference",
https://learn.microsoft.com/rest/api/keyvault/):

- ``GET /keys/{name}[/{version}]``: the key bundle, public JWK only (permission ``get``);
- ``POST /keys/{name}/create``: ``{"kty", "key_size", "crv"}`` (``create``);
- ``POST /keys/{name}/{version}/sign``: ``{"alg", "value": base64url(digest)}`` ->
  ``{"kid", "value"}`` (``sign``);
- ``GET /certificates/{name}[/{version}]``: ``id``, ``kid``, ``sid``, ``x5t``, ``cer``
  (``get``).

Authentication ("Authentication, requests and responses",
https://learn.microsoft.com/azure/key-vault/general/authentication-requests-and-responses): a
request without a bearer token gets ``401`` and ``WWW-Authenticate: Bearer
authorization="{authority}/{tenant}", resource="https://vault.azure.net"``, which the SDK's
challenge policy follows. A token must be the emulator's, for ``https://vault.azure.net`` (or
Key Vault's application id), from the vault's tenant and within its lifetime.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from certauth import _jose
from certauth.emulator.clock import Clock
from certauth.emulator.keyvault_store import (
    VaultError,
    VaultState,
    bad_parameter,
    check_object_name,
    new_key,
    sign_digest,
)
from certauth.emulator.server import HttpRequest, HttpResponse
from certauth.emulator.tokens import KeyRing
from certauth.errors import TokenValidationError

__all__ = ["VAULT_AUDIENCES", "VAULT_RESOURCE", "KeyVaultAPI"]

log = logging.getLogger("certauth.emulator")

#: The resource Key Vault's challenge names (public cloud); its tokens' ``aud``.
VAULT_RESOURCE = "https://vault.azure.net"
#: What a vault token's ``aud`` may be: the resource URI, with or without a trailing slash, or
#: Key Vault's first-party application id.
VAULT_AUDIENCES = (VAULT_RESOURCE, VAULT_RESOURCE + "/", "cfa8b339-82a2-471a-a3c9-0fc0be7a4093")


class KeyVaultAPI:
    """Answers requests to one emulated vault (``handle`` is its listener's callback).

    ``authority`` returns the emulator's authority host (the challenge names it);
    ``skew`` the clock skew allowed on token lifetimes.
    """

    def __init__(
        self,
        state: VaultState,
        *,
        keys: KeyRing,
        clock: Clock,
        authority: Callable[[], str],
        skew: Callable[[], int],
    ) -> None:
        self.state = state
        self.keys = keys
        self.clock = clock
        self._authority = authority
        self._skew = skew

    def handle(self, request: HttpRequest) -> HttpResponse:
        """The answer to one request."""
        fault = self.state.take_fault()
        if fault is not None:
            return self._fault(fault.status, fault.retry_after)
        try:
            client_id, issuer = self._caller(request)
            if not request.query.get("api-version"):
                raise bad_parameter("The 'api-version' query parameter is missing.")
            return self._route(request, client_id, issuer)
        except VaultError as error:
            # A request without a token is the SDK's first step (it elicits the challenge).
            quiet = error.status == 401 and error.inner is None
            (log.debug if quiet else log.warning)(
                "key vault %s refused %s %s: %s %s",
                self.state.name, request.method, _printable(request.path, 120),
                error.status, error.code,
            )  # fmt: skip
            response = _json(error.status, error.body())
            if error.status == 401:
                response.headers["WWW-Authenticate"] = self._challenge(error)
            return response

    # -- authentication -------------------------------------------------------------------------

    def _challenge(self, error: VaultError) -> str:
        challenge = (
            f'Bearer authorization="{self._authority()}/{self.state.tenant_id}", '
            f'resource="{VAULT_RESOURCE}"'
        )
        if error.inner == "invalid_token":
            challenge += ', error="invalid_token"'
        return challenge

    def _caller(self, request: HttpRequest) -> tuple[str, str]:
        """The client id and issuer of the request's bearer token; 401 otherwise."""
        scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise VaultError(401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP "
                             "token.")  # fmt: skip
        try:
            claims = _verify(token, self.keys.jwks(None), self.clock.time(), self._skew())
        except TokenValidationError as exc:
            code = "AKV10022: Invalid audience." if exc.check == "audience" else "AKV10000:"
            raise VaultError(
                401, "Unauthorized", f"{code} The access token was refused ({exc.check}): "
                f"{exc.message}", "invalid_token",
            ) from None  # fmt: skip
        tid, issuer = claims.get("tid"), claims.get("iss")
        if (
            not isinstance(tid, str)
            or tid.lower() != self.state.tenant_id.lower()
            or not isinstance(issuer, str)
            or not issuer.endswith(f"/{tid}/v2.0")
        ):
            raise VaultError(
                401, "Unauthorized", f"AKV10032: Invalid issuer. Expected a token from tenant "
                f"{self.state.tenant_id}, found tid {str(tid)[:40]!r}.", "invalid_token",
            )  # fmt: skip
        client_id = claims.get("appid") or claims.get("azp")
        if not isinstance(client_id, str) or not client_id:
            raise VaultError(401, "Unauthorized", "AKV10000: The access token has no appid.",
                             "invalid_token")  # fmt: skip
        return client_id, issuer

    def _require(self, client_id: str, issuer: str, permission: str, what: str) -> None:
        if not self.state.allowed(client_id, permission):
            raise VaultError(
                403,
                "Forbidden",
                f"The user, group or application 'appid={client_id};iss={issuer}' does not have "
                f"{what} {permission} permission on key vault '{self.state.name};location="
                "emulator'. For help resolving this issue, please see "
                "https://go.microsoft.com/fwlink/?linkid=2125287",
                "AccessDenied",
            )

    # -- routes ---------------------------------------------------------------------------------

    def _route(self, request: HttpRequest, client_id: str, issuer: str) -> HttpResponse:
        parts = [s for s in request.path.split("/") if s]
        kind = parts[0].lower() if parts else ""
        rest = parts[1:]
        method = request.method
        vault_url = request.base_url
        if kind == "keys" and rest:
            name = check_object_name(rest[0])
            tail = [s.lower() for s in rest[1:]]
            if method == "GET" and len(tail) <= 1:
                self._require(client_id, issuer, "get", "keys")
                key = self.state.key(name, tail[0] if tail else None)
                return _json(200, _key_bundle(key, vault_url))
            if method == "POST" and tail == ["create"]:
                self._require(client_id, issuer, "create", "keys")
                return _json(200, self._create_key(name, _body(request), vault_url))
            if method == "POST" and tail[-1:] == ["sign"] and len(tail) <= 2:
                self._require(client_id, issuer, "sign", "keys")
                key = self.state.key(name, tail[0] if len(tail) == 2 else None)
                return _json(200, self._sign(key, _body(request), vault_url, client_id))
        if kind == "certificates" and rest and method == "GET" and len(rest) <= 2:
            name = check_object_name(rest[0], "certificate")
            self._require(client_id, issuer, "get", "certificates")
            certificate = self.state.certificate(name, rest[1] if len(rest) == 2 else None)
            return _json(200, _certificate_bundle(certificate, vault_url))
        raise VaultError(
            404, "NotFound", f"The emulated vault serves no {method} {_printable(request.path)}; "
            "it serves keys/{name}[/{version}], keys/{name}/create, keys/{name}/{version}/sign "
            "and certificates/{name}[/{version}].",
        )  # fmt: skip

    def _create_key(self, name: str, body: Mapping[str, Any], vault_url: str) -> dict[str, Any]:
        kty = body.get("kty")
        size = body.get("key_size", 2048)
        curve = body.get("crv", "P-256")
        if not isinstance(kty, str) or not isinstance(size, int) or not isinstance(curve, str):
            raise bad_parameter("Invalid 'kty', 'key_size' or 'crv'.")
        key = self.state.add_key(name, new_key(kty, size, curve), int(self.clock.time()))
        log.info("key vault %s: key %s version %s created", self.state.name, name, key.version)
        return _key_bundle(key, vault_url)

    def _sign(
        self, key: Any, body: Mapping[str, Any], vault_url: str, client_id: str
    ) -> dict[str, str]:
        value = body.get("value")
        try:
            digest = _jose.b64url_decode_lenient(value) if isinstance(value, str) else None
        except (ValueError, binascii.Error):
            digest = None
        if digest is None:
            raise bad_parameter("Invalid value for 'value': base64url of the digest expected.")
        signature = sign_digest(key.private_key, body.get("alg"), digest)
        log.info(
            "key vault %s: key %s/%s signed a digest (%s) for %s",
            self.state.name, key.name, key.version, body.get("alg"), client_id,
        )  # fmt: skip
        return {"kid": key.kid(vault_url), "value": _jose.b64url_encode(signature)}

    def _fault(self, status: int, retry_after: int | None) -> HttpResponse:
        if status == 429:
            # "Throttling guidance" (https://learn.microsoft.com/azure/key-vault/general/
            # overview-throttling): 429 Too Many Requests; the code and text are Key Vault's.
            error = VaultError(429, "Throttled", "Request was not allowed because the request "
                               "rate exceeded the vault's limit; retry later.")  # fmt: skip
        else:
            error = VaultError(status, "ServiceUnavailable", "The emulated vault was told to fail.")
        response = _json(status, error.body())
        if retry_after is not None:
            response.headers["Retry-After"] = str(retry_after)
        return response


def _verify(token: str, jwks: Mapping[str, Any], now: float, skew: int) -> dict[str, Any]:
    from certauth.verify import verify_access_token  # the emulator's own tokens, offline

    return verify_access_token(
        token, jwks=jwks, audience=VAULT_AUDIENCES, algorithms="RS256", now=now, leeway=skew
    )


def _key_bundle(key: Any, vault_url: str) -> dict[str, Any]:
    return {
        "key": key.jwk(vault_url),
        "attributes": {
            "enabled": True,
            "created": key.created,
            "updated": key.created,
            "recoveryLevel": "Recoverable+Purgeable",
            "recoverableDays": 90,
            # Generated in the vault and never exported ("exportable": release policy keys only).
            "exportable": False,
        },
    }


def _certificate_bundle(certificate: Any, vault_url: str) -> dict[str, Any]:
    name, version = certificate.name, certificate.version
    return {
        "id": f"{vault_url}/certificates/{name}/{version}",
        "kid": certificate.key.kid(vault_url),
        "sid": f"{vault_url}/secrets/{name}/{version}",
        "x5t": certificate.x5t,
        # "cer" is standard base64 of the DER certificate (CertificateBundle.cer).
        "cer": base64.b64encode(certificate.der).decode("ascii"),
        "attributes": {
            "enabled": True,
            "created": certificate.created,
            "updated": certificate.created,
            "recoveryLevel": "Recoverable+Purgeable",
            "recoverableDays": 90,
        },
    }


def _body(request: HttpRequest) -> Mapping[str, Any]:
    try:
        body = json.loads(request.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        body = None
    if not isinstance(body, dict):
        raise bad_parameter("The request body is not a JSON object.")
    return body


def _json(status: int, body: Mapping[str, Any]) -> HttpResponse:
    data = json.dumps(body, separators=(",", ":")).encode("utf-8")
    return HttpResponse(status, data, headers={"Cache-Control": "no-cache"})


def _printable(text: str, limit: int = 100) -> str:
    return "".join(c if c.isprintable() else "?" for c in text[:limit])
