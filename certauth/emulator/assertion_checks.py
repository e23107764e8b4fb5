"""Entra ID's checks of a client assertion (RFC 7523), certificate or federated.

The header, the key and its strength, the certificate's validity, the signature (through
:mod:`certauth._jose`), ``iss``/``sub``, ``aud`` and the time window, in the order Entra ID
applies them (see :mod:`certauth.emulator.checks` for where each rule comes from); strict mode
adds RFC 7523 section 3 to the letter.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import urllib.parse
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from certauth import _jose
from certauth.emulator.entra_errors import EntraError, missing_parameter
from certauth.emulator.registry import (
    App,
    FederatedCredential,
    Tenant,
)
from certauth.emulator.requests import Policy, ReplayCache, TokenRequest
from certauth.emulator.tokens import AuthMethod
from certauth.protocol import CLIENT_ASSERTION_TYPE

#: Entra ID takes client assertions signed with the RSA algorithms of RFC 7518 (RS* and PS*;
#: the certificate-credentials page asks for PS256); anything else is AADSTS5002738.
SUPPORTED_ASSERTION_ALGORITHMS = tuple(
    name for name, spec in _jose.ALGORITHMS.items() if spec.kty == "RSA"
)
_CERT_DOCS = (
    " Review the documentation at "
    "https://learn.microsoft.com/entra/identity-platform/certificate-credentials ."
)


# -- client assertions (RFC 7523) -------------------------------------------------------------


def _printable(value: str, limit: int = 100) -> str:
    # Echoed into an error text: no line breaks, which would forge its "Trace ID:" lines.
    return "".join(c if c.isprintable() else "?" for c in value[:limit])


def _malformed(detail: str = "") -> EntraError:
    return EntraError(50027, f"JWT token is invalid or malformed.{detail}")


def _no_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity, which are not JSON (RFC 8259 section 6); Entra's
    # parser refuses them.
    raise ValueError(f"{name} is not JSON")


def _json_part(part: str) -> dict[str, Any]:
    try:
        value = json.loads(_jose.b64url_decode_lenient(part), parse_constant=_no_constant)
    except (ValueError, RecursionError):  # RecursionError: [[[[...]]]]
        raise _malformed() from None
    if not isinstance(value, dict):
        raise _malformed()
    return value


def _ticks(epoch: float) -> str:
    # .NET round-trip format ("o"), as in Entra's AADSTS700024 text.
    try:
        when = dt.datetime.fromtimestamp(epoch, dt.timezone.utc)
    except (OverflowError, OSError, ValueError):  # an assertion's exp of 1e300
        return f"{epoch:.0f}"
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond * 10:07d}Z"


def _numeric(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError, OverflowError):  # a string, a list, 10**400
        number = math.nan
    if not isinstance(value, (int, float)) or not math.isfinite(number):
        raise _malformed(f" Invalid JWT token. The '{name}' claim is not a number.")
    return number


def check_assertion(
    assertion: str,
    form: Mapping[str, str],
    app: App,
    tenant: Tenant,
    request: TokenRequest,
    *,
    now: float,
    policy: Policy,
    replay: ReplayCache | None,
) -> tuple[AuthMethod, str, str | None]:
    """Check a client assertion; returns the method, its ``alg`` and the signer's x5t#S256."""
    assertion_type = form.get("client_assertion_type", "").strip()
    if not assertion_type:
        raise missing_parameter("client_assertion_type")
    if assertion_type != CLIENT_ASSERTION_TYPE:
        raise _malformed(
            f" The client_assertion_type '{assertion_type}' is not supported; use "
            f"'{CLIENT_ASSERTION_TYPE}'."
        )
    parts = assertion.strip().split(".")
    # An empty signature is well-formed (``alg: none``); the algorithm check refuses it.
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise _malformed()
    header = _json_part(parts[0])
    claims = _json_part(parts[1])
    try:
        signature = _jose.b64url_decode_lenient(parts[2])
    except ValueError:
        raise _malformed() from None
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii", errors="replace")

    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in SUPPORTED_ASSERTION_ALGORITHMS:
        raise EntraError(
            5002738,
            f"Invalid JWT token. '{alg}' is not a supported signature algorithm. Supported "
            f"signing algorithms are: '{','.join(SUPPORTED_ASSERTION_ALGORITHMS)}'",
        )

    issuer = claims.get("iss")
    if app.federated and isinstance(issuer, str) and issuer.lower() != app.client_id.lower():
        federated = [f for f in app.federated if f.issuer == issuer]
        if federated:
            method = check_federated(
                alg, header, claims, signing_input, signature, federated, now=now, policy=policy
            )
            return method, alg, None

    x5t_s256 = header.get("x5t#S256")
    x5t = header.get("x5t")
    if not isinstance(x5t_s256, str) and not isinstance(x5t, str):
        raise _malformed(" Invalid JWT token. No certificate thumbprint specified in token header.")
    registered = None
    shown = ""
    for form_name, value in (("x5t#S256", x5t_s256), ("x5t", x5t)):
        if not isinstance(value, str):
            continue
        try:
            digest = _jose.b64url_decode_lenient(value)
        except ValueError:
            shown = shown or _printable(value)
            continue
        shown = shown or digest.hex().upper()
        registered = app.find_certificate(
            sha256=digest if form_name == "x5t#S256" else None,
            sha1=digest if form_name == "x5t" else None,
            accepted_at=now,  # Graph's key changes reach the token endpoint after a delay
        )
        if registered is not None:
            break
    if registered is None:
        raise EntraError(
            700027,
            "Client assertion failed signature validation. [Reason - The key was not found., "
            f"Thumbprint of key used by client: '{shown}', Please visit the Azure Portal, Graph "
            "Explorer or directly use MS Graph to see configured keys for app Id "
            f"'{app.client_id}'.]",
        )
    if policy.strict:
        wanted = "x5t#S256" if alg.startswith("PS") else "x5t"
        if not isinstance(header.get(wanted), str):
            raise _malformed(
                f" Invalid JWT token. (strict mode) a {alg} assertion must name its certificate "
                f"with '{wanted}' (MSAL pairs PS256 with x5t#S256 and RS256 with x5t); Entra ID "
                "accepts either."
            )
    key = registered.public_key
    if not isinstance(key, rsa.RSAPublicKey):
        raise EntraError(5002730, "Invalid JWT token. Unsupported key for the signing algorithm.")
    if key.key_size < _jose.MIN_RSA_BITS:
        raise EntraError(
            50032,
            f"WeakRsaKey: the certificate '{registered.thumbprint_sha1}' has a {key.key_size}-bit "
            f"RSA key; at least {_jose.MIN_RSA_BITS} bits are required.",
        )
    if not registered.not_before.timestamp() <= now <= registered.not_after.timestamp():
        raise EntraError(
            1000502,
            f"The certificate with thumbprint '{registered.thumbprint_sha1}' used to sign the "
            f"client assertion is outside its validity period. Current time: {_ticks(now)}, "
            f"certificate valid from {_ticks(registered.not_before.timestamp())} to "
            f"{_ticks(registered.not_after.timestamp())}.",
        )
    if not _jose.verify_signature(key, alg, signing_input, signature):
        start = registered.not_before.strftime("%m/%d/%Y %H:%M:%S")
        end = registered.not_after.strftime("%m/%d/%Y %H:%M:%S")
        raise EntraError(
            700027,
            "Client assertion contains an invalid signature. [Reason - The provided signature "
            "value did not match the expected signature value., Thumbprint of key used by "
            f"client: '{registered.thumbprint_sha1}', Found key 'Start={start}, End={end}']",
        )

    subject = claims.get("sub")
    if issuer != subject:
        raise EntraError(
            50048,
            f"Subject mismatches Issuer claim in the client assertion for application "
            f"'{app.client_id}'.{_CERT_DOCS}",
        )
    if not isinstance(issuer, str) or issuer.lower() != app.client_id.lower():
        raise EntraError(
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter."
            + _CERT_DOCS,
        )
    _check_audience(claims.get("aud"), tenant, request, policy)
    _check_time(claims, now=now, policy=policy)
    if policy.strict:
        _check_strict_claims(claims, app, now=now, policy=policy, replay=replay)
    thumbprint = _jose.b64url_encode(registered.sha256)
    return "certificate", alg, thumbprint


