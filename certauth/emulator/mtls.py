"""The emulator's mutual-TLS listener (RFC 8705): a second https listener on the same host, with
the same server certificate and routes, that asks for a client certificate.

What its handshake trusts (``ssl.CERT_OPTIONAL``: a client without a certificate still
connects, and may authenticate with an assertion or a secret):

- every certificate registered for any app, each its own trust anchor, for
  ``self_signed_tls_client_auth`` (section 2.2); certificates registered while it runs
  (``Emulator.register``, Graph's addKey) are added to the context's verify store, which every
  new handshake reads;
- the client CA files (``client_ca=``, ``--client-ca``), for ``tls_client_auth`` (section 2.1).

A certificate that is neither is refused by the handshake itself (TLS alert ``unknown_ca``):
Python's :mod:`ssl` has no verify callback that could let it through to a token endpoint
error. A certificate removed through Graph stays in the store (OpenSSL cannot take one out);
the token endpoint refuses it. Whose certificate it is, and the binding of the tokens issued
here, are decided by :mod:`certauth.emulator.mtls_checks` and the token endpoint.

A request is handed to the emulator's routes with ``base_url`` naming the main listener on the
host the client used (tokens carry the tenant's issuer, discovery lists the tenant's endpoints)
and ``mtls_base_url`` the address it came to (what an assertion's ``aud`` and a DPoP ``htu``
name).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import ssl
import threading
from collections.abc import Callable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certauth.certificates import Certificate
from certauth.emulator.discovery import with_port
from certauth.emulator.registry import Registry
from certauth.emulator.server import (
    EmulatorHTTPServer,
    HttpRequest,
    HttpResponse,
    ServerLimits,
)
from certauth.emulator.tls import TlsFiles, server_context
from certauth.errors import InputFileError

__all__ = ["ClientCAs", "MtlsListener"]

log = logging.getLogger("certauth.emulator")


@dataclasses.dataclass(frozen=True)
class ClientCAs:
    """The client CA certificates of ``tls_client_auth`` (RFC 8705 section 2.1), read once."""

    certificates: tuple[x509.Certificate, ...] = ()

    @classmethod
    def load(cls, paths: Sequence[str | os.PathLike[str]]) -> ClientCAs:
        """Read PEM files of CA certificates; :class:`InputFileError` for a file that cannot be
        read or holds no certificate."""
        from certauth._files import read_input_file

        found: list[x509.Certificate] = []
        for path in paths:
            name = os.fspath(path)
            data = read_input_file(name, what="client CA certificate", error=InputFileError)
            try:
                certificates = x509.load_pem_x509_certificates(data)
            except ValueError:
                raise InputFileError(
                    f"{name}: no PEM certificate in it; give the client CA's certificate as PEM "
                    "(-----BEGIN CERTIFICATE-----)",
                    path=name,
                ) from None
            found.extend(certificates)
        return cls(tuple(found))

    @property
    def anchors(self) -> frozenset[bytes]:
        """SHA-256 of each certificate's DER: a verified chain ending in one was issued
        through a client CA."""
        return frozenset(
            hashlib.sha256(c.public_bytes(serialization.Encoding.DER)).digest()
            for c in self.certificates
        )

    @property
    def pem(self) -> str:
        """Every certificate as PEM, for the TLS context's verify store."""
        return "".join(
            c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in self.certificates
        )


class MtlsListener:
    """The mutual-TLS listener of one emulator: its TLS context, trust store and server.

    ``handle`` is the emulator's request callback; ``main_port`` the main listener's port.
    Trusts each certificate ``registry`` announces while it runs.
    """

    def __init__(
        self,
        *,
        registry: Registry,
        client_cas: ClientCAs,
        handle: Callable[[HttpRequest], HttpResponse],
        main_port: Callable[[], int],
    ) -> None:
        self._registry = registry
        self._client_cas = client_cas
        self._handle = handle
        self._main_port = main_port
        self._lock = threading.Lock()
        self._context: ssl.SSLContext | None = None
        self._trusted: set[bytes] = set()
        self._server: EmulatorHTTPServer | None = None
        self._thread: threading.Thread | None = None
        registry.on_certificate_added(self._trust)

    @property
    def port(self) -> int | None:
        """The bound port (``None`` while stopped)."""
        server = self._server
        return server.port if server is not None else None

    @property
    def base_url(self) -> str | None:
        """``https://host:port`` of the bound address (``None`` while stopped)."""
        server = self._server
        return server.default_base_url if server is not None else None

    def start(self, host: str, files: TlsFiles, limits: ServerLimits) -> None:
        """Bind a free port on ``host`` and serve, with ``files``' server certificate."""
        context = server_context(files)
        # RFC 8705 section 2: the server requests a certificate; a client may send none.
        context.verify_mode = ssl.CERT_OPTIONAL
        if self._client_cas.certificates:
            context.load_verify_locations(cadata=self._client_cas.pem)
        with self._lock:
            self._context = context
            self._trusted = set()
        for certificate in self._registry.certificates():
            self._trust(certificate)
        server = EmulatorHTTPServer(
            (host, 0), self._route, scheme="https", tls=context, limits=limits
        )
        self._server = server
        self._thread = server.serve_in_thread(f"certauth-emulator-mtls-{server.port}")
        log.info("mutual-TLS listener on %s", server.default_base_url)

    def stop(self) -> None:
        """Stop serving and close connections (idempotent)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        with self._lock:
            self._context = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def _trust(self, certificate: Certificate) -> None:
        # RFC 8705 section 2.2: a registered certificate is trusted as itself; the store
        # OpenSSL reads at each handshake takes it at once.
        digest = hashlib.sha256(certificate.der).digest()
        with self._lock:
            if self._context is None or digest in self._trusted:
                return
            self._context.load_verify_locations(cadata=certificate.pem.decode("ascii"))
            self._trusted.add(digest)

    def _route(self, request: HttpRequest) -> HttpResponse:
        addressed = request.base_url
        main = with_port(addressed, self._main_port())
        return self._handle(dataclasses.replace(request, base_url=main, mtls_base_url=addressed))
