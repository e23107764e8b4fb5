"""Time, size and trust limits of certauth's HTTP clients, against real hostile servers on
loopback (no mocks).

- One deadline per attempt: a server that drips its status line, its headers or its body, or
  never answers the TLS ClientHello, costs an attempt ``timeout`` seconds, not minutes; sync
  and async, credential and verifier, http and https, library and CLI (exit 5).
- A bound for the whole call (``RetryPolicy(total_timeout=...)``, ``--total-timeout``): no
  back-off sleeps past it, an attempt never outlives it, and the error says it was spent.
- The CLI announces each retry on stderr; the library only logs it.
- Compressed answers are capped as they are decoded: a 1 MiB gzip bomb (1 GiB inflated) costs
  a process a few MiB, not hundreds.
- ``verify=PATH`` / ``--ca-file PATH`` trusts that bundle alone.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import re
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from _hostile_server import (
    HostileServer,
    answer,
    drip,
    drip_headers,
    drip_status,
    gzip_bomb,
    in_turn,
    serving,
    stall,
)

from certauth import (
    AsyncCertificateCredential,
    AsyncTokenVerifier,
    CertificateCredential,
    RetryPolicy,
    TokenVerifier,
    verify_access_token,
)
from certauth._flow import Failure, Reply, Send, Sleep
from certauth.authority import Authority
from certauth.certificates import Certificate, generate_certificate
from certauth.cli.main import main
from certauth.credential.client_auth import SecretAuth
from certauth.credential.planner import Planner
from certauth.emulator import Emulator
from certauth.emulator.tls import TlsFiles, generate_tls_files, server_context
from certauth.errors import TransportError

TENANT = "33333333-4444-5555-6666-777777777777"
CLIENT_ID = "44444444-5555-6666-7777-888888888888"
SCOPE = "api://network/.default"
#: A JWT-shaped token naming kid "k": enough to make a verifier fetch keys.
JWT = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsifQ.eyJhdWQiOiJhIn0.c2ln"
ONE_TRY = RetryPolicy(max_attempts=1)

#: Seconds per attempt in these tests, and what a loaded CI machine may add to it.
TIMEOUT = 0.25
SLACK = 0.7
#: The hostile servers drip a byte this often (far inside any per-read timeout), for this long
#: (so a client without the deadline fails the time check instead of hanging the suite).
INTERVAL = 0.03
DRIP_SECONDS = 3.0


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A CA and a server certificate for 127.0.0.1 (the hostile servers' https)."""
    return generate_tls_files(tmp_path_factory.mktemp("tls"), now=dt.datetime.now(dt.timezone.utc))


def _hostile(behaviour: str, scheme: str, tls: TlsFiles) -> AbstractContextManager[HostileServer]:
    if behaviour == "handshake":
        # Plain TCP that never answers: an https client's ClientHello waits for ever.
        return serving(stall(seconds=DRIP_SECONDS), read_request=False)
    misbehave = {
        "status": drip_status(INTERVAL, seconds=DRIP_SECONDS),
        "headers": drip_headers(INTERVAL, seconds=DRIP_SECONDS),
        "body": drip(INTERVAL, length=int(DRIP_SECONDS / INTERVAL)),
    }[behaviour]
    return serving(misbehave, tls=server_context(tls) if scheme == "https" else None)


def _url(server: HostileServer, scheme: str) -> str:
    return server.url.replace("http://", f"{scheme}://", 1)


def _endpoint(url: str) -> str:
    return f"{url}/{TENANT}/oauth2/v2.0/token"


def _get_token(stack: str, rsa_cert: Certificate, url: str, **kwargs: Any) -> None:
    """One get_token with the sync or the async credential."""
    options: dict[str, Any] = {"certificate": rsa_cert, "token_endpoint": _endpoint(url)}
    options.update(kwargs)
    if stack == "sync":
        with CertificateCredential(TENANT, CLIENT_ID, **options) as credential:
            credential.get_token(SCOPE)
        return

    async def main() -> None:
        async with AsyncCertificateCredential(TENANT, CLIENT_ID, **options) as credential:
            await credential.get_token(SCOPE)

    asyncio.run(main())


def _verify(stack: str, url: str, **kwargs: Any) -> None:
    """One verification (a key fetch) with the sync or the async verifier, or the function."""
    options: dict[str, Any] = {"jwks_uri": f"{url}/keys", "audience": "a"}
    options.update(kwargs)
    if stack == "function":
        verify_access_token(JWT, **options)
        return
    if stack == "sync":
        with TokenVerifier(**options) as verifier:
            verifier.verify(JWT)
        return

    async def main() -> None:
        async with AsyncTokenVerifier(**options) as verifier:
            await verifier.verify(JWT)

    asyncio.run(main())


