"""The rules Entra ID applies to a client-credentials token request, as pure functions.

Input: the parsed request (:class:`TokenRequest`), the directory (:class:`Registry`), the time and
the mode (:class:`Policy`). Output: a :class:`~certauth.emulator.tokens.Grant`, or an
:class:`EntraError` carrying the AADSTS code Entra ID would send. No sockets, no clock reads.

Where each rule comes from: Microsoft Learn's "Microsoft identity platform certificate
credentials" (https://learn.microsoft.com/entra/identity-platform/certificate-credentials: the
assertion's header and claims), "Microsoft identity platform and the OAuth 2.0 client
credentials flow" (https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow)
and "Microsoft Entra authentication and authorization error codes"
(https://learn.microsoft.com/entra/identity-platform/reference-error-codes: the codes and the
error body); RFC 6749 section 4.4 (client credentials) and 2.3.1 (client secrets), RFC 7521/7523
(JWT client assertions), RFC 7515/7518 (JWS and its algorithms, through :mod:`certauth._jose`).

Order of the checks (the first failure is the answer, as with Entra): tenant, ``grant_type``,
multi-tenant path, endpoint-specific parameters (``resource``), ``client_id``, ``scope`` syntax,
the app registration, the credential (assertion: header, key, key strength, certificate
validity, signature, ``iss``/``sub``, ``aud``, time; or secret), then the resource.

Two modes. **entra**: only what Entra ID enforces (no assertion lifetime cap, a reused ``jti``
is fine because MSAL reuses assertions for ~9 minutes, any RS/PS algorithm with either
thumbprint header). **strict** adds RFC 7523 to the letter: ``jti`` required and single-use, a
lifetime cap, ``aud`` exactly the URL posted to, and the PS256 <-> ``x5t#S256`` / RS256 <->
``x5t`` pairing MSAL uses. Strict-only refusals say "(strict mode)" in their text.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import math
import threading
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from certauth import _jose
from certauth.emulator.registry import (
    MULTI_TENANT_NAMES,
    App,
    FederatedCredential,
    Registry,
    Tenant,
    normalize_resource,
)
from certauth.emulator.tokens import AuthMethod, Endpoint, Grant
from certauth.protocol import CLIENT_ASSERTION_TYPE, GRANT_CLIENT_CREDENTIALS

__all__ = [
    "SUPPORTED_ASSERTION_ALGORITHMS",
    "EntraError",
    "Policy",
    "ReplayCache",
    "TokenRequest",
    "check_token_request",
]

#: Entra ID takes client assertions signed with the RSA algorithms of RFC 7518 (RS* and PS*;
#: the certificate-credentials page asks for PS256); anything else is AADSTS5002738.
SUPPORTED_ASSERTION_ALGORITHMS = tuple(
    name for name, spec in _jose.ALGORITHMS.items() if spec.kty == "RSA"
)
#: Entra ID documents no skew; five minutes is the .NET (and Entra's observed) tolerance.
DEFAULT_SKEW = 300
#: Strict mode's assertion lifetime cap (Microsoft recommends 5-10 minutes).
DEFAULT_MAX_ASSERTION_LIFETIME = 600
#: OIDC scopes that carry no resource; ignored next to a ``/.default`` scope.
_OIDC_SCOPES = frozenset({"openid", "profile", "offline_access", "email"})
_CERT_DOCS = (
    " Review the documentation at "
    "https://learn.microsoft.com/entra/identity-platform/certificate-credentials ."
)

# code -> (OAuth error, HTTP status). RFC 6749 section 5.2: a failed client authentication
# (invalid_client) may be 401, everything else is 400. Entra ID answers invalid_client with 401.
_ERRORS: dict[int, tuple[str, int]] = {
    90002: ("invalid_request", 400),
    9001023: ("invalid_request", 400),
    900144: ("invalid_request", 400),
    900561: ("invalid_request", 400),
    70003: ("unsupported_grant_type", 400),
    901002: ("invalid_request", 400),
    700016: ("unauthorized_client", 400),
    7000218: ("invalid_client", 401),
    50027: ("invalid_request", 400),
    5002738: ("invalid_request", 400),
    5002730: ("invalid_request", 400),
    700027: ("invalid_client", 401),
    50032: ("invalid_client", 401),
    1000502: ("invalid_client", 401),
    50048: ("invalid_client", 401),
    700021: ("invalid_client", 401),
    5002741: ("invalid_client", 401),
    700023: ("invalid_client", 401),
    700024: ("invalid_client", 401),
    70021: ("invalid_client", 401),
    1002012: ("invalid_scope", 400),
    500011: ("invalid_resource", 400),
    70011: ("invalid_scope", 400),
    700022: ("invalid_scope", 400),
    7000215: ("invalid_client", 401),
    7000222: ("invalid_client", 401),
    99027: ("invalid_request", 400),  # AADB2C99027
}


class EntraError(Exception):
    """A refusal in Entra ID's terms: OAuth ``error``, AADSTS ``code``, text and HTTP status.

    ``b2c`` errors are numbered AADB2Cnnnnn and rendered the way Azure AD B2C renders them
    (no ``error_codes``, no trace id).
    """

    def __init__(
        self, code: int, text: str, *, b2c: bool = False, basic_auth: bool = False
    ) -> None:
        super().__init__(f"{'AADB2C' if b2c else 'AADSTS'}{code}: {text}")
        self.code = code
        self.text = text
        self.b2c = b2c
        self.error, self.status = _ERRORS[code]
        #: RFC 6749 section 5.2: a 401 after HTTP Basic authentication names the scheme.
        self.basic_auth = basic_auth

    @property
    def aadsts(self) -> str:
        """The code as Entra writes it, e.g. ``AADSTS700027`` or ``AADB2C99027``."""
        return f"{'AADB2C' if self.b2c else 'AADSTS'}{self.code}"

    @property
    def summary(self) -> str:
        """The text's first sentence, for log lines."""
        return self.text.split(". ", 1)[0].split(" [", 1)[0]

    def body(
        self, *, trace_id: str, correlation_id: str, now: dt.datetime, base_url: str
    ) -> dict[str, Any]:
        """The JSON error body, shaped like the sample response of "Microsoft Entra
        authentication and authorization error codes"
        (https://learn.microsoft.com/entra/identity-platform/reference-error-codes)."""
        stamp = now.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
        if self.b2c:
            return {
                "error": self.error,
                "error_description": (
                    f"{self.aadsts}: {self.text}\r\nCorrelation ID: {correlation_id}\r\n"
                    f"Timestamp: {stamp}\r\n"
                ),
            }
        return {
            "error": self.error,
            "error_description": (
                f"{self.aadsts}: {self.text}\r\nTrace ID: {trace_id}\r\n"
                f"Correlation ID: {correlation_id}\r\nTimestamp: {stamp}"
            ),
            "error_codes": [self.code],
            "timestamp": stamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": f"{base_url}/error?code={self.code}",
        }


