"""certauth.dpop (RFC 9449) and ``certauth dpop-proof``: proofs checked by independent peers
(PyJWT, joserfc), the RFC examples, every refusal of check_proof, the nonce helpers."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from certauth import _jose
from certauth.cli.main import main
from certauth.dpop import (
    DPoPKey,
    JtiCache,
    access_token_hash,
    check_proof,
    jwk_thumbprint,
    make_proof,
    next_nonce,
    nonce_from_response,
    normalize_htu,
)
from certauth.errors import InvalidArgumentError, TokenValidationError, UnsupportedKeyError

NOW = 1_700_000_000
URL = "https://api.example/items"
TOKEN = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"

#: RFC 7638 section 3.1's example RSA key and its thumbprint.
RFC7638_JWK = {
    "kty": "RSA",
    "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc"
    "_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0"
    "_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI"
    "4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
    "e": "AQAB",
    "alg": "RS256",
    "kid": "2011-04-29",
}


@pytest.fixture(scope="module")
def key() -> DPoPKey:
    return DPoPKey.generate()


@pytest.fixture(scope="module")
def rsa_key() -> DPoPKey:
    return DPoPKey.from_private_key(rsa.generate_private_key(65537, 2048))


def _parts(proof: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, claims = (json.loads(_jose.b64url_decode(p)) for p in proof.split(".")[:2])
    return header, claims


def forge(
    signer: DPoPKey, header: dict[str, Any], claims: dict[str, Any], alg: str | None = None
) -> str:
    """A proof with any header and claims, signed by ``signer``."""
    data = f"{_jose.json_segment(header)}.{_jose.json_segment(claims)}"
    signature = _jose.sign(signer.private_key, alg or signer.alg, data.encode())
    return f"{data}.{_jose.b64url_encode(signature)}"


def good(key: DPoPKey, **changes: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    header = {"typ": "dpop+jwt", "alg": key.alg, "jwk": key.public_jwk}
    claims = {"jti": "j-1", "htm": "GET", "htu": URL, "iat": NOW, "ath": access_token_hash(TOKEN)}
    for name, value in changes.items():
        target = header if name in {"typ", "alg", "jwk", "crit"} else claims
        if value is None:
            target.pop(name, None)
        else:
            target[name] = value
    return header, claims


# -- keys -------------------------------------------------------------------------------------


def test_rfc7638_example_thumbprint() -> None:
    assert jwk_thumbprint(RFC7638_JWK) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_rfc9449_example_ath() -> None:
    # RFC 9449 section 7.1: the access token and the ath of the proof that goes with it.
    assert access_token_hash(TOKEN) == "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"


def test_a_generated_key_is_p256_with_a_public_jwk(key: DPoPKey) -> None:
    assert key.alg == "ES256"
    assert set(key.public_jwk) == {"kty", "crv", "x", "y"}
    assert key.public_jwk["crv"] == "P-256"
    assert key.thumbprint == jwk_thumbprint(key.public_jwk)
    # joserfc computes the same RFC 7638 thumbprint.
    joserfc_jwk = pytest.importorskip("joserfc.jwk")
    assert joserfc_jwk.ECKey.import_key(key.public_jwk).thumbprint() == key.thumbprint
    assert "jkt=" in repr(key)
    assert "d=" not in repr(key)


def test_keys_from_private_keys(rsa_key: DPoPKey) -> None:
    assert rsa_key.alg == "PS256"
    assert set(rsa_key.public_jwk) == {"kty", "n", "e"}
    assert DPoPKey.from_private_key(ec.generate_private_key(ec.SECP384R1())).alg == "ES384"
    with pytest.raises(UnsupportedKeyError, match="Ed25519"):
        DPoPKey.from_private_key(ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(UnsupportedKeyError, match="secp256k1"):
        DPoPKey.from_private_key(ec.generate_private_key(ec.SECP256K1()))
    with pytest.raises(UnsupportedKeyError, match="2048"):
        DPoPKey.from_private_key(rsa.generate_private_key(65537, 1024))  # noqa: S505 - refused on purpose


# -- proofs, checked by independent peers -------------------------------------------------------


@pytest.mark.parametrize("which", ["ec", "rsa"])
def test_a_proof_verifies_with_pyjwt(which: str, key: DPoPKey, rsa_key: DPoPKey) -> None:
    signer = key if which == "ec" else rsa_key
    proof = make_proof(signer, htm="GET", htu=URL + "?q=1#f", access_token=TOKEN, now=NOW)
    header = jwt.get_unverified_header(proof)
    assert header["typ"] == "dpop+jwt"
    assert header["alg"] == signer.alg
    assert header["jwk"] == signer.public_jwk
    claims = jwt.decode(
        proof, jwt.PyJWK(header["jwk"]).key, algorithms=[signer.alg], options={"verify_iat": False}
    )
    assert claims["htm"] == "GET"
    assert claims["htu"] == URL
    assert claims["iat"] == NOW
    assert claims["ath"] == access_token_hash(TOKEN)
    assert len(_jose.b64url_decode(claims["jti"])) == 16
    assert "nonce" not in claims


def test_a_proof_verifies_with_joserfc(key: DPoPKey) -> None:
    joserfc_jwt = pytest.importorskip("joserfc.jwt")
    joserfc_jwk = pytest.importorskip("joserfc.jwk")
    proof = make_proof(key, htm="POST", htu=URL, nonce="n-1", now=NOW)
    decoded = joserfc_jwt.decode(proof, joserfc_jwk.ECKey.import_key(key.public_jwk))
    assert decoded.header["typ"] == "dpop+jwt"
    assert decoded.claims["nonce"] == "n-1"
    assert "ath" not in decoded.claims


def test_proofs_are_unique_and_round_trip(key: DPoPKey) -> None:
    first = make_proof(key, htm="GET", htu=URL, now=NOW)
    second = make_proof(key, htm="GET", htu=URL, now=NOW)
    assert _parts(first)[1]["jti"] != _parts(second)[1]["jti"]
    parsed = check_proof(first, htm="GET", htu=URL, now=NOW)
    assert parsed.jkt == key.thumbprint
    assert parsed.htu == URL
    assert parsed.alg == "ES256"


@pytest.mark.parametrize(
    ("url", "htu"),
    [
        ("HTTPS://API.Example:443/Items?x=1#top", "https://api.example/Items"),
        ("http://127.0.0.1:80", "http://127.0.0.1/"),
        ("https://api.example:8443/a/b", "https://api.example:8443/a/b"),
        ("https://[::1]:443/x", "https://[::1]/x"),
    ],
)
def test_htu_normalisation(url: str, htu: str) -> None:
    assert normalize_htu(url) == htu


def test_a_long_query_or_fragment_is_no_part_of_the_htu_nor_of_its_limit(key: DPoPKey) -> None:
    # An API call with a long query string (a search, a list of ids) signs a proof like any
    # other: htu leaves the query and fragment out (RFC 9449 section 4.2), so does the limit.
    long = URL + "?ids=" + ",".join(str(n) for n in range(3000)) + "#" + "f" * 9000
    assert normalize_htu(long) == URL
    proof = make_proof(key, htm="GET", htu=long, access_token=TOKEN, now=NOW)
    checked = check_proof(proof, htm="GET", htu=long, access_token=TOKEN, now=NOW)
    assert checked.htu == URL


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"htm": "G T"}, "not an HTTP method"),
        ({"htm": ""}, "not an HTTP method"),
        ({"htu": "ftp://a/x"}, "not an absolute http(s) URL"),
        ({"htu": "https://"}, "not an absolute http(s) URL"),
        ({"htu": "https://u:p@a/x"}, "user info"),
        ({"htu": "https://a:99999/x"}, "not a valid URL"),
        ({"htu": f"https://{'a' * 64}.example/"}, "label"),
        ({"htu": "https://a/" + "x" * 9000}, "characters long"),
        ({"nonce": 'a"b'}, "NQCHAR"),
        ({"access_token": "caf\u00e9"}, "not ASCII"),
    ],
)
def test_make_proof_refuses_what_cannot_be_in_a_proof(
    key: DPoPKey, kwargs: dict[str, Any], fragment: str
) -> None:
    arguments: dict[str, Any] = {"htm": "GET", "htu": URL, **kwargs}
    with pytest.raises(InvalidArgumentError) as info:
        make_proof(key, **arguments)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


# -- check_proof: every refusal ----------------------------------------------------------------


def test_the_good_proof_passes(key: DPoPKey) -> None:
    # The baseline every refusal below changes one thing of.
    proof = forge(key, *good(key))
    parsed = check_proof(proof, htm="GET", htu=URL, access_token=TOKEN, now=NOW)
    assert parsed.jti == "j-1"
    assert parsed.jkt == key.thumbprint


def _other_key() -> DPoPKey:
    return DPoPKey.generate()


REFUSALS: list[tuple[str, str, Any]] = [
    # (id, the check expected, a function key -> (proof, check_proof keyword changes))
    ("two-headers", "dpop_header", lambda k: ([forge(k, *good(k))] * 2, {})),
    ("no-headers", "dpop_header", lambda k: ([], {})),
    ("two-parts", "dpop_malformed", lambda k: ("a.b", {})),
    ("not-json", "dpop_malformed", lambda k: ("e30.bm9wZQ.AA", {})),
    ("array-claims", "dpop_malformed", lambda k: ("e30.W10.AA", {})),
    ("bad-signature-b64", "dpop_malformed", lambda k: (forge(k, *good(k))[:-1] + "=", {})),
    ("huge", "dpop_malformed", lambda k: ("a" * 20_000, {})),
    ("crit", "dpop_malformed", lambda k: (forge(k, *good(k, crit=["x"])), {})),
    ("typ-jwt", "dpop_typ", lambda k: (forge(k, *good(k, typ="JWT")), {})),
    ("no-typ", "dpop_typ", lambda k: (forge(k, *good(k, typ=None)), {})),
    (
        "alg-none",
        "dpop_alg",
        lambda k: (forge(k, *good(k, alg="none")).rsplit(".", 1)[0] + ".", {}),
    ),
    ("alg-hs256", "dpop_alg", lambda k: (forge(k, *good(k, alg="HS256")), {})),
    ("no-jwk", "dpop_jwk", lambda k: (forge(k, *good(k, jwk=None)), {})),
    (
        "private-jwk",
        "dpop_jwk",
        lambda k: (forge(k, *good(k, jwk={**k.public_jwk, "d": "AAAA"})), {}),
    ),
    (
        "jwk-wrong-type",
        "dpop_jwk",
        lambda k: (forge(k, *good(k, jwk={"kty": "oct", "k": "AAAA"})), {}),
    ),
    (
        "jwk-alg-mismatch",
        "dpop_jwk",
        lambda k: (forge(k, *good(k, alg="PS256")), {}),
    ),
    (
        "other-signer",
        "dpop_signature",
        lambda k: (forge(_other_key(), *good(k)), {}),
    ),
    (
        "tampered",
        "dpop_signature",
        lambda k: (_swap_claims(forge(k, *good(k)), good(k, htm="POST")[1]), {"htm": "POST"}),
    ),
    ("no-jti", "dpop_claims", lambda k: (forge(k, *good(k, jti=None)), {})),
    ("iat-text", "dpop_claims", lambda k: (forge(k, *good(k, iat="now")), {})),
    ("iat-bool", "dpop_claims", lambda k: (forge(k, *good(k, iat=True)), {})),
    ("no-htu", "dpop_claims", lambda k: (forge(k, *good(k, htu=None)), {})),
    ("htm", "dpop_htm", lambda k: (forge(k, *good(k)), {"htm": "POST"})),
    ("htm-case", "dpop_htm", lambda k: (forge(k, *good(k, htm="get")), {})),
    ("htu-path", "dpop_htu", lambda k: (forge(k, *good(k)), {"htu": URL + "/other"})),
    ("htu-host", "dpop_htu", lambda k: (forge(k, *good(k, htu="https://evil.example/items")), {})),
    ("htu-garbage", "dpop_htu", lambda k: (forge(k, *good(k, htu="not a url")), {})),
    ("nonce-missing", "dpop_nonce", lambda k: (forge(k, *good(k)), {"nonce": "n-2"})),
    ("nonce-wrong", "dpop_nonce", lambda k: (forge(k, *good(k, nonce="n-1")), {"nonce": "n-2"})),
    ("iat-old", "dpop_iat", lambda k: (forge(k, *good(k, iat=NOW - 361)), {})),
    ("iat-future", "dpop_iat", lambda k: (forge(k, *good(k, iat=NOW + 61)), {})),
    ("ath-other", "dpop_ath", lambda k: (forge(k, *good(k)), {"access_token": "other"})),
    ("ath-missing", "dpop_ath", lambda k: (forge(k, *good(k, ath=None)), {})),
]


def _swap_claims(proof: str, claims: dict[str, Any]) -> str:
    header, _, signature = proof.split(".")
    return f"{header}.{_jose.json_segment(claims)}.{signature}"


@pytest.mark.parametrize(("check", "make"), [pytest.param(c, m, id=i) for i, c, m in REFUSALS])
def test_every_refusal_names_its_check(key: DPoPKey, check: str, make: Any) -> None:
    proof, changes = make(key)
    arguments: dict[str, Any] = {
        "htm": "GET",
        "htu": URL,
        "access_token": TOKEN,
        "now": NOW,
        **changes,
    }
    with pytest.raises(TokenValidationError) as info:
        check_proof(proof, **arguments)
    assert info.value.check == check, info.value.message
    assert info.value.exit_code == 6
    assert "\n" not in info.value.message
    assert len(info.value.message) < 400


def test_the_window_edges_pass(key: DPoPKey) -> None:
    for iat in (NOW - 360, NOW + 60):
        check_proof(forge(key, *good(key, iat=iat)), htm="GET", htu=URL, now=NOW)
    check_proof(forge(key, *good(key, nonce="n-1")), htm="GET", htu=URL, now=NOW, nonce="n-1")
    check_proof(forge(key, *good(key, typ="application/DPoP+JWT")), htm="GET", htu=URL, now=NOW)
    # The URL is compared normalised: case of scheme and host, default port, query.
    check_proof(forge(key, *good(key)), htm="GET", htu="HTTPS://API.example:443/items?x", now=NOW)


def test_a_replayed_jti_is_refused(key: DPoPKey) -> None:
    cache = JtiCache()
    proof = forge(key, *good(key))
    check_proof(proof, htm="GET", htu=URL, now=NOW, seen_jti=cache)
    with pytest.raises(TokenValidationError) as info:
        check_proof(proof, htm="GET", htu=URL, now=NOW + 1, seen_jti=cache)
    assert info.value.check == "dpop_replay"
    # A refused proof never takes a place in the cache.
    with pytest.raises(TokenValidationError):
        check_proof(forge(key, *good(key, jti="j-2")), htm="POST", htu=URL, now=NOW, seen_jti=cache)
    check_proof(forge(key, *good(key, jti="j-2")), htm="GET", htu=URL, now=NOW, seen_jti=cache)


def test_a_proof_is_never_accepted_twice_even_at_the_last_moment_of_its_window(
    key: DPoPKey,
) -> None:
    # iat + max_age + leeway is the last moment check_proof accepts the proof; its jti must
    # still be remembered then.
    cache = JtiCache()
    proof = forge(key, *good(key))
    last = NOW + 300 + 60
    check_proof(proof, htm="GET", htu=URL, now=NOW, seen_jti=cache)
    with pytest.raises(TokenValidationError) as info:
        check_proof(proof, htm="GET", htu=URL, now=last, seen_jti=cache)
    assert info.value.check == "dpop_replay"
    fresh = JtiCache()
    check_proof(proof, htm="GET", htu=URL, now=last, seen_jti=fresh)
    with pytest.raises(TokenValidationError) as info:
        check_proof(proof, htm="GET", htu=URL, now=last, seen_jti=fresh)
    assert info.value.check == "dpop_replay"


def test_the_jti_cache_is_bounded_and_expires() -> None:
    cache = JtiCache(max_entries=3)
    assert cache.add("a", expires_at=10, now=0)
    assert not cache.add("a", expires_at=10, now=5)
    assert not cache.add("a", expires_at=20, now=10)  # its last moment: still a replay
    assert cache.add("a", expires_at=20, now=10.5)  # expired: a new proof may reuse it
    for name in "bcd":
        assert cache.add(name, expires_at=100, now=11)
    assert len(cache) == 3
    with pytest.raises(InvalidArgumentError):
        JtiCache(max_entries=0)


def test_the_jti_cache_is_thread_safe() -> None:
    cache = JtiCache()
    wins: list[bool] = []

    def add() -> None:
        for index in range(500):
            wins.append(cache.add(f"j{index}", expires_at=100, now=0))

    threads = [threading.Thread(target=add) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wins.count(True) == 500


# -- server nonces -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "headers", "body", "nonce"),
    [
        (
            400,
            {"DPoP-Nonce": "eyJ7S_zG.eyJH0-Z.HX4w-7v"},
            {"error": "use_dpop_nonce"},
            "eyJ7S_zG.eyJH0-Z.HX4w-7v",
        ),
        (400, {"DPoP-Nonce": "n"}, {"error": "invalid_grant"}, None),
        (400, {}, {"error": "use_dpop_nonce"}, None),
        (
            401,
            [
                ("WWW-Authenticate", 'DPoP error="use_dpop_nonce", error_description="x"'),
                ("dpop-nonce", "n-2"),
            ],
            None,
            "n-2",
        ),
        (401, {"WWW-Authenticate": 'Bearer error="use_dpop_nonce"', "DPoP-Nonce": "n"}, None, None),
        (401, {"WWW-Authenticate": 'DPoP error="invalid_token"', "DPoP-Nonce": "n"}, None, None),
        (401, {"WWW-Authenticate": 'DPoP error="use_dpop_nonce', "DPoP-Nonce": "n"}, None, None),
        (401, {"WWW-Authenticate": 'DPoP error="use_dpop_nonce"', "DPoP-Nonce": 'a"b'}, None, None),
        (200, {"DPoP-Nonce": "n"}, None, None),
    ],
)
def test_nonce_from_response(status: int, headers: Any, body: Any, nonce: str | None) -> None:
    assert nonce_from_response(status, headers, body) == nonce


def test_next_nonce() -> None:
    assert next_nonce({"dpop-nonce": "n-3"}) == "n-3"
    assert next_nonce([("DPoP-Nonce", "a"), ("DPoP-Nonce", "b")]) is None
    assert next_nonce({}) is None


# -- the CLI -----------------------------------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_command_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "dpop.key"
    monkeypatch.setenv("ACCESS_TOKEN", TOKEN)
    base = ["dpop-proof", "--key", str(key_file), "--htm", "GET", "--htu", URL + "?q=1"]
    code, out, err = run(capsys, *base, "--access-token-env", "ACCESS_TOKEN", "--json")
    assert code == 0, err
    assert err.startswith("certauth: created a new DPoP key in ")
    assert err.count("\n") == 1
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    shown = json.loads(out)
    assert set(shown) == {"proof", "header", "claims", "jkt"}
    assert (shown["header"], shown["claims"]) == _parts(shown["proof"])
    parsed = check_proof(shown["proof"], htm="GET", htu=URL, access_token=TOKEN)
    assert parsed.jkt == shown["jkt"]
    assert shown["claims"]["htu"] == URL
    assert TOKEN not in out
    pem = key_file.read_bytes()

    # Again, plain output: the same key (same jkt, file untouched), a new jti, no notice.
    token_file = tmp_path / "token.txt"
    token_file.write_text(TOKEN + "\n")
    code, out, err = run(capsys, *base, "--access-token-file", str(token_file), "--nonce", "n-1")
    assert (code, err) == (0, "")
    [proof] = out.splitlines()
    parsed2 = check_proof(proof, htm="GET", htu=URL, access_token=TOKEN, nonce="n-1")
    assert parsed2.jkt == parsed.jkt
    assert parsed2.jti != parsed.jti
    assert key_file.read_bytes() == pem

    # A key written elsewhere (RSA) is used as it is.
    rsa_file = tmp_path / "rsa.key"
    rsa_file.write_bytes(
        DPoPKey.from_private_key(rsa.generate_private_key(65537, 2048)).private_key_pem()
    )
    code, out, err = run(
        capsys, "dpop-proof", "--key", str(rsa_file), "--htm", "POST", "--htu", URL
    )
    assert (code, err) == (0, "")
    assert jwt.get_unverified_header(out.strip())["alg"] == "PS256"


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["--htm", "G T"], 2, "--htm"),
        (["--htu", "ftp://a/x"], 2, "--htu"),
        (["--htu", "https://u:p@a/x"], 2, "user info"),
        (["--nonce", 'a"b'], 2, "--nonce"),
        (["--access-token-env", "CERTAUTH_UNSET_VAR"], 3, "--access-token-env"),
        (["--access-token-env", "BAD_TOKEN"], 3, "not printable ASCII"),
        (["--access-token-file", "{tmp}/missing"], 3, "--access-token-file"),
        (["--access-token-env", "X", "--access-token-file", "{tmp}/t"], 2, "not both"),
        (["--key", "{tmp}"], 3, "--key"),
        (["--key", "{tmp}/garbage.pem"], 3, "not a PEM private key"),
        (["--key", "{tmp}/encrypted.pem"], 3, "encrypted"),
        (["--key", "{tmp}/ed25519.pem"], 3, "RSA or EC"),
        (["--key", "{tmp}/no/such/dir/k.pem"], 3, "cannot create the DPoP key"),
    ],
)
def test_bad_input_is_one_line(
    args: list[str],
    code: int,
    fragment: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CERTAUTH_UNSET_VAR", raising=False)
    monkeypatch.setenv("BAD_TOKEN", "to ken")
    (tmp_path / "garbage.pem").write_text("not a key\n")
    ed = ed25519.Ed25519PrivateKey.generate()
    (tmp_path / "ed25519.pem").write_bytes(
        ed.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (tmp_path / "encrypted.pem").write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
    )
    defaults = {"--key": str(tmp_path / "k.pem"), "--htm": "GET", "--htu": URL}
    argv = ["dpop-proof", *(a.replace("{tmp}", str(tmp_path)) for a in args)]
    for flag, value in defaults.items():
        if flag not in args:
            argv += [flag, value]
    code_, out, err = run(capsys, *argv)
    assert code_ == code, err
    assert out == ""
    lines = [line for line in err.splitlines() if line.strip()]
    [line] = lines
    assert line.startswith("certauth: error: "), err
    assert fragment in line
    # A refused key file is never replaced.
    assert (tmp_path / "garbage.pem").read_text() == "not a key\n"


def test_the_key_option_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "dpop-proof", "--htm", "GET", "--htu", URL)
    assert code == 2
    assert "--key" in err
