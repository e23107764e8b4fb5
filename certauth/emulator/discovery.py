"""Discovery documents as Entra ID serves them: OIDC (v2, v1, B2C) and instance discovery.

MSAL reads ``authorization_endpoint`` and ``token_endpoint`` from the OIDC document and refuses
one without them, so the documents are complete (fields as login.microsoftonline.com serves
them), with the emulator's own host in every URL. As in Entra ID, a document fetched through a
domain name lists endpoints under the tenant's GUID.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from certauth.emulator.dpop_checks import DPOP_SIGNING_ALGS

__all__ = [
    "b2c_openid_configuration",
    "instance_discovery",
    "v1_openid_configuration",
    "v2_openid_configuration",
    "with_port",
]

#: Claims Entra's v2 document lists.
_V2_CLAIMS = [
    "sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name",
    "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username",
    "name", "tid", "ver", "at_hash", "c_hash", "email",
]  # fmt: skip
_V1_CLAIMS = [
    "sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name",
    "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "amr", "nonce", "email",
    "given_name", "family_name", "nickname",
]  # fmt: skip
_V1_RESPONSE_TYPES = ["code", "id_token", "code id_token", "token id_token", "token"]
_B2C_RESPONSE_TYPES = [
    "code", "code id_token", "code token", "code id_token token",
    "id_token", "id_token token", "token", "token id_token",
]  # fmt: skip
_AUTH_METHODS = ["client_secret_post", "private_key_jwt", "client_secret_basic"]
#: RFC 8705 section 2.1.1 and 2.2.1: the client authentication methods of mutual TLS.
_MTLS_AUTH_METHODS = ["tls_client_auth", "self_signed_tls_client_auth"]
_CLOUD = {
    "cloud_instance_name": "microsoftonline.com",
    "cloud_graph_host_name": "graph.windows.net",
    "msgraph_host": "graph.microsoft.com",
    "rbac_url": "https://pas.windows.net",
}


def with_port(base_url: str, port: int) -> str:
    """``scheme://host:port`` for ``base_url``'s scheme and host on another ``port`` (the
    host as the client wrote it: the mutual-TLS listener is reached under the same name)."""
    parts = urllib.parse.urlsplit(base_url)
    host = parts.hostname or "127.0.0.1"
    return f"{parts.scheme}://{f'[{host}]' if ':' in host else host}:{port}"


def _mtls_fields(mtls_base: str | None, path: str) -> dict[str, Any]:
    """What a document adds when the mutual-TLS listener runs (RFC 8705 sections 2.1.1,
    2.2.1, 3.3 and 5): the token endpoint's alias there, and bound tokens."""
    if mtls_base is None:
        return {}
    return {
        "mtls_endpoint_aliases": {"token_endpoint": f"{mtls_base}{path}"},
        "tls_client_certificate_bound_access_tokens": True,
    }


def v2_openid_configuration(
    base: str, tenant: str, tenant_id: str | None, *, mtls_base: str | None = None
) -> dict[str, Any]:
    """``/{tenant}/v2.0/.well-known/openid-configuration``.

    ``tenant_id`` is ``None`` for the multi-tenant names (``common``, ``organizations``), whose
    issuer is the template ``{base}/{tenantid}/v2.0``, as in Entra ID. Beyond Entra's fields it
    lists the DPoP proof algorithms the token endpoint takes (RFC 9449 section 5.1) and, with
    ``mtls_base`` (``scheme://host:port`` of the mutual-TLS listener), RFC 8705's fields.
    """
    segment = tenant_id or tenant
    root = f"{base}/{segment}"
    methods = _AUTH_METHODS + (_MTLS_AUTH_METHODS if mtls_base else [])
    return {
        "token_endpoint": f"{root}/oauth2/v2.0/token",
        "token_endpoint_auth_methods_supported": methods,
        "jwks_uri": f"{root}/discovery/v2.0/keys",
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": f"{base}/{tenant_id or '{tenantid}'}/v2.0",
        "request_uri_parameter_supported": False,
        "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
        "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
        "device_authorization_endpoint": f"{root}/oauth2/v2.0/devicecode",
        "http_logout_supported": True,
        "frontchannel_logout_supported": True,
        "end_session_endpoint": f"{root}/oauth2/v2.0/logout",
        "claims_supported": list(_V2_CLAIMS),
        "kerberos_endpoint": f"{root}/kerberos",
        "tenant_region_scope": "NA" if tenant_id else None,
        **_CLOUD,
        # RFC 9449 section 5.1: the token endpoint takes DPoP proofs signed with these.
        "dpop_signing_alg_values_supported": list(DPOP_SIGNING_ALGS),
        **_mtls_fields(mtls_base, f"/{segment}/oauth2/v2.0/token"),
    }