@dataclass(frozen=True)
class Policy:
    """How picky the emulator is: Entra's rules (default) or ``strict`` RFC 7523 on top."""

    strict: bool = False
    skew: int = DEFAULT_SKEW
    max_assertion_lifetime: int = DEFAULT_MAX_ASSERTION_LIFETIME


@dataclass(frozen=True)
class TokenRequest:
    """One POST to a token endpoint, as the HTTP layer parsed it.

    ``url`` is the endpoint as the client addressed it (scheme, ``Host`` header, path) and
    ``base_url`` its scheme and host: what an assertion's ``aud`` must name.
    """

    endpoint: Endpoint
    tenant: str
    url: str
    base_url: str
    form: Mapping[str, str]
    policy: str | None = None
    authorization: str | None = None


class ReplayCache:
    """Strict mode's memory of used ``jti`` values, each kept until its assertion expires."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], float] = {}
        self._max = max_entries

    def add(self, client_id: str, jti: str, *, expires: float, now: float) -> bool:
        """Record ``jti``; ``False`` if it was already used and has not expired."""
        key = (client_id.lower(), jti)
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and seen >= now:
                return False
            if len(self._seen) >= self._max:
                self._seen = {k: v for k, v in self._seen.items() if v >= now}
            self._seen[key] = expires
            return True

    def clear(self) -> None:
        """Forget every ``jti``."""
        with self._lock:
            self._seen.clear()


# -- the checks -----------------------------------------------------------------------------------


def check_token_request(
    request: TokenRequest,
    registry: Registry,
    *,
    now: float,
    policy: Policy = Policy(),
    replay: ReplayCache | None = None,
) -> Grant:
    """Apply Entra ID's rules to ``request`` at time ``now`` (epoch seconds).

    Returns what the client earned, or raises :class:`EntraError` with the code Entra ID would
    send. In strict mode ``replay`` remembers used ``jti`` values (required then).
    """
    form = request.form
    name = request.tenant
    multi_tenant = name.lower() in MULTI_TENANT_NAMES
    tenant = None if multi_tenant else registry.tenant(name)
    if tenant is None and not multi_tenant:
        raise EntraError(
            90002,
            f"Tenant '{name}' not found. Check to make sure you have the correct tenant ID and "
            "are signing into the correct cloud. Check with your subscription administrator, "
            "this may happen if there are no active subscriptions for the tenant.",
        )
    grant_type = form.get("grant_type", "").strip()
    if not grant_type:
        raise _missing("grant_type")
    if grant_type != GRANT_CLIENT_CREDENTIALS:
        raise EntraError(
            70003,
            f"The app requested an unsupported grant type '{grant_type}'. (The emulator serves "
            "the client credentials grant only.)",
        )
    if tenant is None:
        raise EntraError(
            9001023,
            "The grant type is not supported over the /common or /consumers endpoints. Please "
            "use the /organizations or tenant-specific endpoint.",
        )

    basic = _basic_credentials(request.authorization)
    client_id = form.get("client_id", "").strip() or (basic[0] if basic else "")

    v1_resource = form.get("resource", "").strip()
    if request.endpoint == "v1" and not v1_resource:
        raise _missing("resource")
    if request.endpoint != "v1" and "resource" in form:
        raise EntraError(901002, "The 'resource' request parameter is not supported.")
    if not client_id:
        raise _missing("client_id")
    # The v1 endpoint names the resource itself and ignores ``scope``.
    resource = (
        v1_resource if request.endpoint == "v1" else _resource_from_scope(form.get("scope", ""))
    )

    app = tenant.app(client_id)
    if app is None:
        raise EntraError(
            700016,
            f"Application with identifier '{client_id}' was not found in the directory "
            f"'{tenant.display_name}'. This can happen if the application has not been "
            "installed by the administrator of the tenant or consented to by any user in the "
            "tenant. You may have sent your authentication request to the wrong tenant.",
        )

    method: AuthMethod
    alg: str | None = None
    thumbprint: str | None = None
    assertion = form.get("client_assertion", "")
    if assertion:
        if request.endpoint == "b2c":
            # Azure AD B2C's client credentials flow takes client secrets only ("Set up OAuth
            # 2.0 client credentials flow in Azure Active Directory B2C",
            # https://learn.microsoft.com/azure/active-directory-b2c/client-credentials-grant-flow).
            raise EntraError(
                99027,
                f"Policy '{request.policy}' does not contain a AuthorizationTechnicalProfile "
                "with a corresponding ClientAssertionType.",
                b2c=True,
            )
        method, alg, thumbprint = _check_assertion(
            assertion, form, app, tenant, request, now=now, policy=policy, replay=replay
        )
    elif "client_secret" in form or basic is not None:
        _check_secret(form, basic, app, client_id, now=now)
        method = "secret"
    else:
        raise EntraError(
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or "
            "'client_secret'.",
        )

    grant = _grant(tenant, app, resource, method, request, alg)
    return dataclasses.replace(grant, thumbprint=thumbprint)


def _missing(parameter: str) -> EntraError:
    return EntraError(
        900144, f"The request body must contain the following parameter: '{parameter}'."
    )


def _resource_from_scope(scope: str) -> str:
    """The resource a client-credentials ``scope`` names: ``{resource}/.default`` only."""
    names = scope.split()
    if not names:
        raise _missing("scope")
    if any(not c.isprintable() for c in scope.replace(" ", "")):
        raise EntraError(
            70011,
            "The provided value for the input parameter 'scope' is not valid. The scope "
            f"{scope!r} contains characters that are not allowed.",
        )
    with_resource = [n for n in names if n.lower() not in _OIDC_SCOPES] or names
    for name in with_resource:
        if not name.endswith("/.default"):
            # An app-only scope is {resource}/.default (AADSTS1002012): "Microsoft identity
            # platform and the OAuth 2.0 client credentials flow", the scope parameter.
            raise EntraError(
                1002012,
                f"The provided value for scope {name} is not valid. Client credential flows "
                "must have a scope value with /.default suffixed to the resource identifier "
                "(application ID URI).",
            )
    resources = [n[: -len("/.default")] for n in with_resource]
    for resource in resources:
        if not resource.strip("/"):
            raise EntraError(
                70011,
                "The provided value for the input parameter 'scope' is not valid. The scope "
                f"{scope} is not valid: no resource before /.default.",
            )
    if len({normalize_resource(r) for r in resources}) > 1:
        raise EntraError(
            700022,
            "The provided value for the input parameter scope is not valid because it "
            f"contains more than one resource. Scope {scope} is not valid.",
        )
    return resources[0]


def _grant(
    tenant: Tenant,
    app: App,
    resource: str,
    method: AuthMethod,
    request: TokenRequest,
    alg: str | None,
) -> Grant:
    key = normalize_resource(resource)
    declared = tenant.resources.get(key)
    if tenant.resources and declared is None:
        raise EntraError(
            500011,
            f"The resource principal named {resource} was not found in the tenant named "
            f"{tenant.display_name}. This can happen if the application has not been installed "
            "by the administrator of the tenant or consented to by any user in the tenant. You "
            "might have sent your authentication request to the wrong tenant.",
        )
    roles = app.roles_for(key) | frozenset(declared.roles if declared else ())
    return Grant(
        tenant_id=tenant.tenant_id,
        client_id=app.client_id,
        object_id=app.object_id,
        resource=resource,
        roles=tuple(sorted(roles)),
        auth_method=method,
        endpoint=request.endpoint,
        policy=request.policy,
        assertion_alg=alg,
    )


# -- client secrets (RFC 6749 section 2.3.1) --------------------------------------------------


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    """``(client_id, secret)`` from an HTTP Basic header; ``None`` without one."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except ValueError:  # not base64 (binascii.Error), not ASCII, not UTF-8 underneath
        return ("", "")
    user, sep, password = decoded.partition(":")
    if not sep:
        return ("", "")
    # RFC 6749 section 2.3.1: both parts are form-urlencoded before Basic encoding.
    return urllib.parse.unquote_plus(user), urllib.parse.unquote_plus(password)


