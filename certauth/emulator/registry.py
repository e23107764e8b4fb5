"""What the emulated directory knows: tenants, app registrations and their credentials, resources.

An app registration holds what Entra ID keeps for it: certificate key credentials (looked up by
thumbprint), client secrets (kept only as a SHA-256 digest), federated identity credentials, and
the application roles it was granted. Parsed public keys are kept at registration so a token
request never re-parses a certificate.

The configuration file (TOML or JSON) that fills a registry is read by
:mod:`certauth.emulator.config`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from certauth import _jose
from certauth.certificates import Certificate
from certauth.errors import InvalidArgumentError

__all__ = [
    "DEFAULT_TENANT_ID",
    "App",
    "FederatedCredential",
    "RegisteredCertificate",
    "RegisteredSecret",
    "Registry",
    "Resource",
    "Tenant",
    "normalize_resource",
    "normalize_subject_dn",
]

#: The emulator's tenant when none is given: a fixed, recognisably fake GUID ("c3a7 c0de").
DEFAULT_TENANT_ID = "c3a7c0de-0000-4000-8000-000000000001"

#: Names other than a GUID or a domain that Entra reserves in the tenant position of a path.
MULTI_TENANT_NAMES = frozenset({"common", "organizations", "consumers"})

#: The first path segment of the emulator's own routes (:mod:`certauth.emulator.resource`),
#: so no tenant may be named so.
EMULATOR_ROUTES = "_emulator"

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


#: Microsoft Graph: its application id URI and its application id name one resource principal
#: (a scope may use either: "Microsoft Graph permissions reference",
#: https://learn.microsoft.com/graph/permissions-reference).
GRAPH_RESOURCE = "https://graph.microsoft.com"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"


def normalize_resource(uri: str) -> str:
    """The key a resource is looked up by: case-insensitive, without a trailing slash.

    ``https://management.azure.com/`` and ``https://management.azure.com`` name one resource,
    as they do in Entra ID; so do Microsoft Graph's URI and its application id.
    """
    key = uri.strip().rstrip("/").lower()
    return GRAPH_RESOURCE if key == GRAPH_APP_ID else key


#: An attribute type at the start of an RDN, in any case (RFC 4514 section 3: case-insensitive),
#: with the spaces people write around it (RFC 4514 has none there).
_ATTRIBUTE_TYPE = re.compile(r"(^|(?<!\\)\s*[,+])\s*([A-Za-z][A-Za-z0-9-]*)\s*=")


def normalize_subject_dn(subject: str | x509.Name) -> str:
    """A distinguished name as ``tls_client_auth`` compares it (RFC 8705 section 2.1.2):
    cryptography's ``rfc4514_string()``, case-folded (the usual attributes match
    case-insensitively, RFC 4517 caseIgnoreMatch).

    A string is read as RFC 4514 (most specific first: ``CN=billing,O=Contoso``), forgiving
    spaces after commas and lower-case attribute names. :class:`InvalidArgumentError` for one
    that does not parse.
    """
    if isinstance(subject, str):
        text = _ATTRIBUTE_TYPE.sub(lambda m: f"{m[1].strip()}{m[2].upper()}=", subject.strip())
        try:
            name = x509.Name.from_rfc4514_string(text)
        except ValueError:
            name = x509.Name([])
        if not list(name):
            raise InvalidArgumentError(
                f"subject DN {subject[:200]!r} does not parse; write it as RFC 4514, most specific "
                "first, e.g. 'CN=billing,O=Contoso'"
            )
        subject = name
    return subject.rfc4514_string().casefold()


def as_utc(when: dt.datetime) -> dt.datetime:
    """``when`` with a time zone: a naive ``datetime`` is taken as UTC."""
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
    #: Graph's ``keyId`` (a GUID); derived from the thumbprint unless Graph's addKey gave one.
    key_id: str = ""
    #: Graph's ``displayName`` (``None``: the certificate's subject).
    display_name: str | None = None
    #: Graph's ``customKeyIdentifier`` as given to addKey (``None``: the SHA-1 thumbprint).
    custom_key_identifier: str | None = None

    @classmethod
    def from_certificate(
        cls,
        certificate: Certificate,
        *,
        key_id: str | None = None,
        display_name: str | None = None,
        custom_key_identifier: str | None = None,
    ) -> RegisteredCertificate:
        """Parse what every token request needs once, now."""
        der = certificate.der
        sha256 = hashlib.sha256(der).digest()
        return cls(
            certificate=certificate,
            public_key=certificate.public_key,
            sha1=hashlib.sha1(der, usedforsecurity=False).digest(),
            sha256=sha256,
            not_before=certificate.not_before,
            not_after=certificate.not_after,
            key_id=key_id or derived_guid("key", sha256.hex()),
            display_name=display_name,
            custom_key_identifier=custom_key_identifier,
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
        return cls(hashlib.sha256(secret.encode("utf-8")).digest(), expires and as_utc(expires))

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
            if not isinstance(entry, Mapping):
                raise InvalidArgumentError("a JWKS entry cannot be read: it is not an object")
            if entry.get("kty") not in ("RSA", "EC"):
                continue  # symmetric keys cannot prove who signed: not a federated key
            try:
                key = _jose.jwk_to_public_key(entry)
            except ValueError as exc:
                raise InvalidArgumentError(f"a JWKS entry cannot be read: {exc}") from None
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
    #: Keys added through Graph that the token endpoint accepts only from a time (epoch
    #: seconds), by SHA-256: a change takes a while to reach the token service.
    arriving: Mapping[bytes, float] = field(default_factory=dict)
    #: Keys removed through Graph that the token endpoint still accepts until a time.
    departing: tuple[tuple[RegisteredCertificate, float], ...] = ()
    #: The subject DN a client CA's certificate must have for ``tls_client_auth`` (RFC 8705
    #: section 2.1), as :func:`normalize_subject_dn` makes it; ``None``: not registered.
    tls_client_auth_subject_dn: str | None = None

    def find_certificate(
        self,
        *,
        sha1: bytes | None = None,
        sha256: bytes | None = None,
        accepted_at: float | None = None,
    ) -> RegisteredCertificate | None:
        """The key credential with this SHA-1 or SHA-256 thumbprint (raw digest bytes).

        Without ``accepted_at``: the directory's keys (what Graph shows). With it: the keys the
        token endpoint accepts at that time (epoch seconds), which lag Graph's addKey and
        removeKey by the emulator's propagation delay.
        """
        candidates: tuple[RegisteredCertificate, ...] = self.certificates
        if accepted_at is not None:
            arriving, departing = self.arriving, self.departing
            candidates = tuple(
                c for c in candidates if arriving.get(c.sha256, 0.0) <= accepted_at
            ) + tuple(c for c, until in departing if until > accepted_at)
        for cert in candidates:
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
        self._certificate_listeners: list[Callable[[Certificate], None]] = []

    def on_certificate_added(self, listener: Callable[[Certificate], None]) -> None:
        """Call ``listener`` with every certificate added to an app from now on (the
        mutual-TLS listener trusts each, RFC 8705 section 2.2)."""
        with self._lock:
            self._certificate_listeners.append(listener)

    def certificates(self) -> list[Certificate]:
        """Every certificate of every app of every tenant (Graph's view: removed ones not)."""
        with self._lock:
            return [
                registered.certificate
                for tenant in self._tenants.values()
                for app in tenant.apps.values()
                for registered in app.certificates
            ]

    def _announce(self, certificates: Iterable[Certificate]) -> None:
        with self._lock:
            listeners = list(self._certificate_listeners)
        for certificate in certificates:
            for listener in listeners:
                listener(certificate)

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
                if domain == EMULATOR_ROUTES:  # a tenant named so becomes this domain too
                    raise InvalidArgumentError(
                        f"tenant or domain {domain!r} is the path of the emulator's own routes; "
                        "use a GUID or another domain name"
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
        tls_client_auth_subject_dn: str | None = None,
    ) -> App:
        """Create the app registration or add credentials and roles to an existing one.

        ``tls_client_auth_subject_dn`` registers (or replaces) the subject DN of the
        certificates a client CA issues to the app (RFC 8705 section 2.1).
        """
        client_id = client_id.strip()
        if not client_id or any(c.isspace() for c in client_id):
            raise InvalidArgumentError(f"client id {client_id!r} is empty or contains spaces")
        new_certs = tuple(RegisteredCertificate.from_certificate(c) for c in certificates)
        subject_dn = (
            normalize_subject_dn(tls_client_auth_subject_dn)
            if tls_client_auth_subject_dn is not None
            else None
        )
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
            if subject_dn is not None:
                app.tls_client_auth_subject_dn = subject_dn
        self._announce(c.certificate for c in new_certs)
        return app

    def add_key(
        self, app: App, key: RegisteredCertificate, *, accepted_from: float, now: float
    ) -> None:
        """Add a key credential now (Graph's addKey); the token endpoint accepts it from
        ``accepted_from`` (epoch seconds)."""
        with self._lock:
            app.certificates = (*app.certificates, key)
            arriving = _pending(app.arriving, now)
            if accepted_from > now:
                arriving[key.sha256] = accepted_from
            app.arriving = arriving
        self._announce([key.certificate])

    def remove_key(
        self, app: App, key_id: str, *, accepted_until: float, now: float
    ) -> RegisteredCertificate | None:
        """Remove the key credential ``key_id`` now (Graph's removeKey); the token endpoint
        keeps accepting it until ``accepted_until``. ``None`` when the app has no such key."""
        with self._lock:
            found = next((c for c in app.certificates if c.key_id == key_id.lower()), None)
            if found is None:
                return None
            app.certificates = tuple(c for c in app.certificates if c is not found)
            app.arriving = _pending(app.arriving, now, drop=found.sha256)
            departing = tuple((c, until) for c, until in app.departing if until > now)
            if accepted_until > now:
                departing += ((found, accepted_until),)
            app.departing = departing
            return found

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


def _pending(
    arriving: Mapping[bytes, float], now: float, drop: bytes | None = None
) -> dict[bytes, float]:
    # The arrivals still ahead: a copy (readers hold the old mapping without a lock).
    return {sha: when for sha, when in arriving.items() if when > now and sha != drop}
