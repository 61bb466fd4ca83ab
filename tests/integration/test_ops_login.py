"""Signing in to the dashboard: failed sign-ins are logged (never the value) and slow their address down;
the right token is never locked out; a guessable admin token is refused at start-up.

Issue 19.5 replaced "10 failures: 429 for everyone behind the address, the right token included" (which
let anyone sharing or spoofing the address keep the admin out) with an exponential delay per address.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from workers.http import ops_throttle
from workers.http.ingress import create_app
from workers.http.ops import DEVICE_COOKIE
from workers.settings import SettingsError, load_settings

TOKEN = "a-dashboard-token-of-enough-length"


@pytest.fixture
def client(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> TestClient:
    monkeypatch.setenv("ATRELAY_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("ATRELAY_ADMIN_TOKEN", TOKEN)
    return TestClient(create_app(load_settings(), enqueue=lambda _i: None))


def test_wrong_tokens_are_logged_then_slowed_exponentially(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="atrelay.ops")
    extra = 4
    with client:
        page = client.get("/ops/login")
        assert page.status_code in (200, 401) and "token" in page.text  # the sign-in form
        answered = []  # when each answer arrived
        for _ in range(ops_throttle.FREE + extra):
            answer = client.post("/ops/login", data={"token": "wrong-guess-000"}, follow_redirects=False)
            answered.append(time.monotonic())
            assert answer.status_code == 401
    # The free attempts are checked at once; then each attempt is checked only a turn after the previous
    # failure, twice as long each time: the answers are at least that far apart (a busy machine only
    # spaces them more), and the throttle logs each wait (the turn less the time the client took to ask).
    expected = [ops_throttle.delay_after(ops_throttle.FREE + k) for k in range(1, extra)]
    gaps = [answered[ops_throttle.FREE + k] - answered[ops_throttle.FREE + k - 1] for k in range(1, extra)]
    assert all(gap >= turn * 0.9 for gap, turn in zip(gaps, expected, strict=True)), (gaps, expected)
    waited = [r.__dict__["waited_seconds"] for r in caplog.records if r.getMessage() == "ops.login.throttled"]
    assert len(waited) == extra - 1 and all(0 < w <= turn + 0.01 for w, turn in zip(waited, expected, strict=True))
    failed = [r for r in caplog.records if r.getMessage() == "ops.login.failed"]
    assert len(failed) == ops_throttle.FREE + extra
    assert all("wrong-guess-000" not in str(r.__dict__) for r in caplog.records)


def test_the_right_token_still_signs_in_after_many_failures(client: TestClient,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """Before issue 19.5: 10 failures from an address and the right token got 429 for a minute."""
    caplog.set_level(logging.INFO, logger="atrelay.ops")
    with client:
        for _ in range(10):
            client.post("/ops/login", data={"token": "wrong-guess-000"}, follow_redirects=False)
        last_failure = time.monotonic()
        answer = client.post("/ops/login", data={"token": TOKEN}, follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"] == "/ops", answer.status_code
        # It waited its turn (a turn after the last failure), and then it was let in, not refused.
        assert time.monotonic() - last_failure >= ops_throttle.delay_after(10) * 0.9
        assert client.get("/ops").status_code == 200  # the session works
        # A success clears the address: the next attempt is checked at once (no turn to wait).
        caplog.clear()
        assert client.post("/ops/login", data={"token": "wrong"}, follow_redirects=False).status_code == 401
        assert not [r for r in caplog.records if r.getMessage() == "ops.login.throttled"]


def test_parallel_guesses_wait_in_one_line_and_a_full_line_is_429(client: TestClient) -> None:
    with client:
        for _ in range(ops_throttle.FREE + 3):
            client.post("/ops/login", data={"token": "wrong"}, follow_redirects=False)

        def guess(_: int) -> int:
            return client.post("/ops/login", data={"token": "wrong"}, follow_redirects=False).status_code

        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(guess, range(12)))
    # At most MAX_WAITING wait their turn (and are checked: 401); the others are told to come back later.
    assert answers.count(401) <= ops_throttle.MAX_WAITING + 1, answers
    assert answers.count(429) >= 12 - ops_throttle.MAX_WAITING - 1, answers


#: Each turn after the free attempts, while the line is full (long enough that none of the line is
#: checked before the admin's sign-in, short enough that the line drains soon after).
TURN = 1.5


def _short_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Turns of TURN seconds and a line of two, so the line drains soon after a test."""
    monkeypatch.setattr(ops_throttle, "BASE", TURN)
    monkeypatch.setattr(ops_throttle, "MAX_DELAY", TURN)
    monkeypatch.setattr(ops_throttle, "MAX_WAITING", 2)


def _signed_in_device(client: TestClient) -> str:
    """Sign in as the admin would in a browser; the device cookie it got (its session is forgotten)."""
    answer = client.post("/ops/login", data={"token": TOKEN}, follow_redirects=False)
    assert answer.status_code == 303
    device = str(answer.cookies[DEVICE_COOKIE])
    assert "httponly" in answer.headers["set-cookie"].lower()
    client.cookies.clear()
    return device


#: How long the flood goes on after ``then`` in :func:`_with_line_full`.
AFTER = 0.2


