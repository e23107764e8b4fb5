"""Mutual-TLS client authentication (RFC 8705 section 2): the client proves who it is with the
certificate it presents in the TLS handshake, not with an assertion.

The token request carries ``client_id`` and no credential field; the server matches the TLS
client certificate against the client's registration, either by its subject (``tls_client_auth``,
a CA-issued certificate, section 2.1) or as a registered self-signed certificate
(``self_signed_tls_client_auth``, section 2.2). The request is the same for both: which one
applies is the server's registration, not the client's choice. Tokens issued this way are
certificate-bound (section 3: ``cnf`` ``x5t#S256``), so the API calls that use them must present
the same certificate: :attr:`MtlsAuth.tls_context` is the TLS context to send them with.

Python's ``ssl`` module signs the handshake with a key it holds in memory: a key in an HSM or a
vault (a :class:`~certauth.signers.Signer`) cannot take part, so mutual TLS needs a key file.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from certauth._flow import Budget, Flow
from certauth.assertion import DEFAULT_LIFETIME, AssertionSigner
from certauth.credential.client_auth import CertificateAuth, CertificateFiles, _Signing
from certauth.errors import ConfigurationError
from certauth.protocol import RetryPolicy
from certauth.signers import Signer

if TYPE_CHECKING:
    import ssl

    from certauth.authority import Authority
    from certauth.certificates import Certificate

#: RFC 8705 section 2.1.1 and 2.2.1: the two client authentication methods' registered names.
TLS_METHODS = ("tls_client_auth", "self_signed_tls_client_auth")


class MtlsAuth(CertificateAuth):
    """A certificate presented in the TLS handshake of every token request (RFC 8705
    section 2), reloaded like :class:`CertificateAuth`'s when its files change."""

    method = "self_signed_tls_client_auth"
    mtls = True

    def __init__(
        self,
        certificate: Certificate,
        *,
        verify: Any,
        reload_from: CertificateFiles | None = None,
    ) -> None:
        from certauth import _http

        #: The TLS context that presents the certificate, for the API calls of other clients
        #: (``credential.ssl_context``): a rotation loads the new certificate into it.
        self.tls_context: ssl.SSLContext = _http.client_certificate_context(verify, certificate)
        self._verify = verify
        self._pool: tuple[Certificate, ssl.SSLContext] | None = None
        self._pool_lock = threading.Lock()
        super().__init__(
            certificate,
            alg=None,
            lifetime=DEFAULT_LIFETIME,
            send_chain=False,
            reload_from=reload_from,
        )

    def pool_context(self) -> ssl.SSLContext:
        """A TLS context of its own for the certificate in use now: the one certauth's
        connection pools open connections with, a new one per certificate (so a rotation
        starts new pools, see :mod:`certauth._rotating_transport`). They never use
        :attr:`tls_context`, which a rotation changes in place: OpenSSL does not allow that
        while other threads are creating connections from it."""
        certificate = self.certificate
        pool = self._pool
        if pool is None or pool[0] is not certificate:
            with self._pool_lock:
                pool = self._pool
                if pool is None or pool[0] is not certificate:
                    from certauth import _http

                    context = _http.client_certificate_context(self._verify, certificate)
                    pool = self._pool = (certificate, context)
        return pool[1]

    def _publish(self, signing: _Signing) -> None:
        current = getattr(self, "_signing", None)
        if current is not None and current.certificate.der != signing.certificate.der:
            from certauth import _http

            # Other clients' new connections present the rotated certificate (certauth's own
            # pools take a new context: pool_context).
            _http.load_client_certificate(self.tls_context, signing.certificate)
        super()._publish(signing)
        self.fingerprint = "mtls:" + self.fingerprint

    def _checked(self, key: Signer, authority: Authority) -> _Signing:
        current = self._signing.certificate
        if key.certificate.key_type != current.key_type:
            # A TLS context holds one certificate per key type: loading an EC certificate
            # next to an RSA one would leave the handshake free to present either.
            raise ConfigurationError(
                f"the new certificate's key is {key.certificate.key_type}, the current one's "
                f"{current.key_type}: mutual TLS cannot switch key types while running; restart "
                "the service to use it"
            )
        # No assertion is signed; the signer is kept for its validity check on reload.
        signer = AssertionSigner(signer=key, client_id=self._client_id, alg=None)
        return _Signing(key, signer, None)

    def bind(self, client_id: str, authority: Authority) -> None:
        if urlsplit(authority.token_endpoint).scheme != "https":
            raise ConfigurationError(
                f"{authority.token_endpoint}: mutual TLS needs an https token endpoint"
            )
        if authority.auth_methods and not set(TLS_METHODS) & set(authority.auth_methods):
            raise ConfigurationError(
                f"the server at {authority.token_endpoint} does not accept mutual-TLS client "
                f"authentication (its discovery document lists "
                f"{', '.join(authority.auth_methods)}); drop mtls=True"
            )
        self._client_id = client_id
        self._authority = authority
        self._publish(self._checked(self._signing.key, authority))

    def prove(self) -> None:
        return None  # a key file: nothing to prove

    def credential_fields(self, audience: str, now: float) -> dict[str, str]:
        # RFC 8705 section 2: client_id (added by the request builder) and no credential.
        return {}

    def credential_flow(
        self, audience: str, now: float, *, retry: RetryPolicy, budget: Budget
    ) -> Flow[dict[str, str]]:
        return {}
        yield  # a generator: nothing to wait for
