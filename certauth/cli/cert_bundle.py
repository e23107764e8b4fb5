"""``certauth cert bundle``: pack an existing certificate and its key into one file.

The ops quick start makes ``NAME.crt`` and ``NAME.key``; ``az login``, MSAL, azure-identity's
``AZURE_CLIENT_CERTIFICATE_PATH`` and :class:`certauth.CertificateCredential` take key and
certificate in one PEM file, Windows and Key Vault a PFX. This command writes either from the
pair, with ``cert create``'s file rules: 0600, atomic, never replacing a file without
``--force``.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from certauth._files import OutputFile, refuse_existing, write_files_atomically
from certauth._keyfiles import _HOW_TO_UNLOCK
from certauth.certificates import Certificate, load_certificate
from certauth.cli._common import PathText, VariableName, emit_json, names_options, read_password
from certauth.errors import (
    CertificateError,
    InvalidArgumentError,
    KeyMismatchError,
    LocalInputError,
    OutputExistsError,
)

#: File name endings that mean PKCS#12; writing PEM into such a file is refused.
PFX_SUFFIXES = (".pfx", ".p12")
#: How the bundle command takes the password of an encrypted key or PFX it reads.
_HOW_TO_UNLOCK_BUNDLE = (
    "pass --key-password-env VAR or --key-password-file FILE (or set "
    "AZURE_CLIENT_CERTIFICATE_PASSWORD)"
)


@click.command("bundle", short_help="Pack a certificate and its key into one PEM or PFX file.")
@click.argument("cert", metavar="CERT", type=PathText())
@click.argument("key", metavar="KEY", type=PathText(), required=False)
@click.option(
    "--out",
    "out",
    metavar="FILE",
    type=PathText(),
    required=True,
    help="The file to write (mode 0600); its directory must exist.",
)
@click.option("--pfx", is_flag=True, help="Write a PFX (PKCS#12) instead of a PEM bundle.")
@click.option(
    "--password-file",
    metavar="FILE",
    type=PathText(),
    help="Encrypt the output with the first line of FILE.",
)
@click.option(
    "--password-env",
    metavar="VAR",
    type=VariableName(),
    help="Encrypt the output with the value of environment variable VAR.",
)
@click.option(
    "--key-password-file",
    metavar="FILE",
    type=PathText(),
    help="Decrypt an encrypted KEY (or a PFX given as CERT) with the first line of FILE.",
)
@click.option(
    "--key-password-env",
    metavar="VAR",
    type=VariableName(),
    help="Decrypt an encrypted KEY (or PFX CERT) with the value of environment variable VAR.",
)
@click.option("--force", is_flag=True, help="Replace an existing output file.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@names_options
def bundle(
    cert: str,
    key: str | None,
    out: str,
    pfx: bool,
    password_file: str | None,
    password_env: str | None,
    key_password_file: str | None,
    key_password_env: str | None,
    force: bool,
    as_json: bool,
) -> None:
    """Pack an existing certificate and its private key into one PEM or PFX file.

    CERT is the certificate (PEM, DER or PFX) and KEY its private key (omit KEY when CERT
    already holds the key). A key that does not belong to the certificate is refused (exit 3).
    The PEM bundle holds the key (PKCS#8), the certificate and any intermediates; with --pfx
    the file is PKCS#12. The output is unencrypted unless --password-env or --password-file
    names a password (never given on the command line). An encrypted KEY is read with
    --key-password-env / --key-password-file, else the output password, else
    AZURE_CLIENT_CERTIFICATE_PASSWORD. The file is written 0600, atomically, and never
    replaces an existing file without --force.

    \b
    Example:
      certauth cert bundle certs/billing-api.crt certs/billing-api.key --out certs/billing-api.pem
    """
    target = Path(out)
    if not pfx and target.suffix.lower() in PFX_SUFFIXES:
        raise InvalidArgumentError(
            f"--out {out}: the name says PFX but a PEM bundle was asked for; add --pfx, or "
            "name the file .pem"
        )
    password = read_password(password_env, password_file, use_default_env=False)
    explicit = read_password(
        key_password_env,
        key_password_file,
        use_default_env=False,
        flags=("--key-password-env", "--key-password-file"),
    )
    key_password = explicit if explicit is not None else password
    if key_password is None:
        key_password = read_password(None, None)
    _check_target(target, force=force)
    certificate = _load_pair(cert, key, key_password)
    if pfx:
        data = certificate.to_pfx(password)
    else:
        data = certificate.private_key_pem(password) + _certificates_pem(certificate)
    write_files_atomically([OutputFile(target, data, secret=True)], force=force)
    facts = {
        "file": out,
        "format": "pfx" if pfx else "pem",
        "encrypted": password is not None,
        "certificates": 1 + len(certificate.chain),
        "subject": certificate.subject,
        "not_after": certificate.not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "thumbprint_sha1": certificate.thumbprint_sha1,
        "thumbprint_sha256": certificate.thumbprint_sha256,
    }
    if as_json:
        emit_json(facts)
        return
    contents = "PFX (PKCS#12): key + certificate" if pfx else "PEM: key (PKCS#8) + certificate"
    if certificate.chain:
        contents += f" + {len(certificate.chain)} intermediate(s)"
    protection = "encrypted" if password is not None else "not encrypted"
    for label, value in [
        ("bundle file", out),
        ("contents", f"{contents}, {protection}, mode 0600"),
        ("subject", facts["subject"]),
        ("valid until", facts["not_after"]),
        ("thumbprint (SHA-1)", facts["thumbprint_sha1"]),
    ]:
        click.echo(f"{label + ':':<20}{value}")


def _check_target(target: Path, *, force: bool) -> None:
    """Refuse, before any key is read, an output that could not or must not be written."""
    if not force:
        try:
            refuse_existing(target)
        except OutputExistsError as exc:
            # This command has no --name: the way out is --force or another --out.
            exc.message = exc.message.replace("--name/--out", "--out")
            exc.args = (exc.message,)
            raise
    elif os.path.isdir(target):
        raise LocalInputError(f"{target}: is a directory; give a file name with --out")
    parent = target.parent
    if not parent.is_dir():
        raise LocalInputError(
            f"{target}: the directory {parent} does not exist (or is not a directory); "
            "create it first or choose another --out"
        )


def _load_pair(cert: str, key: str | None, password: str | None) -> Certificate:
    """The certificate with its key, checked to belong together; a password problem is
    reported with this command's options."""
    try:
        certificate = load_certificate(cert, key=key, password=password)
    except CertificateError as exc:
        message = exc.message.replace(_HOW_TO_UNLOCK, _HOW_TO_UNLOCK_BUNDLE)
        # Name the argument the file came from, as an option's errors name the option; a
        # mismatch names both files already.
        if not isinstance(exc, KeyMismatchError):
            if exc.path == key:
                message = f"KEY {message}"
            elif exc.path == cert:
                message = f"CERT {message}"
        exc.message = message
        exc.args = (message,)
        raise
    if certificate.private_key is None:
        raise CertificateError(
            f"{cert}: holds no private key; give the key file as the second argument "
            "(certauth cert bundle CERT KEY --out FILE)",
            path=cert,
        )
    return certificate


def _certificates_pem(certificate: Certificate) -> bytes:
    """The leaf then its intermediates, in PEM (RFC 7468), the order TLS and MSAL expect."""
    from cryptography.hazmat.primitives import serialization

    return certificate.pem + b"".join(
        extra.public_bytes(serialization.Encoding.PEM) for extra in certificate.chain
    )