def v1_openid_configuration(
    base: str, tenant: str, tenant_id: str | None, *, mtls_base: str | None = None
) -> dict[str, Any]:
    """``/{tenant}/.well-known/openid-configuration`` (the v1 endpoints).

    Entra's v1 issuer is ``https://sts.windows.net/{tid}/``; the emulator, which has one host,
    uses ``{base}/{tid}/`` in its place. ``mtls_base`` as for the v2 document.
    """
    segment = tenant_id or tenant
    root = f"{base}/{segment}"
    methods = _AUTH_METHODS + (_MTLS_AUTH_METHODS if mtls_base else [])
    return {
        "token_endpoint": f"{root}/oauth2/token",
        "token_endpoint_auth_methods_supported": methods,
        "jwks_uri": f"{root}/discovery/keys",
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": _V1_RESPONSE_TYPES,
        "scopes_supported": ["openid"],
        "issuer": f"{base}/{tenant_id or '{tenantid}'}/",
        "microsoft_multi_refresh_token": True,
        "authorization_endpoint": f"{root}/oauth2/authorize",
        "device_authorization_endpoint": f"{root}/oauth2/devicecode",
        "http_logout_supported": True,
        "frontchannel_logout_supported": True,
        "end_session_endpoint": f"{root}/oauth2/logout",
        "claims_supported": list(_V1_CLAIMS),
        "check_session_iframe": f"{root}/oauth2/checksession",
        "userinfo_endpoint": f"{root}/openid/userinfo",
        "kerberos_endpoint": f"{root}/kerberos",
        "tenant_region_scope": "NA" if tenant_id else None,
        **_CLOUD,
        **_mtls_fields(mtls_base, f"/{segment}/oauth2/token"),
    }


def b2c_openid_configuration(base: str, tenant: str, policy: str, tenant_id: str) -> dict[str, Any]:
    """``/{tenant}/{policy}/v2.0/.well-known/openid-configuration`` (Azure AD B2C).

    B2C keeps the tenant name in its URLs, lower-cases the policy, and ends its issuer with
    a slash.
    """
    root = f"{base}/{tenant.lower()}/{policy.lower()}"
    return {
        "issuer": f"{base}/{tenant_id}/v2.0/",
        "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
        "token_endpoint": f"{root}/oauth2/v2.0/token",
        "end_session_endpoint": f"{root}/oauth2/v2.0/logout",
        "jwks_uri": f"{root}/discovery/v2.0/keys",
        "response_modes_supported": ["query", "fragment", "form_post"],
        "response_types_supported": _B2C_RESPONSE_TYPES,
        "scopes_supported": ["openid"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "claims_supported": ["sub", "iss", "iat", "exp", "aud", "acr", "nonce", "auth_time", "tfp"],
    }


def instance_discovery(
    authorization_endpoint: str, base_url: str, aliases: list[str], api_version: str
) -> dict[str, Any] | None:
    """The ``/common/discovery/instance`` answer for an authorize URL on one of our hosts.

    The shape MSAL reads: ``tenant_discovery_endpoint`` and ``metadata`` (one group with
    ``preferred_network``, ``preferred_cache`` and ``aliases``). ``aliases`` are our
    ``host:port`` names. MSAL sends the authorize URL without the port (it keeps only the host
    name), so the host alone is compared and the answer points at ``base_url``, where the
    request came in. ``None`` when the host is not ours (Entra: ``invalid_instance``,
    AADSTS50049).
    """
    parsed = urllib.parse.urlsplit(authorization_endpoint)
    hosts = {urllib.parse.urlsplit(f"//{alias}").hostname for alias in aliases}
    if parsed.scheme not in ("http", "https") or parsed.hostname not in hosts:
        return None
    segments = [s for s in parsed.path.split("/") if s]
    tenant = segments[0] if segments else "common"
    v2 = "v2.0" in segments[1:]
    document = "v2.0/.well-known/openid-configuration" if v2 else ".well-known/openid-configuration"
    netloc = urllib.parse.urlsplit(base_url).netloc.lower()
    return {
        "tenant_discovery_endpoint": f"{base_url}/{tenant}/{document}",
        "api-version": api_version or "1.1",
        "metadata": [
            {"preferred_network": netloc, "preferred_cache": netloc, "aliases": list(aliases)}
        ],
    }
