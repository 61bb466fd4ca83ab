"""The write gate (issue 18): nine sequences of real operation in which atrelay used to overwrite a person,
repeat itself or lose a note, each deterministic, against the Autotask sandbox and a real audit database.

Every one of them failed on the code before the gate (see the issue's note). What a test asserts about
the ticket is read from the sandbox (its status history and notes), not from atrelay's audit log.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update
from sqlmodel import col, select

from connectors.common.events import EventType
from pipelines import store
from pipelines.alerts import record_escalations
from pipelines.audit import EventState, InboundEvent, TicketState, TicketStatusChange, TimezestRequest
from pipelines.db import session_scope
from pipelines.process import process_event
from pipelines.reconcile import reconcile_once
from pipelines.rules import DEFAULT_RULES, Rule
from sandboxes.autotask.data import SANDBOX_RESOURCES
from sandboxes.autotask.entities import add_checklist_item, update_checklist_item
from sandboxes.autotask.state import SandboxState
from tests.integration.helpers import Queue, add_event, make_context, mc_body

#: Its outcome depends on today's date: tests/test_clock_ahead.py runs it a year ahead too.
pytestmark = pytest.mark.date_sensitive

COMPLETE, IN_PROGRESS, WAITING_CUSTOMER = 5, 8, 7
SENT_FROM_MC, MC_NO_CONTACT = 29682845, 29682847
DEFERRED, FOLLOW_UP_RESOURCE, REOPENED = 29682836, 29682834, 29682842
TECH, MC = SANDBOX_RESOURCES["technician"], SANDBOX_RESOURCES["mission_control"]


def iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now() -> datetime:
    return datetime.now(UTC)


def due_now(db: str, event_id: int) -> None:
    """The retry's countdown has passed (what waiting for it would do)."""
    with session_scope(db) as s:
        s.execute(update(InboundEvent).where(col(InboundEvent.id) == event_id).values(not_before=None))


def callout(db: str, sandbox: SandboxState, ticket_id: int, *, person: int | None,
            at: datetime | None = None) -> int:
    """The ticket callout Autotask sends for the status the sandbox shows now, recorded as intake would."""
    body = {"Action": "Update", "Guid": "gate-guid", "EntityType": "Ticket", "Id": ticket_id,
            "SequenceNumber": int(uuid.uuid4().int % 10**9), "EventTime": iso(at or now()), "PersonID": person,
            "Fields": {"Status": sandbox.tickets[ticket_id]["status"],
                       "TicketNumber": sandbox.tickets[ticket_id]["ticketNumber"]}}
    event_id, created = store.insert_event(db, store.NewEvent(
        source="autotask", external_id=f"gate-guid:{ticket_id}:{body['SequenceNumber']}",
        event_type="autotask.ticket.changed", body=json.dumps(body).encode(), headers={}, ticket_id=ticket_id,
        occurred_at=at or now()))
    assert created
    return event_id


def atrelay_writes(sandbox: SandboxState, ticket_id: int) -> list[int]:
    own = SANDBOX_RESOURCES["atrelay"]
    return [h["to"] for h in sandbox.history if h["ticket_id"] == ticket_id and h["resource_id"] == own]


def statuses(sandbox: SandboxState, ticket_id: int) -> list[int]:
    return [h["to"] for h in sandbox.history if h["ticket_id"] == ticket_id]


def notes_on(sandbox: SandboxState, ticket_id: int) -> list[dict[str, Any]]:
    return [n for n in sandbox.notes.values() if n["ticketID"] == ticket_id]


def assert_breach_gone(result: Any, sandbox: SandboxState, ticket_id: int, status: int) -> None:
    """A queued guard whose breach the person put right: skipped as breach-gone, nothing written."""
    assert result.state == "skipped" and result.reason is not None and result.reason.startswith("breach-gone")
    assert sandbox.tickets[ticket_id]["status"] == status and atrelay_writes(sandbox, ticket_id) == []
    assert notes_on(sandbox, ticket_id) == []


def only(queue: Queue) -> int:
    """The one event a run queued (a derived event), taken off the queue."""
    assert len(queue) == 1, queue
    return queue.pop()[0]


