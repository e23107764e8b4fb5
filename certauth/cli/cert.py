"""``certauth cert ...``: create certificates and read what an app registration needs from them."""

from __future__ import annotations

import datetime as dt
import math
import os
import re
from pathlib import Path
from typing import Any

import click
from cryptography import x509
from cryptography.x509.oid import NameOID

from certauth._files import (
    OutputFile,
    ensure_private_dir,
    refuse_existing,
    remove_created_dirs,
    write_files_atomically,
)
from certauth.certificates import (
    KEY_TYPES,
    Certificate,
    check_validity_days,
    generate_certificate,
    load_certificate,
    parse_subject,
)
from certauth.cli._chain import chain_facts, print_chain, warn_chain_expiry
from certauth.cli._common import (
    HelpfulGroup,
    PathText,
    SpelledChoice,
    Text,
    VariableName,
    emit_json,
    names_options,
    password_options,
    read_password,
    warn,
)
from certauth.cli._pkcs11 import check_uri, pkcs11_options, read_pin, refuse_unused
from certauth.errors import CertauthError, InvalidArgumentError, LocalInputError, PasswordError
from certauth.signers import is_pkcs11_uri

#: Exit codes of ``cert check`` (docs/exit-codes.md): expiring within the window,
#: expired/not yet valid.
EXIT_EXPIRING = 7
EXIT_INVALID = 8
#: ``cert show`` warns about a certificate with this many whole days left or fewer, as
#: ``cert check`` does with its default ``--warn-days``.
SHOW_WARN_DAYS = 30
#: Longest ``--name``, in bytes: with a suffix and a temporary file's prefix and random part it
#: must stay within a file name's 255 bytes (NAME_MAX on Linux and macOS).
MAX_NAME_BYTES = 200


@click.group(cls=HelpfulGroup)
def cert() -> None:
    """Create and inspect certificates for app registrations.

    \b
    Example:
      certauth cert create --subject "CN=billing-api" --out ./certs
      certauth cert thumbprint ./certs/billing-api.crt
    """


def _default_name(subject_cn: str | None) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", subject_cn or "").strip("-.")
    return name or "certificate"


def _nearest_days(days: float) -> int:
    """Days left rounded to the nearest day (a certificate made a moment ago for 365 days shows
    365); ``cert check`` counts whole days instead, as its window needs."""
    return math.floor(days + 0.5)


def describe(certificate: Certificate, now: dt.datetime | None = None) -> dict[str, Any]:
    """The facts ``cert show`` and ``cert create`` print, as a JSON-ready mapping."""
    return {
        "subject": certificate.subject,
        "issuer": certificate.issuer,
        "serial": certificate.serial_number,
        "not_before": certificate.not_before.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "not_after": certificate.not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "days_left": _nearest_days(certificate.days_left(now)),
        "key_type": certificate.key_type,
        "key_size": certificate.key_size,
        "key_description": certificate.key_description,
        "thumbprint_sha1": certificate.thumbprint_sha1,
        "thumbprint_sha256": certificate.thumbprint_sha256,
        "x5t": certificate.x5t,
        "x5t#S256": certificate.x5t_s256,
        "key_matches": certificate.key_matches(),
        "entra_compatible": not certificate.entra_problems(),
        "warnings": certificate.entra_problems(),
    }


def _print_human(
    facts: dict[str, Any], *, files: dict[str, str] | None = None, key_store: str | None = None
) -> None:
    if files:
        for label, path in files.items():
            click.echo(f"{label + ' file:':<20}{path}")
    if key_store:
        click.echo(f"{'key in token:':<20}{key_store}")
    labels = [
        ("subject", "subject"),
        ("issuer", "issuer"),
        ("serial", "serial"),
        ("not_before", "valid from"),
        ("not_after", "valid until"),
        ("days_left", "days left"),
        ("key", "key type"),
        ("thumbprint_sha1", "thumbprint (SHA-1)"),
        ("thumbprint_sha256", "SHA-256"),
        ("x5t", "x5t"),
        ("x5t#S256", "x5t#S256"),
    ]
    shown = dict(facts, key=facts["key_description"])
    for key, label in labels:
        click.echo(f"{label + ':':<20}{shown[key]}")
    if facts["key_matches"] is not None:
        click.echo(f"{'key matches:':<20}{'yes' if facts['key_matches'] else 'NO'}")


