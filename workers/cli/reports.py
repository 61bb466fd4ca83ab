"""`atrelay events` tables: recent events with outcomes, and one event's full story.

Partner-controlled text (webhook ids, bodies, headers, reasons quoting them) is never read as rich
markup: table cells are :class:`~rich.text.Text` and interpolated lines go through ``escape``, so a
``[/]`` cannot crash a report and a ``[link=...]`` cannot render as a link.
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from sqlmodel import col, select

from pipelines.audit import EventState, InboundEvent, PollRun, RejectedRequest
from pipelines.clock import clamped_from, signature_form
from pipelines.db import session_scope, utcnow
from pipelines.store import event_story
from workers.cli.output import Format, emit

__all__ = ["print_dead_letters", "print_event", "print_events", "print_polls", "print_rejections"]


def _ts(value: object) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if hasattr(value, "strftime") else "-"


_COLOURS = {"applied": "green", "dead": "red", "invalid": "red", "retrying": "yellow", "parked": "yellow",
            "skipped": "cyan"}


def _state_colour(column: str, value: str) -> str:
    return _COLOURS.get(value, "") if column == "state" else ""


def print_events(db: str, console: Console, *, limit: int, source: str | None, state: str | None,
                 ticket: str | None = None, fmt: Format = Format.table) -> None:
    with session_scope(db) as s:
        q = select(InboundEvent).order_by(col(InboundEvent.id).desc()).limit(limit)
        if source:
            q = q.where(InboundEvent.source == source)
        if state:
            q = q.where(InboundEvent.state == state)
        if ticket:
            t = ticket.strip()
            tid = int(t) if t.isascii() and t.isdigit() and len(t) <= 9 else None
            on_ticket = (col(InboundEvent.ticket_number) == t) | (
                col(InboundEvent.ticket_id) == tid if tid is not None else col(InboundEvent.id) < 0)
            # Follow-ups (MC No Contact -> Waiting Customer) may carry only the resolved ticket id.
            q = q.where(on_ticket | col(InboundEvent.caused_by_id).in_(select(InboundEvent.id).where(on_ticket)))
        rows = list(s.exec(q).all())
    # The table shortens a reason to a line; json and csv carry it whole (`events show` has the rest).
    cut = 80 if fmt == Format.table else None
    emit(console, title=f"Recent events ({len(rows)})", fmt=fmt, style=_state_colour,
         columns=("id", "received (UTC)", "source", "type", "ticket", "state", "reason", "tries"),
         rows=[(str(r.id), _ts(r.received_at), r.source, r.event_type, str(r.ticket_id or r.ticket_number or "-"),
                r.state, (r.reason or "")[:cut], str(r.attempts)) for r in rows])


def print_event(db: str, console: Console, event_id: int) -> bool:
    story = event_story(db, event_id)
    if story is None:
        return False
    ev, runs, attempts = story.event, story.runs, story.attempts
    console.print(f"[bold]Event #{ev.id}[/] {escape(ev.source)} {escape(ev.event_type)} -> "
                  f"[bold]{escape(ev.state)}[/] {escape(ev.reason or '')}")
    console.print(f"  external id: {escape(ev.external_id)}   received: {_ts(ev.received_at)}   "
                  f"happened: {_ts(ev.occurred_at)}   attempts: {ev.attempts}")
    console.print(f"  ticket: {ev.ticket_id or '-'} {escape(ev.ticket_number or '')}")
    if clamped_from(ev.headers):
        console.print(Text(f"  clock clamped: the partner said {clamped_from(ev.headers)}, over "
                           "ATRELAY_MAX_CLOCK_SKEW_SECONDS ahead of receipt; ordered by the receipt time"))
    if signature_form(ev.headers):
        console.print(Text(f"  signature verified over: {signature_form(ev.headers)}"))
    if ev.caused_by_id:
        console.print(f"  caused by: event #{ev.caused_by_id}")
    for child in story.children:
        console.print(f"  led to: event #{child.id} ({escape(child.event_type)})")
    console.print(Text(f"  headers: {ev.headers}"))
    console.print(Text(f"  body: {ev.body.decode('utf-8', 'replace')[:2000]}"))
    runs_table = Table(title="Pipeline runs", header_style="bold")
    for name in ("run", "started", "worker", "decision", "from -> to", "outcome", "reason"):
        runs_table.add_column(name, overflow="fold")
    for r in runs:
        runs_table.add_row(*(Text(c) for c in (
            str(r.id), _ts(r.started_at), r.worker or "-", r.decision or "-",
            f"{r.from_status or '-'} -> {r.to_status or '-'}", r.outcome or "(running)", r.reason or "")))
    console.print(runs_table)
    att_table = Table(title="Autotask attempts", header_style="bold")
    for name in ("run", "at", "method", "path", "status", "ms", "error"):
        att_table.add_column(name, overflow="fold")
    for a in attempts:
        att_table.add_row(*(Text(c) for c in (
            str(a.run_id or "-"), _ts(a.at), a.method, a.path, str(a.status_code or "-"),
            f"{a.duration_ms:.0f}", (a.error or "")[:120])))
    console.print(att_table)
    return True


#: What `atrelay dlq` lists: everything that waits for an operator's fix and replay.
_DLQ_STATES = [EventState.DEAD.value, EventState.INVALID.value]


def _age(value: object) -> str:
    if not hasattr(value, "tzinfo"):
        return "-"
    seconds = int((utcnow() - value).total_seconds())  # type: ignore[operator]
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def print_dead_letters(db: str, console: Console, *, limit: int, fmt: Format = Format.table) -> None:
    with session_scope(db) as s:
        # Invalid events (signed bodies that failed validation) wait for a fix and a replay just like
        # dead letters, so they are listed here too, with their state.
        rows = list(s.exec(select(InboundEvent).where(col(InboundEvent.state).in_(_DLQ_STATES))
                           .order_by(col(InboundEvent.id).desc()).limit(limit)).all())
    emit(console, title=f"Dead letters ({len(rows)}); replay with `atrelay replay ID`", fmt=fmt,
         columns=("id", "age", "source", "type", "ticket", "state", "tries", "reason"),
         rows=[(str(r.id), _age(r.updated_at), r.source, r.event_type, str(r.ticket_id or r.ticket_number or "-"),
                r.state, str(r.attempts), r.reason or "") for r in rows])


def print_rejections(db: str, console: Console, *, limit: int, fmt: Format = Format.table) -> None:
    with session_scope(db) as s:
        rows = list(s.exec(select(RejectedRequest).order_by(col(RejectedRequest.id).desc()).limit(limit)).all())
    emit(console, title="Rejected requests", fmt=fmt,
         columns=("id", "at", "source", "status", "reason", "webhook-id", "from"),
         rows=[(str(r.id), _ts(r.at), r.source, str(r.status_code), r.reason, r.webhook_id or "-", r.remote or "-")
               for r in rows])


def print_polls(db: str, console: Console, *, limit: int, fmt: Format = Format.table) -> None:
    with session_scope(db) as s:
        rows = list(s.exec(select(PollRun).order_by(col(PollRun.id).desc()).limit(limit)).all())
    emit(console, title="Partner polls", fmt=fmt,
         columns=("id", "source", "started", "outcome", "seen", "emitted", "error"),
         rows=[(str(r.id), r.source, _ts(r.started_at), r.outcome, str(r.requests_seen), str(r.events_emitted),
                (r.error or "")[:120]) for r in rows])
