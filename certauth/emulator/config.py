"""The emulator's configuration file (TOML or JSON): tenants, apps, credentials, resources.

:func:`load_config` reads and checks a file into an :class:`EmulatorConfig`, which
:meth:`EmulatorConfig.apply` registers in a :class:`~certauth.emulator.registry.Registry`. A file
that cannot be read or parsed raises :class:`~certauth.errors.InputFileError`; a value that
does not fit raises :class:`~certauth.errors.ConfigurationError` naming where it is
(``emulator.json: apps[0]: secrets[1]``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from certauth.certificates import Certificate, load_certificate
from certauth.emulator.registry import (
    FEDERATED_AUDIENCE,
    FederatedCredential,
    RegisteredSecret,
    Registry,
    Resource,
    Tenant,
    as_utc,
    federated_keys,
    normalize_subject_dn,
)
from certauth.errors import ConfigurationError, InputFileError, InvalidArgumentError

__all__ = ["AppConfig", "EmulatorConfig", "TenantConfig", "load_config"]


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
    #: The subject of its certificates a client CA issues (RFC 8705 ``tls_client_auth``).
    tls_client_auth_subject_dn: str | None = None


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
    #: Seconds before Graph's key changes reach the token endpoint.
    propagation_delay: float | None = None

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
                    tls_client_auth_subject_dn=app.tls_client_auth_subject_dn,
                )


_TOP_KEYS = {
    "token_lifetime",
    "strict",
    "propagation_delay",
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
    "tls_client_auth_subject_dn",
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
        propagation_delay = 2   # seconds before Graph's addKey/removeKey reach the token endpoint
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
    delay = data.get("propagation_delay")
    if delay is not None:
        if isinstance(delay, bool) or not isinstance(delay, int | float) or not 0 <= delay < 1e9:
            raise ConfigurationError(f"{name}: 'propagation_delay' must be seconds, 0 or more")
        config.propagation_delay = float(delay)
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
        tls_client_auth_subject_dn=_str(spec, "tls_client_auth_subject_dn", where),
    )
    if app.tls_client_auth_subject_dn is not None:
        try:
            normalize_subject_dn(app.tls_client_auth_subject_dn)
        except InvalidArgumentError as exc:
            raise ConfigurationError(f"{where}: 'tls_client_auth_subject_dn': {exc}") from None
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
        return as_utc(value)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.timezone.utc)
    if isinstance(value, str):
        try:
            return as_utc(dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00")))
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