def test_1_a_retried_write_is_decided_again_and_leaves_a_persons_change(
        db_url: str, autotask: tuple[str, SandboxState]) -> None:
    """The escalation's PATCH gets a 429; while it waits, a technician completes the ticket (no callout
    yet). The retry must not move the ticket to Sent from MC: its note says why it was not applied."""
    url, sandbox = autotask
    ctx = make_context(db_url, url)
    ctx.lists()
    event = add_event(db_url, "mission-control", "mc.escalated",
                      mc_body("mc.escalated", 50003, when=iso(now() - timedelta(minutes=5))),
                      occurred_at=now() - timedelta(minutes=5), ticket_id=50003)
    sandbox.script = [{"endpoint": "tickets", "method": "PATCH", "status": 429, "retry_after": 1,
                       "errors": ["API request threshold exceeded"]}]
    assert process_event(ctx, event).state == "retrying"
    sandbox.set_status(50003, COMPLETE, actor="technician")
    due_now(db_url, event)
    result = process_event(ctx, event)
    assert result.state == "skipped" and result.reason is not None and "superseded" in result.reason
    assert statuses(sandbox, 50003) == [COMPLETE] and sandbox.tickets[50003]["status"] == COMPLETE
    (note,) = notes_on(sandbox, 50003)
    assert "NOT applied" in note["description"]


def test_2_a_change_reconciliation_met_first_still_supersedes_an_older_event(
        db_url: str, autotask: tuple[str, SandboxState]) -> None:
    """A technician completes a ticket atrelay never saw; the callout is lost; reconciliation meets the
    ticket. An MC escalation dated ten minutes before the technician's change then arrives."""
    url, sandbox = autotask
    ctx = make_context(db_url, url)
    assert reconcile_once(db_url, ctx.client, Queue(), watched_status_ids=set(),
                          own_resource_id=SANDBOX_RESOURCES["atrelay"]).outcome == "baseline"
    sandbox.set_status(50003, COMPLETE, actor="technician")
    reconcile_once(db_url, ctx.client, Queue(), watched_status_ids=set(), own_resource_id=SANDBOX_RESOURCES["atrelay"])
    event = add_event(db_url, "mission-control", "mc.escalated",
                      mc_body("mc.escalated", 50003, when=iso(now() - timedelta(minutes=10))),
                      occurred_at=now() - timedelta(minutes=10), ticket_id=50003)
    result = process_event(ctx, event)
    assert result.state == "skipped" and result.reason is not None and "superseded" in result.reason
    assert statuses(sandbox, 50003) == [COMPLETE]


def test_2b_reconciliation_times_a_change_by_ticket_history_not_by_the_last_activity(
        db_url: str, autotask: tuple[str, SandboxState]) -> None:
    """A status change whose callout was lost, then a note an hour's worth later: the change atrelay
    records carries the time TicketHistory gives for it and the person who made it."""
    url, sandbox = autotask
    ctx = make_context(db_url, url)
    own = SANDBOX_RESOURCES["atrelay"]
    reconcile_once(db_url, ctx.client, Queue(), watched_status_ids=set(), own_resource_id=own)  # baseline
    callout_run = process_event(ctx, callout(db_url, sandbox, 50002, person=TECH))  # atrelay knows New
    assert callout_run.state == "ignored"
    sandbox.set_status(50002, IN_PROGRESS, actor="technician")  # its callout is lost
    changed_at = datetime.fromisoformat(sandbox.changes[-1]["date"].replace("Z", "+00:00"))
    sandbox.changes[-1]["date"] = iso(changed_at - timedelta(hours=1)).replace("Z", ".000Z")  # an hour ago
    sandbox.add_note(50002, {"title": "Called the user", "description": "left a message", "noteType": 2,
                             "publish": 1}, sandbox.actor("technician"))
    queue = Queue()
    result = reconcile_once(db_url, ctx.client, queue, watched_status_ids=set(), own_resource_id=own)
    for event_id in result.emitted:
        process_event(ctx, event_id)
    with session_scope(db_url) as s:
        (change,) = s.exec(select(TicketStatusChange).where(TicketStatusChange.ticket_id == 50002,
                                                            TicketStatusChange.to_status_id == IN_PROGRESS)).all()
    assert abs((change.changed_at - (changed_at - timedelta(hours=1))).total_seconds()) < 2
    assert change.by_resource_id == TECH and change.via == "reconciliation"