def _check_secret(
    form: Mapping[str, str], basic: tuple[str, str] | None, app: App, client_id: str, *, now: float
) -> None:
    via_basic = "client_secret" not in form
    if basic is not None and basic[0] and basic[0].lower() != client_id.lower():
        raise EntraError(
            7000215,
            f"Invalid client secret provided: the client_id '{client_id}' in the body differs "
            f"from the user '{basic[0]}' in the Authorization header.",
            basic_auth=True,
        )
    secret = form.get("client_secret") if not via_basic else (basic[1] if basic else "")
    invalid = EntraError(
        7000215,
        "Invalid client secret provided. Ensure the secret being sent in the request is the "
        f"client secret value, not the client secret ID, for a secret added to app '{client_id}'.",
        basic_auth=via_basic,
    )
    if not secret:
        raise invalid
    matching = [s for s in app.secrets if s.matches(secret)]
    if not matching:
        raise invalid
    if all(s.expires is not None and s.expires.timestamp() <= now for s in matching):
        raise EntraError(
            7000222,
            f"The provided client secret keys for app '{client_id}' are expired. Visit the "
            "Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or "
            "consider using certificate credentials for added security: "
            "https://aka.ms/certCreds.",
            basic_auth=via_basic,
        )


# -- client assertions (RFC 7523) -------------------------------------------------------------


