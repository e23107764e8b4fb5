"""DPoP, sans I/O: proof-of-possession keys, proofs, their checks and the server's nonces
(RFC 9449, OAuth 2.0 Demonstrating Proof of Possession).

A DPoP-bound access token is useless without the private key it is bound to: every request
carries a fresh proof JWT (the ``DPoP`` header) signed with that key, naming the request's
method and URI, and hashing the access token. This module holds the rules and nothing else:
no sockets, no hidden clock (``now`` is a parameter). The credential, :class:`BearerAuth`, the
emulator and the verifier build on it.

- :class:`DPoPKey`: the key, its public JWK (RFC 7517), its RFC 7638 thumbprint (``jkt``).
- :func:`make_proof`: a proof for one request (RFC 9449 section 4.2).
- :func:`check_proof`: a server's checks of a proof (section 4.3); :class:`JtiCache` for
  replay detection (section 11.1).
- :func:`nonce_from_response` / :func:`next_nonce`: the server-provided nonce (sections 8, 9).

JOSE itself (base64url, signing, JWK <-> key) lives in :mod:`certauth._jose`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from certauth import _jose
from certauth.errors import InvalidArgumentError, TokenValidationError, UnsupportedKeyError

__all__ = [
    "DEFAULT_LEEWAY",
    "DEFAULT_MAX_AGE",
    "DPoPKey",
    "DPoPProof",
    "JtiCache",
    "access_token_hash",
    "check_proof",
    "jwk_thumbprint",
    "make_proof",
    "next_nonce",
    "nonce_from_response",
    "normalize_htu",
]

#: RFC 9449 section 4.2: the ``typ`` header of a DPoP proof.
PROOF_TYPE = "dpop+jwt"
#: How old a proof may be, in seconds (section 11.1 leaves the window to the server).
DEFAULT_MAX_AGE = 300
#: Clock skew allowed either way, in seconds.
DEFAULT_LEEWAY = 60
#: A proof is a header value; anything longer is not one (and is not parsed).
MAX_PROOF_CHARS = 16 * 1024
#: RFC 9110 section 4.1 suggests supporting URIs of at least 8000 octets.
MAX_HTU_CHARS = 8192
#: Longest method, nonce and jti accepted (none is near this in practice).
_MAX_SHORT = 1024
#: RFC 7517 / RFC 7518 section 6: members that only a private (or symmetric) key has.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
#: RFC 7638 section 3.2: the required members of each key type, hashed in this order.
_THUMBPRINT_MEMBERS = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y")}
#: RFC 9110 section 9.1 / 5.6.2: a method is a token.
_METHOD = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: RFC 9449 section 8.1: ``nonce = 1*NQCHAR`` (printable ASCII but ``"`` and ``\``).
_NONCE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
_DEFAULT_PORTS = {"http": 80, "https": 443}


# -- keys --------------------------------------------------------------------------------------


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """The RFC 7638 thumbprint of a public JWK: SHA-256 over the required members in
    lexicographic order as compact JSON (section 3.2), base64url. RFC 9449 section 6.1 calls it
    ``jkt``. :class:`ValueError` for a key type other than RSA or EC or a missing member."""
    members = _THUMBPRINT_MEMBERS.get(str(jwk.get("kty")))
    if members is None:
        raise ValueError(f"key type {jwk.get('kty')!r} is not RSA or EC")
    canonical: dict[str, str] = {}
    for name in members:
        value = jwk.get(name)
        if not isinstance(value, str):
            raise ValueError(f"the JWK has no '{name}'")
        canonical[name] = value
    text = json.dumps(canonical, separators=(",", ":"), ensure_ascii=False)
    return _jose.b64url_encode(hashlib.sha256(text.encode("utf-8")).digest())


#: cryptography's curve name -> the JWS algorithm defined on it (RFC 7518 section 3.4).
_EC_ALGS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


class DPoPKey:
    """A DPoP key: the private key that signs proofs, and what a server sees of it.

    RFC 9449 section 4 asks for a key pair the client controls and leaves its choice open.
    :meth:`generate` makes a fresh EC P-256 key (ES256: small proofs, fast signatures) and is
    the default on purpose: the certificate's key is registered with the tenant as the client's
    credential, and should not also become a proof key that every API the token is sent to sees
    signatures from (one key, one job; a proof key can then be rotated or thrown away freely).
    :meth:`from_private_key` wraps an existing RSA (PS256, >= 2048 bits) or EC key (ES256 /
    ES384 / ES512 by curve) when a server registers the DPoP key out of band.
    """

    __slots__ = ("_alg", "_jwk", "_private_key", "_thumbprint")

    def __init__(self, private_key: _jose.PrivateKey, alg: str) -> None:
        # Use from_private_key or generate: they pick the algorithm from the key.
        _jose.check_key(private_key, alg)
        self._private_key = private_key
        self._alg = alg
        self._jwk = _jose.public_key_to_jwk(private_key.public_key())
        self._thumbprint = jwk_thumbprint(self._jwk)

    @classmethod
    def generate(cls) -> DPoPKey:
        """A fresh EC P-256 key (ES256), separate from the client's certificate key."""
        return cls(ec.generate_private_key(ec.SECP256R1()), "ES256")

    @classmethod
    def from_private_key(cls, key: object) -> DPoPKey:
        """Wrap an RSA (PS256) or EC P-256/P-384/P-521 (ES256/384/512) private key.

        :class:`~certauth.errors.UnsupportedKeyError` for any other key, or RSA below 2048 bits.
        """
        if isinstance(key, rsa.RSAPrivateKey):
            private: _jose.PrivateKey = key
            alg = "PS256"
        elif isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in _EC_ALGS:
            private, alg = key, _EC_ALGS[key.curve.name]
        else:
            raise UnsupportedKeyError(
                f"a DPoP key is RSA or EC P-256/P-384/P-521, not {_describe(key)}; "
                "use DPoPKey.generate() for a fresh P-256 key"
            )
        try:
            return cls(private, alg)
        except (TypeError, ValueError) as exc:
            raise UnsupportedKeyError(f"cannot use this DPoP key: {exc}") from None

    @property
    def private_key(self) -> _jose.PrivateKey:
        """The private key (never put in a proof)."""
        return self._private_key

    @property
    def alg(self) -> str:
        """The JWS algorithm of its proofs: ES256 for P-256, PS256 for RSA."""
        return self._alg

    @property
    def public_jwk(self) -> dict[str, str]:
        """The public JWK (RFC 7517): ``kty`` and the public members only (a copy)."""
        return dict(self._jwk)

    @property
    def thumbprint(self) -> str:
        """The RFC 7638 SHA-256 thumbprint, base64url: the ``jkt`` of RFC 9449 section 6.1
        (``dpop_jkt`` on a token request, ``cnf.jkt`` in a bound token)."""
        return self._thumbprint

    def private_key_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM (write it 0600)."""
        return self._private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def __repr__(self) -> str:
        return f"DPoPKey(alg={self._alg!r}, jkt={self._thumbprint!r})"


def _describe(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return f"an EC key on {key.curve.name}"
    return f"a {type(key).__name__}"


# -- the parts of a proof ----------------------------------------------------------------------


def normalize_htu(url: str) -> str:
    """The ``htu`` of a request to ``url`` (RFC 9449 section 4.2: the URI without query and
    fragment; section 4.3 compares after RFC 3986 section 6.2.2/6.2.3 normalisation): scheme
    and host lower-cased, the scheme's default port dropped, an empty path made ``/``.

    :class:`~certauth.errors.InvalidArgumentError` for anything that is not an absolute http(s)
    URL with a host, a URL with user info (RFC 9110 section 4.2.4), or over
    :data:`MAX_HTU_CHARS`.
    """
    from certauth.authority import check_host

    # The query and the fragment are no part of the htu, nor of its limit: a request with a
    # long query string is as provable as any (RFC 3986 section 3: "?" and "#" end the path).
    base = re.split(r"[?#]", url.strip(), maxsplit=1)[0]
    if len(base) > MAX_HTU_CHARS:
        raise InvalidArgumentError(
            f"the URL without its query is {len(base):,} characters long, over the "
            f"{MAX_HTU_CHARS:,} a DPoP htu may have"
        )
    try:
        parts = urlsplit(base)
        host = parts.hostname or ""
        port = parts.port
    except ValueError as exc:
        raise InvalidArgumentError(
            f"not a valid URL ({exc}); write it as https://HOST/PATH"
        ) from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not host:
        raise InvalidArgumentError(
            f"{url[:100]!r} is not an absolute http(s) URL; write it as https://HOST/PATH"
        )
    if "@" in parts.netloc:
        raise InvalidArgumentError(
            f"the URL has user info before the host {host[:100]!r}; remove it "
            "(RFC 9110 section 4.2.4)"
        )
    check_host(host, what="the URL")
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        netloc = f"{netloc}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", "", ""))


def check_method(htm: str) -> str:
    """``htm`` if it is an HTTP method token (RFC 9110 section 9.1), else
    :class:`~certauth.errors.InvalidArgumentError`."""
    if len(htm) > _MAX_SHORT or not _METHOD.fullmatch(htm):
        raise InvalidArgumentError(
            f"{htm[:100]!r} is not an HTTP method (RFC 9110 section 9.1), e.g. GET or POST"
        )
    return htm


def check_nonce(nonce: str) -> str:
    """``nonce`` if it is a DPoP nonce as a server may send it (RFC 9449 section 8.1), else
    :class:`~certauth.errors.InvalidArgumentError`."""
    if len(nonce) > _MAX_SHORT or not _NONCE.fullmatch(nonce):
        raise InvalidArgumentError(
            "the DPoP nonce is not 1*NQCHAR (RFC 9449 section 8.1: printable ASCII without "
            "'\"' or '\\'); pass the DPoP-Nonce header's value as the server sent it"
        )
    return nonce


def access_token_hash(access_token: str) -> str:
    """The ``ath`` claim (RFC 9449 section 4.2): base64url SHA-256 of the ASCII token.

    :class:`~certauth.errors.InvalidArgumentError` for a token that is not ASCII (no access
    token is: RFC 6750 section 2.1 ``b64token``).
    """
    if not access_token or not access_token.isascii():
        raise InvalidArgumentError(
            "the access token is empty or not ASCII; check where it came from"
        )
    return _jose.b64url_encode(hashlib.sha256(access_token.encode("ascii")).digest())


def make_proof(
    key: DPoPKey,
    *,
    htm: str,
    htu: str,
    access_token: str | None = None,
    nonce: str | None = None,
    now: float | None = None,
    jti: str | None = None,
) -> str:
    """A DPoP proof JWT for one request (RFC 9449 section 4.2).

    Header: ``typ`` ``dpop+jwt``, ``alg``, ``jwk`` (public). Claims: ``jti`` (128 random
    bits unless given), ``htm``, ``htu`` (normalised, see :func:`normalize_htu`), ``iat``,
    ``ath`` when ``access_token`` is given (a request to a resource), ``nonce`` when the server
    asked for one. A usage error (:class:`~certauth.errors.InvalidArgumentError`) for a method,
    URL, nonce or token that cannot be put in a proof.
    """
    header = {"typ": PROOF_TYPE, "alg": key.alg, "jwk": key.public_jwk}
    claims: dict[str, Any] = {
        "jti": jti if jti is not None else _jose.b64url_encode(secrets.token_bytes(16)),
        "htm": check_method(htm),
        "htu": normalize_htu(htu),
        "iat": int(time.time() if now is None else now),
    }
    if access_token is not None:
        claims["ath"] = access_token_hash(access_token)
    if nonce is not None:
        claims["nonce"] = check_nonce(nonce)
    signing_input = f"{_jose.json_segment(header)}.{_jose.json_segment(claims)}"
    signature = _jose.sign(key.private_key, key.alg, signing_input.encode("ascii"))
    return f"{signing_input}.{_jose.b64url_encode(signature)}"


# -- checking a proof (a server's side) --------------------------------------------------------


@dataclass(frozen=True)
class DPoPProof:
    """A proof that passed :func:`check_proof`."""

    header: Mapping[str, Any]
    claims: Mapping[str, Any]
    #: The public JWK from the header.
    jwk: Mapping[str, Any]
    #: Its RFC 7638 thumbprint: compare with the token's ``cnf.jkt`` (RFC 9449 section 6.1).
    jkt: str
    alg: str
    jti: str
    htm: str
    htu: str
    iat: float


class JtiCache:
    """The ``jti`` values already seen, for replay detection (RFC 9449 section 11.1).

    Thread-safe. An entry is kept until the proof it came from is too old to be accepted
    anyway, so the memory used follows the request rate times the window; ``max_entries``
    bounds it. When it is full of live entries, the oldest is forgotten (and could be replayed
    until its expiry): size it above the requests a window can hold.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise InvalidArgumentError(f"max_entries must be at least 1, not {max_entries}")
        self._max = max_entries
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, jti: str, *, expires_at: float, now: float) -> bool:
        """Record ``jti`` until ``expires_at`` (the last moment its proof is accepted, that
        moment included); ``False`` if it is already recorded (a replay)."""
        with self._lock:
            expiry = self._seen.get(jti)
            if expiry is not None and expiry >= now:
                return False
            self._seen.pop(jti, None)
            if len(self._seen) >= self._max:
                self._purge(now)
            while len(self._seen) >= self._max:
                self._seen.popitem(last=False)
            self._seen[jti] = expires_at
            return True

    def _purge(self, now: float) -> None:
        for stale in [jti for jti, expiry in self._seen.items() if expiry < now]:
            del self._seen[stale]

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)


