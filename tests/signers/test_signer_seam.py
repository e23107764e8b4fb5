"""The signer seam (issue #17): a key that signs but is never handed to certauth.

Every credential and ``build_client_assertion`` take ``signer=``; the key file is one signer
among others. The signers here hold their key in memory but show certauth only the
:class:`certauth.Signer` protocol, as an HSM or a vault does. Tokens come from the strict
emulator (real HTTP on 127.0.0.1), so every check Entra ID makes applies.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from _oidc_server import OidcServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from certauth import (
    AsyncCertificateCredential,
    AsyncSigner,
    CertificateCredential,
    FileTokenCache,
    KeyFileSigner,
    RetryPolicy,
    Signer,
    _jose,
    build_client_assertion,
)
from certauth.assertion import PROOF_MESSAGE
from certauth.certificates import Certificate
from certauth.emulator import Emulator
from certauth.errors import (
    CertificateError,
    InvalidArgumentError,
    KeyMismatchError,
    SignerError,
    UnsupportedKeyError,
)
from certauth.protocol import CLIENT_ASSERTION_TYPE

CLIENT = "5e0b3b1c-0d3c-4c3f-9d57-1f6a2b8c9d01"
SCOPE = "api://billing/.default"
FAST_RETRY = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02)


class MemorySigner:
    """A key held in memory behind the :class:`Signer` protocol only (its certificate carries
    no private key). Records what it signed, with which algorithm, on which thread."""

    def __init__(
        self,
        certificate: Certificate,
        *,
        key: _jose.PrivateKey | None = None,
        description: str = "memory:test-key",
    ) -> None:
        assert certificate.private_key is not None
        self._key = key or certificate.private_key
        self._certificate = Certificate(certificate.x509, chain=certificate.chain)
        self._description = description
        self.signed: list[tuple[bytes, str]] = []
        self.threads: list[int] = []

    @property
    def certificate(self) -> Certificate:
        return self._certificate

    @property
    def description(self) -> str:
        return self._description

    def sign(self, data: bytes, alg: str) -> bytes:
        self.signed.append((data, alg))
        self.threads.append(threading.get_ident())
        return _jose.sign(self._key, alg, data)

    @property
    def proofs(self) -> int:
        """Test signatures made (the key-belongs-to-the-certificate check)."""
        return sum(1 for data, _ in self.signed if data == PROOF_MESSAGE)

    @property
    def assertions(self) -> list[bytes]:
        """Signing inputs of assertions."""
        return [data for data, _ in self.signed if data != PROOF_MESSAGE]


class AsyncMemorySigner(MemorySigner):
    """A remote-style signer: its ``sign_async`` is what an async credential must use."""

    def __init__(self, certificate: Certificate) -> None:
        super().__init__(certificate, description="memory:async-key")
        self.sync_calls = 0

    def sign(self, data: bytes, alg: str) -> bytes:
        self.sync_calls += 1
        return super().sign(data, alg)

    async def sign_async(self, data: bytes, alg: str) -> bytes:
        await asyncio.sleep(0)
        return super().sign(data, alg)


class FailingSigner(MemorySigner):
    """Fails the next ``failures`` assertion signatures (or proofs) with a SignerError."""

    def __init__(
        self,
        certificate: Certificate,
        *,
        failures: int,
        transient: bool,
        fail_proof: bool = False,
    ) -> None:
        super().__init__(certificate, description="memory:flaky-key")
        self.failures = failures
        self.transient = transient
        self.fail_proof = fail_proof
        self.attempts = 0

    def sign(self, data: bytes, alg: str) -> bytes:
        if (data == PROOF_MESSAGE) == self.fail_proof:
            self.attempts += 1
            if self.failures > 0:
                self.failures -= 1
                raise SignerError(
                    f"{self.description}: the vault answered 429; try again later",
                    backend="memory",
                    transient=self.transient,
                )
        return super().sign(data, alg)


class MisshapenSigner(MemorySigner):
    """Proves its key honestly, then returns signatures of the wrong size or type."""

    def __init__(self, certificate: Certificate, wrong: str) -> None:
        super().__init__(certificate, description="memory:misshapen")
        self.wrong = wrong

    def sign(self, data: bytes, alg: str) -> bytes:
        signature = super().sign(data, alg)
        if data == PROOF_MESSAGE:
            return signature
        if self.wrong == "short":
            return signature[:-1]
        if self.wrong == "text":
            return signature.hex()  # type: ignore[return-value]
        # ES256 as DER (what cryptography's ECDSA gives before conversion), a common mistake.
        from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

        size = len(signature) // 2
        return encode_dss_signature(
            int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
        )


@pytest.fixture
def tenant(rsa_cert: Certificate, ec_cert: Certificate) -> Iterator[Emulator]:
    with Emulator(strict=True) as emulator:
        emulator.register(CLIENT, Certificate(rsa_cert.x509))  # only the public part uploaded
        yield emulator


@pytest.fixture
def signer(rsa_cert: Certificate, secret_registry: object) -> MemorySigner:
    return MemorySigner(rsa_cert)


def _credential(tenant: Emulator, signer: object, **kwargs: object) -> CertificateCredential:
    return CertificateCredential(
        tenant.tenant_id,
        CLIENT,
        signer=signer,  # type: ignore[arg-type]
        authority=tenant.authority_host,
        **kwargs,  # type: ignore[arg-type]
    )


def _async_credential(
    tenant: Emulator, signer: object, **kwargs: object
) -> AsyncCertificateCredential:
    return AsyncCertificateCredential(
        tenant.tenant_id,
        CLIENT,
        signer=signer,  # type: ignore[arg-type]
        authority=tenant.authority_host,
        **kwargs,  # type: ignore[arg-type]
    )


def _header(signing_input: bytes) -> dict[str, object]:
    return jwt.get_unverified_header(signing_input.decode() + ".c2ln")


def _exchange(tenant: Emulator, assertion: str) -> httpx.Response:
    return httpx.post(
        tenant.token_endpoint,
        data={
            "grant_type": "client_credentials",
            "client_id": CLIENT,
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": assertion,
            "scope": SCOPE,
        },
    )


# -- the protocol ----------------------------------------------------------------------------------


def test_the_signers_are_public_and_satisfy_the_protocol(
    rsa_cert: Certificate, signer: MemorySigner
) -> None:
    assert isinstance(signer, Signer)
    assert not isinstance(signer, AsyncSigner)
    assert isinstance(AsyncMemorySigner(rsa_cert), AsyncSigner)
    key_file = KeyFileSigner(rsa_cert)
    assert isinstance(key_file, Signer)
    assert key_file.certificate is rsa_cert
    with pytest.raises(CertificateError, match="no private key"):
        KeyFileSigner(Certificate(rsa_cert.x509))


# -- tokens from the strict emulator -------------------------------------------------------------


def test_a_sync_credential_gets_tokens_through_a_signer(
    tenant: Emulator, rsa_cert: Certificate, signer: MemorySigner
) -> None:
    with _credential(tenant, signer) as credential:
        # The key's proof: one test signature, at set-up, before any request.
        assert signer.proofs == 1
        assert tenant.request_count == 0
        token = credential.get_token(SCOPE)
        assert credential.get_token(SCOPE) == token  # cached: no signature
        assert len(signer.assertions) == 1
        credential.request_token(SCOPE, force=True)
        credential.request_token(SCOPE, force=True)
    # One signature per token request; the proof is not repeated per token.
    assert len(signer.assertions) == tenant.request_count == 3
    assert signer.proofs == 1
    assert tenant.last_thumbprint == rsa_cert.x5t_s256
    claims = jwt.decode(token.token, options={"verify_signature": False})
    assert claims["appid"] == CLIENT
    # Entra's default: PS256 paired with the SHA-256 thumbprint.
    assert {alg for _, alg in signer.signed} == {"PS256"}
    header = _header(signer.assertions[0])
    assert header == {"alg": "PS256", "typ": "JWT", "x5t#S256": rsa_cert.x5t_s256}


def test_rs256_is_paired_with_the_sha1_thumbprint(
    tenant: Emulator, rsa_cert: Certificate, signer: MemorySigner
) -> None:
    with _credential(tenant, signer, alg="RS256") as credential:
        credential.get_token(SCOPE)
    header = _header(signer.assertions[0])
    assert header == {"alg": "RS256", "typ": "JWT", "x5t": rsa_cert.x5t}
    assert [alg for _, alg in signer.signed] == ["RS256", "RS256"]  # proof, assertion


def test_send_certificate_chain_comes_from_the_signers_certificate(
    tenant: Emulator, rsa_cert: Certificate, signer: MemorySigner
) -> None:
    with _credential(tenant, signer, send_certificate_chain=True) as credential:
        credential.get_token(SCOPE)
    assert len(_header(signer.assertions[0])["x5c"]) == 1  # type: ignore[arg-type]


def test_build_client_assertion_with_a_signer_is_accepted_by_the_emulator(
    tenant: Emulator, rsa_cert: Certificate, signer: MemorySigner
) -> None:
    assertion = build_client_assertion(
        signer=signer, client_id=CLIENT, audience=tenant.token_endpoint
    )
    assert signer.proofs == 1  # proved before its first assertion
    assert jwt.get_unverified_header(assertion)["x5t#S256"] == rsa_cert.x5t_s256
    answer = _exchange(tenant, assertion)
    assert answer.status_code == 200, answer.text
    assert answer.json()["token_type"] == "Bearer"


def test_an_async_credential_awaits_sign_async(tenant: Emulator, rsa_cert: Certificate) -> None:
    signer = AsyncMemorySigner(rsa_cert)

    async def main() -> None:
        async with _async_credential(tenant, signer) as credential:
            # Nothing signs in the constructor: the proof is the first request's first step.
            assert signer.signed == []
            await credential.get_token(SCOPE)
            await credential.request_token(SCOPE, force=True)

    asyncio.run(main())
    assert signer.sync_calls == 0
    assert signer.proofs == 1
    assert len(signer.assertions) == tenant.request_count == 2


def test_an_async_credential_runs_a_sync_signer_off_the_event_loop(
    tenant: Emulator, rsa_cert: Certificate
) -> None:
    class SlowSigner(MemorySigner):
        def sign(self, data: bytes, alg: str) -> bytes:
            time.sleep(0.05)  # an HSM round trip
            return super().sign(data, alg)

    signer = SlowSigner(rsa_cert)
    ticks = 0

    async def main() -> int:
        nonlocal ticks
        loop_thread = threading.get_ident()
        running = True

        async def ticker() -> None:
            nonlocal ticks
            while running:
                ticks += 1
                await asyncio.sleep(0.005)

        tick_task = asyncio.create_task(ticker())
        async with _async_credential(tenant, signer) as credential:
            await credential.get_token(SCOPE)
        running = False
        await tick_task
        return loop_thread

    loop_thread = asyncio.run(main())
    assert len(signer.threads) == 2  # the proof and the assertion
    assert loop_thread not in signer.threads
    assert ticks >= 10  # the loop kept running while the signer slept (2 x 50 ms)


# -- every check a key file gets -----------------------------------------------------------------


def test_a_signer_whose_key_is_not_the_certificates_is_refused_before_any_request(
    tenant: Emulator, rsa_cert: Certificate, other_rsa_cert: Certificate
) -> None:
    assert other_rsa_cert.private_key is not None
    wrong = MemorySigner(rsa_cert, key=other_rsa_cert.private_key, description="pkcs11:token=a")
    with pytest.raises(KeyMismatchError) as caught:
        _credential(tenant, wrong)
    message = str(caught.value)
    assert message.startswith("pkcs11:token=a: the signer's key does not belong")
    assert rsa_cert.thumbprint_sha1 in message
    assert "signer=" in message
    assert "\n" not in message
    with pytest.raises(KeyMismatchError, match="pkcs11:token=a"):
        build_client_assertion(signer=wrong, client_id=CLIENT, audience=tenant.token_endpoint)

    async def main() -> None:
        async with _async_credential(tenant, wrong) as credential:
            with pytest.raises(KeyMismatchError, match="pkcs11:token=a"):
                await credential.get_token(SCOPE)

    asyncio.run(main())
    assert tenant.request_count == 0


def _weak_rsa_certificate() -> Certificate:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - on purpose
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "weak")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return Certificate(cert, key)


def test_rsa_1024_and_ec_signers_are_refused_for_entra(
    tenant: Emulator, ec_cert: Certificate
) -> None:
    weak = MemorySigner(_weak_rsa_certificate(), description="memory:weak")
    with pytest.raises(UnsupportedKeyError, match=r"RSA 1024 key.*AADSTS50032"):
        _credential(tenant, weak)
    with pytest.raises(UnsupportedKeyError, match="AADSTS50032"):
        build_client_assertion(signer=weak, client_id=CLIENT, audience=tenant.token_endpoint)
    ec = MemorySigner(ec_cert, description="memory:ec")
    with pytest.raises(UnsupportedKeyError, match=r"memory:ec: EC P-256 key.*AADSTS5002738"):
        _credential(tenant, ec)
    assert weak.signed == ec.signed == []
    assert tenant.request_count == 0


def test_an_ec_signer_signs_es256_for_a_generic_server(ec_cert: Certificate) -> None:
    signer = MemorySigner(ec_cert, description="memory:ec")
    with OidcServer() as server:
        credential = CertificateCredential(client_id=CLIENT, signer=signer, issuer=server.issuer)
        with credential:
            # Discovery first: the proof is the first step of the first request's flow.
            assert signer.signed == []
            credential.get_token("api://x/.default")
        (form,) = server.token_requests
    assert [alg for _, alg in signer.signed] == ["ES256", "ES256"]
    assertion = form["client_assertion"]
    assert jwt.get_unverified_header(assertion)["x5t#S256"] == ec_cert.x5t_s256
    jwt.decode(
        assertion,
        ec_cert.x509.public_key(),  # type: ignore[arg-type]
        algorithms=["ES256"],
        audience=f"{server.issuer}/token",
    )


def test_the_certificates_validity_is_checked_for_a_signer(signer: MemorySigner) -> None:
    later = time.time() + 400 * 86400
    with pytest.raises(CertificateError, match="expired"):
        build_client_assertion(signer=signer, client_id=CLIENT, audience="https://t", now=later)
    assert signer.assertions == []


@pytest.mark.parametrize("wrong", ["short", "text"])
def test_a_misshapen_rsa_signature_is_refused(
    tenant: Emulator, rsa_cert: Certificate, wrong: str
) -> None:
    signer = MisshapenSigner(rsa_cert, wrong)
    with _credential(tenant, signer) as credential, pytest.raises(SignerError) as caught:
        credential.get_token(SCOPE)
    message = str(caught.value)
    assert message.startswith("memory:misshapen: the signer returned")
    assert "PS256 needs 256 bytes" in message
    assert "\n" not in message
    assert tenant.request_count == 0


def test_a_der_ecdsa_signature_is_refused(ec_cert: Certificate) -> None:
    signer = MisshapenSigner(ec_cert, "der")
    with pytest.raises(SignerError, match=r"ES256 needs 64 bytes .*not DER"):
        build_client_assertion(signer=signer, client_id=CLIENT, audience="https://t")


# -- failures --------------------------------------------------------------------------------------


def test_a_transient_signer_error_is_retried_with_the_credentials_policy(
    tenant: Emulator, rsa_cert: Certificate, caplog: pytest.LogCaptureFixture
) -> None:
    signer = FailingSigner(rsa_cert, failures=2, transient=True)
    with (
        _credential(tenant, signer, retry=FAST_RETRY) as credential,
        caplog.at_level(logging.INFO, logger="certauth.retry"),
    ):
        credential.get_token(SCOPE)
    assert signer.attempts == 3
    assert tenant.request_count == 1
    retries = [r.getMessage() for r in caplog.records if r.name == "certauth.retry"]
    assert len(retries) == 2
    assert retries[0].startswith("certauth: signing with memory:flaky-key failed")
    assert "attempt 2 of 3" in retries[0]


def test_a_transient_signer_error_is_retried_by_the_async_credential(
    tenant: Emulator, rsa_cert: Certificate
) -> None:
    signer = FailingSigner(rsa_cert, failures=2, transient=True)

    async def main() -> None:
        async with _async_credential(tenant, signer, retry=FAST_RETRY) as credential:
            await credential.get_token(SCOPE)

    asyncio.run(main())
    assert signer.attempts == 3
    assert tenant.request_count == 1


def test_retries_run_out_with_the_signers_own_error(
    tenant: Emulator, rsa_cert: Certificate
) -> None:
    signer = FailingSigner(rsa_cert, failures=5, transient=True)
    with (
        _credential(tenant, signer, retry=FAST_RETRY) as credential,
        pytest.raises(SignerError, match="vault answered 429") as caught,
    ):
        credential.get_token(SCOPE)
    assert caught.value.backend == "memory"
    assert caught.value.transient
    assert signer.attempts == 3  # max_attempts
    assert tenant.request_count == 0


def test_a_lasting_signer_error_propagates_as_is_without_retries(
    tenant: Emulator, rsa_cert: Certificate
) -> None:
    signer = FailingSigner(rsa_cert, failures=1, transient=False)
    with _credential(tenant, signer, retry=FAST_RETRY) as credential:
        with pytest.raises(SignerError) as caught:
            credential.get_token(SCOPE)
        assert signer.attempts == 1
        assert caught.value.exit_code == 3  # the CLI's "bad local input"
        credential.get_token(SCOPE)  # the next call signs again
    assert tenant.request_count == 1


def test_a_transient_failure_of_the_proof_at_set_up_is_retried_by_the_first_request(
    tenant: Emulator, rsa_cert: Certificate
) -> None:
    signer = FailingSigner(rsa_cert, failures=2, transient=True, fail_proof=True)
    with _credential(tenant, signer, retry=FAST_RETRY) as credential:
        assert signer.proofs == 0  # the vault was throttling when the service started
        credential.get_token(SCOPE)
    assert signer.proofs == 1
    assert signer.attempts == 3


def test_a_lasting_failure_of_the_proof_fails_the_set_up(
    tenant: Emulator, rsa_cert: Certificate
) -> None:
    signer = FailingSigner(rsa_cert, failures=1, transient=False, fail_proof=True)
    with pytest.raises(SignerError, match="memory:flaky-key"):
        _credential(tenant, signer)


# -- arguments -------------------------------------------------------------------------------------


def test_exactly_one_source_of_the_key(
    tenant: Emulator, rsa_cert: Certificate, signer: MemorySigner, tmp_path: Path
) -> None:
    with pytest.raises(InvalidArgumentError, match=r"exactly one of .*signer="):
        _credential(tenant, signer, certificate=rsa_cert)
    with pytest.raises(InvalidArgumentError, match=r"exactly one of .*signer="):
        CertificateCredential(tenant.tenant_id, CLIENT, str(tmp_path / "x.pem"), signer=signer)
    with pytest.raises(InvalidArgumentError, match="key_path= and password= are for a key file"):
        _credential(tenant, signer, key_path=str(tmp_path / "x.key"))
    with pytest.raises(InvalidArgumentError, match=r"exactly one of .*signer="):
        build_client_assertion(rsa_cert, signer=signer, client_id=CLIENT, audience="https://t")
    with pytest.raises(InvalidArgumentError, match=r"exactly one of .*signer="):
        build_client_assertion(client_id=CLIENT, audience="https://t")


def test_something_that_is_not_a_signer_is_refused_naming_the_keyword(
    tenant: Emulator, rsa_cert: Certificate
) -> None:
    with pytest.raises(InvalidArgumentError, match="signer=object is not a signer"):
        _credential(tenant, object())

    class PemSigner(MemorySigner):
        @property
        def certificate(self) -> Certificate:
            return rsa_cert.pem  # type: ignore[return-value]

    with pytest.raises(InvalidArgumentError, match="not a certauth Certificate"):
        _credential(tenant, PemSigner(rsa_cert))


def test_a_signers_tokens_are_not_written_to_a_shared_cache(
    tenant: Emulator, signer: MemorySigner, tmp_path: Path
) -> None:
    cache = FileTokenCache(tmp_path / "cache")
    with _credential(tenant, signer, cache=cache) as credential:
        credential.get_token(SCOPE)
    # No key file to derive the entries' key from: the token stays in this process's memory.
    stored = [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.suffix != ".lock"]
    assert stored == []


def test_nothing_secret_in_reprs_or_messages(
    tenant: Emulator, rsa_cert: Certificate, other_rsa_cert: Certificate, secret_registry: object
) -> None:
    # The conftest's scan fails the test if a registered key or assertion shows up in a log
    # line or an error message; the reprs are checked here.
    from _secret_scan import SecretRegistry

    assert isinstance(secret_registry, SecretRegistry)
    assert other_rsa_cert.private_key is not None
    secret_registry.add_private_key(other_rsa_cert.private_key, "a signer's key")
    signer = MemorySigner(other_rsa_cert, description="memory:other")
    tenant.register(CLIENT, Certificate(other_rsa_cert.x509))
    with _credential(tenant, signer) as credential:
        token = credential.get_token(SCOPE)
        texts = [repr(credential), repr(credential._core.auth), repr(KeyFileSigner(rsa_cert))]
    wrong = MemorySigner(rsa_cert, key=other_rsa_cert.private_key, description="memory:wrong")
    with pytest.raises(KeyMismatchError) as caught:
        _credential(tenant, wrong)
    texts.append(str(caught.value))
    assert repr(KeyFileSigner(rsa_cert)) == "KeyFileSigner('private key in memory')"
    for text in texts:
        assert token.token not in text
        assert "PRIVATE KEY" not in text
        for part in signer.assertions[0].split(b"."):
            assert part.decode() not in text
