"""The RSA private key consistency check.

certauth loads RSA keys with OpenSSL's validation skipped (it costs tens of milliseconds per
load, see ``_check_rsa_key``) and checks the key's parameters itself. These keys are each
inconsistent in one way; every file format a key can come in must refuse them, with the same
error. Each inconsistent key belongs to the certificate it is loaded with (same n and e), so
without the check ``load_certificate`` would accept it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from certauth.certificates import Certificate, build_certificate, load_certificate
from certauth.cli.main import main
from certauth.errors import CertificateError

REFUSAL = (
    "the RSA private key is corrupt (its parameters do not fit together); restore the key "
    "file from where it was created"
)
PASSWORD = b"key-check-password"
NOW = dt.datetime.now(dt.timezone.utc)


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def _der_integer(value: int) -> bytes:
    # Non-negative, minimal, with a leading zero octet when the high bit is set (X.690 8.3).
    body = value.to_bytes(value.bit_length() // 8 + 1, "big")
    return b"\x02" + _der_length(len(body)) + body


def _pkcs1_der(numbers: rsa.RSAPrivateNumbers, n: int) -> bytes:
    """RFC 8017 appendix A.1.2 RSAPrivateKey, with the modulus given separately."""
    values = (
        0,
        n,
        numbers.public_numbers.e,
        numbers.d,
        numbers.p,
        numbers.q,
        numbers.dmp1,
        numbers.dmq1,
        numbers.iqmp,
    )
    body = b"".join(_der_integer(v) for v in values)
    return b"\x30" + _der_length(len(body)) + body


def _changed(numbers: rsa.RSAPrivateNumbers, **values: int) -> rsa.RSAPrivateKey:
    fields = {
        "p": numbers.p,
        "q": numbers.q,
        "d": numbers.d,
        "dmp1": numbers.dmp1,
        "dmq1": numbers.dmq1,
        "iqmp": numbers.iqmp,
    }
    fields.update(values)
    return rsa.RSAPrivateNumbers(public_numbers=numbers.public_numbers, **fields).private_key(
        unsafe_skip_rsa_key_validation=True
    )


def wrong_d(numbers: rsa.RSAPrivateNumbers) -> rsa.RSAPrivateKey:
    # The CRT exponents follow the wrong d, so only e*d = 1 mod lcm(p-1, q-1) can catch it.
    d = numbers.d + 2
    return _changed(numbers, d=d, dmp1=d % (numbers.p - 1), dmq1=d % (numbers.q - 1))


def wrong_dmp1(numbers: rsa.RSAPrivateNumbers) -> rsa.RSAPrivateKey:
    return _changed(numbers, dmp1=numbers.dmp1 + 2)


def wrong_dmq1(numbers: rsa.RSAPrivateNumbers) -> rsa.RSAPrivateKey:
    return _changed(numbers, dmq1=numbers.dmq1 + 2)


def wrong_iqmp(numbers: rsa.RSAPrivateNumbers) -> rsa.RSAPrivateKey:
    return _changed(numbers, iqmp=numbers.iqmp + 1)


def n_is_not_p_times_q(numbers: rsa.RSAPrivateNumbers) -> rsa.RSAPrivateKey:
    # RSAPrivateNumbers refuses p*q != n even with validation skipped, so the key is written
    # as DER by hand and read back with validation skipped, as certauth reads key files.
    der = _pkcs1_der(numbers, numbers.public_numbers.n + 2)
    key = serialization.load_der_private_key(der, None, unsafe_skip_rsa_key_validation=True)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


BREAKAGES: dict[str, Callable[[rsa.RSAPrivateNumbers], rsa.RSAPrivateKey]] = {
    "wrong d": wrong_d,
    "wrong dmp1": wrong_dmp1,
    "wrong dmq1": wrong_dmq1,
    "wrong iqmp": wrong_iqmp,
    "n != p*q": n_is_not_p_times_q,
}


def _key_bytes(key: rsa.RSAPrivateKey, form: str) -> bytes:
    encoding = serialization.Encoding.PEM if form.startswith("PEM") else serialization.Encoding.DER
    layout = (
        serialization.PrivateFormat.PKCS8
        if "PKCS#8" in form
        else serialization.PrivateFormat.TraditionalOpenSSL
    )
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(PASSWORD)
        if "encrypted" in form
        else serialization.NoEncryption()
    )
    return key.private_bytes(encoding, layout, encryption)


FORMS = [
    "PEM PKCS#8",
    "PEM PKCS#8 encrypted",
    "PEM PKCS#1",
    "DER PKCS#8",
    "DER PKCS#8 encrypted",
    "DER PKCS#1",
]


def _certificate_for(key: rsa.RSAPrivateKey, issuer: Certificate) -> Certificate:
    """A certificate for ``key``'s public key (n, e), signed by a sound key: a certificate
    the inconsistent key matches."""
    return build_certificate(
        "CN=key-check",
        key,
        not_before=NOW - dt.timedelta(minutes=5),
        not_after=NOW + dt.timedelta(days=1),
        issuer=issuer,
    )


@pytest.fixture(scope="module", params=list(BREAKAGES))
def broken(
    request: pytest.FixtureRequest, rsa_cert: Certificate
) -> tuple[rsa.RSAPrivateKey, Certificate]:
    """An inconsistent private key and a certificate whose public key is the key's (n, e)."""
    sound = rsa_cert.require_private_key()
    assert isinstance(sound, rsa.RSAPrivateKey)
    key = BREAKAGES[request.param](sound.private_numbers())
    return key, _certificate_for(key, rsa_cert)


