"""A throw-away certificate authority and server certificate for ``--tls``.

MSAL and azure-identity refuse ``http://`` authorities even on loopback (ANCHORS), so the
emulator can serve https with a CA it generates; clients trust that CA through the ``ca_file``
the emulator prints. The server certificate covers ``127.0.0.1``, ``::1`` and ``localhost``.
EC P-256 keys: generated in about a millisecond, and every TLS stack in use accepts them.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certauth._files import OutputFile, write_files_atomically

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


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def generate_tls_files(directory: str | os.PathLike[str], *, now: dt.datetime) -> TlsFiles:
    """Create ``ca.pem``, ``server.pem`` and ``server.key`` (mode 0600) in ``directory``.

    The extensions (key usage, subject/authority key identifiers, CA basic constraints) are
    the ones OpenSSL's strict X.509 verification (the default from Python 3.13) requires.
    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    start, end = now - BACKDATE, now + VALIDITY

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "certauth emulator local CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    files = TlsFiles(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Temporary files renamed into place: a symlink planted in a shared --tls-dir is replaced,
    # never written through, and an old key file's looser mode does not survive.
    write_files_atomically(
        [
            OutputFile(files.ca_file, ca_cert.public_bytes(serialization.Encoding.PEM)),
            OutputFile(files.cert_file, cert.public_bytes(serialization.Encoding.PEM)),
            OutputFile(files.key_file, key_pem, secret=True),
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