def _printable(value: str, limit: int = 100) -> str:
    # Echoed into an error text: no line breaks, which would forge its "Trace ID:" lines.
    return "".join(c if c.isprintable() else "?" for c in value[:limit])


def _malformed(detail: str = "") -> EntraError:
    return EntraError(50027, f"JWT token is invalid or malformed.{detail}")


def _no_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity, which are not JSON (RFC 8259 section 6); Entra's
    # parser refuses them.
    raise ValueError(f"{name} is not JSON")


def _json_part(part: str) -> dict[str, Any]:
    try:
        value = json.loads(_jose.b64url_decode_lenient(part), parse_constant=_no_constant)
    except (ValueError, RecursionError):  # RecursionError: [[[[...]]]]
        raise _malformed() from None
    if not isinstance(value, dict):
        raise _malformed()
    return value


def _ticks(epoch: float) -> str:
    # .NET round-trip format ("o"), as in Entra's AADSTS700024 text.
    try:
        when = dt.datetime.fromtimestamp(epoch, dt.timezone.utc)
    except (OverflowError, OSError, ValueError):  # an assertion's exp of 1e300
        return f"{epoch:.0f}"
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond * 10:07d}Z"


def _numeric(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError, OverflowError):  # a string, a list, 10**400
        number = math.nan
    if not isinstance(value, (int, float)) or not math.isfinite(number):
        raise _malformed(f" Invalid JWT token. The '{name}' claim is not a number.")
    return number


