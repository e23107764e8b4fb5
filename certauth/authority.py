"""Where the token endpoint is: Entra ID tenants, Azure AD B2C policies, generic OAuth servers.

Sans-I/O: resolving an issuer through OIDC discovery needs one GET, which the credential shells
perform; this module builds the URL and reads the document.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from certauth.errors import ConfigurationError, InvalidArgumentError

__all__ = [
    "DEFAULT_AUTHORITY_HOST",
    "Authority",
    "AuthorityKind",
    "check_discovery_issuer",
    "check_endpoint_url",
    "check_no_user_info",
    "is_loopback_host",
    "normalize_authority_host",
    "resolve_authority",
]

DEFAULT_AUTHORITY_HOST = "login.microsoftonline.com"
#: The Entra ID clouds (public, US Government, China) and their aliases.
ENTRA_HOSTS = frozenset(
    {
        "login.microsoftonline.com",
        "login.microsoft.com",
        "login.windows.net",
        "sts.windows.net",
        "login.microsoftonline.us",
        "login.usgovcloudapi.net",
        "login.partner.microsoftonline.cn",
        "login.chinacloudapi.cn",
    }
)
#: Tenants that name no single directory; client credentials need one (AADSTS9001023 etc.).
MULTI_TENANT_ALIASES = frozenset({"common", "organizations", "consumers"})

AuthorityKind = Literal["entra", "b2c", "generic"]

_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")
#: Patterns only an explicit token endpoint needs: strings, compiled by ``re`` when first used.
_ENTRA_TOKEN_PATH = r"^/(?P<tenant>[^/]+)/oauth2/(?P<v2>v2\.0/)?token$"
_B2C_TOKEN_PATH = r"(?i)^/(?P<tenant>[^/]+)/(?P<policy>b2c_[^/]+)/oauth2/v2\.0/token$"


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` is this machine (127.0.0.0/8, ::1, localhost): http is allowed there."""
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


#: The longest endpoint URL accepted (characters). Token endpoints, issuers and JWKS URLs are
#: about 100 characters; 2,048 is what every proxy, CDN and HTTP library handles (RFC 9110
#: section 4.1 asks for at least 8,000 octets), so a longer one is a mistake (a pasted token or
#: document), refused before anything is sent.
MAX_URL_CHARS = 2048
#: RFC 1035 section 2.3.4: a label is at most 63 octets; a name at most 255 octets on the wire,
#: which is 253 characters written out (without a final dot).
MAX_LABEL_CHARS = 63
MAX_HOST_CHARS = 253

#: Where each URL comes from, for the fix in a message: the keyword (the CLI shows its option).
_SOURCES = {
    "token endpoint": "token_endpoint=",
    "authority host": "authority= / AZURE_AUTHORITY_HOST",
    "issuer": "issuer=",
    "jwks_uri": "jwks_uri=",
    "graph_url": "graph_url=",
}
#: RFC 3986 section 3.2: the authority ends at the first "/", "?" or "#"; WHATWG URL parsers
#: (browsers, some proxies) also end it at a backslash.
_AUTHORITY_END = re.compile(r"[/?#\\]")


def _source(what: str) -> str:
    option = _SOURCES.get(what)
    return f"fix {option}" if option else "it cannot be used"


def check_no_user_info(url: str, *, what: str) -> None:
    """Refuse a URL with user info (``https://USER:PASSWORD@host/...``) before it is sent or
    shown anywhere: certauth authenticates with its client credential, never with a password
    in a URL (RFC 3986 section 3.2.1 deprecates ``user:password``; RFC 9110 section 4.2.4
    forbids sending it in http(s) URIs). The message names the host, never the user info.
    """
    rest = url.split("://", 1)[1] if "://" in url else url
    authority = _AUTHORITY_END.split(rest, maxsplit=1)[0]
    if "@" in authority:
        host = authority.rpartition("@")[2][:100]
        raise InvalidArgumentError(
            f"{what} has user info (USER:PASSWORD@ before the host {host!r}); certauth never "
            f"sends credentials in a URL: remove it ({_source(what)})"
        )


