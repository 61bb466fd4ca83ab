"""The knowledge-base guards: rules people must follow by hand because Autotask cannot enforce them.

Each guard reads what an observation run saw (a status change by someone other than atrelay, a
note by a person, an overdue Deferred ticket found by reconciliation) and says whether its rule is
broken. A breach becomes a ``guard.*`` event that runs through the normal transition pipeline: the
status from ``DEFAULT_RULES`` (re-targetable), one note naming the rule and how to undo it, audited.
The guard event carries ``expect_status_id`` (the status seen), so a ticket someone moved on
meanwhile is left alone. atrelay's own changes never reach a guard: the run stops at "own change"
first, which is also why a guard's own write cannot trigger another guard.

Switched off (``[autotask."guard-..."] enabled = false``), a breach is still recorded, as an
``ignored`` guard event whose reason names the switch, so the audit shows what was not enforced.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlmodel import col, select

from connectors.autotask.derived import SeenInAutotask
from connectors.autotask.models import Ticket, TicketNote
from connectors.autotask.picklists import Picklists, UnknownPicklistValue
from connectors.common.events import EventType, Source
from pipelines import store
from pipelines.audit import InboundEvent, TicketStatusChange, TimezestRequest
from pipelines.context import Context
from pipelines.db import session_scope, utcnow
from pipelines.rules import WatchRule

__all__ = ["TIMEZEST_LINK", "Breach", "breach_gone", "note_guard", "overdue_deferred_guard", "status_guard"]

#: A TimeZest booking link (``https://<name>.timezest.com/...``), as people paste it into notes.
TIMEZEST_LINK = re.compile(r"https://[a-z0-9][a-z0-9-]*\.timezest\.com/\S*", re.IGNORECASE)
_SEEN_BEFORE_LINK = ("Scheduled", "Scheduling Link Sent")  # the link needs no status change then


@dataclass(frozen=True)
class Breach:
    """A guard's rule is broken: what to derive (or record as ignored when the rule is off)."""

    rule: WatchRule
    seen: SeenInAutotask
    external_id: str
    why: str  # for the observation's reason
    found: list[str] = field(default_factory=list)


def _status_id(lists: Picklists, label: str | None) -> int | None:
    if not label:
        return None
    try:
        return lists.status_id(label)
    except UnknownPicklistValue:
        return None  # `atrelay doctor` names it; one missing label must not stop the other guards


def _guard(ctx: Context, name: str) -> WatchRule | None:
    return ctx.watch_rules.get(name)


def _seen(rule: WatchRule, ticket: Ticket, *, label: str | None, by: int | None, changed_at: datetime,
          via: str, cause: int, **extra: object) -> SeenInAutotask:
    return SeenInAutotask.model_validate({
        "kind": "status", "ticket_id": ticket.id, "ticket_number": ticket.ticket_number, "changed_at": changed_at,
        "by_resource_id": by, "via": via, "cause_event_id": cause, "status_id": ticket.status,
        "status_label": label, "guard": rule.name, "kb": rule.kb, "undo": rule.undo,
        "expect_status_id": ticket.status, **extra,
    })


def _clobber(ctx: Context, ticket: Ticket, previous: int | None, lists: Picklists, *, by: int | None,
             changed_at: datetime, via: str, cause: int) -> Breach | None:
    """Rule 5: a person put back exactly the status atrelay replaced, within the clobber window."""
    rule = _guard(ctx, "guard-clobbered")
    if rule is None or previous is None:
        return None
    since = changed_at - timedelta(seconds=ctx.clobber_window_seconds)
    timezest = _timezest_clobbered(ctx, rule, ticket, previous, lists, by=by, changed_at=changed_at, via=via,
                                   cause=cause, since=since)
    if timezest is not None:
        return timezest
    with session_scope(ctx.db) as s:
        last = s.exec(select(TicketStatusChange).where(
            TicketStatusChange.ticket_id == ticket.id, col(TicketStatusChange.by_atrelay).is_(True),
            col(TicketStatusChange.changed_at) >= since, col(TicketStatusChange.event_id).is_not(None),
        ).order_by(col(TicketStatusChange.changed_at).desc(), col(TicketStatusChange.id).desc())).first()
        if last is None or last.to_status_id != previous or last.event_id is None:
            return None
        setter = s.get(InboundEvent, last.event_id)
    effect = store.get_effect(ctx.db, last.event_id)
    if effect is None or effect.from_status_id != ticket.status or effect.to_status_id != previous:
        return None
    if setter is None or not _partner_set(setter):
        # Only what a partner reported is defended. A guard's own status is advice: the person who
        # follows its note ("complete the items, then set Complete again") is undoing it on purpose,
        # and no guard may fight another guard, or itself. A follow-up is atrelay's own workflow rule.
        # (guard.clobbered is a guard too: re-applied once, the person's second change stands.)
        return None
    set_label = lists.status.label(previous)
    seen = _seen(rule, ticket, label=lists.status.label(ticket.status), by=by, changed_at=changed_at, via=via,
                 cause=cause, reapply_status=set_label,
                 found=[f"atrelay set {set_label} (event #{last.event_id}) at {last.changed_at:%H:%M:%S} UTC; "
                        f"it was put back to {lists.status.label(ticket.status)} "
                        f"{int((changed_at - last.changed_at).total_seconds())} s later"])
    # Keyed by the event whose status was undone: whatever happens next, it is re-applied once.
    return Breach(rule, seen, f"{EventType.GUARD_CLOBBERED.value}:{last.event_id}",
                  f"status set by event #{last.event_id} undone within {ctx.clobber_window_seconds} s",
                  seen.found)


