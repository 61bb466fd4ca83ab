"""Alerts where the team already looks: what to tell, recorded first, sent later (``workers.alerts``).

An alert is a row before it is a message: recording never calls out, so it never blocks or fails a
status change, and a sender that is down loses nothing (the row stays ``pending`` and is retried).
Each alert has a ``key`` (unique), so the same fact is alerted once however often it is found: an
escalated ticket idle for an hour, a dead letter, a deactivation notice. Sending takes every pending
alert of a kind at once: one alone is sent as itself; several become one digest; and a kind is sent
at most once per digest interval, so a burst of dead letters is one message, not fifty.

Kinds: ``mc_escalation``, ``escalation_idle``, ``dead_letter``, ``webhook`` (deactivated or silent),
``budget`` (the hourly Autotask budget nearly spent).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, String, Text, UniqueConstraint, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, SQLModel, col, select

from pipelines.audit import InboundEvent, RejectedRequest, TicketStatusChange
from pipelines.db import UTCDateTime, session_scope, utcnow

__all__ = [
    "KINDS",
    "Alert",
    "Outgoing",
    "escalations_to_check",
    "mark_failed",
    "mark_sent",
    "recent_alerts",
    "record_alert",
    "take_due",
    "ticket_link",
    "unalerted_deactivations",
    "unalerted_dead_letters",
]

KINDS = ("mc_escalation", "escalation_idle", "dead_letter", "webhook", "budget")


class Alert(SQLModel, table=True):
    __tablename__ = "alerts"
    __table_args__ = (UniqueConstraint("key", name="uq_alerts_key"), Index("ix_alerts_kind_state", "kind", "state"))

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(sa_column=Column(String(32), nullable=False))
    key: str = Field(sa_column=Column(String(200), nullable=False))
    ticket_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    title: str = Field(sa_column=Column(String(250), nullable=False))
    body: str = Field(sa_column=Column(Text, nullable=False))
    fields: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    state: str = Field(default="pending", sa_column=Column(String(16), nullable=False))  # pending|sent|shown
    attempts: int = 0
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    sent_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    batch: str | None = Field(default=None, sa_column=Column(String(40), nullable=True))


def ticket_link(web_url: str | None, ticket_number: str | None) -> str | None:
    """Autotask's documented deep link to a ticket, from the tenant's web URL (zone lookup ``webUrl``)."""
    if not web_url or not ticket_number:
        return None
    return (f"{web_url.rstrip('/')}/Autotask/AutotaskExtend/ExecuteCommand.aspx?Code=OpenTicketDetail"
            f"&TicketNumber={ticket_number}")


def record_alert(db: str, *, kind: str, key: str, title: str, body: str, ticket_id: int | None = None,
                 fields: dict[str, Any] | None = None) -> int | None:
    """Record an alert once per ``key``; return its id, or None when that key was alerted already."""
    assert kind in KINDS, kind
    try:
        with session_scope(db) as s:
            row = Alert(kind=kind, key=key[:200], title=title[:250], body=body, ticket_id=ticket_id,
                        fields=fields or {})
            s.add(row)
            s.flush()
            return row.id
    except IntegrityError:
        return None


@dataclass(frozen=True)
class Outgoing:
    """One message for one kind: a single alert, or a digest of several."""

    kind: str
    ids: list[int]
    title: str
    body: str
    fields: list[dict[str, Any]]


def take_due(db: str, *, digest_seconds: int, now: datetime | None = None) -> list[Outgoing]:
    """Pending alerts, one message per kind whose last message is older than the digest interval."""
    now = now or utcnow()
    out: list[Outgoing] = []
    with session_scope(db) as s:
        for kind in KINDS:
            pending = list(s.exec(select(Alert).where(Alert.kind == kind, Alert.state == "pending")
                                  .order_by(col(Alert.id))).all())
            if not pending:
                continue
            last = s.exec(select(Alert.sent_at).where(Alert.kind == kind, Alert.state == "sent",
                                                      col(Alert.attempts) >= 0)
                          .order_by(col(Alert.sent_at).desc())).first()
            if last is not None and now - last < timedelta(seconds=digest_seconds):
                continue  # one message per kind per interval: these wait for the digest
            if len(pending) == 1:
                (one,) = pending
                out.append(Outgoing(kind, [one.id or 0], one.title, one.body, [one.fields]))
            else:
                body = "\n\n".join(f"- {a.title}\n{a.body}" for a in pending)
                out.append(Outgoing(kind, [a.id or 0 for a in pending], f"atrelay: {len(pending)} alerts ({kind})",
                                    body, [a.fields for a in pending]))
    return out


def mark_sent(db: str, ids: list[int], *, state: str = "sent", batch: str | None = None) -> None:
    with session_scope(db) as s:
        s.execute(update(Alert).where(col(Alert.id).in_(ids))
                  .values(state=state, sent_at=utcnow(), attempts=col(Alert.attempts) + 1, batch=batch,
                          last_error=None))


def mark_failed(db: str, ids: list[int], error: str) -> None:
    with session_scope(db) as s:
        s.execute(update(Alert).where(col(Alert.id).in_(ids))
                  .values(attempts=col(Alert.attempts) + 1, last_error=error[:500]))


def recent_alerts(db: str, limit: int = 20) -> list[Alert]:
    with session_scope(db) as s:
        return list(s.exec(select(Alert).order_by(col(Alert.id).desc()).limit(limit)).all())


def escalations_to_check(db: str, *, status_ids: set[int], idle: timedelta,
                         now: datetime | None = None) -> list[tuple[int, int]]:
    """(ticket, change id) of escalations older than ``idle`` and not yet alerted as idle.

    The ticket's owner is not known here (no callout for it is guaranteed): the caller reads it.
    """
    now = now or utcnow()
    with session_scope(db) as s:
        rows = s.exec(select(TicketStatusChange.ticket_id, TicketStatusChange.id).where(
            col(TicketStatusChange.to_status_id).in_(status_ids),
            col(TicketStatusChange.changed_at) <= now - idle,
            col(TicketStatusChange.changed_at) > now - idle - timedelta(days=2),
        ).order_by(col(TicketStatusChange.id))).all()
        done = set(s.exec(select(Alert.key).where(Alert.kind == "escalation_idle")).all())
    latest: dict[int, int] = {}
    for ticket_id, change_id in rows:
        if change_id is not None:
            latest[ticket_id] = change_id
    return [(t, c) for t, c in latest.items() if f"escalation_idle:{t}" not in done]


def unalerted_dead_letters(db: str, limit: int = 200) -> list[InboundEvent]:
    with session_scope(db) as s:
        done = {k.removeprefix("dead_letter:") for k in s.exec(select(Alert.key).where(Alert.kind == "dead_letter"))}
        rows = s.exec(select(InboundEvent).where(InboundEvent.state == "dead")
                      .order_by(col(InboundEvent.id).desc()).limit(limit)).all()
        return [r for r in rows if str(r.id) not in done]


def unalerted_deactivations(db: str) -> list[RejectedRequest]:
    with session_scope(db) as s:
        done = {k.removeprefix("webhook:deactivated:") for k in s.exec(select(Alert.key).where(
            Alert.kind == "webhook"))}
        rows = s.exec(select(RejectedRequest).where(RejectedRequest.source == "autotask-deactivation")
                      .order_by(col(RejectedRequest.id).desc()).limit(50)).all()
        return [r for r in rows if str(r.id) not in done]


MC_TYPES = ("mc.escalated", "mc.out_of_scope", "mc.no_contact")


def record_escalations(db: str, *, web_url: str | None, since: timedelta = timedelta(hours=2)) -> list[int]:
    """An alert per MC escalation atrelay applied (MC's webhook or the status MC set in Autotask).

    Read from the audit log rather than announced by the run, so a status change never waits on it.
    The two reports of one escalation are one event applied (the other is skipped as a duplicate).
    """
    from pipelines.registry import parse_stored  # the event's own words: MC's summary when it sent one

    with session_scope(db) as s:
        done = {k for k in s.exec(select(Alert.key).where(Alert.kind == "mc_escalation"))}
        rows = [r for r in s.exec(select(InboundEvent).where(
            col(InboundEvent.event_type).in_(MC_TYPES), InboundEvent.state == "applied",
            col(InboundEvent.updated_at) >= utcnow() - since).order_by(col(InboundEvent.id))).all()
            if f"mc_escalation:{r.id}" not in done]
    made: list[int] = []
    for row in rows:
        try:
            event = parse_stored(row)
            summary, details = event.summary, dict(event.details)
        except ValueError:
            summary, details = row.event_type, {}
        status = {"mc.escalated": "Sent from MC", "mc.out_of_scope": "Out of Scope",
                  "mc.no_contact": "MC No Contact"}[row.event_type]
        number = row.ticket_number or details.get("Ticket") or (str(row.ticket_id) if row.ticket_id else None)
        link = ticket_link(web_url, row.ticket_number)
        fields = {"kind": "mc_escalation", "status": status, "summary": summary, "ticket_number": number,
                  "ticket_id": row.ticket_id, "link": link, "event_id": row.id, "source": row.source}
        body = "\n".join(f"{k}: {v}" for k, v in (("Status", status), ("Summary", summary),
                                                    ("Ticket", number), ("Link", link)) if v)
        alert = record_alert(db, kind="mc_escalation", key=f"mc_escalation:{row.id}", ticket_id=row.ticket_id,
                             title=f"MC escalation: {number or row.ticket_id} -> {status}", body=body, fields=fields)
        if alert is not None:
            made.append(alert)
    return made


def record_dead_letters(db: str) -> list[int]:
    made = []
    for row in unalerted_dead_letters(db):
        alert = record_alert(
            db, kind="dead_letter", key=f"dead_letter:{row.id}", ticket_id=row.ticket_id,
            title=f"Dead letter: event #{row.id} ({row.event_type})",
            body=f"Reason: {row.reason or '-'}\nReplay it with `atrelay replay {row.id}` once the cause is fixed.",
            fields={"kind": "dead_letter", "event_id": row.id, "event_type": row.event_type, "reason": row.reason,
                    "ticket_id": row.ticket_id})
        if alert is not None:
            made.append(alert)
    return made


def record_deactivations(db: str) -> list[int]:
    made = []
    for row in unalerted_deactivations(db):
        alert = record_alert(
            db, kind="webhook", key=f"webhook:deactivated:{row.id}", title="Autotask deactivated a webhook",
            body=f"{row.reason}\nRun `atrelay autotask webhooks status`, then `install` again.",
            fields={"kind": "webhook", "problem": "deactivated", "reason": row.reason})
        if alert is not None:
            made.append(alert)
    return made