def _check_audience(aud: Any, tenant: Tenant, request: TokenRequest, policy: Policy) -> None:
    if isinstance(aud, list):
        if len(aud) > 1:
            raise EntraError(
                5002741,
                "The client assertion contains more than one audience ('aud'); send exactly "
                "one: the token endpoint URL.",
            )
        aud = aud[0] if aud else None
    if not isinstance(aud, str) or not _audience_matches(aud, tenant, request, policy):
        raise EntraError(
            700023, "Client assertion audience claim does not match Realm issuer." + _CERT_DOCS
        )


def _audience_matches(aud: str, tenant: Tenant, request: TokenRequest, policy: Policy) -> bool:
    if policy.strict:
        # RFC 7523 section 3, item 3: the token endpoint URL the assertion is presented to.
        return aud == request.url
    # Entra ID takes the v1 or the v2 token endpoint of this realm (tenant id or a domain),
    # on the host the request was sent to: the login server, as the certificate-credentials
    # page says of 'aud' (https://learn.microsoft.com/entra/identity-platform/certificate-credentials).
    parsed = urllib.parse.urlsplit(aud)
    base = urllib.parse.urlsplit(request.base_url)
    if (parsed.scheme.lower(), parsed.netloc.lower()) != (base.scheme, base.netloc.lower()):
        return False
    if parsed.query or parsed.fragment:
        return False
    segments = parsed.path.strip("/").split("/")
    if not segments or segments[0].lower() not in {tenant.tenant_id, *tenant.domains}:
        return False
    return [s.lower() for s in segments[1:]] in (["oauth2", "v2.0", "token"], ["oauth2", "token"])


