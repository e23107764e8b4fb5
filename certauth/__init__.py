"""certauth: authenticate to OAuth2 / Microsoft Entra ID with certificates instead of secrets.

The public API is re-exported here and imported lazily (PEP 562), so ``import certauth`` stays
cheap and a command that only reads certificates never imports the HTTP stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from certauth._version import __version__

if TYPE_CHECKING:
    from certauth.assertion import build_client_assertion as build_client_assertion
    from certauth.auth import BearerAuth as BearerAuth
    from certauth.authority import Authority as Authority
    from certauth.cache import FileTokenCache as FileTokenCache
    from certauth.cache import RedisTokenCache as RedisTokenCache
    from certauth.certificates import Certificate as Certificate
    from certauth.certificates import generate_certificate as generate_certificate
    from certauth.certificates import load_certificate as load_certificate
    from certauth.credential import AccessToken as AccessToken
    from certauth.credential import AccessTokenInfo as AccessTokenInfo
    from certauth.credential import AsyncCertificateCredential as AsyncCertificateCredential
    from certauth.credential import AsyncClientSecretCredential as AsyncClientSecretCredential
    from certauth.credential import (
        AsyncWorkloadIdentityCredential as AsyncWorkloadIdentityCredential,
    )
    from certauth.credential import CertificateCredential as CertificateCredential
    from certauth.credential import ClientSecretCredential as ClientSecretCredential
    from certauth.credential import WorkloadIdentityCredential as WorkloadIdentityCredential
    from certauth.protocol import RetryPolicy as RetryPolicy
    from certauth.protocol import Token as Token
    from certauth.signers import AsyncSigner as AsyncSigner
    from certauth.signers import KeyFileSigner as KeyFileSigner
    from certauth.signers import Signer as Signer
    from certauth.verify import AsyncTokenVerifier as AsyncTokenVerifier
    from certauth.verify import TokenVerifier as TokenVerifier
    from certauth.verify import verify_access_token as verify_access_token

#: public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "Certificate": "certauth.certificates",
    "generate_certificate": "certauth.certificates",
    "load_certificate": "certauth.certificates",
    "build_client_assertion": "certauth.assertion",
    "Signer": "certauth.signers",
    "AsyncSigner": "certauth.signers",
    "KeyFileSigner": "certauth.signers",
    "Authority": "certauth.authority",
    "RetryPolicy": "certauth.protocol",
    "Token": "certauth.protocol",
    "AccessToken": "certauth.credential",
    "AccessTokenInfo": "certauth.credential",
    "CertificateCredential": "certauth.credential",
    "AsyncCertificateCredential": "certauth.credential",
    "ClientSecretCredential": "certauth.credential",
    "AsyncClientSecretCredential": "certauth.credential",
    "WorkloadIdentityCredential": "certauth.credential",
    "AsyncWorkloadIdentityCredential": "certauth.credential",
    "BearerAuth": "certauth.auth",
    "FileTokenCache": "certauth.cache",
    "RedisTokenCache": "certauth.cache",
    "verify_access_token": "certauth.verify",
    "TokenVerifier": "certauth.verify",
    "AsyncTokenVerifier": "certauth.verify",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'certauth' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
