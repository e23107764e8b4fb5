"""node oidc-provider as a second, independent token server: mutual-TLS client authentication
and certificate-bound tokens (RFC 8705), DPoP-bound tokens (RFC 9449), client_credentials.

Not a test module (leading underscore); tests import it by name. ``oidc_provider(clients)``
starts ``tests/peers/oidc-provider/server.mjs`` on 127.0.0.1 over https (a CA of its own, the
server certificate covering 127.0.0.1 and localhost) and yields an :class:`OidcProvider`::

    with oidc_provider([self_signed_client("svc", cert)]) as peer:
        context = peer.ssl_context(cert_file, key_file)
        httpx.post(peer.mtls_token_endpoint, data={...}, verify=context)

Access tokens are RS256 JWTs for :data:`RESOURCE` (audience) with the scope :data:`SCOPE`,
signed with a key made for the run (``peer.jwks_uri``). A request without ``resource`` gets a
token for that resource too. Start one per test module: node takes about half a second.

``scripts/ensure-node-peers`` (run by ``scripts/test``) installs the peer from its lock file.
Without node or the installed peer the tests that need it are skipped, except with ``CI=true``,
where that is a failure: CI must never pass by skipping its only independent mTLS/DPoP server.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from certauth.certificates import Certificate, build_certificate
from certauth.emulator.tls import generate_tls_files

PEER_DIR = Path(__file__).resolve().parents[1] / "peers" / "oidc-provider"
#: The one resource (RFC 8707) the peer issues tokens for: their ``aud``.
RESOURCE = "https://api.example.test/"
#: The scopes that resource has.
SCOPE = "api:read"
#: How long node may take to start (it is usually well under a second).
START_TIMEOUT = 20.0


# -- is the peer there? ----------------------------------------------------------------------------


def missing_reason() -> str | None:
    """Why the peer cannot run here, or ``None`` when node and the installed peer are there."""
    if shutil.which("node") is None:
        return "node is not installed (the oidc-provider test peer needs node 20+ and npm)"
    if not (PEER_DIR / "node_modules" / "oidc-provider" / "package.json").is_file():
        return (
            "the oidc-provider test peer is not installed (scripts/ensure-node-peers installs it)"
        )
    return None


def require_peer() -> None:
    """Skip the test when the peer cannot run; with ``CI=true`` fail it instead."""
    reason = missing_reason()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI=true runs every peer test, so this is a failure")
    pytest.skip(reason)


# -- clients (oidc-provider's client metadata, RFC 7591 names) -------------------------------------


def public_jwk(certificate: Certificate) -> dict[str, Any]:
    """The certificate's public key as a JWK, with the certificate as ``x5c``."""
    key = certificate.public_key
    if isinstance(key, rsa.RSAPublicKey):
        jwk: dict[str, Any] = jwt.algorithms.RSAAlgorithm.to_jwk(key, as_dict=True)
    else:
        jwk = jwt.algorithms.ECAlgorithm.to_jwk(key, as_dict=True)
    jwk["x5c"] = [base64.b64encode(certificate.der).decode("ascii")]
    return jwk


def self_signed_client(
    client_id: str,
    certificate: Certificate,
    *,
    certificate_bound: bool = True,
    dpop_bound: bool = False,
) -> dict[str, Any]:
    """``self_signed_tls_client_auth`` (RFC 8705 section 2.2): the certificate is registered in
    the client's JWKS. ``certificate_bound``: its tokens carry ``cnf["x5t#S256"]``;
    ``dpop_bound``: a request without a DPoP proof is refused."""
    return {
        "client_id": client_id,
        "token_endpoint_auth_method": "self_signed_tls_client_auth",
        "jwks": {"keys": [public_jwk(certificate)]},
        "tls_client_certificate_bound_access_tokens": certificate_bound,
        "dpop_bound_access_tokens": dpop_bound,
    }


def tls_client(
    client_id: str,
    subject_dn: str,
    *,
    certificate_bound: bool = True,
    dpop_bound: bool = False,
) -> dict[str, Any]:
    """``tls_client_auth`` (RFC 8705 section 2.1): a certificate from a CA in
    ``client_ca_files`` whose subject is ``subject_dn`` (RFC 4514, e.g. ``CN=svc,O=Contoso``)."""
    return {
        "client_id": client_id,
        "token_endpoint_auth_method": "tls_client_auth",
        "tls_client_auth_subject_dn": subject_dn,
        "tls_client_certificate_bound_access_tokens": certificate_bound,
        "dpop_bound_access_tokens": dpop_bound,
    }