def _check_url_shape(url: str, *, what: str) -> None:
    """The checks that keep a URL from failing deep inside the HTTP stack (exit 1) or leaking:
    its length and user info; the host's DNS labels are checked by :func:`check_host`."""
    if len(url) > MAX_URL_CHARS:
        raise InvalidArgumentError(
            f"{what} is {len(url):,} characters long, over the {MAX_URL_CHARS:,} certauth "
            f"accepts; is it a URL? ({_source(what)})"
        )
    check_no_user_info(url, what=what)


def check_host(host: str, *, what: str) -> None:
    """RFC 1035 section 2.3.4 (labels of 1-63 octets, names of at most 253 characters), on the
    IDNA form a resolver is given; IP literals pass."""
    if ":" in host or not host.strip("0123456789."):
        return  # IPv6 or IPv4 literal
    name = host.removesuffix(".")
    try:
        encoded = name if name.isascii() else name.encode("idna").decode("ascii")
    except UnicodeError:
        raise InvalidArgumentError(
            f"{what} host {host[:100]!r} is not a valid DNS name; {_source(what)}"
        ) from None
    if len(encoded) > MAX_HOST_CHARS:
        raise InvalidArgumentError(
            f"{what} host is {len(encoded)} characters long, over the {MAX_HOST_CHARS} a DNS "
            f"name may have (RFC 1035 section 2.3.4); {_source(what)}"
        )
    for label in encoded.split("."):
        if not label or len(label) > MAX_LABEL_CHARS:
            shown = f"a label of {len(label)} characters" if label else "an empty label"
            raise InvalidArgumentError(
                f"{what} host {encoded[:100]!r} has {shown}; a DNS label has 1 to "
                f"{MAX_LABEL_CHARS} (RFC 1035 section 2.3.4); {_source(what)}"
            )


def check_endpoint_url(url: str, *, what: str = "token endpoint") -> str:
    """Validate an endpoint URL: absolute, https (http only on loopback), no fragment.

    Returns the URL unchanged: the assertion's ``aud`` must be exactly what is POSTed to.
    Usage errors (:class:`InvalidArgumentError`): longer than :data:`MAX_URL_CHARS`, user info
    (``USER:PASSWORD@``), a host that is not a DNS name (labels over 63 characters, a name
    over 253). Other unusable URLs are a :class:`ConfigurationError`.
    """
    _check_url_shape(url, what=what)
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        _ = parts.port  # raises ValueError for a malformed port
    except ValueError:
        raise ConfigurationError(f"{what} {url!r} is not a valid URL") from None
    if parts.scheme not in {"https", "http"} or not host:
        raise ConfigurationError(
            f"{what} {url!r} is not an absolute http(s) URL; write it as https://HOST/PATH"
        )
    if parts.scheme == "http" and not is_loopback_host(host):
        raise ConfigurationError(
            f"{what} {url!r} uses plain http; certauth sends credentials only over https "
            "(http is allowed on loopback hosts such as 127.0.0.1 for local emulators)"
        )
    if parts.fragment:
        raise ConfigurationError(f"{what} {url!r} has a #fragment; remove it")
    check_host(host, what=what)
    return url


def normalize_authority_host(host: str | None) -> str:
    """``login.microsoftonline.us`` or ``https://login.microsoftonline.us/`` -> ``https://HOST``.

    A loopback host may use ``http://`` (the emulator). No host means the public cloud.
    """
    text = (host or DEFAULT_AUTHORITY_HOST).strip().rstrip("/")
    if not text:
        text = DEFAULT_AUTHORITY_HOST
    if "://" not in text:
        text = f"https://{text}"
    check_endpoint_url(text, what="authority host")
    parts = urlsplit(text)
    if parts.path or parts.query:
        raise ConfigurationError(
            f"authority host {host!r} has a path; give only the host, e.g. "
            "login.microsoftonline.us (the tenant goes in tenant_id=)"
        )
    return f"{parts.scheme}://{parts.netloc}"


