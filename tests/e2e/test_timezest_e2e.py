"""TimeZest end to end: sandbox requests polled, events run by real workers on Redis + PostgreSQL."""

from __future__ import annotations

from sqlmodel import col, select

from connectors.timezest.client import TimezestClient
from pipelines.audit import EventState, InboundEvent
from pipelines.db import session_scope
from pipelines.timezest_poll import poll_once
from sandboxes.timezest.app import TimezestSandboxState
from tests.stacks import Stack
from tests.support import sandbox_ticket, wait_for
from workers.settings import SANDBOX_TIMEZEST_API_KEY

SCHEDULING_LINK_SENT, SCHEDULED = 29682835, 29682839
FOLLOW_UP_ADMIN = 29682833  # the sandbox's "Follow Up Needed: Admin"


def _poll(dist: Stack, url: str) -> list[int]:  # any stack: embedded or Redis + PostgreSQL
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


def test_status_timezest_set_itself_is_verified_and_not_repeated(
    dist: Stack, timezest: tuple[str, TimezestSandboxState]
) -> None:
    """TimeZest set the status in the PSA itself and wrote its note (its own PSA actions): atrelay writes
    neither again (issue 25: verify and repair, never repeat). It used to add a second note."""
    url, tz = timezest
    req = tz.create({"ticket_id": 50006})
    _poll(dist, url)
    tz.transition(req["id"], "sent")
    dist.sandbox.set_status(50006, SCHEDULING_LINK_SENT, actor="timezest")  # TimeZest's own PSA action
    dist.sandbox.add_note(50006, {"title": "TimeZest: scheduling request sent", "description": "Link sent.",
                                  "noteType": 2, "publish": 1}, dist.sandbox.actor("timezest"))
    _poll(dist, url)
    (row,) = _settled(dist)
    assert (row.state, row.reason) == ("applied", "already-set-by-timezest: TimeZest set Scheduling Link Sent")
    view = sandbox_ticket(dist.sandbox_url, 50006)
    assert [n["title"] for n in view["notes"]] == ["TimeZest: scheduling request sent"]  # TimeZest's only
    assert [h["actor"] for h in view["history"]] == ["timezest"]  # no PATCH by atrelay


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


def test_booking_moved_then_cancelled_weeks_later(stack: Stack, timezest: tuple[str, TimezestSandboxState]) -> None:
    """Issue 11 item 4, on both stacks: a booking made long ago (newer requests after it) is moved,
    then cancelled; the move adds a note with the new time, the cancel hands the ticket to the admin."""
    url, tz = timezest
    rid = str(tz.create({"ticket_id": 50004})["id"])
    tz.transition(rid, "sent")
    tz.transition(rid, "scheduled")
    tz.requests[rid]["created_at"] -= 3 * 86400
    for age in (86400, 0):
        tz.create({"associated_entities": []})["created_at"] -= age
    assert len(_poll(stack, url)) == 1
    _settled(stack)
    assert sandbox_ticket(stack.sandbox_url, 50004)["ticket"]["statusLabel"] == "Scheduled"

    moved = dict(tz.reschedule(rid, start=2_000_000_000))  # 2033-05-18 03:33 UTC
    assert len(_poll(stack, url)) == 1
    rows = _settled(stack)
    assert (rows[-1].event_type, rows[-1].state) == ("timezest.rescheduled", "applied")
    view = sandbox_ticket(stack.sandbox_url, 50004)
    assert view["ticket"]["statusLabel"] == "Scheduled"  # a move changes no status
    assert "2033-05-18 03:33 UTC" in view["notes"][-1]["description"]
    assert moved["selected_start_time"] == 2_000_000_000

    tz.transition(rid, "cancelled")
    assert len(_poll(stack, url)) == 1
    rows = _settled(stack)
    assert [(r.event_type, r.state) for r in rows] == [
        ("timezest.scheduled", "applied"), ("timezest.rescheduled", "applied"), ("timezest.cancelled", "applied")]
    view = sandbox_ticket(stack.sandbox_url, 50004)
    assert view["ticket"]["statusLabel"] == "Follow Up Needed: Admin"
    assert [h["to"] for h in view["history"]] == [SCHEDULED, FOLLOW_UP_ADMIN]
    assert len(view["notes"]) == 3 and "cancelled" in view["notes"][-1]["description"]
    assert _poll(stack, url) == []  # polling again changes nothing