def private_key_jwt_client(
    client_id: str, certificate: Certificate, *, dpop_bound: bool = False
) -> dict[str, Any]:
    """``private_key_jwt`` (RFC 7523): a client assertion signed with the certificate's key."""
    return {
        "client_id": client_id,
        "token_endpoint_auth_method": "private_key_jwt",
        "jwks": {"keys": [public_jwk(certificate)]},
        "dpop_bound_access_tokens": dpop_bound,
    }


# -- the running peer ------------------------------------------------------------------------------


@dataclass(frozen=True)
class OidcProvider:
    """A running oidc-provider: where it is and what it trusts."""

    #: ``https://127.0.0.1:PORT``.
    issuer: str
    #: The CA that issued the server certificate (trust it, and only it, to reach the peer).
    ca_file: Path
    #: ``{issuer}/token``.
    token_endpoint: str
    #: ``mtls_endpoint_aliases.token_endpoint`` from discovery (``https://localhost:PORT/token``):
    #: the same server under the other name its certificate covers; RFC 8705 section 5 has
    #: mutual-TLS clients use it. The token endpoint if discovery had no alias.
    mtls_token_endpoint: str
    jwks_uri: str
    #: The resource indicator tokens are issued for (their audience).
    resource: str
    #: The scopes that resource has.
    scope: str
    #: The discovery document as served.
    discovery: Mapping[str, Any]
    #: Where node's output goes: oidc-provider's notices, ``grant.success: CLIENT_ID at URL``
    #: for each token issued and ``grant.error: ERROR: DESCRIPTION (DETAIL)`` for each refusal.
    log_file: Path

    def ssl_context(
        self,
        cert_file: str | os.PathLike[str] | None = None,
        key_file: str | os.PathLike[str] | None = None,
    ) -> ssl.SSLContext:
        """A client context trusting :attr:`ca_file` only, presenting ``cert_file`` (PEM:
        the certificate, then any intermediates) with ``key_file`` when given."""
        context = ssl.create_default_context(cafile=os.fspath(self.ca_file))
        if cert_file is not None:
            context.load_cert_chain(cert_file, key_file)
        return context

    def log(self) -> str:
        """What node printed so far."""
        return self.log_file.read_text(errors="replace")

    def verified_claims(self, access_token: str) -> dict[str, Any]:
        """The token's claims once PyJWT has checked it against the peer's JWKS (fetched now):
        the RS256 signature, ``iss``, ``aud`` (:attr:`resource`) and ``exp``."""
        response = httpx.get(self.jwks_uri, verify=self.ssl_context(), timeout=10)
        response.raise_for_status()
        kid = jwt.get_unverified_header(access_token)["kid"]
        key = jwt.PyJWKSet.from_dict(response.json())[kid]
        claims: dict[str, Any] = jwt.decode(
            access_token,
            key.key,
            algorithms=["RS256"],
            audience=self.resource,
            issuer=self.issuer,
            options={"require": ["exp", "iat", "iss", "aud"]},
        )
        return claims


