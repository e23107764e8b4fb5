"""``certauth cert csr``: a key and a PKCS#10 request (RFC 2986) for a company CA.

The key is written with ``cert create``'s file rules (PKCS#8, 0600, atomic, never replaced
without ``--force``); the request is public (0644). The CA's answer, the certificate and its
intermediates, is then read by ``cert show`` and the credentials like any other certificate.
"""

from __future__ import annotations

from pathlib import Path

import click

from certauth._files import (
    OutputFile,
    ensure_private_dir,
    refuse_existing,
    remove_created_dirs,
    write_files_atomically,
)
from certauth.certificates import KEY_TYPES, parse_subject
from certauth.cli._common import (
    PathText,
    Text,
    VariableName,
    emit_json,
    names_options,
    read_password,
)
from certauth.errors import LocalInputError


@click.command("csr", short_help="Create a key and a certificate request (CSR) for a CA.")
@click.option(
    "--subject",
    required=True,
    type=Text(example="CN=billing-api,O=Contoso"),
    help='Subject: "CN=NAME" or a full RFC 4514 name.',
)
@click.option(
    "--san",
    "sans",
    multiple=True,
    type=Text(example="DNS:billing.contoso.com"),
    help="A subject alternative name to request: DNS:NAME, URI:URL, EMAIL:ADDRESS or "
    "IP:ADDRESS (repeatable).",
)
@click.option(
    "--key",
    "key_type",
    type=click.Choice(KEY_TYPES),
    default="rsa2048",
    show_default=True,
    help="Key type. Entra ID accepts only RSA (2048 bits or more).",
)
@click.option(
    "--out",
    type=PathText(),
    required=True,
    help="Output directory (created 0700 if missing).",
)
@click.option(
    "--name", type=PathText(), help="Base name of the files (default: derived from the CN)."
)
@click.option(
    "--password-file",
    metavar="FILE",
    type=PathText(),
    help="Encrypt the key with the first line of FILE.",
)
@click.option(
    "--password-env",
    metavar="VAR",
    type=VariableName(),
    help="Encrypt the key with the value of environment variable VAR.",
)
@click.option("--force", is_flag=True, help="Replace existing output files.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@names_options
def csr(
    subject: str,
    sans: tuple[str, ...],
    key_type: str,
    out: str,
    name: str | None,
    password_file: str | None,
    password_env: str | None,
    force: bool,
    as_json: bool,
) -> None:
    """Create a private key and a PKCS#10 certificate request for a company CA.

    Writes NAME.key (PKCS#8 private key, mode 0600: keep it secret) and NAME.csr (the request,
    PEM: send it to the CA). The request asks for the --san names, keyUsage digitalSignature
    and extended key usage clientAuth. The key is encrypted only when --password-env or
    --password-file names a password (never given on the command line). Existing files are
    never replaced without --force. Give the CA the SHA-256 fingerprint printed here to compare.

    \b
    Example:
      certauth cert csr --subject "CN=billing-api,O=Contoso" --san DNS:billing.contoso.com \\
        --out ./certs
    """
    from certauth.cli.cert import _check_file_name, _default_name, _first_common_name
    from certauth.csr import make_csr, parse_san

    password = read_password(password_env, password_file, use_default_env=False)
    # Everything that can be refused is checked before the key is made and before anything
    # touches the file system, so a refusal leaves no trace.
    base = name if name is not None else _default_name(_first_common_name(parse_subject(subject)))
    for value in sans:
        parse_san(value)
    _check_file_name(base)
    folder = Path(out)
    paths = {"key": folder / f"{base}.key", "request": folder / f"{base}.csr"}
    if not force:
        for path in paths.values():
            refuse_existing(path)
    try:
        created = ensure_private_dir(folder)
    except OSError as exc:  # a name the file system refuses outright, e.g. ENAMETOOLONG
        raise LocalInputError(
            f"{out}: cannot use it as the output directory ({exc.strerror or exc}); "
            "choose another --out"
        ) from None
    try:
        request = make_csr(subject, sans=sans, key_type=key_type)
        files = [
            OutputFile(paths["key"], request.private_key_pem(password), secret=True),
            OutputFile(paths["request"], request.pem),
        ]
        write_files_atomically(files, force=force)
    except BaseException:
        remove_created_dirs(created)
        raise
    facts = {
        "files": {label: str(path) for label, path in paths.items()},
        "subject": request.subject,
        "sans": request.sans,
        "key_type": request.key_type,
        "key_encrypted": password is not None,
        "fingerprint_sha256": request.fingerprint_sha256,
    }
    if as_json:
        emit_json(facts)
        return
    for label, value in [
        ("key file", f"{paths['key']} (mode 0600, {'encrypted' if password else 'not encrypted'})"),
        ("request file", str(paths["request"])),
        ("subject", request.subject),
        ("SANs", ", ".join(request.sans) or "(none)"),
        ("key type", request.key_type),
        ("SHA-256", request.fingerprint_sha256),
    ]:
        click.echo(f"{label + ':':<20}{value}")
    click.echo(
        f"\nSend {paths['request']} to the CA; keep the key secret. Then check the issued "
        f"certificate with: certauth cert show ISSUED.crt --key {paths['key']}"
    )
