"""Microsoft Graph's rules for the emulator's Graph surface, as pure functions.

What a caller presents (a bearer token, a proof-of-possession JWT, a new key credential) is
checked here and turned into a value or a :class:`GraphError` carrying the status, ``code`` and
message Graph would send. No sockets, no clock reads: ``now`` is a parameter.

Where each rule comes from (Microsoft Learn):

- "application: addKey" and "application: removeKey"
  (https://learn.microsoft.com/graph/api/application-addkey,
  https://learn.microsoft.com/graph/api/application-removekey): the request bodies, the
  permissions (none to roll one's own keys), "Applications that don't have any existing valid
  certificates ... won't be able to use this service action".
- "Generate proof of possession tokens for rolling keys"
  (https://learn.microsoft.com/graph/application-rollkey-prooftoken): the proof is signed with
  the private key of one of the application's existing valid certificates, ``aud``
  ``00000002-0000-0000-c000-000000000000``, ``iss`` the application's object id (not its
  appId), ``nbf``, ``exp`` at most ``nbf`` + 10 minutes; padding in a segment gets
  ``Authentication_MissingOrMalformed``.
- "keyCredential resource type" (https://learn.microsoft.com/graph/api/resources/keycredential):
  the fields, ``displayName`` shortened past 90 characters, ``key`` only on ``$select``.
- "Microsoft Graph error responses and resource types"
  (https://learn.microsoft.com/graph/errors): the error body and the HTTP statuses.

Graph documents the error *shape* but not every code per action. The codes used are those
Graph sends (``InvalidAuthenticationToken``, ``Authorization_RequestDenied``,
``Request_ResourceNotFound``, ``Request_BadRequest``, ``BadRequest``,
``Authentication_MissingOrMalformed``); where the choice for a case is ours, the comment at
the raise says so.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import math
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from certauth import _jose
from certauth.certificates import Certificate
from certauth.emulator.registry import (
    GRAPH_RESOURCE,
    App,
    PublicKey,
    RegisteredCertificate,
    Registry,
    Tenant,
    normalize_resource,
)
from certauth.errors import CertauthError

__all__ = [
    "DEFAULT_MAX_KEY_CREDENTIALS",
    "GRAPH_AUDIENCES",
    "MAX_PROOF_LIFETIME",
    "PROOF_AUDIENCES",
    "Caller",
    "GraphError",
    "NewKey",
    "bad_request",
    "check_bearer",
    "check_proof",
    "denied",
    "key_credential_json",
    "may_read",
    "may_read_some",
    "may_roll_keys",
    "not_found",
    "parse_key_id",
    "parse_new_key",
]

#: The proof's ``aud``. The proof-token page says 00000002-... (the retired Azure AD Graph's
#: application id); a later revision of that page names 00000003-..., Microsoft Graph's own
#: application id. Both are taken, nothing else.
PROOF_AUDIENCES = ("00000002-0000-0000-c000-000000000000", "00000003-0000-0000-c000-000000000000")
#: "The token lifespan should not exceed 10 minutes" (the proof-token page).
MAX_PROOF_LIFETIME = 600
#: Entra documents no cap on key credentials alone, only "a global limit of about 1000 items
#: across all the collection properties on the app object" ("Validation differences by
#: supported account types", https://learn.microsoft.com/entra/identity-platform/supported-accounts-validation).
DEFAULT_MAX_KEY_CREDENTIALS = 1000
#: The ``aud`` of a Graph access token: its URI in each cloud, or its application id (which
#: :func:`normalize_resource` maps to the URI).
GRAPH_AUDIENCES = frozenset(
    {
        GRAPH_RESOURCE,
        "https://graph.microsoft.us",
        "https://dod-graph.microsoft.us",
        "https://microsoftgraph.chinacloudapi.cn",
    }
)
#: Application permissions that read any application ("application: get", permissions).
READ_ROLES = frozenset(
    {"Application.Read.All", "Application.ReadWrite.All", "Directory.Read.All",
     "Directory.ReadWrite.All"}
)  # fmt: skip
#: Application permissions that let an app roll another application's keys (addKey's table).
WRITE_ROLES = frozenset({"Application.ReadWrite.All", "Directory.ReadWrite.All"})
#: Reads and writes the applications the caller owns; the emulator has no owners, so it
#: stands for the caller's own application (as when an app is made an owner of itself).
OWNED_BY = "Application.ReadWrite.OwnedBy"
#: "The friendly name for the key, with a maximum length of 90 characters. Longer values are
#: accepted but shortened." (keyCredential resource type)
MAX_DISPLAY_NAME = 90

_MALFORMED = "Access Token missing or malformed."
_HEX_SHA1 = re.compile(r"^[0-9A-Fa-f]{40}$")


class GraphError(Exception):
    """A refusal in Graph's terms: HTTP ``status``, error ``code`` and ``message``.

    ``bearer`` marks a refused access token (the answer gets ``WWW-Authenticate``).
    """

    def __init__(self, status: int, code: str, message: str, *, bearer: bool = False) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.bearer = bearer


def _invalid_token(message: str) -> GraphError:
    return GraphError(401, "InvalidAuthenticationToken", message, bearer=True)


def denied() -> GraphError:
    """Graph's 403 for a caller without the permission an operation needs."""
    return GraphError(403, "Authorization_RequestDenied", "Insufficient privileges to complete "
                      "the operation.")  # fmt: skip


