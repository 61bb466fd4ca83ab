"""One pipeline run for one event, independent of Celery: decide what the event means, take the ticket's
lease and read it, ask the write gate, write the status and the note once, derive the follow-up.

Idempotent by the event id: the effect ledger records each Autotask write before and after it is
made, so a run that dies anywhere can be run again and writes no second status change or note.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import replace
from datetime import datetime, timedelta

from pydantic import ValidationError

from connectors.autotask.errors import AutotaskError, may_have_been_applied
from connectors.autotask.models import Ticket, TicketNote
from connectors.autotask.picklists import Picklists, UnknownPicklistValue
from connectors.common.events import EventType, PartnerEvent, Source
from pipelines import shadow, store, ticket_numbers, ticket_reads
from pipelines.audit import EffectLedger, EventState, InboundEvent
from pipelines.context import Context
from pipelines.db import db_now, utcnow
from pipelines.followups import FollowUpBody
from pipelines.gate import (
    TIMEZEST,
    TIMEZEST_FACTS,
    History,
    decide_write,
    patch_landed,
    timezest_facts,
    timezest_note,
    timezest_noted,
    timezest_psa_seen,
    timezest_set_a_status,
    timezest_wrote,
)
from pipelines.notes import marker, render_note
from pipelines.observe import OBSERVATIONS, ObserveRun
from pipelines.registry import parse_stored
from pipelines.retry import SHORT_RETRY_MAX
from pipelines.rules import Ignore, Transition, decide
from pipelines.runbase import Result, RunBase

__all__ = ["Result", "process_event"]

log = logging.getLogger("atrelay.pipeline")

#: Said in atrelay's note when it sets a status TimeZest's own PSA action should have set.
NO_TIMEZEST_UPDATE = "; TimeZest's own status update had not arrived, so atrelay set it"
#: Guard events: their breach is judged again from the whole ticket right before they write.
GUARDS = frozenset(t for t in EventType if t.value.startswith("guard."))


def process_event(ctx: Context, event_id: int, *, task_id: str | None = None, worker: str | None = None,
                  known: tuple[int, int, datetime] | None = None) -> Result:
    """Run one event; ``known``: (ticket, status, when) as the run just before this one (its cause) left it."""
    claim = store.claim_event(ctx.db, event_id, ctx.lease_seconds)
    if claim.event is None:
        if claim.state == "leased":
            return Result(claim.state, retry_in=claim.wait_seconds)
        if claim.state == "not-yet":
            if claim.wait_seconds <= SHORT_RETRY_MAX:
                return Result(claim.state, retry_in=claim.wait_seconds)
            store.park(ctx.db, event_id)  # too long for the broker: the sweeper brings it back
            return Result(EventState.PARKED.value)
        return Result(claim.state)  # already final, or no such event: nothing to do
    run_id = store.start_run(ctx.db, event_id, task_id, worker)
    if claim.event.event_type in OBSERVATIONS:
        return ObserveRun(ctx, claim.event, run_id, claim.owner).run()
    result = _Run(ctx, claim.event, run_id, claim.owner, known=known).run()
    if ctx.follow_up_delay_seconds == 0:
        # A follow-up without a delay runs now, in this process: atrelay knows the status it has just
        # written (no read), and the cause's note waits for it, so one note tells both transitions.
        # Only now: a delayed follow-up reads the ticket, since waiting is what lets a person act.
        for child in result.derived:
            try:
                done = process_event(ctx, child, task_id=task_id, worker=worker, known=result.left)
            except Exception:
                # The cause is done and recorded; the follow-up is a committed event of its own: hand it
                # to the queue (and, should that fail too, to the sweeper) rather than fail the cause's task.
                log.exception("pipeline.follow_up.inline_failed", extra={"event_id": child})
                ctx.enqueue(child, 0.0)
                continue
            if done.retry_in is not None:
                ctx.enqueue(child, done.retry_in)
    return result


class _Run(RunBase):
    """A partner event's run: decide, read the ticket, write status and note once, follow up."""

    def __init__(self, ctx: Context, row: InboundEvent, run_id: int, owner: str | None = None,
                 known: tuple[int, int, datetime] | None = None) -> None:
        super().__init__(ctx, row, run_id, owner)
        self.known = known
        # The event's time, when the gate found nobody but atrelay had changed the status since: recorded
        # with the PATCH once it lands, so a later event's gate may skip a TicketHistory read (pipelines.gate).
        self.quiet_since: datetime | None = None
        self.ticket: Ticket | None = None  # as this run read it
        self._tz_note: list[TicketNote | None] = []  # TimeZest's own note for the transition, once read
        self.acting_for: datetime | None = None  # a guard re-dated to the person's latest change (the gate)
        self.history: History | None = None  # the ticket's TicketHistory, read at most once per run

    # ---- the run ----------------------------------------------------------------------------
    def execute(self) -> Result:
        try:
            event = parse_stored(self.row)
        except (ValidationError, ValueError) as exc:
            return self._finish(EventState.DEAD, "dead", f"unparseable: {str(exc)[:300]}")
        decision = decide(event, self.ctx.rules)
        if isinstance(decision, Ignore):
            return self._finish(EventState.IGNORED, "ignored", decision.reason, decision="ignore")
        return self.talk_to_autotask(lambda: self._apply(event, decision), "transition")

    def _resolve_ticket(self, event: PartnerEvent, *, full: bool = False) -> Ticket | None:
        """Take the ticket's lease and read it; None when another event holds the lease.

        A ticket named by number is resolved first, in a batch with the numbers of the events waiting
        behind this one (pipelines.ticket_numbers); then, as for one named by id, the lease comes before
        the read: a busy ticket costs no Autotask call. ``full``: the whole ticket, read now (no shared
        read, no status a cause left).
        """
        ctx = self.ctx
        resolved: Ticket | None = None
        started = utcnow()
        if event.ticket_id is not None:
            ticket_id = event.ticket_id
        else:
            assert event.ticket_number is not None
            ticket_id, resolved = ticket_numbers.resolve(ctx, event.ticket_number)
        if not store.claim_ticket(ctx.db, ticket_id, self.event_id, ctx.lease_seconds):
            return None
        self.leased_ticket = ticket_id
        if full:
            return ctx.client.get_ticket(ticket_id)
        if (self.known is not None and self.known[0] == ticket_id
                and ticket_reads.untouched_since(ctx.db, ticket_id, self.known[2])):
            return Ticket(id=self.known[0], status=self.known[1])  # its cause left it so a moment ago
        if resolved is not None and ctx.read_max_age_seconds <= 0:
            # Sharing off: the number's answer is this run's read, unless atrelay wrote meanwhile.
            state = store.ticket_state(ctx.db, ticket_id)
            if state is None or state.updated_at <= started:
                return resolved
        return self._read(ticket_id)  # read under the lease: nobody else writes meanwhile

    def _read(self, ticket_id: int) -> Ticket:
        """The ticket now (see pipelines.ticket_reads for why a shared read is safe to act on)."""
        return ticket_reads.read_ticket(self.ctx, ticket_id)

    def _apply(self, event: PartnerEvent, decision: Transition) -> Result:
        ctx = self.ctx
        lists = ctx.lists()
        target_id = lists.status_id(decision.status) if decision.status else None
        # A guard's breach is judged from the whole ticket (its due date): never from a shared read.
        ticket = self._resolve_ticket(event, full=event.type in GUARDS)
        if ticket is None:
            self._finish(EventState.RETRYING, "retry", "ticket-busy")
            return Result(EventState.RETRYING.value, "ticket-busy", retry_in=2.0)
        self.ticket = ticket
        history = self.history = History(ctx, ticket.id)
        base: dict[str, object] = {
            "decision": "transition", "ticket_id": ticket.id,
            "from_status": lists.status.label(ticket.status), "to_status": decision.status,
        }
        effect = store.get_effect(ctx.db, self.event_id)
        if effect is not None and effect.duplicate_of is not None:  # (a replay) the echo stays an echo
            return self._finish(EventState.SKIPPED, "skipped",
                                f"duplicate-escalation: event #{effect.duplicate_of} already handled it", **base)
        if event.type in TIMEZEST and effect is not None and effect.to_status_id is None and effect.note_id is None:
            # A note an earlier run chose and did not record: TimeZest's own writes may settle it now (the
            # gate, which asks them on a first try, is not asked again for a note-only ending).
            settled = self._timezest(event, ticket, target_id=target_id, lists=lists, history=history, effect=effect,
                                     base=base)
            if settled is not None:
                return settled
            effect = store.get_effect(ctx.db, self.event_id)  # its note may have been found meanwhile
        if effect is not None and effect.to_status_id is None and target_id is not None:
            # A note-only ending already chosen (not applied, or a follow-up carrying its cause's note).
            if event.carries_note_of is not None:
                return self._cause_note_only(event, ticket.id, ticket.status, lists, base)
            return self._note_instead(event, effect, lists, "not applied (re-run: the note was owed)", base)
        if effect is not None and effect.patch_started_at is not None and effect.patched_at is None:
            effect = self._settle_patch(effect, ticket, target_id, lists, history)
        if effect is None or (effect.to_status_id is not None and effect.patched_at is None):
            # The write gate, right before the write, whether this is the first try or a retry.
            decided = self._gate(event, decision, ticket, target_id=target_id, lists=lists, history=history,
                                 effect=effect, base=base)
            if isinstance(decided, Result):
                return decided
            effect = decided
        base["from_status"] = lists.status.label(effect.from_status_id)
        left = ticket.status  # what the ticket shows as far as this run knows
        if target_id is not None and effect.to_status_id is not None and effect.patched_at is None:
            effect, left = self._patch(effect, ticket, target_id)
        elif target_id is not None and effect.patched_at is not None and ticket.status == target_id:
            left = target_id
        return self._conclude(event, decision, effect, ticket, target_id=target_id, left=left, lists=lists, base=base)

    def _gate(self, event: PartnerEvent, decision: Transition, ticket: Ticket, *, target_id: int | None,
              lists: Picklists, history: History, effect: EffectLedger | None,
              base: dict[str, object]) -> EffectLedger | Result:
        """Ask the gate; return the effect row to write with, or the run's ending when it says no."""
        ctx = self.ctx
        # Verify and repair, never repeat: TimeZest's own PSA actions may have written this already.
        settled = self._timezest(event, ticket, target_id=target_id, lists=lists, history=history, effect=effect,
                                 base=base)
        if settled is not None:
            return settled
        verdict = decide_write(ctx, event_id=self.event_id, event=event, ticket=ticket, target_id=target_id,
                               lists=lists, history=history,
                               observation_id=self.row.caused_by_id if event.source == Source.AUTOTASK else None)
        def note_only() -> EffectLedger:
            return effect or EffectLedger(event_id=self.event_id, ticket_id=ticket.id, from_status_id=ticket.status,
                                          to_status_id=None, seen_change_id=store.last_change_id(ctx.db, ticket.id))

        if verdict.kind in ("stale", "superseded"):
            if event.carries_note_of is not None:  # a follow-up holding its cause's note: still owed
                if verdict.kind == "stale":
                    return self._cause_note_only(event, ticket.id, ticket.status, lists, base, why="stale",
                                                 said="a newer event was applied meanwhile")
                return self._cause_note_only(event, ticket.id, ticket.status, lists, base)
            if not decision.note or event.source == Source.ATRELAY:
                store.drop_effect(ctx.db, self.event_id)  # an earlier try's decision to write: nothing owed now
                return self._finish(EventState.SKIPPED, "skipped", verdict.kind if verdict.kind == "stale"
                                    else verdict.why, **base)
            # Not applied, but what the partner said still reaches the technician, once.
            effect = store.update_effect(ctx.db, note_only(), to_status_id=None, patch_started_at=None,
                                         from_status_id=ticket.status)
            return self._note_instead(event, effect, lists, verdict.why or verdict.kind, base)
        if verdict.kind == "status-changed" and event.carries_note_of is not None:
            return self._cause_note_only(event, ticket.id, ticket.status, lists, base)
        if verdict.echo_of is not None:
            # Recorded, so the report it pairs with pairs with no other report of this channel.
            store.update_effect(ctx.db, note_only(), to_status_id=None, patch_started_at=None,
                                duplicate_of=verdict.echo_of)
            return self._finish(EventState.SKIPPED, "skipped", verdict.why, **base)
        self.quiet_since = event.occurred_at if verdict.write and verdict.quiet else None
        if verdict.acting_for is not None:
            # The person set the guarded status again since: this write acts for that change (gate._set_again).
            self.acting_for = verdict.acting_for
            store.redate_event(ctx.db, self.event_id, verdict.acting_for)
        if not verdict.write:
            # Decided to write on an earlier try (nothing landed): that decision no longer holds, and no
            # note is owed (a follow-up or a guard; a replay decides afresh).
            store.drop_effect(ctx.db, self.event_id)
            return self._finish(EventState.SKIPPED, "skipped", verdict.why, **base)
        if target_id is not None and ticket.status == target_id and not decision.note:
            store.drop_effect(ctx.db, self.event_id)
            return self._finish(EventState.SKIPPED, "skipped", "already-set",
                                ticket_update=(ticket.id, event.occurred_at, target_id), **base)
        # Already in the target status (Mission Control set it itself) is not the end: the note is
        # still written once and the follow-up still runs; only the PATCH is left out.
        fresh = EffectLedger(event_id=self.event_id, ticket_id=ticket.id, from_status_id=ticket.status,
                             to_status_id=target_id)
        return store.update_effect(ctx.db, effect or fresh, from_status_id=ticket.status, to_status_id=target_id,
                                   patch_started_at=None, seen_change_id=store.last_change_id(ctx.db, ticket.id))

    def _timezest(self, event: PartnerEvent, ticket: Ticket, *, target_id: int | None, lists: Picklists,
                  history: History, effect: EffectLedger | None, base: dict[str, object]) -> Result | None:
        """What TimeZest's own PSA actions wrote for this transition settles it: the ending, or None when atrelay
        writes as it would without them (they are off, failed, or were undone).

        Status and note decide apart. A status atrelay would set that TimeZest set (for a cancellation:
        any status TimeZest set for it, its configured choice) stays, and no status is written. With no
        status to set (a request cancelled before anyone booked, a reschedule, or ``status = ""`` in the
        rules file), TimeZest's own note for the transition decides. Either way atrelay's note is written
        only when TimeZest's note lacks a fact atrelay knows (:data:`pipelines.gate.TIMEZEST_FACTS`: the
        appointment cancelled or the new one), and says only that. TimeZest's notes are read only then:
        link sent and scheduled cost no read more than before.
        """
        ctx = self.ctx
        if event.type not in TIMEZEST or ctx.timezest_resource_id is None:
            return None
        if effect is not None and effect.note_id is None and effect.note_started_at is not None:
            # An earlier run began its note and never learnt the outcome: found, it is recorded (and nothing
            # is written again); not found, it never landed. Then decide as if for the first time.
            found = ctx.client.find_ticket_notes(ticket.id, containing=marker(self.event_id, ctx.note_key))
            effect = store.update_effect(ctx.db, effect, note_id=found[0].id if found else None, note_started_at=None)
        ticket_update = (ticket.id, event.occurred_at, ticket.status)

        def nothing_more(reason: str) -> Result:
            if effect is None or effect.note_id is None:
                store.drop_effect(ctx.db, self.event_id)  # nothing was written for it: nothing to keep
            else:
                reason += "; a note an earlier run had begun was written"
            return self._finish(EventState.APPLIED, "applied", reason, ticket_update=ticket_update, **base)

        set_by: str | None = None
        if target_id is not None:
            wrote = timezest_wrote(ctx, ticket, around=event.occurred_at, target_id=target_id, lists=lists,
                                   history=history)
            chosen = target_id if target_id in wrote else None
            if chosen is None and event.type == EventType.TIMEZEST_CANCELLED:
                # What TimeZest set for the cancellation itself: not what it sets when a link is sent or a
                # time booked (those are its updates for the request's earlier transitions, moments before).
                earlier: set[int] = set()
                for label in self._link_and_booking_statuses():
                    with contextlib.suppress(UnknownPicklistValue):
                        earlier.add(lists.status_id(label))
                chosen = next((s for s in reversed(wrote) if s not in earlier), None)
            if chosen is None:
                return None  # TimeZest did not set it: the gate decides atrelay's write
            set_by = lists.status.label(chosen) or f"#{chosen}"
            if not timezest_facts(event, ""):  # nothing atrelay could add: no read, no note
                return nothing_more(f"already-set-by-timezest: TimeZest set {set_by}")
        note = self._timezest_note(event, ticket)
        if note is None and set_by is None:
            return None  # TimeZest did not note it: atrelay's note, as without TimeZest
        lacking = timezest_facts(event, "" if note is None else note.text)
        said = f"TimeZest set {set_by}" if set_by is not None else f"TimeZest noted it (#{note.id if note else '?'})"
        if not lacking:
            return nothing_more(f"already-set-by-timezest: {said}; its note says the rest" if set_by is not None
                                else f"already-noted-by-timezest: {said}; its note says it all")
        what = ", ".join(label.lower() for label, _ in lacking)
        stays = f"; {said} for it itself and it stays" if set_by is not None else ""
        gap = "TimeZest wrote no note for it" if note is None else f"TimeZest's own note does not say the {what}"
        told = event.model_copy(update={
            "summary": f"{event.summary}{stays}; {gap}: this note adds only the {what}",
            "details": lacking})
        row = effect or EffectLedger(event_id=self.event_id, ticket_id=ticket.id, from_status_id=ticket.status,
                                     to_status_id=None)
        row = store.update_effect(ctx.db, row, to_status_id=None, from_status_id=ticket.status, patch_started_at=None)
        if row.note_id is None:
            self._note_once(told, row, lists, trim=False)
        return self._finish(EventState.APPLIED, "applied",
                            f"{'already-set-by-timezest' if set_by else 'already-noted-by-timezest'}: {said}; "
                            f"note with what its note lacks ({what})", ticket_update=ticket_update, **base)

    def _timezest_note(self, event: PartnerEvent, ticket: Ticket) -> TicketNote | None:
        """TimeZest's own note for this transition (pipelines.gate.timezest_note), read at most once per run."""
        if not self._tz_note:
            self._tz_note.append(timezest_note(self.ctx, ticket, event))
        return self._tz_note[0]

    def _link_and_booking_statuses(self) -> tuple[str, ...]:
        """The statuses the rules set for a TimeZest link sent and a booking: TimeZest's updates for those
        transitions, never a status it set for a cancellation moments later."""
        return tuple(rule.status for t in (EventType.TIMEZEST_LINK_SENT, EventType.TIMEZEST_SCHEDULED)
                     if (rule := self.ctx.rules.get(t)) is not None and rule.status)

    def _noted_by_timezest(self, event: PartnerEvent) -> TicketNote | None:
        """TimeZest's own note for the transition when it says all that atrelay's note not applying it (a stale
        or superseded event) would. Not for a cancellation TimeZest set no status for: the status was atrelay's
        rule's to decide, and its one note says what became of it, with only the facts TimeZest's note lacks."""
        ticket = self.ticket
        if (event.type not in TIMEZEST or self.ctx.timezest_resource_id is None or ticket is None
                or event.carries_note_of is not None):
            return None
        note = self._timezest_note(event, ticket)
        if note is None or timezest_facts(event, note.text):
            return None
        history = self.history or History(self.ctx, ticket.id)
        if event.type in TIMEZEST_FACTS and not timezest_set_a_status(
                self.ctx, event, history, besides=self._link_and_booking_statuses()):
            return None
        return note

    def _trimmed(self, event: PartnerEvent) -> PartnerEvent:
        """atrelay's note on a transition TimeZest noted (it sets a status TimeZest did not, or says why it did
        not): atrelay's own part, and of the partner's facts only those TimeZest's note lacks."""
        if (event.type not in TIMEZEST or self.ctx.timezest_resource_id is None or self.ticket is None
                or event.carries_note_of is not None):
            return event
        if (event.type not in TIMEZEST_FACTS and not timezest_psa_seen(self.ctx)
                and (self.history is None or not self.history.read
                     or not timezest_noted(self.ctx, event, self.history))):
            # A link or a booking: TimeZest's notes are read once atrelay has seen TimeZest's resource write
            # to any ticket of the tenant (its PSA actions are on), or when the ticket's history, read
            # already, shows it wrote one. A tenant where TimeZest never writes pays no read: reading
            # TimeZest's notes on every link atrelay sets itself cost +0.13 to +0.25 calls per transition
            # in make bench with TimeZest's PSA actions off, where there is nothing to leave out.
            return event
        note = self._timezest_note(event, self.ticket)
        if note is None:
            return event
        lacking = timezest_facts(event, note.text)
        what = ", ".join(label.lower() for label, _ in lacking)
        rest = f"; TimeZest's own note (#{note.id}) says the rest" + (f", not the {what}" if lacking else "")
        return event.model_copy(update={"summary": event.summary + rest, "details": lacking})

    def _settle_patch(self, effect: EffectLedger, ticket: Ticket, target_id: int | None, lists: Picklists,
                      history: History) -> EffectLedger:
        """A PATCH whose outcome was never confirmed: landed, it is done; not landed, decided again."""
        ctx = self.ctx
        if target_id is not None and patch_landed(ctx, effect=effect, ticket=ticket, target_id=target_id,
                                                  lists=lists, history=history):
            if ticket.status == target_id:
                return store.record_patched(ctx.db, effect, target_id, at=utcnow())
            return store.update_effect(ctx.db, effect, patched_at=utcnow())  # landed; someone changed it since
        return store.update_effect(ctx.db, effect, patch_started_at=None)

    def _held_back(self) -> str | None:
        """Why this run's writes are recorded instead of made: ``mode`` (this process runs in shadow mode),
        ``accepted`` (the event came in while the deployment ran in shadow mode), or None (write)."""
        if self.shadow_held is None:
            self.shadow_held = ("mode" if self.ctx.shadow else
                                "accepted" if shadow.accepted_in_shadow(self.ctx.db, self.event_id) else "")
        return self.shadow_held or None

    def _patch(self, effect: EffectLedger, ticket: Ticket, target_id: int) -> tuple[EffectLedger, int]:
        """Write the status the gate allowed (or only mark it done when the ticket already shows it)."""
        ctx = self.ctx
        if ticket.status == target_id:
            return store.update_effect(ctx.db, effect, patched_at=utcnow()), target_id
        held = self._held_back()
        if held:
            # Shadow mode: the PATCH the gate allowed is recorded, not sent. The run goes on as if it had
            # landed (an inline follow-up decides from the status atrelay would have left), while the effect
            # ledger and the ticket's observed status keep the truth: a person who sets this status later is
            # heard as a change, which is what the shadow report compares with.
            shadow.record_write(ctx.db, event_id=self.event_id, kind="patch", ticket_id=ticket.id,
                                event_type=self.row.event_type, from_status_id=ticket.status, to_status_id=target_id,
                                to_status=ctx.lists().status.label(target_id), why=held)
            return effect, target_id
        self.guard()
        effect = store.update_effect(ctx.db, effect, patch_started_at=utcnow())
        try:
            ctx.client.set_ticket_status(ticket.id, target_id)
        except AutotaskError as exc:
            if not may_have_been_applied(exc):
                # Refused (a 429, the thread limit): certainly not written, so the next try decides afresh.
                store.update_effect(ctx.db, effect, patch_started_at=None)
            raise
        # Known before Autotask's callout about it arrives: that callout is then "no change".
        return store.record_patched(ctx.db, effect, target_id, at=utcnow(), quiet_since=self.quiet_since), target_id

    def _conclude(self, event: PartnerEvent, decision: Transition, effect: EffectLedger, ticket: Ticket, *,
                  target_id: int | None, left: int, lists: Picklists, base: dict[str, object]) -> Result:
        """The status is done: the note (once), the follow-up, the ending."""
        ctx = self.ctx
        noted_only = target_id is not None and effect.from_status_id == target_id
        # A follow-up that will change the status (now, when it has no delay, or nothing changed here)
        # writes one note telling both transitions, if its own rule writes notes at all.
        follow_rule = ctx.rules.get(decision.follow_up) if decision.follow_up is not None else None
        defer = (decision.note and follow_rule is not None and follow_rule.note
                 and (noted_only or ctx.follow_up_delay_seconds == 0))
        # A follow-up carrying its cause's note writes it even if its own rule writes none.
        wants_note = decision.note or event.carries_note_of is not None
        if wants_note and not defer and effect.note_id is None:
            told = self._with_cause(event)
            if (event.type in TIMEZEST and ctx.timezest_resource_id is not None and target_id is not None
                    and effect.from_status_id != target_id):
                # TimeZest's own PSA action should have set it: say that it did not (off, failed, undone).
                told = told.model_copy(update={"summary": told.summary + NO_TIMEZEST_UPDATE})
            effect = self._note_once(told, effect, lists)
        derived = self._follow_up(event, decision, ticket.id, target_id, note_deferred=defer)
        reason = ("already-set: note with the follow-up" if defer and noted_only else "note with the follow-up"
                  if defer else "already-set: note only" if noted_only else None)
        result = self._finish(
            EventState.APPLIED, "applied", reason,
            ticket_update=(ticket.id, self.acting_for or event.occurred_at, target_id), derived=derived, **base,
        )
        if 0 < ctx.follow_up_delay_seconds <= SHORT_RETRY_MAX:  # 0: run now (process_event); long: parked
            for child in result.derived:
                ctx.enqueue(child, float(ctx.follow_up_delay_seconds))
        return replace(result, left=(ticket.id, left, db_now(ctx.db)))

    def _note_once(self, event: PartnerEvent, effect: EffectLedger, lists: Picklists, *,
                   trim: bool = True) -> EffectLedger:
        """``trim``: leave out what TimeZest's own note for the transition already says (``_trimmed``)."""
        ctx, client = self.ctx, self.ctx.client
        if effect.note_started_at is not None:
            # A previous run started the POST and died before recording its result: look first.
            found = client.find_ticket_notes(effect.ticket_id, containing=marker(self.event_id, ctx.note_key))
            if found:
                return store.update_effect(ctx.db, effect, note_id=found[0].id)
        if trim:
            event = self._trimmed(event)
        note_type, publish = lists.note_settings(ctx.note_type, ctx.note_publish)
        title, description = render_note(
            event, event_id=self.event_id, from_status=lists.status.label(effect.from_status_id),
            to_status=lists.status.label(effect.to_status_id) if effect.to_status_id is not None else None,
            received_at=self.row.received_at, key=ctx.note_key,
        )
        held = self._held_back()
        if held:  # shadow mode: the note exactly as it would have been posted, recorded instead
            shadow.record_write(ctx.db, event_id=self.event_id, kind="note", ticket_id=effect.ticket_id,
                                event_type=self.row.event_type, note_text=f"{title}\n\n{description}", why=held)
            return effect
        self.guard()
        effect = store.update_effect(ctx.db, effect, note_started_at=utcnow(), note_text=f"{title}\n\n{description}")
        note_id = client.add_ticket_note(
            effect.ticket_id, title=title, description=description, note_type=note_type, publish=publish
        )
        return store.update_effect(ctx.db, effect, note_id=note_id)

    def _note_instead(self, event: PartnerEvent, effect: EffectLedger, lists: Picklists, reason: str,
                      base: dict[str, object]) -> Result:
        """Not applied, but what the partner said still reaches the technician: one note saying why. Unless
        TimeZest's own note for the transition already said all of it: never repeat a partner's note."""
        if effect.note_id is None and effect.note_started_at is None:
            noted = self._noted_by_timezest(event)
            if noted is not None:
                store.drop_effect(self.ctx.db, self.event_id)
                return self._finish(EventState.SKIPPED, "skipped",
                                    f"{reason}; TimeZest's own note (#{noted.id}) says it all", **base)
        if effect.note_id is None:
            note = event.model_copy(update={"summary": f"{event.summary}; NOT applied: {reason}"})
            self._note_once(note, effect, lists)
        return self._finish(EventState.SKIPPED, "skipped", f"{reason}; note written", **base)

    def _with_cause(self, event: PartnerEvent) -> PartnerEvent:
        """A follow-up carrying its cause's note: the cause's why and details come first."""
        if event.carries_note_of is None:
            return event
        row = store.get_event(self.ctx.db, event.carries_note_of)
        if row is None:
            return event
        cause = parse_stored(row)
        return event.model_copy(update={"summary": f"{cause.summary}; then {event.summary}",
                                        "details": [*cause.details, *event.details]})

    def _cause_note_only(self, event: PartnerEvent, ticket_id: int, status: int, lists: Picklists,
                         base: dict[str, object], *, why: str = "status-changed",
                         said: str = "the status had been changed meanwhile") -> Result:
        """The follow-up cannot run (someone moved the ticket on, or it is stale): its cause's note is
        still owed, once."""
        effect = store.get_effect(self.ctx.db, self.event_id) or store.update_effect(
            self.ctx.db, EffectLedger(event_id=self.event_id, ticket_id=ticket_id, from_status_id=status,
                                      to_status_id=None))
        cause = self._with_cause(event)
        note = cause.model_copy(update={"summary": cause.summary.split("; then ", 1)[0] + f"; not moved on: {said}"})
        if effect.note_id is None:
            self._note_once(note, effect, lists)
        return self._finish(EventState.SKIPPED, "skipped", f"{why}: the note of event #{event.carries_note_of} written",
                            **base)

    def _follow_up(
        self, event: PartnerEvent, decision: Transition, ticket_id: int, target_id: int | None, *,
        note_deferred: bool = False,
    ) -> store.NewEvent | None:
        if decision.follow_up is None or target_id is None or decision.status is None:
            return None
        now = utcnow()
        # The follow-up belongs to its cause's moment on the partner's clock: stamping it with our
        # processing time would make later partner events look older than it (and "stale").
        body = FollowUpBody(
            cause_event_id=self.event_id, cause_type=event.type, ticket_id=ticket_id,
            expect_status_id=target_id, expect_status=decision.status, occurred_at=event.occurred_at,
            cause_note_deferred=note_deferred,
        )
        delay = self.ctx.follow_up_delay_seconds
        return store.NewEvent(
            source="atrelay", external_id=f"{self.event_id}:{decision.follow_up.value}",
            event_type=decision.follow_up.value, body=body.encode(), headers={}, ticket_id=ticket_id,
            occurred_at=event.occurred_at, caused_by_id=self.event_id,
            not_before=now + timedelta(seconds=delay) if delay else None,
            state=EventState.PARKED if delay > SHORT_RETRY_MAX else EventState.ACCEPTED,
        )
