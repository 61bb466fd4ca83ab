"""Reconciliation: find what Autotask callouts did not deliver, and feed it through the same path.

Autotask retries a failed callout for about two minutes and then drops it for good (Autotask's
webhook documentation, "Webhooks error handling"), so every ``ATRELAY_AUTOTASK_RECONCILE_SECONDS``
beat asks Autotask for tickets whose ``lastActivityDate`` and notes whose ``createDateTime`` are
after the last watermark (less an overlap) and records exactly the events a callout would have
produced:

* a ticket whose status differs from the one atrelay last observed -> ``autotask.ticket.changed``
  (external id ``reconcile:<ticket>:<status>:<lastActivityDate>``); the run re-reads the ticket under
  its lease (so a late callout for the same change then finds "no change") and its TicketHistory,
  for when and by whom the status was set: ``lastActivityDate`` is the last activity of any kind;
* a note -> ``autotask.note.added`` keyed ``note:<id>``, the same key its callout has, so the two are
  one event at intake.

The first run records a baseline (the status of every ticket active in the last day) and emits
nothing, so switching atrelay on does not replay history. A ticket never seen before that turns up
in a status a rule cares about (``watched_status_ids``: the watch rules' and the guards' trigger
statuses) is an observation like a change; any other is only noted. No check trusts a noted status
as "unchanged since": the write gate asks TicketHistory (pipelines.gate).
Reads go through the quota governor and yield to status writes (see :func:`yielding_gate`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlmodel import col, select

from connectors.autotask.client import AutotaskClient
from connectors.autotask.errors import AutotaskError
from connectors.autotask.models import Ticket, TicketNote
from connectors.common.events import Observation, Source
from pipelines import intake, store
from pipelines.audit import PollRun, TicketState
from pipelines.clock import as_utc
from pipelines.db import session_scope, utcnow
from pipelines.governor import Governor, observing
from pipelines.observe import OVERDUE_DEFERRED, RECONCILE_PREFIX, WINDOW_START

__all__ = ["SOURCE", "ReconcileResult", "reconcile_once", "yielding_gate"]

log = logging.getLogger("atrelay.reconcile")
SOURCE = "autotask"
OVERLAP = timedelta(minutes=2)  # Autotask's own retry window: a change may surface that late
BASELINE_LOOKBACK = timedelta(days=1)


@dataclass(frozen=True)
class ReconcileResult:
    outcome: str  # ok | baseline | busy | failed
    tickets_seen: int = 0
    emitted: tuple[int, ...] = ()
    error: str | None = None


def yielding_gate(governor: Governor, max_in_flight: int, *, wait_seconds: float = 30.0,
                  sleep: Callable[[float], None] = time.sleep) -> Callable[[str], AbstractContextManager[None]]:
    """A governor gate for background reads: wait while status writes hold all but one slot.

    Reconciliation thus never takes the last free slot from a pipeline run, and it still counts
    against the in-flight limit and the hourly budget like every other call.
    """

    @contextmanager
    def gate(endpoint: str) -> Iterator[None]:
        deadline = time.monotonic() + wait_seconds
        while (governor.usage().in_flight.get(endpoint, 0) >= max(1, max_in_flight - 1)
               and time.monotonic() < deadline):
            sleep(0.2)
        with governor.slot(endpoint):
            yield

    return gate


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _start(db: str) -> tuple[int | None, int | None]:
    """Open a run unless one is running (started in the last 10 minutes); return (run id, watermark)."""
    with session_scope(db) as s:
        busy = s.exec(select(PollRun.id).where(
            PollRun.source == SOURCE, PollRun.outcome == "running",
            col(PollRun.started_at) > utcnow() - timedelta(minutes=10))).first()
        if busy is not None:
            return None, None
        mark = s.exec(select(PollRun.high_water).where(
            PollRun.source == SOURCE, col(PollRun.outcome).in_(["ok", "baseline"]),
            col(PollRun.high_water).is_not(None)).order_by(col(PollRun.id).desc())).first()
        run = PollRun(source=SOURCE)
        s.add(run)
        s.flush()
        return run.id, mark


def _finish(db: str, run_id: int, result: ReconcileResult, high_water: int | None) -> ReconcileResult:
    with session_scope(db) as s:
        run = s.get(PollRun, run_id)
        assert run is not None
        run.finished_at, run.outcome, run.error = utcnow(), result.outcome, result.error
        run.requests_seen, run.events_emitted, run.high_water = result.tickets_seen, len(result.emitted), high_water
    return result


def _ticket_body(ticket: Ticket, since: str) -> bytes:
    # Callout-shaped, so one run handles both. PersonID and EventTime stay null: lastActivity* name
    # the last activity, which need not be the status change; the run asks TicketHistory instead.
    return json.dumps({
        "Action": "Update", "EntityType": "Ticket", "Id": ticket.id, "Guid": None, "SequenceNumber": None,
        "EventTime": None, "PersonID": None,
        "Fields": {"Status": ticket.status, "TicketNumber": ticket.ticket_number, WINDOW_START: since,
                   "LastActivityResourceID": ticket.last_activity_resource_id},
    }, sort_keys=True).encode()


def _note_body(note: TicketNote) -> bytes:
    return json.dumps({
        "Action": "Create", "EntityType": "TicketNote", "Id": note.id, "Guid": None, "SequenceNumber": None,
        "EventTime": _iso(as_utc(note.create_date_time) or utcnow()), "PersonID": note.creator_resource_id,
        "Fields": {"TicketID": note.ticket_id, "Title": note.title, "NoteType": note.note_type,
                   "CreatorResourceID": note.creator_resource_id, "CreatedByContactID": note.created_by_contact_id},
    }, sort_keys=True).encode()


def _high_water(tickets: list[Ticket], notes: list[TicketNote], previous: int | None) -> int | None:
    stamps = [int(d.timestamp()) for d in (*(as_utc(t.last_activity_date) for t in tickets),
                                            *(as_utc(n.create_date_time) for n in notes)) if d is not None]
    return max([*stamps, *([previous] if previous is not None else [])], default=None)


def _overdue_deferred(client: AutotaskClient, status_id: int, now: datetime) -> list[Ticket]:
    """Tickets still in ``status_id`` (Deferred) whose due date has passed: no callout reports a date passing."""
    items = client.query_all("Tickets", [{"op": "eq", "field": "status", "value": status_id},
                                         {"op": "lt", "field": "dueDateTime", "value": _iso(now)}],
                             include_fields=["ticketNumber", "status", "lastActivityDate", "lastActivityResourceID",
                                             "dueDateTime"])
    return [Ticket.model_validate(item) for item in items]


def _overdue_body(ticket: Ticket, now: datetime) -> bytes:
    return json.dumps({
        "Action": "Update", "EntityType": "Ticket", "Id": ticket.id, "Guid": None, "SequenceNumber": None,
        "EventTime": _iso(now), "PersonID": None,
        "Fields": {"Status": ticket.status, "TicketNumber": ticket.ticket_number, OVERDUE_DEFERRED: True,
                   "DueDateTime": _iso(as_utc(ticket.due_date_time) or now)},
    }, sort_keys=True).encode()


def reconcile_once(db: str, client: AutotaskClient, enqueue: intake.Enqueue, *, watched_status_ids: set[int],
                   own_resource_id: int | None, now: datetime | None = None,
                   overdue_status_id: int | None = None) -> ReconcileResult:
    """One reconciliation; with ``overdue_status_id`` (Deferred) also the tickets whose due date passed.

    Its reads observe: they use the hourly budget less the share kept for status writes.
    """
    with observing():
        return _reconcile(db, client, enqueue, watched_status_ids=watched_status_ids,
                          own_resource_id=own_resource_id, now=now, overdue_status_id=overdue_status_id)


def _reconcile(db: str, client: AutotaskClient, enqueue: intake.Enqueue, *, watched_status_ids: set[int],
               own_resource_id: int | None, now: datetime | None,
               overdue_status_id: int | None) -> ReconcileResult:
    run_id, mark = _start(db)
    if run_id is None:
        return ReconcileResult("busy")
    now = now or utcnow()
    try:
        if mark is None:
            tickets = client.tickets_active_since(_iso(now - BASELINE_LOOKBACK))
            with session_scope(db) as s:
                for ticket in tickets:
                    row = s.get(TicketState, ticket.id) or TicketState(ticket_id=ticket.id, updated_at=store.NEVER)
                    if row.observed_status_id is None:
                        row.observed_status_id, row.observed_at = ticket.status, as_utc(ticket.last_activity_date)
                        s.add(row)
            return _finish(db, run_id, ReconcileResult("baseline", len(tickets)), int(now.timestamp()))
        since = _iso(datetime.fromtimestamp(mark, tz=UTC) - OVERLAP)
        tickets = client.tickets_active_since(since)
        notes = client.notes_created_since(since)
        overdue = _overdue_deferred(client, overdue_status_id, now) if overdue_status_id is not None else []
    except AutotaskError as exc:
        log.warning("autotask.reconcile.failed", extra={"error": exc.reason})
        return _finish(db, run_id, ReconcileResult("failed", error=exc.reason[:500]), mark)
    except Exception as exc:
        _finish(db, run_id, ReconcileResult("failed", error=f"{type(exc).__name__}: {exc}"[:500]), mark)
        raise
    new_ids: list[int] = []
    with session_scope(db) as s:
        for ticket in tickets:
            known = s.get(TicketState, ticket.id)
            observed = known.observed_status_id if known is not None else None
            if observed == ticket.status:
                continue
            if observed is None and ticket.status not in watched_status_ids:
                # First sight, in a status no rule acts on: noted as what atrelay now knows, no change row.
                # Nothing trusts it as "unchanged since": the write gate reads TicketHistory whenever a
                # ticket was active after the event it is about to apply.
                known = known or TicketState(ticket_id=ticket.id, updated_at=store.NEVER)
                known.observed_status_id, known.observed_at = ticket.status, None
                s.add(known)
                continue
            # A status other than the one atrelay knew (or a first sight a rule cares about): a change,
            # recorded by an observation run with the time and person TicketHistory gives for it
            # (never the last activity's); a change from before this window is recorded, not acted on.
            stamp = _iso(as_utc(ticket.last_activity_date) or now)
            event_id = intake.record_in(s, store.NewEvent(
                source=Source.AUTOTASK.value, external_id=f"{RECONCILE_PREFIX}{ticket.id}:{ticket.status}:{stamp}",
                event_type=Observation.TICKET_CHANGED.value, body=_ticket_body(ticket, since), headers={},
                ticket_id=ticket.id, occurred_at=as_utc(ticket.last_activity_date)))
            if event_id is not None:
                new_ids.append(event_id)
        for note in notes:
            if own_resource_id is not None and note.creator_resource_id == own_resource_id:
                continue  # atrelay's own notes: nothing to learn
            event_id = intake.record_in(s, store.NewEvent(
                source=Source.AUTOTASK.value, external_id=f"note:{note.id}", event_type=Observation.NOTE_ADDED.value,
                body=_note_body(note), headers={}, ticket_id=note.ticket_id,
                occurred_at=as_utc(note.create_date_time)))
            if event_id is not None:
                new_ids.append(event_id)
        for ticket in overdue:
            # Keyed by the due date: one guard run per ticket and due date, however often this runs.
            due = _iso(as_utc(ticket.due_date_time) or now)
            event_id = intake.record_in(s, store.NewEvent(
                source=Source.AUTOTASK.value, external_id=f"{RECONCILE_PREFIX}overdue:{ticket.id}:{due}",
                event_type=Observation.TICKET_CHANGED.value, body=_overdue_body(ticket, now), headers={},
                ticket_id=ticket.id, occurred_at=now))
            if event_id is not None:
                new_ids.append(event_id)
    intake.enqueue_committed(enqueue, new_ids)
    if new_ids:
        log.warning("autotask.reconcile.recovered", extra={"count": len(new_ids), "event_ids": new_ids[:20]})
    return _finish(db, run_id, ReconcileResult("ok", len(tickets), tuple(new_ids)), _high_water(tickets, notes, mark))
