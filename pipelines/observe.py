"""Runs for what Autotask itself reports: ticket callouts, note callouts and reconciliation finds.

An observation writes nothing to Autotask. It reads the ticket (or note) the callout names, records
what changed in the audit database (``ticket_status_changes``, the ticket's observed status), and
when a watch rule says the change means something (Mission Control set ``MC No Contact``; a note
titled like the new-user form was emailed in) derives the partner event, which then runs like one
that arrived by webhook. Loop safety: a change made by atrelay's own API user, or one that matches
the status atrelay itself last wrote, is recorded and changes nothing.

The knowledge-base guards (``pipelines.guards``, docs/rules.md) ride on the same runs: a change or
note by someone other than atrelay that breaks one derives a ``guard.*`` event, which writes the
status and one note; switched off, the breach is recorded as an ``ignored`` guard event.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError

from connectors.autotask.callouts import CalloutPayload, parse_callout
from connectors.autotask.derived import SeenInAutotask
from connectors.autotask.models import Ticket
from connectors.autotask.picklists import Picklists, UnknownPicklistValue
from connectors.common.events import Observation, Source
from pipelines import store, ticket_reads
from pipelines.audit import EventState
from pipelines.clock import as_utc
from pipelines.db import utcnow
from pipelines.gate import saw_timezest, set_to
from pipelines.governor import observing
from pipelines.guards import Breach, note_guard, overdue_deferred_guard, status_guard
from pipelines.rules import WatchRule
from pipelines.runbase import Result, RunBase

__all__ = ["OBSERVATIONS", "OVERDUE_DEFERRED", "RECONCILE_PREFIX", "WINDOW_START", "ObserveRun"]

#: External ids of events found by reconciliation (callouts carry the webhook GUID instead).
RECONCILE_PREFIX = "reconcile:"
#: A reconciliation body field: the ticket is Deferred with its due date passed (no status change).
OVERDUE_DEFERRED = "AtrelayOverdueDeferred"
OBSERVATIONS = frozenset({Observation.TICKET_CHANGED.value, Observation.NOTE_ADDED.value})
#: A reconciliation body field: the start of the window it looked at. A status set before it is
#: recorded (with its time) but acted on by no rule: it is not news, only news to atrelay.
WINDOW_START = "AtrelayWindowStart"


@dataclass(frozen=True)
class _Who:
    """Who set a ticket's status and when, and (for the story) how atrelay knows."""

    by: int | None
    at: datetime
    how: str


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


