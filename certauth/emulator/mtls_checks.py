"""Mutual-TLS client authentication on the emulator's token endpoint (RFC 8705 section 2), as
pure functions: the request on the mutual-TLS listener and the certificate its client
presented in, the method that authenticated it (or an :class:`OAuthError`) out.

- ``self_signed_tls_client_auth`` (section 2.2): the certificate is one the app registered
  (``Emulator.register(client_id, cert)``), matched by SHA-256 of its DER, whoever issued it.
- ``tls_client_auth`` (section 2.1): the app registered a subject DN
  (``register(..., tls_client_auth_subject_dn=...)``); the handshake verified the certificate
  through a client CA (``client_ca=``) and its subject is that DN.

Only a request with neither ``client_assertion`` nor ``client_secret`` comes here: those
authenticate as they do on the main listener (binding does not depend on the method, section
3), and :mod:`certauth.emulator.token_endpoint` binds every token issued on this listener to
the presented certificate (``cnf.x5t#S256``, section 3.1).

The handshake already refused a certificate that is neither registered (each is its own trust
anchor) nor issued by a client CA; what is left to check here is whose certificate it is.
"""

from __future__ import annotations

from certauth.emulator.entra_errors import OAuthError
from certauth.emulator.registry import App, normalize_subject_dn
from certauth.emulator.requests import PeerCertificate
from certauth.emulator.tokens import AuthMethod

__all__ = ["authenticate_tls_client"]


def authenticate_tls_client(
    peer: PeerCertificate | None, app: App, *, now: float
) -> tuple[AuthMethod, str]:
    """Which RFC 8705 method ``peer`` authenticates ``app`` by, and its ``x5t#S256``.

    Raises :class:`OAuthError` ``invalid_client`` (HTTP 401, RFC 6749 section 5.2) when no
    certificate was presented or it is not the app's.
    """
    if peer is None:
        raise OAuthError(
            "invalid_client",
            "No client certificate was presented on the mutual-TLS token endpoint, and the "
            "request has neither client_assertion nor client_secret: send the app's "
            "certificate in the TLS handshake (RFC 8705 section 2) or authenticate with an "
            "assertion or a secret.",
            status=401,
        )
    registered = app.find_certificate(sha256=peer.sha256, accepted_at=now)
    if registered is not None:
        # Section 2.2: the registered certificate itself; validity on the emulator's clock,
        # as for an assertion's certificate.
        if not registered.not_before.timestamp() <= now <= registered.not_after.timestamp():
            raise OAuthError(
                "invalid_client",
                f"The client certificate with thumbprint '{peer.sha1_hex}' is outside its "
                f"validity period ({registered.not_before:%Y-%m-%d %H:%M:%SZ} to "
                f"{registered.not_after:%Y-%m-%d %H:%M:%SZ}); register a current one.",
                status=401,
            )
        return "self_signed_tls_client_auth", peer.x5t_s256
    subject = normalize_subject_dn(peer.certificate.subject)
    wanted = app.tls_client_auth_subject_dn
    if wanted is not None and subject == wanted:
        # Section 2.1: the subject counts only for a certificate a client CA issued. A
        # registered certificate is trusted by the handshake as itself; if it is a CA, what
        # it issues must not pass as another app's tls_client_auth certificate.
        if peer.via_client_ca is None:
            raise OAuthError(
                "invalid_client",
                "The TLS session does not say which CA verified the client certificate (a "
                "resumed session keeps no verified chain); open a new connection.",
                status=401,
            )
        if not peer.via_client_ca:
            raise OAuthError(
                "invalid_client",
                f"The client certificate (thumbprint '{peer.sha1_hex}') has app "
                f"'{app.client_id}''s tls_client_auth subject but was not issued through a "
                "client CA (--client-ca); a registered certificate is trusted only as itself.",
                status=401,
            )
        return "tls_client_auth", peer.x5t_s256
    if wanted is not None:
        shown = peer.certificate.subject.rfc4514_string()[:200]
        why = f"and its subject '{shown}' is not the app's tls_client_auth subject '{wanted}'"
    else:
        why = "and the app has no tls_client_auth subject (--register-tls-client)"
    raise OAuthError(
        "invalid_client",
        f"The client certificate presented (thumbprint '{peer.sha1_hex}', x5t#S256 "
        f"'{peer.x5t_s256}') is not registered for app '{app.client_id}': it is none of the "
        f"app's certificates (self_signed_tls_client_auth, RFC 8705 section 2.2) {why} "
        "(tls_client_auth, section 2.1).",
        status=401,
    )
