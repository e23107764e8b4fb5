"""A throw-away certificate authority and server certificate for ``--tls``.

MSAL and azure-identity refuse ``http://`` authorities even on loopback (MSAL Python 1.x's
``authority.canonicalize`` accepts only https URLs, and azure-identity 1.x's
``normalize_authority`` raises "The value must be a TLS protected (https) URL"), so the
emulator can serve https with a CA it generates; clients trust that CA through the ``ca_file``
the emulator prints. The server certificate covers ``127.0.0.1``, ``::1`` and ``localhost``.
EC P-256 keys: generated in about a millisecond, and every TLS stack in use accepts them.
"""

from __future__ import annotations

import datetime as dt
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from certauth._files import OutputFile, write_files_atomically
from certauth.certificates import build_certificate

__all__ = ["TlsFiles", "generate_tls_files", "server_context"]

#: Long enough for a CI job or a working day, short enough that a leaked CA is soon useless.
VALIDITY = dt.timedelta(days=7)
#: Hosts whose clocks lag a little still accept the certificates.
BACKDATE = dt.timedelta(hours=1)


@dataclass(frozen=True)
class TlsFiles:
    """Where the generated CA certificate, server certificate and server key were written."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def generate_tls_files(directory: str | os.PathLike[str], *, now: dt.datetime) -> TlsFiles:
    """Create ``ca.pem``, ``server.pem`` and ``server.key`` (mode 0600) in ``directory``.

    The extensions (key usage, subject/authority key identifiers, CA basic constraints) are
    the ones OpenSSL's strict X.509 verification (the default from Python 3.13) requires.
    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    start, end = now - BACKDATE, now + VALIDITY

    ca = build_certificate(
        "CN=certauth emulator local CA",
        ec.generate_private_key(ec.SECP256R1()),
        not_before=start,
        not_after=end,
        ca=True,
        path_length=0,
        key_usage=["key_cert_sign", "crl_sign"],
        key_identifiers=True,
    )
    server = build_certificate(
        "CN=localhost",
        ec.generate_private_key(ec.SECP256R1()),
        not_before=start,
        not_after=end,
        issuer=ca,
        ca=False,
        key_usage=["digital_signature"],
        extended_key_usage=[ExtendedKeyUsageOID.SERVER_AUTH],
        subject_alt_names=["localhost", "127.0.0.1", "::1"],
        key_identifiers=True,
    )

    files = TlsFiles(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    # Temporary files renamed into place: a symlink planted in a shared --tls-dir is replaced,
    # never written through, and an old key file's looser mode does not survive.
    write_files_atomically(
        [
            OutputFile(files.ca_file, ca.pem),
            OutputFile(files.cert_file, server.pem),
            OutputFile(files.key_file, server.private_key_pem(), secret=True),
        ],
        force=True,
    )
    return files


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """A server-side TLS context (TLS 1.2+) serving the generated certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(files.cert_file, files.key_file)
    return context
