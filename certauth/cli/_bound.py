"""``certauth token``'s sender-constrained options: ``--mtls`` (RFC 8705), ``--dpop`` (RFC 9449)
and ``--output curl-config``, which hands curl the token with what binds it.

A bound token is useless alone: the API call must present the same TLS client certificate, or
a fresh DPoP proof signed with the same key. ``--output curl-config`` prints a curl config
(``curl --config -`` reads it from stdin) holding the header(s), the certificate files and the
proof for one request, so the token never appears in a command line (``ps`` shows argv).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import click

from certauth.cli._common import PathText, Url

F = TypeVar("F", bound=Callable[..., Any])


def _dpop_check(name: str) -> Callable[[click.Context, click.Parameter, str | None], str | None]:
    """A click callback running ``certauth dpop-proof``'s check ``name`` on a given value;
    that command's module is imported only then (``certauth token`` without --htm/--htu
    never loads it)."""

    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        if value is None:
            return None
        from certauth.cli import dpop

        checked: str | None = dpop._core_check(getattr(dpop, name))(ctx, param, value)
        return checked

    return callback


def binding_options(func: F) -> F:
    """``--mtls``, ``--dpop``, ``--dpop-key``, ``--htm`` and ``--htu``."""
    options = [
        click.option(
            "--mtls",
            is_flag=True,
            help="Authenticate with the certificate in the TLS handshake (RFC 8705 mutual "
            "TLS; needs --issuer or --token-endpoint): the token is bound to the certificate.",
        ),
        click.option(
            "--dpop",
            is_flag=True,
            help="Ask for a DPoP-bound token (RFC 9449), bound to the key in --dpop-key.",
        ),
        click.option(
            "--dpop-key",
            metavar="FILE",
            type=PathText(),
            help="The DPoP key (PEM); created with a fresh P-256 key (mode 0600) if FILE does "
            "not exist. Give the same file to certauth dpop-proof --key.",
        ),
        click.option(
            "--htm",
            metavar="METHOD",
            callback=_dpop_check("_method"),
            help="With --output curl-config: the API request's method (default GET).",
        ),
        click.option(
            "--htu",
            metavar="URL",
            type=Url(),
            callback=_dpop_check("_url"),
            help="With --output curl-config: the API request's URL (the config's url, and the "
            "DPoP proof's htu).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


class Binding:
    """The resolved options: what the credential needs, and what curl-config prints."""

    def __init__(self, output: str, opts: dict[str, Any]) -> None:
        self.mtls: bool = opts.pop("mtls")
        self.dpop: bool = opts.pop("dpop")
        self.dpop_key_path: str | None = opts.pop("dpop_key")
        self.htm: str | None = opts.pop("htm")
        self.htu: str | None = opts.pop("htu")
        if self.dpop_key_path and not self.dpop:
            raise click.UsageError("--dpop-key needs --dpop")
        if self.dpop and not self.dpop_key_path:
            raise click.UsageError(
                "--dpop needs --dpop-key FILE: the key must outlive this process to sign the "
                "proofs of the API calls (certauth dpop-proof --key FILE)"
            )
        if (self.htm or self.htu) and output != "curl-config":
            raise click.UsageError("--htm and --htu go with --output curl-config")
        if output == "curl-config" and not self.htu:
            raise click.UsageError("--output curl-config needs --htu URL: the API request's URL")
        self.key: Any = None

    def credential_kwargs(self) -> dict[str, Any]:
        """``dpop=`` for every credential (the key, loaded or created here)."""
        if not self.dpop:
            return {}
        from certauth.cli.dpop import load_or_create_key

        assert self.dpop_key_path is not None
        self.key = load_or_create_key(self.dpop_key_path)
        return {"dpop": self.key}


def with_cnf(response: dict[str, Any]) -> dict[str, Any]:
    """``--output json``'s object, plus the access token's ``cnf`` claim when it is a JWT
    that has one (read, not verified: it shows what the token is bound to, RFC 7800)."""
    from certauth.errors import TokenValidationError
    from certauth.verify import decode_unverified

    try:
        _, claims = decode_unverified(str(response.get("access_token", "")))
    except TokenValidationError:
        return response  # an opaque token: nothing to show
    cnf = claims.get("cnf")
    return {**response, "cnf": cnf} if isinstance(cnf, dict) else response


#: What curl's config parser unescapes in a double-quoted value (tool_parsecfg.c): a line
#: break or a carriage return written as itself would end the value and start a line of its
#: own, read as another option (a path or a password could then add ``output = ...``).
_ESCAPES = str.maketrans(
    {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}
)


def _quoted(value: str) -> str:
    """A curl config string: double quotes, with backslash escapes for \\, \", line breaks,
    carriage returns and tabs (curl's config file syntax, the --config section of curl's
    manual)."""
    return '"' + value.translate(_ESCAPES) + '"'


def curl_config(
    binding: Binding,
    *,
    token_type: str,
    access_token: str,
    cert_path: str | None,
    key_path: str | None,
    password: str | None,
    ca_file: str | None,
) -> str:
    """The curl config for one API request with the token (see the module docstring)."""
    assert binding.htu is not None
    method = binding.htm or "GET"
    lines = [
        "# certauth: a curl config for one request; it holds a token: pipe it to "
        "curl --config -, never save it where others can read it",
        f"url = {_quoted(binding.htu)}",
        f"request = {_quoted(method)}",
    ]
    scheme = "DPoP" if token_type.lower() == "dpop" else "Bearer"
    lines.append(f"header = {_quoted(f'Authorization: {scheme} {access_token}')}")
    if scheme == "DPoP":
        from certauth.dpop import make_proof

        proof = make_proof(binding.key, htm=method, htu=binding.htu, access_token=access_token)
        lines.append(f"header = {_quoted(f'DPoP: {proof}')}")
    if binding.mtls:
        assert cert_path is not None
        lines += _client_certificate(cert_path, key_path, password)
    if ca_file:
        lines.append(f"cacert = {_quoted(os.path.abspath(ca_file))}")
    return "\n".join(lines) + "\n"


def _client_certificate(cert_path: str, key_path: str | None, password: str | None) -> list[str]:
    """curl's --cert/--key/--cert-type/--pass lines for the certificate ``--cert`` names."""
    from certauth._files import read_input_file
    from certauth.errors import InputFileError

    data = read_input_file(cert_path, what="certificate", error=InputFileError)
    # curl reads --cert as FILE[:PASSWORD], unescaping \\ and \: (tool_getparam.c): a
    # colon in the path must not start a password.
    escaped = os.path.abspath(cert_path).replace("\\", "\\\\").replace(":", "\\:")
    lines = [f"cert = {_quoted(escaped)}"]
    if b"-----BEGIN " not in data:
        # Not PEM: the file loaded as a certificate, so it is PKCS#12 or DER (curl's default
        # --cert-type is PEM).
        pkcs12 = cert_path.lower().endswith((".pfx", ".p12")) or not key_path
        lines.append('cert-type = "P12"' if pkcs12 else 'cert-type = "DER"')
    if key_path:
        lines.append(f"key = {_quoted(os.path.abspath(key_path))}")
        key = read_input_file(key_path, what="private key", error=InputFileError)
        if b"-----BEGIN " not in key:
            if password:
                # OpenSSL loads a DER key file without a password (SSL_FILETYPE_ASN1): curl
                # would fail on it with "unable to set private key file".
                raise InputFileError(
                    f"--key {key_path}: curl cannot read an encrypted DER key; pack it with "
                    "the certificate into a PEM bundle or a PFX (certauth cert bundle "
                    "--password-env VAR) and give that as --cert",
                    path=key_path,
                )
            lines.append('key-type = "DER"')  # the file loaded as a key; curl assumes PEM
    if password:
        lines.append(f"pass = {_quoted(password)}")
    return lines
