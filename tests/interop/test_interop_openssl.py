"""Every file ``certauth cert create`` writes, read back by the ``openssl`` binary and by
``cryptography`` independently; all thumbprints agree with what the command printed.

Extends tests/test_certificates.py (files written by the library, read by openssl) and
tests/test_cli_cert.py (one encrypted ``--pfx --bundle`` run): here the whole matrix of
``cert create`` (RSA and EC; with and without a password; ``.crt``, ``.key``, ``--pfx``,
``--bundle``) goes through three readers that share no code: openssl's ``x509``, ``pkey`` and
``pkcs12``, cryptography's loaders, and certauth's own ``load_certificate``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from _cert_helpers import b64url, openssl, openssl_fingerprint
from _interop import Generated, create
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from certauth.certificates import load_certificate

pytestmark = pytest.mark.interop

CASES = [("rsa2048", None), ("rsa2048", "matrix-password-1a2b"), ("ec-p256", None),
         ("ec-p256", "matrix-password-3c4d")]  # fmt: skip


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"{c[0]}-{'pw' if c[1] else 'plain'}")
def made(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Generated:
    key, password = request.param
    return create(tmp_path_factory.mktemp("matrix"), f"m-{key}", key=key, password=password)


def _passin(made: Generated) -> tuple[list[str], dict[str, str]]:
    """openssl's ``-passin`` arguments (the password through the environment, never argv)."""
    if made.password is None:
        return ["-passin", "pass:"], {}
    return ["-passin", "env:MATRIX_PW"], {"MATRIX_PW": made.password}


def _public_key_der_from_openssl(pem_text: str) -> bytes:
    return serialization.load_pem_public_key(pem_text.encode()).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_openssl_reads_every_file_and_agrees_on_the_thumbprints(
    made: Generated, tmp_path: Path
) -> None:
    crt, key, pfx, bundle = (made.path(s) for s in (".crt", ".key", ".pfx", ".pem"))
    passin, env = _passin(made)
    sha1 = openssl_fingerprint(crt, "sha1")
    sha256 = openssl_fingerprint(crt, "sha256")
    assert sha1.hex().upper() == made.report["thumbprint_sha1"]
    assert sha256.hex().upper() == made.report["thumbprint_sha256"].replace(":", "").upper()
    assert b64url(sha1) == made.report["x5t"]
    assert b64url(sha256) == made.report["x5t#S256"]

    # The key (and the bundle's key) belong to the certificate: same public key, per openssl.
    cert_public = openssl("x509", "-in", crt, "-noout", "-pubkey")
    key_public = openssl("pkey", "-in", key, "-pubout", *passin, env=env)
    bundle_public = openssl("pkey", "-in", bundle, "-pubout", *passin, env=env)
    assert cert_public == key_public == bundle_public
    # The bundle's certificate is the same certificate.
    bundle_cert = tmp_path / "from-bundle.crt"
    bundle_cert.write_text(openssl("x509", "-in", bundle))
    assert openssl_fingerprint(bundle_cert, "sha1") == sha1

    # The PFX: its certificate and key, extracted by openssl.
    pfx_cert = tmp_path / "from-pfx.crt"
    pfx_cert.write_text(openssl("pkcs12", "-in", pfx, "-nokeys", "-clcerts", *passin, env=env))
    assert openssl_fingerprint(pfx_cert, "sha1") == sha1
    pfx_key = openssl("pkcs12", "-in", pfx, "-nocerts", "-nodes", *passin, env=env)
    pfx_key_file = tmp_path / "from-pfx.key"
    pfx_key_file.write_text(pfx_key)
    assert openssl("pkey", "-in", pfx_key_file, "-pubout") == cert_public
    info = openssl("pkcs12", "-in", pfx, "-info", "-noout", *passin, env=env, with_stderr=True)
    if made.password is not None:
        # Modern protection, no RC2/3DES (what --legacy would show).
        assert "PBES2, PBKDF2, AES-256-CBC" in info
        assert "MAC: sha256" in info
    if made.password is not None:
        assert "ENCRYPTED PRIVATE KEY" in key.read_text()
        assert "ENCRYPTED PRIVATE KEY" in bundle.read_text()
    assert _public_key_der_from_openssl(cert_public) == _public_key_der_from_openssl(key_public)


def test_cryptography_reads_every_file_and_agrees_on_the_thumbprints(made: Generated) -> None:
    password = made.password.encode() if made.password else None
    certificate = x509.load_pem_x509_certificate(made.path(".crt").read_bytes())
    der = certificate.public_bytes(serialization.Encoding.DER)
    assert certificate.fingerprint(hashes.SHA1()).hex().upper() == made.report["thumbprint_sha1"]  # noqa: S303
    assert b64url(hashlib.sha256(der).digest()) == made.report["x5t#S256"]
    key = serialization.load_pem_private_key(made.path(".key").read_bytes(), password)
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert public == certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pfx_key, pfx_cert, extra = pkcs12.load_key_and_certificates(
        made.path(".pfx").read_bytes(), password
    )
    assert pfx_cert is not None
    assert pfx_key is not None
    assert extra == []
    assert pfx_cert.fingerprint(hashes.SHA256()) == certificate.fingerprint(hashes.SHA256())
    assert pfx_key.private_numbers() == key.private_numbers()  # type: ignore[union-attr]
    bundle = made.path(".pem").read_bytes()
    assert x509.load_pem_x509_certificate(bundle) == certificate
    bundle_key = serialization.load_pem_private_key(bundle, password)
    assert bundle_key.private_numbers() == key.private_numbers()  # type: ignore[union-attr]

    # And certauth's loader, on each file, says the same.
    for file, key_file in ((".crt", ".key"), (".pfx", None), (".pem", None)):
        loaded = load_certificate(
            made.path(file),
            key=made.path(key_file) if key_file else None,
            password=made.password,
            require_key=True,
        )
        assert loaded.thumbprint_sha1 == made.report["thumbprint_sha1"]
        assert loaded.x5t_s256 == made.report["x5t#S256"]
        assert loaded.key_matches() is True