def _timezest_clobbered(ctx: Context, rule: WatchRule, ticket: Ticket, previous: int, lists: Picklists, *,
                        by: int | None, changed_at: datetime, via: str, cause: int, since: datetime) -> Breach | None:
    """Rule 5 for TimeZest's own PSA action: a person put back exactly the status TimeZest's resource
    replaced (an edit form opened before TimeZest set Scheduled, saved after), within the window."""
    tz = ctx.timezest_resource_id
    if tz is None or by == tz:
        return None
    with session_scope(ctx.db) as s:
        last = s.exec(select(TicketStatusChange).where(
            TicketStatusChange.ticket_id == ticket.id, col(TicketStatusChange.changed_at) >= since,
            col(TicketStatusChange.changed_at) <= changed_at, TicketStatusChange.to_status_id == previous,
        ).order_by(col(TicketStatusChange.changed_at).desc(), col(TicketStatusChange.id).desc())).first()
    if last is None or last.by_resource_id != tz or last.from_status_id != ticket.status or last.id is None:
        return None
    set_label = lists.status.label(previous)
    seen = _seen(rule, ticket, label=lists.status.label(ticket.status), by=by, changed_at=changed_at, via=via,
                 cause=cause, reapply_status=set_label,
                 found=[f"TimeZest set {set_label} at {last.changed_at:%H:%M:%S} UTC; it was put back to "
                        f"{lists.status.label(ticket.status)} {int((changed_at - last.changed_at).total_seconds())} s "
                        "later"])
    # Keyed by TimeZest's change: re-applied once, however often the person's change is reported.
    return Breach(rule, seen, f"{EventType.GUARD_CLOBBERED.value}:timezest:{last.id}",
                  f"TimeZest's {set_label} undone within {ctx.clobber_window_seconds} s", seen.found)


def _partner_set(setter: InboundEvent) -> bool:
    """Was this event a partner's report (web form, Mission Control, TimeZest, or one seen in Autotask)?"""
    return setter.source != Source.ATRELAY.value and not setter.event_type.startswith("guard.")


def _link_still_open(ctx: Context, ticket_id: int) -> list[str]:
    with session_scope(ctx.db) as s:
        rows = s.exec(select(TimezestRequest.id).where(TimezestRequest.ticket_id == ticket_id,
                                                       TimezestRequest.status == "sent")).all()
    return [f"TimeZest scheduling request {rid} is still sent (not scheduled or cancelled)" for rid in rows]


def _open_checklist(ctx: Context, ticket_id: int) -> list[str]:
    items = ctx.client.checklist_items(ticket_id)
    open_items = [i for i in items if not i.is_completed and (ctx.checklist_all_items or i.is_important)]
    return [f"open checklist item: {i.item_name}{' (important)' if i.is_important else ''}"
            for i in sorted(open_items, key=lambda i: (i.position or 0, i.id))]


def _due_missing(ticket: Ticket, now: datetime) -> list[str]:
    due = ticket.due_date_time
    if due is None:
        return ["no due date"]
    due = due if due.tzinfo is not None else due.replace(tzinfo=now.tzinfo)
    return [f"due date {due:%Y-%m-%d %H:%M} UTC is not in the future"] if due <= now else []


