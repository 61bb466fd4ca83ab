"""Contract tests: the client against recorded Autotask exchanges (replayed, never live).

Error classification case by case: not found, auth, validation 500, thread threshold, 429 with and
without Retry-After, lock contention, outage. Timeouts are shown against the live sandbox below,
since a cassette cannot record the absence of an answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import vcr.errors

from connectors.autotask import errors as E
from connectors.autotask.client import Attempt, AutotaskClient
from connectors.autotask.picklists import Picklists
from tests.cassettes.record_autotask import BASE_URL, HERE, ORIGIN, SANDBOX_HOST, ZONE_URL, cassette_vcr
from tests.contract.origin import assert_recorded_from_sandbox
from workers.settings import SANDBOX_AUTOTASK_CREDENTIALS

REPLAY = cassette_vcr("none")


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def make(max_attempts: int = 1, sleeps: Sleeps | None = None, attempts: list[Attempt] | None = None,
         base_url: str | None = BASE_URL) -> AutotaskClient:
    c = SANDBOX_AUTOTASK_CREDENTIALS
    return AutotaskClient(username=c["username"], secret=c["secret"], integration_code=c["integration_code"],
                          base_url=base_url, zone_url=ZONE_URL, max_attempts=max_attempts,
                          sleep=sleeps if sleeps is not None else (lambda _s: None),
                          on_attempt=attempts.append if attempts is not None else None)


@pytest.fixture(autouse=True)
def _fresh_zone_cache() -> Iterator[None]:
    from connectors.autotask import client as client_module

    client_module._zone_cache.clear()
    yield
    client_module._zone_cache.clear()


def test_happy_path_zone_lookup_tickets_picklists_patch_and_note() -> None:
    attempts: list[Attempt] = []
    with REPLAY.use_cassette("happy_path.yaml") as cassette:
        client = make(attempts=attempts, base_url=None)
        ticket = client.find_ticket_by_number("T20261126.0001")
        assert client.base_url == BASE_URL
        assert (ticket.id, ticket.status) == (50001, 1)
        assert client.get_ticket(50001).ticket_number == "T20261126.0001"
        lists = Picklists.load(client)
        assert lists.status_id("Received Form Response") == 29682844
        assert lists.note_settings(None, None) == (2, 1)  # the picklists' defaults
        assert lists.note_settings("Task Notes", "Internal Only") == (3, 2)
        assert client.set_ticket_status(50001, 29682844) == 50001
        note_id = client.add_ticket_note(50001, title="Status set to Received Form Response (webform)",
                                         description="atrelay changed the ticket status. [atrelay:event:1]",
                                         note_type=2, publish=1)
        assert client.find_ticket_notes(50001, containing="[atrelay:event:1]")[0].id == note_id
        assert client.threshold_information().external_request_threshold == 10000
        assert cassette.all_played
    methods = [(a.method, a.path.split("/V1.0/")[-1]) for a in attempts]
    assert ("PATCH", "Tickets") in methods and ("PUT", "Tickets") not in methods
    patch = next(r for r in cassette.requests if r.method == "PATCH")
    assert patch.body == b'{"id":50001,"status":29682844}'


@pytest.mark.parametrize(
    ("cassette", "call", "expected", "reason"),
    [
        ("not_found_by_id.yaml", lambda c: c.get_ticket(1), E.TicketNotFound, "ticket-not-found"),
        ("not_found_by_number.yaml", lambda c: c.find_ticket_by_number("T19990101.0001"), E.TicketNotFound,
         "ticket-not-found"),
        ("validation_500.yaml", lambda c: c.set_ticket_status(50001, 424242), E.RejectedError,
         "autotask-rejected: Value 424242 is not a valid value for field status."),
    ],
)
def test_permanent_errors(cassette: str, call: object, expected: type[E.AutotaskError], reason: str) -> None:
    attempts: list[Attempt] = []
    with REPLAY.use_cassette(cassette):
        client = make(max_attempts=3, attempts=attempts)
        with pytest.raises(expected) as exc:
            call(client)  # type: ignore[operator]
    assert not exc.value.retryable
    assert exc.value.reason.startswith(reason)
    assert len(attempts) == 1  # permanent: never retried


def test_auth_error_is_permanent() -> None:
    c = SANDBOX_AUTOTASK_CREDENTIALS
    with REPLAY.use_cassette("auth_401.yaml"):
        client = AutotaskClient(username=c["username"], secret="wrong", integration_code=c["integration_code"],
                                base_url=BASE_URL, zone_url=ZONE_URL, max_attempts=3)
        with pytest.raises(E.AuthError) as exc:
            client.get_ticket(50001)
    assert exc.value.status_code == 401 and not exc.value.retryable


@pytest.mark.parametrize(
    ("cassette", "expected", "retry_after"),
    [
        ("thread_threshold.yaml", E.ThreadThresholdExceeded, None),
        ("rate_limited_retry_after.yaml", E.RateLimited, 7.0),
        ("rate_limited_no_retry_after.yaml", E.RateLimited, None),
        ("lock_500.yaml", E.LockContention, None),
        ("outage_503.yaml", E.ServiceUnavailable, None),
    ],
)
def test_retryable_errors_are_classified(cassette: str, expected: type[E.RetryableError],
                                         retry_after: float | None) -> None:
    with REPLAY.use_cassette(cassette, allow_playback_repeats=False), pytest.raises(expected) as exc:
        make(max_attempts=1).get_ticket(50001)
    assert exc.value.retryable
    assert exc.value.retry_after == retry_after


@pytest.mark.parametrize(
    ("cassette", "honours"),
    [("rate_limited_retry_after.yaml", 7.0), ("rate_limited_no_retry_after.yaml", None),
     ("thread_threshold.yaml", None), ("outage_503.yaml", None)],
)
def test_retryable_errors_are_retried_with_backoff(cassette: str, honours: float | None) -> None:
    sleeps = Sleeps()
    with REPLAY.use_cassette(cassette) as played:
        ticket = make(max_attempts=2, sleeps=sleeps).get_ticket(50001)
        assert played.all_played
    assert ticket.id == 50001
    assert len(sleeps) == 1
    if honours is not None:
        assert sleeps[0] == honours  # Retry-After, exactly
    else:
        assert 0 <= sleeps[0] <= 8.0  # exponential backoff with jitter, capped


def test_long_retry_after_is_not_waited_out_in_the_call() -> None:
    """A Retry-After beyond the in-call budget is raised, so the task is rescheduled instead."""
    sleeps = Sleeps()
    with REPLAY.use_cassette("rate_limited_retry_after.yaml"):
        client = make(max_attempts=3, sleeps=sleeps)
        client._max_backoff = 3.0  # 7 s > 2 x 3 s
        with pytest.raises(E.RateLimited):
            client.get_ticket(50001)
    assert sleeps == []


def test_cassettes_hold_no_credentials() -> None:
    c = SANDBOX_AUTOTASK_CREDENTIALS
    for path in Path(HERE).glob("*.yaml"):
        text = path.read_text()
        for value in (c["username"], c["secret"], c["integration_code"], "127.0.0.1"):
            assert value not in text, f"{path.name} contains {value!r}"


def test_cassettes_say_they_come_from_the_sandbox() -> None:
    """A recording names its origin: atrelay's sandbox, never dressed up as Autotask's hosts."""
    assert_recorded_from_sandbox(HERE, origin=ORIGIN, sandbox_host=SANDBOX_HOST, real_host="autotask.net")


def test_unrecorded_request_is_refused() -> None:
    with REPLAY.use_cassette("not_found_by_id.yaml"), pytest.raises(vcr.errors.CannotOverwriteExistingCassetteException):
        make().get_ticket(2)


def test_timeout_is_retryable_transport_error(autotask: tuple[str, object]) -> None:
    url, state = autotask
    state.latency_ms = 500  # type: ignore[attr-defined]
    c = SANDBOX_AUTOTASK_CREDENTIALS
    client = AutotaskClient(username=c["username"], secret=c["secret"], integration_code=c["integration_code"],
                            base_url=f"{url}/atservicesrest", zone_url="unused", timeout=0.1, max_attempts=1)
    with pytest.raises(E.TransportError) as exc:
        client.get_ticket(50001)
    assert exc.value.retryable and "timed out" in str(exc.value)