@cert.command("create", short_help="Create a certificate and key for an app registration.")
@click.option(
    "--subject",
    required=True,
    type=Text(example="CN=billing-api"),
    help='Subject: "CN=NAME" or a full RFC 4514 name.',
)
@click.option("--days", type=int, default=365, show_default=True, help="Validity in days (1-3650).")
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
    # Not click.Path(file_okay=False): an --out that is a file gets certauth's one-line error
    # (exit 3) from ensure_private_dir instead of click's usage text.
    type=PathText(),
    default=".",
    show_default=True,
    help="Output directory (created 0700 if missing).",
)
@click.option(
    "--name", type=PathText(), help="Base name of the files (default: derived from the CN)."
)
@click.option("--pfx", is_flag=True, help="Also write NAME.pfx (PKCS#12: key + certificate).")
@click.option(
    "--bundle", is_flag=True, help="Also write NAME.pem (key + certificate, as az takes)."
)
@click.option(
    "--password-file",
    metavar="FILE",
    type=PathText(),
    help="Encrypt the key (and PFX) with the first line of FILE.",
)
@click.option(
    "--password-env",
    metavar="VAR",
    type=VariableName(),
    help="Encrypt the key (and PFX) with the value of environment variable VAR.",
)
@click.option(
    "--key-store",
    metavar="URI",
    type=Text(example="pkcs11:token=certauth;object=billing-api"),
    help="Generate the key inside a PKCS#11 token (an RFC 7512 pkcs11: URI naming the token and "
    "object=LABEL): it never leaves the token, and only NAME.crt is written.",
)
@pkcs11_options
@click.option("--force", is_flag=True, help="Replace existing output files.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@names_options
def create(
    subject: str,
    days: int,
    key_type: str,
    out: str,
    name: str | None,
    pfx: bool,
    bundle: bool,
    password_file: str | None,
    password_env: str | None,
    key_store: str | None,
    pkcs11_module: str | None,
    pin_env: str | None,
    pin_file: str | None,
    force: bool,
    as_json: bool,
) -> None:
    """Create a self-signed certificate and private key for an app registration.

    Writes NAME.crt (PEM certificate: upload this to the app registration) and NAME.key
    (PKCS#8 private key, mode 0600: keep it secret), and with --pfx NAME.pfx, with --bundle
    NAME.pem. Existing files are never replaced without --force. The key is encrypted only
    when --password-env or --password-file names a password (never given on the command line).

    With --key-store pkcs11:... the key pair is generated inside the PKCS#11 token
    (non-extractable), the token signs the certificate and keeps a copy, and only NAME.crt is
    written; the PIN comes from --pin-env, --pin-file or pin-source= in the URI.

    \b
    Example:
      certauth cert create --subject "CN=billing-api" --days 365 --out ./certs --pfx
      certauth cert create --subject "CN=billing-api" --out ./certs \\
        --key-store "pkcs11:token=certauth;object=billing-api" \\
        --pkcs11-module /usr/lib/softhsm/libsofthsm2.so --pin-file ./pin
    """
    if key_store is None:
        refuse_unused(pkcs11_module, pin_env, pin_file)
    else:
        for flag, value in (
            ("--pfx", pfx),
            ("--bundle", bundle),
            ("--password-env", password_env),
            ("--password-file", password_file),
        ):
            if value:
                raise click.UsageError(
                    f"{flag} writes the private key, and with --key-store it never leaves the "
                    "token; leave it out"
                )
        check_uri(key_store, "--key-store")
    password = read_password(password_env, password_file, use_default_env=False)
    # Everything that can be refused is checked before the (slow) key generation and before
    # anything touches the file system, so a refusal leaves no trace.
    check_validity_days(days)
    common_name = _first_common_name(parse_subject(subject))
    base = name if name is not None else _default_name(common_name)
    _check_file_name(base)
    folder = Path(out)
    paths = {"certificate": folder / f"{base}.crt"}
    if key_store is None:
        paths["key"] = folder / f"{base}.key"
    if pfx:
        paths["pfx"] = folder / f"{base}.pfx"
    if bundle:
        paths["bundle"] = folder / f"{base}.pem"
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
    if key_store is not None:
        try:
            from certauth.cli.cert_pkcs11 import create_in_token

            create_in_token(
                key_store,
                subject=subject,
                key_type=key_type,
                days=days,
                certificate_path=paths["certificate"],
                pkcs11_module=pkcs11_module,
                pin=read_pin(pin_env, pin_file),
                force=force,
                as_json=as_json,
            )
        except BaseException:
            remove_created_dirs(created)
            raise
        return
    try:
        certificate = generate_certificate(subject, key_type=key_type, days=days)
        key_pem = certificate.private_key_pem(password)
        files = [
            OutputFile(paths["certificate"], certificate.pem),
            OutputFile(paths["key"], key_pem, secret=True),
        ]
        if pfx:
            files.append(OutputFile(paths["pfx"], certificate.to_pfx(password), secret=True))
        if bundle:
            files.append(OutputFile(paths["bundle"], key_pem + certificate.pem, secret=True))
        write_files_atomically(files, force=force)
    except BaseException:
        remove_created_dirs(created)
        raise
    facts = describe(certificate)
    if as_json:
        emit_json({"files": {k: str(v) for k, v in paths.items()}, **facts})
    else:
        _print_human(facts, files={k: str(v) for k, v in paths.items()})
        click.echo(f"\nUpload {paths['certificate']} to the app registration; keep the key secret.")
    for message in facts["warnings"]:
        warn(f"{paths['certificate']}: {message}")


def _first_common_name(name: x509.Name) -> str | None:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else None


def _check_file_name(base: str) -> None:
    # --name is a base name inside --out, never a path: "../x" or "a/b" would write elsewhere.
    if not base or base in {".", ".."} or "/" in base or "\\" in base or "\x00" in base:
        raise InvalidArgumentError(
            f"--name {base!r}: give a file name without '/' (the directory goes in --out)"
        )
    if len(os.fsencode(base)) > MAX_NAME_BYTES:
        raise InvalidArgumentError(
            f"--name is {len(os.fsencode(base))} bytes long; give a name of at most "
            f"{MAX_NAME_BYTES} bytes (file names are limited to 255)"
        )


def _load_for_reading(
    file: str, key: str | None, password_env: str | None, password_file: str | None
) -> Certificate:
    password = read_password(password_env, password_file)
    if password is None and key is None:
        try:
            return load_certificate(file)
        except PasswordError as exc:
            # Reading the public part needs no password (except for a PFX): show it, and say
            # why the key was not checked. If even that fails, report the original problem.
            try:
                certificate = load_certificate(file, load_key=False)
            except CertauthError:
                raise exc from None
            warn(
                f"{file}: the private key is encrypted, so it was not checked; pass "
                "--password-env VAR or --password-file FILE to check that it matches"
            )
            return certificate
    return load_certificate(file, key=key, password=password)


@cert.command("show", short_help="Show subject, validity, key and thumbprints.")
@click.argument("file", type=PathText())
@click.option(
    "--key",
    metavar="FILE|URI",
    type=PathText(),
    help="A separate private key file, or a pkcs11: URI of a key in a token, to check against "
    "the certificate.",
)
@password_options
@pkcs11_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@names_options
def show(
    file: str,
    key: str | None,
    password_env: str | None,
    password_file: str | None,
    pkcs11_module: str | None,
    pin_env: str | None,
    pin_file: str | None,
    as_json: bool,
) -> None:
    """Show a certificate's subject, validity, key and thumbprints (PEM, DER or PFX).

    Given a directory, lists every certificate in it with its days left, newest expiry last,
    so old and new certificates are seen side by side during a rotation. With --key pkcs11:...
    the token signs a test message, verified with the certificate's public key (the key never
    leaves the token); FILE may itself be a pkcs11: URI, to show the token's certificate.

    \b
    Example:
      certauth cert show ./certs/billing-api.crt --key ./certs/billing-api.key
      certauth cert show ./certs
      certauth cert show ./certs/billing-api.crt --key "pkcs11:token=certauth;object=billing-api" \\
        --pkcs11-module /usr/lib/softhsm/libsofthsm2.so --pin-env TOKEN_PIN
    """
    if is_pkcs11_uri(file) or is_pkcs11_uri(key):
        from certauth.cli.cert_pkcs11 import show_token_key

        show_token_key(
            file,
            key,
            read_password(password_env, password_file),
            pkcs11_module=pkcs11_module,
            pin_env=pin_env,
            pin_file=pin_file,
            as_json=as_json,
        )
        return
    refuse_unused(pkcs11_module, pin_env, pin_file)
    # os.path.isdir, not Path.is_dir: it answers False for a name the system refuses
    # (ENAMETOOLONG), which the loader then reports as one clear error.
    if os.path.isdir(file):
        if key:
            raise click.UsageError("--key goes with one certificate file, not a directory")
        _show_directory(Path(file), read_password(password_env, password_file), as_json)
        return
    certificate = _load_for_reading(file, key, password_env, password_file)
    facts = describe(certificate)
    if as_json:
        emit_json({"file": file, **facts, "chain": chain_facts(certificate)})
    else:
        _print_human(facts)
        print_chain(certificate)
    # On stderr in both modes: the certificate is readable, but Entra ID would refuse it.
    for message in facts["warnings"]:
        warn(f"{file}: {message}")
    # Expired, not yet valid or expiring soon: said as `cert check` (default window) says it.
    _, code, text, _ = _verdict(certificate, file, SHOW_WARN_DAYS, dt.datetime.now(dt.timezone.utc))
    if code:
        warn(text)


#: Files ``cert show DIR`` reads; keys and everything else are passed over.
_CERT_SUFFIXES = {".crt", ".cer", ".pem", ".der", ".pfx", ".p12"}


def _show_directory(directory: Path, password: str | None, as_json: bool) -> None:
    from certauth.errors import CertificateError, LocalInputError

    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    for path in sorted(p for p in directory.iterdir() if p.suffix.lower() in _CERT_SUFFIXES):
        if not path.is_file():
            continue
        try:
            certificate = load_certificate(path, password=password, load_key=False)
        except CertificateError as exc:
            skipped.append(f"{path.name}: {exc.message.split(': ', 1)[-1]}")
            continue
        rows.append(
            {
                "file": str(path),
                "subject": certificate.subject,
                "thumbprint_sha1": certificate.thumbprint_sha1,
                "not_after": certificate.not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "days_left": _nearest_days(certificate.days_left()),
            }
        )
    if not rows and not skipped:
        raise LocalInputError(
            f"{directory}: is a directory without certificate files (.crt, .cer, .pem, .der, "
            ".pfx); name the file to show, or a directory that holds certificates"
        )
    rows.sort(key=lambda row: (row["not_after"], row["file"]))
    if as_json:
        emit_json({"directory": str(directory), "certificates": rows, "skipped": skipped})
    else:
        for row in rows:
            click.echo(
                f"{row['days_left']:>6} days  {row['not_after'][:10]}  {row['thumbprint_sha1']}  "
                f"{row['subject']}  {Path(row['file']).name}"
            )
    for line in skipped:
        warn(f"{directory}/{line}")


@cert.command("thumbprint", short_help="Print one thumbprint (SHA-1 as the portal shows it).")
@click.argument("file", type=PathText())
@click.option(
    "--format",
    "form",
    type=SpelledChoice(["sha1", "sha256", "x5t", "x5t#S256"]),
    default="sha1",
    show_default=True,
    help="sha1 is what the Entra portal shows (uppercase hex); x5t#S256 goes into PS256 "
    "assertions.",
)
@password_options
@click.option(
    "--json", "as_json", is_flag=True, help='Print one JSON object: {"thumbprint", "format"}.'
)
@names_options
def thumbprint(
    file: str, form: str, password_env: str | None, password_file: str | None, as_json: bool
) -> None:
    """Print one thumbprint of a certificate.

    \b
    Example:
      certauth cert thumbprint ./certs/billing-api.crt --format x5t#S256
    """
    password = read_password(password_env, password_file)
    certificate = load_certificate(file, password=password, load_key=False)
    if as_json:
        emit_json({"thumbprint": certificate.thumbprint(form), "format": form})
    else:
        click.echo(certificate.thumbprint(form))


@cert.command("check", short_help="Check validity for monitoring (exit 0, 7 or 8).")
@click.argument("file", type=PathText())
@click.option(
    "--warn-days",
    type=click.IntRange(min=0),
    default=30,
    show_default=True,
    help="Exit 7 when this many whole days or fewer are left.",
)
@password_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@names_options
def check(
    file: str,
    warn_days: int,
    password_env: str | None,
    password_file: str | None,
    as_json: bool,
) -> None:
    """Check a certificate's validity for monitoring and CI gates.

    Exit 0 when valid, 7 when it expires within --warn-days, 8 when expired or not yet valid.

    \b
    Example:
      certauth cert check ./certs/billing-api.crt --warn-days 30 || alert "rotate billing-api"
    """
    password = read_password(password_env, password_file)
    certificate = load_certificate(file, password=password, load_key=False)
    now = dt.datetime.now(dt.timezone.utc)
    status, code, text, whole_days = _verdict(certificate, file, warn_days, now)
    warn_chain_expiry(certificate, file)
    if as_json:
        emit_json(
            {
                "file": file,
                "status": status,
                "days_left": whole_days,
                "not_before": certificate.not_before.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "not_after": certificate.not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "thumbprint_sha1": certificate.thumbprint_sha1,
                "exit_code": code,
            }
        )
    else:
        click.echo(text, err=code != 0)
    raise click.exceptions.Exit(code)


def _verdict(
    certificate: Certificate, file: str, warn_days: int, now: dt.datetime
) -> tuple[str, int, str, int]:
    """``cert check``'s judgement: status, exit code, the line to print and whole days left."""
    # Whole days, rounded down, in the window check and in both outputs, so that what is
    # printed explains the exit code: "30 days left" means at least 30 full days.
    whole_days = int(certificate.days_left(now) // 1)
    problem = certificate.validity_problem(now)
    if problem:
        status = "not_yet_valid" if now < certificate.not_before else "expired"
        return status, EXIT_INVALID, f"{file}: {problem}", whole_days
    if whole_days <= warn_days:
        text = (
            f"{file}: expires in {whole_days} days ({certificate.not_after:%Y-%m-%d}), "
            f"within the {warn_days}-day window; create and register a new certificate"
        )
        return "expiring", EXIT_EXPIRING, text, whole_days
    text = f"{file}: valid, {whole_days} days left (until {certificate.not_after:%Y-%m-%d})"
    return "valid", 0, text, whole_days


@cert.command("manifest", short_help="Print the Graph keyCredential JSON.")
@click.argument("file", type=PathText())
@click.option(
    "--display-name",
    type=Text(),
    help="displayName (at most 90 characters; default: the subject).",
)
@password_options
@names_options
def manifest(
    file: str, display_name: str | None, password_env: str | None, password_file: str | None
) -> None:
    """Print the Microsoft Graph keyCredential JSON for a certificate's public part.

    A Graph PATCH of keyCredentials replaces the whole array: resend the existing keys too.

    \b
    Example:
      certauth cert manifest ./certs/billing-api.crt --display-name "billing-api 2026"
    """
    password = read_password(password_env, password_file)
    certificate = load_certificate(file, password=password, load_key=False)
    emit_json(certificate.key_credential(display_name=display_name))
    click.echo(
        f"certauth: hint: or upload with the az CLI: az ad app credential reset --id APP_ID "
        f"--cert @{file} --append   (without --append az removes the existing credentials)",
        err=True,
    )


# Its own module (cert.py holds the commands that read one certificate); one group for both.
from certauth.cli.cert_bundle import bundle  # noqa: E402
from certauth.cli.cert_csr import csr  # noqa: E402
from certauth.cli.cert_rotate import rotate  # noqa: E402

for _command in (bundle, csr, rotate):
    cert.add_command(_command)