def status_guard(ctx: Context, ticket: Ticket, previous: int | None, lists: Picklists, *, by: int | None,
                 changed_at: datetime, via: str, cause: int) -> Breach | None:
    """Rules 5, 2, 3, 4 for a status change by someone other than atrelay; the first breach found."""
    clobber = _clobber(ctx, ticket, previous, lists, by=by, changed_at=changed_at, via=via, cause=cause)
    if clobber is not None:
        return clobber
    checks: tuple[tuple[str, Callable[[], list[str]]], ...] = (
        ("guard-waiting-after-link", lambda: _link_still_open(ctx, ticket.id)),
        ("guard-complete-open-checklist", lambda: _open_checklist(ctx, ticket.id)),
        ("guard-deferred-no-due-date", lambda: _due_missing(ticket, utcnow())),
    )
    label = lists.status.label(ticket.status)
    for name, finds in checks:
        rule = _guard(ctx, name)
        if rule is None or _status_id(lists, rule.status) != ticket.status:
            continue
        found = finds()
        if not found:
            return None  # the trigger status matched and the rule holds: nothing to do
        seen = _seen(rule, ticket, label=label, by=by, changed_at=changed_at, via=via, cause=cause, found=found)
        return Breach(rule, seen, f"{cause}:{rule.emits.value}", f"{label} with {found[0]}", found)
    return None


def overdue_deferred_guard(ctx: Context, ticket: Ticket, lists: Picklists, *, changed_at: datetime,
                           cause: int) -> Breach | None:
    """Rule 4 from reconciliation: a ticket still Deferred whose due date has passed."""
    rule = _guard(ctx, "guard-deferred-no-due-date")
    if rule is None or _status_id(lists, rule.status) != ticket.status:
        return None
    found = _due_missing(ticket, utcnow())
    if not found:
        return None
    seen = _seen(rule, ticket, label=lists.status.label(ticket.status), by=None, changed_at=changed_at,
                 via="reconciliation", cause=cause, found=[*found, "still Deferred (found by reconciliation)"])
    return Breach(rule, seen, f"{cause}:{rule.emits.value}", f"Deferred and overdue: {found[0]}", seen.found)


def note_guard(ctx: Context, note: TicketNote, ticket: Ticket, lists: Picklists, *, changed_at: datetime,
               via: str, cause: int) -> Breach | None:
    """Rule 1: a person pasted a TimeZest booking link into a note and the status was not set."""
    rule = _guard(ctx, "guard-scheduling-link")
    if rule is None:
        return None
    if ctx.timezest_resource_id is not None and note.creator_resource_id == ctx.timezest_resource_id:
        return None  # TimeZest's own notes: the poller's link_sent event sets the status
    link = TIMEZEST_LINK.search(note.text)
    if link is None:
        return None
    if ticket.status in {_status_id(lists, label) for label in _SEEN_BEFORE_LINK}:
        return None
    seen = SeenInAutotask(
        kind="note", ticket_id=ticket.id, ticket_number=ticket.ticket_number, changed_at=changed_at,
        by_resource_id=note.creator_resource_id, by_contact_id=note.created_by_contact_id, via=via,
        cause_event_id=cause, note_id=note.id, note_title=(note.title or "")[:250], status_id=ticket.status,
        status_label=lists.status.label(ticket.status), guard=rule.name, kb=rule.kb, undo=rule.undo,
        expect_status_id=ticket.status, found=[f"TimeZest link in note #{note.id}: {link.group(0)[:200]}"],
    )
    return Breach(rule, seen, f"{cause}:{rule.emits.value}", f"TimeZest link pasted in note #{note.id}", seen.found)


def breach_gone(ctx: Context, event_type: EventType, ticket: Ticket) -> str | None:
    """Why a guard's breach no longer holds on ``ticket`` as it is now, or None while it still does.

    Asked by the write gate right before the guard's write: a guard decides when the change is seen
    and acts later (queued, retried), and a person may have put things right meanwhile (the due date
    set a moment after Deferred, the checklist item completed). Whether the status is still the one
    the person set is the gate's own check (``expect_status_id``).
    """
    if event_type == EventType.GUARD_COMPLETE_OPEN_CHECKLIST:
        return None if _open_checklist(ctx, ticket.id) else "breach-gone: no checklist item is open any more"
    if event_type == EventType.GUARD_DEFERRED_NO_DUE_DATE:
        return None if _due_missing(ticket, utcnow()) else (
            f"breach-gone: the due date is now {ticket.due_date_time:%Y-%m-%d %H:%M} UTC, ahead")
    if event_type == EventType.GUARD_WAITING_AFTER_LINK:
        return None if _link_still_open(ctx, ticket.id) else "breach-gone: no TimeZest request is still sent"
    return None