def _check_assertion(
    assertion: str,
    form: Mapping[str, str],
    app: App,
    tenant: Tenant,
    request: TokenRequest,
    *,
    now: float,
    policy: Policy,
    replay: ReplayCache | None,
) -> tuple[AuthMethod, str, str | None]:
    """Check a client assertion; returns the method, its ``alg`` and the signer's x5t#S256."""
    assertion_type = form.get("client_assertion_type", "").strip()
    if not assertion_type:
        raise _missing("client_assertion_type")
    if assertion_type != CLIENT_ASSERTION_TYPE:
        raise _malformed(
            f" The client_assertion_type '{assertion_type}' is not supported; use "
            f"'{CLIENT_ASSERTION_TYPE}'."
        )
    parts = assertion.strip().split(".")
    # An empty signature is well-formed (``alg: none``); the algorithm check refuses it.
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise _malformed()
    header = _json_part(parts[0])
    claims = _json_part(parts[1])
    try:
        signature = _jose.b64url_decode_lenient(parts[2])
    except ValueError:
        raise _malformed() from None
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii", errors="replace")

    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in SUPPORTED_ASSERTION_ALGORITHMS:
        raise EntraError(
            5002738,
            f"Invalid JWT token. '{alg}' is not a supported signature algorithm. Supported "
            f"signing algorithms are: '{','.join(SUPPORTED_ASSERTION_ALGORITHMS)}'",
        )

    issuer = claims.get("iss")
    if app.federated and isinstance(issuer, str) and issuer.lower() != app.client_id.lower():
        federated = [f for f in app.federated if f.issuer == issuer]
        if federated:
            method = _check_federated(
                alg, header, claims, signing_input, signature, federated, now=now, policy=policy
            )
            return method, alg, None

    x5t_s256 = header.get("x5t#S256")
    x5t = header.get("x5t")
    if not isinstance(x5t_s256, str) and not isinstance(x5t, str):
        raise _malformed(" Invalid JWT token. No certificate thumbprint specified in token header.")
    registered = None
    shown = ""
    for form_name, value in (("x5t#S256", x5t_s256), ("x5t", x5t)):
        if not isinstance(value, str):
            continue
        try:
            digest = _jose.b64url_decode_lenient(value)
        except ValueError:
            shown = shown or _printable(value)
            continue
        shown = shown or digest.hex().upper()
        registered = app.find_certificate(
            sha256=digest if form_name == "x5t#S256" else None,
            sha1=digest if form_name == "x5t" else None,
        )
        if registered is not None:
            break
    if registered is None:
        raise EntraError(
            700027,
            "Client assertion failed signature validation. [Reason - The key was not found., "
            f"Thumbprint of key used by client: '{shown}', Please visit the Azure Portal, Graph "
            "Explorer or directly use MS Graph to see configured keys for app Id "
            f"'{app.client_id}'.]",
        )
    if policy.strict:
        wanted = "x5t#S256" if alg.startswith("PS") else "x5t"
        if not isinstance(header.get(wanted), str):
            raise _malformed(
                f" Invalid JWT token. (strict mode) a {alg} assertion must name its certificate "
                f"with '{wanted}' (MSAL pairs PS256 with x5t#S256 and RS256 with x5t); Entra ID "
                "accepts either."
            )
    key = registered.public_key
    if not isinstance(key, rsa.RSAPublicKey):
        raise EntraError(5002730, "Invalid JWT token. Unsupported key for the signing algorithm.")
    if key.key_size < _jose.MIN_RSA_BITS:
        raise EntraError(
            50032,
            f"WeakRsaKey: the certificate '{registered.thumbprint_sha1}' has a {key.key_size}-bit "
            f"RSA key; at least {_jose.MIN_RSA_BITS} bits are required.",
        )
    if not registered.not_before.timestamp() <= now <= registered.not_after.timestamp():
        raise EntraError(
            1000502,
            f"The certificate with thumbprint '{registered.thumbprint_sha1}' used to sign the "
            f"client assertion is outside its validity period. Current time: {_ticks(now)}, "
            f"certificate valid from {_ticks(registered.not_before.timestamp())} to "
            f"{_ticks(registered.not_after.timestamp())}.",
        )
    if not _jose.verify_signature(key, alg, signing_input, signature):
        start = registered.not_before.strftime("%m/%d/%Y %H:%M:%S")
        end = registered.not_after.strftime("%m/%d/%Y %H:%M:%S")
        raise EntraError(
            700027,
            "Client assertion contains an invalid signature. [Reason - The provided signature "
            "value did not match the expected signature value., Thumbprint of key used by "
            f"client: '{registered.thumbprint_sha1}', Found key 'Start={start}, End={end}']",
        )

    subject = claims.get("sub")
    if issuer != subject:
        raise EntraError(
            50048,
            f"Subject mismatches Issuer claim in the client assertion for application "
            f"'{app.client_id}'.{_CERT_DOCS}",
        )
    if not isinstance(issuer, str) or issuer.lower() != app.client_id.lower():
        raise EntraError(
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter."
            + _CERT_DOCS,
        )
    _check_audience(claims.get("aud"), tenant, request, policy)
    _check_time(claims, now=now, policy=policy)
    if policy.strict:
        _check_strict_claims(claims, app, now=now, policy=policy, replay=replay)
    thumbprint = _jose.b64url_encode(registered.sha256)
    return "certificate", alg, thumbprint


