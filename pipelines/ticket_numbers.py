"""Ticket numbers resolved in batches, and kept: an event that names its ticket by number costs what one
that names it by id does.

Why: real senders name the ticket by its number (a form carries ``T20261126.0061``, which the person
filling it in can see); Autotask's API is by id. Resolving each number with its own ``Tickets/query``
made a burst of forms cost three calls per transition where id-named events cost two. Now the first
run that needs a number asks for its own and for those of the events waiting behind it, in one
``Tickets/query`` with an ``in`` filter on ``ticketNumber``: the answer is the tickets themselves, so
the resolution is also their read (shared like any other, pipelines.ticket_reads), the waiting events
learn their ticket id (they then batch like id-named ones), and the mapping is kept, since a ticket's
number never changes. A number Autotask does not know is not kept (the event says so: ticket-not-found).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from sqlalchemy import case, or_, update
from sqlmodel import col, select

from connectors.autotask.errors import TicketNotFound
from connectors.autotask.models import Ticket
from connectors.common.events import Observation
from pipelines import ticket_reads
from pipelines.audit import EventState, InboundEvent, TicketNumber
from pipelines.context import Context
from pipelines.db import db_now, insert_for, session_scope

__all__ = ["known", "resolve"]

#: How long a run may hold "resolving" on numbers before others ask Autotask themselves.
RESOLVING_SECONDS = 5.0
_WAIT_STEP = 0.02


def known(db: str, number: str) -> int | None:
    """The ticket id a number was found to name, if it was asked before."""
    with session_scope(db) as s:
        row = s.get(TicketNumber, number)
        return row.ticket_id if row is not None else None


def _claim(db: str, number: str, limit: int) -> list[str] | None:
    """Numbers this run should ask for: ``number`` first, then those of waiting events. None when another
    run is asking for ``number`` right now."""
    now = db_now(db)
    with session_scope(db) as s:
        others: list[str] = []
        if limit > 1:
            rows = s.exec(
                select(InboundEvent.ticket_number)
                .where(col(InboundEvent.state).in_([EventState.ACCEPTED, EventState.RETRYING]),
                       col(InboundEvent.ticket_id).is_(None), col(InboundEvent.ticket_number).is_not(None),
                       col(InboundEvent.ticket_number) != number,
                       col(InboundEvent.event_type).not_in([o.value for o in Observation]),
                       or_(col(InboundEvent.not_before).is_(None), col(InboundEvent.not_before) <= now))
                .order_by(col(InboundEvent.updated_at)).limit(limit * 2)).all()
            others = list(dict.fromkeys(str(n) for n in rows if n))
        wanted = [number, *others]
        # Rows in number order, in their own transaction: concurrent runs never deadlock on them.
        s.execute(insert_for(s.get_bind().dialect.name)(TicketNumber)
                  .values([{"number": n} for n in sorted(set(wanted))])
                  .on_conflict_do_nothing(index_elements=["number"]))
    rank = case({n: i for i, n in enumerate(wanted)}, value=col(TicketNumber.number))
    free = (select(TicketNumber.number)
            .where(col(TicketNumber.number).in_(wanted), col(TicketNumber.ticket_id).is_(None),
                   or_(col(TicketNumber.resolving_until).is_(None), col(TicketNumber.resolving_until) < now))
            .order_by(rank).limit(max(limit, 1))
            .with_for_update(skip_locked=True))
    with session_scope(db) as s:
        got = {str(n) for n in s.execute(
            update(TicketNumber).where(col(TicketNumber.number).in_(free.scalar_subquery()))
            .values(resolving_until=now + timedelta(seconds=RESOLVING_SECONDS))
            .returning(col(TicketNumber.number))).scalars().all()}
    if number not in got:
        _release(db, got)
        return None
    return [n for n in wanted if n in got]


def _release(db: str, numbers: set[str] | list[str]) -> None:
    if numbers:
        with session_scope(db) as s:
            s.execute(update(TicketNumber).where(col(TicketNumber.number).in_(list(numbers)))
                      .values(resolving_until=None))


def _keep(db: str, asked: list[str], tickets: list[Ticket], sent: datetime) -> None:
    """Keep what one query said: number -> id, the waiting events' ticket ids, the marks ended."""
    found = {t.ticket_number.casefold(): t for t in tickets if t.ticket_number}
    with session_scope(db) as s:
        for number in asked:
            ticket = found.get(number.casefold())
            s.execute(update(TicketNumber).where(col(TicketNumber.number) == number).values(
                resolving_until=None, ticket_id=ticket.id if ticket else None, resolved_at=sent if ticket else None))
            if ticket is not None:
                s.execute(update(InboundEvent).where(col(InboundEvent.ticket_number) == number,
                                                     col(InboundEvent.ticket_id).is_(None))
                          .values(ticket_id=ticket.id))
    if tickets:
        ticket_reads.ensure_rows(db, [t.id for t in tickets])


def resolve(ctx: Context, number: str) -> tuple[int, Ticket | None]:
    """The id of the ticket ``number`` names, and the ticket itself when this run read it.

    Raises TicketNotFound when Autotask knows no such number.
    """
    tid = known(ctx.db, number)
    if tid is not None:
        return tid, None
    limit = ctx.read_batch if ctx.read_max_age_seconds > 0 else 1
    asked = _claim(ctx.db, number, limit)
    if asked is None:  # another run is asking for it now: its answer is ours
        deadline = time.monotonic() + RESOLVING_SECONDS
        while time.monotonic() < deadline:
            time.sleep(_WAIT_STEP)
            tid = known(ctx.db, number)
            if tid is not None:
                return tid, None
        asked = [number]  # it never came (that run died): ask ourselves
    sent = db_now(ctx.db)
    tickets: list[Ticket] = []
    try:
        tickets = ctx.client.get_tickets_by_number(asked)
    finally:
        _keep(ctx.db, asked, tickets, sent)
    if ctx.read_max_age_seconds > 0:
        # The answer is each ticket as it is now: the read the runs behind this one will share.
        ticket_reads.keep_reads(ctx.db, tickets, sent, [t.id for t in tickets])
    mine = next((t for t in tickets if (t.ticket_number or "").casefold() == number.casefold()), None)
    if mine is None:
        raise TicketNotFound(f"no ticket numbered {number!r}", path="Tickets/query")
    return mine.id, mine
