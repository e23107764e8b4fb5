"""certauth._jose: base64url, the algorithm table, signatures and JWKs, checked against the RFCs
and against PyJWT (the reference implementation, which shares no code with certauth)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from certauth import _jose

RSA_ALGS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]
EC_ALGS = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
MESSAGE = b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_keys() -> dict[str, ec.EllipticCurvePrivateKey]:
    curves = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}
    return {crv: ec.generate_private_key(curve) for crv, curve in curves.items()}


def key_for(alg: str, rsa_key: Any, ec_keys: dict[str, Any]) -> Any:
    return ec_keys[EC_ALGS[alg]] if alg in EC_ALGS else rsa_key


# -- base64url ---------------------------------------------------------------------------------


@given(st.binary(max_size=70))
def test_base64url_round_trips(data: bytes) -> None:
    text = _jose.b64url_encode(data)
    assert "=" not in text
    assert text == jwt.utils.base64url_encode(data).decode()
    assert _jose.b64url_decode(text) == data
    assert _jose.b64url_decode_lenient(text) == data
    # The lenient form takes padding, the standard alphabet and surrounding whitespace.
    padded = base64.b64encode(data).decode()
    assert _jose.b64url_decode_lenient(f" {padded}\n") == data


def test_strict_decode_accepts_the_empty_value() -> None:
    assert _jose.b64url_decode("") == b""


@pytest.mark.parametrize(
    "text",
    [
        "AQ==",  # padding (RFC 7515 section 2: omitted)
        "AQAB=",
        "ab+/",  # the standard alphabet
        "ab c",
        "abc\n",  # a regex that ends in $ would let this through
        "abcé",
        "A",  # one character holds no octet
        "AAAAA",
    ],
)
def test_strict_decode_refuses_what_is_not_base64url(text: str) -> None:
    with pytest.raises(ValueError, match="not base64url") as excinfo:
        _jose.b64url_decode(text)
    assert not isinstance(excinfo.value, _jose.NonCanonicalError)


@pytest.mark.parametrize(
    ("canonical", "altered"),
    [
        ("AQ", "AR"),  # two characters: 4 spare bits
        ("AA", "AB"),
        ("AAE", "AAF"),  # three characters: 2 spare bits
        ("AAE", "AAG"),
    ],
)
def test_strict_decode_refuses_non_canonical_spellings(canonical: str, altered: str) -> None:
    # Both spellings decode to the same octets with a permissive decoder.
    assert base64.urlsafe_b64decode(altered + "==") == base64.urlsafe_b64decode(canonical + "==")
    assert _jose.b64url_decode(canonical) == base64.urlsafe_b64decode(canonical + "==")
    with pytest.raises(_jose.NonCanonicalError):
        _jose.b64url_decode(altered)


@pytest.mark.parametrize("text", ["ab!c", "abcé", "A", "a=b"])
def test_lenient_decode_still_refuses_other_characters(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - binascii.Error and friends
        _jose.b64url_decode_lenient(text)


@pytest.mark.parametrize("value", [0, 1, 255, 256, 65537, 2**2048 - 1])
def test_base64url_uint_is_minimal(value: int) -> None:
    # RFC 7518 section 6.3.1.1: the fewest octets; zero is one zero octet.
    text = _jose.b64url_uint(value)
    assert text == jwt.utils.to_base64url_uint(value).decode()
    assert int.from_bytes(_jose.b64url_decode(text), "big") == value
    if value:
        assert _jose.b64url_decode(text)[0] != 0


def test_base64url_uint_examples_and_refusal() -> None:
    assert _jose.b64url_uint(0) == "AA"
    assert _jose.b64url_uint(65537) == "AQAB"  # RFC 7517 appendix A.1
    with pytest.raises(ValueError, match="unsigned"):
        _jose.b64url_uint(-1)


def test_json_segment_is_compact_and_keeps_order() -> None:
    value = {"typ": "JWT", "alg": "RS256", "name": "Zoë"}
    segment = _jose.json_segment(value)
    text = _jose.b64url_decode(segment).decode("ascii")
    assert text == '{"typ":"JWT","alg":"RS256","name":"Zo\\u00eb"}'
    assert json.loads(text) == value


# -- the algorithm table -----------------------------------------------------------------------


def test_the_table_follows_rfc_7518() -> None:
    assert list(_jose.ALGORITHMS) == [*RSA_ALGS, *EC_ALGS]
    assert _jose.MIN_RSA_BITS == 2048
    for alg, spec in _jose.ALGORITHMS.items():
        assert spec.name == alg
        assert spec.hash.digest_size * 8 == int(alg[2:])
        if alg in EC_ALGS:
            assert spec.kty == "EC"
            assert spec.curve is not None
            assert spec.curve.crv == EC_ALGS[alg]
            assert spec.rsa_padding is None
            assert spec.min_rsa_bits is None
        else:
            assert spec.kty == "RSA"
            assert spec.min_rsa_bits == 2048
            assert spec.curve is None
    assert {c: curve.size for c, curve in _jose.CURVES.items()} == {
        "P-256": 32,
        "P-384": 48,
        "P-521": 66,
    }
    # Built once, shared by every signature.
    assert _jose.ALGORITHMS["PS256"].rsa_padding is _jose.algorithm("PS256").rsa_padding


@pytest.mark.parametrize("alg", ["none", "HS256", "EdDSA", "rs256", ""])
def test_other_algorithms_are_unknown(alg: str, rsa_key: Any) -> None:
    with pytest.raises(ValueError, match="not a supported JWS algorithm"):
        _jose.algorithm(alg)
    with pytest.raises(ValueError, match="not a supported JWS algorithm"):
        _jose.sign(rsa_key, alg, MESSAGE)
    with pytest.raises(ValueError, match="not a supported JWS algorithm"):
        _jose.verify_signature(rsa_key.public_key(), alg, MESSAGE, b"")


# -- signatures --------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", [*RSA_ALGS, *EC_ALGS])
def test_each_algorithm_signs_and_verifies(alg: str, rsa_key: Any, ec_keys: Any) -> None:
    key = key_for(alg, rsa_key, ec_keys)
    signature = _jose.sign(key, alg, MESSAGE)
    public = key.public_key()
    assert _jose.verify_signature(public, alg, MESSAGE, signature)
    assert not _jose.verify_signature(public, alg, MESSAGE + b"x", signature)
    altered = bytes([signature[0] ^ 1]) + signature[1:]
    assert not _jose.verify_signature(public, alg, MESSAGE, altered)
    assert not _jose.verify_signature(public, alg, MESSAGE, b"")


@pytest.mark.parametrize("alg", [*RSA_ALGS, *EC_ALGS])
def test_pyjwt_agrees_both_ways(alg: str, rsa_key: Any, ec_keys: Any) -> None:
    key = key_for(alg, rsa_key, ec_keys)
    reference = jwt.get_algorithm_by_name(alg)
    ours = _jose.sign(key, alg, MESSAGE)
    assert reference.verify(MESSAGE, key.public_key(), ours)
    theirs = reference.sign(MESSAGE, key)
    assert _jose.verify_signature(key.public_key(), alg, MESSAGE, theirs)


@pytest.mark.parametrize("alg", ["PS256", "PS384", "PS512"])
def test_pss_salt_is_the_hash_length(alg: str, rsa_key: Any) -> None:
    # RFC 7518 section 3.5. A signature with another salt length must not verify.
    from cryptography.hazmat.primitives.asymmetric import padding

    digest = _jose.ALGORITHMS[alg].hash
    other = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size + 1)
    signature = rsa_key.sign(MESSAGE, other, digest)
    assert not _jose.verify_signature(rsa_key.public_key(), alg, MESSAGE, signature)


@pytest.mark.parametrize(("alg", "size"), [("ES256", 32), ("ES384", 48), ("ES512", 66)])
def test_ecdsa_signatures_are_r_s_of_the_curve_size(
    alg: str, size: int, ec_keys: dict[str, Any]
) -> None:
    key = ec_keys[EC_ALGS[alg]]
    for _ in range(8):  # leading zero octets of R or S must be kept
        assert len(_jose.sign(key, alg, MESSAGE)) == 2 * size
    signature = _jose.sign(key, alg, MESSAGE)
    assert not _jose.verify_signature(key.public_key(), alg, MESSAGE, signature[:-1])
    # DER (what cryptography returns) is not the JWS form (RFC 7518 section 3.4).
    der = key.sign(MESSAGE, ec.ECDSA(_jose.ALGORITHMS[alg].hash))
    assert not _jose.verify_signature(key.public_key(), alg, MESSAGE, der)


def test_a_key_of_the_wrong_kind_or_curve_is_a_type_error(rsa_key: Any, ec_keys: Any) -> None:
    p256, p384 = ec_keys["P-256"], ec_keys["P-384"]
    with pytest.raises(TypeError, match="RS256 needs an RSA key, and this is an EC key"):
        _jose.sign(p256, "RS256", MESSAGE)
    with pytest.raises(TypeError, match="ES256 needs an EC key, and this is an RSA key"):
        _jose.sign(rsa_key, "ES256", MESSAGE)
    with pytest.raises(TypeError, match="ES256 needs curve P-256, and this key is on P-384"):
        _jose.sign(p384, "ES256", MESSAGE)
    with pytest.raises(TypeError, match="private key"):
        _jose.sign(rsa_key.public_key(), "RS256", MESSAGE)
    with pytest.raises(TypeError, match="not bytes"):
        _jose.check_key(b"secret", "RS256")
    # Verifying with the wrong kind of key is simply not a valid signature.
    signature = _jose.sign(p256, "ES256", MESSAGE)
    assert not _jose.verify_signature(p384.public_key(), "ES256", MESSAGE, signature)
    assert not _jose.verify_signature(rsa_key.public_key(), "ES256", MESSAGE, signature)
    assert not _jose.verify_signature(p256.public_key(), "ES384", MESSAGE, signature)


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_rsa_below_2048_bits_is_refused_where_the_table_says() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the weak key under test
    for alg in RSA_ALGS:
        with pytest.raises(ValueError, match=r"RSA-1024; RFC 7518 section 3\.3 requires at least"):
            _jose.check_key(weak.public_key(), alg)
        with pytest.raises(ValueError, match="2048"):
            _jose.sign(weak, alg, MESSAGE)
    # Verifying leaves the size to the caller, which refuses first with its own words.
    signature = jwt.get_algorithm_by_name("RS256").sign(MESSAGE, weak)
    assert _jose.verify_signature(weak.public_key(), "RS256", MESSAGE, signature)


# -- JWK ---------------------------------------------------------------------------------------


def test_rsa_jwk_round_trip(rsa_key: Any) -> None:
    public = rsa_key.public_key()
    jwk = _jose.public_key_to_jwk(public)
    assert list(jwk) == ["kty", "n", "e"]
    assert jwk == {k: v for k, v in RSAAlgorithm.to_jwk(public, as_dict=True).items() if k in jwk}
    loaded = _jose.jwk_to_public_key(jwk)
    assert isinstance(loaded, rsa.RSAPublicKey)
    assert loaded.public_numbers() == public.public_numbers()


@pytest.mark.parametrize("crv", ["P-256", "P-384", "P-521"])
def test_ec_jwk_round_trip(crv: str, ec_keys: dict[str, Any]) -> None:
    public = ec_keys[crv].public_key()
    jwk = _jose.public_key_to_jwk(public)
    assert list(jwk) == ["kty", "crv", "x", "y"]
    size = _jose.CURVES[crv].size
    # RFC 7518 section 6.2.1.2: full-size coordinates, leading zeros kept.
    assert len(_jose.b64url_decode(jwk["x"])) == len(_jose.b64url_decode(jwk["y"])) == size
    assert jwk == {k: v for k, v in ECAlgorithm.to_jwk(public, as_dict=True).items() if k in jwk}
    loaded = _jose.jwk_to_public_key(jwk)
    assert isinstance(loaded, ec.EllipticCurvePublicKey)
    assert loaded.public_numbers() == public.public_numbers()


def test_jwk_members_are_read_leniently(rsa_key: Any) -> None:
    jwk = _jose.public_key_to_jwk(rsa_key.public_key())
    padded = {**jwk, "e": "AQAB", "n": jwk["n"] + "=" * (-len(jwk["n"]) % 4)}
    assert _jose.jwk_to_public_key(padded).public_numbers() == (  # type: ignore[union-attr]
        rsa_key.public_key().public_numbers()
    )


def test_an_ec_point_off_its_curve_is_refused(ec_keys: dict[str, Any]) -> None:
    jwk = _jose.public_key_to_jwk(ec_keys["P-256"].public_key())
    with pytest.raises(ValueError):  # noqa: PT011 - cryptography's own words
        _jose.jwk_to_public_key({**jwk, "y": jwk["x"]})
    # Coordinates of P-384 presented as P-256 are too long.
    big = _jose.public_key_to_jwk(ec_keys["P-384"].public_key())
    with pytest.raises(ValueError, match="too long for the curve"):
        _jose.jwk_to_public_key({**big, "crv": "P-256"})


@pytest.mark.parametrize(
    ("jwk", "reason"),
    [
        ({"kty": "oct", "k": "c2VjcmV0"}, "key type 'oct' is not RSA or EC"),
        ({"n": "AQAB", "e": "AQAB"}, "key type None is not RSA or EC"),
        ({"kty": "RSA", "e": "AQAB"}, "no 'n'"),
        ({"kty": "RSA", "n": "", "e": "AQAB"}, "no 'n'"),
        ({"kty": "RSA", "n": "!!", "e": "AQAB"}, "'n' is not base64url"),
        ({"kty": "RSA", "n": "AQAB", "e": 3}, "no 'e'"),
        ({"kty": "EC", "crv": "secp256k1", "x": "AA", "y": "AA"}, "curve 'secp256k1' is not"),
        ({"kty": "EC", "crv": ["P-256"], "x": "AA", "y": "AA"}, "curve \\['P-256'\\] is not"),
        ({"kty": "EC", "crv": "P-256", "y": "AA"}, "no 'x'"),
    ],
)
def test_unusable_jwks_say_why(jwk: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        _jose.jwk_to_public_key(jwk)


def test_public_key_to_jwk_refuses_other_keys(rsa_key: Any) -> None:
    with pytest.raises(TypeError, match="RSA or EC public key"):
        _jose.public_key_to_jwk(rsa_key)
    secp256k1 = ec.generate_private_key(ec.SECP256K1()).public_key()
    with pytest.raises(ValueError, match="no JWK name"):
        _jose.public_key_to_jwk(secp256k1)


# -- start-up cost -----------------------------------------------------------------------------


def test_importing_jose_stays_cheap() -> None:
    # Every CLI process signs through this module: no PyJWT, no JSON, no HTTP stack, and no
    # OpenSSL backend module (made by the first ec.ECDSA object) at import.
    code = (
        "import sys, certauth._jose; "
        "loaded = [m for m in ('jwt', 'json', 'httpx', 'cryptography.hazmat.backends.openssl') "
        "if m in sys.modules]; "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_hashes_are_shared_instances() -> None:
    assert isinstance(_jose.ALGORITHMS["RS256"].hash, hashes.SHA256)
    assert _jose.ALGORITHMS["RS256"].hash is _jose.ALGORITHMS["PS256"].hash