def _check_tenant(tenant: str) -> str:
    tenant = tenant.strip()
    if tenant.lower() in MULTI_TENANT_ALIASES:
        raise InvalidArgumentError(
            f"tenant {tenant!r} names no single directory, and app-only tokens (client "
            "credentials) need one: give the tenant ID (a GUID) or a domain such as "
            "contoso.onmicrosoft.com"
        )
    if not _TENANT.match(tenant):
        raise InvalidArgumentError(
            f"tenant {tenant!r} is not a tenant ID (GUID) or domain name; check tenant_id="
        )
    return tenant


@dataclass(frozen=True)
class Authority:
    """A resolved token endpoint and the rules that come with it.

    Build one with :meth:`entra`, :meth:`b2c`, :meth:`from_token_endpoint` or, for a generic
    OpenID Connect issuer, :meth:`from_discovery` (after fetching :meth:`discovery_url`).
    """

    kind: AuthorityKind
    token_endpoint: str
    tenant: str | None = None
    policy: str | None = None
    issuer: str | None = None
    #: From discovery: the client authentication methods and signing algorithms the server takes.
    auth_methods: tuple[str, ...] = ()
    signing_algs: tuple[str, ...] = ()
    #: The discovery document as received (generic issuers only).
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    #: From discovery: ``mtls_endpoint_aliases.token_endpoint`` (RFC 8705 section 5), where
    #: a client that authenticates with its TLS certificate must send its token requests.
    mtls_token_endpoint: str | None = None

    @property
    def is_entra(self) -> bool:
        """Entra ID rules apply (scopes must be ``RESOURCE/.default``, PS256 by default)."""
        return self.kind == "entra"

    @property
    def is_v1(self) -> bool:
        """The Entra v1 endpoint (``/oauth2/token``), which takes ``resource`` not ``scope``."""
        return self.is_entra and not self.token_endpoint.rstrip("/").endswith("/v2.0/token")

    @classmethod
    def entra(cls, tenant: str, *, host: str | None = None, v1: bool = False) -> Authority:
        """An Entra ID tenant (GUID or domain) in the cloud at ``host`` (default: public)."""
        base = normalize_authority_host(host)
        tenant = _check_tenant(tenant)
        path = "oauth2/token" if v1 else "oauth2/v2.0/token"
        return cls("entra", f"{base}/{tenant}/{path}", tenant=tenant)

    @classmethod
    def b2c(cls, tenant: str, policy: str, *, host: str | None = None) -> Authority:
        """An Azure AD B2C user flow or custom policy.

        ``tenant`` is the short name (``contoso``) or the full domain
        (``contoso.onmicrosoft.com``); ``host`` defaults to ``TENANT.b2clogin.com`` and may be
        a custom domain.
        """
        tenant = _check_tenant(tenant)
        short = tenant.split(".", 1)[0]
        domain = tenant if "." in tenant else f"{tenant}.onmicrosoft.com"
        policy = policy.strip()
        if not re.match(r"^[A-Za-z0-9_.-]+$", policy):
            raise InvalidArgumentError(
                f"B2C policy {policy!r} is not a policy name such as B2C_1A_signin"
            )
        base = normalize_authority_host(host or f"{short}.b2clogin.com")
        return cls(
            "b2c", f"{base}/{domain}/{policy}/oauth2/v2.0/token", tenant=domain, policy=policy
        )

    @classmethod
    def from_token_endpoint(cls, url: str) -> Authority:
        """An explicit token endpoint URL, classified by its shape.

        ``https://HOST/TENANT/oauth2/v2.0/token`` on an Entra host (or on loopback, where the
        emulator serves the same paths) follows Entra's rules; ``/TENANT/B2C_.../oauth2/v2.0/
        token`` is B2C; anything else is a generic OAuth 2.0 server.
        """
        check_endpoint_url(url)
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        b2c = re.match(_B2C_TOKEN_PATH, parts.path)
        if b2c:  # the policy segment (B2C_1_..., B2C_1A_...) is distinctive on any host
            return cls("b2c", url, tenant=b2c["tenant"], policy=b2c["policy"])
        entra = re.match(_ENTRA_TOKEN_PATH, parts.path)
        if entra and (host in ENTRA_HOSTS or is_loopback_host(host)):
            tenant = entra["tenant"]
            if tenant.lower() in MULTI_TENANT_ALIASES:
                _check_tenant(tenant)
            return cls("entra", url, tenant=tenant)
        return cls("generic", url)

    @classmethod
    def entra_from_issuer(cls, issuer: str) -> Authority | None:
        """An Entra v2 issuer (``https://HOST/TENANT/v2.0``) resolves without discovery."""
        check_endpoint_url(issuer, what="issuer")
        parts = urlsplit(issuer.rstrip("/"))
        host = (parts.hostname or "").lower()
        match = re.match(r"^/([^/]+)/v2\.0$", parts.path)
        if match and host in ENTRA_HOSTS:
            base = f"{parts.scheme}://{parts.netloc}"
            return cls.entra(match[1], host=base)
        return None

    @staticmethod
    def discovery_url(issuer: str) -> str:
        """OpenID Connect Discovery 1.0 section 4: ``{issuer}/.well-known/openid-configuration``."""
        check_endpoint_url(issuer, what="issuer")
        return issuer.rstrip("/") + "/.well-known/openid-configuration"

    @classmethod
    def from_discovery(cls, issuer: str, document: Any) -> Authority:
        """Read a discovery document fetched from :meth:`discovery_url`.

        The document's ``issuer`` must equal the one asked for (OIDC Discovery section 4.3),
        its ``token_endpoint`` must be usable, and if it lists
        ``token_endpoint_auth_methods_supported`` that list must allow ``private_key_jwt`` or a
        client secret method.
        """
        where = cls.discovery_url(issuer)
        document = check_discovery_issuer(issuer, document, where=where)
        endpoint = document.get("token_endpoint")
        if not isinstance(endpoint, str) or not endpoint:
            raise ConfigurationError(f"{where}: the discovery document has no token_endpoint")
        check_endpoint_url(endpoint, what=f"the token_endpoint in {where}")
        methods = _str_tuple(document.get("token_endpoint_auth_methods_supported"))
        algs = _str_tuple(document.get("token_endpoint_auth_signing_alg_values_supported"))
        shaped = cls.from_token_endpoint(endpoint)
        return cls(
            shaped.kind,
            endpoint,
            tenant=shaped.tenant,
            policy=shaped.policy,
            issuer=issuer,
            auth_methods=methods,
            signing_algs=algs,
            metadata=dict(document),
            mtls_token_endpoint=_mtls_alias(document, where),
        )

    def for_mtls(self) -> Authority:
        """This authority as a client authenticating with its TLS certificate sees it: the
        token endpoint is the discovery document's mTLS alias when it has one (RFC 8705
        section 5: "the client ... uses the alias"), else the token endpoint itself."""
        if self.mtls_token_endpoint is None or self.mtls_token_endpoint == self.token_endpoint:
            return self
        return dataclasses.replace(self, token_endpoint=self.mtls_token_endpoint)

    def default_alg(self, key_type: str) -> str:
        """The assertion algorithm to use when none is asked for.

        Entra ID: PS256 (Microsoft's current guidance, with ``x5t#S256``). Generic servers:
        RS256 (every server knows it, and ADFS knows only SHA-1 ``x5t``) unless discovery says
        otherwise; EC keys: ES256.
        """
        if key_type == "EC":
            return "ES256"
        if self.is_entra:
            return "PS256"
        if self.signing_algs and "RS256" not in self.signing_algs:
            for alg in ("PS256", "RS384", "PS384", "RS512", "PS512"):
                if alg in self.signing_algs:
                    return alg
        return "RS256"

    def check_auth_method(self, method: str) -> None:
        """Refuse a client authentication method the server's discovery document rules out."""
        if self.auth_methods and method not in self.auth_methods:
            raise ConfigurationError(
                f"the server at {self.token_endpoint} does not accept {method} (its discovery "
                f"document lists {', '.join(self.auth_methods)})"
            )

    def check_signing_alg(self, alg: str) -> None:
        """Refuse an assertion algorithm the server's discovery document rules out."""
        if self.signing_algs and alg not in self.signing_algs:
            raise ConfigurationError(
                f"the server at {self.token_endpoint} does not accept {alg} assertions (its "
                f"discovery document lists {', '.join(self.signing_algs)}); pass alg= with one "
                "of those"
            )


