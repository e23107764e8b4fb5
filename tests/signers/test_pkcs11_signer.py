"""The PKCS#11 signer against a real token (SoftHSM2): the key is made inside the token, never
leaves it, and its signatures are the JWS signatures certauth and Entra ID expect."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import PIN, WRONG_PIN, SoftHsm

from certauth import _jose
from certauth._jose import b64url_encode, json_segment
from certauth.emulator import Emulator
from certauth.errors import InputFileError, InvalidArgumentError, SignerError
from certauth.signers import Signer
from certauth.signers._pkcs11_uri import Pkcs11Uri
from certauth.signers.pkcs11 import Pkcs11Signer, generate_certificate_in_token

pkcs11 = pytest.importorskip("pkcs11")


@pytest.fixture(scope="module")
def rsa_key(softhsm: SoftHsm) -> Iterator[Pkcs11Signer]:
    """An RSA-2048 key made inside the token, with its certificate stored next to it."""
    with generate_certificate_in_token(
        "pkcs11:token=certauth;object=rsa-shared", "CN=token-rsa", module=softhsm.module, pin=PIN
    ) as signer:
        yield signer


@pytest.fixture(scope="module")
def ec_key(softhsm: SoftHsm) -> Iterator[Pkcs11Signer]:
    """An EC P-256 key made inside the token."""
    with generate_certificate_in_token(
        "pkcs11:token=certauth;object=ec-shared;id=%EC%01",
        "CN=token-ec",
        key_type="ec-p256",
        module=softhsm.module,
        pin=PIN,
    ) as signer:
        yield signer


def _session(softhsm: SoftHsm) -> Any:
    """A python-pkcs11 session of the test's own on the ``certauth`` token, logged in (this
    process may be logged in already: the login state is per process and token)."""
    token = pkcs11.lib(softhsm.module).get_token(token_label="certauth")
    try:
        return token.open(rw=True, user_pin=PIN)
    except pkcs11.UserAlreadyLoggedIn:
        return token.open(rw=True)


# -- RFC 7512 URIs ---------------------------------------------------------------------------


def test_the_uri_is_parsed_as_rfc_7512_writes_it() -> None:
    uri = Pkcs11Uri.parse(
        "pkcs11:token=My%20Token;manufacturer=SoftHSM%20project;serial=ab25;model=SoftHSM%20v2;"
        "object=billing%3Bapi;id=%01%A0%ff;type=private;slot-id=3"
        "?pin-source=file:/run/pin&module-path=/usr/lib/softhsm/libsofthsm2.so&x-vendor=1"
    )
    assert (uri.token, uri.manufacturer, uri.serial, uri.model) == (
        "My Token",
        "SoftHSM project",
        "ab25",
        "SoftHSM v2",
    )
    assert uri.object == "billing;api"
    assert uri.id == b"\x01\xa0\xff"
    assert (uri.type, uri.slot_id) == ("private", 3)
    assert uri.pin_source == "file:/run/pin"
    assert uri.module_path == "/usr/lib/softhsm/libsofthsm2.so"
    assert Pkcs11Uri.parse("PKCS11:").token is None  # the scheme is case-insensitive
    assert Pkcs11Uri.parse("pkcs11:object=a").with_id(b"\x0a\xff") == "pkcs11:object=a;id=%0A%FF"


def test_pin_value_is_kept_out_of_every_text() -> None:
    uri = Pkcs11Uri.parse(f"pkcs11:token=t;object=k?pin-value={PIN}&module-name=softhsm2")
    assert uri.pin_value == PIN
    assert PIN not in uri.redacted()
    assert PIN not in repr(uri)
    assert uri.redacted() == "pkcs11:token=t;object=k?module-name=softhsm2"
    with pytest.raises(InvalidArgumentError) as caught:
        Pkcs11Uri.parse(f"pkcs11:token=t;bogus=1?pin-value={PIN}")
    assert PIN not in caught.value.message


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("file:/etc/key.pem", "a PKCS#11 key is a URI starting with pkcs11:"),
        ("pkcs11:token=a;token=b", "token is given twice; give it once"),
        ("pkcs11:label=x", "label is not an RFC 7512 attribute"),
        ("pkcs11:pin-source=/x", "pin-source belongs in the query (after ?)"),
        ("pkcs11:token=a?object=x", "object belongs in the path"),
        ("pkcs11:token=a;x-slot=1", "the vendor attribute x-slot is not supported in the path"),
        ("pkcs11:object=%zz", "object: a '%' must start a percent escape"),
        ("pkcs11:object=%ff", "object: the value is not UTF-8 text"),
        ("pkcs11:type=key", "type=key is not one of public, private, cert, secret-key, data"),
        ("pkcs11:slot-id=one", "slot-id=one is not a decimal number"),
        ("pkcs11:object", "'object' has no value; write it as object=VALUE"),
    ],
)
def test_a_bad_uri_is_refused_with_the_fix(uri: str, message: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        Pkcs11Uri.parse(uri)
    assert message in caught.value.message


# -- the key lives in the token ------------------------------------------------------------


def test_the_key_is_made_inside_the_token_and_cannot_be_exported(
    softhsm: SoftHsm, rsa_key: Pkcs11Signer, ec_key: Pkcs11Signer
) -> None:
    with _session(softhsm) as session:
        for label, secrets in (
            ("rsa-shared", (pkcs11.Attribute.PRIVATE_EXPONENT, pkcs11.Attribute.PRIME_1)),
            ("ec-shared", (pkcs11.Attribute.VALUE,)),
        ):
            key = session.get_key(pkcs11.ObjectClass.PRIVATE_KEY, label=label)
            # Generated by the token (CKA_LOCAL), sensitive and non-extractable from birth.
            assert key[pkcs11.Attribute.LOCAL] is True
            assert key[pkcs11.Attribute.SENSITIVE] is True
            assert key[pkcs11.Attribute.EXTRACTABLE] is False
            assert key[pkcs11.Attribute.ALWAYS_SENSITIVE] is True
            assert key[pkcs11.Attribute.NEVER_EXTRACTABLE] is True
            for attribute in secrets:
                with pytest.raises(pkcs11.AttributeSensitive):
                    key[attribute]
            # Nor wrapped out under another key: the token refuses a non-extractable key.
            wrapping = session.generate_key(
                pkcs11.KeyType.AES, 256, capabilities=pkcs11.MechanismFlag.WRAP
            )
            with pytest.raises(pkcs11.PKCS11Error):
                wrapping.wrap_key(key)
        # The certificate is stored next to the key (same id), and it is the signer's.
        stored = session.get_key(pkcs11.ObjectClass.PUBLIC_KEY, label="rsa-shared")
        cert = next(
            session.get_objects(
                {
                    pkcs11.Attribute.CLASS: pkcs11.ObjectClass.CERTIFICATE,
                    pkcs11.Attribute.ID: stored[pkcs11.Attribute.ID],
                }
            )
        )
        assert bytes(cert[pkcs11.Attribute.VALUE]) == rsa_key.certificate.der
    assert rsa_key.certificate.private_key is None
    assert isinstance(rsa_key, Signer)


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256"])
def test_signatures_from_the_token_verify_with_the_certificate(
    rsa_key: Pkcs11Signer, ec_key: Pkcs11Signer, alg: str
) -> None:
    signer = ec_key if alg == "ES256" else rsa_key
    data = b"header.payload"
    signature = signer.sign(data, alg)
    assert _jose.verify_signature(signer.certificate.public_key, alg, data, signature)
    assert not _jose.verify_signature(signer.certificate.public_key, alg, b"other", signature)
    if alg == "ES256":
        assert len(signature) == 64  # JWS r || s (RFC 7518 section 3.4), not DER
    if alg == "PS256":
        assert signature != signer.sign(data, alg)  # PSS is randomised (a real salt)


def test_the_certificate_is_signed_by_the_token_key(
    rsa_key: Pkcs11Signer, ec_key: Pkcs11Signer
) -> None:
    for signer in (rsa_key, ec_key):
        certificate = signer.certificate.x509
        certificate.verify_directly_issued_by(certificate)  # self-signed by the token's key
        assert signer.key_matches() is True


def test_a_token_from_the_strict_emulator_with_a_token_signed_assertion(
    rsa_key: Pkcs11Signer,
) -> None:
    client = "11111111-2222-3333-4444-555555555555"
    with Emulator(strict=True) as tenant:
        tenant.register(client, rsa_key.certificate)
        now = int(time.time())
        header = {"alg": "PS256", "typ": "JWT", "x5t#S256": rsa_key.certificate.x5t_s256}
        claims = {
            "aud": tenant.token_endpoint,
            "iss": client,
            "sub": client,
            "jti": str(uuid.uuid4()),
            "iat": now,
            "nbf": now,
            "exp": now + 300,
        }
        signing_input = f"{json_segment(header)}.{json_segment(claims)}"
        signature = rsa_key.sign(signing_input.encode("ascii"), "PS256")
        assertion = f"{signing_input}.{b64url_encode(signature)}"
        response = httpx.post(
            tenant.token_endpoint,
            data={
                "grant_type": "client_credentials",
                "client_id": client,
                "scope": "api://billing/.default",
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": assertion,
            },
            timeout=10,
        )
    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "Bearer"


# -- sessions ----------------------------------------------------------------------------------


def test_the_session_is_reopened_after_the_module_lost_it(softhsm: SoftHsm, label: str) -> None:
    with generate_certificate_in_token(
        f"pkcs11:token=certauth;object={label}", "CN=reopen", module=softhsm.module, pin=PIN
    ) as signer:
        assert signer.key_matches()
        # What a removed and reinserted token does to a session: every handle becomes invalid.
        pkcs11.lib(softhsm.module).reinitialize()
        signature = signer.sign(b"after", "RS256")
        assert _jose.verify_signature(signer.certificate.public_key, "RS256", b"after", signature)


def test_signing_is_thread_safe(rsa_key: Pkcs11Signer) -> None:
    results: list[bool] = []
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            data = f"message {index}".encode()
            for _ in range(5):
                signature = rsa_key.sign(data, "PS256")
                results.append(
                    _jose.verify_signature(rsa_key.certificate.public_key, "PS256", data, signature)
                )
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert results == [True] * 30


def test_raw_mechanisms_serve_a_token_without_the_hashing_ones(
    rsa_key: Pkcs11Signer, ec_key: Pkcs11Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = frozenset(
        {pkcs11.Mechanism.RSA_PKCS, pkcs11.Mechanism.RSA_PKCS_PSS, pkcs11.Mechanism.ECDSA}
    )
    for signer in (rsa_key, ec_key):
        monkeypatch.setattr(signer._token, "mechanisms", raw)
    for signer, alg in ((rsa_key, "RS256"), (rsa_key, "PS256"), (ec_key, "ES256")):
        signature = signer.sign(b"data", alg)
        assert _jose.verify_signature(signer.certificate.public_key, alg, b"data", signature)
    monkeypatch.setattr(rsa_key._token, "mechanisms", frozenset({pkcs11.Mechanism.RSA_PKCS}))
    with pytest.raises(SignerError) as caught:
        rsa_key.sign(b"data", "PS256")
    assert "supports neither of the mechanisms PS256 needs" in caught.value.message
    assert "(use alg=RS256)" in caught.value.message
    assert caught.value.backend == "pkcs11"


# -- where the module, the PIN and the certificate come from ------------------------------------


def test_module_and_pin_from_the_uri_and_the_environment(
    softhsm: SoftHsm, rsa_key: Pkcs11Signer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pin_file = tmp_path / "pin"
    pin_file.write_text(PIN + "\nignored\n", encoding="utf-8")
    uri = (
        f"pkcs11:token=certauth;object=rsa-shared?pin-source=file:{pin_file}"
        f"&module-path={softhsm.module}"
    )
    assert Pkcs11Signer(uri).key_matches()
    monkeypatch.setenv("CERTAUTH_PKCS11_MODULE", softhsm.module)
    by_env = Pkcs11Signer(f"pkcs11:token=certauth;object=rsa-shared?pin-source={pin_file}")
    assert by_env.certificate == rsa_key.certificate
    assert PIN not in repr(by_env)
    assert PIN not in by_env.description
    assert Pkcs11Signer(
        f"pkcs11:token=certauth;object=rsa-shared?module-name=libsofthsm2&module-path="
        f"{Path(softhsm.module).parent}",
        pin=PIN,
    ).key_matches()


def test_a_certificate_given_instead_of_the_tokens(
    softhsm: SoftHsm, rsa_key: Pkcs11Signer, tmp_path: Path, rsa_cert: object
) -> None:
    crt = tmp_path / "app.crt"
    crt.write_bytes(rsa_key.certificate.pem)
    signer = Pkcs11Signer(
        "pkcs11:token=certauth;object=rsa-shared", module=softhsm.module, pin=PIN, certificate=crt
    )
    assert signer.certificate.x509 == rsa_key.certificate.x509
    other = Pkcs11Signer(
        "pkcs11:token=certauth;object=rsa-shared",
        module=softhsm.module,
        pin=PIN,
        certificate=rsa_cert,  # type: ignore[arg-type]
    )
    assert other.key_matches() is False
    assert other.certificate.private_key is None  # the given key is not kept


# -- failures, each with its fix, never with the PIN ---------------------------------------------


def _refusal(**kwargs: object) -> str:
    uri = kwargs.pop("uri")
    with pytest.raises((SignerError, InvalidArgumentError, InputFileError)) as caught:
        Pkcs11Signer(uri, **kwargs)  # type: ignore[arg-type]
    message = caught.value.message
    for secret in (PIN, WRONG_PIN):
        assert secret not in message
    return message


def test_missing_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CERTAUTH_PKCS11_MODULE", raising=False)
    message = _refusal(uri="pkcs11:token=certauth", pin=PIN)
    assert message == (
        "pkcs11:token=certauth: no PKCS#11 module given; name the vendor's module (e.g. "
        "/usr/lib/softhsm/libsofthsm2.so) with module=, module-path= in the URI or "
        "CERTAUTH_PKCS11_MODULE"
    )
    message = _refusal(uri="pkcs11:token=certauth", module=tmp_path / "nope.so", pin=PIN)
    assert f"PKCS#11 module {tmp_path / 'nope.so'}: no such file" in message
    not_a_library = tmp_path / "text.so"
    not_a_library.write_text("not a shared object", encoding="utf-8")
    message = _refusal(uri="pkcs11:token=certauth", module=not_a_library, pin=PIN)
    assert f"cannot load the PKCS#11 module {not_a_library}" in message
    assert "the vendor's PKCS#11 module for this machine's architecture" in message


def test_missing_token_lists_the_tokens(softhsm: SoftHsm) -> None:
    message = _refusal(uri="pkcs11:token=nope;object=x", module=softhsm.module, pin=PIN)
    assert message.startswith(
        "pkcs11:token=nope;object=x: no token matches the URI (tokens present: "
    )
    assert "'certauth' serial " in message
    assert "'certauth-pins' serial " in message
    assert message.endswith(
        "check token=, serial= and the other path attributes, or insert the token"
    )


def test_missing_key_lists_the_objects(softhsm: SoftHsm, rsa_key: Pkcs11Signer) -> None:
    message = _refusal(uri="pkcs11:token=certauth;object=nope", module=softhsm.module, pin=PIN)
    assert message.startswith(
        "pkcs11:token=certauth;object=nope: no private key matches object=/id= in the token "
        "(it holds: "
    )
    assert "private key object=rsa-shared;id=%" in message
    assert "certificate object=rsa-shared;id=%" in message
    assert message.endswith("fix object= or id= in the URI")
    several = _refusal(uri="pkcs11:token=certauth", module=softhsm.module, pin=PIN)
    assert "private keys match" in several
    assert "add id= or object= to the URI" in several


def test_wrong_and_missing_pins(softhsm: SoftHsm, tmp_path: Path) -> None:
    # certauth-pins: no test of this process ever logs in to it successfully.
    message = _refusal(uri="pkcs11:token=certauth-pins", module=softhsm.module, pin=WRONG_PIN)
    assert message == (
        "pkcs11:token=certauth-pins: the token refused the PIN (CKR_PIN_INCORRECT); check the "
        "PIN given with pin= or pin-source= (the token may lock after a few wrong PINs)"
    )
    message = _refusal(uri="pkcs11:token=certauth-pins", module=softhsm.module)
    assert message == (
        "pkcs11:token=certauth-pins: token 'certauth-pins' needs the user PIN to use its "
        "private keys; give it with pin=, or pin-source=FILE in the URI"
    )
    message = _refusal(
        uri=f"pkcs11:token=certauth-pins?pin-source={tmp_path}/none", module=softhsm.module
    )
    assert message == f"{tmp_path}/none: no such file; check the PIN path"
    message = _refusal(uri="pkcs11:token=certauth-pins?pin-source=|/bin/cat", module=softhsm.module)
    assert "pin-source=|/bin/cat is not a file" in message
    message = _refusal(
        uri="pkcs11:token=certauth-pins?pin-source=https://x/pin", module=softhsm.module
    )
    assert "is not a file; certauth reads the PIN from a file" in message


def test_a_locked_pin_says_how_to_unlock(softhsm: SoftHsm) -> None:
    # SoftHSM2 never locks a PIN; the mapping is checked on the error python-pkcs11 raises.
    from certauth.signers.pkcs11 import _Token

    token = _Token(Pkcs11Uri.parse("pkcs11:token=t"), softhsm.module, WRONG_PIN)
    message = token.error(pkcs11.PinLocked()).message
    assert message == (
        "pkcs11:token=t: the user PIN is locked (CKR_PIN_LOCKED) after too many wrong PINs; "
        "unlock it with the security officer PIN using the token's own tool"
    )
    assert "token was removed" in token.error(pkcs11.DeviceRemoved()).message


def test_wrong_type_and_alg(softhsm: SoftHsm, rsa_key: Pkcs11Signer) -> None:
    message = _refusal(
        uri="pkcs11:token=certauth;object=rsa-shared;type=cert", module=softhsm.module, pin=PIN
    )
    assert "type=cert names no private key" in message
    with pytest.raises(InvalidArgumentError, match=r"^alg=ES256: ES256 needs an EC key"):
        rsa_key.sign(b"x", "ES256")
    with pytest.raises(InvalidArgumentError, match=r"^alg='HS256': a PKCS#11 key signs"):
        rsa_key.sign(b"x", "HS256")


def test_python_pkcs11_missing(softhsm: SoftHsm, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pkcs11", None)
    message = _refusal(uri="pkcs11:token=certauth", module=softhsm.module, pin=PIN)
    assert message == (
        "a pkcs11: key needs python-pkcs11, which is not installed; install it with "
        "pip install 'certauth-toolkit[pkcs11]'"
    )


def test_creation_never_replaces_and_rolls_back(
    softhsm: SoftHsm, rsa_key: Pkcs11Signer, label: str
) -> None:
    with (
        pytest.raises(SignerError) as caught,
        generate_certificate_in_token(
            "pkcs11:token=certauth;object=rsa-shared", module=softhsm.module, pin=PIN
        ),
    ):
        pass
    assert (
        "already holds objects with this object= or id=; nothing was made" in caught.value.message
    )
    assert rsa_key.key_matches()  # untouched

    class Stop(Exception):
        pass

    with (
        pytest.raises(Stop),
        generate_certificate_in_token(
            f"pkcs11:token=certauth;object={label}", module=softhsm.module, pin=PIN
        ),
    ):
        raise Stop
    with _session(softhsm) as session:
        assert list(session.get_objects({pkcs11.Attribute.LABEL: label})) == []