# -- one deadline per attempt ---------------------------------------------------------------------

CASES = [
    ("status", "http"),
    ("headers", "http"),
    ("body", "http"),
    ("status", "https"),
    ("headers", "https"),
    ("body", "https"),
    ("handshake", "https"),
]


@pytest.mark.parametrize("stack", ["sync", "async"])
@pytest.mark.parametrize(("behaviour", "scheme"), CASES, ids=[f"{b}-{s}" for b, s in CASES])
def test_a_credential_attempt_ends_at_its_deadline(
    rsa_cert: Certificate, tls: TlsFiles, stack: str, behaviour: str, scheme: str
) -> None:
    with _hostile(behaviour, scheme, tls) as server:
        started = time.perf_counter()
        with pytest.raises(TransportError, match="timed out") as caught:
            _get_token(
                stack,
                rsa_cert,
                _url(server, scheme),
                timeout=TIMEOUT,
                retry=ONE_TRY,
                verify=str(tls.ca_file),
            )
        elapsed = time.perf_counter() - started
    assert elapsed < TIMEOUT + SLACK, f"{elapsed:.2f} s: {caught.value}"


@pytest.mark.parametrize("stack", ["sync", "async"])
@pytest.mark.parametrize("behaviour", ["status", "headers", "body", "handshake"])
def test_a_key_fetch_attempt_ends_at_its_deadline(
    tls: TlsFiles, stack: str, behaviour: str
) -> None:
    scheme = "https" if behaviour == "handshake" else "http"
    with _hostile(behaviour, scheme, tls) as server:
        started = time.perf_counter()
        with pytest.raises(TransportError, match="timed out") as caught:
            _verify(
                stack,
                _url(server, scheme),
                timeout=TIMEOUT,
                retry=ONE_TRY,
                verify=str(tls.ca_file),
            )
        elapsed = time.perf_counter() - started
    assert elapsed < TIMEOUT + SLACK, f"{elapsed:.2f} s: {caught.value}"


@pytest.fixture
def pem(rsa_cert: Certificate, tmp_path: Path) -> Path:
    path = tmp_path / "app.pem"
    path.write_bytes(rsa_cert.private_key_pem() + rsa_cert.pem)
    return path


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("AZURE_", "CERTAUTH_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CERTAUTH_CACHE_DIR", str(tmp_path / "cache"))


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _token_args(url: str, pem: Path, *more: str) -> list[str]:
    return [
        "token",
        "--token-endpoint",
        _endpoint(url),
        "--client-id",
        CLIENT_ID,
        "--cert",
        str(pem),
        "--scope",
        SCOPE,
        "--no-cache",
        *more,
    ]


RETRY_LINE = re.compile(
    r"^certauth: (token|discovery document|JWKS) request to (\S+) failed \((.+)\); "
    r"attempt (\d) of (\d) in (\d+\.\d+) s$"
)


@pytest.mark.usefixtures("clean_env")
def test_certauth_token_timeout_bounds_each_attempt_and_exits_5(
    capsys: pytest.CaptureFixture[str], pem: Path, tls: TlsFiles
) -> None:
    # The case: a status line dripped a byte at a time over https. Four attempts (the
    # default), each cut off at --timeout, and the waits between them.
    with _hostile("status", "https", tls) as server:
        started = time.perf_counter()
        code, out, err = _cli(
            capsys,
            *_token_args(server.url, pem, "--timeout", str(TIMEOUT), "--ca-file", str(tls.ca_file)),
        )
        elapsed = time.perf_counter() - started
    assert code == 5, err
    assert out == ""
    *retries, error = err.splitlines()
    assert error.startswith("certauth: error: "), error
    assert "timed out" in error, error
    assert [RETRY_LINE.match(line) is not None for line in retries] == [True] * 3, err
    # 4 attempts + at most 0.25 + 0.5 + 1.0 s of back-off (RetryPolicy's default ceiling).
    assert elapsed < 4 * (TIMEOUT + SLACK) + 1.75, f"{elapsed:.2f} s"


