"""Alerts where the team already looks: what to tell, recorded first, sent later (``pipelines.alert_sends``).

An alert is a row before it is a message: recording never calls out, so it never blocks or fails a
status change, and a sender that is down loses nothing. Each alert has a ``key`` (unique), so one fact
is alerted once however often, and by however many processes, it is found: an escalation (each one,
not each ticket), a batch of dead letters (every one counted), a liveness incident, a webhook Autotask
really deactivated. Nothing a request can send makes more than a bounded number of rows: deactivation
notices are verified in Autotask first (``pipelines.webhook_check``), dead letters become one digest per
check, liveness incidents one per condition and change.

Kinds: ``mc_escalation``, ``escalation_idle``, ``dead_letter``, ``webhook`` (inactive, missing, silent,
or unverified notices), ``budget``, ``liveness`` (no worker or beat alive, stuck events, overdue polls).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, NamedTuple
from urllib.parse import quote

from sqlalchemy import JSON, BigInteger, Column, Index, String, Text, UniqueConstraint, and_, delete, exists
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, col, select

from pipelines.alert_text import Message, TicketFacts, plain, to_fields
from pipelines.audit import DeadLetterAlerted, InboundEvent, ShadowPeriod, TicketState, TicketStatusChange
from pipelines.db import UTCDateTime, session_scope, utcnow

__all__ = [
    "KINDS",
    "Alert",
    "Describe",
    "escalations_to_check",
    "open_escalations",
    "recent_alerts",
    "record_alert",
    "record_dead_letters",
    "record_escalations",
    "ticket_link",
]

KINDS = ("mc_escalation", "escalation_idle", "dead_letter", "webhook", "budget", "liveness")

#: Reads a ticket for an alert (number, title, company, link, status): None when Autotask cannot say.
Describe = Callable[[int | None, str | None], TicketFacts | None]


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
    # pending (being sent), sent (every URL took it), shown (no URL: the dashboard only), failed (a URL
    # refused it every time it was tried: the dashboard shows which and why)
    state: str = Field(default="pending", sa_column=Column(String(16), nullable=False))
    attempts: int = 0
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    sent_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    batch: str | None = Field(default=None, sa_column=Column(String(40), nullable=True))
    severity: str = Field(default="info", sa_column=Column(String(16), nullable=False, server_default="info"))


def ticket_link(web_url: str | None, ticket_number: str | None) -> str | None:
    """Autotask's documented deep link to a ticket, from the tenant's web URL (zone lookup ``webUrl``)."""
    if not web_url or not ticket_number:
        return None
    # Quoted: the link lands inside a markdown ``[number](link)``, where a ``)`` or a space would end it.
    return (f"{web_url.rstrip('/')}/Autotask/AutotaskExtend/ExecuteCommand.aspx?Code=OpenTicketDetail"
            f"&TicketNumber={quote(ticket_number, safe='')}")


def _ticket_facts(describe: Describe | None, web_url: str | None, ticket_id: int | None,
                  number: str | None) -> TicketFacts:
    """The ticket an alert concerns, as Autotask describes it (number, title, company, link, status), else
    what atrelay recorded itself (id, number, a link built from it): told without the title rather than not
    at all. Every alert about a ticket (an escalation, a dead letter) is told through here."""
    facts = describe(ticket_id, number) if describe is not None else None
    return facts or TicketFacts(ticket_id=ticket_id, number=number, link=ticket_link(web_url, number))


#: Said in every alert recorded while the deployment runs in shadow mode (pipelines/shadow.py).
SHADOW_NOTE = ("atrelay runs in shadow mode: it wrote nothing to Autotask; a status or note this alert speaks of "
               "was only recorded (`atrelay shadow report`)")


def _shadow_on(s: Session) -> bool:
    return s.exec(select(ShadowPeriod.id).where(col(ShadowPeriod.ended_at).is_(None)).limit(1)).first() is not None


def _alert_row(*, kind: str, key: str, message: Message | None, title: str | None, body: str | None,
               ticket_id: int | None, fields: dict[str, Any] | None, severity: str | None,
               shadow: bool = False) -> Alert:
    assert kind in KINDS, kind
    extra = dict(fields or {})
    if shadow:
        # Shadow mode: the alert still goes out (ops should see what atrelay sees), marked, since the status
        # change it may speak of was only recorded, never written.
        if message is not None:
            message = replace(message, title=f"[shadow] {message.title}",
                              facts=[*message.facts, ("Shadow mode", SHADOW_NOTE)])
        elif title is not None and body is not None:
            title, body = f"[shadow] {title}", f"{body}\n\nShadow mode: {SHADOW_NOTE}"
    if message is not None:
        extra["message"] = to_fields(message)
        title, body, severity = message.title, plain(message), message.severity
    assert title is not None and body is not None
    return Alert(kind=kind, key=key[:200], title=title[:250], body=body, ticket_id=ticket_id, fields=extra,
                 severity=severity or "info")


def record_alert(db: str, *, kind: str, key: str, message: Message | None = None, title: str | None = None,
                 body: str | None = None, ticket_id: int | None = None, fields: dict[str, Any] | None = None,
                 severity: str | None = None) -> int | None:
    """Record an alert once per ``key``; return its id, or None when that key was alerted already.

    Give a :class:`Message` (each target gets it in its own markup when sent), or a plain title and body.
    """
    try:
        with session_scope(db) as s:
            row = _alert_row(kind=kind, key=key, message=message, title=title, body=body, ticket_id=ticket_id,
                             fields=fields, severity=severity, shadow=_shadow_on(s))
            s.add(row)
            s.flush()
            return row.id
    except IntegrityError:
        return None


def recent_alerts(db: str, limit: int = 20) -> list[Alert]:
    with session_scope(db) as s:
        return list(s.exec(select(Alert).order_by(col(Alert.id).desc()).limit(limit)).all())


# ---- escalations ----------------------------------------------------------------------------------

MC_TYPES = ("mc.escalated", "mc.out_of_scope", "mc.no_contact")
_MC = {
    "mc.escalated": ("Sent from MC", "Escalated by Mission Control",
                     "Mission Control escalated the ticket to the MSP; atrelay set its status to Sent from MC.",
                     "Assign a primary resource and contact the user."),
    "mc.out_of_scope": ("Out of Scope", "Escalated by Mission Control as out of scope",
                        "Mission Control escalated the ticket as out of its scope; atrelay set it to Out of Scope.",
                        "Decide who handles it and assign a primary resource."),
    "mc.no_contact": ("MC No Contact", "Mission Control could not reach the user",
                      "Mission Control could not reach the user; atrelay set MC No Contact (it moves on to "
                      "Waiting Customer).",
                      "Follow up with the user, or close the ticket if they no longer need help."),
}


def _mc_words(details: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Mission Control's own text in an event (its summary, its technician), when it sent any."""
    words = {"MC summary": "Mission Control", "MC technician": "Mission Control (technician)"}
    return [(words[label], value) for label, value in details if label in words and value and value != "-"]


