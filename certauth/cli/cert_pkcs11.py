"""``cert create --key-store pkcs11:...`` and ``cert show --key pkcs11:...``: the commands'
PKCS#11 paths, apart so that ``cert.py`` stays about files (and python-pkcs11 is imported only
when a token is used)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click

from certauth._files import OutputFile, write_files_atomically
from certauth.certificates import load_certificate
from certauth.cli._common import emit_json, warn
from certauth.cli._pkcs11 import open_signer
from certauth.cli.cert import SHOW_WARN_DAYS, _print_human, _verdict, describe
from certauth.errors import KeyMismatchError
from certauth.signers import is_pkcs11_uri
from certauth.signers.pkcs11 import generate_certificate_in_token


def create_in_token(
    key_store: str,
    *,
    subject: str,
    key_type: str,
    days: int,
    certificate_path: Path,
    pkcs11_module: str | None,
    pin: str | None,
    force: bool,
    as_json: bool,
) -> None:
    """``cert create --key-store pkcs11:...``: the key pair made by the token, the certificate
    signed by it and stored on it, NAME.crt written; a failure writing it deletes what the
    token made, so nothing is left half done."""
    with generate_certificate_in_token(
        key_store, subject, key_type=key_type, days=days, module=pkcs11_module, pin=pin
    ) as signer:
        certificate = signer.certificate
        write_files_atomically([OutputFile(certificate_path, certificate.pem)], force=force)
        facts = dict(describe(certificate), key_matches=signer.key_matches())
        key_uri = signer.description
    files = {"certificate": str(certificate_path)}
    if as_json:
        emit_json({"files": files, "key_store": key_uri, **facts})
    else:
        _print_human(facts, files=files, key_store=key_uri)
        click.echo(
            f"\nUpload {certificate_path} to the app registration; the private key stays in "
            "the token."
        )
    for message in facts["warnings"]:
        warn(f"{certificate_path}: {message}")


def show_token_key(
    file: str,
    key: str | None,
    password: str | None,
    *,
    pkcs11_module: str | None,
    pin_env: str | None,
    pin_file: str | None,
    as_json: bool,
) -> None:
    """``cert show`` of a certificate whose key is in a PKCS#11 token: whether they match is
    a test signature by the token, verified with the certificate's public key."""
    certificate = None
    if is_pkcs11_uri(file):
        if key is not None:
            raise click.UsageError(
                "FILE is a pkcs11: URI: the token's certificate; leave --key out"
            )
        uri, option = file, "FILE"
    else:
        certificate = load_certificate(file, password=password, load_key=False)
        uri, option = key or "", "--key"
    signer = open_signer(
        uri,
        option,
        pkcs11_module=pkcs11_module,
        pin_env=pin_env,
        pin_file=pin_file,
        certificate=certificate,
    )
    with signer:
        facts = dict(describe(signer.certificate), key_matches=signer.key_matches())
        if as_json:
            emit_json({"file": file, "key": signer.description, **facts})
        else:
            click.echo(f"{'key in token:':<20}{signer.description}")
            _print_human(facts)
    for message in facts["warnings"]:
        warn(f"{file}: {message}")
    _, code, text, _ = _verdict(
        signer.certificate, file, SHOW_WARN_DAYS, dt.datetime.now(dt.timezone.utc)
    )
    if code:
        warn(text)
    if not facts["key_matches"]:
        # As `cert show --key FILE` with another certificate's key: exit 3, after the facts.
        raise KeyMismatchError(
            f"{signer.description}: the token's key does not belong to {file} (its test "
            "signature does not verify with the certificate's public key); give the matching "
            "key or certificate",
            path=None if is_pkcs11_uri(file) else file,
        )
