"""The part of Microsoft Graph a certificate rotation needs: read an application's key
credentials, ``addKey`` and ``removeKey`` with a proof-of-possession JWT.

An application may roll its own certificates with ``addKey``/``removeKey`` and no Graph
permission, by proving possession of a key it already has
(https://learn.microsoft.com/en-us/graph/api/application-addkey,
https://learn.microsoft.com/en-us/graph/api/application-removekey). Reading the application
(to find its object id and its keys' ids) does need Application.Read.All or
Application.ReadWrite.OwnedBy.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

from certauth import _jose
from certauth._flow import Flow, Reply, Send, Sleep, log_retry, retry_delay
from certauth.certificates import Certificate
from certauth.errors import GraphError, TransportError
from certauth.protocol import RetryPolicy

#: https://learn.microsoft.com/en-us/graph/application-rollkey-prooftoken: the proof's
#: audience is the (legacy Azure AD Graph) application id, whatever the Graph host.
PROOF_AUDIENCE = "00000002-0000-0000-c000-000000000000"
#: The same page: "The token lifespan should not exceed 10 minutes" (exp = nbf + 10 min).
PROOF_LIFETIME = 600
#: Microsoft Graph per cloud, by authority host
#: (https://learn.microsoft.com/en-us/graph/deployments#microsoft-graph-and-graph-explorer-service-root-endpoints).
GRAPH_BY_AUTHORITY = {
    "login.microsoftonline.com": "https://graph.microsoft.com",
    "login.microsoft.com": "https://graph.microsoft.com",
    "login.windows.net": "https://graph.microsoft.com",
    "login.microsoftonline.us": "https://graph.microsoft.us",
    "login.usgovcloudapi.net": "https://graph.microsoft.us",
    "login.chinacloudapi.cn": "https://microsoftgraph.chinacloudapi.cn",
    "login.partner.microsoftonline.cn": "https://microsoftgraph.chinacloudapi.cn",
}
DEFAULT_GRAPH = "https://graph.microsoft.com"
#: Every Graph service root (the US Government DoD cloud signs in at login.microsoftonline.us
#: like L4, but its Graph is dod-graph.microsoft.us: give it as graph_url=).
GRAPH_HOSTS = frozenset(
    {
        "graph.microsoft.com",
        "graph.microsoft.us",
        "dod-graph.microsoft.us",
        "microsoftgraph.chinacloudapi.cn",
    }
)


def graph_for(authority_host: str | None) -> str:
    """The Graph service root for the cloud of ``authority_host`` (``https://HOST`` or a bare
    host; ``None``: the public cloud). A host of no known cloud (a local emulator) gets the
    public cloud's: its tokens are asked for that resource."""
    if not authority_host:
        return DEFAULT_GRAPH
    host = urlsplit(authority_host if "//" in authority_host else f"//{authority_host}").hostname
    return GRAPH_BY_AUTHORITY.get((host or "").lower(), DEFAULT_GRAPH)


def graph_resource(graph_url: str | None, authority_host: str | None) -> str:
    """The resource a Graph token is asked for: ``graph_url`` when it is a Graph service root
    (DoD's included), else the cloud's Graph by ``authority_host`` (an emulator's URL gets the
    public cloud's resource, as its tokens name it)."""
    if graph_url:
        parts = urlsplit(graph_url)
        if (parts.hostname or "").lower() in GRAPH_HOSTS:
            return f"{parts.scheme}://{parts.hostname}"
    return graph_for(authority_host)


def key_id(application: Mapping[str, Any] | None, thumbprint: str) -> str | None:
    """The ``keyId`` of ``application``'s key credential for the certificate with SHA-1
    ``thumbprint``: by its ``key`` (the certificate's DER, when Graph sends it) or else by its
    ``customKeyIdentifier``."""
    for credential in (application or {}).get("keyCredentials") or []:
        if not isinstance(credential, Mapping):
            continue
        found = _thumbprint_of_key(credential.get("key")) or thumbprint_of(credential)
        identifier = credential.get("keyId")
        if found == thumbprint and isinstance(identifier, str):
            return identifier
    return None


def _thumbprint_of_key(value: object) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    import hashlib

    try:
        der = base64.b64decode(value, validate=True)
    except ValueError:
        return None
    return hashlib.sha1(der).hexdigest().upper()  # noqa: S324 - the portal's thumbprint


def build_proof(certificate: Certificate, object_id: str, *, now: float | None = None) -> str:
    """The proof-of-possession JWT for ``addKey``/``removeKey``, signed with ``certificate``'s
    key: ``aud`` the Azure AD Graph id, ``iss`` the application's *object* id (not its client
    id), ``nbf``/``exp`` ten minutes apart (the page cited at :data:`PROOF_AUDIENCE`). RS256 with
    the SHA-1 thumbprint in ``x5t`` and ``kid``, as Microsoft's sample (an
    ``X509SigningCredentials``) makes it."""
    key = certificate.require_private_key()
    issued = int(time.time() if now is None else now)
    header = {"alg": "RS256", "typ": "JWT", "x5t": certificate.x5t, "kid": certificate.thumbprint()}
    claims = {
        "aud": PROOF_AUDIENCE,
        "iss": object_id,
        "nbf": issued,
        "iat": issued,
        "exp": issued + PROOF_LIFETIME,
    }
    signing_input = f"{_jose.json_segment(header)}.{_jose.json_segment(claims)}"
    signature = _jose.sign(key, "RS256", signing_input.encode("ascii"))
    return f"{signing_input}.{_jose.b64url_encode(signature)}"