def _refuse(check: str, message: str) -> TokenValidationError:
    return TokenValidationError(f"DPoP proof refused: {message}", check=check)


def _segment(text: str, what: str) -> Any:
    try:
        return json.loads(_jose.b64url_decode(text))
    except ValueError:
        raise _refuse("dpop_malformed", f"the {what} is not base64url JSON") from None


def check_proof(
    proof: str | Sequence[str],
    *,
    htm: str,
    htu: str,
    access_token: str | None = None,
    nonce: str | None = None,
    now: float | None = None,
    max_age: float = DEFAULT_MAX_AGE,
    leeway: float = DEFAULT_LEEWAY,
    seen_jti: JtiCache | None = None,
) -> DPoPProof:
    """Check a DPoP proof the way RFC 9449 section 4.3 lists it; the parsed proof if it passes.

    ``proof`` is the ``DPoP`` header value (or its values, of which there must be exactly
    one); ``htm``/``htu`` the request's method and URL; ``access_token`` the token presented
    with it (then ``ath`` must match); ``nonce`` the nonce the server requires (then the
    proof must carry it); ``seen_jti`` a :class:`JtiCache` to refuse replays. ``iat`` must lie
    within ``max_age`` seconds in the past and ``leeway`` in the future.

    Every refusal is a :class:`~certauth.errors.TokenValidationError` whose ``check`` names
    the rule: ``dpop_header``, ``dpop_malformed``, ``dpop_typ``, ``dpop_alg``, ``dpop_jwk``,
    ``dpop_signature``, ``dpop_claims``, ``dpop_htm``, ``dpop_htu``, ``dpop_iat``,
    ``dpop_ath``, ``dpop_nonce``, ``dpop_replay``. Whether the proof's ``jkt`` is the one the
    token is bound to (``cnf.jkt``) is the caller's check.
    """
    # Section 4.3 step 1: exactly one DPoP header.
    if not isinstance(proof, str):
        values = list(proof)
        if len(values) != 1:
            raise _refuse("dpop_header", f"{len(values)} DPoP headers; exactly one is allowed")
        proof = values[0]
    # Step 2: one well-formed JWT.
    if len(proof) > MAX_PROOF_CHARS:
        raise _refuse("dpop_malformed", f"over {MAX_PROOF_CHARS} characters")
    parts = proof.split(".")
    if len(parts) != 3:
        raise _refuse("dpop_malformed", "not a compact JWS (three dot-separated parts)")
    header = _segment(parts[0], "header")
    claims = _segment(parts[1], "claims set")
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise _refuse("dpop_malformed", "the header and claims must be JSON objects")
    try:
        signature = _jose.b64url_decode(parts[2])
    except ValueError:
        raise _refuse("dpop_malformed", "the signature is not base64url") from None
    # Steps 4-5: typ is dpop+jwt (RFC 7515 section 4.1.9: compared case-insensitively, the
    # "application/" prefix optional); alg asymmetric, never none or HMAC (RFC 8725 3.1).
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower().removeprefix("application/") != PROOF_TYPE:
        raise _refuse("dpop_typ", f"typ is {str(typ)[:50]!r}, not {PROOF_TYPE!r}")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in _jose.ALGORITHMS:
        raise _refuse(
            "dpop_alg", f"alg {str(alg)[:50]!r} is not an asymmetric JWS algorithm (RFC 7518)"
        )
    if "crit" in header:
        # RFC 7515 section 4.1.11: an extension we do not understand must be refused.
        raise _refuse("dpop_malformed", "the header has 'crit' extensions certauth does not know")
    # Step 6: jwk is a public key, of the kind alg needs.
    jwk = header.get("jwk")
    if not isinstance(jwk, dict):
        raise _refuse("dpop_jwk", "no 'jwk' header holding the public key")
    if _PRIVATE_MEMBERS & jwk.keys():
        raise _refuse("dpop_jwk", "the 'jwk' header holds private key members")
    try:
        public_key = _jose.jwk_to_public_key(jwk)
        _jose.check_key(public_key, alg)
        jkt = jwk_thumbprint(jwk)
    except (TypeError, ValueError) as exc:
        raise _refuse("dpop_jwk", f"the 'jwk' header is unusable: {exc}") from None
    # Step 7: the signature, by that key.
    if not _jose.verify_signature(
        public_key, alg, f"{parts[0]}.{parts[1]}".encode("ascii"), signature
    ):
        raise _refuse("dpop_signature", "the signature does not verify with the 'jwk' header")
    # Step 3: the required claims, with their types.
    jti, proof_htm, proof_htu, iat = (claims.get(n) for n in ("jti", "htm", "htu", "iat"))
    if not isinstance(jti, str) or not jti or len(jti) > _MAX_SHORT:
        raise _refuse("dpop_claims", "no usable 'jti' claim")
    if not isinstance(proof_htm, str) or not isinstance(proof_htu, str):
        raise _refuse("dpop_claims", "'htm' and 'htu' must be strings")
    if isinstance(iat, bool) or not isinstance(iat, int | float) or not math.isfinite(iat):
        raise _refuse("dpop_claims", "'iat' must be a number")
    # Steps 8-9: the method (case-sensitive, RFC 9110 section 9.1) and the normalised URI.
    if proof_htm != htm:
        raise _refuse("dpop_htm", f"htm {proof_htm[:20]!r} is not this request's {htm[:20]!r}")
    try:
        same_uri = normalize_htu(proof_htu) == normalize_htu(htu)
    except InvalidArgumentError:
        same_uri = False
    if not same_uri:
        raise _refuse("dpop_htu", f"htu {proof_htu[:200]!r} is not this request's URI")
    # Step 10: the nonce the server asked for.
    if nonce is not None and claims.get("nonce") != nonce:
        raise _refuse("dpop_nonce", "the proof does not carry the server's current nonce")
    # Step 11: created recently (section 11.1).
    current = time.time() if now is None else now
    if not current - max_age - leeway <= iat <= current + leeway:
        raise _refuse(
            "dpop_iat",
            f"iat is {current - iat:+.0f} s from now, outside the {max_age:.0f} s window",
        )
    # Step 12: the access token's hash.
    if access_token is not None:
        try:
            expected = access_token_hash(access_token)
        except InvalidArgumentError:
            expected = None
        if claims.get("ath") != expected:
            raise _refuse("dpop_ath", "'ath' is not the hash of the access token presented")
    # Section 11.1: a jti seen within the window is a replay. Last, so that a proof refused
    # for another reason never takes a place in the cache.
    if seen_jti is not None and not seen_jti.add(
        jti, expires_at=iat + max_age + leeway, now=current
    ):
        raise _refuse("dpop_replay", "this proof's jti was already used (a replayed proof)")
    return DPoPProof(
        header=header,
        claims=claims,
        jwk=jwk,
        jkt=jkt,
        alg=alg,
        jti=jti,
        htm=proof_htm,
        htu=proof_htu,
        iat=iat,
    )