class ObserveRun(RunBase):
    def run(self) -> Result:
        # What Autotask reports is observed within the budget left after the share kept for writes.
        with observing():
            return super().run()

    def execute(self) -> Result:
        try:
            payload = parse_callout(self.row.body)
        except ValidationError as exc:
            return self._finish(EventState.DEAD, "dead", f"unparseable: {str(exc)[:300]}", decision="observe")
        return self.talk_to_autotask(
            lambda: self._note(payload) if payload.is_note else self._ticket(payload), "observe")

    @property
    def _via(self) -> str:
        return "reconciliation" if self.row.external_id.startswith(RECONCILE_PREFIX) else "callout"

    def _observed(self, reason: str, **kw: object) -> Result:
        # A derived event recorded as not runnable (a switched-off guard) is not queued.
        run_derived = kw.pop("run_derived", True)
        result = self._finish(EventState.IGNORED, "observed", reason, decision="observe", **kw)
        if run_derived:
            for child in result.derived:
                self.ctx.enqueue(child, 0.0)
        return result

    # ---- ticket callouts ----------------------------------------------------------------------
    def _status_rule(self, lists: Picklists, status_id: int) -> WatchRule | None:
        for rule in self.ctx.watch_rules.values():
            if rule.on != "status" or not rule.enabled or rule.status is None:
                continue
            try:
                if lists.status_id(rule.status) == status_id:
                    return rule
            except UnknownPicklistValue:
                continue  # `atrelay doctor` names it; one missing label must not block the others
        return None

    def _ticket(self, payload: CalloutPayload) -> Result:
        ctx = self.ctx
        own = ctx.own_resource_id()
        if own is not None and payload.person_id == own:
            return self._observed("own-change: made by atrelay's API user", ticket_id=payload.id)
        if not store.claim_ticket(ctx.db, payload.id, self.event_id, ctx.lease_seconds):
            self._finish(EventState.RETRYING, "retry", "ticket-busy", decision="observe")
            return Result(EventState.RETRYING.value, "ticket-busy", retry_in=2.0)
        self.leased_ticket = payload.id
        # A read sent after this callout arrived shows its change: in a flood (a bulk edit in Autotask)
        # one query reads the tickets of the callouts waiting behind this one too.
        ticket = ticket_reads.read_ticket(ctx, payload.id, callout_received=self.row.received_at)
        lists = ctx.lists()
        labels = lists.status
        # Nothing is recorded until the run ends: the status seen is committed in the same transaction
        # as the events it derives (guards, watch rules), or not at all. A read that fails on the way
        # (a 429 on the checklist) leaves the change unrecorded, and the re-run sees it again.
        previous = store.observed_status(ctx.db, ticket.id)
        # A callout names Status only when the status changed (it is a subscribed field). A
        # due-date-only callout about a ticket never seen before records nothing: the status read
        # now may already be the result of a change whose own callout is still on its way, and
        # taking it as the baseline would make that callout look like "no change".
        first_sight = self._via == "callout" and payload.field("Status") is None and previous is None
        changed = not first_sight and previous != ticket.status
        who = self._who_and_when(payload, ticket, labels.label(ticket.status), changed=changed)
        by_atrelay = own is not None and who.by == own and store.atrelay_wrote(ctx.db, ticket.id, ticket.status)
        if changed and ctx.timezest_resource_id is not None and who.by == ctx.timezest_resource_id:
            saw_timezest(ctx, ticket.id, who.at)
        sighting = None if first_sight else store.Sighting(
            ticket.id, ticket.status, who.at, who.by, by_atrelay, self._via, self.event_id)
        base: dict[str, object] = {"ticket_id": ticket.id, "from_status": labels.label(previous),
                                   "to_status": labels.label(ticket.status), "sighting": sighting}
        if not changed:
            if payload.field(OVERDUE_DEFERRED) and not by_atrelay:
                breach = overdue_deferred_guard(ctx, ticket, lists, changed_at=utcnow(), cause=self.event_id)
                if breach is not None:
                    return self._breach(breach, **base)
            why = "first sight of this ticket, no status change named" if previous is None else "no-status-change"
            return self._observed(why, **base)
        if by_atrelay:
            return self._observed(f"own-change: made by atrelay's API user{who.how}", **base)
        since = as_utc(_parse_time(payload.field(WINDOW_START)))
        if since is not None and who.at < since:
            # Reconciliation met a ticket whose status was set before the window it looks at: a fact to
            # record (with its real time), not news to act on.
            return self._observed(f"status {labels.label(ticket.status)} set at {who.at:%Y-%m-%d %H:%M:%S} UTC, "
                                  f"before this reconciliation's window: recorded{who.how}", **base)
        breach = status_guard(ctx, ticket, previous, lists, by=who.by, changed_at=who.at, via=self._via,
                              cause=self.event_id)
        if breach is not None:
            return self._breach(breach, **base)
        rule = self._status_rule(lists, ticket.status)
        actor = f"resource #{who.by}" if who.by is not None else "someone"
        if rule is None:
            return self._observed(f"status changed by {actor}{who.how}; no rule for {labels.label(ticket.status)}",
                                  **base)
        seen = self._seen_status(ticket, labels.label(ticket.status), who.by, who.at)
        return self._observed(f"status changed by {actor}{who.how}; rule {rule.name} -> {rule.emits.value}",
                              derived=self._derived(rule, seen), **base)

    def _who_and_when(self, payload: CalloutPayload, ticket: Ticket, label: str | None, *, changed: bool) -> _Who:
        """Who set the ticket's status and when: the callout says so; otherwise its TicketHistory.

        Reconciliation has no callout, and a callout may lack its PersonID: ``lastActivityDate`` and
        ``lastActivityResourceID`` name the last *activity* (a note, a time entry), not the status
        change, so the ticket's history is read for the row that set the status seen.
        """
        # A callout's time as the ingress recorded it: Autotask's EventTime, clamped when it was too far
        # ahead of receipt to be true (one 9999-12-31 must not make every later event look older).
        at = as_utc(self.row.occurred_at if self._via == "callout" else None) or as_utc(payload.event_time)
        named = payload.field("Status")
        # A callout describes the change it was sent for; when the ticket has moved on since (a late
        # or repeated callout), its person and time are not those of the status seen now.
        current = named is None or str(named) == str(ticket.status)
        if current and named is not None and at is not None and self._via == "callout" and any(
                c.to_status_id != ticket.status for c in store.status_changes_between(
                    self.ctx.db, ticket.id, at, datetime.max.replace(tzinfo=UTC))):
            # The ticket left the named status after this callout's change and shows it again (MC No
            # Contact; atrelay's follow-up; MC No Contact again): the status seen now is the later
            # change's, and its person and time are the history's, not this late callout's.
            current = False
        if payload.person_id is not None and at is not None and current:
            return _Who(payload.person_id, at, "")
        if not changed:
            return _Who(payload.person_id if current else None, at or utcnow(), "")
        if not current:
            payload_person, at = None, None
        else:
            payload_person = payload.person_id
        entries = [e for e in self.ctx.client.ticket_history(ticket.id) if e.is_status_change and e.when is not None]
        setting = [e for e in entries if label is not None and set_to(e, label)]
        missing = ("; the callout was about an earlier change" if not current
                   else "" if payload_person is not None or self._via != "callout" else "; the callout named no person")
        if setting:
            last = setting[-1]
            when = at if at is not None and self._via == "callout" else last.when
            assert when is not None
            return _Who(payload_person if payload_person is not None else last.resource_id, when,
                        f" (who and when: TicketHistory{missing})")
        if not entries and ticket.create_date is not None:  # never changed: the status it was created with
            return _Who(payload_person, at or as_utc(ticket.create_date) or utcnow(),
                        f" (set when the ticket was created{missing})")
        # No history row names the status: the last activity is the latest it can have happened.
        return _Who(payload_person, at or as_utc(ticket.last_activity_date) or utcnow(),
                    f" (TicketHistory names no such change: timed by the last activity{missing})")

    def _seen_status(self, ticket: Ticket, label: str | None, by: int | None, changed_at: datetime) -> SeenInAutotask:
        return SeenInAutotask(kind="status", ticket_id=ticket.id, ticket_number=ticket.ticket_number,
                              changed_at=changed_at, by_resource_id=by, via=self._via,
                              cause_event_id=self.event_id, status_id=ticket.status, status_label=label)

    def _derived(self, rule: WatchRule, seen: SeenInAutotask, external_id: str | None = None,
                 state: EventState = EventState.ACCEPTED, reason: str | None = None) -> store.NewEvent:
        return store.NewEvent(
            source=Source.AUTOTASK.value, external_id=external_id or f"{self.event_id}:{rule.emits.value}",
            event_type=rule.emits.value, body=seen.encode(), headers={}, ticket_id=seen.ticket_id,
            ticket_number=seen.ticket_number, occurred_at=seen.changed_at, caused_by_id=self.event_id,
            state=state, reason=reason,
        )

    def _breach(self, breach: Breach, **base: object) -> Result:
        """A guard's rule is broken: derive its event, or record it ignored when the rule is off."""
        rule = breach.rule
        if not rule.enabled:
            off = rule.switched_off()
            # Recorded, not run: the audit shows what a switched-off rule did not enforce, and why.
            return self._observed(f"guard {rule.name}: {breach.why}; {off}", run_derived=False,
                                  derived=self._derived(rule, breach.seen, breach.external_id, EventState.IGNORED, off),
                                  **base)
        return self._observed(f"guard {rule.name}: {breach.why} -> {rule.emits.value}",
                              derived=self._derived(rule, breach.seen, breach.external_id), **base)

    # ---- note callouts ------------------------------------------------------------------------
    @staticmethod
    def _may_hold_link(text: str | None) -> bool:
        # Cheap test first: most notes carry no TimeZest link, and reading the ticket costs a call.
        return bool(text) and "timezest.com" in (text or "").lower()

    def _note(self, payload: CalloutPayload) -> Result:
        ctx = self.ctx
        own = ctx.own_resource_id()
        if own is not None and payload.person_id == own:
            return self._observed("own-note: written by atrelay's API user", ticket_id=payload.ticket_id)
        note = ctx.client.get_ticket_note(payload.id)
        if own is not None and note.creator_resource_id == own:
            return self._observed("own-note: written by atrelay's API user", ticket_id=note.ticket_id)
        if ctx.timezest_resource_id is not None and note.creator_resource_id == ctx.timezest_resource_id:
            saw_timezest(ctx, note.ticket_id, as_utc(note.create_date_time) or utcnow())
        rule = ctx.watch_rules.get("emailed-form")
        title = note.title or ""
        if rule is None or not rule.enabled or not re.search(ctx.form_note_title, title):
            changed_at = as_utc(note.create_date_time) or as_utc(payload.event_time) or utcnow()
            lists = ctx.lists()
            text = f"{title} {note.description or ''}"
            ticket = ctx.client.get_ticket(note.ticket_id) if self._may_hold_link(text) else None
            breach = None if ticket is None else note_guard(ctx, note, ticket, lists, changed_at=changed_at,
                                                            via=self._via, cause=self.event_id)
            if breach is not None:
                return self._breach(breach, ticket_id=note.ticket_id)
            return self._observed(f"note #{note.id} matches no rule", ticket_id=note.ticket_id)
        seen = SeenInAutotask(
            kind="note", ticket_id=note.ticket_id, changed_at=as_utc(note.create_date_time)
            or as_utc(payload.event_time) or utcnow(), by_resource_id=note.creator_resource_id,
            by_contact_id=note.created_by_contact_id, via=self._via,
            cause_event_id=self.event_id, note_id=note.id, note_title=title[:250],
        )
        return self._observed(f"note #{note.id} {title[:60]!r}; rule {rule.name} -> {rule.emits.value}",
                              ticket_id=note.ticket_id, derived=self._derived(rule, seen))