def _check_time(claims: Mapping[str, Any], *, now: float, policy: Policy) -> None:
    exp = _numeric(claims, "exp")
    nbf = _numeric(claims, "nbf")
    if exp is None:
        raise _malformed(" Invalid JWT token. The token has no expiration ('exp') claim.")
    if now > exp + policy.skew or (nbf is not None and now + policy.skew < nbf):
        raise EntraError(
            700024,
            f"Client assertion is not within its valid time range. Current time: {_ticks(now)}, "
            f"assertion valid from {_ticks(nbf or 0)}, expiry time of assertion {_ticks(exp)}."
            + _CERT_DOCS,
        )


def _check_strict_claims(
    claims: Mapping[str, Any],
    app: App,
    *,
    now: float,
    policy: Policy,
    replay: ReplayCache | None,
) -> None:
    exp = _numeric(claims, "exp") or 0.0
    start = _numeric(claims, "nbf") or _numeric(claims, "iat") or now
    if exp - start > policy.max_assertion_lifetime:
        raise EntraError(
            700024,
            f"Client assertion is not within its valid time range: (strict mode) it is valid "
            f"for {int(exp - start)} s, more than the {policy.max_assertion_lifetime} s cap "
            "(Entra ID sets no cap but recommends 5-10 minutes).",
        )
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        raise _malformed(
            " Invalid JWT token. (strict mode) the assertion has no 'jti' claim "
            "(RFC 7523 section 3, item 7)."
        )
    if replay is not None and not replay.add(
        app.client_id, jti, expires=exp + policy.skew, now=now
    ):
        raise _malformed(
            f" Invalid JWT token. (strict mode) the assertion's jti '{jti}' was already used; "
            "build a new assertion for each request (RFC 7523 section 3, item 7). Entra ID "
            "accepts a reused assertion."
        )


def check_federated(
    alg: str,
    header: Mapping[str, Any],
    claims: Mapping[str, Any],
    signing_input: bytes,
    signature: bytes,
    candidates: list[FederatedCredential],
    *,
    now: float,
    policy: Policy,
) -> AuthMethod:
    """A token from a trusted external issuer (workload identity federation)."""
    kid = header.get("kid")
    keys = [
        key
        for credential in candidates
        for key_id, key in credential.keys
        if kid is None or key_id is None or key_id == kid
    ]
    if not any(_jose.verify_signature(key, alg, signing_input, signature) for key in keys):
        raise EntraError(
            700027,
            "Client assertion contains an invalid signature. [Reason - The key was not "
            f"found among the keys of the federated issuer '{claims.get('iss')}'.]",
        )
    subject = claims.get("sub")
    aud = claims.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    if not any(
        c.subject == subject and any(a in c.audiences for a in audiences) for c in candidates
    ):
        raise EntraError(
            70021,
            "No matching federated identity record found for presented assertion. Assertion "
            f"Issuer: '{claims.get('iss')}'. Assertion Subject: '{subject}'. Assertion "
            f"Audience: '{','.join(str(a) for a in audiences)}'.",
        )
    _check_time(claims, now=now, policy=policy)
    return "federated"
