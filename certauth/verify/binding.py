"""Sender-constrained access tokens: the ``cnf`` claim's bindings, checked once every other
check has passed.

A bound token names, in its ``cnf`` (confirmation) claim (RFC 7800 section 3.1), what the
client must show with each request, so that a stolen token is useless on its own:

- ``cnf["x5t#S256"]`` (RFC 8705 section 3.1): the token was issued to a client that
  authenticated with a certificate over mutual TLS; the request must come over a mutual TLS
  connection with that very certificate (its SHA-256 thumbprint).
- ``cnf["jkt"]`` (RFC 9449 section 6.1): the token is DPoP-bound; the request must carry a
  DPoP proof for itself, signed by the key with that RFC 7638 thumbprint, and the token must be
  presented with the ``DPoP`` scheme (sections 7.1 and 7.2).

Pure: no sockets and no clock (``now`` is a parameter). The proof itself is checked by
:func:`certauth.dpop.check_proof`; this module decides whether a proof or certificate is needed
and whether it is the one the token names. Members of ``cnf`` other than these two are ignored,
as RFC 7800 section 3.1 asks of members a recipient does not understand.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias
from urllib.parse import unquote

from cryptography import x509

from certauth import _jose
from certauth.certificates import Certificate
from certauth.dpop import JtiCache, check_proof
from certauth.errors import InvalidArgumentError, TokenValidationError

__all__ = ["BINDING_CHECKS", "ClientCertificate"]

#: The values :attr:`TokenValidationError.check` takes for a binding, in the order they are
#: checked; :func:`certauth.dpop.check_proof`'s ``dpop_*`` refusals come between
#: ``dpop_header`` and ``cnf_jkt``.
BINDING_CHECKS: tuple[str, ...] = (
    "cnf",
    "dpop_scheme",
    "dpop_unbound",
    "cnf_x5t#S256",
    "dpop_header",
    "cnf_jkt",
)

#: The certificate an API's TLS layer saw: DER or PEM bytes, PEM text, a ``cryptography``
#: certificate or a :class:`certauth.Certificate`.
ClientCertificate: TypeAlias = bytes | str | x509.Certificate | Certificate

#: The schemes an access token comes with: RFC 6750 section 2.1 and RFC 9449 section 7.1.
_SCHEMES = {"bearer": "Bearer", "dpop": "DPoP"}
#: An X-Forwarded-Client-Cert value longer than this is not one a proxy wrote for one client
#: (a URL-encoded certificate chain stays far below it).
MAX_XFCC_CHARS = 64 * 1024
_SHA256_HEX = re.compile(r"[0-9A-Fa-f]{64}")
_X5T = "cnf_x5t#S256"


def _fail(check: str, message: str) -> TokenValidationError:
    return TokenValidationError(message, check=check)


# -- the certificate a request came with -------------------------------------------------------


def _parse_certificate(data: bytes) -> x509.Certificate:
    """The one certificate in ``data`` (PEM or DER). :class:`ValueError` says why not."""
    if b"-----BEGIN" in data:
        try:
            found = x509.load_pem_x509_certificates(data)
        except (ValueError, x509.InvalidVersion):
            raise ValueError("not a PEM certificate (no readable CERTIFICATE block)") from None
        if len(found) != 1:
            # A TLS chain lists the client's own certificate first (RFC 8446 section 4.4.2),
            # but a bundle from elsewhere may not: which one the client showed is not certain.
            raise ValueError(
                f"holds {len(found)} certificates; pass only the client's own (the first of "
                "the chain the TLS layer saw)"
            )
        return found[0]
    try:
        return x509.load_der_x509_certificate(data)
    except (ValueError, x509.InvalidVersion):
        raise ValueError("not a PEM or DER certificate") from None


def _thumbprint_of(certificate: ClientCertificate) -> str:
    """``x5t#S256`` of the certificate the TLS layer saw (RFC 8705 section 3.1)."""
    if isinstance(certificate, Certificate):
        return certificate.x5t_s256
    if isinstance(certificate, x509.Certificate):
        return Certificate(certificate).x5t_s256
    data = certificate.encode("utf-8", "replace") if isinstance(certificate, str) else certificate
    try:
        parsed = _parse_certificate(bytes(data))
    except ValueError as exc:
        raise InvalidArgumentError(
            f"client_certificate= {exc}; pass the certificate the TLS layer saw (DER or PEM)"
        ) from None
    return Certificate(parsed).x5t_s256


