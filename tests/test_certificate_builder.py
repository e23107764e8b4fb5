"""build_certificate: the one builder behind app credentials, the emulator's CA, TLS and
signing certificates. Each caller's certificate keeps the fields and extensions it had."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certauth.certificates import build_certificate, generate_certificate
from certauth.emulator.tls import generate_tls_files
from certauth.emulator.tokens import SigningKey

UTC = dt.timezone.utc
NOW = dt.datetime(2030, 6, 1, 12, 0, tzinfo=UTC)


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def extensions(cert: x509.Certificate) -> list[tuple[type[x509.ExtensionType], bool]]:
    return [(type(ext.value), ext.critical) for ext in cert.extensions]


def test_plain_self_signed_certificate_has_no_extensions() -> None:
    key = ec_key()
    made = build_certificate("CN=plain", key, not_before=NOW, not_after=NOW + dt.timedelta(days=1))
    cert = made.x509
    assert made.private_key is key
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "plain"
    assert list(cert.extensions) == []
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    assert (cert.not_valid_before_utc, cert.not_valid_after_utc) == (
        NOW,
        NOW + dt.timedelta(days=1),
    )
    cert.verify_directly_issued_by(cert)


def test_serial_numbers_are_random() -> None:
    key = ec_key()
    serials = {
        build_certificate("CN=s", key, not_before=NOW, not_after=NOW).x509.serial_number
        for _ in range(5)
    }
    assert len(serials) == 5


def test_a_ca_and_a_leaf_it_issues() -> None:
    ca = build_certificate(
        "CN=test CA",
        ec_key(),
        not_before=NOW,
        not_after=NOW + dt.timedelta(days=7),
        ca=True,
        path_length=0,
        key_usage=["key_cert_sign", "crl_sign"],
        key_identifiers=True,
    )
    leaf = build_certificate(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]),
        ec_key(),
        not_before=NOW,
        not_after=NOW + dt.timedelta(days=7),
        issuer=ca,
        ca=False,
        key_usage=["digital_signature"],
        extended_key_usage=[ExtendedKeyUsageOID.SERVER_AUTH],
        subject_alt_names=["localhost", "127.0.0.1", "::1"],
        key_identifiers=True,
    )
    leaf.x509.verify_directly_issued_by(ca.x509)
    assert leaf.x509.issuer == ca.x509.subject
    basic = ca.x509.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert (basic.ca, basic.path_length) == (True, 0)
    usage = ca.x509.extensions.get_extension_for_class(x509.KeyUsage).value
    assert (usage.key_cert_sign, usage.crl_sign, usage.digital_signature) == (True, True, False)
    ca_ski = ca.x509.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = leaf.x509.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    san = leaf.x509.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert extensions(leaf.x509) == [
        (x509.BasicConstraints, True),
        (x509.KeyUsage, True),
        (x509.ExtendedKeyUsage, False),
        (x509.SubjectAlternativeName, False),
        (x509.SubjectKeyIdentifier, False),
        (x509.AuthorityKeyIdentifier, False),
    ]


def test_an_issuer_without_a_subject_key_identifier() -> None:
    ca = build_certificate("CN=bare CA", ec_key(), not_before=NOW, not_after=NOW, ca=True)
    leaf = build_certificate(
        "CN=leaf", ec_key(), not_before=NOW, not_after=NOW, issuer=ca, key_identifiers=True
    )
    aki = leaf.x509.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    expected = x509.SubjectKeyIdentifier.from_public_key(ca.public_key).digest
    assert aki.key_identifier == expected


def test_generate_certificate_extensions() -> None:
    cert = generate_certificate("CN=app", key_type="ec-p256", days=30, now=NOW).x509
    assert cert.issuer == cert.subject
    assert cert.not_valid_before_utc == NOW - dt.timedelta(minutes=5)
    assert cert.not_valid_after_utc == NOW + dt.timedelta(days=30)
    assert extensions(cert) == [
        (x509.BasicConstraints, True),
        (x509.KeyUsage, True),
        (x509.ExtendedKeyUsage, False),
        (x509.SubjectKeyIdentifier, False),
    ]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert (usage.digital_signature, usage.key_cert_sign) == (True, False)
    purposes = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(purposes) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_emulator_tls_certificates(tmp_path: Path) -> None:
    files = generate_tls_files(tmp_path, now=NOW)
    ca = x509.load_pem_x509_certificate(files.ca_file.read_bytes())
    server = x509.load_pem_x509_certificate(files.cert_file.read_bytes())
    server.verify_directly_issued_by(ca)
    assert ca.subject.rfc4514_string() == "CN=certauth emulator local CA"
    assert server.subject.rfc4514_string() == "CN=localhost"
    assert extensions(ca) == [
        (x509.BasicConstraints, True),
        (x509.KeyUsage, True),
        (x509.SubjectKeyIdentifier, False),
    ]
    assert [e for e, _ in extensions(server)] == [
        x509.BasicConstraints,
        x509.KeyUsage,
        x509.ExtendedKeyUsage,
        x509.SubjectAlternativeName,
        x509.SubjectKeyIdentifier,
        x509.AuthorityKeyIdentifier,
    ]
    assert ca.not_valid_before_utc == server.not_valid_before_utc == NOW - dt.timedelta(hours=1)
    assert ca.not_valid_after_utc == server.not_valid_after_utc == NOW + dt.timedelta(days=7)
    assert files.key_file.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert files.key_file.stat().st_mode & 0o777 == 0o600


def test_emulator_signing_certificate() -> None:
    key = SigningKey.generate(NOW)
    cert = key.certificate
    assert cert.subject == cert.issuer
    assert cert.subject.rfc4514_string() == "CN=certauth emulator signing"
    assert list(cert.extensions) == []
    assert cert.not_valid_before_utc == NOW - dt.timedelta(days=1)
    assert cert.not_valid_after_utc == NOW + dt.timedelta(days=5 * 365)
    cert.verify_directly_issued_by(cert)
    assert key.jwk()["x5t"] == key.kid
