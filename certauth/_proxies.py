"""HTTP proxies from the environment, for certauth's own blocking client
(:mod:`certauth._transport`).

The variables and their precedence are the ones every HTTP client on the machine reads
(Python's ``urllib.request.getproxies_environment``, curl, requests, httpx):

* ``https_proxy`` for ``https://`` URLs, ``http_proxy`` for ``http://`` ones, ``all_proxy`` for
  either when its own is not set; the lower-case name wins over the upper-case one, and an
  empty value is unset. ``HTTP_PROXY`` is ignored when ``REQUEST_METHOD`` is set (a CGI
  script, whose ``HTTP_*`` variables come from the request's headers: "httpoxy",
  CVE-2016-5385; Python's ``urllib.request.getproxies_environment`` does the same).
* ``no_proxy`` / ``NO_PROXY``: a comma-separated list of hosts reached directly, as httpx reads
  it (so that the sync and async credentials agree): ``*`` for every host; ``example.com`` for
  that host and its subdomains; ``.example.com`` for its subdomains only; ``localhost``, an IPv4
  or IPv6 address for exactly that host; ``scheme://host[:port]`` for that scheme, host and port.
* A proxy is an ``http://`` URL (``host:port`` alone means ``http://host:port``), with
  ``user:password@`` for a proxy that asks for Basic credentials (RFC 9110 section 11.7.1,
  ``Proxy-Authorization``). ``https://`` requests go through a ``CONNECT`` tunnel (RFC 9110
  section 9.3.6): the TLS session, and the server's certificate check, are end to end.

Proxies that are themselves reached over TLS (``https://`` proxy URLs) or SOCKS are refused with
the variable named, not silently bypassed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

from certauth.errors import ConfigurationError

__all__ = ["Proxies", "Proxy"]


class Proxy:
    """One proxy: where to connect, and the ``Proxy-Authorization`` to send (``None``: none)."""

    __slots__ = ("authorization", "host", "port", "variable")

    def __init__(self, variable: str, host: str, port: int, authorization: str | None) -> None:
        #: The environment variable it came from (named in errors).
        self.variable = variable
        self.host = host
        self.port = port
        self.authorization = authorization

    @property
    def url(self) -> str:
        """The proxy's URL without its credentials (safe to show)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def __repr__(self) -> str:
        return f"Proxy({self.url} from {self.variable})"


class Proxies:
    """The proxies the environment names, and the hosts it exempts."""

    __slots__ = ("_by_scheme", "_exempt", "_exempt_all")

    def __init__(self, by_scheme: Mapping[str, Proxy], exempt: tuple[str, ...]) -> None:
        self._by_scheme = dict(by_scheme)
        self._exempt = exempt
        self._exempt_all = "*" in exempt

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Proxies:
        """Read the variables (see the module docstring); an unusable proxy URL is a
        :class:`~certauth.errors.ConfigurationError` naming its variable."""
        env = os.environ if environ is None else environ
        by_scheme: dict[str, Proxy] = {}
        for scheme in ("http", "https"):
            found = _variable(env, f"{scheme}_proxy") or _variable(env, "all_proxy")
            if found is not None:
                by_scheme[scheme] = _parse(*found)
        no_proxy = _variable(env, "no_proxy")
        exempt = tuple(h.strip() for h in no_proxy[1].split(",") if h.strip()) if no_proxy else ()
        return cls(by_scheme, exempt)

    def __bool__(self) -> bool:
        return bool(self._by_scheme) and not self._exempt_all

    def for_url(self, scheme: str, host: str, port: int) -> Proxy | None:
        """The proxy a request to ``scheme://host:port`` goes through (``None``: direct)."""
        proxy = self._by_scheme.get(scheme)
        if proxy is None or self._exempt_all:
            return None
        host = host.lower()
        for entry in self._exempt:
            if _exempts(entry.lower(), scheme, host, port):
                return None
        return proxy


def _variable(env: Mapping[str, str], name: str) -> tuple[str, str] | None:
    """``(variable, value)`` for ``name`` (lower case first, then upper case), empty as unset."""
    upper = name.upper()
    candidates = [name]
    if not (upper == "HTTP_PROXY" and "REQUEST_METHOD" in env):
        candidates.append(upper)
    for variable in candidates:
        value = env.get(variable, "").strip()
        if value:
            return variable, value
    return None


def _parse(variable: str, value: str) -> Proxy:
    url = value if "://" in value else f"http://{value}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigurationError(
            f"{variable}: not a proxy URL ({exc}); give http://host:port"
        ) from None
    scheme = parts.scheme.lower()
    if scheme != "http":
        raise ConfigurationError(
            f"{variable}: certauth's HTTP client takes an http:// proxy (https:// requests go "
            f"through it in a CONNECT tunnel), not {scheme}://; give http://host:port, or list "
            "the token endpoint's host in NO_PROXY"
        )
    if not parts.hostname:
        raise ConfigurationError(f"{variable}: the proxy URL names no host; give http://host:port")
    authorization = None
    if parts.username is not None:
        import base64

        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(credentials.encode()).decode("ascii")
    return Proxy(variable, parts.hostname, port or 80, authorization)


def _exempts(entry: str, scheme: str, host: str, port: int) -> bool:
    """Whether one ``no_proxy`` entry sends ``scheme://host:port`` direct (httpx's reading of
    curl's CURLOPT_NOPROXY: https://curl.se/libcurl/c/CURLOPT_NOPROXY.html)."""
    if "://" in entry:
        try:
            parts = urlsplit(entry)
            entry_port = parts.port
        except ValueError:
            return False
        if parts.scheme not in (scheme, "all"):
            return False
        if entry_port is not None and entry_port != port:
            return False
        return _host_matches(parts.hostname or "", host)
    return _host_matches(entry.strip("[]"), host)


def _host_matches(entry: str, host: str) -> bool:
    if not entry:
        return False
    if entry == host:
        return True
    import ipaddress

    try:
        ipaddress.ip_address(entry)
    except ValueError:
        pass
    else:
        return False  # an address exempts exactly that address
    if entry.startswith("."):
        return host.endswith(entry)  # subdomains only
    return host.endswith("." + entry)  # the host itself (above) and its subdomains
