"""Token credentials: a certificate (or secret, or federated assertion) in, access tokens out.

``CertificateCredential`` (blocking: certauth's own HTTP client, or an ``httpx.Client`` of
yours) and ``AsyncCertificateCredential`` (asyncio: an ``httpx.AsyncClient``) are drop-ins for
azure-identity's classes of the same name and implement azure-core's ``get_token`` /
``get_token_info`` protocols.

Layout: :mod:`~certauth.credential.client_auth` (how the client proves who it is),
:mod:`~certauth.credential.tenants` (which tenants a call may ask for, azure-identity's rules),
:mod:`~certauth.credential.planner` (the pure planning core: cache decisions and the renewal
flow), :mod:`~certauth.credential.shells` (the blocking and asyncio shells: waiting, I/O,
single flight), :mod:`~certauth.credential.classes` (the public classes and their keywords).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from certauth.credential.classes import (
    AsyncCertificateCredential,
    AsyncClientSecretCredential,
    AsyncWorkloadIdentityCredential,
    CertificateCredential,
    ClientSecretCredential,
    WorkloadIdentityCredential,
)
from certauth.credential.types import AccessToken, AccessTokenInfo

if TYPE_CHECKING:
    from certauth.auth import BearerAuth

__all__ = [
    "AccessToken",
    "AccessTokenInfo",
    "AsyncCertificateCredential",
    "AsyncClientSecretCredential",
    "AsyncWorkloadIdentityCredential",
    "BearerAuth",
    "CertificateCredential",
    "ClientSecretCredential",
    "WorkloadIdentityCredential",
]


def __getattr__(name: str) -> Any:
    # BearerAuth lives in certauth.auth (which imports the shells from here): imported on
    # first use, so either module can be imported first.
    if name == "BearerAuth":
        from certauth.auth import BearerAuth

        return BearerAuth
    raise AttributeError(f"module 'certauth.credential' has no attribute {name!r}")
