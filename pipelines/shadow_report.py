"""The shadow report: what atrelay would have written, beside what then happened to each ticket.

For every event accepted in shadow mode (and every write held back because of it) one line: would it
have changed the status, written only a note, or skipped (and why)? For a would-be status change, the
status changes Autotask reported afterwards (callouts and reconciliation, ``ticket_status_changes``)
decide: **agree** when someone other than atrelay set the same status within the agreement window
(``ATRELAY_SHADOW_AGREE_MINUTES``) of atrelay's would-be write, **disagree** when they set another one,
**no change** when the window passed with no change, **pending** while it is still open. Lines are
summed per rule (event type), with the tickets worth a look.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement
from sqlmodel import and_, col, or_, select

from pipelines.audit import EventState, InboundEvent, ShadowPeriod, ShadowWrite, TicketStatusChange
from pipelines.db import session_scope, utcnow

__all__ = ["EventLine", "RuleLine", "ShadowReport", "shadow_report"]

#: Autotask times a callout to the second (``EventTime``): a change in the same second as the event's
#: receipt may carry a time just before it.
CLOCK_SLACK = timedelta(seconds=2)
VERDICTS = ("agree", "disagree", "no-change", "pending", "note-only", "skipped", "waiting")
_HELD = "shadow: nothing written ("


@dataclass(frozen=True)
class EventLine:
    event_id: int
    rule: str  # the event type
    source: str
    ticket: str  # its number, else its id
    state: str
    verdict: str  # one of VERDICTS
    would_set: str | None  # the status atrelay would have PATCHed
    note: bool  # atrelay would have written a note
    people_set: str | None  # what someone else set in the window (the first matching, else the first)
    reason: str | None  # why it was skipped (or the run's reason)


@dataclass
class RuleLine:
    rule: str
    events: int = 0
    would_apply: int = 0
    agree: int = 0
    disagree: int = 0
    no_change: int = 0
    pending: int = 0
    note_only: int = 0
    waiting: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    look_at: list[str] = field(default_factory=list)  # tickets where someone set another status


@dataclass(frozen=True)
class ShadowReport:
    since: datetime | None
    until: datetime | None  # None: shadow mode still on
    agree_minutes: int
    rules: list[RuleLine]
    events: list[EventLine]

    @property
    def agreement(self) -> tuple[int, int]:
        """(agreed, decided) over every rule: decided = agreed + disagreed."""
        agreed = sum(r.agree for r in self.rules)
        return agreed, agreed + sum(r.disagree for r in self.rules)


def _short(reason: str | None) -> str:
    """A skip reason's kind (``superseded``, ``stale``, ``already-set``...), without its particulars."""
    text = reason or "-"
    # A run that held a write back says so around its own reason (pipelines.runbase: "shadow: nothing
    # written (stale: ...; note written)"): the kind is the inner reason's.
    if text.startswith(_HELD) and text.endswith(")"):
        text = text[len(_HELD):-1]
    text = text.removeprefix("shadow: ")
    return re.split(r"[:;(]", text, maxsplit=1)[0].strip()[:40] or "-"


@dataclass(frozen=True)
class _Loaded:
    spans: list[ShadowPeriod]
    writes: list[ShadowWrite]
    events: list[InboundEvent]
    changes: list[TicketStatusChange]  # by anyone but atrelay, on the tickets of would-be PATCHes