def check_discovery_issuer(issuer: str, document: Any, *, where: str) -> Mapping[str, Any]:
    """The discovery document, once it is shown to be a JSON object naming ``issuer``.

    OpenID Connect Discovery 1.0 section 4.3 (and RFC 8414 section 3.3): the ``issuer`` in the
    document is required and MUST be identical to the issuer URL the document was fetched
    for. A trailing slash is not told apart: Entra ID's v1 issuers end in one and its v2
    issuers do not, and users write both (the verifier then checks the tokens' ``iss``
    exactly). Used by the credentials (token endpoint discovery) and the verifiers (JWKS
    discovery) alike.
    """
    if not isinstance(document, Mapping):
        raise ConfigurationError(f"{where}: the discovery document is not a JSON object")
    stated = document.get("issuer")
    if not isinstance(stated, str) or stated.rstrip("/") != issuer.rstrip("/"):
        raise ConfigurationError(
            f"{where}: the discovery document names issuer {stated!r}, not {issuer!r}; "
            "pass the issuer exactly as the document (and the tokens) name it"
        )
    return document


def resolve_authority(
    tenant: str | None = None,
    *,
    host: str | None = None,
    b2c_policy: str | None = None,
    token_endpoint: str | None = None,
    issuer: str | None = None,
) -> Authority | None:
    """Where to ask for tokens, from what a caller named: the one resolution the library's
    credentials and the CLI share.

    Named one way only: ``token_endpoint`` or ``issuer`` exclude each other and
    ``b2c_policy``/``host``; a ``tenant`` next to an Entra token endpoint must be its tenant.
    A ``token_endpoint`` is used as given, an ``issuer`` (an Entra v2 issuer resolves at once;
    any other returns ``None``: its discovery document must be fetched, see
    :meth:`Authority.from_discovery`), then ``tenant`` with ``b2c_policy`` (Azure AD B2C) or
    without (Entra ID), in the cloud at ``host``.
    """
    if token_endpoint and issuer:
        raise InvalidArgumentError("token_endpoint= and issuer= both name the server: give one")
    if (token_endpoint or issuer) and (b2c_policy or host):
        given = " and ".join(
            name
            for name, value in (
                ("b2c_policy=", b2c_policy),
                ("authority=", host),
            )
            if value
        )
        raise InvalidArgumentError(
            f"{given} name the server by its tenant; with a token endpoint or an issuer they "
            "would be ignored: drop them, or name the server by tenant"
        )
    if token_endpoint:
        authority = Authority.from_token_endpoint(token_endpoint)
        if (
            tenant
            and authority.is_entra
            and authority.tenant is not None
            and authority.tenant.lower() != tenant.strip().lower()
        ):
            raise InvalidArgumentError(
                f"tenant {tenant!r} does not match the token endpoint's tenant "
                f"{authority.tenant!r}; drop one of them"
            )
        return authority
    if issuer:
        return Authority.entra_from_issuer(issuer)
    if not tenant:
        raise InvalidArgumentError("no tenant: give tenant_id=, a token_endpoint= or an issuer=")
    if b2c_policy:
        return Authority.b2c(tenant, b2c_policy, host=host)
    return Authority.entra(tenant, host=host)


def _mtls_alias(document: Mapping[str, Any], where: str) -> str | None:
    aliases = document.get("mtls_endpoint_aliases")
    if not isinstance(aliases, Mapping):
        return None
    alias = aliases.get("token_endpoint")
    if alias is None:
        return None
    if not isinstance(alias, str) or not alias:
        raise ConfigurationError(
            f"{where}: mtls_endpoint_aliases.token_endpoint is not a URL; fix the server's "
            "discovery document"
        )
    return check_endpoint_url(alias, what=f"mtls_endpoint_aliases.token_endpoint in {where}")


def _str_tuple(value: Any) -> tuple[str, ...]:
    if isinstance(value, Sequence) and not isinstance(value, str):
        return tuple(v for v in value if isinstance(v, str))
    return ()