def _check_audience(aud: Any, tenant: Tenant, request: TokenRequest, policy: Policy) -> None:
    if isinstance(aud, list):
        if len(aud) > 1:
            raise EntraError(
                5002741,
                "The client assertion contains more than one audience ('aud'); send exactly "
                "one: the token endpoint URL.",
            )
        aud = aud[0] if aud else None
    if not isinstance(aud, str) or not _audience_matches(aud, tenant, request, policy):
        raise EntraError(
            700023, "Client assertion audience claim does not match Realm issuer." + _CERT_DOCS
        )


def _audience_matches(aud: str, tenant: Tenant, request: TokenRequest, policy: Policy) -> bool:
    if policy.strict:
        # RFC 7523 section 3, item 3: the token endpoint URL the assertion is presented to.
        return aud == request.url
    # Entra ID takes the v1 or the v2 token endpoint of this realm (tenant id or a domain),
    # on the host the request was sent to: the login server, as the certificate-credentials
    # page says of 'aud' (https://learn.microsoft.com/entra/identity-platform/certificate-credentials).
    parsed = urllib.parse.urlsplit(aud)
    base = urllib.parse.urlsplit(request.base_url)
    if (parsed.scheme.lower(), parsed.netloc.lower()) != (base.scheme, base.netloc.lower()):
        return False
    if parsed.query or parsed.fragment:
        return False
    segments = parsed.path.strip("/").split("/")
    if not segments or segments[0].lower() not in {tenant.tenant_id, *tenant.domains}:
        return False
    return [s.lower() for s in segments[1:]] in (["oauth2", "v2.0", "token"], ["oauth2", "token"])


