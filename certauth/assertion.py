"""Client assertions: the signed JWT a client presents instead of a secret (RFC 7523 section 3).

Entra ID's certificate-credential rules on top of RFC 7523 (see ANCHORS.md): ``aud`` is exactly
the token endpoint URL, ``iss`` = ``sub`` = client id, ``exp`` required, and the header carries
the certificate thumbprint: ``x5t#S256`` with PS256, ``x5t`` (SHA-1) with RS256.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
import uuid
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding

from certauth.certificates import MIN_RSA_BITS, Certificate, PrivateKey
from certauth.errors import CertificateError, InvalidArgumentError, UnsupportedKeyError

__all__ = [
    "DEFAULT_LIFETIME",
    "MAX_LIFETIME",
    "SUPPORTED_ALGS",
    "build_client_assertion",
    "check_entra_key",
]

#: Microsoft: "keep it 5-10 minutes"; certauth signs for 5 and refuses more than 10.
DEFAULT_LIFETIME = 300
MAX_LIFETIME = 600

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
SUPPORTED_ALGS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _json_segment(value: dict[str, Any]) -> str:
    return _b64url(json.dumps(value, separators=(",", ":")).encode("utf-8"))


def _sign(key: PrivateKey, alg: str, message: bytes) -> bytes:
    """JWS signature per RFC 7518 section 3 (RSASSA-PKCS1-v1_5, RSASSA-PSS, ECDSA)."""
    digest = _HASHES[alg[2:]]()
    if alg.startswith("RS") and isinstance(key, rsa.RSAPrivateKey):
        return key.sign(message, padding.PKCS1v15(), digest)
    if alg.startswith("PS") and isinstance(key, rsa.RSAPrivateKey):
        # RFC 7518 section 3.5: MGF1 with the same hash, salt as long as the hash output.
        pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
        return key.sign(message, pss, digest)
    if alg == "ES256" and isinstance(key, ec.EllipticCurvePrivateKey):
        # RFC 7518 section 3.4: the JWS form is R || S, each 32 bytes, not DER.
        r, s = decode_dss_signature(key.sign(message, ec.ECDSA(digest)))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
    kind = "an RSA" if isinstance(key, rsa.RSAPrivateKey) else "an EC"
    raise InvalidArgumentError(
        f"--alg {alg} cannot be used with {kind} key; use "
        + ("RS256 or PS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256")
    )


def check_entra_key(certificate: Certificate) -> None:
    """Refuse, before anything is sent, a key Entra ID would reject (with Entra's code)."""
    problems = certificate.entra_problems()
    if problems:
        where = certificate.source or "certificate"
        raise UnsupportedKeyError(f"{where}: {problems[0]}", path=certificate.source)


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
    """
    key = certificate.require_private_key()
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < MIN_RSA_BITS:
        raise UnsupportedKeyError(
            f"{certificate.source or 'certificate'}: RSA {key.key_size} key; at least "
            f"{MIN_RSA_BITS} bits are required (Entra ID answers AADSTS50032)",
            path=certificate.source,
        )
    alg = alg or ("ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "PS256")
    if alg not in SUPPORTED_ALGS:
        raise InvalidArgumentError(
            f"--alg {alg!r} is not supported; use one of {', '.join(SUPPORTED_ALGS)}"
        )
    if isinstance(lifetime, bool) or not isinstance(lifetime, int) or not 0 < lifetime <= 600:
        raise InvalidArgumentError(
            f"--lifetime {lifetime!r} is outside 1-{MAX_LIFETIME} seconds; assertions are meant "
            "to live minutes (Microsoft recommends 5-10)"
        )
    if not client_id:
        raise InvalidArgumentError("client id is empty; give --client-id or AZURE_CLIENT_ID")
    issued = int(time.time() if now is None else now)
    problem = certificate.validity_problem(dt.datetime.fromtimestamp(issued, dt.timezone.utc))
    if problem:
        raise CertificateError(
            f"{certificate.source or 'certificate'}: {problem}", path=certificate.source
        )
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
    claims = {
        "aud": audience,
        "iss": client_id,
        "sub": client_id,
        "jti": str(uuid.uuid4()),
        "iat": issued,
        "nbf": issued,
        "exp": issued + lifetime,
    }
    signing_input = f"{_json_segment(header)}.{_json_segment(claims)}"
    signature = _sign(key, alg, signing_input.encode("ascii"))
    return f"{signing_input}.{_b64url(signature)}"
