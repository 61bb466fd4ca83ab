"""Shared ticket reads (pipelines.ticket_reads): one query for the tickets waiting events need, and
the cases where a shared read must not be acted on (a person's change heard of, a callout not yet
run, a PATCH with an unknown outcome, an old read). Real database, the Autotask sandbox over HTTP."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update
from sqlmodel import col

from connectors.autotask.models import Ticket
from connectors.common.events import Observation
from pipelines import store, ticket_reads
from pipelines.audit import EffectLedger, TicketState
from pipelines.db import session_scope
from pipelines.process import process_event
from sandboxes.autotask.state import SandboxState
from tests.integration.helpers import add_event, make_context, mc_body, new_tickets, webform_body

#: Its outcome depends on today's date: tests/test_clock_ahead.py runs it a year ahead too.
pytestmark = pytest.mark.date_sensitive

RECEIVED = 29682844  # Received Form Response in the sandbox's picklist
IN_PROGRESS = 8


def _ticket_calls(sandbox: SandboxState) -> dict[str, int]:
    return {k: v for k, v in sandbox.calls.items()
            if k.partition(" ")[2].startswith("tickets") and "entityinformation" not in k}


def _form(db: str, ticket: int, when: str = "2026-11-26T09:30:00Z") -> int:
    return add_event(db, "webform", "form.submitted", webform_body(ticket, when=when), ticket_id=ticket)


def test_one_query_reads_the_tickets_of_the_waiting_events(db_url: str, autotask: tuple[str, SandboxState]) -> None:
    url, sandbox = autotask
    ctx = make_context(db_url, url, read_batch=50, read_max_age_seconds=10.0)
    ctx.lists()  # picklists read once per process, not part of the count
    tickets = new_tickets(sandbox, 6)
    events = [_form(db_url, t) for t in tickets]
    sandbox.calls.clear()
    for event_id in events:
        assert process_event(ctx, event_id).state == "applied"
    assert _ticket_calls(sandbox) == {"POST tickets/query": 1, "PATCH tickets": 6, "POST tickets/{id}/notes": 6}
    assert all(sandbox.tickets[t]["status"] == RECEIVED for t in tickets)


def test_a_batch_is_bounded_and_reads_only_waiting_events_tickets(db_url: str,
                                                                  autotask: tuple[str, SandboxState]) -> None:
    url, sandbox = autotask
    ctx = make_context(db_url, url, read_batch=3, read_max_age_seconds=10.0)
    ctx.lists()
    tickets = new_tickets(sandbox, 7)
    events = [_form(db_url, t) for t in tickets]
    sandbox.calls.clear()
    for event_id in events:
        assert process_event(ctx, event_id).state == "applied"
    # 3 + 3 + 1 tickets: three reads for seven events, never more than three tickets in one.
    assert _ticket_calls(sandbox)["POST tickets/query"] == 2
    assert _ticket_calls(sandbox)["GET tickets/{id}"] == 1


def test_a_change_by_a_person_heard_of_drops_the_read(db_url: str, autotask: tuple[str, SandboxState]) -> None:
    """The form was submitted before the technician set In Progress: not applied, the note says why."""
    url, sandbox = autotask
    ctx = make_context(db_url, url, read_batch=50, read_max_age_seconds=10.0)
    first, second = new_tickets(sandbox, 2)
    a = _form(db_url, first)
    b = _form(db_url, second, when="2026-11-26T09:30:00Z")
    assert process_event(ctx, a).state == "applied"  # its query read `second` too, as status 1
    assert ticket_reads.fresh_read(db_url, second, 10.0) is not None
    sandbox.set_status(second, IN_PROGRESS, actor="human", resource_id=29683001)
    # What the callout run records (pipelines.observe): a change atrelay did not make.
    store.observe_status(db_url, second, IN_PROGRESS, changed_at=datetime.now(UTC), by_resource_id=29683001,
                         by_atrelay=False, via="callout", event_id=None)
    assert ticket_reads.fresh_read(db_url, second, 10.0) is None
    result = process_event(ctx, b)
    assert result.state == "skipped" and (result.reason or "").startswith("superseded"), result
    assert sandbox.tickets[second]["status"] == IN_PROGRESS  # the person's change stands


def test_a_waiting_callout_for_the_ticket_means_read_again(db_url: str, autotask: tuple[str, SandboxState]) -> None:
    _, sandbox = autotask
    (tid,) = new_tickets(sandbox, 1)
    with session_scope(db_url) as s:
        s.add(TicketState(ticket_id=tid, read_status_id=1, read_at=datetime.now(UTC),
                          updated_at=datetime(1970, 1, 1, tzinfo=UTC)))
    assert ticket_reads.fresh_read(db_url, tid, 10.0) is not None
    store.insert_event(db_url, store.NewEvent(
        source="autotask", external_id=f"callout-{tid}", event_type=Observation.TICKET_CHANGED.value,
        body=b"{}", headers={}, ticket_id=tid))
    assert ticket_reads.fresh_read(db_url, tid, 10.0) is None


def test_an_unconfirmed_patch_or_an_old_read_means_read_again(db_url: str,
                                                              autotask: tuple[str, SandboxState]) -> None:
    _, sandbox = autotask
    (tid,) = new_tickets(sandbox, 1)
    event_id = _form(db_url, tid)
    with session_scope(db_url) as s:
        s.add(TicketState(ticket_id=tid, read_status_id=1, read_at=datetime.now(UTC),
                          updated_at=datetime(1970, 1, 1, tzinfo=UTC)))
    assert ticket_reads.fresh_read(db_url, tid, 10.0) is not None
    assert ticket_reads.fresh_read(db_url, tid, 0.0) is None  # sharing off
    effect = store.update_effect(db_url, EffectLedger(event_id=event_id, ticket_id=tid, from_status_id=1,
                                                      to_status_id=RECEIVED))
    effect = store.update_effect(db_url, effect, patch_started_at=datetime.now(UTC))
    assert ticket_reads.fresh_read(db_url, tid, 10.0) is None  # did the PATCH land? only Autotask knows
    store.update_effect(db_url, effect, patched_at=datetime.now(UTC))
    assert ticket_reads.fresh_read(db_url, tid, 10.0) is not None
    with session_scope(db_url) as s:
        s.execute(update(TicketState).where(col(TicketState.ticket_id) == tid)
                  .values(read_at=datetime.now(UTC) - timedelta(seconds=11)))
    assert ticket_reads.fresh_read(db_url, tid, 10.0) is None


def test_concurrent_runs_do_not_read_the_same_tickets(db_url: str, autotask: tuple[str, SandboxState]) -> None:
    _, sandbox = autotask
    tickets = new_tickets(sandbox, 5)
    for t in tickets:
        _form(db_url, t)
    first = ticket_reads.claim_reads(db_url, tickets[0], limit=3, max_age=10.0)
    assert first is not None and first[0] == tickets[0] and len(first) == 3
    assert ticket_reads.claim_reads(db_url, tickets[1], limit=3, max_age=10.0) is None  # being read
    rest = ticket_reads.claim_reads(db_url, tickets[4], limit=5, max_age=10.0)
    assert rest is not None and rest[0] == tickets[4] and not set(rest) & set(first)
    # atrelay writes tickets[0] while the query is out: the read (sent before) is not kept for it.
    sent = datetime.now(UTC) - timedelta(seconds=1)
    store.observe_status(db_url, tickets[0], RECEIVED, changed_at=datetime.now(UTC), by_resource_id=None,
                         by_atrelay=True, via="atrelay", event_id=None)
    ticket_reads.keep_reads(db_url, [Ticket(id=t, status=1) for t in first], sent, first)
    assert ticket_reads.fresh_read(db_url, tickets[0], 10.0) is None
    known = ticket_reads.fresh_read(db_url, tickets[1], 10.0)
    assert known is not None and known.status == 1
    assert ticket_reads.claim_reads(db_url, tickets[1], limit=1, max_age=10.0) is None  # read, and fresh


def test_atrelays_own_write_is_not_a_read_for_later_runs(db_url: str, autotask: tuple[str, SandboxState]) -> None:
    """A later event on the ticket reads it: a person may have acted since atrelay wrote."""
    url, sandbox = autotask
    ctx = make_context(db_url, url, read_batch=50, read_max_age_seconds=10.0)
    ctx.lists()
    (tid,) = new_tickets(sandbox, 1)
    assert process_event(ctx, _form(db_url, tid)).state == "applied"
    assert ticket_reads.fresh_read(db_url, tid, 10.0) is None
    sandbox.set_status(tid, IN_PROGRESS, actor="human", resource_id=29683001)  # not heard of by atrelay
    sandbox.calls.clear()
    later = add_event(db_url, "mission-control", "mc.escalated", mc_body("mc.escalated", tid,
                                                                         when="2026-11-27T23:59:00Z"), ticket_id=tid)
    process_event(ctx, later)
    assert _ticket_calls(sandbox).get("GET tickets/{id}", 0) + _ticket_calls(sandbox).get("POST tickets/query", 0) == 1


def test_many_runs_claiming_at_once_never_deadlock_and_never_share(db_url: str,
                                                                  autotask: tuple[str, SandboxState]) -> None:
    """Eight runs claim batches over the same waiting events at the same moment (the benchmark's
    quota run once deadlocked here on PostgreSQL): no error, and no ticket claimed twice."""
    _, sandbox = autotask
    tickets = new_tickets(sandbox, 64)
    for t in tickets:
        _form(db_url, t)
    start = threading.Barrier(8)

    def run(own: int) -> list[int]:
        start.wait()
        return ticket_reads.claim_reads(db_url, own, limit=20, max_age=10.0) or []

    with ThreadPoolExecutor(max_workers=8) as pool:
        batches = list(pool.map(run, tickets[::8]))
    claimed = [t for batch in batches for t in batch]
    assert len(claimed) == len(set(claimed))  # disjoint
    assert all(batch[0] == own for batch, own in zip(batches, tickets[::8], strict=True) if batch)


def test_a_read_stored_while_atrelay_writes_is_dropped(db_url: str, autotask: tuple[str, SandboxState],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Run B's batch read (sent before atrelay's PATCH) is stored after run A loaded the ticket's row
    to record its own write: the drop must still win, or the next run acts on the old status."""
    _, sandbox = autotask
    (tid,) = new_tickets(sandbox, 1)
    store.observe_status(db_url, tid, 5, changed_at=datetime.now(UTC), by_resource_id=None, by_atrelay=True,
                         via="atrelay", event_id=None)  # a row whose read is already dropped
    sent = datetime.now(UTC)
    real_now = store.db_now
    injected: list[bool] = []

    def keep_b_read_first(url: str) -> datetime:
        if not injected:  # observe_status has loaded the row and is about to write the drop
            injected.append(True)
            ticket_reads.keep_reads(db_url, [Ticket(id=tid, status=5)], sent, [tid])
        return real_now(url)

    monkeypatch.setattr(store, "db_now", keep_b_read_first)
    store.observe_status(db_url, tid, RECEIVED, changed_at=datetime.now(UTC), by_resource_id=None,
                         by_atrelay=True, via="atrelay", event_id=None)
    assert injected
    monkeypatch.setattr(store, "db_now", real_now)
    assert ticket_reads.fresh_read(db_url, tid, 10.0) is None
    # And a read sent before a drop that is stored after it is not kept either.
    ticket_reads.keep_reads(db_url, [Ticket(id=tid, status=5)], sent, [tid])
    assert ticket_reads.fresh_read(db_url, tid, 10.0) is None
