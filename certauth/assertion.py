"""Client assertions: the signed JWT a client presents instead of a secret (RFC 7523 section 3).

Entra ID's certificate-credential rules on top of RFC 7523 (see ANCHORS.md): ``aud`` is exactly
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

SUPPORTED_ALGS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
)

_HASHES: dict[str, hashes.HashAlgorithm] = {
    "256": hashes.SHA256(),
    "384": hashes.SHA384(),
    "512": hashes.SHA512(),
}
#: alg -> (key kind, padding or signature algorithm, hash). Built once: these objects are
#: immutable and shared by every signature (RFC 7518 section 3).
_SCHEMES: dict[str, tuple[str, Any, hashes.HashAlgorithm]] = {
    **{f"RS{bits}": ("RSA", padding.PKCS1v15(), digest) for bits, digest in _HASHES.items()},
    # RFC 7518 section 3.5: MGF1 with the same hash, salt as long as the hash output.
    **{
        f"PS{bits}": (
            "RSA",
            padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size),
            digest,
        )
        for bits, digest in _HASHES.items()
    },
    # ES256's ec.ECDSA object is made in _sign, per signature: creating one imports
    # cryptography's OpenSSL backend module, ~2 ms of start-up that RSA users never need.
    "ES256": ("EC", None, _HASHES["256"]),
}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _json_segment(value: dict[str, Any]) -> str:
    return _b64url(json.dumps(value, separators=(",", ":")).encode("utf-8"))


def _sign(key: PrivateKey, alg: str, message: bytes) -> bytes:
    """JWS signature per RFC 7518 section 3 (RSASSA-PKCS1-v1_5, RSASSA-PSS, ECDSA)."""
    kind, scheme, digest = _SCHEMES[alg]
    if kind == "RSA" and isinstance(key, rsa.RSAPrivateKey):
        return key.sign(message, scheme, digest)
    if kind == "EC" and isinstance(key, ec.EllipticCurvePrivateKey):
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
    # Per certificate, once (its key never changes): the key size rule and the key's kind;
    # then the encoded header per alg. Per call: the checks below, the claims, the signature.
    memo = certificate._memo
    if "assertion_is_ec" not in memo:
        if isinstance(key, rsa.RSAPrivateKey) and key.key_size < MIN_RSA_BITS:
            raise UnsupportedKeyError(
                f"{certificate.source or 'certificate'}: RSA {key.key_size} key; at least "
                f"{MIN_RSA_BITS} bits are required (Entra ID answers AADSTS50032)",
                path=certificate.source,
            )
        memo["assertion_is_ec"] = isinstance(key, ec.EllipticCurvePrivateKey)
    alg = alg or ("ES256" if memo["assertion_is_ec"] else "PS256")
    if alg not in _SCHEMES:
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
    not_before, not_after = certificate.validity_epochs
    if not not_before <= issued <= not_after:
        # Numbers on the hot path; the datetimes only for the message.
        problem = certificate.validity_problem(dt.datetime.fromtimestamp(issued, dt.timezone.utc))
        raise CertificateError(
            f"{certificate.source or 'certificate'}: {problem}", path=certificate.source
        )
    header = memo.get(("assertion_header", alg, include_x5c))
    if header is None:
        header = memo[("assertion_header", alg, include_x5c)] = _header_segment(
            certificate, alg, include_x5c
        )
    # The claims in the order and encoding json.dumps gives them, without building a dict
    # and encoding it for every request: only jti and the times change.
    claims = (
        f'{_claims_prefix(audience, client_id)}{_new_jti()}","iat":{issued},'
        f'"nbf":{issued},"exp":{issued + lifetime}}}'
    )
    signing_input = f"{header}.{_b64url(claims.encode('ascii'))}"
    signature = _sign(key, alg, signing_input.encode("ascii"))
    return f"{signing_input}.{_b64url(signature)}"


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
    return _json_segment(header)


@functools.lru_cache(maxsize=256)
def _claims_prefix(audience: str, client_id: str) -> str:
    # json.dumps escapes each string exactly as encoding the whole claims dict would.
    return (
        f'{{"aud":{json.dumps(audience)},"iss":{json.dumps(client_id)},'
        f'"sub":{json.dumps(client_id)},"jti":"'
    )