@contextlib.contextmanager
def oidc_provider(
    clients: Iterable[Mapping[str, Any]],
    *,
    client_ca_files: Iterable[str | os.PathLike[str]] = (),
    dpop_nonce: bool | Collection[str] = False,
    directory: str | os.PathLike[str] | None = None,
) -> Iterator[OidcProvider]:
    """Start the peer with ``clients`` (see :func:`self_signed_client`, :func:`tls_client`,
    :func:`private_key_jwt_client`, or any oidc-provider client metadata), stop it on exit.

    ``client_ca_files``: the CAs whose certificates ``tls_client_auth`` accepts (PEM).
    ``dpop_nonce``: ``True`` requires a server nonce in every DPoP proof (RFC 9449 section 8);
    a collection of client ids requires it from those clients only, so one server serves both.
    ``directory``: where the configuration, TLS files and log go (a temporary one by default).
    Skips the test (fails it with ``CI=true``) when node or the installed peer is missing.
    """
    require_peer()
    with contextlib.ExitStack() as stack:
        if directory is None:
            directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="oidc-provider-"))
        folder = Path(directory)
        tls = generate_tls_files(folder / "tls", now=dt.datetime.now(dt.timezone.utc))
        ready_file = folder / "ready.json"
        config = {
            "port": 0,
            "server_cert_file": str(tls.cert_file),
            "server_key_file": str(tls.key_file),
            "client_ca_files": [os.fspath(path) for path in client_ca_files],
            "clients": [dict(client) for client in clients],
            "resource": RESOURCE,
            "scope": SCOPE,
            "dpop_nonce": dpop_nonce if isinstance(dpop_nonce, bool) else sorted(dpop_nonce),
            "ready_file": str(ready_file),
        }
        config_file = folder / "config.json"
        config_file.write_text(json.dumps(config, indent=2), encoding="utf-8")
        log_file = folder / "node.log"
        node = shutil.which("node")
        assert node is not None  # require_peer checked
        with open(log_file, "wb") as log:
            # stdin stays open and unused: the server exits when it closes, so a test process
            # that dies leaves no node behind.
            process = subprocess.Popen(
                [node, "server.mjs", str(config_file)],
                cwd=PEER_DIR,
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        stack.callback(_stop, process)
        ready = _wait_until_ready(process, ready_file, log_file)
        peer = _describe(ready["issuer"], tls.ca_file, log_file)
        yield peer


def _wait_until_ready(
    process: subprocess.Popen[bytes], ready_file: Path, log_file: Path
) -> dict[str, Any]:
    deadline = time.monotonic() + START_TIMEOUT
    while not ready_file.exists():
        if process.poll() is not None:
            raise RuntimeError(
                f"oidc-provider exited with status {process.returncode} before it was ready; "
                f"its output:\n{log_file.read_text(errors='replace')}"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"oidc-provider was not ready within {START_TIMEOUT:.0f} s; its output:\n"
                f"{log_file.read_text(errors='replace')}"
            )
        time.sleep(0.02)
    ready: dict[str, Any] = json.loads(ready_file.read_text(encoding="utf-8"))
    return ready


def _describe(issuer: str, ca_file: Path, log_file: Path) -> OidcProvider:
    """Read the discovery document, as a client would, for the endpoints."""
    context = ssl.create_default_context(cafile=os.fspath(ca_file))
    response = httpx.get(f"{issuer}/.well-known/openid-configuration", verify=context, timeout=10)
    response.raise_for_status()
    discovery = response.json()
    aliases = discovery.get("mtls_endpoint_aliases") or {}
    return OidcProvider(
        issuer=discovery["issuer"],
        ca_file=ca_file,
        token_endpoint=discovery["token_endpoint"],
        mtls_token_endpoint=aliases.get("token_endpoint", discovery["token_endpoint"]),
        jwks_uri=discovery["jwks_uri"],
        resource=RESOURCE,
        scope=SCOPE,
        discovery=discovery,
        log_file=log_file,
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
    if process.stdin is not None:
        process.stdin.close()


# -- helpers for the tests -------------------------------------------------------------------------


def write_client_files(
    directory: Path, name: str, certificate: Certificate, *chain: Certificate
) -> tuple[Path, Path]:
    """``NAME.pem`` (the certificate, then ``chain``) and ``NAME.key`` (0600) for
    ``ssl_context``/``load_cert_chain``."""
    cert_file = directory / f"{name}.pem"
    cert_file.write_bytes(certificate.pem + b"".join(issuer.pem for issuer in chain))
    key_file = directory / f"{name}.key"
    key_file.touch(mode=0o600)
    key_file.write_bytes(certificate.private_key_pem())
    return cert_file, key_file


def ca_issued(subject: str, issuer: Certificate | None, *, ca: bool, days: int = 30) -> Certificate:
    """A CA (``ca=True``) or a client certificate, issued by ``issuer`` (self-signed without)."""
    now = dt.datetime.now(dt.timezone.utc)
    return build_certificate(
        subject,
        ec.generate_private_key(ec.SECP256R1()),
        not_before=now - dt.timedelta(hours=1),
        not_after=now + dt.timedelta(days=days),
        issuer=issuer,
        ca=ca,
        path_length=None,
        key_usage=["key_cert_sign", "crl_sign"] if ca else ["digital_signature"],
        extended_key_usage=[] if ca else [ExtendedKeyUsageOID.CLIENT_AUTH],
        key_identifiers=True,
    )