def not_found(name: str) -> GraphError:
    """Graph's 404 for a directory object that does not exist."""
    return GraphError(
        404,
        "Request_ResourceNotFound",
        f"Resource '{_printable(name)}' does not exist or one of its queried reference-property "
        "objects are not present.",
    )


def bad_request(message: str) -> GraphError:
    """Graph's 400 for a body that does not fit the action."""
    return GraphError(400, "Request_BadRequest", message)


def _malformed_proof(detail: str) -> GraphError:
    # The code Graph sends for a proof it cannot accept (the proof-token page names it for
    # padded segments); the detail after Graph's own sentence is the emulator's.
    return GraphError(401, "Authentication_MissingOrMalformed", f"{_MALFORMED} {detail}")


def _printable(value: str, limit: int = 100) -> str:
    # Echoed into a message: no line breaks or control characters.
    return "".join(c if c.isprintable() else "?" for c in value[:limit])


# -- the compact JWS both tokens are ------------------------------------------------------------


@dataclass(frozen=True)
class _Jws:
    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes


def _split(token: str, *, strict: bool) -> _Jws | None:
    """The parts of a compact JWS, or ``None`` when it is not one. ``strict``: segments must be
    unpadded canonical base64url (RFC 7515 section 2), as Graph requires of a proof."""
    decode = _jose.b64url_decode if strict else _jose.b64url_decode_lenient
    parts = token.split(".")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        return None
    try:
        header, claims = (json.loads(decode(p), parse_constant=_no_constant) for p in parts[:2])
        signature = decode(parts[2])
    except (ValueError, RecursionError):
        return None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        return None
    return _Jws(header, claims, f"{parts[0]}.{parts[1]}".encode("ascii"), signature)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN and Infinity (RFC 8259 section 6)


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


# -- the bearer token -------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """Who called Graph: the tenant, the app the token was issued to, its Graph roles."""

    tenant: Tenant
    client_id: str
    app: App | None
    roles: frozenset[str]


