"""The credentials' pure planning core and the shared single flight, tested without sockets:
the planner's renewal is a flow of actions, so a test plays the server's part by hand."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from certauth._flow import Call, Reply, Send, Sleep
from certauth._singleflight import AsyncSingleFlight, SingleFlight
from certauth.authority import Authority
from certauth.certificates import Certificate
from certauth.credential.client_auth import CertificateAuth, CertificateFiles, SecretAuth
from certauth.credential.planner import Decision, Planner
from certauth.errors import TokenRequestError, TransportError
from certauth.protocol import RetryPolicy

CLIENT = "11111111-2222-3333-4444-555555555555"
SCOPE = "api://billing/.default"
AUTHORITY = Authority.entra("contoso.onmicrosoft.com")


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _planner(rsa_cert: Certificate, clock: Clock, **kw: Any) -> Planner:
    auth = CertificateAuth(rsa_cert, alg=None, lifetime=300, send_chain=False)
    options: dict[str, Any] = {
        "client_id": CLIENT,
        "auth": auth,
        "authority": AUTHORITY,
        "issuer": None,
        "retry": RetryPolicy(max_attempts=2, base_delay=0.5, max_delay=0.5),
        "refresh_margin": 300,
        "clock": clock,
    }
    options.update(kw)
    return Planner(**options)


def _reply(status: int, document: dict[str, Any]) -> Reply:
    return Reply(status, {"content-type": "application/json"}, json.dumps(document).encode())


def _play(flow: Any, answers: list[Any]) -> tuple[list[Any], Any]:
    """Run a flow, answering each action from ``answers`` in turn; the actions and the result."""
    actions = []
    answer = None
    try:
        while True:
            action = flow.send(answer)
            actions.append(action)
            answer = answers.pop(0)
    except StopIteration as done:
        return actions, done.value


def test_the_renewal_is_a_flow_of_actions_and_the_plan_follows_the_clock(
    rsa_cert: Certificate,
) -> None:
    clock = Clock()
    planner = _planner(rsa_cert, clock)
    key, cached, decision = planner.plan((SCOPE,), force=False)
    assert (cached, decision) == (None, Decision.RENEW)
    answer = _reply(200, {"access_token": "tok", "token_type": "Bearer", "expires_in": 3600})
    actions, token = _play(planner.fetch(key, (SCOPE,), force=False), [answer])
    # One POST to the tenant's token endpoint, with a fresh assertion; nothing else.
    assert [type(a) for a in actions] == [Send]
    assert actions[0].url == AUTHORITY.token_endpoint
    assert b"client_assertion=" in (actions[0].body or b"")
    assert token.access_token == "tok"
    assert planner.plan((SCOPE,), force=False) == (key, token, Decision.SERVE)
    clock.now += 1800  # half the lifetime: served, and renewed ahead
    assert planner.plan((SCOPE,), force=False)[2] is Decision.RENEW_AHEAD
    clock.now += 1500  # inside the 300 s margin: renewed before it is served
    assert planner.plan((SCOPE,), force=False) == (key, token, Decision.RENEW)
    assert planner.plan((SCOPE,), force=True) == (key, None, Decision.RENEW)


def test_transient_failures_become_sleeps_and_a_refusal_is_typed(rsa_cert: Certificate) -> None:
    planner = _planner(rsa_cert, Clock())
    key = planner.key_for((SCOPE,))
    busy = Reply(503, {"retry-after": "1"}, b"")
    refused = _reply(
        400,
        {
            "error": "invalid_client",
            "error_description": "AADSTS700027: The key was not found.\r\nTrace ID: t-1",
            "error_codes": [700027],
            "trace_id": "t-1",
        },
    )
    flow = planner.fetch(key, (SCOPE,), force=False)
    assert isinstance(flow.send(None), Send)
    assert flow.send(busy) == Sleep(1.0)  # Retry-After honoured
    assert isinstance(flow.send(None), Send)
    with pytest.raises(TokenRequestError) as caught:
        flow.send(refused)
    assert (caught.value.aadsts, caught.value.trace_id) == ("AADSTS700027", "t-1")
    # Out of attempts on 5xx: a transport error naming the status.
    flow = planner.fetch(key, (SCOPE,), force=False)
    flow.send(None)
    flow.send(busy)
    flow.send(None)
    with pytest.raises(TransportError, match="HTTP 503 after 2 attempts"):
        flow.send(busy)


class RecordingStore:
    """A token store that records its calls (the planner must ask for them as actions)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.data: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        self.calls.append("get")
        return self.data.get(key)

    def set(self, key: str, value: bytes, expires_on: float) -> None:
        self.calls.append("set")
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.calls.append("delete")
        self.data.pop(key, None)

    def lock(self, key: str) -> Any:
        store = self

        class _Lock:
            def __enter__(self) -> None:
                store.calls.append("lock")

            def __exit__(self, *exc: object) -> None:
                store.calls.append("unlock")

        return _Lock()


