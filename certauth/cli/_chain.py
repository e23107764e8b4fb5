"""What ``cert show`` and ``cert check`` say about the intermediates after the leaf.

A certificate a company CA issues comes with its chain (in the PEM after the leaf, or in the
PFX); the loader puts it in issuing order (:attr:`certauth.Certificate.chain`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import click
from cryptography import x509

from certauth.certificates import Certificate
from certauth.cli._common import warn


def _not_after(cert: x509.Certificate) -> dt.datetime:
    return cert.not_valid_after_utc


def chain_facts(certificate: Certificate) -> list[dict[str, Any]]:
    """``cert show --json``'s ``chain``: each certificate after the leaf, issuer order."""
    from cryptography.hazmat.primitives import hashes

    return [
        {
            "subject": cert.subject.rfc4514_string(),
            "issuer": cert.issuer.rfc4514_string(),
            "not_after": _not_after(cert).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "thumbprint_sha1": cert.fingerprint(hashes.SHA1()).hex().upper(),  # noqa: S303
        }
        for cert in certificate.chain
    ]


def print_chain(certificate: Certificate) -> None:
    """The human lines for the chain, after ``cert show``'s facts about the leaf."""
    for number, facts in enumerate(chain_facts(certificate), start=1):
        click.echo(f"{f'chain {number}:':<20}{facts['subject']}")
        click.echo(f"{'  issued by:':<20}{facts['issuer']}")
        click.echo(f"{'  valid until:':<20}{facts['not_after']}")


def warn_chain_expiry(certificate: Certificate, file: str) -> None:
    """``cert check`` judges the leaf; a chain certificate that expires before it is said on
    stderr, since a verifier that needs the chain refuses the leaf from that day on."""
    for cert in certificate.chain:
        if _not_after(cert) < certificate.not_after:
            warn(
                f"{file}: the chain certificate {cert.subject.rfc4514_string()} expires "
                f"{_not_after(cert):%Y-%m-%d}, before the leaf ({certificate.not_after:%Y-%m-%d}); "
                "ask the CA for its renewed chain"
            )