def check_bearer(
    authorization: str | None,
    registry: Registry,
    signing_keys: Iterable[tuple[str, PublicKey]],
    *,
    now: float,
    skew: int,
) -> Caller:
    """Check the ``Authorization: Bearer`` access token as Graph does: issued by this emulator
    (one of its signing keys, its issuer for a known tenant), for Microsoft Graph, within its
    lifetime (``skew`` seconds either side). Returns the caller; raises :class:`GraphError`
    (401 ``InvalidAuthenticationToken``) otherwise."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _invalid_token("Access token is empty.")
    jws = _split(token, strict=False)
    if jws is None:
        raise _invalid_token("CompactToken parsing failed with error code: 80049217")
    kid = jws.header.get("kid")
    alg = jws.header.get("alg")
    key = next((k for key_id, k in signing_keys if key_id == kid), None)
    # The emulator signs access tokens with RS256 only (as Entra ID does).
    if (
        key is None
        or alg != "RS256"
        or not _jose.verify_signature(key, "RS256", jws.signing_input, jws.signature)
    ):
        raise _invalid_token("Access token validation failure. Invalid signature.")
    claims = jws.claims
    tid, issuer = claims.get("tid"), claims.get("iss")
    tenant = registry.tenant(tid) if isinstance(tid, str) else None
    # The signature proves the emulator issued it; the issuer must still be its v2 issuer
    # for that tenant (on whichever host name the client reached it).
    if (
        tenant is None
        or not isinstance(issuer, str)
        or not issuer.endswith(f"/{tenant.tenant_id}/v2.0")
    ):
        raise _invalid_token("Access token validation failure. Invalid issuer.")
    aud = claims.get("aud")
    if not isinstance(aud, str) or normalize_resource(aud) not in GRAPH_AUDIENCES:
        raise _invalid_token("Access token validation failure. Invalid audience.")
    exp, nbf = _number(claims, "exp"), _number(claims, "nbf")
    if exp is None or now > exp + skew:
        raise _invalid_token("Lifetime validation failed, the token is expired.")
    if nbf is not None and now + skew < nbf:
        raise _invalid_token("Lifetime validation failed, the token is not yet valid.")
    client_id = claims.get("appid") or claims.get("azp")
    if not isinstance(client_id, str) or not client_id:
        raise _invalid_token("Access token validation failure. The token has no appid.")
    roles = claims.get("roles")
    names = frozenset(r for r in roles if isinstance(r, str)) if isinstance(roles, list) else ()
    return Caller(tenant, client_id, tenant.app(client_id), frozenset(names))


def may_read_some(caller: Caller) -> bool:
    """Whether ``caller`` holds any permission that reads applications (without one, Graph
    answers 403 before it looks the application up)."""
    return bool(caller.roles & READ_ROLES) or OWNED_BY in caller.roles


def may_read(caller: Caller, app: App) -> bool:
    """Whether ``caller`` may read ``app`` (Application.Read.All and kin, or OwnedBy on its
    own application)."""
    return bool(caller.roles & READ_ROLES) or (OWNED_BY in caller.roles and caller.app is app)


def may_roll_keys(caller: Caller, app: App) -> bool:
    """Whether ``caller`` may call addKey/removeKey on ``app``: "An application does not need
    any specific permission to roll its own keys"; another app's needs
    Application.ReadWrite.All (or Directory.ReadWrite.All)."""
    return caller.app is app or bool(caller.roles & WRITE_ROLES)


# -- the proof of possession ------------------------------------------------------------------


def check_proof(proof: object, app: App, *, now: float, skew: int) -> RegisteredCertificate:
    """Check a proof-of-possession JWT for ``app`` at ``now``; returns the key that signed it.

    Refusals are 401 ``Authentication_MissingOrMalformed`` with Graph's sentence followed by
    what was wrong.
    """
    if not isinstance(proof, str) or not proof.strip():
        raise _malformed_proof("The request has no 'proof': a JWT signed with one of the "
                               "application's valid certificates.")  # fmt: skip
    valid = [c for c in app.certificates if _valid(c, now)]
    if not valid:
        raise _malformed_proof(
            "Applications that don't have any existing valid certificates (no certificates "
            "have been added yet, or all certificates have expired) can't use this service "
            "action; add a certificate with Update application (or the portal) first."
        )
    jws = _split(proof.strip(), strict=True)
    if jws is None:
        raise _malformed_proof(
            "The proof is not a compact JWT of unpadded base64url segments (padding '=' is "
            "not allowed)."
        )
    alg = jws.header.get("alg")
    if not isinstance(alg, str) or alg not in _jose.ALGORITHMS:
        raise _malformed_proof(
            f"The proof's 'alg' {_printable(str(alg))!r} is not an asymmetric signature "
            "algorithm (use RS256)."
        )
    key = _signing_key(jws.header, app, valid, now)
    candidates = [key] if key is not None else valid
    signer = next(
        (
            c
            for c in candidates
            if _jose.verify_signature(c.public_key, alg, jws.signing_input, jws.signature)
        ),
        None,
    )
    if signer is None:
        raise _malformed_proof(
            "The proof's signature does not verify with any valid certificate of the "
            "application: sign it with the private key of a certificate it has now."
        )
    _check_proof_claims(jws.claims, app, now=now, skew=skew)
    return signer


def _valid(cert: RegisteredCertificate, now: float) -> bool:
    return cert.not_before.timestamp() <= now <= cert.not_after.timestamp()


def _signing_key(
    header: Mapping[str, Any], app: App, valid: Sequence[RegisteredCertificate], now: float
) -> RegisteredCertificate | None:
    """The key the header names (``x5t``, ``x5t#S256``, or ``kid``: .NET writes the SHA-1
    hex there), refused if unknown or not valid now; ``None`` when it names none (each valid
    key is then tried)."""
    named = False
    for name in ("x5t#S256", "x5t", "kid"):
        value = header.get(name)
        if not isinstance(value, str) or not value:
            continue
        digests: list[bytes] = []
        if name == "kid" and _HEX_SHA1.match(value):
            digests.append(bytes.fromhex(value))
        else:
            with contextlib.suppress(ValueError):
                digests.append(_jose.b64url_decode_lenient(value))
        for digest in digests:
            found = app.find_certificate(
                sha1=digest if len(digest) == 20 else None,
                sha256=digest if len(digest) == 32 else None,
            )
            if found is not None:
                if not any(found is c for c in valid):
                    raise _malformed_proof(
                        f"The proof is signed with the certificate {found.thumbprint_sha1}, "
                        "which is expired or not yet valid."
                    )
                return found
        # A kid may be any text; only a thumbprint header that names no key is a refusal.
        named = named or name != "kid"
    if named:
        raise _malformed_proof(
            "The proof's signing certificate (its 'x5t' or 'x5t#S256' header) is not one of "
            "the application's key credentials."
        )
    return None


def _check_proof_claims(claims: Mapping[str, Any], app: App, *, now: float, skew: int) -> None:
    aud = claims.get("aud")
    if isinstance(aud, list) and len(aud) == 1:
        aud = aud[0]
    if aud not in PROOF_AUDIENCES:
        raise _malformed_proof(
            f"The proof's 'aud' must be '{PROOF_AUDIENCES[0]}', not {_printable(str(aud))!r}."
        )
    iss = claims.get("iss")
    if not isinstance(iss, str) or iss.lower() != app.object_id.lower():
        hint = " (that is its appId)" if iss == app.client_id else ""
        raise _malformed_proof(
            f"The proof's 'iss' must be the application's object id '{app.object_id}', not "
            f"{_printable(str(iss))!r}{hint}."
        )
    nbf, exp = _number(claims, "nbf"), _number(claims, "exp")
    if nbf is None or exp is None:
        raise _malformed_proof("The proof must have numeric 'nbf' and 'exp' claims.")
    if not 0 < exp - nbf <= MAX_PROOF_LIFETIME:
        raise _malformed_proof(
            f"The proof is valid for {exp - nbf:.0f} s; 'exp' must be after 'nbf' and at most "
            f"{MAX_PROOF_LIFETIME} s (10 minutes) later."
        )
    if now + skew < nbf or now - skew > exp:
        raise _malformed_proof(
            f"The proof is not valid now: valid from {_iso(nbf)} to {_iso(exp)}, now {_iso(now)}."
        )


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- request bodies ---------------------------------------------------------------------------


@dataclass(frozen=True)
class NewKey:
    """A key credential addKey was asked to add."""

    certificate: Certificate
    display_name: str | None
    custom_key_identifier: str | None


def parse_new_key(body: Mapping[str, Any], *, now: float) -> NewKey:
    """The ``keyCredential`` of an addKey body: type ``AsymmetricX509Cert``, usage
    ``Verify``, ``key`` the base64 DER certificate (public part only)."""
    credential = body.get("keyCredential")
    if not isinstance(credential, Mapping):
        raise bad_request("The 'keyCredential' parameter is required: an object with 'type', "
                          "'usage' and 'key'.")  # fmt: skip
    kind, usage = credential.get("type"), credential.get("usage")
    if kind != "AsymmetricX509Cert":
        # Graph also takes X509CertAndPassword (usage Sign, for token signing); the emulator
        # models client authentication certificates only.
        raise bad_request(
            f"Invalid value specified for property 'type' of resource 'KeyCredential': "
            f"{_printable(str(kind))!r}. The emulator takes 'AsymmetricX509Cert'."
        )
    if usage != "Verify":
        raise bad_request(
            f"Invalid value specified for property 'usage' of resource 'KeyCredential': "
            f"{_printable(str(usage))!r}. An AsymmetricX509Cert key's usage must be 'Verify'."
        )
    if body.get("passwordCredential") is not None:
        raise bad_request("The 'passwordCredential' parameter must be null for an "
                          "AsymmetricX509Cert key.")  # fmt: skip
    certificate = _certificate(credential.get("key"))
    if certificate.not_after.timestamp() < now:
        # Graph's behaviour here is not documented; an expired key can never be used, so the
        # emulator refuses it rather than let a rotation "succeed" with it.
        raise bad_request(
            f"Invalid value specified for property 'key' of resource 'KeyCredential': the "
            f"certificate {certificate.thumbprint_sha1} expired on "
            f"{_iso(certificate.not_after.timestamp())}."
        )
    name = credential.get("displayName")
    if name is not None and not isinstance(name, str):
        raise bad_request("Invalid value specified for property 'displayName' of resource "
                          "'KeyCredential'.")  # fmt: skip
    custom = credential.get("customKeyIdentifier")
    if custom is not None and not isinstance(custom, str):
        raise bad_request("Invalid value specified for property 'customKeyIdentifier' of "
                          "resource 'KeyCredential'.")  # fmt: skip
    return NewKey(certificate, name[:MAX_DISPLAY_NAME] if name else None, custom or None)


def _certificate(value: object) -> Certificate:
    invalid = bad_request(
        "Invalid value specified for property 'key' of resource 'KeyCredential': it must be "
        "the certificate's DER bytes in base64 (the public part only)."
    )
    if not isinstance(value, str) or not value.strip():
        raise invalid
    try:
        der = base64.b64decode(value.strip(), validate=True)
        cert = x509.load_der_x509_certificate(der)
        certificate = Certificate(cert)
        certificate.public_key  # noqa: B018 - an unsupported key type fails here
    except (ValueError, TypeError, CertauthError):  # binascii.Error is a ValueError
        raise invalid from None
    return certificate


def parse_key_id(body: Mapping[str, Any]) -> str:
    """The ``keyId`` of a removeKey body (a GUID, lower case)."""
    key_id = body.get("keyId")
    try:
        return str(uuid.UUID(key_id)) if isinstance(key_id, str) else _no_key_id()
    except ValueError:
        return _no_key_id(key_id)


def _no_key_id(value: object = None) -> str:
    shown = f": {_printable(str(value))!r}" if value is not None else ""
    raise bad_request(f"The 'keyId' parameter must be the GUID of a key credential{shown}.")


# -- what Graph shows -------------------------------------------------------------------------


def key_credential_json(key: RegisteredCertificate, *, with_key: bool = False) -> dict[str, Any]:
    """A key credential as Graph shows it.

    ``customKeyIdentifier`` is binary (base64 in JSON), "a 40-character binary type ... defaults
    to the thumbprint of the certificate": Graph shows the 40 hex characters of the SHA-1
    thumbprint (valid base64 text), as the portal uploads it. ``key`` (base64 DER) only when
    asked for with ``$select`` on a single application, else ``null``.
    """
    return {
        "customKeyIdentifier": key.custom_key_identifier or key.thumbprint_sha1,
        "displayName": key.display_name or key.certificate.subject,
        "endDateTime": _iso(key.not_after.timestamp()),
        "key": base64.b64encode(key.certificate.der).decode("ascii") if with_key else None,
        "keyId": key.key_id,
        "startDateTime": _iso(key.not_before.timestamp()),
        "type": "AsymmetricX509Cert",
        "usage": "Verify",
    }
