"""Ticket reads shared between runs: one Autotask query reads the tickets that waiting events need.

Why: every transition needs the ticket's current status (the already-set and superseded rules), and
Autotask has no conditional PATCH, so a GET before each PATCH made reads a third of all calls. Under
load many events wait, each on its own ticket: the first run to need a read takes the tickets of the
events queued behind it too (one ``Tickets/query`` with an ``in`` filter) and keeps what it read in
``ticket_state``; the runs after it find their ticket there.

What keeps this safe (a person's change is never overwritten because of an old read):

* a read is used only while it is fresh (``max_age`` seconds, ``ATRELAY_AUTOTASK_READ_MAX_AGE_SECONDS``),
  and only under the ticket's lease (no other atrelay run writes the ticket meanwhile);
* it is not used while an Autotask ticket callout for the ticket waits to be run, and it is dropped
  the moment atrelay hears of a status change it did not make (a callout or reconciliation,
  :func:`pipelines.store.observe_status`), so the next run reads again;
* it is not used while a PATCH to the ticket has an unknown outcome (a timeout, a run that died
  mid-call): the ticket is read again;
* atrelay's own PATCH drops it too. What atrelay wrote is not kept as a read: only a follow-up that
  runs right after its cause (pipelines.process) may act on it, since a delayed one waits precisely
  so that a person can act meanwhile.

The remaining window is a person's change that Autotask has not reported yet, at most ``max_age``
old; with one GET per event the same window is one round trip. ``max_age`` 0 turns sharing off.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import JSON, bindparam, case, or_, update
from sqlmodel import Session, col, select

from connectors.autotask.models import Ticket
from connectors.common.events import Observation
from pipelines.audit import EffectLedger, EventState, InboundEvent, TicketState
from pipelines.clock import as_utc
from pipelines.context import Context
from pipelines.db import db_now, insert_for, session_scope
from pipelines.store import NEVER

__all__ = ["READING_SECONDS", "claim_reads", "ensure_rows", "fresh_read", "keep_reads", "read_ticket",
           "untouched_since", "wait_for_read"]

#: How long a run may hold "reading" on tickets before others read them themselves (a run that died
#: mid-query must not leave tickets unreadable).
READING_SECONDS = 5.0
_WAIT_STEP = 0.02
_UNFINISHED = [EventState.ACCEPTED, EventState.PROCESSING, EventState.RETRYING, EventState.PARKED]


def untouched_since(db: str, ticket_id: int, since: datetime) -> bool:
    """Has atrelay heard of nothing on the ticket since ``since`` (a callout run, one waiting, a PATCH in doubt)?

    What a follow-up checks before acting on the status its cause just wrote, without a read.
    """
    with session_scope(db) as s:
        ts = s.get(TicketState, ticket_id)
        if ts is not None and ts.read_dropped_at is not None and ts.read_dropped_at > since:
            return False
        return not _doubt(s, ticket_id)


def _doubt(s: Session, ticket_id: int, *, callouts: bool = True) -> bool:
    """A callout for the ticket waits to be run (``callouts``), or a PATCH to it has an unknown outcome."""
    # A callout about this ticket not yet run may report a change newer than what atrelay knows.
    waiting = callouts and s.exec(select(InboundEvent.id).where(
        InboundEvent.ticket_id == ticket_id, InboundEvent.event_type == Observation.TICKET_CHANGED.value,
        col(InboundEvent.state).in_(_UNFINISHED)).limit(1)).first()
    # A PATCH whose outcome is unknown (a timeout, a run that died mid-call) may have landed since:
    # only Autotask can say, so the ticket is read again.
    unconfirmed = s.exec(select(EffectLedger.event_id).where(
        EffectLedger.ticket_id == ticket_id, col(EffectLedger.patch_started_at).is_not(None),
        col(EffectLedger.patched_at).is_(None)).limit(1)).first()
    return bool(waiting) or unconfirmed is not None


def fresh_read(db: str, ticket_id: int, max_age: float, *, after: datetime | None = None) -> Ticket | None:
    """The ticket as a shared read saw it, if that read is at most ``max_age`` seconds old and trusted.

    ``after`` (a callout run: when its callout was received): the read must have been sent after it,
    so it shows the change the callout reports; other callouts waiting for the ticket do not matter
    then (what is read later is only newer). A partner event's run (no ``after``) never acts on a read
    while a callout for its ticket waits: that callout may report a person's change.
    """
    if max_age <= 0:
        return None
    cutoff = db_now(db) - timedelta(seconds=max_age)
    with session_scope(db) as s:
        ts = s.get(TicketState, ticket_id)
        if ts is None or ts.read_at is None or ts.read_status_id is None or ts.read_at < cutoff:
            return None
        if ts.read_dropped_at is not None and ts.read_dropped_at >= ts.read_at:
            return None  # dropped after it was sent (a change heard of, or atrelay's own write)
        if after is not None and ts.read_at <= after:
            return None  # sent before the callout arrived: may not show its change yet
        if _doubt(s, ticket_id, callouts=after is None):
            return None
        if ts.read_item:
            return Ticket.model_validate({**ts.read_item, "id": ticket_id, "status": ts.read_status_id})
        return Ticket(id=ticket_id, status=ts.read_status_id, lastActivityDate=ts.read_activity_at)


def claim_reads(db: str, ticket_id: int, *, limit: int, max_age: float, callouts: bool = False) -> list[int] | None:
    """Tickets this run should read in one call: ``ticket_id`` first, then those of waiting events
    (``callouts``: of waiting callouts, for a callout run; else of waiting partner events).

    Marks them as being read, so concurrent runs do not query the same tickets. None when another
    run is reading ``ticket_id`` right now (:func:`wait_for_read` then waits for its result).
    Waiting events are taken oldest first (the order the broker hands them out), so what is read
    now is what runs next, well within ``max_age``.

    Concurrent runs pick overlapping tickets: rows are created in ticket order, in a transaction of
    their own, and claimed with ``FOR UPDATE SKIP LOCKED`` (a ticket another run is claiming is
    simply not ours), so two runs never wait on each other, let alone deadlock.
    """
    now = db_now(db)
    with session_scope(db) as s:
        others: list[int] = []
        if limit > 1:
            # A partner event's read is of no use while a callout for its ticket waits (fresh_read), and
            # a callout's read only for callouts received before it: each kind batches its own.
            kind = (col(InboundEvent.event_type) == Observation.TICKET_CHANGED.value if callouts
                    else col(InboundEvent.event_type).not_in([o.value for o in Observation]))
            rows = s.exec(
                select(InboundEvent.ticket_id)
                .where(col(InboundEvent.state).in_([EventState.ACCEPTED, EventState.RETRYING]),
                       col(InboundEvent.ticket_id).is_not(None), col(InboundEvent.ticket_id) != ticket_id, kind,
                       or_(col(InboundEvent.not_before).is_(None), col(InboundEvent.not_before) <= now))
                .order_by(col(InboundEvent.updated_at))
                .limit(limit * 2)
            ).all()
            others = list(dict.fromkeys(int(t) for t in rows if t is not None))
        wanted = [ticket_id, *others]
        _ensure_rows(s, wanted)
    stale = now - timedelta(seconds=max_age)
    rank = case({t: i for i, t in enumerate(wanted)}, value=col(TicketState.ticket_id))  # own ticket, then oldest
    free = (select(TicketState.ticket_id)
            .where(col(TicketState.ticket_id).in_(wanted),
                   or_(col(TicketState.reading_until).is_(None), col(TicketState.reading_until) < now),
                   or_(col(TicketState.read_at).is_(None), col(TicketState.read_at) < stale))
            .order_by(rank).limit(max(limit, 1))
            .with_for_update(skip_locked=True))  # PostgreSQL; SQLite runs one writer at a time anyway
    with session_scope(db) as s:
        got = {int(t) for t in s.execute(
            update(TicketState).where(col(TicketState.ticket_id).in_(free.scalar_subquery()))
            .values(reading_until=now + timedelta(seconds=READING_SECONDS))
            .returning(col(TicketState.ticket_id))).scalars().all()}
    if ticket_id not in got:
        _release(db, got)  # its row is being read or claimed by another run: the others are free again
        return None
    return [t for t in wanted if t in got]


def _ensure_rows(s: Session, ticket_ids: Iterable[int]) -> None:
    """ticket_state rows for these tickets (created in ticket order, so concurrent runs never deadlock)."""
    wanted = list(ticket_ids)
    known = set(s.exec(select(TicketState.ticket_id).where(col(TicketState.ticket_id).in_(wanted))).all())
    missing = sorted(set(wanted) - {int(t) for t in known})
    if missing:
        # updated_at means "atrelay last wrote to this ticket": never, for a new row.
        new_rows = [{"ticket_id": t, "updated_at": NEVER} for t in missing]
        s.execute(insert_for(s.get_bind().dialect.name)(TicketState).values(new_rows)
                  .on_conflict_do_nothing(index_elements=["ticket_id"]))


def ensure_rows(db: str, ticket_ids: Iterable[int]) -> None:
    with session_scope(db) as s:
        _ensure_rows(s, ticket_ids)


def _release(db: str, ticket_ids: Iterable[int]) -> None:
    ids = list(ticket_ids)
    if not ids:
        return
    with session_scope(db) as s:
        s.execute(update(TicketState).where(col(TicketState.ticket_id).in_(ids)).values(reading_until=None))


def keep_reads(db: str, tickets: Iterable[Ticket], read_at: datetime, claimed: Iterable[int]) -> None:
    """Keep what one call read (``read_at``: when it was sent) and end the "reading" marks.

    A ticket dropped since ``read_at`` (a change heard of, or atrelay's own write), or read again
    since, keeps no read from this call.
    """
    found = {t.id: t for t in tickets}
    ids = sorted(set(claimed) | set(found))
    table = TicketState.__table__  # type: ignore[attr-defined]
    # Conditions checked by the database as it writes (not on values loaded before): a drop or a
    # newer read committed meanwhile by another run always wins.
    keep = (update(table)
            .where(table.c.ticket_id == bindparam("tid"),
                   or_(table.c.read_dropped_at.is_(None), table.c.read_dropped_at < bindparam("sent")),
                   or_(table.c.read_at.is_(None), table.c.read_at < bindparam("sent")))
            .values(read_status_id=bindparam("status"), read_activity_at=bindparam("activity"),
                    read_item=bindparam("item", type_=JSON()), read_at=bindparam("sent")))
    with session_scope(db) as s:
        s.execute(update(TicketState).where(col(TicketState.ticket_id).in_(ids)).values(reading_until=None))
        if found:
            s.connection().execute(keep, [
                {"tid": t, "status": found[t].status, "activity": as_utc(found[t].last_activity_date),
                 "item": found[t].model_dump(mode="json", by_alias=True, exclude_none=True), "sent": read_at}
                for t in sorted(found)])


def wait_for_read(db: str, ticket_id: int, max_age: float, timeout: float = READING_SECONDS, *,
                  after: datetime | None = None) -> Ticket | None:
    """Wait (briefly) for another run's read of this ticket; None if it does not come."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = fresh_read(db, ticket_id, max_age, after=after)
        if found is not None:
            return found
        with session_scope(db) as s:
            ts = s.get(TicketState, ticket_id)
            if ts is None or ts.reading_until is None or ts.reading_until < db_now(db):
                return None  # nobody is reading it any more (a failed query): read it ourselves
        time.sleep(_WAIT_STEP)
    return None


def read_ticket(ctx: Context, ticket_id: int, *, callout_received: datetime | None = None) -> Ticket:
    """The ticket now, for a run under its lease: a fresh read shared by runs, else one query for it and
    the tickets of the events waiting behind it (``callout_received``: a callout run's, and callouts').

    With sharing off (``ATRELAY_AUTOTASK_READ_MAX_AGE_SECONDS=0``) every run reads its own ticket.
    """
    max_age = ctx.read_max_age_seconds
    if max_age <= 0:
        return ctx.client.get_ticket(ticket_id)
    shared = fresh_read(ctx.db, ticket_id, max_age, after=callout_received)
    if shared is not None:
        return shared
    ids = claim_reads(ctx.db, ticket_id, limit=ctx.read_batch, max_age=max_age,
                      callouts=callout_received is not None)
    if ids is None:  # another run is reading this ticket right now: its answer is as good as ours
        shared = wait_for_read(ctx.db, ticket_id, max_age, after=callout_received)
        return shared if shared is not None else ctx.client.get_ticket(ticket_id)
    sent = db_now(ctx.db)
    tickets: list[Ticket] = []
    try:
        tickets = [ctx.client.get_ticket(ticket_id)] if len(ids) == 1 else ctx.client.get_tickets(ids)
    finally:
        keep_reads(ctx.db, tickets, sent, ids)  # also when it failed: the marks go
    mine = next((t for t in tickets if t.id == ticket_id), None)
    # Absent from the query's answer: the GET reports why (deleted, or not visible to the API user).
    return mine if mine is not None else ctx.client.get_ticket(ticket_id)