def _assert_refused(error: CertificateError, source: str) -> None:
    assert type(error) is CertificateError
    assert error.message == f"{source}: {REFUSAL}"
    assert error.path == source
    assert error.exit_code == 3


@pytest.mark.parametrize("form", FORMS)
def test_inconsistent_key_file_is_refused(
    broken: tuple[rsa.RSAPrivateKey, Certificate], form: str, tmp_path: Path
) -> None:
    key, cert = broken
    cert_file = tmp_path / "app.crt"
    cert_file.write_bytes(cert.pem)
    key_file = tmp_path / ("app.der" if form.startswith("DER") else "app.key")
    key_file.write_bytes(_key_bytes(key, form))
    password = PASSWORD if "encrypted" in form else None
    with pytest.raises(CertificateError) as info:
        load_certificate(cert_file, key=key_file, password=password)
    _assert_refused(info.value, str(key_file))


@pytest.mark.parametrize("form", ["PEM PKCS#8", "PEM PKCS#8 encrypted", "PEM PKCS#1"])
def test_inconsistent_key_in_a_pem_bundle_is_refused(
    broken: tuple[rsa.RSAPrivateKey, Certificate], form: str, tmp_path: Path
) -> None:
    key, cert = broken
    bundle = tmp_path / "app.pem"
    bundle.write_bytes(_key_bytes(key, form) + cert.pem)
    password = PASSWORD if "encrypted" in form else None
    with pytest.raises(CertificateError) as info:
        load_certificate(bundle, password=password)
    _assert_refused(info.value, str(bundle))


def test_inconsistent_der_key_given_as_bytes_is_refused(
    broken: tuple[rsa.RSAPrivateKey, Certificate],
) -> None:
    key, cert = broken
    with pytest.raises(CertificateError) as info:
        load_certificate(cert.pem, key=_key_bytes(key, "DER PKCS#8"))
    _assert_refused(info.value, "<private key data>")


def test_inconsistent_key_exits_3_in_the_cli(
    broken: tuple[rsa.RSAPrivateKey, Certificate],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key, cert = broken
    (tmp_path / "app.crt").write_bytes(cert.pem)
    (tmp_path / "app.key").write_bytes(_key_bytes(key, "PEM PKCS#8"))
    code = main(["cert", "show", str(tmp_path / "app.crt"), "--key", str(tmp_path / "app.key")])
    assert code == 3
    assert capsys.readouterr().err.strip().endswith(f"{tmp_path / 'app.key'}: {REFUSAL}")


@pytest.mark.parametrize("form", FORMS)
def test_the_same_key_unbroken_loads_in_every_form(
    rsa_cert: Certificate, form: str, tmp_path: Path
) -> None:
    # The control: the refusals above come from the broken parameters, not from the forms.
    sound = rsa_cert.require_private_key()
    assert isinstance(sound, rsa.RSAPrivateKey)
    cert_file = tmp_path / "app.crt"
    cert_file.write_bytes(rsa_cert.pem)
    key_file = tmp_path / "app.key"
    key_file.write_bytes(_key_bytes(sound, form))
    password = PASSWORD if "encrypted" in form else None
    loaded = load_certificate(cert_file, key=key_file, password=password)
    assert loaded.key_matches() is True
    assert loaded.thumbprint_sha1 == rsa_cert.thumbprint_sha1