def _xfcc_elements(value: str) -> list[list[tuple[str, str]]]:
    """The elements of an X-Forwarded-Client-Cert value, each a list of (key, value) pairs.

    Envoy's format: elements separated by ``,`` (one per proxy that appended one), pairs by
    ``;``, key and value by ``=``; keys are case-insensitive; a value holding ``,``, ``;`` or
    ``=`` is double-quoted, with ``\\"`` for a quote inside it. :class:`ValueError` says what
    is wrong.
    """
    elements: list[list[tuple[str, str]]] = [[]]
    key: str | None = None
    text: list[str] = []
    quoted = was_quoted = False
    chars = iter(value)
    for char in chars:
        if quoted:
            if char == "\\":  # an escaped character (\" is a quote in the value)
                text.append(next(chars, ""))
            elif char == '"':
                quoted = False
            else:
                text.append(char)
            continue
        if char == '"':
            quoted = was_quoted = True
        elif char == "=" and key is None:
            key, text = "".join(text).strip(), []
        elif char in ";,":
            _end_pair(elements[-1], key, "".join(text), was_quoted)
            key, text, was_quoted = None, [], False
            if char == ",":
                elements.append([])
        else:
            text.append(char)
    if quoted:
        raise ValueError("a double-quoted value has no closing quote")
    _end_pair(elements[-1], key, "".join(text), was_quoted)
    return [element for element in elements if element]


def _end_pair(pairs: list[tuple[str, str]], key: str | None, text: str, quoted: bool) -> None:
    if key is None:
        if text.strip():
            raise ValueError(f"{text.strip()[:40]!r} is not a key=value pair")
        return
    if not key:
        raise ValueError("a pair has no key before its '='")
    pairs.append((key.lower(), text if quoted else text.strip()))


def _xfcc_thumbprint(value: str) -> str:
    """``x5t#S256`` of the client certificate an X-Forwarded-Client-Cert value describes: its
    ``Hash`` (hex SHA-256 of the DER), else its ``Cert`` (URL-encoded PEM)."""

    def refuse(reason: str) -> TokenValidationError:
        return _fail(
            _X5T,
            f"forwarded_client_cert= is not a usable X-Forwarded-Client-Cert value: {reason}",
        )

    if len(value) > MAX_XFCC_CHARS:
        raise refuse(f"over {MAX_XFCC_CHARS:,} characters")
    try:
        elements = _xfcc_elements(value)
    except ValueError as exc:
        raise refuse(str(exc)) from None
    if not elements:
        raise refuse("it is empty")
    if len(elements) > 1:
        # Each proxy that appends (APPEND_FORWARD) adds an element, and a client can send one
        # of its own to a proxy that forwards it: which element describes the client cannot be
        # told reliably from the header alone.
        raise refuse(
            f"it holds {len(elements)} elements (one per proxy that appended one), and which "
            "describes the client cannot be told reliably; have the proxy in front of this "
            "API set exactly one (Envoy: forward_client_cert_details SANITIZE_SET)"
        )
    (pairs,) = elements
    hashes = [v for k, v in pairs if k == "hash"]
    certs = [v for k, v in pairs if k == "cert"]
    if len(hashes) > 1 or len(certs) > 1:
        raise refuse("its element holds more than one Hash or Cert")
    if hashes:
        if not _SHA256_HEX.fullmatch(hashes[0]):
            raise refuse("Hash is not a hex SHA-256 digest (64 hex digits)")
        return _jose.b64url_encode(binascii.unhexlify(hashes[0]))
    if certs:
        try:
            parsed = _parse_certificate(unquote(certs[0]).encode("utf-8", "replace"))
        except ValueError as exc:
            raise refuse(f"Cert is {exc}") from None
        return Certificate(parsed).x5t_s256
    raise refuse(
        "it has neither Hash nor Cert; have the proxy forward the certificate's hash or the "
        "certificate itself"
    )


