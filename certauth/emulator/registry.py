"""What the emulated directory knows: tenants, app registrations and their credentials, resources.

An app registration holds what Entra ID keeps for it: certificate key credentials (looked up by
thumbprint), client secrets (kept only as a SHA-256 digest), federated identity credentials, and
the application roles it was granted. Parsed public keys are kept at registration so a token
request never re-parses a certificate (ANCHORS: "validate once per key, keep the object").

The configuration file (TOML or JSON) is loaded here too; see :func:`load_config`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import re
import sys
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from certauth.certificates import Certificate, load_certificate
from certauth.errors import ConfigurationError, InputFileError, InvalidArgumentError

__all__ = [
    "DEFAULT_TENANT_ID",
    "App",
    "AppConfig",
    "EmulatorConfig",
    "FederatedCredential",
    "RegisteredCertificate",
    "RegisteredSecret",
    "Registry",
    "Resource",
    "Tenant",
    "TenantConfig",
    "load_config",
    "normalize_resource",
]

#: The emulator's tenant when none is given: a fixed, recognisably fake GUID ("c3a7 c0de").
DEFAULT_TENANT_ID = "c3a7c0de-0000-4000-8000-000000000001"

#: Names other than a GUID or a domain that Entra reserves in the tenant position of a path.
MULTI_TENANT_NAMES = frozenset({"common", "organizations", "consumers"})

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
#: Namespace for the stable GUIDs the emulator derives (app object ids, tenants named by domain).
_NAMESPACE = uuid.UUID("6f1e3c55-1d2b-4c8e-9a57-3c0de0c3a7a1")


def is_guid(value: str) -> bool:
    """Whether ``value`` is written as a GUID (8-4-4-4-12 hex digits)."""
    return bool(_GUID.match(value))


def derived_guid(*parts: str) -> str:
    """A GUID that is always the same for the same ``parts`` (UUID version 5)."""
    return str(uuid.uuid5(_NAMESPACE, "/".join(p.lower() for p in parts)))


def normalize_resource(uri: str) -> str:
    """The key a resource is looked up by: case-insensitive, without a trailing slash.

    ``https://management.azure.com/`` and ``https://management.azure.com`` name one resource,
    as they do in Entra ID.
    """
    return uri.strip().rstrip("/").lower()


def _aware(when: dt.datetime) -> dt.datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.timezone.utc)


# -- credentials ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegisteredCertificate:
    """A certificate key credential: the certificate, its parsed public key and thumbprints."""

    certificate: Certificate
    public_key: PublicKey
    sha1: bytes
    sha256: bytes
    not_before: dt.datetime
    not_after: dt.datetime

    @classmethod
    def from_certificate(cls, certificate: Certificate) -> RegisteredCertificate:
        """Parse what every token request needs once, now."""
        der = certificate.der
        return cls(
            certificate=certificate,
            public_key=certificate.public_key,
            sha1=hashlib.sha1(der, usedforsecurity=False).digest(),
            sha256=hashlib.sha256(der).digest(),
            not_before=certificate.not_before,
            not_after=certificate.not_after,
        )

    @property
    def thumbprint_sha1(self) -> str:
        """The SHA-1 thumbprint as uppercase hex (what the portal and AADSTS texts show)."""
        return self.sha1.hex().upper()


@dataclass(frozen=True)
class RegisteredSecret:
    """A client secret, kept as a SHA-256 digest, with an optional expiry."""

    digest: bytes
    expires: dt.datetime | None = None

    @classmethod
    def from_value(cls, secret: str, expires: dt.datetime | None = None) -> RegisteredSecret:
        """Digest ``secret`` (the value itself is not kept)."""
        if not secret:
            raise InvalidArgumentError("a client secret cannot be empty")
        return cls(hashlib.sha256(secret.encode("utf-8")).digest(), expires and _aware(expires))

    def matches(self, secret: str) -> bool:
        """Constant-time comparison with a presented secret."""
        presented = hashlib.sha256(secret.encode("utf-8")).digest()
        return hmac.compare_digest(presented, self.digest)


#: Entra ID's audience for federated identity credentials (workload identity federation).
FEDERATED_AUDIENCE = "api://AzureADTokenExchange"


@dataclass(frozen=True)
class FederatedCredential:
    """A federated identity credential: trust tokens from ``issuer`` about ``subject``.

    Entra ID fetches the issuer's keys from its OIDC discovery document; the emulator makes no
    outgoing calls, so the keys are given at registration (``keys``: ``(kid, public key)``).
    """

    issuer: str
    subject: str
    audiences: tuple[str, ...] = (FEDERATED_AUDIENCE,)
    keys: tuple[tuple[str | None, PublicKey], ...] = ()


def federated_keys(source: object) -> tuple[tuple[str | None, PublicKey], ...]:
    """Public keys from a :class:`Certificate`, a public key, or a JWKS mapping."""
    if isinstance(source, Certificate):
        return ((source.x5t, source.public_key),)
    if isinstance(source, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
        return ((None, source),)
    if isinstance(source, Mapping) and isinstance(source.get("keys"), list):
        keys: list[tuple[str | None, PublicKey]] = []
        for entry in source["keys"]:
            try:
                key = jwt.PyJWK(entry).key
            except (jwt.PyJWKError, jwt.InvalidKeyError, TypeError, ValueError) as exc:
                raise InvalidArgumentError(f"a JWKS entry cannot be read: {exc}") from None
            if isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
                kid = entry.get("kid")
                keys.append((kid if isinstance(kid, str) else None, key))
        if keys:
            return tuple(keys)
    raise InvalidArgumentError(
        "federated credential keys must be a Certificate, an RSA/EC public key or a JWKS "
        "mapping with at least one RSA or EC key"
    )


# -- directory objects ------------------------------------------------------------------------


@dataclass(frozen=True)
class Resource:
    """A resource (API) the tenant knows, and the app roles it grants every registered client."""

    uri: str
    roles: tuple[str, ...] = ()


@dataclass
class App:
    """An app registration (with its service principal) in one tenant.

    Collections are tuples replaced on change, so request threads can read them without a lock.
    """

    client_id: str
    object_id: str
    display_name: str
    certificates: tuple[RegisteredCertificate, ...] = ()
    secrets: tuple[RegisteredSecret, ...] = ()
    federated: tuple[FederatedCredential, ...] = ()
    #: Roles granted on every resource.
    roles: frozenset[str] = frozenset()
    #: Roles granted on one resource (key: :func:`normalize_resource`).
    resource_roles: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def find_certificate(
        self, *, sha1: bytes | None = None, sha256: bytes | None = None
    ) -> RegisteredCertificate | None:
        """The key credential with this SHA-1 or SHA-256 thumbprint (raw digest bytes)."""
        for cert in self.certificates:
            if (sha256 is not None and cert.sha256 == sha256) or (
                sha1 is not None and cert.sha1 == sha1
            ):
                return cert
        return None

    def roles_for(self, resource_key: str) -> frozenset[str]:
        """Roles granted to this app on one resource (excluding the resource's own grants)."""
        return self.roles | self.resource_roles.get(resource_key, frozenset())


@dataclass
class Tenant:
    """One directory: its id (a GUID), domain names, app registrations and resources."""

    tenant_id: str
    domains: tuple[str, ...] = ()
    apps: dict[str, App] = field(default_factory=dict)
    resources: dict[str, Resource] = field(default_factory=dict)

    @property
    def display_name(self) -> str:
        """How AADSTS texts name the tenant: its first domain, else its id."""
        return self.domains[0] if self.domains else self.tenant_id

    def app(self, client_id: str) -> App | None:
        """The registration for ``client_id`` (case-insensitive, as GUIDs are)."""
        return self.apps.get(client_id.lower())

    def resource(self, uri: str) -> Resource | None:
        """A declared resource by URI (see :func:`normalize_resource`)."""
        return self.resources.get(normalize_resource(uri))


class Registry:
    """All tenants of one emulator, addressable by id or by domain name (case-insensitive)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._tenants: dict[str, Tenant] = {}
        self._names: dict[str, Tenant] = {}

    @property
    def tenants(self) -> list[Tenant]:
        """Every tenant, in the order they were added (the first is the emulator's default)."""
        with self._lock:
            return list(self._tenants.values())

    def add_tenant(self, tenant: str, *, domains: Iterable[str] = ()) -> Tenant:
        """Add (or extend) a tenant named by a GUID or by a domain name.

        A domain name given as the tenant gets a stable derived GUID as its id, so the ``tid``
        claim is always a GUID, as in Entra ID.
        """
        name = tenant.strip()
        if not name or "/" in name:
            raise InvalidArgumentError(f"tenant {tenant!r} is not a GUID or a domain name")
        if name.lower() in MULTI_TENANT_NAMES:
            raise InvalidArgumentError(
                f"tenant {tenant!r} is reserved by Entra ID for multi-tenant endpoints; "
                "use a GUID or a domain name"
            )
        extra = [d.strip().lower() for d in domains if d.strip()]
        if is_guid(name):
            tenant_id = name.lower()
        else:
            tenant_id = derived_guid("tenant", name)
            extra.insert(0, name.lower())
        with self._lock:
            existing = self._tenants.get(tenant_id)
            if existing is None:
                existing = Tenant(tenant_id)
                self._tenants[tenant_id] = existing
                self._names[tenant_id] = existing
            for domain in extra:
                owner = self._names.get(domain)
                if owner is not None and owner is not existing:
                    raise InvalidArgumentError(
                        f"domain {domain!r} already belongs to tenant {owner.tenant_id}"
                    )
                if domain not in existing.domains:
                    existing.domains = (*existing.domains, domain)
                self._names[domain] = existing
            return existing

    def tenant(self, name: str) -> Tenant | None:
        """The tenant a path segment names (its id or one of its domains)."""
        with self._lock:
            return self._names.get(name.lower())

    def register_app(
        self,
        tenant: Tenant,
        client_id: str,
        *,
        certificates: Sequence[Certificate] = (),
        secrets: Sequence[RegisteredSecret] = (),
        federated: Sequence[FederatedCredential] = (),
        roles: Sequence[str] | Mapping[str, Sequence[str]] = (),
        display_name: str | None = None,
        object_id: str | None = None,
    ) -> App:
        """Create the app registration or add credentials and roles to an existing one."""
        client_id = client_id.strip()
        if not client_id or any(c.isspace() for c in client_id):
            raise InvalidArgumentError(f"client id {client_id!r} is empty or contains spaces")
        new_certs = tuple(RegisteredCertificate.from_certificate(c) for c in certificates)
        with self._lock:
            app = tenant.app(client_id)
            if app is None:
                app = App(
                    client_id=client_id,
                    object_id=object_id or derived_guid("app", tenant.tenant_id, client_id),
                    display_name=display_name or client_id,
                )
                tenant.apps[client_id.lower()] = app
            elif display_name:
                app.display_name = display_name
            known = {c.sha256 for c in app.certificates}
            app.certificates = app.certificates + tuple(
                c for c in new_certs if c.sha256 not in known
            )
            app.secrets = app.secrets + tuple(secrets)
            app.federated = app.federated + tuple(federated)
            if isinstance(roles, Mapping):
                merged = dict(app.resource_roles)
                for uri, names in roles.items():
                    key = normalize_resource(uri)
                    merged[key] = merged.get(key, frozenset()) | _role_names(names)
                app.resource_roles = merged
            else:
                app.roles = app.roles | _role_names(roles)
            return app

    def add_resource(self, tenant: Tenant, uri: str, roles: Sequence[str] = ()) -> Resource:
        """Declare a resource; once any is declared, unknown ones get AADSTS500011."""
        if not uri.strip() or any(c.isspace() for c in uri.strip()):
            raise InvalidArgumentError(f"resource {uri!r} is empty or contains spaces")
        with self._lock:
            key = normalize_resource(uri)
            old = tenant.resources.get(key)
            names = tuple(sorted(set(old.roles if old else ()) | _role_names(roles)))
            resource = Resource(uri.strip().rstrip("/") or uri.strip(), names)
            tenant.resources[key] = resource
            return resource


def _role_names(names: Iterable[str] | str) -> frozenset[str]:
    if isinstance(names, str):
        raise InvalidArgumentError(f"roles must be a list of names, got the string {names!r}")
    result = set()
    for name in names:
        if not isinstance(name, str) or not name.strip() or " " in name.strip():
            raise InvalidArgumentError(f"role {name!r} is not a role name (no spaces allowed)")
        result.add(name.strip())
    return frozenset(result)


# -- configuration file -------------------------------------------------------------------------


@dataclass
class AppConfig:
    """One app in a configuration file."""

    client_id: str
    certificates: list[Certificate] = field(default_factory=list)
    secrets: list[RegisteredSecret] = field(default_factory=list)
    federated: list[FederatedCredential] = field(default_factory=list)
    roles: list[str] | dict[str, list[str]] = field(default_factory=list)
    display_name: str | None = None
    object_id: str | None = None


@dataclass
class TenantConfig:
    """One tenant in a configuration file."""

    tenant_id: str | None = None
    domains: list[str] = field(default_factory=list)
    resources: list[Resource] = field(default_factory=list)
    apps: list[AppConfig] = field(default_factory=list)
    #: Where it was read from, for messages (``file: tenants[1]``).
    where: str = "configuration"


@dataclass
class EmulatorConfig:
    """A parsed configuration file: settings and tenants (the first is the default tenant)."""

    tenants: list[TenantConfig] = field(default_factory=list)
    token_lifetime: int | None = None
    strict: bool | None = None

    def apply(self, registry: Registry, default_tenant: Tenant) -> None:
        """Register everything in ``registry``; a first tenant without an id is the default."""
        for index, spec in enumerate(self.tenants):
            if spec.tenant_id is None and index == 0:
                tenant = registry.add_tenant(default_tenant.tenant_id, domains=spec.domains)
            elif spec.tenant_id is None:
                raise ConfigurationError(
                    f"{spec.where}: 'id' is required for every tenant but the first"
                )
            else:
                tenant = registry.add_tenant(spec.tenant_id, domains=spec.domains)
            for resource in spec.resources:
                registry.add_resource(tenant, resource.uri, resource.roles)
            for app in spec.apps:
                registry.register_app(
                    tenant,
                    app.client_id,
                    certificates=app.certificates,
                    secrets=app.secrets,
                    federated=app.federated,
                    roles=app.roles,
                    display_name=app.display_name,
                    object_id=app.object_id,
                )


_TOP_KEYS = {
    "token_lifetime",
    "strict",
    "tenants",
    "tenant_id",
    "id",
    "domains",
    "apps",
    "resources",
}
_TENANT_KEYS = {"id", "tenant_id", "domains", "apps", "resources"}
_APP_KEYS = {
    "client_id",
    "certificates",
    "secrets",
    "federated",
    "roles",
    "display_name",
    "object_id",
}
_SECRET_KEYS = {"env", "file", "expires"}
_FEDERATED_KEYS = {"issuer", "subject", "audience", "certificate", "jwks_file"}
_RESOURCE_KEYS = {"uri", "roles"}


def load_config(path: str | os.PathLike[str]) -> EmulatorConfig:
    """Read an emulator configuration file (``.toml`` or ``.json``).

    TOML needs Python 3.11+ (``tomllib``); on 3.10 write the same structure as JSON. Paths in
    the file are relative to the file. Secrets come from environment variables (``env``) or
    files (``file``), never from the configuration itself. Example (TOML)::

        token_lifetime = 3600
        tenant_id = "c3a7c0de-0000-4000-8000-000000000001"
        domains = ["contoso.onmicrosoft.com"]

        [[resources]]
        uri = "api://billing"
        roles = ["Billing.Read"]

        [[apps]]
        client_id = "11111111-2222-3333-4444-555555555555"
        certificates = ["billing.crt"]
        roles = ["Billing.Write"]
        secrets = [{ env = "BILLING_SECRET", expires = "2030-01-01T00:00:00Z" }]
    """
    name = os.fspath(path)
    from certauth._files import read_input_file

    raw = read_input_file(name, what="emulator configuration", error=InputFileError)
    text = _decode(raw, name)
    if name.lower().endswith(".toml"):
        data = _parse_toml(text, name)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            hint = "" if name.lower().endswith(".json") else " (name TOML files *.toml)"
            raise InputFileError(
                f"{name}: not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}{hint}",
                path=name,
            ) from None
    if not isinstance(data, dict):
        raise InputFileError(f"{name}: the top level must be an object (a table)", path=name)
    return _parse_config(data, name, Path(name).resolve().parent)


def _decode(raw: bytes, name: str) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputFileError(f"{name}: not UTF-8 text", path=name) from None


def _parse_toml(text: str, name: str) -> Any:
    if sys.version_info >= (3, 11):
        import tomllib

        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InputFileError(f"{name}: not valid TOML: {exc}", path=name) from None
    # Python 3.10 has no TOML parser in the standard library (and certauth adds no dependency).
    raise InputFileError(
        f"{name}: TOML configuration needs Python 3.11 or later; write the same structure as "
        "JSON (a .json file) instead",
        path=name,
    )


def _check_keys(obj: Any, allowed: set[str], where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ConfigurationError(f"{where}: expected an object (a table)")
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise ConfigurationError(
            f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )
    return obj


def _str(obj: dict[str, Any], key: str, where: str, *, required: bool = False) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise ConfigurationError(f"{where}: '{key}' is required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{where}: '{key}' must be a non-empty string")
    return value.strip()


def _str_list(obj: dict[str, Any], key: str, where: str) -> list[str]:
    value = obj.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigurationError(f"{where}: '{key}' must be a list of strings")
    return list(value)


def _parse_config(data: dict[str, Any], name: str, base: Path) -> EmulatorConfig:
    _check_keys(data, _TOP_KEYS, name)
    config = EmulatorConfig()
    lifetime = data.get("token_lifetime")
    if lifetime is not None:
        if isinstance(lifetime, bool) or not isinstance(lifetime, int) or lifetime <= 0:
            raise ConfigurationError(f"{name}: 'token_lifetime' must be a whole number above 0")
        config.token_lifetime = lifetime
    strict = data.get("strict")
    if strict is not None:
        if not isinstance(strict, bool):
            raise ConfigurationError(f"{name}: 'strict' must be true or false")
        config.strict = strict
    top = {k: v for k, v in data.items() if k in _TENANT_KEYS}
    if top:
        config.tenants.append(_parse_tenant(top, name, base))
    tenants = data.get("tenants", [])
    if not isinstance(tenants, list):
        raise ConfigurationError(f"{name}: 'tenants' must be a list of tables")
    for index, spec in enumerate(tenants):
        config.tenants.append(_parse_tenant(spec, f"{name}: tenants[{index}]", base))
    return config


def _parse_tenant(spec: Any, where: str, base: Path) -> TenantConfig:
    spec = _check_keys(spec, _TENANT_KEYS, where)
    tenant_id = _str(spec, "id", where) or _str(spec, "tenant_id", where)
    result = TenantConfig(
        tenant_id=tenant_id, domains=_str_list(spec, "domains", where), where=where
    )
    resources = spec.get("resources", [])
    if not isinstance(resources, list):
        raise ConfigurationError(f"{where}: 'resources' must be a list")
    for index, item in enumerate(resources):
        at = f"{where}: resources[{index}]"
        if isinstance(item, str):
            result.resources.append(Resource(item))
            continue
        item = _check_keys(item, _RESOURCE_KEYS, at)
        uri = _str(item, "uri", at, required=True)
        assert uri is not None
        result.resources.append(Resource(uri, tuple(_str_list(item, "roles", at))))
    apps = spec.get("apps", [])
    if not isinstance(apps, list):
        raise ConfigurationError(f"{where}: 'apps' must be a list")
    for index, item in enumerate(apps):
        result.apps.append(_parse_app(item, f"{where}: apps[{index}]", base))
    return result


def _parse_app(spec: Any, where: str, base: Path) -> AppConfig:
    spec = _check_keys(spec, _APP_KEYS, where)
    client_id = _str(spec, "client_id", where, required=True)
    assert client_id is not None
    app = AppConfig(
        client_id=client_id,
        display_name=_str(spec, "display_name", where),
        object_id=_str(spec, "object_id", where),
    )
    for path in _str_list(spec, "certificates", where):
        app.certificates.append(load_certificate(base / path, load_key=False))
    secrets = spec.get("secrets", [])
    if not isinstance(secrets, list):
        raise ConfigurationError(f"{where}: 'secrets' must be a list of tables")
    for index, item in enumerate(secrets):
        app.secrets.append(_parse_secret(item, f"{where}: secrets[{index}]", base))
    federated = spec.get("federated", [])
    if not isinstance(federated, list):
        raise ConfigurationError(f"{where}: 'federated' must be a list of tables")
    for index, item in enumerate(federated):
        app.federated.append(_parse_federated(item, f"{where}: federated[{index}]", base))
    roles = spec.get("roles", [])
    if isinstance(roles, dict):
        parsed: dict[str, list[str]] = {}
        for uri, names in roles.items():
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ConfigurationError(f"{where}: roles for {uri!r} must be a list of strings")
            parsed[uri] = list(names)
        app.roles = parsed
    else:
        app.roles = _str_list(spec, "roles", where)
    return app


def _parse_secret(spec: Any, where: str, base: Path) -> RegisteredSecret:
    spec = _check_keys(spec, _SECRET_KEYS, where)
    env = _str(spec, "env", where)
    file = _str(spec, "file", where)
    if (env is None) == (file is None):
        raise ConfigurationError(
            f"{where}: give exactly one of 'env' (a variable name) or 'file' (a path); the "
            "secret value itself never goes in the configuration"
        )
    if env is not None:
        value = os.environ.get(env)
        if not value:
            raise ConfigurationError(f"{where}: environment variable {env} is not set or empty")
    else:
        assert file is not None
        from certauth._files import read_first_line

        try:
            value = read_first_line(base / file, what="client secret")
        except InputFileError as exc:
            # Say where in the configuration the file is named, then what is wrong with it.
            raise InputFileError(f"{where}: {exc.message}", path=exc.path) from None
    return RegisteredSecret.from_value(value, _parse_when(spec.get("expires"), where))


def _parse_when(value: Any, where: str) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return _aware(value)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.timezone.utc)
    if isinstance(value, str):
        try:
            return _aware(dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00")))
        except ValueError:
            pass
    raise ConfigurationError(
        f"{where}: 'expires' must be an ISO 8601 time such as 2030-01-01T00:00:00Z"
    )


def _parse_federated(spec: Any, where: str, base: Path) -> FederatedCredential:
    spec = _check_keys(spec, _FEDERATED_KEYS, where)
    issuer = _str(spec, "issuer", where, required=True)
    subject = _str(spec, "subject", where, required=True)
    audience = _str(spec, "audience", where) or FEDERATED_AUDIENCE
    cert_path = _str(spec, "certificate", where)
    jwks_path = _str(spec, "jwks_file", where)
    if (cert_path is None) == (jwks_path is None):
        raise ConfigurationError(
            f"{where}: give exactly one of 'certificate' or 'jwks_file' (the issuer's keys)"
        )
    if cert_path is not None:
        keys = federated_keys(load_certificate(base / cert_path, load_key=False))
    else:
        assert jwks_path is not None
        from certauth._files import read_input_file

        jwks_file = str(base / jwks_path)
        try:
            source = json.loads(read_input_file(jwks_file, what="JWKS", error=InputFileError))
        except ValueError:  # JSONDecodeError, or UnicodeDecodeError for bytes that are not text
            raise InputFileError(f"{where}: {jwks_path} is not JSON", path=jwks_file) from None
        try:
            keys = federated_keys(source)
        except InvalidArgumentError as exc:
            raise InputFileError(f"{where}: {exc}", path=jwks_file) from None
    assert issuer is not None
    assert subject is not None
    return FederatedCredential(issuer, subject, (audience,), keys)
