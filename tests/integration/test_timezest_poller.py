"""The TimeZest poller against the TimeZest sandbox: one event per change, nothing duplicated or missed."""

from __future__ import annotations

import httpx
import pytest
from sqlmodel import col, select

from connectors.timezest.client import RateLimiter, TimezestClient
from pipelines.audit import InboundEvent, PollRun
from pipelines.db import session_scope
from pipelines.timezest_poll import poll_once
from sandboxes.timezest.app import TimezestSandboxState
from workers.settings import SANDBOX_TIMEZEST_API_KEY


class Queue(list[int]):
    def __call__(self, event_id: int) -> None:
        self.append(event_id)


def tz_client(url: str, key: str = SANDBOX_TIMEZEST_API_KEY) -> TimezestClient:
    return TimezestClient(api_key=key, base_url=f"{url}/v1", max_attempts=1, sleep=lambda _s: None)


def events(db: str) -> list[InboundEvent]:
    with session_scope(db) as s:
        return list(s.exec(select(InboundEvent).order_by(col(InboundEvent.id))).all())


def test_new_sent_scheduled_across_polls(db_url: str, timezest: tuple[str, TimezestSandboxState]) -> None:
    url, tz = timezest
    req = tz.create({"ticket_id": 50004})
    client, queue = tz_client(url), Queue()
    assert poll_once(db_url, client, queue).emitted == []  # new: nothing to say yet
    tz.transition(req["id"], "sent")
    assert len(poll_once(db_url, client, queue).emitted or []) == 1
    tz.transition(req["id"], "scheduled")
    assert len(poll_once(db_url, client, queue).emitted or []) == 1
    assert poll_once(db_url, client, queue).emitted == []  # nothing changed, nothing emitted
    rows = events(db_url)
    assert [(r.event_type, r.external_id, r.ticket_id) for r in rows] == [
        ("timezest.link_sent", f"{req['id']}:sent", 50004),
        ("timezest.scheduled", f"{req['id']}:scheduled", 50004),
    ]
    assert queue == [r.id for r in rows]


def test_sent_to_scheduled_between_polls_emits_only_scheduled(
    db_url: str, timezest: tuple[str, TimezestSandboxState]
) -> None:
    url, tz = timezest
    req = tz.create({"ticket_id": 50004})
    client, queue = tz_client(url), Queue()
    poll_once(db_url, client, queue)
    tz.transition(req["id"], "sent")
    tz.transition(req["id"], "scheduled")
    poll_once(db_url, client, queue)
    assert [r.event_type for r in events(db_url)] == ["timezest.scheduled"]


def test_first_seen_already_scheduled_emits_only_scheduled(
    db_url: str, timezest: tuple[str, TimezestSandboxState]
) -> None:
    url, tz = timezest
    req = tz.create({"ticket_id": 50005})
    tz.transition(req["id"], "sent")
    tz.transition(req["id"], "scheduled")
    poll_once(db_url, tz_client(url), Queue())
    assert [r.event_type for r in events(db_url)] == ["timezest.scheduled"]


def test_request_without_ticket_is_ignored_with_reason(db_url: str, timezest: tuple[str, TimezestSandboxState]) -> None:
    url, tz = timezest
    req = tz.create({"associated_entities": [{"type": "autotask/company", "id": 1}]})
    tz.transition(req["id"], "sent")
    queue = Queue()
    poll_once(db_url, tz_client(url), queue)
    (row,) = events(db_url)
    assert (row.state, row.reason) == ("ignored", "no-autotask-ticket")
    assert queue == []


def test_paging_follows_next_page(db_url: str, timezest: tuple[str, TimezestSandboxState]) -> None:
    url, tz = timezest
    ids = [tz.create({"ticket_id": 50001})["id"] for _ in range(45)]
    for rid in ids:
        tz.transition(rid, "sent")
    result = poll_once(db_url, tz_client(url), Queue())
    assert result.seen == 45 and len(result.emitted or []) == 45
    # Two listings, each 20 + 20 + 5: the new requests, then the watched ones (all changed just now).
    assert tz.calls["GET /v1/scheduling_requests"] == 6


def test_failed_poll_is_recorded_and_the_next_catches_up(
    db_url: str, timezest: tuple[str, TimezestSandboxState]
) -> None:
    url, tz = timezest
    req = tz.create({"ticket_id": 50004})
    poll_once(db_url, tz_client(url), Queue())
    tz.transition(req["id"], "sent")
    bad = poll_once(db_url, tz_client(url, key="wrong-key"), Queue())
    assert bad.outcome == "failed" and bad.error is not None and "401" in bad.error
    tz.script = [{"status": 503, "count": 1}]
    down = poll_once(db_url, tz_client(url), Queue())
    assert down.outcome == "failed"
    good = poll_once(db_url, tz_client(url), Queue())
    assert good.outcome == "ok" and len(good.emitted or []) == 1
    with session_scope(db_url) as s:
        polls = list(s.exec(select(PollRun).order_by(col(PollRun.id))).all())
    assert [p.outcome for p in polls] == ["ok", "failed", "failed", "ok"]
    assert "TimezestAuthError" in (polls[1].error or "")


def test_429_retry_after_is_honoured(timezest: tuple[str, TimezestSandboxState]) -> None:
    url, tz = timezest
    tz.create({"ticket_id": 50004})
    sleeps: list[float] = []
    client = TimezestClient(api_key=SANDBOX_TIMEZEST_API_KEY, base_url=f"{url}/v1", max_attempts=2,
                            sleep=sleeps.append)
    tz.script = [{"status": 429, "retry_after": 4, "count": 1}]
    assert len(list(client.scheduling_requests())) == 1
    assert sleeps == [4.0]


