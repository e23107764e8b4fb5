"""Fault injection, request counting and the controllable clock."""

from __future__ import annotations

import datetime as dt
import threading
import time

import httpx
import pytest
from _emulator_helpers import (
    CLIENT_ID,
    assert_entra_error,
    assertion_form,
    claims_of,
    make_assertion,
    secret_form,
)

from certauth.certificates import Certificate
from certauth.emulator import Emulator, RequestHold
from certauth.errors import InvalidArgumentError


def _token_request(tenant: Emulator, http: httpx.Client, cert: Certificate) -> httpx.Response:
    form = assertion_form(make_assertion(cert, tenant.token_endpoint, now=tenant.clock.time()))
    return http.post(tenant.token_endpoint, data=form)


def test_429_with_retry_after_for_the_next_n_requests(
    emulator: Emulator, http: httpx.Client, rsa_cert: Certificate
) -> None:
    emulator.inject_faults(status=429, retry_after=2, count=2)
    for _ in range(2):
        response = _token_request(emulator, http, rsa_cert)
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "2"
        assert response.json()["error"] == "temporarily_unavailable"
    assert _token_request(emulator, http, rsa_cert).status_code == 200
    assert emulator.request_count == 3
    assert emulator.reset_request_count() == 3
    assert emulator.request_count == 0


def test_discovery_is_not_affected_by_faults(emulator: Emulator, http: httpx.Client) -> None:
    emulator.inject_faults(status=503)
    assert http.get(emulator.openid_configuration_url).status_code == 200
    assert emulator.request_count == 0


def test_503_html_and_delay(emulator: Emulator, http: httpx.Client, rsa_cert: Certificate) -> None:
    emulator.inject_faults(status=503)
    assert _token_request(emulator, http, rsa_cert).status_code == 503
    emulator.inject_faults(html=True)  # a captive portal: 200 with a web page
    page = _token_request(emulator, http, rsa_cert)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.text.startswith("<!DOCTYPE html>")
    emulator.inject_faults(status=502, html=True)
    assert _token_request(emulator, http, rsa_cert).status_code == 502
    emulator.inject_faults(delay=0.3)
    started = time.monotonic()
    assert _token_request(emulator, http, rsa_cert).status_code == 200
    assert time.monotonic() - started >= 0.3
    emulator.inject_faults(status=500, count=5)
    emulator.clear_faults()
    assert _token_request(emulator, http, rsa_cert).status_code == 200


def _in_thread(tenant: Emulator, cert: Certificate) -> tuple[threading.Thread, list[object]]:
    """A token request sent from a thread of its own: the thread and, once answered, its
    status (or the exception) in the list."""
    answer: list[object] = []

    def send() -> None:
        try:
            with httpx.Client(timeout=30) as client:
                answer.append(_token_request(tenant, client, cert).status_code)
        except httpx.HTTPError as exc:
            answer.append(exc)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread, answer


def test_a_hold_keeps_requests_unanswered_until_released_oldest_first(
    emulator: Emulator, http: httpx.Client, rsa_cert: Certificate
) -> None:
    hold = RequestHold()
    emulator.inject_faults(status=503, count=2, hold=hold)
    first, first_answer = _in_thread(emulator, rsa_cert)
    hold.wait_for_arrivals(1)
    second, second_answer = _in_thread(emulator, rsa_cert)
    hold.wait_for_arrivals(2)
    assert emulator.request_count == 2
    assert first_answer == second_answer == []
    hold.release()
    first.join(30)
    assert first_answer == [503]  # held, then the rest of the plan
    assert second_answer == []  # still held: released ones go in the order they arrived
    hold.release()
    second.join(30)
    assert second_answer == [503]
    assert _token_request(emulator, http, rsa_cert).status_code == 200  # the plan is used up
    assert hold.arrived == 2
    with pytest.raises(TimeoutError, match="2 of 3 token requests reached the hold"):
        hold.wait_for_arrivals(3, timeout=0.01)
    with pytest.raises(InvalidArgumentError, match="count must be at least 1"):
        hold.release(0)


def test_a_stopping_emulator_lets_its_held_requests_go(rsa_cert: Certificate) -> None:
    hold = RequestHold()
    before = set(threading.enumerate())
    with Emulator() as tenant:
        tenant.register(CLIENT_ID, rsa_cert)
        tenant.inject_faults(hold=hold)
        client, _ = _in_thread(tenant, rsa_cert)
        hold.wait_for_arrivals(1)
        started = set(threading.enumerate()) - before - {client}
    # The server's threads, the held request's among them, end: none waits for a release.
    for thread in started:
        thread.join(30)
    assert [t.name for t in started if t.is_alive()] == []


def test_fault_arguments_are_checked(emulator: Emulator) -> None:
    with pytest.raises(InvalidArgumentError, match="count must be at least 1"):
        emulator.inject_faults(status=429, count=0)
    with pytest.raises(InvalidArgumentError, match="status 1000 is not an HTTP status"):
        emulator.inject_faults(status=1000)


@pytest.mark.slow
def test_request_count_is_exact_under_concurrency(
    emulator: Emulator, rsa_cert: Certificate
) -> None:
    emulator.register_secret(CLIENT_ID, "s")
    errors: list[int] = []

    def worker() -> None:
        with httpx.Client() as client:
            for _ in range(20):
                status = client.post(emulator.token_endpoint, data=secret_form("s")).status_code
                if status != 200:
                    errors.append(status)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert emulator.request_count == 160


def test_clock_advance_expires_certificates_and_secrets(
    emulator: Emulator, http: httpx.Client, rsa_cert: Certificate
) -> None:
    emulator.register_secret(
        CLIENT_ID, "s", expires=dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=30)
    )
    assert _token_request(emulator, http, rsa_cert).status_code == 200
    emulator.clock.advance(400 * 86400)  # past the certificate's one-year validity
    assert_entra_error(_token_request(emulator, http, rsa_cert), 1000502, status=401)
    assert_entra_error(http.post(emulator.token_endpoint, data=secret_form("s")), 7000222)
    emulator.clock.reset()
    assert _token_request(emulator, http, rsa_cert).status_code == 200


def test_clock_set_and_tokens_follow_it(
    emulator: Emulator, http: httpx.Client, rsa_cert: Certificate
) -> None:
    when = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=3)
    emulator.clock.set(when)
    assert abs(emulator.clock.now() - when) < dt.timedelta(seconds=2)
    token = _token_request(emulator, http, rsa_cert).json()["access_token"]
    exp = claims_of(token)["exp"]
    assert abs(exp - (when.timestamp() + 3599)) < 3


def test_custom_body_fault(emulator: Emulator, http: httpx.Client, rsa_cert: Certificate) -> None:
    emulator.inject_faults(body=b'{"token_type": "Bearer"}')  # a 2xx that is not a token response
    response = _token_request(emulator, http, rsa_cert)
    assert response.status_code == 200
    assert response.json() == {"token_type": "Bearer"}
    assert "access_token" in _token_request(emulator, http, rsa_cert).json()
