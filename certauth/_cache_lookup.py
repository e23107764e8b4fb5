"""A token the file cache holds for a certificate file, found before a credential is built.

``certauth token`` runs once per CI step and usually finds its token in the file cache. The
credential that would serve it parses the certificate (importing cryptography.x509 alone costs
~25 ms) and loads the credential machinery, most of which only a request needs. This module
reads the entry the credential would read, with the credential's rules, and nothing else:

* the authority, scopes and key checks are the credential's own functions
  (:func:`~certauth.authority.resolve_authority`, :func:`~certauth.protocol.normalize_scopes`,
  the assertion signer's :func:`~certauth._key_rules.check_key` /
  :func:`~certauth._key_rules.check_key_for`), and the
  key file is read and its key loaded and checked as loading a certificate does
  (:func:`~certauth._keyfiles.peek_pem_files`);
* the certificate is not parsed: the entry proves it. Its name holds the SHA-256 of the
  certificate's DER (``x5t#S256``) and it is sealed with a key derived from the private key
  (:class:`~certauth.cache.EntryCipher`), so an entry that opens was written by a credential
  that had loaded exactly this certificate with exactly this key and found them matching,
  well-formed and acceptable. Whatever else the credential checks depends on the settings (the
  authority, ``alg``) and is checked here again.

Anything unusual (another file format, a chain, a setting that would be refused, a corrupt or
stale entry) gives ``None``: the credential is then built as before and decides, with its own
messages.
"""

from __future__ import annotations

import hashlib
import time

from certauth._renewal import (
    DEFAULT_REFRESH_MARGIN,
    cache_key,
    certificate_fingerprint,
    refresh_at,
)
from certauth.cache import EntryCipher, FileTokenCache
from certauth.errors import CertauthError
from certauth.protocol import Token

__all__ = ["REFRESH_MARGIN", "entry_key", "refresh_at", "stored_token"]

#: The credentials' default ``refresh_margin``, which ``certauth token`` uses.
REFRESH_MARGIN = DEFAULT_REFRESH_MARGIN


def entry_key(token_endpoint: str, client_id: str, x5t_s256: str, scopes: tuple[str, ...]) -> str:
    """The cache key a certificate credential stores its token under for normalised
    ``scopes`` (the planner's rule, :func:`certauth._renewal.cache_key`)."""
    return cache_key(token_endpoint, client_id, certificate_fingerprint(x5t_s256), scopes)


def stored_token(
    cache: FileTokenCache,
    *,
    tenant: str | None,
    client_id: str,
    cert_path: str,
    key_path: str | None,
    password: str | None,
    host: str | None,
    token_endpoint: str | None,
    issuer: str | None,
    b2c_policy: str | None,
    alg: str | None,
    scopes: tuple[str, ...],
    now: float | None = None,
) -> Token | None:
    """The token ``CertificateCredential(tenant, client_id, cert_path, key_path=key_path,
    password=password, authority=host, token_endpoint=..., issuer=..., b2c_policy=...,
    alg=alg, cache=cache).request_token(*scopes)`` would take from ``cache`` without a
    request, or ``None`` when that is not certain (see the module docstring)."""
    from certauth._jose import b64url_encode
    from certauth._key_rules import check_key, check_key_for
    from certauth._keyfiles import peek_pem_files
    from certauth.authority import resolve_authority
    from certauth.protocol import normalize_scopes

    try:
        authority = resolve_authority(
            tenant,
            host=host,
            b2c_policy=b2c_policy,
            token_endpoint=token_endpoint,
            issuer=issuer,
        )
        if authority is None:
            return None  # an issuer's token endpoint comes from its discovery document
        files = peek_pem_files(cert_path, key=key_path, password=password)
        if files is None:
            return None
        der, private_key = files
        public_key = private_key.public_key()
        check_key(public_key, alg, where=cert_path, path=cert_path)
        check_key_for(authority, public_key, alg, where=cert_path, path=cert_path)
        normalized = normalize_scopes(scopes, entra=authority.is_entra)
        x5t_s256 = b64url_encode(hashlib.sha256(der).digest())  # as Certificate.x5t_s256
        name = entry_key(authority.token_endpoint, client_id, x5t_s256, normalized)
        blob = cache.get(name)
    except CertauthError:
        return None  # the credential raises it, after what it checks first
    if blob is None:
        return None
    token = EntryCipher.from_private_key(private_key).open(name, blob)
    if token is None or (time.time() if now is None else now) >= refresh_at(token):
        return None
    return token
