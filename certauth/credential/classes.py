"""The public credentials: certificate, client secret and federated token, each sync and async.

Each kind's constructor is written once, with every keyword explicit and typed (certauth's
and the azure-identity keywords it accepts for drop-in compatibility), in a mixin that both its
sync class (:class:`~certauth.credential.shells.SyncCredential`) and its async class
(:class:`~certauth.credential.shells.AsyncCredential`) inherit; ``client`` (a caller's
own HTTP client; without it the sync classes send through certauth's own, the async ones through
an ``httpx.AsyncClient``) is an ``httpx.Client`` for the first and an ``httpx.AsyncClient`` for
the second.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeAlias

from certauth._files import read_input_file
from certauth.assertion import DEFAULT_LIFETIME, check_lifetime
from certauth.authority import resolve_authority
from certauth.certificates import Certificate, load_certificate
from certauth.credential import dpop_binding
from certauth.credential.client_auth import (
    CertificateAuth,
    CertificateFiles,
    ClientAuth,
    FileAssertionAuth,
    SecretAuth,
)
from certauth.credential.mtls import MtlsAuth
from certauth.credential.planner import DEFAULT_REFRESH_MARGIN, Planner
from certauth.credential.shells import AsyncCredential, SyncCredential
from certauth.credential.tenants import TenantRules
from certauth.errors import CertificateError, InvalidArgumentError
from certauth.protocol import RetryPolicy, SecretMethod
from certauth.signers import is_pkcs11_uri

if TYPE_CHECKING:
    from certauth._httpx import httpx
    from certauth.cache import TokenCache
    from certauth.dpop import DPoPKey
    from certauth.signers import Signer

__all__ = [
    "AsyncCertificateCredential",
    "AsyncClientSecretCredential",
    "AsyncWorkloadIdentityCredential",
    "CertificateCredential",
    "ClientSecretCredential",
    "WorkloadIdentityCredential",
]

#: ``verify=`` / ``connection_verify=``: a CA bundle path, an ``ssl.SSLContext``, ``True`` or
#: ``None`` for the system store (``False`` is refused: certauth always verifies TLS).
#: (A name for the type checker only: ``ssl`` is imported when the first request is due.)
if TYPE_CHECKING:
    import ssl

    Verify: TypeAlias = str | ssl.SSLContext | bool | None


class _Shell:
    """What the constructors below call on either shell (declared for the type checker only:
    at run time the shell class that follows in the MRO provides it)."""

    if TYPE_CHECKING:

        def _setup(self, core: Planner, client: object, verify: Any, timeout: float) -> None: ...


#: The cloud's login host when ``authority=`` is not given, as azure-identity reads it.
AUTHORITY_HOST_ENV = "AZURE_AUTHORITY_HOST"


def _planner(
    tenant_id: str | None,
    client_id: str | None,
    auth: ClientAuth,
    *,
    authority: str | None,
    token_endpoint: str | None,
    issuer: str | None,
    b2c_policy: str | None,
    timeout: float,
    retry: RetryPolicy | None,
    refresh_margin: float,
    cache: TokenCache | None,
    clock: Callable[[], float],
    additionally_allowed_tenants: Iterable[str] | None,
    dpop: bool | DPoPKey = False,
) -> Planner:
    """The planning core for the arguments every credential shares."""
    if timeout <= 0:
        raise InvalidArgumentError(f"timeout must be above 0 seconds, got {timeout}")
    if authority is None and not (token_endpoint or issuer):
        # azure-identity's default authority: AZURE_AUTHORITY_HOST, else the public cloud (its
        # credentials take it from get_default_authority() when authority= is not given), so
        # a drop-in works unchanged in a sovereign cloud's pipeline. A credential naming its
        # server by token_endpoint=/issuer= has no use for a cloud host.
        authority = os.environ.get(AUTHORITY_HOST_ENV, "").strip() or None
    resolved = resolve_authority(
        tenant_id,
        host=authority,
        b2c_policy=b2c_policy,
        token_endpoint=token_endpoint,
        issuer=issuer,
    )
    tenants = TenantRules.for_credential(
        tenant_id,
        resolved,
        host=authority,
        b2c_policy=b2c_policy,
        token_endpoint=token_endpoint,
        issuer=issuer,
        additionally_allowed_tenants=additionally_allowed_tenants,
        environ=os.environ,
    )
    store = _check_cache(cache)
    binding = dpop_binding.binding_for(dpop, clock)
    if binding is not None:
        # A DPoP-bound token is useless to another process: it holds another key (or, given
        # the same one, its own nonces); the shared store is left alone.
        store = None
    return Planner(
        client_id=client_id or "",
        auth=auth,
        authority=resolved,
        issuer=issuer if resolved is None else None,
        retry=retry or RetryPolicy(),
        refresh_margin=float(refresh_margin),
        store=store,
        clock=clock,
        timeout=timeout,
        tenants=tenants,
        dpop=binding,
    )


def _check_cache(cache: object) -> TokenCache | None:
    if cache is None:
        return None
    from certauth.cache import TokenCache

    if isinstance(cache, TokenCache):
        return cache
    raise InvalidArgumentError(
        f"cache={cache!r} is not a token cache: pass FileTokenCache(), RedisTokenCache(...) or "
        "an object with get/set/delete/lock"
    )


def _verify(verify: Verify, connection_verify: Verify) -> Verify:
    return verify if verify is not None else connection_verify


def _certificate_auth(
    certificate_path: str | os.PathLike[str] | None,
    certificate_data: bytes | None,
    certificate: Certificate | None,
    password: str | bytes | None,
    key_path: str | os.PathLike[str] | None,
    *,
    signer: Signer | None,
    alg: str | None,
    lifetime: int,
    send_chain: bool,
    mtls: bool = False,
    verify: Verify = None,
) -> CertificateAuth:
    if mtls and (
        signer is not None or (key_path is not None and is_pkcs11_uri(os.fspath(key_path)))
    ):
        # Python's ssl module signs the TLS handshake with a key in this process's memory
        # only; it cannot hand that signature to an HSM or a vault.
        raise InvalidArgumentError(
            "mtls=True needs the private key in a file (PEM, PFX or DER): the TLS handshake "
            "cannot be signed by a signer= or a pkcs11: key; use the assertion (mtls=False) "
            "for those"
        )
    if key_path is not None and signer is None and is_pkcs11_uri(os.fspath(key_path)):
        # A key in a PKCS#11 token (RFC 7512 URI): it signs there; the certificate comes from
        # certificate_path/certificate_data/certificate, or else from beside the key in the
        # token. password= is the token's user PIN (or pin-source= in the URI).
        from certauth.signers.pkcs11 import Pkcs11Signer

        public = certificate
        if certificate_path is not None or certificate_data is not None:
            source = certificate_data if certificate_data is not None else certificate_path
            assert source is not None
            public = load_certificate(
                source if isinstance(source, bytes) else os.fspath(source), load_key=False
            )
        pin = password.decode() if isinstance(password, bytes) else password
        signer = Pkcs11Signer(os.fspath(key_path), pin=pin, certificate=public)
        return CertificateAuth(signer=signer, alg=alg, lifetime=lifetime, send_chain=send_chain)
    given = [x is not None for x in (certificate_path, certificate_data, certificate, signer)]
    if sum(given) != 1:
        raise InvalidArgumentError(
            "give exactly one of certificate_path, certificate_data, certificate or signer="
        )
    if signer is not None:
        if key_path is not None or password is not None:
            raise InvalidArgumentError(
                "key_path= and password= are for a key file; a signer= holds its own key: "
                "give one or the other"
            )
        return CertificateAuth(signer=signer, alg=alg, lifetime=lifetime, send_chain=send_chain)
    files = None
    if certificate is not None:
        certificate.require_private_key()
    elif certificate_path is not None:
        files = CertificateFiles(
            os.fspath(certificate_path), os.fspath(key_path) if key_path else None, password
        )
        certificate = files.load()
    else:
        assert certificate_data is not None
        key = (
            read_input_file(key_path, what="private key", error=CertificateError)
            if key_path
            else None
        )
        certificate = load_certificate(
            certificate_data, key=key, password=password, require_key=True
        )
    if mtls:
        return MtlsAuth(certificate, verify=verify, reload_from=files)
    return CertificateAuth(
        certificate, alg=alg, lifetime=lifetime, send_chain=send_chain, reload_from=files
    )


class _CertificateArgs(_Shell):
    def __init__(
        self,
        tenant_id: str | None = None,
        client_id: str | None = None,
        certificate_path: str | os.PathLike[str] | None = None,
        *,
        authority: str | None = None,
        certificate_data: bytes | None = None,
        password: str | bytes | None = None,
        send_certificate_chain: bool = False,
        certificate: Certificate | None = None,
        key_path: str | os.PathLike[str] | None = None,
        signer: Signer | None = None,
        alg: str | None = None,
        assertion_lifetime: int = DEFAULT_LIFETIME,
        token_endpoint: str | None = None,
        issuer: str | None = None,
        b2c_policy: str | None = None,
        verify: Verify = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        refresh_margin: float = DEFAULT_REFRESH_MARGIN,
        cache: TokenCache | None = None,
        clock: Callable[[], float] = time.time,
        client: httpx.Client | httpx.AsyncClient | None = None,
        connection_verify: Verify = None,
        disable_instance_discovery: bool | None = None,
        additionally_allowed_tenants: Iterable[str] | None = None,
        cache_persistence_options: object = None,
        enable_support_logging: bool | None = None,
        logging_enable: bool = False,
        authority_validation: object = None,
        mtls: bool = False,
        dpop: bool | DPoPKey = False,
    ) -> None:
        if not isinstance(mtls, bool):
            raise InvalidArgumentError(f"mtls= must be True or False, got {type(mtls).__name__}")
        if mtls and not (token_endpoint or issuer):
            raise InvalidArgumentError(
                "mtls=True needs a server that takes mutual-TLS client authentication, named "
                "by issuer= (its discovery document's mtls_endpoint_aliases are used) or "
                "token_endpoint=; Entra ID's token endpoint authenticates clients by assertion"
            )
        if mtls and client is not None:
            raise InvalidArgumentError(
                "mtls=True sends token requests with the certificate in the TLS handshake, "
                "which a client= of yours cannot do: drop client="
            )
        auth = _certificate_auth(
            certificate_path,
            certificate_data,
            certificate,
            password,
            key_path,
            signer=signer,
            alg=alg,
            lifetime=check_lifetime(assertion_lifetime, "assertion_lifetime"),
            send_chain=bool(send_certificate_chain),
            mtls=mtls,
            verify=_verify(verify, connection_verify),
        )
        core = _planner(
            tenant_id,
            client_id,
            auth,
            authority=authority,
            token_endpoint=token_endpoint,
            issuer=issuer,
            b2c_policy=b2c_policy,
            timeout=timeout,
            retry=retry,
            refresh_margin=refresh_margin,
            cache=cache,
            clock=clock,
            additionally_allowed_tenants=additionally_allowed_tenants,
            dpop=dpop,
        )
        if not isinstance(self, AsyncCredential):
            # A signer's test signature, once, here (blocking, as loading a key file is); an
            # async credential never blocks for it: its first token request awaits it.
            auth.prove()
        tls: Verify = _verify(verify, connection_verify)
        if isinstance(auth, MtlsAuth):
            tls = auth.tls_context
        self._setup(core, client, tls, float(timeout))


class CertificateCredential(_CertificateArgs, SyncCredential):
    """Authenticates as a service principal with a certificate (azure-identity compatible).

    ``CertificateCredential(tenant_id, client_id, "cert.pem")`` works as azure-identity's. The
    certificate is PEM (key + certificate), PFX or DER (with ``password``), given as
    ``certificate_path``, ``certificate_data`` (bytes) or a loaded ``certificate``; ``key_path``
    names a separate key file. Or, for a key that never leaves an HSM or a vault, ``signer`` (a
    :class:`~certauth.signers.Signer`, which brings its certificate): give exactly one of the
    four. A signer proves once, here, with a test signature, that its key belongs to its
    certificate; its tokens are kept in memory only (``cache`` stores nothing without a key file
    to derive the entries' key from). Keyword-only extras: ``authority`` (cloud host, with or
    without ``https://``), ``token_endpoint`` or ``issuer`` (any OAuth/OIDC server),
    ``b2c_policy``, ``alg`` (``PS256`` default for Entra, ``RS256`` elsewhere),
    ``send_certificate_chain`` (``x5c``), ``assertion_lifetime`` (seconds, <= 600), ``verify``
    (a CA file, trusted alone, or an ``ssl.SSLContext``; default: the system store), ``timeout``
    (seconds per HTTP attempt, connect to last byte of the answer), ``retry`` (a
    :class:`~certauth.protocol.RetryPolicy`; its ``total_timeout`` bounds a whole call, retries
    and back-off included), ``refresh_margin`` (seconds), ``cache`` (a shared token cache such
    as :class:`~certauth.cache.FileTokenCache`), ``clock`` (for tests), ``client`` (an
    ``httpx.Client`` of yours to send with; without it, certauth's own client on
    ``http.client``, with proxies from the environment). azure-identity's
    ``connection_verify`` is ``verify``; its
    ``additionally_allowed_tenants`` (the tenants besides ``tenant_id`` that ``get_token(...,
    tenant_id=T)`` may ask for, ``"*"`` for any; ``None`` reads the semicolon-separated
    ``AZURE_ADDITIONALLY_ALLOWED_TENANTS``) works as there (see
    :mod:`certauth.credential.tenants`); its ``disable_instance_discovery``,
    ``cache_persistence_options``, ``enable_support_logging``, ``logging_enable`` and
    ``authority_validation`` are accepted and change nothing (certauth makes no
    instance-discovery request). An unknown keyword is a ``TypeError``. Problems with the
    certificate, key or authority raise at construction, not at the first request.

    ``get_token`` / ``get_token_info`` honour azure-core's ``tenant_id``, ``claims`` and
    ``enable_cae``: tokens are cached per tenant, CAE tokens apart from the others, and a
    token asked for with claims is fetched, never cached.

    ``dpop`` asks for DPoP-bound tokens (RFC 9449): ``True`` makes a fresh EC P-256 key for
    this credential, kept in memory only; a :class:`~certauth.dpop.DPoPKey` (for instance
    ``DPoPKey.from_private_key(key)``) is used as given. A fresh key rather than the
    certificate's, because every API call carries a proof signed with it: ES256 costs a
    fraction of an RSA signature, a certificate key in an HSM or a vault would cost a remote
    signature per call, and the proof's ``jwk`` goes to every API, where a key of its own
    keeps the calls unlinkable to the certificate registered with the tenant. Every token
    request then carries a fresh ``DPoP`` proof (a server's nonce demand is answered once);
    a token that comes back with a ``token_type`` other than ``DPoP`` is refused
    (:class:`~certauth.errors.ConfigurationError`); tokens are cached under the key's
    thumbprint, and never written to a shared ``cache`` (another process holds another key
    and could not use them). :class:`~certauth.BearerAuth` sends them as ``Authorization:
    DPoP`` with a proof per request; ``dpop_key`` and ``make_dpop_proof`` serve other HTTP
    clients.
    """

    def __repr__(self) -> str:
        return f"CertificateCredential(client_id={self._core.client_id!r})"


class AsyncCertificateCredential(_CertificateArgs, AsyncCredential):
    """The asyncio twin of :class:`CertificateCredential` (same arguments; ``client`` is an
    ``httpx.AsyncClient``). Honours ``send_certificate_chain`` like the sync one. A
    ``signer``'s ``sign_async`` is awaited when it has one, else its ``sign`` runs in a worker
    thread; its test signature is taken by the first token request, before anything is sent."""

    def __repr__(self) -> str:
        return f"AsyncCertificateCredential(client_id={self._core.client_id!r})"


class _SecretArgs(_Shell):
    def __init__(
        self,
        tenant_id: str | None,
        client_id: str,
        client_secret: str,
        *,
        authority: str | None = None,
        secret_method: SecretMethod = "client_secret_post",
        token_endpoint: str | None = None,
        issuer: str | None = None,
        b2c_policy: str | None = None,
        verify: Verify = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        refresh_margin: float = DEFAULT_REFRESH_MARGIN,
        cache: TokenCache | None = None,
        clock: Callable[[], float] = time.time,
        client: httpx.Client | httpx.AsyncClient | None = None,
        connection_verify: Verify = None,
        disable_instance_discovery: bool | None = None,
        additionally_allowed_tenants: Iterable[str] | None = None,
        cache_persistence_options: object = None,
        enable_support_logging: bool | None = None,
        logging_enable: bool = False,
        authority_validation: object = None,
        dpop: bool | DPoPKey = False,
    ) -> None:
        core = _planner(
            tenant_id,
            client_id,
            SecretAuth(client_secret, secret_method),
            authority=authority,
            token_endpoint=token_endpoint,
            issuer=issuer,
            b2c_policy=b2c_policy,
            timeout=timeout,
            retry=retry,
            refresh_margin=refresh_margin,
            cache=cache,
            clock=clock,
            additionally_allowed_tenants=additionally_allowed_tenants,
            dpop=dpop,
        )
        self._setup(core, client, _verify(verify, connection_verify), float(timeout))


class ClientSecretCredential(_SecretArgs, SyncCredential):
    """Authenticates with a client secret (for servers, such as B2C, that take only secrets).

    Same keywords as :class:`CertificateCredential` (less the certificate's), plus
    ``secret_method`` (``client_secret_post`` default, or ``client_secret_basic``).
    """

    def __repr__(self) -> str:
        return f"ClientSecretCredential(client_id={self._core.client_id!r})"


class AsyncClientSecretCredential(_SecretArgs, AsyncCredential):
    """The asyncio twin of :class:`ClientSecretCredential`."""

    def __repr__(self) -> str:
        return f"AsyncClientSecretCredential(client_id={self._core.client_id!r})"


class _FederatedArgs(_Shell):
    def __init__(
        self,
        tenant_id: str | None = None,
        client_id: str | None = None,
        token_file_path: str | None = None,
        *,
        authority: str | None = None,
        token_endpoint: str | None = None,
        issuer: str | None = None,
        b2c_policy: str | None = None,
        verify: Verify = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        refresh_margin: float = DEFAULT_REFRESH_MARGIN,
        cache: TokenCache | None = None,
        clock: Callable[[], float] = time.time,
        client: httpx.Client | httpx.AsyncClient | None = None,
        connection_verify: Verify = None,
        disable_instance_discovery: bool | None = None,
        additionally_allowed_tenants: Iterable[str] | None = None,
        cache_persistence_options: object = None,
        enable_support_logging: bool | None = None,
        logging_enable: bool = False,
        authority_validation: object = None,
        dpop: bool | DPoPKey = False,
    ) -> None:
        path = token_file_path or os.environ.get("AZURE_FEDERATED_TOKEN_FILE")
        if not path:
            raise InvalidArgumentError(
                "no federated token file: give token_file_path or AZURE_FEDERATED_TOKEN_FILE"
            )
        core = _planner(
            tenant_id,
            client_id,
            FileAssertionAuth(path),
            authority=authority,
            token_endpoint=token_endpoint,
            issuer=issuer,
            b2c_policy=b2c_policy,
            timeout=timeout,
            retry=retry,
            refresh_margin=refresh_margin,
            cache=cache,
            clock=clock,
            additionally_allowed_tenants=additionally_allowed_tenants,
            dpop=dpop,
        )
        self._setup(core, client, _verify(verify, connection_verify), float(timeout))


class WorkloadIdentityCredential(_FederatedArgs, SyncCredential):
    """Exchanges a federated token file (``AZURE_FEDERATED_TOKEN_FILE``) for an access token.

    The file is re-read on every request because the platform rotates it. Keywords as
    :class:`ClientSecretCredential`'s, less ``secret_method``.
    """


class AsyncWorkloadIdentityCredential(_FederatedArgs, AsyncCredential):
    """The asyncio twin of :class:`WorkloadIdentityCredential`."""
