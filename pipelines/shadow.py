"""Shadow mode (``ATRELAY_MODE=shadow``): everything runs except the Autotask writes, which are recorded.

A new deployment earns trust by showing, for a week, what it *would* have written beside what people
did. Two facts make that safe:

* a process in shadow mode never writes: at the two write points of a run (the status PATCH and the
  note POST, pipelines/process.py) it records the write here instead;
* an event **accepted** in shadow mode is never written later, whatever mode runs it: the periods the
  deployment spent in shadow mode are kept (``shadow_periods``), and an event received inside one, or
  derived from such an event (a follow-up, a guard), is recorded here instead of written even by a live
  process. Switching to live therefore changes nothing for what was already accepted; the count is
  told at the switch.

The first process that starts in shadow mode opens a period; the first that starts live closes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from pipelines.audit import EventState, InboundEvent, ShadowPeriod, ShadowWrite
from pipelines.db import session_scope, storable_counted, utcnow
from pipelines.store import report_replaced

__all__ = ["ModeChange", "ShadowSummary", "accepted_in_shadow", "periods", "record_mode", "record_write",
           "summary"]

#: How far up a chain of derived events (follow-up of a follow-up, guard of an observation) to look.
_MAX_CAUSES = 5
_FINAL = [s.value for s in EventState if s.final]


@dataclass(frozen=True)
class ModeChange:
    """What starting in a mode changed: ``switched`` is ``"shadow"`` or ``"live"`` for the process that
    made the switch (None when the deployment already was in that mode)."""

    switched: str | None
    since: datetime | None = None  # the shadow period's start
    accepted: int = 0  # events accepted in it: never written to Autotask
    waiting: int = 0  # of those, still waiting (not final) at the switch


@dataclass(frozen=True)
class ShadowSummary:
    """The current or last shadow period, for doctor, the dashboard and the banner."""

    open: bool
    since: datetime | None
    until: datetime | None
    accepted: int
    would_patch: int
    would_note: int


def _accepted_between(s: Session, start: datetime, end: datetime | None) -> tuple[int, int]:
    """(events received in [start, end), of which not final)."""
    where = [col(InboundEvent.received_at) >= start]
    if end is not None:
        where.append(col(InboundEvent.received_at) < end)
    total = s.exec(select(func.count()).select_from(InboundEvent).where(*where)).one()
    waiting = s.exec(select(func.count()).select_from(InboundEvent).where(
        *where, col(InboundEvent.state).not_in(_FINAL))).one()
    return int(total), int(waiting)


def record_mode(db: str, *, shadow: bool, by: str) -> ModeChange:
    """Record the mode a starting process runs in: open a shadow period, or close the open one.

    Two processes that start together may both open one; overlapping periods mean the same thing, and
    a live process closes them all. Closing is one conditional UPDATE: only the process whose UPDATE
    changed rows tells the count.
    """
    now = utcnow()
    with session_scope(db) as s:
        open_since = s.exec(select(func.min(ShadowPeriod.started_at)).where(
            col(ShadowPeriod.ended_at).is_(None))).one()
        if shadow:
            if open_since is not None:
                return ModeChange(None, open_since)
            s.add(ShadowPeriod(started_at=now, started_by=by[:160]))
            return ModeChange("shadow", now)
        if open_since is None:
            return ModeChange(None)
        closed = s.execute(update(ShadowPeriod).where(col(ShadowPeriod.ended_at).is_(None))
                           .values(ended_at=now, ended_by=by[:160]))
        if not closed.rowcount:  # type: ignore[attr-defined]  # another live process closed it first: it tells
            return ModeChange(None)
        accepted, waiting = _accepted_between(s, open_since, now)
        return ModeChange("live", open_since, accepted, waiting)


def periods(db: str) -> list[ShadowPeriod]:
    with session_scope(db) as s:
        return list(s.exec(select(ShadowPeriod).order_by(col(ShadowPeriod.started_at))).all())


def _in_a_period(spans: list[ShadowPeriod], at: datetime) -> bool:
    return any(p.started_at <= at and (p.ended_at is None or at < p.ended_at) for p in spans)


def accepted_in_shadow(db: str, event_id: int) -> bool:
    """True when the event, or the event it was derived from, was received while the deployment ran in
    shadow mode: it is never written to Autotask. One small query when atrelay never ran in shadow."""
    with session_scope(db) as s:
        spans = list(s.exec(select(ShadowPeriod)).all())
        if not spans:
            return False
        current: int | None = event_id
        for _ in range(_MAX_CAUSES):
            if current is None:
                return False
            row = s.exec(select(InboundEvent.received_at, InboundEvent.caused_by_id)
                         .where(InboundEvent.id == current)).first()
            if row is None:
                return False
            received_at, current = row
            if _in_a_period(spans, received_at):
                return True
        return False


def record_write(db: str, *, event_id: int, kind: str, ticket_id: int, event_type: str,
                 from_status_id: int | None = None, to_status_id: int | None = None, to_status: str | None = None,
                 note_text: str | None = None, why: str) -> None:
    """Record a write not made (once per event and kind: a re-run of the event records nothing new)."""
    assert kind in ("patch", "note") and why in ("mode", "accepted"), (kind, why)
    try:
        with session_scope(db) as s:
            if s.exec(select(ShadowWrite.id).where(ShadowWrite.event_id == event_id,
                                                   ShadowWrite.kind == kind)).first() is not None:
                return
            stored, replaced = storable_counted(note_text)
            report_replaced(s, event_id, "shadow note_text", replaced)
            s.add(ShadowWrite(event_id=event_id, kind=kind, ticket_id=ticket_id, event_type=event_type,
                              from_status_id=from_status_id, to_status_id=to_status_id, to_status=to_status,
                              note_text=stored, at=utcnow(), why=why))
    except IntegrityError:  # a concurrent re-run recorded it first
        return


def summary(db: str, *, count_events: bool = True) -> ShadowSummary | None:
    """The open shadow period, else the last one; None when atrelay never ran in shadow mode.
    ``count_events=False`` leaves ``accepted`` at 0 (counting reads the events of the period)."""
    with session_scope(db) as s:
        spans = list(s.exec(select(ShadowPeriod).order_by(col(ShadowPeriod.started_at))).all())
        if not spans:
            return None
        opened = [p for p in spans if p.ended_at is None]
        if opened:
            since, until = min(p.started_at for p in opened), None
        else:
            last = max(spans, key=lambda p: p.ended_at or p.started_at)
            since, until = last.started_at, last.ended_at
        accepted = _accepted_between(s, since, until)[0] if count_events else 0
        counts = dict(s.exec(select(ShadowWrite.kind, func.count()).where(col(ShadowWrite.at) >= since)
                             .group_by(ShadowWrite.kind)).all())
        return ShadowSummary(bool(opened), since, until, accepted, int(counts.get("patch", 0)),
                             int(counts.get("note", 0)))
