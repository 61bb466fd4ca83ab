"""Contract tests: the TimeZest client against recorded exchanges (replayed, key filtered)."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.timezest.client import TimezestAuthError, TimezestClient, TimezestUnavailable
from tests.cassettes.record_timezest import BASE_URL, HERE, ORIGIN, SANDBOX_HOST, cassette_vcr
from tests.contract.origin import assert_recorded_from_sandbox
from workers.settings import SANDBOX_TIMEZEST_API_KEY

REPLAY = cassette_vcr("none")


def make(attempts: int = 1, sleeps: list[float] | None = None, key: str = SANDBOX_TIMEZEST_API_KEY) -> TimezestClient:
    return TimezestClient(api_key=key, base_url=BASE_URL, max_attempts=attempts,
                          sleep=sleeps.append if sleeps is not None else (lambda _s: None))


def test_listing_follows_next_page_newest_first() -> None:
    with REPLAY.use_cassette("list_paged.yaml") as cassette:
        requests = list(make().scheduling_requests())
        assert cassette.all_played and cassette.play_count == 3  # 20 + 20 + 5
    assert len(requests) == 45
    assert [r.created_at for r in requests] == sorted((r.created_at for r in requests), reverse=True)
    scheduled = next(r for r in requests if r.status == "scheduled")
    assert scheduled.autotask_ticket is not None and scheduled.autotask_ticket.id == 50002
    assert scheduled.scheduled_agents and scheduled.selected_time_zone == "Eastern Time (US & Canada)"
    assert {r.status for r in requests} == {"new", "sent", "scheduled"}


def test_get_one() -> None:
    with REPLAY.use_cassette("get_one.yaml"):
        req = make().scheduling_request("sreq_SBX000002")
    assert req.status == "scheduled" and req.changed_at().tzinfo is not None


def test_bad_key_is_an_auth_error() -> None:
    with REPLAY.use_cassette("unauthorized.yaml"), pytest.raises(TimezestAuthError, match="401"):
        list(make(key="wrong", attempts=3).scheduling_requests())


def test_429_honours_retry_after() -> None:
    sleeps: list[float] = []
    with REPLAY.use_cassette("rate_limited.yaml"):
        req = make(attempts=2, sleeps=sleeps).scheduling_request("sreq_SBX000001")
    assert req.status == "sent" and sleeps == [5.0]
    with REPLAY.use_cassette("rate_limited.yaml", allow_playback_repeats=False), \
            pytest.raises(TimezestUnavailable) as exc:
        make(attempts=1).scheduling_request("sreq_SBX000001")
    assert exc.value.retry_after == 5.0


def test_cassettes_hold_no_key() -> None:
    for path in Path(HERE).glob("*.yaml"):
        text = path.read_text()
        assert SANDBOX_TIMEZEST_API_KEY not in text and "Bearer" not in text and "127.0.0.1" not in text


def test_cassettes_say_they_come_from_the_sandbox() -> None:
    """A recording names its origin: atrelay's TimeZest sandbox, never dressed up as api.timezest.com."""
    assert_recorded_from_sandbox(HERE, origin=ORIGIN, sandbox_host=SANDBOX_HOST, real_host="api.timezest.com")