def _load(db: str, since: datetime | None) -> _Loaded:
    with session_scope(db) as s:
        spans = list(s.exec(select(ShadowPeriod).order_by(col(ShadowPeriod.started_at))).all())
        if since is not None:
            spans = [p for p in spans if p.ended_at is None or p.ended_at > since]
        writes = list(s.exec(select(ShadowWrite).order_by(col(ShadowWrite.id))).all())
        conditions: list[ColumnElement[bool]] = []
        for p in spans:
            inside = col(InboundEvent.received_at) >= (max(p.started_at, since) if since is not None else p.started_at)
            before_end = col(InboundEvent.received_at) < p.ended_at if p.ended_at is not None else None
            conditions.append(inside if before_end is None else and_(inside, before_end))
        # Writes held back after the switch (events accepted in shadow mode, or derived from one) count too.
        held = {w.event_id for w in writes if since is None or w.at >= since}
        if held:
            conditions.append(col(InboundEvent.id).in_(held))
        events = list(s.exec(select(InboundEvent).where(or_(*conditions)).order_by(col(InboundEvent.id))).all()
                      ) if conditions else []
        tickets = {w.ticket_id for w in writes if w.kind == "patch"}
        changes = list(s.exec(select(TicketStatusChange).where(
            col(TicketStatusChange.ticket_id).in_(tickets), col(TicketStatusChange.by_atrelay).is_(False))
            .order_by(col(TicketStatusChange.changed_at))).all()) if tickets else []
    return _Loaded(spans, writes, events, changes)


def _judge(e: InboundEvent, mine: dict[str, ShadowWrite], loaded: _Loaded, *, labels: dict[int, str | None],
           window: timedelta, now: datetime) -> EventLine:
    """One event's line: its would-be write against the status changes that followed it."""
    assert e.id is not None
    patch, note = mine.get("patch"), mine.get("note")
    ticket = e.ticket_number or (str(e.ticket_id) if e.ticket_id is not None else "-")
    people: str | None = None
    if patch is not None:
        ticket = e.ticket_number or str(patch.ticket_id)
        seen = [c for c in loaded.changes if c.ticket_id == patch.ticket_id
                and e.received_at - CLOCK_SLACK <= c.changed_at <= patch.at + window]
        if any(c.to_status_id == patch.to_status_id for c in seen):
            verdict, people = "agree", patch.to_status
        elif seen:
            verdict = "disagree"
            people = labels.get(seen[0].to_status_id) or f"status #{seen[0].to_status_id}"
        else:
            verdict = "pending" if now < patch.at + window else "no-change"
    elif note is not None and e.state != EventState.SKIPPED:
        verdict = "note-only"  # the rule writes a note only; a skip that still notes (stale...) is a skip
    else:
        verdict = "skipped" if EventState(e.state).final else "waiting"
    return EventLine(e.id, e.event_type, e.source, ticket, e.state, verdict,
                     patch.to_status if patch is not None else None, note is not None, people, e.reason)


def _tally(rule: RuleLine, line: EventLine) -> None:
    rule.events += 1
    if line.verdict == "skipped":
        rule.skipped[_short(line.reason)] += 1
    elif line.verdict == "note-only":
        rule.note_only += 1
    elif line.verdict == "waiting":
        rule.waiting += 1
    else:
        rule.would_apply += 1
        if line.verdict == "agree":
            rule.agree += 1
        elif line.verdict == "disagree":
            rule.disagree += 1
            if line.ticket not in rule.look_at:
                rule.look_at.append(line.ticket)
        elif line.verdict == "no-change":
            rule.no_change += 1
        else:
            rule.pending += 1


def shadow_report(db: str, *, agree_minutes: int = 60, since: datetime | None = None,
                  now: datetime | None = None) -> ShadowReport:
    """Every event accepted in shadow mode (since ``since``), judged against what happened after it."""
    loaded = _load(db, since)
    labels = {w.to_status_id: w.to_status for w in loaded.writes if w.to_status_id is not None}
    by_event: dict[int, dict[str, ShadowWrite]] = {}
    for w in loaded.writes:
        by_event.setdefault(w.event_id, {})[w.kind] = w
    rules: dict[str, RuleLine] = {}
    lines = []
    for e in loaded.events:
        assert e.id is not None
        line = _judge(e, by_event.get(e.id, {}), loaded, labels=labels, window=timedelta(minutes=agree_minutes),
                      now=now or utcnow())
        lines.append(line)
        _tally(rules.setdefault(e.event_type, RuleLine(e.event_type)), line)
    spans = loaded.spans
    first = min((p.started_at for p in spans), default=None)
    last = None if any(p.ended_at is None for p in spans) else max(
        (p.ended_at for p in spans if p.ended_at is not None), default=None)
    return ShadowReport(since or first, last, agree_minutes, sorted(rules.values(), key=lambda r: r.rule), lines)
