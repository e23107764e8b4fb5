"""The CLI's side of PKCS#11 keys: ``--pkcs11-module``, ``--pin-env`` / ``--pin-file``, and a
``pkcs11:`` URI (RFC 7512) checked for what a command line must not hold."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from certauth.cli._common import F, PathText, VariableName, read_password, usage_errors
from certauth.cli._token_settings import refuse_unused_pkcs11
from certauth.errors import InvalidArgumentError

if TYPE_CHECKING:
    from certauth.certificates import Certificate
    from certauth.signers.pkcs11 import Pkcs11Signer

PIN_FLAGS = ("--pin-env", "--pin-file")


def pkcs11_options(func: F) -> F:
    """Add ``--pkcs11-module PATH``, ``--pin-env VAR`` and ``--pin-file FILE`` (a PIN never
    comes from argv)."""
    func = click.option(
        "--pin-file",
        metavar="FILE",
        type=PathText(),
        help="Read the token's user PIN from the first line of FILE (or pin-source= in the URI).",
    )(func)
    func = click.option(
        "--pin-env",
        metavar="VAR",
        type=VariableName(),
        help="Read the token's user PIN from environment variable VAR.",
    )(func)
    func = click.option(
        "--pkcs11-module",
        metavar="PATH",
        type=PathText(),
        help="The PKCS#11 module (the vendor's .so) for a pkcs11: key (default: module-path in "
        "the URI, else $CERTAUTH_PKCS11_MODULE).",
    )(func)
    return func


def read_pin(pin_env: str | None, pin_file: str | None) -> str | None:
    """The PIN from ``--pin-env`` / ``--pin-file`` (``None``: the URI's ``pin-source``, or no
    login)."""
    return read_password(pin_env, pin_file, use_default_env=False, flags=PIN_FLAGS, what="PIN")


def check_uri(uri: str, option: str) -> None:
    """Refuse a ``pkcs11:`` URI that holds ``pin-value``: argv is visible to every user of the
    machine (``ps``), so a PIN never comes from it."""
    from certauth.signers._pkcs11_uri import Pkcs11Uri

    try:
        parsed = Pkcs11Uri.parse(uri)
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(f"{option} {exc.message}") from None
    if parsed.pin_value is not None:
        raise InvalidArgumentError(
            f"{option}: the pkcs11: URI holds pin-value, and a command line is visible to "
            "every user of this machine; remove it and give the PIN with --pin-env VAR, "
            "--pin-file FILE or pin-source=file:/path in the URI"
        )


def refuse_unused(pkcs11_module: str | None, pin_env: str | None, pin_file: str | None) -> None:
    """PKCS#11 options given without a ``pkcs11:`` key are a mistake worth saying."""
    with usage_errors():
        refuse_unused_pkcs11(pkcs11_module, pin_env, pin_file)


def open_signer(
    uri: str,
    option: str,
    *,
    pkcs11_module: str | None,
    pin_env: str | None,
    pin_file: str | None,
    certificate: Certificate | None = None,
) -> Pkcs11Signer:
    """The signer for ``--key pkcs11:...`` (``option`` names the flag in messages)."""
    check_uri(uri, option)
    pin = read_pin(pin_env, pin_file)
    from certauth.signers.pkcs11 import Pkcs11Signer

    return Pkcs11Signer(uri, module=pkcs11_module, pin=pin, certificate=certificate)
