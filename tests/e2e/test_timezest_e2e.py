"""TimeZest end to end: sandbox requests polled, events run by real workers on Redis + PostgreSQL."""

from __future__ import annotations

from sqlmodel import col, select

from connectors.timezest.client import TimezestClient
from connectors.timezest.sandbox import TimezestSandboxState
from pipelines.audit import EventState, InboundEvent
from pipelines.db import session_scope
from pipelines.timezest_poll import poll_once
from tests.stacks import Stack
from tests.support import sandbox_ticket, wait_for
from workers.settings import SANDBOX_TIMEZEST_API_KEY

SCHEDULING_LINK_SENT, SCHEDULED = 29682835, 29682839


def _poll(dist: Stack, url: str) -> list[int]:
    client = TimezestClient(api_key=SANDBOX_TIMEZEST_API_KEY, base_url=f"{url}/v1", max_attempts=1)
    try:
        result = poll_once(dist.db, client, dist.enqueue)
    finally:
        client.close()
    assert result.outcome == "ok", result.error
    return result.emitted or []


def _settled(dist: Stack) -> list[InboundEvent]:
    def all_final() -> list[InboundEvent] | None:
        with session_scope(dist.db) as s:
            rows = list(s.exec(select(InboundEvent).order_by(col(InboundEvent.id))).all())
        return rows if rows and all(EventState(r.state).final for r in rows) else None

    return wait_for(all_final, timeout=60, what="every event to finish")


def test_new_sent_scheduled_across_polls(dist: Stack, timezest: tuple[str, TimezestSandboxState]) -> None:
    url, tz = timezest
    req = tz.create({"ticket_id": 50004})
    assert _poll(dist, url) == []
    tz.transition(req["id"], "sent")
    assert len(_poll(dist, url)) == 1
    _settled(dist)
    assert sandbox_ticket(dist.sandbox_url, 50004)["ticket"]["statusLabel"] == "Scheduling Link Sent"
    tz.transition(req["id"], "scheduled")
    assert len(_poll(dist, url)) == 1
    rows = _settled(dist)
    assert [(r.event_type, r.state) for r in rows] == [("timezest.link_sent", "applied"),
                                                       ("timezest.scheduled", "applied")]
    view = sandbox_ticket(dist.sandbox_url, 50004)
    assert view["ticket"]["statusLabel"] == "Scheduled"
    assert [h["to"] for h in view["history"]] == [SCHEDULING_LINK_SENT, SCHEDULED]
    assert len(view["notes"]) == 2
    assert "Appointment:" in view["notes"][1]["description"]
    # Polling again changes nothing.
    assert _poll(dist, url) == []
    assert sandbox_ticket(dist.sandbox_url, 50004) == view


def test_sent_then_scheduled_between_polls_is_one_transition(
    dist: Stack, timezest: tuple[str, TimezestSandboxState]
) -> None:
    url, tz = timezest
    req = tz.create({"ticket_id": 50005})
    _poll(dist, url)
    tz.transition(req["id"], "sent")
    tz.transition(req["id"], "scheduled")
    assert len(_poll(dist, url)) == 1
    (row,) = _settled(dist)
    assert (row.event_type, row.state) == ("timezest.scheduled", "applied")
    view = sandbox_ticket(dist.sandbox_url, 50005)
    assert [h["to"] for h in view["history"]] == [SCHEDULED]
    assert _poll(dist, url) == []
    assert [h["to"] for h in sandbox_ticket(dist.sandbox_url, 50005)["history"]] == [SCHEDULED]


def test_status_timezest_set_itself_is_skipped_without_a_note(
    dist: Stack, timezest: tuple[str, TimezestSandboxState]
) -> None:
    url, tz = timezest
    req = tz.create({"ticket_id": 50006})
    _poll(dist, url)
    tz.transition(req["id"], "sent")
    dist.sandbox.set_status(50006, SCHEDULING_LINK_SENT, actor="timezest")  # TimeZest's own PSA action
    _poll(dist, url)
    (row,) = _settled(dist)
    assert (row.state, row.reason) == ("skipped", "already-set")
    assert sandbox_ticket(dist.sandbox_url, 50006)["notes"] == []


def test_cancelled_adds_a_note_only(dist: Stack, timezest: tuple[str, TimezestSandboxState]) -> None:
    url, tz = timezest
    req = tz.create({"ticket_id": 50003})
    _poll(dist, url)
    tz.transition(req["id"], "cancelled")
    _poll(dist, url)
    (row,) = _settled(dist)
    assert (row.event_type, row.state) == ("timezest.cancelled", "applied")
    view = sandbox_ticket(dist.sandbox_url, 50003)
    assert view["history"] == [] and len(view["notes"]) == 1
    assert "status stays New" in view["notes"][0]["description"]