def test_certauth_verify_timeout_bounds_each_key_fetch_and_exits_5(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with serving(drip_headers(INTERVAL, seconds=DRIP_SECONDS)) as server:
        started = time.perf_counter()
        code, _, err = _cli(
            capsys,
            "verify",
            JWT,
            "--jwks-uri",
            f"{server.url}/keys",
            "--audience",
            "a",
            "--timeout",
            str(TIMEOUT),
        )
        elapsed = time.perf_counter() - started
    assert code == 5, err
    assert "timed out" in err.splitlines()[-1]
    # 2 attempts (the verifier's default) and at most 0.2 s between them.
    assert elapsed < 2 * (TIMEOUT + SLACK) + 0.2, f"{elapsed:.2f} s"


# -- a bound for the whole call -------------------------------------------------------------------


def test_the_flow_never_waits_past_the_bound_and_says_when_it_is_spent() -> None:
    # The pure flow, played by hand: each answer says how long its attempt took; the flow
    # gives each attempt what is left and stops before a wait that would run past the bound.
    retry = RetryPolicy(max_attempts=50, base_delay=0.4, max_delay=0.4, total_timeout=3.0)
    planner = Planner(
        client_id=CLIENT_ID,
        auth=SecretAuth("not-a-real-secret", "client_secret_post"),
        authority=Authority.entra(TENANT),
        issuer=None,
        retry=retry,
        refresh_margin=300,
    )
    flow = planner.fetch(planner.key_for((SCOPE,)), (SCOPE,), force=False)
    spent = 0.0
    action = flow.send(None)
    while isinstance(action, Send):
        assert action.timeout == pytest.approx(3.0 - spent)
        spent += 0.7
        try:
            action = flow.send(Failure("timeout", "timed out", elapsed=0.7))
        except TransportError as exc:
            error = exc
            break
        assert isinstance(action, Sleep)
        spent += action.seconds
        assert spent < 3.0
        action = flow.send(None)
    else:
        pytest.fail(f"unexpected action {action!r}")
    message = str(error)
    assert "total_timeout=3 s" in message, message
    assert "attempts" in message

    # A Retry-After longer than what is left is not waited for at all.
    retry = RetryPolicy(max_attempts=5, max_retry_after=60, total_timeout=10)
    planner.retry = retry
    flow = planner.fetch(planner.key_for((SCOPE,)), (SCOPE,), force=False)
    flow.send(None)
    busy = Reply(503, {"retry-after": "30"}, b"", elapsed=0.1)
    with pytest.raises(TransportError, match=r"leaves 9\.9 s, less than the 30\.0 s wait"):
        flow.send(busy)


def _always_busy(retry_after: int) -> Any:
    return answer(503, b"{}", {"Content-Type": "application/json", "Retry-After": str(retry_after)})


@pytest.mark.parametrize("stack", ["sync", "async"])
def test_total_timeout_bounds_the_retries_of_a_call(rsa_cert: Certificate, stack: str) -> None:
    # Retry-After: 1 and 10 attempts would take 9 s; the bound stops it at the second wait.
    retry = RetryPolicy(max_attempts=10, max_retry_after=5, total_timeout=1.5)
    with serving(_always_busy(1)) as server:
        started = time.perf_counter()
        with pytest.raises(TransportError, match=r"total_timeout=1\.5 s") as caught:
            _get_token(stack, rsa_cert, server.url, retry=retry)
        elapsed = time.perf_counter() - started
        assert len(server.connections) == 2
    assert elapsed < 1.5 + SLACK, f"{elapsed:.2f} s: {caught.value}"


@pytest.mark.parametrize("stack", ["sync", "async"])
def test_total_timeout_cuts_an_attempt_short(rsa_cert: Certificate, stack: str) -> None:
    # 30 s per attempt, but only 1 s for the whole call: the attempt gets what is left.
    retry = RetryPolicy(total_timeout=1.0)
    with serving(drip_status(INTERVAL, seconds=DRIP_SECONDS)) as server:
        started = time.perf_counter()
        with pytest.raises(TransportError, match=r"total_timeout=1 s, is spent"):
            _get_token(stack, rsa_cert, server.url, timeout=30.0, retry=retry)
        elapsed = time.perf_counter() - started
    assert elapsed < 1.0 + SLACK, f"{elapsed:.2f} s"


@pytest.mark.parametrize("stack", ["sync", "async", "function"])
def test_total_timeout_bounds_a_key_fetch(stack: str) -> None:
    retry = RetryPolicy(max_attempts=10, max_retry_after=5, total_timeout=1.5)
    with serving(_always_busy(1)) as server:
        started = time.perf_counter()
        with pytest.raises(TransportError, match=r"total_timeout=1\.5 s"):
            _verify(stack, server.url, retry=retry)
        elapsed = time.perf_counter() - started
    assert elapsed < 1.5 + SLACK, f"{elapsed:.2f} s"


@pytest.mark.usefixtures("clean_env")
def test_certauth_token_total_timeout(capsys: pytest.CaptureFixture[str], pem: Path) -> None:
    with serving(_always_busy(1)) as server:
        started = time.perf_counter()
        code, _, err = _cli(capsys, *_token_args(server.url, pem, "--total-timeout", "1.5"))
        elapsed = time.perf_counter() - started
    assert code == 5, err
    assert "total_timeout=1.5 s" in err.splitlines()[-1], err
    assert elapsed < 1.5 + SLACK, f"{elapsed:.2f} s"


# -- retries, announced ---------------------------------------------------------------------------


@pytest.mark.usefixtures("clean_env")
def test_certauth_token_prints_one_line_per_retry(
    capsys: pytest.CaptureFixture[str], rsa_cert: Certificate, pem: Path
) -> None:
    with Emulator() as tenant:
        tenant.register(CLIENT_ID, rsa_cert)
        tenant.inject_faults(503, count=1)
        code, out, err = _cli(
            capsys,
            "token",
            "--tenant",
            tenant.tenant_id,
            "--authority-host",
            tenant.authority_host,
            "--client-id",
            CLIENT_ID,
            "--cert",
            str(pem),
            "--scope",
            SCOPE,
            "--no-cache",
        )
        token_endpoint = tenant.token_endpoint
    assert code == 0, err
    access_token = out.strip()
    lines = err.splitlines()
    assert len(lines) == 1, err
    match = RETRY_LINE.match(lines[0])
    assert match is not None, lines[0]
    assert match.group(1, 2, 3, 4, 5) == ("token", token_endpoint, "HTTP 503", "2", "4")
    assert access_token not in err
    assert "client_assertion" not in err


def test_certauth_verify_prints_one_line_per_key_fetch_retry(
    capsys: pytest.CaptureFixture[str], rsa_cert: Certificate
) -> None:
    with Emulator() as tenant:
        tenant.register(CLIENT_ID, rsa_cert)
        with CertificateCredential(
            tenant.tenant_id, CLIENT_ID, certificate=rsa_cert, authority=tenant.authority_host
        ) as credential:
            token = credential.get_token(SCOPE).token
        jwks = json.dumps(tenant.jwks()).encode()
        issuer = tenant.issuer
    with serving(in_turn(answer(503, b"{}"), answer(200, jwks))) as server:
        code, _, err = _cli(
            capsys,
            "verify",
            token,
            "--issuer",
            issuer,
            "--jwks-uri",
            f"{server.url}/keys",
            "--audience",
            "api://network",
        )
    assert code == 0, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    match = RETRY_LINE.match(lines[0])
    assert match is not None, lines[0]
    assert match.group(1, 2, 3, 4, 5) == ("JWKS", f"{server.url}/keys", "HTTP 503", "2", "2")
    assert token not in err


def test_the_library_logs_retries_and_prints_nothing(
    rsa_cert: Certificate, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    token = b'{"access_token":"t","token_type":"Bearer","expires_in":3600}'
    with (
        serving(in_turn(answer(503, b"{}"), answer(200, token))) as server,
        caplog.at_level(logging.INFO, logger="certauth"),
    ):
        _get_token("sync", rsa_cert, server.url, retry=RetryPolicy(base_delay=0.01))
    retries = [r for r in caplog.records if r.name == "certauth.retry"]
    assert [r.levelno for r in retries] == [logging.INFO]
    assert RETRY_LINE.match(retries[0].getMessage())
    assert capsys.readouterr().err == ""


# -- compressed answers, capped as they are decoded -----------------------------------------------

RSS_PROBE = """
import asyncio, json, resource, sys
from certauth import AsyncClientSecretCredential, ClientSecretCredential, RetryPolicy
from certauth.errors import TransportError

stack, good, bomb = sys.argv[1:]
scale = 1 if sys.platform != "darwin" else 1 / 1024  # ru_maxrss: KiB on Linux, bytes on macOS
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
options = dict(retry=RetryPolicy(max_attempts=1))
scope = "api://network/.default"

def credential(cls, url):
    endpoint = url + "/t/oauth2/v2.0/token"
    return cls("t", "c", "not-a-real-secret", token_endpoint=endpoint, **options)

async def run_async():
    async with credential(AsyncClientSecretCredential, good) as warm:
        await warm.get_token(scope)  # every lazy import and buffer of a request, paid
    async with credential(AsyncClientSecretCredential, bomb) as target:
        before = peak()
        try:
            await target.get_token(scope)
            outcome = "a token"
        except TransportError as exc:
            outcome = str(exc)
        return before, peak(), outcome

if stack == "sync":
    with credential(ClientSecretCredential, good) as warm:
        warm.get_token(scope)
    with credential(ClientSecretCredential, bomb) as target:
        before = peak()
        try:
            target.get_token(scope)
            outcome = "a token"
        except TransportError as exc:
            outcome = str(exc)
        after = peak()
else:
    before, after, outcome = asyncio.run(run_async())
print(json.dumps({"growth_kib": after - before, "outcome": outcome}))
"""


@pytest.mark.parametrize("stack", ["sync", "async"])
def test_a_gzip_bomb_is_refused_before_it_inflates(stack: str) -> None:
    token = b'{"access_token":"t","token_type":"Bearer","expires_in":3600}'
    gib = 1024**3
    with serving(answer(200, token)) as good, serving(gzip_bomb(gib)) as bomb:
        done = subprocess.run(
            [sys.executable, "-c", RSS_PROBE, stack, good.url, bomb.url],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert "larger than" in result["outcome"], result
    # The cap is 1 MiB of decoded bytes; the body, one compressed chunk and zlib's window
    # fit well within 8 MiB (an unbounded inflate of one 64 KiB chunk alone is 64 MiB).
    assert result["growth_kib"] < 8 * 1024, result


# -- trust: the CA file alone ---------------------------------------------------------------------


@pytest.fixture
def tls_tenant(rsa_cert: Certificate) -> Iterator[Emulator]:
    with Emulator(tls=True) as tenant:
        tenant.register(CLIENT_ID, rsa_cert)
        yield tenant


def _run_token(tenant: Emulator, pem: Path, env: dict[str, str], *more: str) -> Any:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "certauth",
            "token",
            "--tenant",
            tenant.tenant_id,
            "--authority-host",
            tenant.authority_host,
            "--client-id",
            CLIENT_ID,
            "--cert",
            str(pem),
            "--scope",
            SCOPE,
            "--no-cache",
            *more,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_ca_file_is_trusted_alone_and_the_system_store_is_the_default(
    tls_tenant: Emulator, pem: Path, tmp_path: Path
) -> None:
    ca_a = tls_tenant.ca_file
    assert ca_a is not None
    ca_b = tmp_path / "ca-b.pem"
    ca_b.write_bytes(generate_certificate("CN=unrelated CA B").pem)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "CERTAUTH_"))}
    env.update(SSL_CERT_FILE=ca_a, CERTAUTH_CACHE_DIR=str(tmp_path / "cache"))
    # The system store (SSL_CERT_FILE: CA-A) trusts the server, but --ca-file CA-B replaces it.
    refused = _run_token(tls_tenant, pem, env, "--ca-file", str(ca_b))
    assert refused.returncode == 5, refused.stderr
    assert "TLS certificate verification failed" in refused.stderr
    # By default the system store, SSL_CERT_FILE honoured, is the trust.
    accepted = _run_token(tls_tenant, pem, env)
    assert accepted.returncode == 0, accepted.stderr
    assert accepted.stdout.count(".") == 2  # a JWT


def test_verify_path_is_trusted_alone_by_the_async_credential(
    tls_tenant: Emulator, rsa_cert: Certificate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from certauth import _http

    ca_b = tmp_path / "ca-b.pem"
    ca_b.write_bytes(generate_certificate("CN=unrelated CA B").pem)
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_tenant.ca_file))
    monkeypatch.setattr(_http, "_contexts", {})  # contexts are built once per process

    async def get(verify: str | ssl.SSLContext | None) -> str:
        async with AsyncCertificateCredential(
            tls_tenant.tenant_id,
            CLIENT_ID,
            certificate=rsa_cert,
            authority=tls_tenant.authority_host,
            verify=verify,
            retry=ONE_TRY,
        ) as credential:
            return (await credential.get_token(SCOPE)).token

    with pytest.raises(TransportError, match="certificate verification failed"):
        asyncio.run(get(str(ca_b)))
    assert asyncio.run(get(None))
    # An SSLContext is used as given.
    assert asyncio.run(get(ssl.create_default_context(cafile=tls_tenant.ca_file)))