def _with_line_full(client: TestClient, then: Callable[[], None]) -> list[int]:
    """Run ``then`` while wrong guesses from the client's address, sent concurrently, keep its line full;
    return the answers to the guesses answered from the start of ``then`` to AFTER seconds after it."""
    for _ in range(ops_throttle.FREE + 1):  # the free attempts, then one more: the next waits a turn
        assert client.post("/ops/login", data={"token": "wrong"}, follow_redirects=False).status_code == 401
    stop, answers, full = threading.Event(), [], threading.Event()

    def guess() -> None:
        while not stop.is_set():
            status = client.post("/ops/login", data={"token": "wrong"}, follow_redirects=False).status_code
            answers.append((time.monotonic(), status))
            if status == 429:
                full.set()

    guessers = [threading.Thread(target=guess) for _ in range(ops_throttle.MAX_WAITING + 4)]
    for g in guessers:
        g.start()
    try:
        assert full.wait(10), answers  # the line is full: guesses are being refused unchecked
        began = time.monotonic()
        then()
        time.sleep(AFTER)  # the flood goes on after the admin's sign-in
        ended = time.monotonic()
    finally:
        stop.set()
        for g in guessers:
            g.join(30)
    return [status for at, status in answers if began <= at < ended]


def test_a_browser_that_signed_in_before_gets_in_while_guesses_fill_its_address_line(
        client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 19.5 asked that guesses from the admin's address never keep the admin out: with the address's
    line full, an attempt is refused unchecked. The device cookie gives the admin's browser its own line."""
    _short_line(monkeypatch)
    caplog.set_level(logging.INFO, logger="atrelay.ops")
    with client:
        admin = TestClient(client.app)  # another browser, behind the same address ("testclient")
        device = _signed_in_device(admin)
        seen: dict[str, float] = {}

        def admin_signs_in() -> None:
            started = time.monotonic()
            seen["without"] = admin.post("/ops/login", data={"token": TOKEN}, follow_redirects=False).status_code
            admin.cookies.set(DEVICE_COOKIE, device, path="/ops/login")
            answer = admin.post("/ops/login", data={"token": TOKEN}, follow_redirects=False)
            seen["with"], seen["took"] = answer.status_code, time.monotonic() - started
            seen["session works"] = admin.get("/ops").status_code

        answers = _with_line_full(client, admin_signs_in)
    # Without its device cookie the right token meets the full line, as before: 429, unchecked.
    assert seen["without"] == 429, seen
    # With it, it is checked at once (no turn of the address to wait) and let in.
    assert seen["with"] == 303 and seen["took"] < TURN and seen["session works"] == 200, seen
    # The guesses gained nothing from it: their line is still full (the admin's success cleared only
    # its device's line), none checked at once.
    assert 429 in answers and 401 not in answers, answers
    assert all(device not in r.getMessage() and device not in str(r.__dict__) for r in caplog.records)


def test_a_device_cookie_slows_wrong_tokens_and_a_forged_one_is_no_device(
        client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A device line is no oracle: wrong tokens sent with a device cookie wait their turns like any others;
    a cookie not signed with the admin token's key (or tampered) waits in its address's line."""
    caplog.set_level(logging.INFO, logger="atrelay.ops")
    with client:
        device = _signed_in_device(client)
        client.cookies.set(DEVICE_COOKIE, device, path="/ops/login")
        for _ in range(ops_throttle.FREE + 2):
            assert client.post("/ops/login", data={"token": "wrong"}, follow_redirects=False).status_code == 401
        waits = [r for r in caplog.records if r.getMessage() == "ops.login.throttled"]
        assert len(waits) == 1 and waits[0].__dict__["device"] is True  # its own line, throttled all the same

        _short_line(monkeypatch)
        issued, nonce, sig = device.split(".")
        forged = f"{issued}.{nonce}.{sig[:-1]}{'0' if sig[-1] != '0' else '1'}"
        seen: dict[str, int] = {}

        def forger_signs_in() -> None:
            client.cookies.set(DEVICE_COOKIE, forged, path="/ops/login")
            seen["forged"] = client.post("/ops/login", data={"token": TOKEN}, follow_redirects=False).status_code
            client.cookies.clear()

        client.cookies.clear()
        _with_line_full(client, forger_signs_in)
    assert seen["forged"] == 429  # treated as no device: the address's full line


@pytest.mark.parametrize("token", ["short", "x" * 19, "  padded-but-short   "])
def test_a_guessable_admin_token_is_refused(token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATRELAY_ADMIN_TOKEN", token)
    with pytest.raises(SettingsError, match="ATRELAY_ADMIN_TOKEN: must be at least 20 characters"):
        load_settings()


@pytest.mark.parametrize("value", ["proxy.example", "10.0.0.0/33", "10.0.0.1;10.0.0.2"])
def test_trusted_proxies_must_be_addresses(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATRELAY_TRUSTED_PROXIES", value)
    with pytest.raises(SettingsError, match=r"ATRELAY_TRUSTED_PROXIES: .* is not an IP address or network"):
        load_settings()


def test_trusted_proxies_become_uvicorns_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATRELAY_TRUSTED_PROXIES", "10.0.0.5, 192.168.0.0/16 ::1")
    assert load_settings().forwarded_allow_ips == ["10.0.0.5", "192.168.0.0/16", "::1"]
    monkeypatch.delenv("ATRELAY_TRUSTED_PROXIES")
    assert load_settings().forwarded_allow_ips == []
