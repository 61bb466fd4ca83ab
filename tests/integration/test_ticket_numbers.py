"""Issue 21: events that name a ticket by number cost what id-named ones do, callout floods share reads,
and callout work never takes the budget status writes need. Calls are counted by the Autotask sandbox."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from sqlmodel import select

from pipelines import store
from pipelines.audit import TicketNumber
from pipelines.db import session_scope
from pipelines.governor import DbGovernor
from pipelines.process import process_event
from sandboxes.autotask.data import SANDBOX_RESOURCES
from sandboxes.autotask.state import SandboxState
from tests.integration.helpers import add_event, make_context, new_tickets, webform_body

RECEIVED_FORM, SENT_FROM_MC = 29682844, 29682845


def reads(sandbox: SandboxState) -> int:
    return sandbox.calls["GET tickets/{id}"] + sandbox.calls["POST tickets/query"]


def callout(db: str, ticket: int, status: int, person: int | None) -> int:
    body = {"Action": "Update", "Guid": "numbers-hook", "EntityType": "Ticket", "Id": ticket,
            "SequenceNumber": uuid.uuid4().int % 10**9, "EventTime": datetime.now(UTC).isoformat(),
            "PersonID": person, "Fields": {"Status": status}}
    event_id, _ = store.insert_event(db, store.NewEvent(
        source="autotask", external_id=f"numbers-hook:{ticket}:{body['SequenceNumber']}",
        event_type="autotask.ticket.changed", body=json.dumps(body).encode(), headers={}, ticket_id=ticket,
        occurred_at=datetime.now(UTC)))
    return event_id


def by_number(db: str, sandbox: SandboxState, ticket: int) -> int:
    number = sandbox.tickets[ticket]["ticketNumber"]
    event_id, _ = store.insert_event(db, store.NewEvent(
        source="webform", external_id=f"msg_{uuid.uuid4().hex}", event_type="form.submitted",
        body=webform_body(number, when=datetime.now(UTC).isoformat()), headers={}, ticket_number=number,
        occurred_at=datetime.now(UTC)))
    return event_id


def test_a_burst_by_ticket_number_is_resolved_and_read_in_one_query(
        db_url: str, autotask: tuple[str, SandboxState]) -> None:
    url, sandbox = autotask
    ctx = make_context(db_url, url, read_batch=50, read_max_age_seconds=30)
    ctx.lists()
    tickets = new_tickets(sandbox, 10)
    events = [by_number(db_url, sandbox, t) for t in tickets]
    before = dict(sandbox.calls)
    for event_id in events:
        assert process_event(ctx, event_id).state == "applied"
    used = {k: v - before.get(k, 0) for k, v in sandbox.calls.items() if v != before.get(k, 0)}
    # One query named all ten numbers and read all ten tickets; then a PATCH and a note each.
    assert used == {"POST tickets/query": 1, "PATCH tickets": 10, "POST tickets/{id}/notes": 10, "total": 21}, used
    assert all(sandbox.tickets[t]["status"] == RECEIVED_FORM for t in tickets)
    assert all(store.get_event(db_url, e).ticket_id == t for e, t in zip(events, tickets, strict=True))  # type: ignore[union-attr]


def test_a_number_asked_once_is_kept(db_url: str, autotask: tuple[str, SandboxState]) -> None:
    """One event at a time (nothing queued): the first costs a query for its number (and reads the
    ticket with it); the next for the same ticket reads it by id, never asking for the number again."""
    url, sandbox = autotask
    ctx = make_context(db_url, url, read_batch=50, read_max_age_seconds=3)
    ctx.lists()
    (ticket,) = new_tickets(sandbox, 1)
    before = sandbox.calls["total"]
    assert process_event(ctx, by_number(db_url, sandbox, ticket)).state == "applied"
    assert sandbox.calls["total"] - before == 3  # query (resolve and read), PATCH, note
    queries = sandbox.calls["POST tickets/query"]
    process_event(ctx, by_number(db_url, sandbox, ticket))
    assert sandbox.calls["POST tickets/query"] == queries  # number known: read by id (a GET), no query


@pytest.mark.parametrize("max_age", [0.0, 3.0])
def test_an_unknown_number_is_dead_and_not_kept(db_url: str, autotask: tuple[str, SandboxState], max_age: float) -> None:
    url, _ = autotask
    ctx = make_context(db_url, url, read_batch=50, read_max_age_seconds=max_age)
    event_id = add_event(db_url, "webform", "form.submitted", webform_body("T19990101.0001"))
    result = process_event(ctx, event_id)
    assert result.state == "dead" and result.reason is not None and result.reason.startswith("ticket-not-found")
    with session_scope(db_url) as s:
        assert s.exec(select(TicketNumber.ticket_id).where(TicketNumber.number == "T19990101.0001")).first() is None


def test_a_flood_of_callouts_shares_its_reads(db_url: str, autotask: tuple[str, SandboxState]) -> None:
    """A bulk edit in Autotask: 40 tickets changed at once, 40 callouts waiting. Their runs read the
    tickets in a few queries (a read sent after each callout arrived), not one GET each."""
    url, sandbox = autotask
    ctx = make_context(db_url, url, read_batch=50, read_max_age_seconds=30)
    ctx.lists()
    ctx.own_resource_id()
    tickets = new_tickets(sandbox, 40)
    for t in tickets:
        sandbox.set_status(t, 8, actor="technician")  # In Progress: no rule, nothing to write
    events = [callout(db_url, t, 8, SANDBOX_RESOURCES["technician"]) for t in tickets]
    before = reads(sandbox)
    for event_id in events:
        assert process_event(ctx, event_id).state == "ignored"
    assert (reads(sandbox) - before) / len(events) <= 0.2, dict(sandbox.calls)
    assert sandbox.calls["PATCH tickets"] == 0


def test_a_callout_read_before_it_arrived_is_not_used(db_url: str, autotask: tuple[str, SandboxState]) -> None:
    """A shared read sent before a callout arrived may not show its change: the callout's run reads again."""
    url, sandbox = autotask
    ctx = make_context(db_url, url, read_batch=50, read_max_age_seconds=30)
    ctx.lists()
    first, second = new_tickets(sandbox, 2)
    sandbox.set_status(first, 8, actor="technician")
    early = callout(db_url, first, 8, SANDBOX_RESOURCES["technician"])
    # The technician changes the second ticket only now: its callout arrives after the batch read.
    process_event(ctx, early)  # reads both tickets (the second one's callout is not there yet)
    sandbox.set_status(second, 5, actor="technician")
    late = callout(db_url, second, 5, SANDBOX_RESOURCES["technician"])
    gets = reads(sandbox)
    result = process_event(ctx, late)
    assert reads(sandbox) > gets  # read again: the shared read was sent before this callout arrived
    assert result.state == "ignored"
    assert store.observed_status(db_url, second) == 5  # the change the late callout reports, seen