def _check_time(claims: Mapping[str, Any], *, now: float, policy: Policy) -> None:
    exp = _numeric(claims, "exp")
    nbf = _numeric(claims, "nbf")
    if exp is None:
        raise _malformed(" Invalid JWT token. The token has no expiration ('exp') claim.")
    if now > exp + policy.skew or (nbf is not None and now + policy.skew < nbf):
        raise EntraError(
            700024,
            f"Client assertion is not within its valid time range. Current time: {_ticks(now)}, "
            f"assertion valid from {_ticks(nbf or 0)}, expiry time of assertion {_ticks(exp)}."
            + _CERT_DOCS,
        )


def _check_strict_claims(
    claims: Mapping[str, Any],
    app: App,
    *,
    now: float,
    policy: Policy,
    replay: ReplayCache | None,
) -> None:
    exp = _numeric(claims, "exp") or 0.0
    start = _numeric(claims, "nbf") or _numeric(claims, "iat") or now
    if exp - start > policy.max_assertion_lifetime:
        raise EntraError(
            700024,
            f"Client assertion is not within its valid time range: (strict mode) it is valid "
            f"for {int(exp - start)} s, more than the {policy.max_assertion_lifetime} s cap "
            "(Entra ID sets no cap but recommends 5-10 minutes).",
        )
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        raise _malformed(
            " Invalid JWT token. (strict mode) the assertion has no 'jti' claim "
            "(RFC 7523 section 3, item 7)."
        )
    if replay is not None and not replay.add(
        app.client_id, jti, expires=exp + policy.skew, now=now
    ):
        raise _malformed(
            f" Invalid JWT token. (strict mode) the assertion's jti '{jti}' was already used; "
            "build a new assertion for each request (RFC 7523 section 3, item 7). Entra ID "
            "accepts a reused assertion."
        )


def _check_federated(
    alg: str,
    header: Mapping[str, Any],
    claims: Mapping[str, Any],
    signing_input: bytes,
    signature: bytes,
    candidates: list[FederatedCredential],
    *,
    now: float,
    policy: Policy,
) -> AuthMethod:
    """A token from a trusted external issuer (workload identity federation)."""
    kid = header.get("kid")
    keys = [
        key
        for credential in candidates
        for key_id, key in credential.keys
        if kid is None or key_id is None or key_id == kid
    ]
    if not any(_jose.verify_signature(key, alg, signing_input, signature) for key in keys):
        raise EntraError(
            700027,
            "Client assertion contains an invalid signature. [Reason - The key was not "
            f"found among the keys of the federated issuer '{claims.get('iss')}'.]",
        )
    subject = claims.get("sub")
    aud = claims.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    if not any(
        c.subject == subject and any(a in c.audiences for a in audiences) for c in candidates
    ):
        raise EntraError(
            70021,
            "No matching federated identity record found for presented assertion. Assertion "
            f"Issuer: '{claims.get('iss')}'. Assertion Subject: '{subject}'. Assertion "
            f"Audience: '{','.join(str(a) for a in audiences)}'.",
        )
    _check_time(claims, now=now, policy=policy)
    return "federated"
