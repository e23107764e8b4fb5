"""Token lifecycle: margin, refresh ahead, expiry, single flight, rotation, the shared cache.

The credential and the emulator read one controllable clock, so hours pass in microseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from certauth import AsyncCertificateCredential, CertificateCredential, RetryPolicy
from certauth.cache import FileTokenCache
from certauth.certificates import Certificate, generate_certificate
from certauth.emulator import Emulator
from certauth.errors import TransportError

CLIENT = "11111111-2222-3333-4444-555555555555"
SCOPE = "api://billing/.default"
NO_RETRY = RetryPolicy(max_attempts=1)


class Clock:
    """A clock the test moves by hand (shared by the emulator and the credential)."""

    def __init__(self) -> None:
        import time

        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def tenant(rsa_cert: Certificate, clock: Clock) -> Iterator[Emulator]:
    with Emulator(strict=True, clock=clock, token_lifetime=3600) as emulator:
        emulator.register(CLIENT, rsa_cert)
        yield emulator


def make(
    tenant: Emulator, cert: Certificate | str, clock: Clock, **kw: object
) -> CertificateCredential:
    source: dict[str, object] = {"certificate": cert} if isinstance(cert, Certificate) else {}
    path = cert if isinstance(cert, str) else None
    return CertificateCredential(
        tenant.tenant_id,
        CLIENT,
        path,
        authority=tenant.authority_host,
        clock=clock,
        retry=NO_RETRY,
        **source,
        **kw,
    )


def test_margin_refresh_ahead_and_expiry(
    tenant: Emulator, rsa_cert: Certificate, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    with make(tenant, rsa_cert, clock) as cred:
        first = cred.get_token(SCOPE)
        clock.advance(1799)  # before half-life: served from memory
        assert cred.get_token(SCOPE) == first
        assert tenant.request_count == 1
        clock.advance(2)  # past half-life: renewed ahead by this caller
        second = cred.get_token(SCOPE)
        assert second != first
        assert tenant.request_count == 2
        # A failed renewal keeps serving the valid token, logged once.
        clock.advance(1801)
        tenant.inject_faults(status=503, count=10)
        with caplog.at_level(logging.WARNING, logger="certauth"):
            assert cred.get_token(SCOPE) == second
            assert cred.get_token(SCOPE) == second
        assert caplog.text.count("renewing a token failed") == 1
        # Inside the 5-minute margin the token is still served while renewals fail ...
        clock.advance(3600 - 1801 - 200)
        assert cred.get_token(SCOPE) == second
        # ... and only an expired token makes get_token fail.
        clock.advance(201)
        with pytest.raises(TransportError, match="HTTP 503 after") as caught:
            cred.get_token(SCOPE)
        assert caught.value.status_code == 503
        tenant.clear_faults()
        assert cred.get_token(SCOPE) != second


def test_refresh_in_from_the_server_is_honoured(rsa_cert: Certificate, clock: Clock) -> None:
    with Emulator(clock=clock, token_lifetime=4 * 3600) as tenant:
        tenant.register(CLIENT, rsa_cert)
        with make(tenant, rsa_cert, clock) as cred:
            token = cred.request_token(SCOPE)
            assert token.refresh_on is not None
            clock.advance(token.refresh_on - clock.now - 1)
            cred.get_token(SCOPE)
            assert tenant.request_count == 1
            clock.advance(2)
            cred.get_token(SCOPE)
            assert tenant.request_count == 2


def test_settable_margin(tenant: Emulator, rsa_cert: Certificate, clock: Clock) -> None:
    with make(tenant, rsa_cert, clock, refresh_margin=1200) as cred:
        cred.get_token(SCOPE)
        clock.advance(3600 - 1199)
        cred.get_token(SCOPE)
        assert tenant.request_count == 2


def test_64_threads_on_a_cold_cache_make_one_request(
    tenant: Emulator, rsa_cert: Certificate, clock: Clock
) -> None:
    tenant.inject_faults(delay=0.2, count=1)  # keep the first request open while all arrive
    with make(tenant, rsa_cert, clock) as cred:
        barrier = threading.Barrier(64)
        tokens: list[str] = []

        def call() -> None:
            barrier.wait()
            tokens.append(cred.get_token(SCOPE).token)

        threads = [threading.Thread(target=call) for _ in range(64)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(tokens) == 64
    assert len(set(tokens)) == 1
    assert tenant.request_count == 1


def test_concurrent_callers_share_the_error(
    tenant: Emulator, rsa_cert: Certificate, clock: Clock
) -> None:
    tenant.inject_faults(status=503, delay=0.2, count=1)
    with make(tenant, rsa_cert, clock) as cred:
        errors: list[BaseException] = []

        def call() -> None:
            try:
                cred.get_token(SCOPE)
            except TransportError as exc:
                errors.append(exc)

        threads = [threading.Thread(target=call) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(errors) == 16
    assert tenant.request_count == 1


def test_64_tasks_on_a_cold_cache_make_one_request(
    tenant: Emulator, rsa_cert: Certificate, clock: Clock
) -> None:
    tenant.inject_faults(delay=0.2, count=1)

    async def main() -> set[str]:
        async with AsyncCertificateCredential(
            tenant.tenant_id,
            CLIENT,
            certificate=rsa_cert,
            authority=tenant.authority_host,
            clock=clock,
        ) as cred:
            results = await asyncio.gather(*(cred.get_token(SCOPE) for _ in range(64)))
            return {r.token for r in results}

    assert len(asyncio.run(main())) == 1
    assert tenant.request_count == 1


def _write_pem(path: Path, cert: Certificate) -> None:
    path.write_bytes(cert.private_key_pem() + cert.pem)


def test_certificate_rotation_without_restart(
    tenant: Emulator,
    rsa_cert: Certificate,
    clock: Clock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    new_cert = generate_certificate("CN=certauth-rotated")
    tenant.register(CLIENT, new_cert)  # both registered during the rotation, as in the portal
    # A Kubernetes secret volume: files are symlinks into a timestamped directory, swapped at once.
    (tmp_path / "v1").mkdir()
    _write_pem(tmp_path / "v1" / "tls.pem", rsa_cert)
    (tmp_path / "current").symlink_to("v1")
    path = str(tmp_path / "current" / "tls.pem")
    with make(tenant, path, clock) as cred:
        cred.get_token(SCOPE)
        assert tenant.last_thumbprint == rsa_cert.x5t_s256
        # A half-written file: the old certificate keeps working, and the reason is logged.
        (tmp_path / "v2").mkdir()
        (tmp_path / "v2" / "tls.pem").write_bytes(new_cert.pem[:100])
        (tmp_path / "next").symlink_to("v2")
        os.replace(tmp_path / "next", tmp_path / "current")
        clock.advance(1801)
        with caplog.at_level(logging.WARNING, logger="certauth"):
            cred.get_token(SCOPE)
        assert "kept the current certificate" in caplog.text
        assert tenant.last_thumbprint == rsa_cert.x5t_s256
        # The finished new secret: the next token request uses the new certificate.
        _write_pem(tmp_path / "v2" / "tls.pem", new_cert)
        clock.advance(3600)
        cred.get_token(SCOPE)
        assert tenant.last_thumbprint == new_cert.x5t_s256


@pytest.mark.parametrize("replacement", ["ec key", "expired", "other key"])
def test_rotation_never_adopts_a_certificate_that_would_be_refused(
    tenant: Emulator,
    rsa_cert: Certificate,
    other_rsa_cert: Certificate,
    clock: Clock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    replacement: str,
) -> None:
    path = tmp_path / "tls.pem"
    _write_pem(path, rsa_cert)
    with make(tenant, str(path), clock) as cred:
        cred.get_token(SCOPE)
        if replacement == "ec key":  # Entra ID takes RSA keys only (AADSTS5002738)
            bad = generate_certificate("CN=certauth-ec", key_type="ec-p256")
            path.write_bytes(bad.private_key_pem() + bad.pem)
            reason = "EC"
        elif replacement == "expired":
            import datetime as dt

            long_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=800)
            bad = generate_certificate("CN=certauth-old", days=30, now=long_ago)
            path.write_bytes(bad.private_key_pem() + bad.pem)
            reason = "expired"
        else:  # a key that does not match the certificate
            path.write_bytes(other_rsa_cert.private_key_pem() + rsa_cert.pem)
            reason = "does not belong to the certificate"
        clock.advance(3600)
        with caplog.at_level(logging.WARNING, logger="certauth"):
            cred.get_token(SCOPE)
        assert "kept the current certificate" in caplog.text
        assert reason in caplog.text
        assert tenant.last_thumbprint == rsa_cert.x5t_s256


def test_a_certificate_not_valid_yet_is_adopted_once_it_is(
    tenant: Emulator,
    rsa_cert: Certificate,
    clock: Clock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import datetime as dt

    soon = dt.datetime.fromtimestamp(clock.now, dt.timezone.utc) + dt.timedelta(hours=2)
    future = generate_certificate("CN=certauth-next", now=soon)  # valid from ~2 h from now
    tenant.register(CLIENT, future)
    path = tmp_path / "tls.pem"
    _write_pem(path, rsa_cert)
    with make(tenant, str(path), clock) as cred:
        cred.get_token(SCOPE)
        _write_pem(path, future)
        clock.advance(3600)
        with caplog.at_level(logging.WARNING, logger="certauth"):
            cred.get_token(SCOPE)
            clock.advance(1)
            cred.request_token(SCOPE, force=True)
        assert caplog.text.count("is not valid before") == 1  # said once, not per request
        assert tenant.last_thumbprint == rsa_cert.x5t_s256
        clock.advance(2 * 3600)  # now it is valid: the unchanged file is adopted
        cred.get_token(SCOPE)
        assert tenant.last_thumbprint == future.x5t_s256


def test_signing_never_mixes_two_certificates_during_rotation(
    rsa_cert: Certificate, other_rsa_cert: Certificate, tmp_path: Path
) -> None:
    import jwt

    from certauth.authority import Authority
    from certauth.credential.client_auth import CertificateAuth, CertificateFiles

    path = tmp_path / "tls.pem"
    _write_pem(path, rsa_cert)
    files = CertificateFiles(str(path), None, None)
    auth = CertificateAuth(
        files.load(), alg=None, lifetime=300, send_chain=False, reload_from=files
    )
    authority = Authority.entra("contoso.onmicrosoft.com")
    auth.bind(CLIENT, authority)
    by_thumbprint = {c.x5t_s256: c for c in (rsa_cert, other_rsa_cert)}
    signed: list[str] = []
    stop = threading.Event()

    errors: list[BaseException] = []

    def sign() -> None:
        try:
            while not stop.is_set():
                auth.maybe_reload(time.time())
                fields = auth.credential_fields(authority.token_endpoint, time.time())
                signed.append(fields["assertion"])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=sign) for _ in range(4)]
    for worker in workers:
        worker.start()
    for turn in range(30):
        _write_pem(path, (other_rsa_cert, rsa_cert)[turn % 2])
        time.sleep(0.005)
    stop.set()
    for worker in workers:
        worker.join(10)
    assert errors == []
    assert len(signed) > 30
    for assertion in signed:
        # The header names the certificate whose key made the signature: never a mix.
        named = by_thumbprint[jwt.get_unverified_header(assertion)["x5t#S256"]]
        jwt.decode(
            assertion, named.public_key, algorithms=["PS256"], audience=authority.token_endpoint
        )


def test_async_credential_never_calls_the_store_on_the_event_loop(
    tenant: Emulator, rsa_cert: Certificate, clock: Clock
) -> None:
    class ThreadRecordingStore:
        def __init__(self) -> None:
            self.threads: list[tuple[str, int]] = []
            self.inner = FileTokenCache(None)

        def get(self, key: str) -> bytes | None:
            self.threads.append(("get", threading.get_ident()))
            return None

        def set(self, key: str, value: bytes, expires_on: float) -> None:
            self.threads.append(("set", threading.get_ident()))

        def delete(self, key: str) -> None:
            self.threads.append(("delete", threading.get_ident()))

        def lock(self, key: str) -> Any:
            self.threads.append(("lock", threading.get_ident()))
            return contextlib.nullcontext()

    store = ThreadRecordingStore()

    async def scenario() -> int:
        async with AsyncCertificateCredential(
            tenant.tenant_id,
            CLIENT,
            certificate=rsa_cert,
            authority=tenant.authority_host,
            clock=clock,
            cache=store,  # type: ignore[arg-type]
        ) as cred:
            await cred.get_token(SCOPE)
            cred.invalidate(SCOPE)  # after a 401: must not block the loop on the store
            await cred.get_token(SCOPE)
        return threading.get_ident()

    loop_thread = asyncio.run(scenario())
    names = [name for name, _ in store.threads]
    # The invalidated entry is deleted (in a worker thread, at some point) and never read again.
    assert names[:4] == ["get", "lock", "get", "set"]
    rest = names[4:]
    assert (rest.count("delete"), rest.count("lock"), rest.count("set")) == (1, 1, 1)
    if "get" in rest:  # read only once the entry is gone
        assert rest.index("delete") < rest.index("get")
    assert all(thread != loop_thread for _, thread in store.threads)
    assert tenant.request_count == 2


def test_credentials_named_by_issuer_share_the_file_cache(
    tenant: Emulator, rsa_cert: Certificate, clock: Clock, tmp_path: Path
) -> None:
    cache = FileTokenCache(tmp_path / "cache")
    tokens = set()
    for _ in range(3):  # three processes' credentials, each discovering the token endpoint
        with CertificateCredential(
            None, CLIENT, certificate=rsa_cert, issuer=tenant.issuer, clock=clock, cache=cache
        ) as cred:
            tokens.add(cred.get_token(SCOPE).token)
    assert len(tokens) == 1
    assert tenant.request_count == 1  # the store is read under the key it is written under


def test_file_cache_shared_by_credentials_and_corruption_ignored(
    tenant: Emulator, rsa_cert: Certificate, clock: Clock, tmp_path: Path
) -> None:
    cache = FileTokenCache(tmp_path / "cache")
    with make(tenant, rsa_cert, clock, cache=cache) as first:
        token = first.get_token(SCOPE)
    with make(tenant, rsa_cert, clock, cache=cache) as second:
        assert second.get_token(SCOPE) == token
    assert tenant.request_count == 1
    for entry in (tmp_path / "cache").glob("*.token"):
        entry.write_bytes(b"\x00garbage")
    with make(tenant, rsa_cert, clock, cache=cache) as third:
        assert third.get_token(SCOPE) != token
    assert tenant.request_count == 2
    with make(tenant, rsa_cert, clock, cache=cache) as fourth:
        fourth.get_token(SCOPE)
    assert tenant.request_count == 2  # the corrupt entry was replaced


CLI_TOKEN = [
    sys.executable,
    "-m",
    "certauth",
    "token",
    "--client-id",
    CLIENT,
    "--scope",
    SCOPE,
]


@pytest.mark.slow
def test_two_cli_processes_share_one_cache_and_one_request(
    rsa_cert: Certificate, tmp_path: Path
) -> None:
    pem = tmp_path / "app.pem"
    _write_pem(pem, rsa_cert)
    with Emulator() as tenant:
        tenant.register(CLIENT, rsa_cert)
        tenant.inject_faults(delay=0.5, count=1)
        env = dict(
            os.environ,
            CERTAUTH_CACHE_DIR=str(tmp_path / "cache"),
            AZURE_TENANT_ID=tenant.tenant_id,
            AZURE_AUTHORITY_HOST=tenant.authority_host,
            AZURE_CLIENT_CERTIFICATE_PATH=str(pem),
        )
        procs = [
            subprocess.Popen(CLI_TOKEN, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for _ in range(2)
        ]
        outputs = [p.communicate(timeout=60) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outputs
        assert outputs[0][0] == outputs[1][0]
        assert tenant.request_count == 1
        # A later step reuses it; --no-cache asks again.
        again = subprocess.run(CLI_TOKEN, env=env, capture_output=True, check=True)
        assert again.stdout == outputs[0][0]
        assert tenant.request_count == 1
        subprocess.run([*CLI_TOKEN, "--no-cache"], env=env, capture_output=True, check=True)
        assert tenant.request_count == 2
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "cache").iterdir()}
    assert all(mode == 0o600 for mode in modes.values()), modes
    assert (tmp_path / "cache").stat().st_mode & 0o777 == 0o700
    shutil.rmtree(tmp_path / "cache")


def test_cert_show_directory_lists_old_and_new_side_by_side(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import datetime as dt
    import json

    from certauth.cli.main import main

    now = dt.datetime.now(dt.timezone.utc)
    old = generate_certificate("CN=billing-api", days=30, now=now - dt.timedelta(days=20))
    new = generate_certificate("CN=billing-api", days=365)
    (tmp_path / "old.crt").write_bytes(old.pem)
    (tmp_path / "new.pem").write_bytes(new.private_key_pem("pw") + new.pem)  # encrypted key: fine
    (tmp_path / "new.key").write_bytes(new.private_key_pem())  # keys are passed over
    (tmp_path / "locked.pfx").write_bytes(new.to_pfx("secret"))  # needs a password: reported
    assert main(["cert", "show", str(tmp_path), "--json"]) == 0
    out, err = capsys.readouterr()
    listing = json.loads(out)
    assert [Path(row["file"]).name for row in listing["certificates"]] == ["old.crt", "new.pem"]
    assert listing["certificates"][0]["days_left"] in (9, 10)
    assert listing["certificates"][1]["thumbprint_sha1"] == new.thumbprint_sha1
    assert "locked.pfx" in err
    assert main(["cert", "show", str(tmp_path)]) == 0
    out, _ = capsys.readouterr()
    assert out.index(old.thumbprint_sha1) < out.index(new.thumbprint_sha1)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["cert", "show", str(empty)]) == 3