def test_3_an_observation_that_fails_midway_derives_its_guard_on_the_rerun(
        db_url: str, autotask: tuple[str, SandboxState]) -> None:
    """Complete with an open important item: the checklist read gets a 429. The re-run must still see the
    change and re-open the ticket (it used to say "no-status-change": the status was recorded first)."""
    url, sandbox = autotask
    ctx = make_context(db_url, url)
    add_checklist_item(sandbox, 50004, {"itemname": "Wipe the old disk", "isimportant": True}, sandbox.actor())
    sandbox.set_status(50004, COMPLETE, actor="technician")
    seen = callout(db_url, sandbox, 50004, person=TECH)
    sandbox.script = [{"endpoint": "ticketchecklistitems", "status": 429, "retry_after": 1,
                       "errors": ["API request threshold exceeded"]}]
    assert process_event(ctx, seen).state == "retrying"
    due_now(db_url, seen)
    process_event(ctx, seen)
    guard = only(ctx.enqueue)  # type: ignore[arg-type]
    assert process_event(ctx, guard).state == "applied"
    assert sandbox.tickets[50004]["status"] == REOPENED and len(notes_on(sandbox, 50004)) == 1


def test_4_a_queued_guard_does_nothing_once_the_person_put_it_right(
        db_url: str, autotask: tuple[str, SandboxState]) -> None:
    """Deferred without a due date, then next week's due date a moment later: the guard derived from the
    first change runs after the second and must leave the ticket alone."""
    url, sandbox = autotask
    ctx = make_context(db_url, url)
    sandbox.change_ticket(50005, {"dueDateTime": None}, sandbox.actor("technician"))
    sandbox.set_status(50005, DEFERRED, actor="technician")
    process_event(ctx, callout(db_url, sandbox, 50005, person=TECH))
    guard = only(ctx.enqueue)  # type: ignore[arg-type]
    next_week = (now() + timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    sandbox.change_ticket(50005, {"dueDateTime": next_week}, sandbox.actor("technician"))
    assert_breach_gone(process_event(ctx, guard), sandbox, 50005, DEFERRED)


def test_4b_a_queued_checklist_guard_does_nothing_once_the_item_is_completed(
        db_url: str, autotask: tuple[str, SandboxState]) -> None:
    """Complete with an important item open, then the item completed a moment later (status left
    Complete): the queued guard finds the checklist done and writes nothing."""
    url, sandbox = autotask
    ctx = make_context(db_url, url)
    item = add_checklist_item(sandbox, 50004, {"itemname": "Wipe the old disk", "isimportant": True}, sandbox.actor())
    sandbox.set_status(50004, COMPLETE, actor="technician")
    process_event(ctx, callout(db_url, sandbox, 50004, person=TECH))
    guard = only(ctx.enqueue)  # type: ignore[arg-type]
    update_checklist_item(sandbox, 50004, {"id": item["id"], "iscompleted": True}, sandbox.actor("technician"))
    assert_breach_gone(process_event(ctx, guard), sandbox, 50004, COMPLETE)


def test_4c_a_queued_waiting_customer_guard_does_nothing_once_the_link_is_booked(
        db_url: str, autotask: tuple[str, SandboxState]) -> None:
    """Waiting Customer while a TimeZest link is still out, then the customer books before the guard runs
    (the poller records the request scheduled): the queued guard writes nothing."""
    url, sandbox = autotask
    ctx = make_context(db_url, url)
    with session_scope(db_url) as s:
        s.add(TimezestRequest(id="req-50003", status="sent", ticket_id=50003, created_at=1_795_000_000,
                              updated_at=1_795_000_000))
    sandbox.set_status(50003, WAITING_CUSTOMER, actor="technician")
    process_event(ctx, callout(db_url, sandbox, 50003, person=TECH))
    guard = only(ctx.enqueue)  # type: ignore[arg-type]
    with session_scope(db_url) as s:
        s.execute(update(TimezestRequest).where(col(TimezestRequest.id) == "req-50003")
                  .values(status="scheduled", updated_at=1_795_000_600))
    assert_breach_gone(process_event(ctx, guard), sandbox, 50003, WAITING_CUSTOMER)


def test_4d_a_status_a_guard_set_is_never_fought_over(db_url: str, autotask: tuple[str, SandboxState]) -> None:
    """Build point 4: the Deferred guard moves the ticket on, and its own write's callout starts nothing. The
    technician putting Deferred back (still no due date) is a new breach for the Deferred rule, once, and
    never a clobber (the clobber guard restores only what a partner event set). A guard delivered again
    writes nothing more; the technician moving the ticket elsewhere starts nothing."""
    url, sandbox = autotask
    ctx = make_context(db_url, url)
    sandbox.change_ticket(50005, {"dueDateTime": None}, sandbox.actor("technician"))
    sandbox.set_status(50005, DEFERRED, actor="technician")
    process_event(ctx, callout(db_url, sandbox, 50005, person=TECH))
    first = only(ctx.enqueue)  # type: ignore[arg-type]
    assert process_event(ctx, first).state == "applied"
    assert sandbox.tickets[50005]["status"] == FOLLOW_UP_RESOURCE
    own = process_event(ctx, callout(db_url, sandbox, 50005, person=SANDBOX_RESOURCES["atrelay"]))
    assert list(ctx.enqueue) == [], own.reason  # type: ignore[arg-type]
    sandbox.set_status(50005, DEFERRED, actor="technician")  # the status the guard replaced, put back
    process_event(ctx, callout(db_url, sandbox, 50005, person=TECH))
    again = only(ctx.enqueue)  # type: ignore[arg-type]
    event = store.get_event(db_url, again)
    assert event is not None and event.event_type == "guard.deferred_no_due_date"
    assert process_event(ctx, again).state == "applied"
    assert process_event(ctx, again).state == "applied" and process_event(ctx, first).state == "applied"
    sandbox.set_status(50005, IN_PROGRESS, actor="technician")
    moved = process_event(ctx, callout(db_url, sandbox, 50005, person=TECH))
    assert list(ctx.enqueue) == [], moved.reason  # type: ignore[arg-type]
    assert sandbox.tickets[50005]["status"] == IN_PROGRESS
    assert atrelay_writes(sandbox, 50005) == [FOLLOW_UP_RESOURCE] * 2 and len(notes_on(sandbox, 50005)) == 2


def test_5_following_a_guards_undo_advice_is_not_a_clobber(db_url: str, autotask: tuple[str, SandboxState]) -> None:
    """The checklist guard re-opens a Complete ticket; within the clobber window the technician does what
    its note says (completes the item, sets Complete again). That stands: no second re-open, no second note."""
    url, sandbox = autotask
    ctx = make_context(db_url, url)
    item = add_checklist_item(sandbox, 50004, {"itemname": "Wipe the old disk", "isimportant": True}, sandbox.actor())
    sandbox.set_status(50004, COMPLETE, actor="technician")
    process_event(ctx, callout(db_url, sandbox, 50004, person=TECH))
    assert process_event(ctx, only(ctx.enqueue)).state == "applied"  # type: ignore[arg-type]
    assert sandbox.tickets[50004]["status"] == REOPENED
    update_checklist_item(sandbox, 50004, {"id": item["id"], "iscompleted": True}, sandbox.actor("technician"))
    sandbox.set_status(50004, COMPLETE, actor="technician")
    result = process_event(ctx, callout(db_url, sandbox, 50004, person=TECH))
    assert result.state == "ignored" and list(ctx.enqueue) == [], result.reason  # type: ignore[arg-type]
    assert sandbox.tickets[50004]["status"] == COMPLETE
    assert atrelay_writes(sandbox, 50004) == [REOPENED] and len(notes_on(sandbox, 50004)) == 1


def test_6_one_escalation_reported_twice_while_a_note_waits_gets_one_note(
        db_url: str, autotask: tuple[str, SandboxState]) -> None:
    """MC sets Sent from MC itself and posts its webhook; the webhook's note gets a 429. MC's own status
    change then arrives by callout: one escalation, one note, one applied event (one alert)."""
    url, sandbox = autotask
    ctx = make_context(db_url, url)
    ctx.lists()
    sandbox.set_status(50003, SENT_FROM_MC, actor="mission-control")
    webhook = add_event(db_url, "mission-control", "mc.escalated", mc_body("mc.escalated", 50003, when=iso(now())),
                        occurred_at=now(), ticket_id=50003)
    sandbox.script = [{"endpoint": "tickets/notes", "method": "POST", "status": 429, "retry_after": 1,
                       "errors": ["API request threshold exceeded"]}]
    assert process_event(ctx, webhook).state == "retrying"
    process_event(ctx, callout(db_url, sandbox, 50003, person=MC))
    seen = only(ctx.enqueue)  # type: ignore[arg-type]
    assert process_event(ctx, seen).state == "skipped"
    due_now(db_url, webhook)
    assert process_event(ctx, webhook).state == "applied"
    assert len(notes_on(sandbox, 50003)) == 1 and atrelay_writes(sandbox, 50003) == []
    with session_scope(db_url) as s:
        applied = s.exec(select(InboundEvent.id).where(InboundEvent.event_type == "mc.escalated",
                                                       InboundEvent.state == EventState.APPLIED)).all()
    assert applied == [webhook]
    # Escalation alerts are read from applied events: one escalation reported twice is told once.
    assert len(record_escalations(db_url, web_url=None)) == 1
    assert record_escalations(db_url, web_url=None) == []


def test_7_a_run_that_lost_its_lease_frees_nothing_of_the_new_owners(
        db_url: str, autotask: tuple[str, SandboxState]) -> None:
    """A worker pauses past its lease inside its PATCH; another worker takes the event and its ticket.
    The first, waking, writes nothing more and must not release the new owner's ticket lease."""
    url, sandbox = autotask
    ctx = make_context(db_url, url)
    event = add_event(db_url, "mission-control", "mc.escalated", mc_body("mc.escalated", 50003, when=iso(now())),
                      occurred_at=now(), ticket_id=50003)
    other = add_event(db_url, "mission-control", "mc.out_of_scope", mc_body("mc.out_of_scope", 50003),
                      ticket_id=50003)
    original = ctx.client.set_ticket_status
    taken: dict[str, Any] = {}

    def patch_and_sleep_past_the_lease(ticket_id: int, status: int) -> int:
        done = original(ticket_id, status)
        past = now() - timedelta(seconds=1)
        with session_scope(db_url) as s:  # the lease time passed while this worker was paused ...
            s.execute(update(InboundEvent).where(col(InboundEvent.id) == event).values(lease_until=past))
            s.execute(update(TicketState).where(col(TicketState.ticket_id) == ticket_id)
                      .values(lease_until=past))
        taken["claim"] = store.claim_event(db_url, event, 30)  # ... and another worker took the event
        taken["ticket"] = store.claim_ticket(db_url, ticket_id, event, 30)
        return done

    ctx.client.set_ticket_status = patch_and_sleep_past_the_lease  # type: ignore[method-assign]
    assert process_event(ctx, event).state == "lease-lost"
    assert taken["claim"].event is not None and taken["ticket"] is True
    assert notes_on(sandbox, 50003) == []  # nothing more from the run that lost its lease
    # The new owner still holds the ticket: a second event on it must wait.
    assert store.claim_event(db_url, other, 30).event is not None
    assert store.claim_ticket(db_url, 50003, other, 30) is False


def test_8_a_follow_up_without_notes_leaves_its_causes_note_to_the_cause(
        db_url: str, autotask: tuple[str, SandboxState]) -> None:
    """With `[events."mc.no_contact.follow_up"] note = false`, MC's No Contact summary still reaches the ticket."""
    url, sandbox = autotask
    rules = dict(DEFAULT_RULES)
    rules[EventType.MC_NO_CONTACT_FOLLOW_UP] = Rule("Waiting Customer", note=False)
    ctx = make_context(db_url, url, rules=rules, follow_up_delay_seconds=0)
    event = add_event(db_url, "mission-control", "mc.no_contact", mc_body("mc.no_contact", 50002), ticket_id=50002)
    assert process_event(ctx, event).state == "applied"
    assert sandbox.tickets[50002]["status"] == WAITING_CUSTOMER
    (note,) = notes_on(sandbox, 50002)
    assert "User did not answer" in note["description"]


def test_9_mc_no_contact_set_again_after_atrelay_moved_on_is_a_new_escalation(
        db_url: str, autotask: tuple[str, SandboxState]) -> None:
    """MC sets MC No Contact; atrelay moves the ticket on to Waiting Customer. Minutes later MC sets MC No
    Contact again (a new escalation): it is moved on again, not skipped as a duplicate."""
    url, sandbox = autotask
    ctx = make_context(db_url, url, follow_up_delay_seconds=0)
    sandbox.set_status(50002, MC_NO_CONTACT, actor="mission-control")
    process_event(ctx, callout(db_url, sandbox, 50002, person=MC, at=now() - timedelta(minutes=5)))
    assert process_event(ctx, only(ctx.enqueue)).state == "applied"  # type: ignore[arg-type]
    assert sandbox.tickets[50002]["status"] == WAITING_CUSTOMER
    sandbox.set_status(50002, MC_NO_CONTACT, actor="mission-control")
    # Its callout is stamped three minutes on: past the clobber window (which, within it, used to hide
    # the bug by re-applying Waiting Customer as if a stale edit form had undone it).
    process_event(ctx, callout(db_url, sandbox, 50002, person=MC, at=now() + timedelta(minutes=3)))
    result = process_event(ctx, only(ctx.enqueue))  # type: ignore[arg-type]
    assert result.state == "applied", result.reason
    assert sandbox.tickets[50002]["status"] == WAITING_CUSTOMER
    assert atrelay_writes(sandbox, 50002) == [WAITING_CUSTOMER, WAITING_CUSTOMER]
    assert len(notes_on(sandbox, 50002)) == 2