def record_escalations(db: str, *, web_url: str | None, describe: Describe | None = None,
                       idle_minutes: int | None = None, since: timedelta = timedelta(hours=2),
                       limit: int = 50) -> list[int]:
    """An alert per MC escalation atrelay applied (MC's webhook, or the status MC set in Autotask).

    Read from the audit log rather than announced by the run, so a status change never waits on it. The
    two reports of one escalation are one event applied (the other is skipped as a duplicate). The
    ticket's number, title and company come from Autotask (``describe``) when it answers.
    """
    from pipelines.registry import parse_stored  # the event's own words: MC's summary when it sent one

    with session_scope(db) as s:
        done = set(s.exec(select(Alert.key).where(Alert.kind == "mc_escalation")))
        rows = [r for r in s.exec(select(InboundEvent).where(
            col(InboundEvent.event_type).in_(MC_TYPES), InboundEvent.state == "applied",
            col(InboundEvent.updated_at) >= utcnow() - since).order_by(col(InboundEvent.id))).all()
            if f"mc_escalation:{r.id}" not in done][:limit]
    made: list[int] = []
    for row in rows:
        try:
            event = parse_stored(row)
            details, number = list(event.details), row.ticket_number or event.ticket_number
            ticket_id = row.ticket_id or event.ticket_id
        except ValueError:
            details, number, ticket_id = [], row.ticket_number, row.ticket_id
        status, title, happened, todo = _MC[row.event_type]
        via = "its webhook" if row.source == "mission-control" else "the status it set in Autotask"
        facts = _ticket_facts(describe, web_url, ticket_id, number)
        if row.event_type == "mc.escalated" and idle_minutes:
            todo += f" atrelay alerts again if it still has no owner after {idle_minutes} minutes."
        message = Message(title=f"{title}: {facts.name}", severity="warning", ticket=facts,
                          happened=f"{happened} (reported by {via}, event #{row.id})", todo=todo,
                          partner=_mc_words(details))
        fields = {"kind": "mc_escalation", "status": status, "ticket_number": facts.number,
                  "ticket_id": facts.ticket_id, "link": facts.link, "event_id": row.id, "source": row.source,
                  "status_id": _status_now(db, facts.ticket_id)}
        alert = record_alert(db, kind="mc_escalation", key=f"mc_escalation:{row.id}", ticket_id=facts.ticket_id,
                             message=message, fields=fields)
        if alert is not None:
            made.append(alert)
    return made