def test_rate_limiter_waits_rather_than_exceeding() -> None:
    now = {"t": 0.0}
    waits: list[float] = []

    def fake_sleep(seconds: float) -> None:
        waits.append(seconds)
        now["t"] += seconds

    import connectors.timezest.client as mod

    limiter = RateLimiter(limit=3, window=60.0, sleep=fake_sleep)
    original = mod.time.monotonic
    mod.time.monotonic = lambda: now["t"]  # type: ignore[assignment]
    try:
        for _ in range(4):
            limiter.acquire()
    finally:
        mod.time.monotonic = original  # type: ignore[assignment]
    assert waits == [60.0]


def test_api_key_never_reaches_the_audit_log(db_url: str, timezest: tuple[str, TimezestSandboxState]) -> None:
    url, tz = timezest
    tz.transition(tz.create({"ticket_id": 50004})["id"], "sent")
    poll_once(db_url, tz_client(url), Queue())
    for row in events(db_url):
        assert SANDBOX_TIMEZEST_API_KEY.encode() not in row.body
        assert SANDBOX_TIMEZEST_API_KEY not in str(row.headers)


@pytest.mark.parametrize("page", ["absolute", "query-only"])
def test_next_page_forms(page: str, timezest: tuple[str, TimezestSandboxState]) -> None:
    url, _ = timezest
    client = tz_client(url)
    nxt = f"{url}/v1/scheduling_requests?starting_after=x" if page == "absolute" else "?starting_after=x"
    assert httpx.URL(client._next_url(nxt)).path == "/v1/scheduling_requests"


# ---- issue 11 item 4: cancellations and reschedules of bookings made long ago -------------------------

def _booked_long_ago(tz: TimezestSandboxState, ticket_id: int, days: int = 2) -> str:
    """A request created ``days`` ago and booked, with two newer requests after it: the newest-first
    listing stops (high-water mark less an hour) before reaching it."""
    rid = str(tz.create({"ticket_id": ticket_id})["id"])
    tz.transition(rid, "sent")
    tz.transition(rid, "scheduled")
    tz.requests[rid]["created_at"] -= days * 86400
    for age in (86400, 0):
        other = tz.create({"associated_entities": []})
        other["created_at"] -= age
    return rid


def _types(db: str) -> list[tuple[str, str]]:
    return [(r.event_type, r.external_id) for r in events(db)]


def test_cancel_of_a_booking_made_days_ago_is_seen(db_url: str, timezest: tuple[str, TimezestSandboxState]) -> None:
    url, tz = timezest
    rid = _booked_long_ago(tz, 50004)
    client, queue = tz_client(url), Queue()
    poll_once(db_url, client, queue)
    assert _types(db_url) == [("timezest.scheduled", f"{rid}:scheduled")]
    tz.transition(rid, "cancelled")
    assert len(poll_once(db_url, client, queue).emitted or []) == 1
    assert _types(db_url)[-1] == ("timezest.cancelled", f"{rid}:cancelled")
    assert poll_once(db_url, client, queue).emitted == []


def test_reschedule_emits_one_event_per_move(db_url: str, timezest: tuple[str, TimezestSandboxState]) -> None:
    url, tz = timezest
    rid = _booked_long_ago(tz, 50004)
    client, queue = tz_client(url), Queue()
    poll_once(db_url, client, queue)
    first = dict(tz.reschedule(rid, shift_seconds=3600))  # a copy: the sandbox returns its live record
    assert len(poll_once(db_url, client, queue).emitted or []) == 1
    assert poll_once(db_url, client, queue).emitted == []  # the same move is not reported twice
    back = dict(tz.reschedule(rid, shift_seconds=-3600))  # moved back to the first time: still a move
    assert len(poll_once(db_url, client, queue).emitted or []) == 1
    assert _types(db_url) == [
        ("timezest.scheduled", f"{rid}:scheduled"),
        ("timezest.rescheduled", f"{rid}:rescheduled:{first['updated_at']}"),
        ("timezest.rescheduled", f"{rid}:rescheduled:{back['updated_at']}"),
    ]
    row = events(db_url)[1]
    assert row.ticket_id == 50004 and row.occurred_at is not None
    assert int(row.occurred_at.timestamp()) == first["updated_at"]  # the move's time, not the booking's


def test_refused_watch_filter_falls_back_to_reading_each_watched_request(
    db_url: str, timezest: tuple[str, TimezestSandboxState]
) -> None:
    url, tz = timezest
    tz.tql_reject = {"updated_at"}  # TimeZest's updated_at filtering is not documented, so the poller must cope without it
    rid = _booked_long_ago(tz, 50004)
    client, queue = tz_client(url), Queue()
    assert poll_once(db_url, client, queue).outcome == "ok"
    tz.reschedule(rid)
    poll_once(db_url, client, queue)
    tz.transition(rid, "cancelled")
    result = poll_once(db_url, client, queue)
    assert result.outcome == "ok"
    assert [t for t, _ in _types(db_url)] == ["timezest.scheduled", "timezest.rescheduled", "timezest.cancelled"]
    assert tz.calls["GET /v1/scheduling_requests/{id}"] >= 2  # read one by one


def test_ignored_watch_filter_still_sees_the_cancel(db_url: str, timezest: tuple[str, TimezestSandboxState]) -> None:
    url, tz = timezest
    tz.tql_ignore = {"updated_at"}  # a filter TimeZest silently drops matches everything: more pages, same events
    rid = _booked_long_ago(tz, 50004)
    client, queue = tz_client(url), Queue()
    poll_once(db_url, client, queue)
    tz.transition(rid, "cancelled")
    poll_once(db_url, client, queue)
    assert [t for t, _ in _types(db_url)] == ["timezest.scheduled", "timezest.cancelled"]
