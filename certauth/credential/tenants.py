"""Which tenants a credential may ask for tokens from, per call (pure: no I/O).

azure-core's ``get_token(..., tenant_id=T)`` asks a credential for a token from tenant ``T``
(Azure SDK clients pass the tenant a resource's challenge names). The rules are azure-identity's
(``azure.identity._internal.utils.resolve_tenant``), so code that works with it works here:

- ``T`` equal to the credential's own tenant, or no ``T``: the credential's tenant;
- ``AZURE_IDENTITY_DISABLE_MULTITENANTAUTH`` set: ``T`` is ignored, the credential's tenant
  is used (azure-identity's escape hatch; logged);
- ``T`` listed in ``additionally_allowed_tenants``, or that list holds ``"*"``: ``T``'s token
  endpoint in the same cloud (same authority host), same client and credential;
- anything else: :class:`~certauth.errors.TenantNotAllowedError`, with azure-identity's
  message.

Where azure-identity would quietly use the configured tenant (ADFS) or has no such case, a
credential with no tenant to swap refuses another tenant plainly: ADFS (no tenants), Azure AD
B2C (a policy and its host belong to one directory), and a credential built with
``token_endpoint=`` or ``issuer=`` (the URL names the server; certauth does not rewrite it).

``additionally_allowed_tenants=None`` reads ``AZURE_ADDITIONALLY_ALLOWED_TENANTS``
(semicolon-separated), as the .NET, Java, Go and JavaScript Azure Identity libraries do for
their environment-driven credentials; an explicit list, even an empty one, wins. azure-identity
for Python reads that variable nowhere; certauth reads it for every credential, once, when the
credential is built (so is ``AZURE_IDENTITY_DISABLE_MULTITENANTAUTH``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from certauth._log import Logger
from certauth._record import Record
from certauth.authority import Authority, resolve_authority
from certauth.errors import InvalidArgumentError, TenantNotAllowedError

__all__ = [
    "ALLOWED_TENANTS_VARIABLE",
    "DISABLE_MULTITENANT_VARIABLE",
    "TenantRules",
    "allowed_tenants",
    "multitenant_disabled",
]

log = Logger("certauth")

ALLOWED_TENANTS_VARIABLE = "AZURE_ADDITIONALLY_ALLOWED_TENANTS"
DISABLE_MULTITENANT_VARIABLE = "AZURE_IDENTITY_DISABLE_MULTITENANTAUTH"
#: What ``"*"`` in the allowed list means: any tenant.
ANY_TENANT = "*"


def allowed_tenants(value: object, environ: Mapping[str, str]) -> frozenset[str]:
    """The additionally allowed tenants, lower-cased: ``value`` (an iterable of strings), or
    when it is ``None`` the semicolon-separated ``AZURE_ADDITIONALLY_ALLOWED_TENANTS``. Blank
    entries are dropped."""
    if value is None:
        items: list[object] = list(environ.get(ALLOWED_TENANTS_VARIABLE, "").split(";"))
        source = ALLOWED_TENANTS_VARIABLE
    elif isinstance(value, str | bytes) or not isinstance(value, Iterable):
        # A bare string would be read letter by letter: refused rather than guessed at.
        raise InvalidArgumentError(
            f"additionally_allowed_tenants={value!r} is not a list; write "
            f'additionally_allowed_tenants=["TENANT_ID", ...] (or ["*"] for any tenant)'
        )
    else:
        items = list(value)
        source = "additionally_allowed_tenants="
    result: set[str] = set()
    for item in items:
        if not isinstance(item, str):
            raise InvalidArgumentError(
                f"{source} holds {item!r}, not a tenant ID; give tenant IDs (GUIDs) or domain "
                'names as strings, or "*"'
            )
        if item.strip():
            result.add(item.strip().lower())
    return frozenset(result)


def multitenant_disabled(environ: Mapping[str, str]) -> bool:
    """Whether ``AZURE_IDENTITY_DISABLE_MULTITENANTAUTH`` is set. azure-identity for Python
    takes any non-empty value as set; certauth does too, except ``0`` and ``false``, which
    read as not set (as the .NET library reads them)."""
    value = environ.get(DISABLE_MULTITENANT_VARIABLE, "").strip().lower()
    return value not in ("", "0", "false")


class TenantRules(Record):
    """The tenants one credential may get tokens from, and where each one's endpoint is.

    ``names`` are the credential's own tenant as it was named (``tenant_id=`` and the
    authority's tenant, lower-cased); ``host`` is the ``authority=`` it was built with (the
    cloud); ``fixed`` says why no other tenant can be reached (``None``: an Entra ID tenant,
    swappable).
    """

    __slots__ = ("allowed", "disabled", "fixed", "host", "names")

    def __init__(
        self,
        names: frozenset[str] = frozenset(),
        allowed: frozenset[str] = frozenset(),
        host: str | None = None,
        fixed: str | None = None,
        disabled: bool = False,
    ) -> None:
        self.names = names
        self.allowed = allowed
        self.host = host
        self.fixed = fixed
        self.disabled = disabled

    @classmethod
    def for_credential(
        cls,
        tenant_id: str | None,
        authority: Authority | None,
        *,
        host: str | None,
        b2c_policy: str | None,
        token_endpoint: str | None,
        issuer: str | None,
        additionally_allowed_tenants: object,
        environ: Mapping[str, str],
    ) -> TenantRules:
        """The rules for a credential built from these arguments (``authority`` is what
        :func:`~certauth.authority.resolve_authority` made of them)."""
        own = (tenant_id, authority.tenant if authority is not None else None)
        names = frozenset(name.strip().lower() for name in own if name and name.strip())
        fixed = None
        if token_endpoint:
            fixed = (
                "this credential was built with token_endpoint=, a URL certauth uses as given: "
                "there is no tenant to swap; build a credential with tenant_id= (and "
                "authority=) for that tenant"
            )
        elif issuer:
            fixed = (
                "this credential was built with issuer=, which names one server: there is no "
                "tenant to swap; build a credential with tenant_id= (and authority=) for that "
                "tenant"
            )
        elif b2c_policy:
            fixed = (
                "an Azure AD B2C credential (b2c_policy=) serves its own directory only: its "
                "host and user flow belong to that directory; build a credential for the other one"
            )
        elif "adfs" in names:
            fixed = (
                "ADFS has no tenants ('adfs' names the whole authority); drop tenant_id, or "
                "build a credential for an Entra ID tenant"
            )
        return cls(
            names=names,
            allowed=allowed_tenants(additionally_allowed_tenants, environ),
            host=host,
            fixed=fixed,
            disabled=multitenant_disabled(environ),
        )

    def resolve(self, requested: str | None) -> str | None:
        """The tenant a call with ``tenant_id=requested`` gets a token from: ``None`` for the
        credential's own; another tenant's name when it is allowed. Raises
        :class:`~certauth.errors.TenantNotAllowedError` otherwise."""
        if requested is None:
            return None
        tenant = requested.strip()
        if not tenant or tenant.lower() in self.names:
            return None
        if self.disabled:
            log.warning(
                "certauth: a token for tenant %s was asked for; %s is set, so the credential's "
                "own tenant is used",
                tenant,
                DISABLE_MULTITENANT_VARIABLE,
            )
            return None
        if self.fixed is not None:
            raise TenantNotAllowedError(
                f"tenant_id={tenant!r} cannot be served: {self.fixed}", tenant_id=tenant
            )
        if ANY_TENANT in self.allowed or tenant.lower() in self.allowed:
            return tenant
        # azure-identity's wording (azure.identity._internal.utils.resolve_tenant), which its
        # users search for.
        raise TenantNotAllowedError(
            f"The current credential is not configured to acquire tokens for tenant {tenant}. "
            "To enable acquiring tokens for this tenant add it to the "
            'additionally_allowed_tenants when creating the credential, or add "*" to '
            "additionally_allowed_tenants to allow acquiring tokens for any tenant.",
            tenant_id=tenant,
        )

    def authority(self, tenant: str) -> Authority:
        """Tenant ``tenant``'s token endpoint in the credential's cloud: the one resolution
        (:func:`~certauth.authority.resolve_authority`) with the tenant swapped."""
        try:
            authority = resolve_authority(tenant, host=self.host)
        except InvalidArgumentError as exc:
            raise InvalidArgumentError(f"tenant_id={tenant!r} (per call): {exc}") from None
        assert authority is not None  # a tenant and a host never need discovery
        return authority
