"""Size and time limits against a real hostile server on loopback (no mocks).

A token endpoint or JWKS host that answers 100 MB, drips one byte at a time, or sends JSON
nested past the recursion limit must cost a certauth client a bounded amount of memory and
time, and end in a typed error: ``TransportError`` (exit 5).
"""

from __future__ import annotations

import asyncio
import time
import tracemalloc

import pytest
from _hostile_server import answer, drip, huge_body, serving, wait_until

from certauth import AsyncCertificateCredential, CertificateCredential, RetryPolicy
from certauth.certificates import Certificate
from certauth.errors import TokenRequestError, TransportError
from certauth.protocol import MAX_RESPONSE_BYTES
from certauth.verify import verify_access_token

TENANT = "33333333-4444-5555-6666-777777777777"
CLIENT_ID = "44444444-5555-6666-7777-888888888888"
SCOPE = "api://limits/.default"
HUNDRED_MB = 100 * 1024 * 1024
#: Loopback socket buffers (send + receive, autotuned) can absorb several MB before the
#: server blocks; far below 100 MB either way.
READ_AT_MOST = 24 * 1024 * 1024
ONE_TRY = RetryPolicy(max_attempts=1)


def _endpoint(url: str) -> str:
    return f"{url}/{TENANT}/oauth2/v2.0/token"


def _credential(rsa_cert: Certificate, url: str, **kwargs: object) -> CertificateCredential:
    return CertificateCredential(
        TENANT,
        CLIENT_ID,
        certificate=rsa_cert,
        token_endpoint=_endpoint(url),
        retry=ONE_TRY,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_100_mb_token_response_is_refused_without_reading_it(
    rsa_cert: Certificate, chunked: bool
) -> None:
    with serving(huge_body(HUNDRED_MB, chunked=chunked)) as server:
        credential = _credential(rsa_cert, server.url)
        tracemalloc.start()
        started = time.perf_counter()
        try:
            with pytest.raises(TransportError, match="larger than"):
                credential.get_token(SCOPE)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            credential.close()
        elapsed = time.perf_counter() - started
        # The client hung up: the server's send loop ended long before 100 MB.
        assert wait_until(lambda: not server.connections or server.bytes_sent < READ_AT_MOST)
        assert server.bytes_sent < READ_AT_MOST, server.bytes_sent
    assert peak < 8 * MAX_RESPONSE_BYTES, f"peak {peak / 2**20:.1f} MiB"
    assert elapsed < 10


def test_a_100_mb_token_response_is_refused_by_the_async_credential(
    rsa_cert: Certificate,
) -> None:
    async def main(url: str) -> None:
        async with AsyncCertificateCredential(
            TENANT, CLIENT_ID, certificate=rsa_cert, token_endpoint=_endpoint(url), retry=ONE_TRY
        ) as credential:
            with pytest.raises(TransportError, match="larger than"):
                await credential.get_token(SCOPE)

    with serving(huge_body(HUNDRED_MB)) as server:
        asyncio.run(main(server.url))
        assert server.bytes_sent < READ_AT_MOST


def test_a_100_mb_jwks_is_refused(rsa_cert: Certificate) -> None:
    with serving(huge_body(HUNDRED_MB)) as server:
        with pytest.raises(TransportError, match="larger than 1024 KiB; refused"):
            verify_access_token(
                "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsifQ.eyJhdWQiOiJhIn0.c2ln",
                jwks_uri=f"{server.url}/keys",
                audience="a",
            )
        assert server.bytes_sent < READ_AT_MOST


@pytest.mark.slow
def test_a_dripping_token_endpoint_is_cut_off_at_the_timeout(rsa_cert: Certificate) -> None:
    # One byte every 0.2 s never trips a per-read timeout; the request's deadline must.
    with serving(drip(0.2)) as server:
        credential = _credential(rsa_cert, server.url, timeout=1.0)
        started = time.perf_counter()
        with pytest.raises(TransportError, match="timed out"):
            credential.get_token(SCOPE)
        credential.close()
        assert time.perf_counter() - started < 4


@pytest.mark.slow
def test_a_dripping_token_endpoint_is_cut_off_by_the_async_credential(
    rsa_cert: Certificate,
) -> None:
    async def main(url: str) -> None:
        async with AsyncCertificateCredential(
            TENANT,
            CLIENT_ID,
            certificate=rsa_cert,
            token_endpoint=_endpoint(url),
            retry=ONE_TRY,
            timeout=1.0,
        ) as credential:
            with pytest.raises(TransportError, match="timed out"):
                await credential.get_token(SCOPE)

    with serving(drip(0.2)) as server:
        started = time.perf_counter()
        asyncio.run(main(server.url))
        assert time.perf_counter() - started < 4


@pytest.mark.parametrize(
    ("status", "body", "error", "message"),
    [
        (503, b"[" * 100_000 + b"]" * 100_000, TransportError, "HTTP 503 after 1 attempts"),
        (200, b"[" * 100_000 + b"]" * 100_000, TransportError, "body that is not JSON"),
        (
            400,
            b'{"error":"invalid_client","error_codes":[1e400, NaN, "\\u00b2"]}',
            TokenRequestError,
            "refused the token request: invalid_client",
        ),
        (200, b'{"access_token":"t","expires_in":NaN}', TransportError, "no usable expires_in"),
        (
            200,
            b'{"access_token":"t","expires_in":"' + b"9" * 5000 + b'"}',
            TransportError,
            "no usable expires_in",
        ),
    ],
    ids=["nested-503", "nested-200", "odd-error-codes", "nan-expiry", "5000-digit-expiry"],
)
def test_odd_answers_are_typed_errors(
    rsa_cert: Certificate, status: int, body: bytes, error: type[Exception], message: str
) -> None:
    with serving(answer(status, body)) as server:
        credential = _credential(rsa_cert, server.url)
        with pytest.raises(error, match=message) as caught:
            credential.get_token(SCOPE)
        credential.close()
    assert caught.value.status_code == status  # type: ignore[attr-defined]
    if isinstance(caught.value, TokenRequestError):
        assert caught.value.error_codes == ()  # none of the three is an error code


def test_an_absurd_lifetime_is_still_a_usable_token(rsa_cert: Certificate) -> None:
    body = b'{"access_token":"t","token_type":"Bearer","expires_in":4611686018427387904}'
    with serving(answer(200, body)) as server:
        credential = _credential(rsa_cert, server.url)
        token = credential.get_token(SCOPE)
        assert token.token == "t"
        assert credential.get_token(SCOPE).token == "t"  # from memory, no arithmetic overflow
        credential.close()
