"""The emulator's Azure Key Vault: vaults whose keys sign but never leave, for tests and demos.

``tenant.create_vault("certvault")`` (on a running :class:`~certauth.emulator.Emulator`) starts
a vault on a listener of its own, ``https://127.0.0.1:PORT`` with ``tls=True`` (the same CA as
the tenant: ``tenant.ca_file``), and returns an :class:`EmulatedVault`::

    with Emulator(tls=True) as tenant:
        vault = tenant.create_vault("certvault")
        certificate = vault.create_certificate("billing", "CN=billing-api")  # public part only
        tenant.register("billing-app", certificate)      # the app whose key is in the vault
        tenant.register("signer-app", "signer.crt")      # who may use the vault
        vault.grant("signer-app", ["get", "sign"])

Why a listener per vault, and not a path under the tenant's server: the azure-keyvault SDK reads a
key identifier's vault as ``scheme://host:port`` and the key's name from the second path
segment, so a vault must sit at the root of its address. The SDK also checks that the
challenge's resource (``https://vault.azure.net``) is a parent domain of the vault's host; for
``127.0.0.1`` it is not, so its clients take ``verify_challenge_resource=False`` (the SDK's own
switch for vaults reached at another name) and ``connection_verify=tenant.ca_file``.

The REST surface and its rules are in :mod:`certauth.emulator.keyvault_api` and
:mod:`certauth.emulator.keyvault_store`.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from certauth.certificates import Certificate, check_validity_days, generate_certificate
from certauth.emulator.keyvault_api import KeyVaultAPI
from certauth.emulator.keyvault_store import (
    KEY_PERMISSIONS,
    Fault,
    VaultCertificate,
    VaultError,
    VaultKey,
    VaultState,
    check_object_name,
    check_vault_name,
    new_key,
)
from certauth.emulator.server import EmulatorHTTPServer
from certauth.errors import InvalidArgumentError

if TYPE_CHECKING:
    from certauth.emulator.checks import Policy
    from certauth.emulator.clock import Clock
    from certauth.emulator.registry import Tenant
    from certauth.emulator.tokens import KeyRing

__all__ = ["EmulatedVault", "VaultHosting"]


class EmulatedVault:
    """One emulated Key Vault: make keys and certificates in it, grant access, inject faults.

    Keys are generated inside and never exported: the REST API and this object give public
    keys and certificates only.
    """

    def __init__(self, state: VaultState, api: KeyVaultAPI, server: EmulatorHTTPServer) -> None:
        self._state = state
        self._api = api
        self._server = server
        self._thread = server.serve_in_thread(f"certauth-keyvault-{state.name}")

    @property
    def name(self) -> str:
        """The vault's name (lower case)."""
        return self._state.name

    @property
    def tenant_id(self) -> str:
        """The tenant whose tokens the vault takes."""
        return self._state.tenant_id

    @property
    def url(self) -> str:
        """The vault URL (``vault_url`` of the SDK clients): ``https://127.0.0.1:PORT``."""
        return self._server.default_base_url

    def create_key(
        self, name: str, *, kty: str = "RSA", size: int = 2048, curve: str = "P-256"
    ) -> str:
        """Generate a new version of key ``name`` inside the vault (RSA 2048/3072/4096 or EC
        P-256/P-384/P-521); returns its key id, ``{url}/keys/{name}/{version}``."""
        return self._state.add_key(name, self._new_key(kty, size, curve), self._now()).kid(self.url)

    def create_certificate(
        self,
        name: str,
        subject: str = "CN=certauth-keyvault",
        *,
        kty: str = "RSA",
        size: int = 2048,
        curve: str = "P-256",
        days: int = 365,
    ) -> Certificate:
        """Make a new version of certificate ``name``: a new version of key ``name`` (as Key
        Vault pairs them), and a certificate self-signed by it (clientAuth, digitalSignature,
        valid ``days``). Returns the certificate without its private key."""
        check_object_name(name, "certificate")
        check_validity_days(days)
        key = self._state.add_key(name, self._new_key(kty, size, curve), self._now())
        # The one self-signed builder, with the key the vault holds (the emulator's clock).
        made = generate_certificate(
            subject, days=days, now=self._api.clock.now(), key=key.private_key
        )
        public = Certificate(made.x509, source=f"{self.url}/certificates/{name}/{key.version}")
        x5t = base64.urlsafe_b64encode(hashlib.sha1(public.der, usedforsecurity=False).digest())
        thumbprint = x5t.decode().rstrip("=")
        made_at = self._now()
        self._state.add_certificate(
            VaultCertificate(name, key.version, public.der, key, thumbprint, made_at)
        )
        return public

    def certificate(self, name: str, version: str | None = None) -> Certificate:
        """The public certificate ``name`` (its current version by default)."""
        found = self._found(lambda: self._state.certificate(name, version))
        return _load_der(found.der)

    def key_id(self, name: str, version: str | None = None) -> str:
        """The key id of key ``name`` (its current version by default)."""
        key: VaultKey = self._found(lambda: self._state.key(name, version))
        return key.kid(self.url)

    def grant(self, client_id: str, permissions: Iterable[str]) -> None:
        """Set ``client_id``'s access policy entry (replacing any earlier one; ``[]`` takes
        every permission away): any of ``get`` (keys and certificates), ``list``, ``create``,
        ``import``, ``sign``, ``verify``. Without ``sign`` a sign request gets 403
        ``Forbidden``."""
        wanted = frozenset(p.lower() for p in permissions)
        unknown = wanted - KEY_PERMISSIONS
        if unknown:
            raise InvalidArgumentError(
                f"unknown permission(s) {', '.join(sorted(unknown))}; use "
                f"{', '.join(sorted(KEY_PERMISSIONS))}"
            )
        with self._state.lock:
            self._state.grants[client_id.lower()] = wanted

    def inject_faults(
        self, status: int = 429, *, count: int = 1, retry_after: int | None = None
    ) -> None:
        """Answer the next ``count`` requests with ``status`` (429 ``Throttled`` by default, or
        a 5xx) and, with ``retry_after``, a ``Retry-After`` header (replacing earlier plans)."""
        if count < 1 or not (status == 429 or 500 <= status <= 599):
            raise InvalidArgumentError("inject_faults takes status=429 or 5xx and count >= 1")
        with self._state.lock:
            self._state.fault = Fault(status, count, retry_after)

    def clear_faults(self) -> None:
        """Answer normally again."""
        with self._state.lock:
            self._state.fault = None

    @property
    def request_count(self) -> int:
        """Requests received, whatever the answer."""
        return self._state.request_count

    def stop(self) -> None:
        """Close the vault's listener (the emulator does it when it stops)."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _new_key(self, kty: str, size: int, curve: str) -> Any:
        return self._found(lambda: new_key(kty, size, curve))

    def _now(self) -> int:
        return int(self._api.clock.time())

    @staticmethod
    def _found(get: Any) -> Any:
        try:
            return get()
        except VaultError as error:
            raise InvalidArgumentError(error.message) from None

    def __repr__(self) -> str:
        return f"EmulatedVault({self.name!r}, url={self.url!r})"


def _load_der(der: bytes) -> Certificate:
    from cryptography import x509

    return Certificate(x509.load_der_x509_certificate(der))


class VaultHosting:
    """The :class:`~certauth.emulator.Emulator` methods that host vaults (a mixin, so the
    emulator's service module stays small)."""

    if TYPE_CHECKING:
        clock: Clock
        host: str
        _keys: KeyRing

        def _running_server(self) -> EmulatorHTTPServer: ...
        def _tenant(self, tenant: str | None) -> Tenant: ...
        @property
        def authority_host(self) -> str: ...
        @property
        def policy(self) -> Policy: ...

    def create_vault(self, name: str, *, tenant: str | None = None) -> EmulatedVault:
        """Start an emulated Key Vault named ``name`` for ``tenant`` (default: the default
        tenant) on a listener of its own, served like the tenant (https with ``tls=True``, which
        the azure-keyvault SDK requires). The emulator must be running; it stops the vault when
        it stops. See :mod:`certauth.emulator.keyvault`."""
        main = self._running_server()
        try:
            key = check_vault_name(name)
        except ValueError as exc:
            raise InvalidArgumentError(str(exc)) from None
        vaults = self._vault_table()
        if key in vaults:
            raise InvalidArgumentError(f"a vault named {name!r} exists already; use vault()")
        state = VaultState(key, self._tenant(tenant).tenant_id)
        api = KeyVaultAPI(
            state,
            keys=self._keys,
            clock=self.clock,
            authority=lambda: self.authority_host,
            skew=lambda: self.policy.skew,
        )
        server = EmulatorHTTPServer(
            (self.host, 0), api.handle, scheme=main.scheme, tls=main.tls, limits=main.limits
        )
        vaults[key] = vault = EmulatedVault(state, api, server)
        return vault

    def vault(self, name: str) -> EmulatedVault:
        """The vault :meth:`create_vault` made under ``name``."""
        found = self._vault_table().get(name.lower())
        if found is None:
            raise InvalidArgumentError(f"no vault named {name!r}; create it with create_vault()")
        return found

    def _vault_table(self) -> dict[str, EmulatedVault]:
        table: dict[str, EmulatedVault] | None = self.__dict__.get("_vaults")
        if table is None:
            table = self.__dict__["_vaults"] = {}
        return table

    def _stop_vaults(self) -> None:
        vaults = self._vault_table()
        for vault in vaults.values():
            vault.stop()
        vaults.clear()
