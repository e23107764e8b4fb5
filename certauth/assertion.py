"""Client assertions: the signed JWT a client presents instead of a secret (RFC 7523 section 3).

Entra ID's certificate-credential rules on top of RFC 7523 ("Microsoft identity platform
application authentication certificate credentials",
https://learn.microsoft.com/entra/identity-platform/certificate-credentials): ``aud`` is exactly
the token endpoint URL, ``iss`` = ``sub`` = client id, ``exp`` required, and the header carries
the certificate thumbprint: ``x5t#S256`` with PS256, ``x5t`` (SHA-1) with RS256.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import json
import os
import time
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from certauth import _jose
from certauth._jose import MIN_RSA_BITS, PrivateKey, b64url_encode
from certauth.certificates import Certificate
from certauth.errors import (
    CertificateError,
    ConfigurationError,
    InvalidArgumentError,
    UnsupportedKeyError,
)

if TYPE_CHECKING:
    from certauth.authority import Authority

__all__ = [
    "DEFAULT_LIFETIME",
    "MAX_LIFETIME",
    "METHOD",
    "SUPPORTED_ALGS",
    "AssertionSigner",
    "build_client_assertion",
    "check_entra_key",
]

#: RFC 7523 section 2.2 client authentication, named as OAuth server metadata names it
#: (RFC 8414 section 2, ``token_endpoint_auth_methods_supported``).
METHOD = "private_key_jwt"
#: Microsoft: "keep it 5-10 minutes"; certauth signs for 5 and refuses more than 10.
DEFAULT_LIFETIME = 300
MAX_LIFETIME = 600

SUPPORTED_ALGS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
)


def check_entra_key(certificate: Certificate) -> None:
    """Refuse, before anything is sent, a key Entra ID would reject (with Entra's code)."""
    problems = certificate.entra_problems()
    if problems:
        where = certificate.source or "certificate"
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


class AssertionSigner:
    """Signs the client assertions of one client with one certificate.

    Everything that does not change per request is checked once, here or in :meth:`check`
    (the key, the algorithm, the lifetime, the client id, what the authority accepts); each
    :meth:`sign` then only checks the certificate's validity at ``now``, fills in the claims
    and signs. The encoded header is cached per algorithm. Used by the credentials and by
    ``certauth assertion``, so both apply the same rules.
    """

    def __init__(
        self,
        certificate: Certificate,
        *,
        client_id: str,
        alg: str | None = None,
        lifetime: int = DEFAULT_LIFETIME,
        include_x5c: bool = False,
    ) -> None:
        self._key = certificate.require_private_key()
        if isinstance(self._key, rsa.RSAPrivateKey) and self._key.key_size < MIN_RSA_BITS:
            raise UnsupportedKeyError(
                f"{certificate.source or 'certificate'}: RSA {self._key.key_size} key; at least "
                f"{MIN_RSA_BITS} bits are required (Entra ID answers AADSTS50032)",
                path=certificate.source,
            )
        if alg is not None:
            _check_alg(self._key, alg)
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

    def default_alg(self) -> str:
        """The algorithm :meth:`sign` uses when neither the caller nor an authority chose one:
        PS256 for RSA keys, ES256 for EC keys."""
        return self.alg or (
            "ES256" if isinstance(self._key, ec.EllipticCurvePrivateKey) else "PS256"
        )

    def check(self, authority: Authority) -> str:
        """Refuse, before anything is sent, what ``authority`` is known to reject; return the
        algorithm to sign with for it (the one asked for, else the authority's default)."""
        if authority.kind == "b2c":
            # Azure AD B2C: "client credentials ... with a client secret only" (it answers
            # AADB2C99027 to an assertion), https://learn.microsoft.com/azure/active-directory-b2c/client-credentials-grant-flow
            raise ConfigurationError(
                f"{authority.token_endpoint}: Azure AD B2C takes only client secrets for the "
                "client credentials grant, not certificates (it answers AADB2C99027); use a "
                "client secret for B2C, or a regular Entra ID tenant"
            )
        if authority.is_entra:
            check_entra_key(self.certificate)
        authority.check_auth_method(METHOD)
        alg = self.alg or authority.default_alg(self.certificate.key_type)
        _check_alg(self._key, alg)
        authority.check_signing_alg(alg)
        return alg

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
        :meth:`default_alg`)."""
        alg = alg or self.default_alg()
        certificate = self.certificate
        issued = int(time.time() if now is None else now)
        self.check_validity(issued)
        header = self._headers.get(alg)
        if header is None:
            _check_alg(self._key, alg)
            header = self._headers[alg] = _header_segment(certificate, alg, self.include_x5c)
        # The claims in the order and encoding json.dumps gives them, without building a dict
        # and encoding it for every request: only jti and the times change (RFC 7523 section 3:
        # iss, sub, aud, exp required; jti, nbf, iat optional and sent).
        claims = (
            f'{_claims_prefix(audience, self.client_id)}{_new_jti()}","iat":{issued},'
            f'"nbf":{issued},"exp":{issued + self.lifetime}}}'
        )
        signing_input = f"{header}.{b64url_encode(claims.encode('ascii'))}"
        signature = _jose.sign(self._key, alg, signing_input.encode("ascii"))
        return f"{signing_input}.{b64url_encode(signature)}"


def _check_alg(key: PrivateKey, alg: str) -> None:
    if alg not in SUPPORTED_ALGS:
        raise InvalidArgumentError(
            f"alg={alg!r} is not supported; use one of {', '.join(SUPPORTED_ALGS)}"
        )
    kind = "RSA" if isinstance(key, rsa.RSAPrivateKey) else "EC"
    if _jose.ALGORITHMS[alg].kty != kind:
        raise InvalidArgumentError(
            f"alg={alg} cannot be used with {'an RSA' if kind == 'RSA' else 'an EC'} key; use "
            + ("RS256 or PS256" if kind == "RSA" else "ES256")
        )
    try:
        _jose.check_key(key, alg)  # the curve (ES256 needs P-256)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"alg={alg}: {exc}") from None


def build_client_assertion(
    certificate: Certificate,
    *,
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
    A one-shot :class:`AssertionSigner`: code that signs repeatedly keeps a signer instead.
    """
    signer = AssertionSigner(
        certificate, client_id=client_id, alg=alg, lifetime=lifetime, include_x5c=include_x5c
    )
    return signer.sign(audience, now=now)


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