def test_callout_work_stops_at_its_share_of_the_budget_and_writes_go_on(
        db_url: str, autotask: tuple[str, SandboxState]) -> None:
    """A budget of 10 with 30 % kept for writes: observing runs stop at 7 requests; a status write still goes."""
    url, sandbox = autotask
    governor = DbGovernor(db_url, max_in_flight=3, hourly_budget=10, write_reserve_percent=30)
    ctx = make_context(db_url, url)
    ctx.client._gate = governor.slot  # type: ignore[attr-defined]  (as workers.celery.runtime builds it)
    ctx.lists()  # 2 requests (ticket and note fields) ...
    ctx.own_resource_id()  # ... 3
    tickets = new_tickets(sandbox, 6)
    outcomes = []
    for t in tickets:
        sandbox.set_status(t, 8, actor="technician")
        outcomes.append(process_event(ctx, callout(db_url, t, 8, SANDBOX_RESOURCES["technician"])))
    assert [o.state for o in outcomes[:4]] == ["ignored"] * 4  # requests 4-7
    assert {o.state for o in outcomes[4:]} == {"parked"}  # until the hour makes room
    assert "kept for status writes" in (outcomes[-1].reason or "")
    form = add_event(db_url, "webform", "form.submitted", webform_body(50001), ticket_id=50001)
    assert process_event(ctx, form).state == "applied"  # GET, PATCH, note: requests 8-10
    assert sandbox.tickets[50001]["status"] == RECEIVED_FORM


def test_a_callout_without_a_person_is_attributed_by_ticket_history(
        db_url: str, autotask: tuple[str, SandboxState]) -> None:
    """No PersonID in the callout: who set the status comes from TicketHistory (Mission Control here), and
    the story says the callout named no person; never assumed to be a person."""
    url, sandbox = autotask
    ctx = make_context(db_url, url)
    sandbox.set_status(50003, SENT_FROM_MC, actor="mission-control")
    result = process_event(ctx, callout(db_url, 50003, SENT_FROM_MC, None))
    assert result.state == "ignored" and result.reason is not None
    assert f"resource #{SANDBOX_RESOURCES['mission_control']}" in result.reason
    assert "the callout named no person" in result.reason and "mc.escalated" in result.reason
    (child,) = result.derived
    assert process_event(ctx, child).state == "applied"
