"""``certauth dpop-proof``: print a DPoP proof (RFC 9449) for one request, for shell users.

The key lives in ``--key FILE``: created (0600, a fresh EC P-256 key) the first time the file
is missing, read every time after, never overwritten. A DPoP-bound token works only with
proofs from the key it was bound to, so the same file must be used for every call; the
creation is announced on stderr with the key's ``jkt`` so a mistyped path shows at once.
The access token (hashed into ``ath``) comes from an environment variable or a file, never
from argv (which shows in ``ps`` and in shell history).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from certauth.cli._common import (
    PathText,
    Text,
    Url,
    VariableName,
    emit_json,
    names_options,
)
from certauth.errors import CertificateError, InvalidArgumentError, LocalInputError

EPILOG = """\b
Examples:
  certauth dpop-proof --key dpop.key --htm POST --htu https://login.example/token
  export ACCESS_TOKEN=...   # from the token endpoint, token_type DPoP
  curl -H "Authorization: DPoP $ACCESS_TOKEN" \\
       -H "DPoP: $(certauth dpop-proof --key dpop.key --htm GET \\
                   --htu https://api.example/items --access-token-env ACCESS_TOKEN)" \\
       https://api.example/items

\b
--key FILE is created (mode 0600, a fresh EC P-256 key) when it does not exist, and only read
afterwards: use the same file for every proof of a token, or the server refuses them.
"""


def _core_check(check: Any) -> Any:
    """A click callback running one of :mod:`certauth.dpop`'s checks: its refusal becomes a
    usage error that names the option."""

    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            check(value)
        except InvalidArgumentError as exc:
            raise click.BadParameter(exc.message, ctx, param) from None
        return value

    return callback


def _method(value: str) -> None:
    from certauth.dpop import check_method

    check_method(value)


def _url(value: str) -> None:
    from certauth.dpop import normalize_htu

    normalize_htu(value)


def _nonce(value: str) -> None:
    from certauth.dpop import check_nonce

    check_nonce(value)


def load_or_create_key(path: str) -> Any:
    """The DPoP key in ``path``; a fresh P-256 key written there first if nothing is there."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from certauth._files import OutputFile, read_input_file, write_files_atomically
    from certauth.dpop import DPoPKey
    from certauth.errors import OutputExistsError

    if not os.path.lexists(path):
        key = DPoPKey.generate()
        try:
            write_files_atomically([OutputFile(Path(path), key.private_key_pem(), secret=True)])
        except OutputExistsError:
            pass  # another process created it meanwhile: use that one, read below
        except LocalInputError:
            raise CertificateError(
                f"{path}: cannot create the DPoP key there; check that the directory exists "
                "and is writable",
                path=path,
            ) from None
        else:
            click.echo(
                f"certauth: created a new DPoP key in {path} (jkt {key.thumbprint}); "
                "use this file for every proof of the tokens bound to it",
                err=True,
            )
            return key
    data = read_input_file(path, what="DPoP key", error=CertificateError)
    try:
        private = load_pem_private_key(data, password=None)
    except TypeError:
        raise CertificateError(
            f"{path}: the DPoP key is encrypted; certauth keeps DPoP keys as unencrypted "
            "PKCS#8 PEM (mode 0600)",
            path=path,
        ) from None
    except (ValueError, UnicodeError):
        raise CertificateError(
            f"{path}: not a PEM private key; name a DPoP key file, or a new path to create one",
            path=path,
        ) from None
    try:
        return DPoPKey.from_private_key(private)
    except LocalInputError as exc:
        raise CertificateError(f"{path}: {exc.message}", path=path) from None


def _access_token(env: str | None, file: str | None) -> str | None:
    if env and file:
        raise InvalidArgumentError(
            "give either --access-token-env or --access-token-file, not both"
        )
    if env:
        token = os.environ.get(env)
        if not token or not token.strip():
            state = "not set" if token is None else "empty"
            raise LocalInputError(
                f"--access-token-env {env}: the environment variable is {state}; export the "
                "access token in it or name another variable"
            )
        token, where = token.strip(), f"--access-token-env {env}"
    elif file:
        from certauth._files import read_first_line

        token, where = (
            read_first_line(file, what="access token").strip(),
            f"--access-token-file {file}",
        )
    else:
        return None
    if not token.isascii() or any(char.isspace() for char in token):
        # RFC 6750 section 2.1: an access token is a b64token, printable ASCII without spaces.
        raise LocalInputError(f"{where}: does not hold an access token (not printable ASCII)")
    return token


@click.command("dpop-proof", epilog=EPILOG)
@click.option(
    "--htm",
    required=True,
    type=Text(example="GET"),
    callback=_core_check(_method),
    help="The request's HTTP method, as sent (GET, POST...).",
)
@click.option(
    "--htu",
    required=True,
    type=Url(),
    callback=_core_check(_url),
    help="The request's URL (query and fragment are left out of the proof).",
)
@click.option(
    "--key",
    "key_path",
    required=True,
    metavar="FILE",
    type=PathText(),
    help="The DPoP key (PEM); created with a fresh P-256 key if FILE does not exist.",
)
@click.option(
    "--access-token-env",
    metavar="VAR",
    type=VariableName(),
    help="Bind the proof to the access token in environment variable VAR (adds ath).",
)
@click.option(
    "--access-token-file",
    metavar="FILE",
    type=PathText(),
    help="Bind the proof to the access token on the first line of FILE (adds ath).",
)
@click.option(
    "--nonce",
    type=Text(),
    callback=_core_check(_nonce),
    help="The server's DPoP-Nonce to include.",
)
@click.option("--json", "as_json", is_flag=True, help='Print {"proof", "header", "claims", "jkt"}.')
@names_options
def dpop_proof(
    htm: str,
    htu: str,
    key_path: str,
    access_token_env: str | None,
    access_token_file: str | None,
    nonce: str | None,
    as_json: bool,
) -> None:
    """Print a DPoP proof JWT (RFC 9449) for one HTTP request.

    Put it in the request's DPoP header; a resource request also needs the access token
    (--access-token-env/--access-token-file) so the proof carries its hash.

    \b
    Example:
      certauth dpop-proof --key dpop.key --htm GET --htu https://api.example/items
    """
    import json

    from certauth import _jose
    from certauth.dpop import make_proof

    access_token = _access_token(access_token_env, access_token_file)
    key = load_or_create_key(key_path)
    proof = make_proof(key, htm=htm, htu=htu, access_token=access_token, nonce=nonce)
    if as_json:
        header, claims = (json.loads(_jose.b64url_decode(part)) for part in proof.split(".")[:2])
        emit_json({"proof": proof, "header": header, "claims": claims, "jkt": key.thumbprint})
        return
    click.echo(proof)