# -- server-provided nonces (sections 8 and 9) -------------------------------------------------

Headers = Mapping[str, str] | Iterable[tuple[str, str]]


def _values(headers: Headers, name: str) -> list[str]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [value for key, value in items if key.lower() == name]


def next_nonce(headers: Headers) -> str | None:
    """The ``DPoP-Nonce`` header's value, if it is one valid nonce (RFC 9449 section 8.1),
    else ``None``. A server may send a fresh one on any answer (section 8.2); the client uses it
    in its next proof to that server."""
    values = _values(headers, "dpop-nonce")
    if len(values) != 1 or len(values[0]) > _MAX_SHORT or not _NONCE.fullmatch(values[0]):
        return None
    return values[0]


def _dpop_error(headers: Headers) -> str | None:
    from certauth.cae import parse_www_authenticate

    try:
        challenges = parse_www_authenticate(_values(headers, "www-authenticate"))
    except ValueError:
        return None
    for challenge in challenges:
        if challenge.scheme == "dpop":
            return challenge.params.get("error")
    return None


def nonce_from_response(
    status: int, headers: Headers, body: Mapping[str, Any] | None = None
) -> str | None:
    """The nonce to retry with, when the answer asks for one; ``None`` otherwise.

    - A token endpoint's ``400`` with ``{"error": "use_dpop_nonce"}`` (RFC 9449 section 8).
    - A resource's ``401`` with ``WWW-Authenticate: DPoP error="use_dpop_nonce"`` (section 9).

    Either way the nonce is the ``DPoP-Nonce`` header. Retry once with it: a second demand
    for a nonce is an error to report, not a loop.
    """
    if status == 400:
        asked = (body is not None and body.get("error") == "use_dpop_nonce") or (
            _dpop_error(headers) == "use_dpop_nonce"
        )
    elif status == 401:
        asked = _dpop_error(headers) == "use_dpop_nonce"
    else:
        asked = False
    return next_nonce(headers) if asked else None
