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
``claims`` (:mod:`certauth.emulator.cae`), the app registration, the credential (assertion:
header, key, key strength, certificate validity, signature, ``iss``/``sub``, ``aud``, time; or
secret; or, on the mutual-TLS listener, the TLS client certificate:
:mod:`certauth.emulator.mtls_checks`), then the resource.

Two modes. **entra**: only what Entra ID enforces (no assertion lifetime cap, a reused ``jti``
is fine because MSAL reuses assertions for ~9 minutes, any RS/PS algorithm with either
thumbprint header). **strict** adds RFC 7523 to the letter: ``jti`` required and single-use, a
lifetime cap, ``aud`` exactly the URL posted to, and the PS256 <-> ``x5t#S256`` / RS256 <->
``x5t`` pairing MSAL uses. Strict-only refusals say "(strict mode)" in their text.
"""

from __future__ import annotations

import base64
import dataclasses
import urllib.parse
from collections.abc import Mapping

from certauth.emulator.assertion_checks import SUPPORTED_ASSERTION_ALGORITHMS, check_assertion
from certauth.emulator.cae import parse_claims_request
from certauth.emulator.entra_errors import EntraError, missing_parameter
from certauth.emulator.mtls_checks import authenticate_tls_client
from certauth.emulator.registry import (
    GRAPH_RESOURCE,
    MULTI_TENANT_NAMES,
    App,
    Registry,
    Tenant,
    normalize_resource,
)
from certauth.emulator.requests import (
    DEFAULT_MAX_ASSERTION_LIFETIME,
    DEFAULT_SKEW,
    Policy,
    ReplayCache,
    TokenRequest,
)
from certauth.emulator.tokens import AuthMethod, Grant
from certauth.protocol import GRANT_CLIENT_CREDENTIALS

__all__ = [
    "DEFAULT_MAX_ASSERTION_LIFETIME",
    "DEFAULT_SKEW",
    "SUPPORTED_ASSERTION_ALGORITHMS",
    "EntraError",
    "Policy",
    "ReplayCache",
    "TokenRequest",
    "check_token_request",
]

#: OIDC scopes that carry no resource; ignored next to a ``/.default`` scope.
_OIDC_SCOPES = frozenset({"openid", "profile", "offline_access", "email"})

#: The default: what Entra ID itself enforces (no strict RFC 7523 extras).
_ENTRA_RULES = Policy()


# -- the checks -----------------------------------------------------------------------------------


def check_token_request(
    request: TokenRequest,
    registry: Registry,
    *,
    now: float,
    policy: Policy = _ENTRA_RULES,
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
        raise missing_parameter("grant_type")
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
        raise missing_parameter("resource")
    if request.endpoint != "v1" and "resource" in form:
        raise EntraError(901002, "The 'resource' request parameter is not supported.")
    if not client_id:
        raise missing_parameter("client_id")
    # The v1 endpoint names the resource itself and ignores ``scope``.
    resource = (
        v1_resource if request.endpoint == "v1" else _resource_from_scope(form.get("scope", ""))
    )
    claims_request = parse_claims_request(form.get("claims"))

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
        method, alg, thumbprint = check_assertion(
            assertion, form, app, tenant, request, now=now, policy=policy, replay=replay
        )
    elif "client_secret" in form or basic is not None:
        _check_secret(form, basic, app, client_id, now=now)
        method = "secret"
    elif request.mtls:
        # RFC 8705 section 2: on the mutual-TLS listener the TLS client certificate is the
        # credential when the form carries none.
        method, thumbprint = authenticate_tls_client(request.peer, app, now=now)
    else:
        raise EntraError(
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or "
            "'client_secret'.",
        )

    grant = _grant(tenant, app, resource, method, request, alg)
    return dataclasses.replace(grant, thumbprint=thumbprint, claims_request=claims_request)


def _resource_from_scope(scope: str) -> str:
    """The resource a client-credentials ``scope`` names: ``{resource}/.default`` only."""
    names = scope.split()
    if not names:
        raise missing_parameter("scope")
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
    # Microsoft Graph's service principal is in every tenant: never "not found".
    if tenant.resources and declared is None and key != GRAPH_RESOURCE:
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
