"""Signers: a private key that signs client assertions without being held by certauth.

A certificate's private key is usually a file; security teams want it in an HSM, a TPM-backed
PKCS#11 token or Azure Key Vault, where it can sign but never be read. certauth signs one small
JWT per token request, so a hardware or remote signature fits: every credential and
:func:`certauth.build_client_assertion` take ``signer=`` in place of a key, and the key file is
one signer among others (:class:`KeyFileSigner`), so there is one assertion path.

A signer is anything with the attributes and method of :class:`Signer` (a
:class:`typing.Protocol`: no base class to inherit). Remote backends may also offer
:meth:`AsyncSigner.sign_async`; the async credentials use it when present, and otherwise run
:meth:`Signer.sign` in a worker thread so the event loop never blocks.

The rules every signer obeys:

* :attr:`Signer.certificate` is the public certificate (and chain) the key belongs to: it gives
  the thumbprints (``x5t``, ``x5t#S256``), ``x5c`` and the key type and size, and never holds a
  private key.
* :meth:`Signer.sign` returns the JWS signature of ``data`` for ``alg`` (RFC 7518 section 3):
  ``RS256`` RSASSA-PKCS1-v1_5 with SHA-256, ``PS256`` RSASSA-PSS with SHA-256, MGF1 SHA-256 and
  a 32-byte salt, ``ES256`` the raw 64-byte ``r || s`` over P-256 with SHA-256 (not DER).
* A signer that cannot sign raises :class:`certauth.errors.SignerError` naming the backend and
  the fix (:attr:`SignerError.transient` when a retry may help: a throttled or unreachable
  vault), never a PIN, a vault token or key material.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from certauth.errors import CertificateError

if TYPE_CHECKING:
    # Annotations only: importing this package (for the pkcs11: URI check, say) loads no
    # certificate code and no cryptography.
    from certauth.certificates import Certificate

__all__ = ["AsyncSigner", "KeyFileSigner", "KeyVaultSigner", "Pkcs11Signer", "Signer"]


def is_pkcs11_uri(value: object) -> bool:
    """Whether ``value`` is a string written as a ``pkcs11:`` URI (RFC 7512; the scheme is
    case-insensitive, RFC 3986 section 3.1); a file path never starts so. Here, not beside the
    URI parser (``_pkcs11_uri``): every command and credential that takes a key asks, and
    asking must not load the parser."""
    return isinstance(value, str) and value[:7].lower() == "pkcs11:"


#: The backends, imported when first named (each pulls its own dependencies in).
_BACKENDS = {
    "Pkcs11Signer": "certauth.signers.pkcs11",
    "KeyVaultSigner": "certauth.signers.keyvault",
}


def __getattr__(name: str) -> object:
    """``from certauth.signers import Pkcs11Signer`` (or ``KeyVaultSigner``), imported lazily."""
    if name in _BACKENDS:
        import importlib

        return getattr(importlib.import_module(_BACKENDS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@runtime_checkable
class Signer(Protocol):
    """A private key that signs for a certificate (see the module docstring for the rules)."""

    @property
    def certificate(self) -> Certificate:
        """The public certificate (and chain) the key belongs to; it holds no private key."""
        ...

    @property
    def description(self) -> str:
        """Where the key lives, for messages and logs (``pkcs11:token=...;object=...``, a Key
        Vault key URL, a file path); never a secret."""
        ...

    def sign(self, data: bytes, alg: str) -> bytes:
        """The JWS signature of ``data`` with ``alg`` (``RS256``, ``PS256`` or ``ES256``)."""
        ...


@runtime_checkable
class AsyncSigner(Signer, Protocol):
    """A signer whose backend is remote also signs without blocking an event loop."""

    async def sign_async(self, data: bytes, alg: str) -> bytes:
        """:meth:`Signer.sign`, awaitable."""
        ...


class KeyFileSigner:
    """The private key loaded with the certificate (a PEM, DER or PFX file, or bytes): the
    ordinary case, as a :class:`Signer`."""

    def __init__(self, certificate: Certificate) -> None:
        key = certificate.private_key
        if key is None:
            raise CertificateError(
                f"{certificate.source or 'certificate'}: no private key to sign with; give the "
                "key file with key_path=, or a signer=",
                path=certificate.source,
            )
        # Here, not at the top: the package is imported for the pkcs11: URI check too.
        from certauth._jose import sign

        self._sign = sign
        self._key = key
        self._certificate = certificate

    @property
    def certificate(self) -> Certificate:
        """The certificate, as loaded (its private key stays with this signer)."""
        return self._certificate

    @property
    def description(self) -> str:
        """The file the key came from."""
        return self._certificate.source or "private key in memory"

    def sign(self, data: bytes, alg: str) -> bytes:
        """Sign in process with the loaded key."""
        return self._sign(self._key, alg, data)

    def __repr__(self) -> str:
        return f"KeyFileSigner({self.description!r})"