def _status_now(db: str, ticket_id: int | None) -> int | None:
    """The status atrelay last knew the ticket in (what it saw in Autotask, else what it wrote)."""
    if ticket_id is None:
        return None
    with session_scope(db) as s:
        row = s.get(TicketState, ticket_id)
    return None if row is None else row.observed_status_id or row.last_status_id


def open_escalations(db: str, *, days: int = 7, limit: int = 50) -> list[Alert]:
    """Escalation alerts whose ticket is, as far as atrelay knows, still in the status it was escalated to."""
    with session_scope(db) as s:
        rows = list(s.exec(select(Alert).where(Alert.kind == "mc_escalation",
                                               col(Alert.created_at) >= utcnow() - timedelta(days=days))
                           .order_by(col(Alert.id).desc()).limit(500)).all())
    out, seen = [], set()
    for alert in rows:
        ticket, status = alert.ticket_id, alert.fields.get("status_id")
        if ticket in seen:
            continue  # the newest escalation of a ticket speaks for it
        seen.add(ticket)
        if status is None or _status_now(db, ticket) == status:
            out.append(alert)
    return out[:limit]


def escalations_to_check(db: str, *, status_ids: set[int], idle: timedelta,
                         now: datetime | None = None) -> list[tuple[int, int]]:
    """(ticket, change id) of escalations older than ``idle`` and not yet alerted as idle: each escalation
    (a status change to the escalation status) is checked and alerted on its own, so a ticket escalated
    again weeks later is alerted again.

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
            latest[ticket_id] = change_id  # an older escalation of the same ticket ended with the newer one
    return [(t, c) for t, c in latest.items() if idle_key(t, c) not in done]


def idle_key(ticket_id: int, change_id: int) -> str:
    return f"escalation_idle:{ticket_id}:{change_id}"


# ---- dead letters ---------------------------------------------------------------------------------

#: How many tickets a dead-letter digest names (the rest are counted).
DIGEST_TICKETS = 20


class _Dead(NamedTuple):
    event_id: int
    reason: str | None
    event_type: str
    ticket_id: int | None
    ticket_number: str | None


def record_dead_letters(db: str, *, web_url: str | None = None, describe: Describe | None = None) -> list[int]:
    """One alert that counts every dead letter since the last one (a burst of a thousand is one message).

    Each dead letter is marked counted in the same transaction as the alert, so two checks running at
    once cannot both count it (the second one's insert conflicts and it records nothing). A lone dead
    letter names its ticket as an escalation does (number, title, company, link: ``describe``); a digest
    names each ticket by the number atrelay recorded, linked, with no call to Autotask per ticket.
    """
    now = utcnow()
    dead = (col(InboundEvent.state) == "dead")
    described = _describe_lone_dead_letter(db, web_url, describe)
    try:
        with session_scope(db) as s:
            # Forget marks of events no longer dead as they were (replayed, pruned, or dead again since).
            s.execute(delete(DeadLetterAlerted).where(~exists().where(and_(
                col(InboundEvent.id) == col(DeadLetterAlerted.event_id), dead,
                col(InboundEvent.updated_at) == col(DeadLetterAlerted.dead_at)))))
            rows = list(s.execute(sa_select(InboundEvent.id, InboundEvent.updated_at, InboundEvent.reason,  # type: ignore[call-overload]
                                            InboundEvent.event_type, InboundEvent.ticket_id,
                                            InboundEvent.ticket_number).where(
                dead, ~exists().where(col(DeadLetterAlerted.event_id) == col(InboundEvent.id)))
                .order_by(col(InboundEvent.id))).all())
            if not rows:
                return []
            for event_id, died, *_ in rows:
                s.add(DeadLetterAlerted(event_id=event_id, dead_at=died))
            s.flush()
            message = _dead_letter_message([_Dead(int(r[0]), r[2], r[3], r[4], r[5]) for r in rows], web_url,
                                           described)
            first, last = rows[0][0], rows[-1][0]
            alert = _alert_row(kind="dead_letter", key=f"dead_letter:{first}-{last}:{len(rows)}:{now:%Y%m%dT%H%M%S%f}",
                               message=message, title=None, body=None,
                               ticket_id=message.ticket.ticket_id if message.ticket is not None else None,
                               fields={"kind": "dead_letter", "count": len(rows), "first": first, "last": last,
                                       "event_ids": [r[0] for r in rows[:50]]}, severity=None, shadow=_shadow_on(s))
            s.add(alert)
            s.flush()
            return [alert.id] if alert.id is not None else []
    except IntegrityError:
        return []  # another check counted them at the same moment


def _describe_lone_dead_letter(db: str, web_url: str | None, describe: Describe | None) -> dict[int, TicketFacts]:
    """The ticket of the one dead letter not yet alerted, read from Autotask (event id -> facts); nothing
    when there are several (a digest) or none names a ticket.

    Read before the transaction that counts the dead letters, never inside it: a call to Autotask must not
    hold the database's write lock. The transaction uses it only for the event read here."""
    if describe is None:
        return {}
    with session_scope(db) as s:
        rows = s.execute(sa_select(InboundEvent.id, InboundEvent.ticket_id, InboundEvent.ticket_number).where(  # type: ignore[call-overload]
            col(InboundEvent.state) == "dead", ~exists().where(
                col(DeadLetterAlerted.event_id) == col(InboundEvent.id),
                col(DeadLetterAlerted.dead_at) == col(InboundEvent.updated_at))).limit(2)).all()
    if len(rows) != 1 or (rows[0][1] is None and not rows[0][2]):
        return {}
    event_id, ticket_id, number = rows[0]
    return {int(event_id): _ticket_facts(describe, web_url, ticket_id, number)}


def _dead_letter_message(rows: list[_Dead], web_url: str | None, described: dict[int, TicketFacts]) -> Message:
    n = len(rows)
    reasons = Counter((r.reason or "-").split(":", 1)[0].strip()[:60] for r in rows)
    types = Counter(r.event_type for r in rows)
    by_reason = ", ".join(f"{code} x{k}" for code, k in reasons.most_common(5))
    by_type = ", ".join(f"{t} x{k}" for t, k in types.most_common(5))
    ids = ", ".join(f"#{r.event_id}" for r in rows[:10]) + (f" and {n - 10} more" if n > 10 else "")
    if n == 1:
        (r,) = rows
        ticket = described.get(r.event_id) or (
            _ticket_facts(None, web_url, r.ticket_id, r.ticket_number)
            if r.ticket_id is not None or r.ticket_number else None)
        return Message(
            title=f"Dead letter: event #{r.event_id} ({r.event_type})"
                  + (f" on ticket {ticket.name}" if ticket is not None else ""),
            severity="warning", ticket=ticket,
            happened=f"Event #{r.event_id} ({r.event_type}) could not be applied and was dead-lettered: "
                     f"{(r.reason or '-')[:300]}",
            todo=f"See `atrelay events show {r.event_id}` (or the dashboard's Dead letters); fix the cause, then "
                 f"`atrelay replay {r.event_id}`.")
    # Each ticket once, by the number atrelay recorded (else its id), in the order its events died.
    tickets: dict[str | int, TicketFacts] = {}
    for r in rows:
        key = r.ticket_number or r.ticket_id
        if key is not None:
            tickets.setdefault(key, _ticket_facts(None, web_url, r.ticket_id, r.ticket_number))
    listed = list(tickets.values())[:DIGEST_TICKETS]
    more = [("Tickets", f"{len(tickets)} in all; the first {DIGEST_TICKETS} are listed")] \
        if len(tickets) > DIGEST_TICKETS else []
    return Message(
        title=f"{n} dead letters", severity="warning", tickets=listed,
        happened=f"{n} events could not be applied and were dead-lettered ({ids}).",
        facts=[("By reason", by_reason), ("By type", by_type), *more],
        todo="See `atrelay dlq` (or the dashboard's Dead letters); fix the cause, then "
             "`atrelay replay --dead --since <date>` re-drives them all.")
