"""The issuer's signing keys: JWKs loaded as keys (RFC 7517, RFC 7518 section 6), the
:class:`KeySet` of a JWKS document, choosing the key for a token, and checking its signature.

The key material and the signature arithmetic are :mod:`certauth._jose`'s; this module adds the
verifier's policy: which JWKs count as signature keys, which key a token may use (RFC 8725
section 3.1: the algorithm must fit the key) and the words of each refusal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from certauth import _jose
from certauth.errors import CertauthError, ConfigurationError
from certauth.verify.jwt import _fail, _Parsed

PublicKey = _jose.PublicKey


@dataclass(frozen=True)
class _Key:
    kid: str | None
    kty: str
    public_key: PublicKey = field(repr=False)
    alg: str | None = None
    crv: str | None = None
    #: Entra's v2 key sets name the issuer each key signs for (``{tenantid}`` templated).
    issuer: str | None = None

    def describe(self) -> str:
        if isinstance(self.public_key, rsa.RSAPublicKey):
            return f"RSA-{self.public_key.key_size}"
        return f"EC {self.crv}"

    def fits(self, alg: str) -> str | None:
        """Why this key cannot verify ``alg`` (``None`` if it can)."""
        # RFC 8725 section 3.1: the algorithm must fit the key, never the other way round.
        if self.alg is not None and self.alg != alg:
            return f"the key is published for {self.alg} only (its JWK 'alg')"
        try:
            # The key's kind and curve, then RFC 7518 section 3.3's minimum RSA size.
            _jose.check_key(self.public_key, alg)
        except (TypeError, ValueError) as exc:
            return str(exc)
        return None


def _load_jwk(jwk: Mapping[str, Any]) -> _Key:
    """One JWK as a key object; raises ValueError saying why it is unusable."""
    kid = jwk.get("kid") if isinstance(jwk.get("kid"), str) else None
    alg = jwk.get("alg") if isinstance(jwk.get("alg"), str) else None
    issuer = jwk.get("issuer") if isinstance(jwk.get("issuer"), str) else None
    # RFC 7517 sections 4.2/4.3: a key marked for encryption only is not a signature key.
    use = jwk.get("use")
    if use is not None and use != "sig":
        raise ValueError(f"'use' is {use!r}, not 'sig'")
    ops = jwk.get("key_ops")
    if isinstance(ops, list) and "verify" not in ops:
        raise ValueError("'key_ops' does not allow 'verify'")
    if alg is not None and alg not in _jose.ALGORITHMS:
        raise ValueError(f"'alg' {alg!r} is not an asymmetric signature algorithm")
    # Symmetric ("oct") keys are never loaded: a shared secret cannot prove who signed.
    # EC points are checked to lie on their curve (invalid-curve attacks).
    public_key = _jose.jwk_to_public_key(jwk)
    if isinstance(public_key, rsa.RSAPublicKey):
        return _Key(kid, "RSA", public_key, alg=alg, issuer=issuer)
    return _Key(kid, "EC", public_key, alg=alg, crv=jwk["crv"], issuer=issuer)


class KeySet:
    """The issuer's public signing keys, parsed once from a JWKS (RFC 7517 section 5).

    Keys that cannot verify signatures (symmetric, encryption-only, malformed) are skipped;
    :attr:`skipped` says why, for error messages.
    """

    def __init__(self, keys: Iterable[_Key], *, source: str, skipped: Sequence[str] = ()) -> None:
        self.keys: tuple[_Key, ...] = tuple(keys)
        self.source = source
        self.skipped: tuple[str, ...] = tuple(skipped)

    @classmethod
    def from_jwks(
        cls,
        document: Any,
        *,
        source: str = "the JWKS",
        error: type[CertauthError] = ConfigurationError,
    ) -> KeySet:
        """Parse a JWKS document (``{"keys": [...]}``); ``error`` is raised if it is not one."""
        if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
            raise error(f"{source}: not a JWKS (a JSON object with a 'keys' list)")
        keys: list[_Key] = []
        skipped: list[str] = []
        for index, entry in enumerate(document["keys"]):
            name = entry.get("kid") if isinstance(entry, Mapping) else None
            label = f"kid={name!r}" if isinstance(name, str) else f"key #{index}"
            if not isinstance(entry, Mapping):
                skipped.append(f"{label}: not a JSON object")
                continue
            try:
                keys.append(_load_jwk(entry))
            except ValueError as exc:
                skipped.append(f"{label}: {exc}")
        return cls(keys, source=source, skipped=skipped)

    @property
    def kids(self) -> tuple[str, ...]:
        """The key ids, in JWKS order."""
        return tuple(k.kid for k in self.keys if k.kid is not None)

    def __len__(self) -> int:
        return len(self.keys)

    def __repr__(self) -> str:
        return f"KeySet({self.source!r}, kids={list(self.kids)})"

    def select(self, parsed: _Parsed) -> tuple[_Key, ...]:
        """The keys that may have signed this token: empty when its ``kid`` is not in the set,
        normally one, several when the JWKS lists that ``kid`` more than once (each is tried:
        a ``kid`` is a hint, not a unique name, RFC 7517 section 4.5).

        Raises ``algorithm`` when the ``kid`` names only keys that do not fit the token's
        ``alg``, and ``kid`` when the token names no key and several could fit.
        """
        alg = parsed.alg
        kid = parsed.kid
        if kid is not None:
            candidates = [k for k in self.keys if k.kid == kid]
            if not candidates:
                return ()
            reasons = []
            fitting = []
            for key in candidates:
                reason = key.fits(alg)
                if reason is None:
                    fitting.append(key)
                else:
                    reasons.append(reason)
            if fitting:
                return tuple(fitting)
            raise _fail(
                "algorithm",
                f"the token's alg {alg} does not fit its key kid={kid!r} ({'; '.join(reasons)}); "
                "a token whose algorithm does not match its key is refused (RFC 8725 section 3.1)",
            )
        fitting = [k for k in self.keys if k.fits(alg) is None]
        if len(fitting) == 1:
            return (fitting[0],)
        if not fitting:
            return ()
        raise _fail(
            "kid",
            f"the token has no 'kid' header and {self.source} has {len(fitting)} keys for {alg}; "
            "the issuer must name its signing key",
        )


def _signature_ok(alg: str, key: _Key, signing_input: bytes, signature: bytes) -> bool:
    # RSASSA-PKCS1-v1_5, RSASSA-PSS, or ECDSA in its R || S form (RFC 7518 sections 3.3-3.5).
    return _jose.verify_signature(key.public_key, alg, signing_input, signature)