def key_credential(certificate: Certificate, display_name: str) -> dict[str, Any]:
    """The ``keyCredential`` ``addKey`` takes: the public certificate only (Graph: "You should
    only provide the public key value when adding a certificate credential")."""
    return {
        "type": "AsymmetricX509Cert",
        "usage": "Verify",
        "key": base64.b64encode(certificate.der).decode("ascii"),
        "displayName": display_name[:90],
    }


def thumbprint_of(credential: Mapping[str, Any]) -> str | None:
    """The SHA-1 thumbprint (uppercase hex) a Graph ``keyCredential`` names in
    ``customKeyIdentifier``, or ``None``.

    The property is binary, base64 in JSON, and "defaults to the thumbprint of the certificate"
    (https://learn.microsoft.com/en-us/graph/api/resources/keycredential). What Graph shows
    depends on how the key was uploaded: the portal stores the 40 hex characters of the
    thumbprint as text, a manifest or ``certauth cert manifest`` the thumbprint's 20 bytes.
    Both are read here.
    """
    value = credential.get("customKeyIdentifier")
    if not isinstance(value, str) or not value:
        return None
    if _is_sha1_hex(value):
        return value.upper()
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError:
        return None
    if len(raw) == 20:
        return raw.hex().upper()
    text = raw.decode("ascii", "replace")
    return text.upper() if _is_sha1_hex(text) else None


def _is_sha1_hex(text: str) -> bool:
    return len(text) == 40 and all(c in "0123456789abcdefABCDEF" for c in text)


class GraphRequest:
    """One Graph call as a flow (see :mod:`certauth._flow`): sent with a bearer token, retried
    on transient failures per ``retry``, and a refusal raised as :class:`GraphError`."""

    def __init__(self, base_url: str, token: Callable[[], str], retry: RetryPolicy) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.retry = retry

    def application(self, *, app_id: str | None = None, object_id: str | None = None) -> Flow[Any]:
        """GET the application by ``object_id`` or by ``app_id`` (its client id)."""
        if object_id:
            path = f"/v1.0/applications/{quote(object_id, safe='')}"
        else:
            path = f"/v1.0/applications(appId='{quote(app_id or '', safe='')}')"
        return self._call("GET", path + "?$select=id,appId,displayName,keyCredentials", None)

    def add_key(self, object_id: str, credential: dict[str, Any], proof: str) -> Flow[Any]:
        """POST ``addKey``; the new ``keyCredential`` (with its ``keyId``)."""
        body = {"keyCredential": credential, "passwordCredential": None, "proof": proof}
        return self._call("POST", f"/v1.0/applications/{quote(object_id, safe='')}/addKey", body)

    def remove_key(self, object_id: str, key_id: str, proof: str) -> Flow[Any]:
        """POST ``removeKey``."""
        body = {"keyId": key_id, "proof": proof}
        return self._call("POST", f"/v1.0/applications/{quote(object_id, safe='')}/removeKey", body)

    def _call(self, method: str, path: str, body: dict[str, Any] | None) -> Flow[Any]:
        url = self.base_url + path
        what = f"Graph {path.split('?')[0].rsplit('/', 1)[-1]}"
        attempt = 0
        while True:
            attempt += 1
            headers = {
                "Authorization": f"Bearer {self.token()}",
                "Accept": "application/json",
                # Echoed by Graph in its answer and logs: what support looks a request up by.
                "client-request-id": str(uuid.uuid4()),
            }
            data = None
            if body is not None:
                headers["Content-Type"] = "application/json"
                data = json.dumps(body).encode("utf-8")
            answer = yield Send(method, url, headers, data)
            delay = retry_delay(answer, attempt, url=url, retry=self.retry, now=time.time())
            if delay is None:
                break
            log_retry(what, url, answer, attempt, self.retry, delay)
            yield Sleep(delay)
        assert isinstance(answer, Reply)
        if 200 <= answer.status < 300:
            if answer.status == 204 or not answer.body:
                return None
            try:
                return json.loads(answer.body)
            except ValueError:
                raise TransportError(
                    f"{url}: HTTP {answer.status} but the answer is not JSON", url=url
                ) from None
        raise graph_error(answer, url, method)


def graph_error(answer: Reply, url: str, method: str) -> GraphError:
    """Graph's error answer (https://learn.microsoft.com/en-us/graph/errors) as a
    :class:`GraphError` whose message names the code, Graph's message and the request id."""
    code = graph_message = request_id = date = None
    try:
        document = json.loads(answer.body)
    except ValueError:
        document = None
    error = document.get("error") if isinstance(document, dict) else None
    if isinstance(error, dict):
        code, graph_message = _text(error, "code"), _text(error, "message")
        inner = error.get("innerError")
        if isinstance(inner, dict):
            request_id, date = _text(inner, "request-id"), _text(inner, "date")
    request_id = request_id or answer.headers.get("request-id")
    details = ": ".join(part for part in (code, (graph_message or "")[:300]) if part)
    return GraphError(
        f"{method} {url}: Microsoft Graph answered HTTP {answer.status}"
        + (f" ({details})" if details else "")
        + (f"; request-id {request_id}" if request_id else ""),
        url=url,
        status_code=answer.status,
        code=code,
        graph_message=graph_message,
        request_id=request_id,
        date=date,
    )


def _text(document: Mapping[str, Any], name: str) -> str | None:
    value = document.get(name)
    return value if isinstance(value, str) else None