def test_store_calls_are_actions_and_the_lock_is_released_on_failure(
    rsa_cert: Certificate,
) -> None:
    store = RecordingStore()
    planner = _planner(rsa_cert, Clock(), store=store)
    key = planner.key_for((SCOPE,))
    flow = planner.fetch(key, (SCOPE,), force=False)
    action = flow.send(None)
    # Nothing was called by the planner itself: it asked to read the store first.
    assert isinstance(action, Call)
    assert store.calls == []
    action = flow.send(action.function(*action.args))  # nothing there: take the lock
    assert isinstance(action, Call)
    action = flow.send(action.function(*action.args))  # lock taken: read again
    assert isinstance(action, Call)
    action = flow.send(action.function(*action.args))  # nothing stored: go and ask
    assert isinstance(action, Send)
    refused = _reply(400, {"error": "invalid_scope", "error_codes": [70011]})
    unlock = flow.send(refused)  # the refusal raises only once the lock is released
    assert isinstance(unlock, Call)
    with pytest.raises(TokenRequestError, match="invalid_scope"):
        flow.send(unlock.function(*unlock.args))
    assert store.calls == ["get", "lock", "get", "unlock"]


def test_a_token_already_in_the_store_costs_one_read_and_no_lock(
    rsa_cert: Certificate,
) -> None:
    store = RecordingStore()
    writer = _planner(rsa_cert, Clock(), store=store)
    key = writer.key_for((SCOPE,))
    answer = _reply(200, {"access_token": "tok", "expires_in": 3600})
    _perform(writer.fetch(key, (SCOPE,), force=False), [answer])
    assert store.calls == ["get", "lock", "get", "set", "unlock"]
    store.calls.clear()
    reader = _planner(rsa_cert, Clock(), store=store)
    token = _perform(reader.fetch(key, (SCOPE,), force=False), [])
    assert token.access_token == "tok"
    assert store.calls == ["get"]


def _perform(flow: Any, replies: list[Any]) -> Any:
    """Run a flow: its store and file calls are made, its requests answered from ``replies``."""
    answer = None
    try:
        while True:
            action = flow.send(answer)
            answer = action.function(*action.args) if isinstance(action, Call) else replies.pop(0)
    except StopIteration as done:
        return done.value


def test_recover_serves_the_old_token_until_it_expires(rsa_cert: Certificate) -> None:
    clock = Clock()
    planner = _planner(rsa_cert, clock)
    key = planner.key_for((SCOPE,))
    answer = _reply(200, {"access_token": "tok", "expires_in": 600})
    _, token = _play(planner.fetch(key, (SCOPE,), force=False), [answer])
    failure = TransportError("down")
    assert planner.recover(key, token, failure) is token
    clock.now = token.expires_on
    assert planner.recover(key, token, failure) is None
    assert planner.recover(key, None, failure) is None


def test_only_credentials_read_from_files_ask_for_blocking_io(
    rsa_cert: Certificate, tmp_path: Path
) -> None:
    assert SecretAuth("s3cret-value", "client_secret_post").reads_files is False
    assert CertificateAuth(rsa_cert, alg=None, lifetime=300, send_chain=False).reads_files is False
    path = tmp_path / "app.pem"
    path.write_bytes(rsa_cert.private_key_pem() + rsa_cert.pem)
    files = CertificateFiles(str(path), None, None)
    auth = CertificateAuth(
        files.load(), alg=None, lifetime=300, send_chain=False, reload_from=files
    )
    assert auth.reads_files is True
    # So the renewal asks the shell to reload (a Call) before signing.
    planner = _planner(rsa_cert, Clock(), auth=auth)
    flow = planner.fetch(planner.key_for((SCOPE,)), (SCOPE,), force=False)
    first = flow.send(None)
    assert isinstance(first, Call)
    assert first.function == auth.maybe_reload


# -- the single flight ------------------------------------------------------------------------


def test_single_flight_threads_share_one_run_and_its_error() -> None:
    flights: SingleFlight[int] = SingleFlight()
    started, release = threading.Event(), threading.Event()
    runs: list[int] = []

    def work() -> int:
        runs.append(1)
        started.set()
        release.wait(5)
        return 42

    results: list[int | None] = []
    leader = threading.Thread(target=lambda: results.append(flights.run("k", work)))
    leader.start()
    started.wait(5)
    followers = [
        threading.Thread(target=lambda: results.append(flights.run("k", work))) for _ in range(8)
    ]
    for thread in followers:
        thread.start()
    assert flights.run("k", work, wait=False) is None  # busy: not waited for
    time.sleep(0.05)
    release.set()
    for thread in [leader, *followers]:
        thread.join(5)
    assert results == [42] * 9
    assert len(runs) == 1

    def failing() -> int:
        raise TransportError("boom")

    with pytest.raises(TransportError, match="boom"):
        flights.run("k", failing)
    assert flights.run("k", lambda: 7) == 7  # the key is free again