# -- what a request presented with its token ---------------------------------------------------


@dataclass(frozen=True)
class _Presented:
    """What a request showed with its token: a client certificate, a DPoP proof and the
    request it is for, the ``Authorization`` scheme. Built once per verification."""

    client_certificate: ClientCertificate | None = None
    forwarded_client_cert: str | None = None
    dpop_proof: str | Sequence[str] | None = None
    htm: str | None = None
    htu: str | None = None
    dpop_nonce: str | None = None
    scheme: str | None = None

    @classmethod
    def build(
        cls,
        *,
        client_certificate: ClientCertificate | None,
        forwarded_client_cert: str | None,
        dpop_proof: str | Sequence[str] | None,
        htm: str | None,
        htu: str | None,
        dpop_nonce: str | None,
        scheme: str | None,
    ) -> _Presented:
        """The arguments, their types checked (a wrong type is a caller's bug, refused at once
        whatever the token). Values a client chose are judged by :meth:`check`."""
        if client_certificate is not None and not isinstance(
            client_certificate, bytes | bytearray | str | x509.Certificate | Certificate
        ):
            raise InvalidArgumentError(
                "client_certificate= takes the certificate the TLS layer saw (DER or PEM "
                "bytes, PEM str, a cryptography x509.Certificate or a certauth.Certificate), "
                f"not {type(client_certificate).__name__}"
            )
        if client_certificate is not None and forwarded_client_cert is not None:
            raise InvalidArgumentError(
                "give client_certificate= (what this server's TLS layer saw) or "
                "forwarded_client_cert= (what a trusted proxy saw), not both"
            )
        for name, value in (
            ("forwarded_client_cert", forwarded_client_cert),
            ("htm", htm),
            ("htu", htu),
            ("dpop_nonce", dpop_nonce),
            ("scheme", scheme),
        ):
            if value is not None and not isinstance(value, str):
                raise InvalidArgumentError(f"{name}= must be a str, not {type(value).__name__}")
        if dpop_proof is not None and not (
            isinstance(dpop_proof, str)
            or (isinstance(dpop_proof, Sequence) and all(isinstance(p, str) for p in dpop_proof))
        ):
            raise InvalidArgumentError(
                "dpop_proof= takes the DPoP header's value (a str), or its values (a list of "
                "str) when the request carried several"
            )
        return cls(
            client_certificate=client_certificate,
            forwarded_client_cert=forwarded_client_cert,
            dpop_proof=dpop_proof,
            htm=htm,
            htu=htu,
            dpop_nonce=dpop_nonce,
            scheme=scheme,
        )

    def check(
        self, token: str, claims: Mapping[str, Any], *, now: float, seen_jti: JtiCache
    ) -> None:
        """Refuse the request unless it shows what the token's ``cnf`` asks for; a token
        without ``cnf`` presented without a scheme or as ``Bearer`` passes as before."""
        confirmation = _confirmation(claims)
        x5t = confirmation.get("x5t#S256")
        jkt = confirmation.get("jkt")
        scheme = self._scheme()
        if jkt is not None and scheme == "Bearer":
            # RFC 9449 section 7.2: a DPoP-bound token sent as a bearer token is refused (the
            # downgrade that would make the binding worthless).
            raise _fail(
                "dpop_scheme",
                "the token is DPoP-bound (cnf jkt) and was presented with the Bearer scheme; "
                "a DPoP-bound token must be sent as 'Authorization: DPoP <token>' with a DPoP "
                "proof (RFC 9449 section 7.2)",
            )
        if jkt is None and scheme == "DPoP":
            # RFC 9449 section 7.1: the DPoP scheme promises a key binding; an unbound token
            # has none, and a proof with it would prove nothing.
            raise _fail(
                "dpop_unbound",
                "the token was presented with the DPoP scheme but is not DPoP-bound (its cnf "
                "has no jkt); the client must request a DPoP-bound token, or send this one "
                "as Bearer",
            )
        if x5t is not None:
            self._check_certificate(x5t)
        if jkt is not None:
            self._check_dpop(token, jkt, now=now, seen_jti=seen_jti)

    def _scheme(self) -> str | None:
        if self.scheme is None:
            return None
        scheme = _SCHEMES.get(self.scheme.strip().lower())
        if scheme is None:
            raise _fail(
                "dpop_scheme",
                f"the Authorization scheme is {self.scheme[:20]!r}; an access token comes as "
                "Bearer (RFC 6750 section 2.1) or DPoP (RFC 9449 section 7.1)",
            )
        return scheme

    def _check_certificate(self, expected: str) -> None:
        # RFC 8705 section 3: the certificate of the mutual TLS connection the request came
        # over must be the one the token was issued to.
        if self.client_certificate is not None:
            presented = _thumbprint_of(self.client_certificate)
        elif self.forwarded_client_cert is not None:
            presented = _xfcc_thumbprint(self.forwarded_client_cert)
        else:
            raise _fail(
                _X5T,
                "the token is bound to a client certificate (cnf x5t#S256) and none was "
                "presented; the request must come over mutual TLS with that certificate: pass "
                "the one the TLS layer saw as client_certificate= (or forwarded_client_cert= "
                "behind a trusted proxy)",
            )
        if presented != expected:
            raise _fail(
                _X5T,
                f"the token is bound to another client certificate than the one presented "
                f"(cnf x5t#S256 {expected!r}, presented {presented!r}); only the client the "
                "token was issued to, with its own certificate, may use it",
            )

    def _check_dpop(self, token: str, jkt: str, *, now: float, seen_jti: JtiCache) -> None:
        # RFC 9449 section 7.1: a DPoP-bound token needs a valid proof (section 4.3) whose key
        # is the one the token is bound to (section 6.1).
        if self.dpop_proof is None:
            raise _fail(
                "dpop_header",
                "the token is DPoP-bound (cnf jkt) and the request has no DPoP proof; the "
                "client must send one in the DPoP header (pass it as dpop_proof=)",
            )
        htm, htu = self.htm, self.htu
        if not htm:
            raise InvalidArgumentError(
                "htm= is required to check the DPoP proof of a DPoP-bound token: the request's "
                "method (e.g. GET)"
            )
        if not htu:
            raise InvalidArgumentError(
                "htu= is required to check the DPoP proof of a DPoP-bound token: the request's "
                "URL, as the client called it"
            )
        proof = check_proof(
            self.dpop_proof,
            htm=htm,
            htu=htu,
            access_token=token.strip(),
            nonce=self.dpop_nonce,
            now=now,
            seen_jti=seen_jti,
        )
        if proof.jkt != jkt:
            raise _fail(
                "cnf_jkt",
                f"the DPoP proof is signed with key {proof.jkt!r}, and the token is bound to "
                f"key {jkt!r} (cnf jkt); only the holder of the token's key may use it",
            )


def _confirmation(claims: Mapping[str, Any]) -> Mapping[str, Any]:
    """The token's ``cnf`` (empty when it has none); a malformed one is refused."""
    if "cnf" not in claims:
        return {}
    cnf = claims["cnf"]
    if not isinstance(cnf, dict):
        # RFC 7800 section 3.1: cnf is a JSON object.
        raise _fail(
            "cnf",
            f"the token's 'cnf' claim is {_json_kind(cnf)}, not a JSON object "
            "(RFC 7800 section 3.1); the token is malformed",
        )
    for member in ("x5t#S256", "jkt"):
        value = cnf.get(member)
        if member in cnf and (not isinstance(value, str) or not value):
            raise _fail(
                "cnf",
                f"the token's cnf {member} is not a thumbprint (a non-empty string); the "
                "token is malformed",
            )
    return cnf


def _json_kind(value: Any) -> str:
    """What a JSON value is, in JSON's words (RFC 8259 section 3)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "an array" if isinstance(value, list) else "a string"
