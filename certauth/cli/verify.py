"""``certauth decode`` (show a token, verify nothing) and ``certauth verify`` (verify it as a
backend would: signature via the issuer's keys, issuer, audience, expiry, scopes and roles, and
a sender-constrained token's binding to a client certificate or DPoP key).

Tokens are credentials: pass ``-`` and pipe the token on stdin (an argument shows in ``ps``
and in shell history). Neither command ever prints the token itself.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from typing import Any

import click

from certauth.cli._common import (
    CA_FILE_HELP,
    MAX_TIMEOUT,
    TOTAL_TIMEOUT_HELP,
    FiniteFloatRange,
    PathText,
    SpelledChoice,
    Text,
    Url,
    cli_wording,
    emit_json,
    names_options,
    show_retries,
)
from certauth.cli.dpop import _core_check, _method, _nonce, _url
from certauth.errors import LocalInputError

#: Longer input is not a token (certauth.verify refuses tokens over 64 KiB anyway).
_MAX_INPUT = 64 * 1024 + 1
#: The registered time claims (RFC 7519 section 4.1), shown as dates.
_TIME_CLAIMS = ("iat", "nbf", "exp")
#: Largest ``--leeway``: a day of clock skew is already far beyond any real clock's; more only
#: switches the expiry check off.
MAX_LEEWAY = 86400

TOKEN_HELP = "TOKEN is the JWT, or - to read it from stdin (preferred: arguments show in ps)."


def read_token(arg: str) -> str:
    """The token from the argument or, for ``-``, from stdin; a pasted ``Authorization:`` or
    ``Bearer`` prefix is dropped."""
    if arg == "-":
        stream = sys.stdin
        if stream.isatty():
            click.echo("certauth: reading the token from stdin (end with Ctrl-D)", err=True)
        text = stream.read(_MAX_INPUT)
        source = "stdin"
    else:
        text = arg
        source = "the TOKEN argument"
    text = text.strip()
    if text[:14].lower() == "authorization:":
        text = text[14:].strip()
    if text[:7].lower() == "bearer ":
        text = text[7:].strip()
    if not text:
        raise LocalInputError(
            f"no token in {source}; pipe one in, e.g. `certauth token ... | certauth decode -`"
        )
    return text


def _utc(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _span(seconds: float) -> str:
    from certauth.verify.claims import _ago

    return _ago(seconds)


def describe_time(name: str, value: Any, now: float) -> str | None:
    """``2025-01-01 10:00:00 UTC (expires in 59 min)`` for a time claim, ``None`` if it is not
    a number; a number no date can show (``1e308``, ``10**400``, NaN) says so."""
    from certauth.verify.claims import in_date_range

    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not in_date_range(value):
        # The rule verify applies (a TokenValidationError there), shown instead of computed.
        return "not a date: outside years 1-9999 (verify refuses this token)"
    try:
        when = _utc(value)
    except (OverflowError, OSError, ValueError):
        return None
    delta = value - now
    future = delta > 0
    if name == "exp":
        note = f"expires in {_span(delta)}" if future else f"expired {_span(delta)} ago"
    elif name == "nbf":
        note = (
            f"not valid for another {_span(delta)}" if future else f"valid since {_span(delta)} ago"
        )
    else:  # iat in the future means one of the clocks is wrong
        note = (
            f"issued in {_span(delta)}: check the clocks"
            if future
            else f"issued {_span(delta)} ago"
        )
    return f"{when} ({note})"


def _times(claims: dict[str, Any], now: float) -> dict[str, str]:
    shown: dict[str, str] = {}
    for name in _TIME_CLAIMS:
        text = describe_time(name, claims.get(name), now)
        if text is not None:
            shown[name] = text
    return shown


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


@click.command("decode", epilog=TOKEN_HELP)
@click.argument("token_arg", metavar="TOKEN|-")
@click.option("--json", "as_json", is_flag=True, help='Print {"header", "claims", "verified"}.')
def decode(token_arg: str, as_json: bool) -> None:
    """Show a token's header and claims WITHOUT verifying anything.

    Times (iat, nbf, exp) are shown as UTC dates. Nothing is checked: not the signature, the
    issuer, the audience or the expiry. Use `certauth verify` for that. A malformed token is
    bad local input (exit 3).

    \b
    Example:
      certauth token --tenant $TENANT --client-id $APP_ID --scope api://billing/.default \\
        | certauth decode -
    """
    from certauth.errors import TokenValidationError
    from certauth.verify import decode_unverified

    token = read_token(token_arg)
    try:
        header, claims = decode_unverified(token)
    except TokenValidationError as exc:
        raise LocalInputError(f"cannot decode the token: {exc}") from None
    if as_json:
        emit_json({"header": header, "claims": claims, "verified": False})
        return
    now = time.time()
    out = [
        "NOT VERIFIED: decoded only; the signature, issuer, audience and expiry were not "
        "checked (use `certauth verify`).",
        "",
        "Header:",
        _pretty(header),
        "",
        "Claims:",
        _pretty(claims),
    ]
    times = _times(claims, now)
    if times:
        out += ["", "Times:"] + [f"  {name}  {text}" for name, text in times.items()]
    click.echo("\n".join(out))


@click.command("verify", epilog=TOKEN_HELP)
@click.argument("token_arg", metavar="TOKEN|-")
@click.option(
    "--issuer",
    type=Url(),
    help="Issuer URL; keys found by OIDC discovery. {tenantid} matches the token's tid.",
)
@click.option(
    "--jwks-uri",
    type=Url(),
    help="JWKS URL (with --issuer: keys from here, issuer still checked; B2C).",
)
@click.option(
    "--audience",
    "audiences",
    multiple=True,
    type=Text(),
    help="Accepted aud: application id and/or App ID URI (repeatable; any one matches).",
)
@click.option(
    "--require-scope",
    "scopes",
    multiple=True,
    type=Text(),
    help="Scope the token must hold (repeatable).",
)
@click.option(
    "--require-role",
    "roles",
    multiple=True,
    type=Text(),
    help="App role the token must hold (repeatable).",
)
@click.option(
    "--leeway",
    type=click.IntRange(min=0, max=MAX_LEEWAY),
    default=60,
    show_default=True,
    help="Clock skew allowed for exp/nbf, in seconds.",
)
@click.option("--ca-file", metavar="FILE", type=PathText(), help=CA_FILE_HELP)
@click.option(
    "--timeout",
    type=FiniteFloatRange(min=0.1, max=MAX_TIMEOUT),
    default=10.0,
    show_default=True,
    help="Seconds per HTTP attempt (discovery, JWKS): connect, TLS, status line, headers, body.",
)
@click.option(
    "--total-timeout",
    type=FiniteFloatRange(min=0.1, max=MAX_TIMEOUT),
    metavar="SECONDS",
    help=TOTAL_TIMEOUT_HELP,
)
@click.option(
    "--client-cert",
    metavar="FILE",
    type=PathText(),
    help="The client certificate (PEM or DER) the API's TLS layer saw: a certificate-bound "
    "token (cnf x5t#S256) must have been issued for it.",
)
@click.option(
    "--forwarded-client-cert",
    metavar="VALUE",
    type=Text(),
    help="Instead of --client-cert: the X-Forwarded-Client-Cert header a trusted proxy (Envoy) "
    "set; exactly one element, its Hash or Cert is used.",
)
@click.option(
    "--dpop-proof",
    metavar="PROOF",
    type=Text(),
    help="The request's DPoP header: a DPoP-bound token (cnf jkt) needs a proof by its key "
    "(with --htm and --htu).",
)
@click.option(
    "--htm",
    metavar="METHOD",
    type=Text(),
    callback=_core_check(_method),
    help="The method of the request the DPoP proof came with (e.g. GET).",
)
@click.option(
    "--htu",
    metavar="URL",
    type=Url(),
    callback=_core_check(_url),
    help="The URL of the request the DPoP proof came with, as the client called it.",
)
@click.option(
    "--dpop-nonce",
    metavar="NONCE",
    type=Text(),
    callback=_core_check(_nonce),
    help="The DPoP-Nonce the API requires in proofs: a proof without it is refused.",
)
@click.option(
    "--scheme",
    type=SpelledChoice(["Bearer", "DPoP"]),
    help="The Authorization scheme the token came with: a DPoP-bound token sent as Bearer is "
    "refused, and an unbound one sent as DPoP.",
)
@click.option(
    "--json", "as_json", is_flag=True, help='Print {"valid", "claims"} or {"valid", "check", ...}.'
)
@names_options
def verify(
    token_arg: str,
    issuer: str | None,
    jwks_uri: str | None,
    audiences: tuple[str, ...],
    scopes: tuple[str, ...],
    roles: tuple[str, ...],
    leeway: int,
    ca_file: str | None,
    timeout: float,
    total_timeout: float | None,
    client_cert: str | None,
    forwarded_client_cert: str | None,
    dpop_proof: str | None,
    htm: str | None,
    htu: str | None,
    dpop_nonce: str | None,
    scheme: str | None,
    as_json: bool,
) -> None:
    """Verify an access token as a backend does: signature (issuer's keys), issuer,
    audience, expiry, scopes and roles, and a sender-constrained token's binding.

    Exit 0 and the claims when valid; exit 6 and the failed check (format, algorithm, kid,
    signature, issuer, audience, expired, not_yet_valid, scope, role; for a bound token cnf,
    dpop_scheme, dpop_unbound, cnf_x5t#S256, dpop_header, the proof's dpop_*, cnf_jkt)
    otherwise; exit 5 when the keys cannot be fetched (a failed key fetch is retried once,
    announced on stderr). Entra ID issuers: https://login.microsoftonline.com/TENANT/v2.0
    (v2 tokens), https://sts.windows.net/TENANT/ (v1); multi-tenant apps use {tenantid} in
    place of TENANT.

    A certificate-bound token (RFC 8705) needs --client-cert (or --forwarded-client-cert); a
    DPoP-bound token (RFC 9449) needs --dpop-proof, --htm and --htu.

    \b
    Example:
      printf '%s' "$TOKEN" | certauth verify - \\
        --issuer https://login.microsoftonline.com/$TENANT/v2.0 \\
        --audience $API_APP_ID --audience api://billing --require-role Invoices.Read
    \b
      printf '%s' "$TOKEN" | certauth verify - --issuer "$ISSUER" --audience api://billing \\
        --scheme DPoP --dpop-proof "$PROOF" --htm GET --htu https://billing.example/invoices
    """
    from dataclasses import replace

    from certauth.errors import CertauthError, TokenValidationError, TransportError
    from certauth.verify import TokenVerifier, decode_unverified
    from certauth.verify.keysource import DEFAULT_FETCH_RETRY

    if not audiences:
        raise click.UsageError(
            "missing --audience: the API's application id and/or App ID URI (e.g. api://billing)"
        )
    if not (issuer or jwks_uri):
        raise click.UsageError("missing --issuer URL or --jwks-uri URL (where the keys are)")
    _check_binding_options(client_cert, forwarded_client_cert, dpop_proof, htm, htu, dpop_nonce)
    certificate = _read_client_certificate(client_cert) if client_cert else None
    token = read_token(token_arg)
    try:
        with (
            TokenVerifier(
                issuer=issuer,
                jwks_uri=jwks_uri,
                audience=audiences,
                required_scopes=scopes,
                required_roles=roles,
                leeway=leeway,
                verify=ca_file,
                timeout=timeout,
                retry=replace(DEFAULT_FETCH_RETRY, total_timeout=total_timeout),
            ) as verifier,
            show_retries(),
        ):
            claims = verifier.verify(
                token,
                client_certificate=certificate,
                forwarded_client_cert=forwarded_client_cert,
                dpop_proof=dpop_proof,
                htm=htm,
                htu=htu,
                dpop_nonce=dpop_nonce,
                scheme=scheme,
            )
    except TokenValidationError as exc:
        if as_json:
            emit_json({"valid": False, "check": exc.check, "error": cli_wording(exc.message)})
        raise TokenValidationError(
            f"the token failed verification ({exc.check}): {exc.message}", check=exc.check
        ) from None
    except CertauthError as exc:
        if as_json:
            check = "fetch" if isinstance(exc, TransportError) else "configuration"
            emit_json({"valid": False, "check": check, "error": cli_wording(exc.message)})
        raise
    header, _ = decode_unverified(token)
    if as_json:
        emit_json({"valid": True, "header": header, "claims": claims})
        return
    _print_valid(header, claims, issuer=issuer, now=time.time())


def _check_binding_options(
    client_cert: str | None,
    forwarded_client_cert: str | None,
    dpop_proof: str | None,
    htm: str | None,
    htu: str | None,
    dpop_nonce: str | None,
) -> None:
    """Refuse option combinations that cannot describe one request (usage errors, exit 2)."""
    if client_cert and forwarded_client_cert:
        raise click.UsageError(
            "give --client-cert (the certificate the API saw) or --forwarded-client-cert (what "
            "a trusted proxy saw), not both"
        )
    if dpop_proof and not (htm and htu):
        raise click.UsageError(
            "--dpop-proof needs --htm METHOD and --htu URL: the request the proof was made for"
        )
    if not dpop_proof and (htm or htu or dpop_nonce):
        raise click.UsageError(
            "--htm, --htu and --dpop-nonce describe the request of a DPoP proof; give "
            "--dpop-proof too"
        )


def _read_client_certificate(path: str) -> Any:
    """The certificate in ``path`` (PEM or DER), for the binding check; a file that is not
    one certificate is bad local input (exit 3) naming it."""
    from certauth._files import read_input_file
    from certauth.errors import CertificateError
    from certauth.verify.binding import _parse_certificate

    data = read_input_file(path, what="client certificate", error=CertificateError)
    try:
        return _parse_certificate(data)
    except ValueError as exc:
        raise CertificateError(f"{path}: {exc}", path=path) from None


def _print_valid(
    header: dict[str, Any], claims: dict[str, Any], *, issuer: str | None, now: float
) -> None:
    checked = "signature, issuer, audience, expiry" if issuer else "signature, audience, expiry"
    lines = [f"VALID: {checked} checked (key {header.get('kid')!r}, {header.get('alg')})."]
    if not issuer:
        lines.append(
            "  note: no --issuer given; the issuer was checked only where the keys name one"
        )
    for label, value in (
        ("issuer", claims.get("iss")),
        ("audience", claims.get("aud")),
        ("client", claims.get("azp") or claims.get("appid")),
        ("tenant", claims.get("tid")),
        (
            "roles",
            " ".join(map(str, roles)) if isinstance(roles := claims.get("roles"), list) else None,
        ),
        ("scopes", claims.get("scp") or claims.get("scope")),
    ):
        if value:
            lines.append(f"  {label:<9}{value}")
    for name, text in _times(claims, now).items():
        lines.append(f"  {name:<9}{text}")
    cnf = claims.get("cnf")
    if isinstance(cnf, dict):
        if "x5t#S256" in cnf:
            lines.append(f"  {'cnf':<9}x5t#S256 {cnf['x5t#S256']} (the client certificate matches)")
        if "jkt" in cnf:
            lines.append(f"  {'cnf':<9}jkt {cnf['jkt']} (the DPoP proof's key matches)")
    lines += ["", "Claims:", _pretty(claims)]
    click.echo("\n".join(lines))
