"""Client assertions: the signed JWT a client presents instead of a secret (RFC 7523 section 3).

Entra ID's certificate-credential rules on top of RFC 7523 ("Microsoft identity platform
application authentication certificate credentials",
https://learn.microsoft.com/entra/identity-platform/certificate-credentials): ``aud`` is exactly
the token endpoint URL, ``iss`` = ``sub`` = client id, ``exp`` required, and the header carries
the certificate thumbprint: ``x5t#S256`` with PS256, ``x5t`` (SHA-1) with RS256.

The signature itself comes from a :class:`~certauth.signers.Signer`: a key file's key in process
(:class:`~certauth.signers.KeyFileSigner`), or a key in an HSM or a vault that never leaves it.
Every rule here reads only the signer's certificate (its public key), so it holds for all of them.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import json
import os
import time
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.serialization import Encoding

from certauth import _jose
from certauth._jose import PublicKey, b64url_encode
from certauth._key_rules import METHOD, SUPPORTED_ALGS, check_alg, check_key, check_key_for
from certauth.certificates import Certificate
from certauth.errors import (
    CertificateError,
    InvalidArgumentError,
    KeyMismatchError,
    SignerError,
    UnsupportedKeyError,
)
from certauth.signers import KeyFileSigner, Signer

if TYPE_CHECKING:
    from certauth.authority import Authority

__all__ = [
    "DEFAULT_LIFETIME",
    "MAX_LIFETIME",
    "METHOD",
    "PROOF_MESSAGE",
    "SUPPORTED_ALGS",
    "AssertionSigner",
    "build_client_assertion",
    "check_entra_key",
    "check_key",
    "check_key_for",
]

#: Microsoft: "keep it 5-10 minutes"; certauth signs for 5 and refuses more than 10.
DEFAULT_LIFETIME = 300
MAX_LIFETIME = 600

#: What a signer signs once per algorithm, before its first assertion, to prove that its key
#: belongs to its certificate (verified with the certificate's public key: nothing is exported).
#: It is not a JWS signing input (RFC 7515 section 5.1: two base64url parts joined by "."), so
#: its signature can never pass for an assertion's.
PROOF_MESSAGE = b"certauth signer check: this key belongs to this certificate"


def check_entra_key(certificate: Certificate, where: str | None = None) -> None:
    """Refuse, before anything is sent, a key Entra ID would reject (with Entra's code);
    ``where`` names the key in the message (default: the certificate's file)."""
    problems = certificate.entra_problems()
    if problems:
        where = certificate.source or where or "certificate"
        raise UnsupportedKeyError(f"{where}: {problems[0]}", path=certificate.source)


def check_lifetime(lifetime: int, name: str = "lifetime") -> int:
    """Return ``lifetime`` if it is an assertion lifetime certauth signs (1 to 600 seconds),
    else raise :class:`InvalidArgumentError` naming the keyword ``name`` the caller used."""
    if isinstance(lifetime, bool) or not isinstance(lifetime, int) or not 0 < lifetime <= 600:
        raise InvalidArgumentError(
            f"{name}={lifetime!r} is outside 1-{MAX_LIFETIME} seconds; assertions are meant to "
            "live minutes (Microsoft recommends 5-10)"
        )
    return lifetime


def resolve_signer(certificate: Certificate | None, signer: object | None) -> Signer:
    """The signer for exactly one of a ``certificate`` with its private key (which becomes a
    :class:`~certauth.signers.KeyFileSigner`) or a ``signer`` (checked to be one)."""
    if (certificate is None) == (signer is None):
        raise InvalidArgumentError(
            "give exactly one of a certificate with its private key, or signer="
        )
    if certificate is not None:
        certificate.require_private_key()  # its message says how to supply the key
        return KeyFileSigner(certificate)
    return check_signer(signer)


def check_signer(signer: object) -> Signer:
    """``signer`` if it has what :class:`~certauth.signers.Signer` asks for, else an
    :class:`InvalidArgumentError` naming ``signer=``."""
    # runtime_checkable: the attributes exist (reading certificate and description, which a
    # signer makes cheap: they are needed for every message anyway).
    if not isinstance(signer, Signer) or not callable(signer.sign):
        raise InvalidArgumentError(
            f"signer={type(signer).__name__} is not a signer: it needs certificate, description "
            "and sign(data, alg) (see certauth.Signer)"
        )
    certificate = signer.certificate
    if not isinstance(certificate, Certificate):
        raise InvalidArgumentError(
            f"signer={signer.description!r}: its certificate is a "
            f"{type(certificate).__name__}, not a certauth Certificate; load the public "
            "certificate with load_certificate(path, load_key=False)"
        )
    return signer


class AssertionSigner:
    """Signs the client assertions of one client through one :class:`~certauth.signers.Signer`.

    Everything that does not change per request is checked once, here or in :meth:`check`
    (the key type and size, the algorithm, the lifetime, the client id, what the authority
    accepts), from the signer's certificate; a signer other than a key file also proves once
    per algorithm, with a test signature of :data:`PROOF_MESSAGE` verified with the
    certificate's public key, that its key belongs to the certificate (:meth:`prove`). Each
    :meth:`sign` then only checks the certificate's validity at ``now``, fills in the claims
    and signs. The encoded header is cached per algorithm. Used by the credentials and by
    ``certauth assertion``, so both apply the same rules.

    The credentials' flows sign in three steps so that the signature can be an I/O step
    (awaited, retried): :meth:`signing_input`, the signer's ``sign``, :meth:`assemble`.
    """

    def __init__(
        self,
        certificate: Certificate | None = None,
        *,
        signer: Signer | None = None,
        client_id: str,
        alg: str | None = None,
        lifetime: int = DEFAULT_LIFETIME,
        include_x5c: bool = False,
    ) -> None:
        self.signer = resolve_signer(certificate, signer)
        certificate = self.signer.certificate
        # Parsed once: the checks below and each signature's size check read it.
        self._public_key = public_key = certificate.public_key
        check_key(
            public_key,
            alg,
            where=certificate.source or self.signer.description,
            path=certificate.source,
        )
        check_lifetime(lifetime)
        if not client_id:
            raise InvalidArgumentError("client id is empty; give client_id=")
        self.certificate = certificate
        self.client_id = client_id
        #: The algorithm asked for (``None``: chosen per authority, see :meth:`check`).
        self.alg = alg
        self.lifetime = lifetime
        self.include_x5c = include_x5c
        self._headers: dict[str, str] = {}
        # A key file's key is in process and was matched to its certificate when loaded: no
        # test signature, no check of the signatures it makes (the hot path stays as it was).
        self.in_process = type(self.signer) is KeyFileSigner
        #: Algorithms the signer proved its key with (``None``: nothing to prove).
        self._proven: set[str] | None = None if self.in_process else set()

    def default_alg(self) -> str:
        """The algorithm :meth:`sign` uses when neither the caller nor an authority chose one:
        PS256 for RSA keys, ES256 for EC keys."""
        return self.alg or ("ES256" if self.certificate.key_type == "EC" else "PS256")

    def check(self, authority: Authority) -> str:
        """Refuse, before anything is sent, what ``authority`` is known to reject; return the
        algorithm to sign with for it (the one asked for, else the authority's default)."""
        certificate = self.certificate
        return check_key_for(
            authority,
            self._public_key,
            self.alg,
            where=certificate.source or self.signer.description or "certificate",
            path=certificate.source,
        )

    # the key's proof: once per algorithm, before the first assertion ---------------------------

    def proven(self, alg: str) -> bool:
        """Whether the signer's key is known to belong to the certificate for ``alg``."""
        return self._proven is None or alg in self._proven

    def prove(self, alg: str) -> None:
        """Have the signer sign :data:`PROOF_MESSAGE` with ``alg`` and check it (blocking;
        the credentials' flows do the same as an I/O step, see :meth:`accept_proof`)."""
        if not self.proven(alg):
            self.accept_proof(alg, self.signer.sign(PROOF_MESSAGE, alg))

    def accept_proof(self, alg: str, signature: bytes) -> None:
        """Check the signer's signature of :data:`PROOF_MESSAGE`: it must verify with the
        certificate's public key, else :class:`KeyMismatchError` (nothing is signed with a key
        the authority would refuse as not the registered certificate's: AADSTS700027)."""
        self._check_shape(alg, signature)
        if not _jose.verify_signature(self._public_key, alg, PROOF_MESSAGE, signature):
            certificate = self.certificate
            raise KeyMismatchError(
                f"{self.signer.description}: the signer's key does not belong to the "
                f"certificate {certificate.thumbprint_sha1} (its {alg} test signature does not "
                "verify with the certificate's public key); give signer= the certificate of "
                "the key it signs with",
                path=certificate.source,
            )
        if self._proven is not None:
            self._proven.add(alg)

    def _check_shape(self, alg: str, signature: object) -> None:
        """Refuse a signature that cannot be ``alg``'s for the certificate's key (RFC 7518
        section 3.3/3.5: as long as the RSA modulus; section 3.4: ECDSA's ``R || S``, each the
        curve's size, not DER)."""
        expected = _signature_size(self._public_key, alg)
        if isinstance(signature, bytes) and len(signature) == expected:
            return
        got = (
            f"{len(signature)} bytes"
            if isinstance(signature, bytes)
            else f"a {type(signature).__name__}"
        )
        form = (
            "the raw R || S of RFC 7518 section 3.4, not DER"
            if alg.startswith("ES")
            else f"the size of the certificate's {self.certificate.key_description} modulus"
        )
        raise SignerError(
            f"{self.signer.description}: the signer returned {got} for an {alg} signature; "
            f"{alg} needs {expected} bytes ({form}); fix the signer's sign()",
            backend=type(self.signer).__name__,
        )

    def check_validity(self, now: float) -> None:
        """Refuse to sign outside the certificate's validity (Entra ID refuses a registered
        certificate outside it with AADSTS1000502)."""
        certificate = self.certificate
        not_before, not_after = certificate.validity_epochs
        if not not_before <= now <= not_after:
            # Numbers on the hot path; the datetimes only for the message.
            when = dt.datetime.fromtimestamp(now, dt.timezone.utc)
            problem = certificate.validity_problem(when)
            raise CertificateError(
                f"{certificate.source or 'certificate'}: {problem}", path=certificate.source
            )

    def sign(self, audience: str, *, alg: str | None = None, now: float | None = None) -> str:
        """A fresh assertion (new ``jti``) for the token endpoint ``audience``, valid from
        ``now`` for the lifetime. ``alg`` is what :meth:`check` returned (default:
        :meth:`default_alg`). Blocking: the signer's ``sign`` is called here (after its
        :meth:`prove`, the first time for ``alg``)."""
        alg = alg or self.default_alg()
        signing_input = self.signing_input(audience, alg=alg, now=now)
        if not self.in_process:
            self.prove(alg)
        return self.assemble(signing_input, alg, self.signer.sign(signing_input, alg))

    def signing_input(self, audience: str, *, alg: str, now: float | None = None) -> bytes:
        """The JWS signing input (RFC 7515 section 5.1: header and claims, base64url, joined by
        ``.``) of a fresh assertion for ``audience``; refuses a certificate not valid at
        ``now``."""
        issued = int(time.time() if now is None else now)
        self.check_validity(issued)
        header = self._headers.get(alg)
        if header is None:
            check_alg(self._public_key, alg)
            header = self._headers[alg] = _header_segment(self.certificate, alg, self.include_x5c)
        # The claims in the order and encoding json.dumps gives them, without building a dict
        # and encoding it for every request: only jti and the times change (RFC 7523 section 3:
        # iss, sub, aud, exp required; jti, nbf, iat optional and sent).
        claims = (
            f'{_claims_prefix(audience, self.client_id)}{_new_jti()}","iat":{issued},'
            f'"nbf":{issued},"exp":{issued + self.lifetime}}}'
        )
        return f"{header}.{b64url_encode(claims.encode('ascii'))}".encode("ascii")

    def assemble(self, signing_input: bytes, alg: str, signature: bytes) -> str:
        """The compact JWS (RFC 7515 section 7.1) of ``signing_input`` and the signer's
        ``signature``, refused as a :class:`~certauth.errors.SignerError` when it has the wrong
        size or type for ``alg`` (a key file's own signatures are not re-checked)."""
        if not self.in_process:
            self._check_shape(alg, signature)
        return f"{signing_input.decode('ascii')}.{b64url_encode(signature)}"


def _signature_size(public_key: PublicKey, alg: str) -> int:
    curve = _jose.ALGORITHMS[alg].curve
    if curve is not None:
        return 2 * curve.size
    return (public_key.key_size + 7) // 8


def build_client_assertion(
    certificate: Certificate | None = None,
    *,
    signer: Signer | None = None,
    client_id: str,
    audience: str,
    alg: str | None = None,
    lifetime: int = DEFAULT_LIFETIME,
    include_x5c: bool = False,
    now: float | None = None,
) -> str:
    """Sign a client assertion JWT for ``client_id`` addressed to the token endpoint ``audience``.

    ``alg`` defaults to PS256 for RSA keys (header ``x5t#S256``) and ES256 for EC keys; RS256
    uses the SHA-1 ``x5t`` header, which ADFS and older servers need. Each call makes a new
    random ``jti``. ``include_x5c`` adds the certificate chain (for subject name + issuer
    registrations). The certificate must be valid at ``now``; ``lifetime`` is 1-600 seconds.
    ``signer`` (a :class:`~certauth.signers.Signer`: a key in an HSM or a vault) signs instead
    of the ``certificate``'s private key; give exactly one of the two. A signer first proves
    with a test signature that its key belongs to its certificate.
    A one-shot :class:`AssertionSigner`: code that signs repeatedly keeps one instead.
    """
    assertion_signer = AssertionSigner(
        certificate,
        signer=signer,
        client_id=client_id,
        alg=alg,
        lifetime=lifetime,
        include_x5c=include_x5c,
    )
    return assertion_signer.sign(audience, now=now)


def _new_jti() -> str:
    """A random UUID (version 4) as text, exactly as ``str(uuid.uuid4())`` gives it, without
    importing ``uuid`` (which imports ``platform``: ~3 ms of every process start)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4 (RFC 4122 section 4.4)
    raw[8] = (raw[8] & 0x3F) | 0x80  # variant 10xx
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def _header_segment(certificate: Certificate, alg: str, include_x5c: bool) -> str:
    header: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    if alg.startswith("RS"):
        header["x5t"] = certificate.x5t
    else:
        header["x5t#S256"] = certificate.x5t_s256
    if include_x5c:
        # RFC 7515 section 4.1.6: standard base64 (not base64url) DER, leaf first.
        header["x5c"] = [
            base64.b64encode(c.public_bytes(Encoding.DER)).decode("ascii")
            for c in (certificate.x509, *certificate.chain)
        ]
    return _jose.json_segment(header)


@functools.lru_cache(maxsize=256)
def _claims_prefix(audience: str, client_id: str) -> str:
    # json.dumps escapes each string exactly as encoding the whole claims dict would.
    return (
        f'{{"aud":{json.dumps(audience)},"iss":{json.dumps(client_id)},'
        f'"sub":{json.dumps(client_id)},"jti":"'
    )