def test_async_single_flight_a_cancelled_leader_hands_over() -> None:
    async def scenario() -> tuple[list[int | None], int]:
        flights: AsyncSingleFlight[int] = AsyncSingleFlight()
        runs = 0
        gate = asyncio.Event()

        async def work() -> int:
            nonlocal runs
            runs += 1
            await gate.wait()
            return runs

        leader = asyncio.create_task(flights.run("k", work))
        await asyncio.sleep(0)
        waiters = [asyncio.create_task(flights.run("k", work)) for _ in range(4)]
        await asyncio.sleep(0)
        assert await flights.run("k", work, wait=False) is None
        leader.cancel()
        await asyncio.sleep(0.01)
        gate.set()
        results = await asyncio.gather(*waiters)
        with pytest.raises(asyncio.CancelledError):
            await leader
        return list(results), runs

    results, runs = asyncio.run(scenario())
    # The waiters were not cancelled with the leader: one of them ran the work again.
    assert results == [2, 2, 2, 2]
    assert runs == 2


def test_async_single_flight_a_waiter_cancelled_with_the_leader_stops_too() -> None:
    async def scenario() -> tuple[bool, int]:
        flights: AsyncSingleFlight[str] = AsyncSingleFlight()
        runs = 0

        async def work() -> str:
            nonlocal runs
            runs += 1
            await asyncio.sleep(0.5)
            return "token"

        leader = asyncio.create_task(flights.run("k", work))
        await asyncio.sleep(0)
        waiter = asyncio.create_task(flights.run("k", work))
        await asyncio.sleep(0.01)
        leader.cancel()
        waiter.cancel()  # as a TaskGroup or a shutdown cancels both in one step
        await asyncio.gather(leader, waiter, return_exceptions=True)
        return waiter.cancelled(), runs

    cancelled, runs = asyncio.run(scenario())
    assert cancelled
    assert runs == 1  # the cancelled waiter did not start the work again


def test_an_abandoned_flow_releases_the_store_lock_at_once(rsa_cert: Certificate) -> None:
    store = RecordingStore()
    planner = _planner(rsa_cert, Clock(), store=store)
    flow = planner.fetch(planner.key_for((SCOPE,)), (SCOPE,), force=False)
    action = flow.send(None)
    action = flow.send(action.function(*action.args))  # nothing stored: asks for the lock
    action = flow.send(action.function(*action.args))  # lock taken, asks to read again
    assert store.calls == ["get", "lock"]
    flow.close()  # the driver's task was destroyed: no more actions can be performed
    assert store.calls == ["get", "lock", "unlock"]


class TimedLockStore(RecordingStore):
    """A store whose ``lock`` takes the optional ``timeout`` keyword."""

    def __init__(self) -> None:
        super().__init__()
        self.timeouts: list[float | None] = []

    def lock(self, key: str, *, timeout: float | None = None) -> Any:
        self.timeouts.append(timeout)
        return super().lock(key)


def _lock_call(planner: Planner) -> None:
    flow = planner.fetch(planner.key_for((SCOPE,)), (SCOPE,), force=False)
    action = flow.send(None)
    assert isinstance(action, Call)
    action = flow.send(action.function(*action.args))  # the first read: nothing there
    assert isinstance(action, Call)
    action.function(*action.args)  # the lock: what the shell would run


def test_the_lock_wait_follows_the_credentials_timeout_where_the_store_takes_it(
    rsa_cert: Certificate,
) -> None:
    timed = TimedLockStore()
    _lock_call(_planner(rsa_cert, Clock(), store=timed, timeout=2.5))
    assert timed.timeouts == [2.5]
    assert timed.calls == ["get", "lock"]
    # A store written before the keyword existed is called as before (no TypeError, so no
    # "store failed" fallback either).
    old = RecordingStore()
    planner = _planner(rsa_cert, Clock(), store=old, timeout=2.5)
    _lock_call(planner)
    assert old.calls == ["get", "lock"]
    assert planner._store_failed is False


def test_a_dpop_bound_token_is_cached_under_its_keys_thumbprint(rsa_cert: Certificate) -> None:
    # RFC 9449 section 6.1: a token is bound to one key; a credential holding another (or
    # none) must never be served it, whatever store the keys end up in.
    from certauth.credential.dpop_binding import DPoPBinding
    from certauth.credential.planner import Call as Options
    from certauth.dpop import DPoPKey

    clock = Clock()
    plain = _planner(rsa_cert, clock)
    bound = [_planner(rsa_cert, clock, dpop=DPoPBinding(DPoPKey.generate(), clock)) for _ in "ab"]
    keys = [planner.key_for((SCOPE,)) for planner in (plain, *bound)]
    assert len(set(keys)) == 3
    for planner, key in zip(bound, keys[1:], strict=True):
        assert planner.dpop is not None
        assert (
            key.split("\x1f")[0] == f"{AUTHORITY.token_endpoint}#dpop={planner.dpop.key.thumbprint}"
        )
    # CAE tokens still live apart from the others, for a DPoP credential too.
    assert bound[0].key_for((SCOPE,), Options.of(enable_cae=True)) not in keys
