"""One pipeline run for one event (DESIGN.md steps 1-7), independent of Celery.

Idempotent by the event id: the effect ledger records each Autotask write before and after it is
made, so a run that dies anywhere can be run again and writes no second status change or note.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from pydantic import ValidationError

from connectors.autotask.client import Attempt
from connectors.autotask.errors import PermanentError, RetryableError
from connectors.autotask.models import Ticket
from connectors.autotask.picklists import Picklists, UnknownPicklistValue
from connectors.common.events import PartnerEvent
from pipelines import store
from pipelines.audit import EffectLedger, EventState, InboundEvent
from pipelines.context import Context
from pipelines.db import utcnow
from pipelines.followups import FollowUpBody
from pipelines.notes import marker, render_note
from pipelines.registry import parse_stored
from pipelines.retry import SHORT_RETRY_MAX, plan_retry
from pipelines.rules import Ignore, Transition, decide

__all__ = ["Result", "process_event"]


@dataclass(frozen=True)
class Result:
    """How a run ended. ``retry_in`` asks the caller to enqueue the event again after that many seconds."""

    state: str
    reason: str | None = None
    retry_in: float | None = None
    derived: list[int] = field(default_factory=list)


def process_event(ctx: Context, event_id: int, *, task_id: str | None = None, worker: str | None = None) -> Result:
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
    return _Run(ctx, claim.event, run_id).execute()


class _Run:
    def __init__(self, ctx: Context, row: InboundEvent, run_id: int) -> None:
        assert row.id is not None
        self.ctx, self.row, self.run_id, self.event_id = ctx, row, run_id, row.id
        self.leased_ticket: int | None = None

    # ---- endings ----------------------------------------------------------------------------
    def _finish(self, state: EventState, outcome: str, reason: str | None = None, **kw: object) -> Result:
        derived_id = store.finish_run(
            self.ctx.db, event_id=self.event_id, run_id=self.run_id, state=state, outcome=outcome,
            reason=reason, **kw,  # type: ignore[arg-type]
        )
        return Result(state.value, reason, derived=[derived_id] if derived_id else [])

    def _retry_or_dead(self, exc: RetryableError) -> Result:
        now = utcnow()
        plan = plan_retry(attempts=self.row.attempts, retry_after=exc.retry_after,
                          horizon_from=self.row.horizon_from or self.row.received_at,
                          horizon_hours=self.ctx.retry_horizon_hours, now=now)
        if plan.kind == "dead":
            return self._finish(EventState.DEAD, "dead",
                                f"retries-exhausted after {self.row.attempts} attempts: {exc.reason}")
        state = EventState.RETRYING if plan.kind == "short" else EventState.PARKED
        self._finish(state, "retry", exc.reason, not_before=now + plan.not_before)
        return Result(state.value, exc.reason, retry_in=plan.delay if plan.kind == "short" else None)

    # ---- the run ----------------------------------------------------------------------------
    def execute(self) -> Result:
        try:
            event = parse_stored(self.row)
        except (ValidationError, ValueError) as exc:
            return self._finish(EventState.DEAD, "dead", f"unparseable: {str(exc)[:300]}")
        decision = decide(event, self.ctx.rules)
        if isinstance(decision, Ignore):
            return self._finish(EventState.IGNORED, "ignored", decision.reason, decision="ignore")
        self.ctx.client.set_attempt_hook(self._record_attempt)
        try:
            return self._apply(event, decision)
        except PermanentError as exc:
            return self._finish(EventState.DEAD, "dead", exc.reason, decision="transition")
        except UnknownPicklistValue as exc:
            return self._finish(EventState.DEAD, "dead", f"unknown-status: {exc}", decision="transition")
        except RetryableError as exc:
            return self._retry_or_dead(exc)
        finally:
            self.ctx.client.set_attempt_hook(None)
            if self.leased_ticket is not None:
                store.release_ticket(self.ctx.db, self.leased_ticket, self.event_id)

    def _record_attempt(self, attempt: Attempt) -> None:
        store.record_attempt(self.ctx.db, self.event_id, self.run_id, attempt)

    def _resolve_ticket(self, event: PartnerEvent) -> Ticket | None:
        """Read the ticket and take its lease; None when another event holds the lease."""
        client, started = self.ctx.client, utcnow()
        if event.ticket_id is not None:
            ticket = client.get_ticket(event.ticket_id)
        else:
            assert event.ticket_number is not None
            ticket = client.find_ticket_by_number(event.ticket_number)
        if not store.claim_ticket(self.ctx.db, ticket.id, self.event_id, self.ctx.lease_seconds):
            return None
        self.leased_ticket = ticket.id
        state = store.ticket_state(self.ctx.db, ticket.id)
        if state is not None and state.updated_at > started:
            ticket = client.get_ticket(ticket.id)  # another run wrote while we read: read again
        return ticket

    def _apply(self, event: PartnerEvent, decision: Transition) -> Result:
        ctx, client = self.ctx, self.ctx.client
        lists = ctx.lists()
        target_id = lists.status_id(decision.status) if decision.status else None
        ticket = self._resolve_ticket(event)
        if ticket is None:
            self._finish(EventState.RETRYING, "retry", "ticket-busy")
            return Result(EventState.RETRYING.value, "ticket-busy", retry_in=2.0)
        labels = lists.status
        base: dict[str, object] = {
            "decision": "transition", "ticket_id": ticket.id,
            "from_status": labels.label(ticket.status), "to_status": decision.status,
        }
        effect = store.get_effect(ctx.db, self.event_id)
        if effect is None:
            last = store.ticket_state(ctx.db, ticket.id)
            if last is not None and last.last_occurred_at is not None and event.occurred_at < last.last_occurred_at:
                return self._finish(EventState.SKIPPED, "skipped", "stale", **base)
            if event.expect_status_id is not None and ticket.status != event.expect_status_id:
                return self._finish(EventState.SKIPPED, "skipped", "status-changed", **base)
            if target_id is not None and ticket.status == target_id:
                return self._finish(
                    EventState.SKIPPED, "skipped", "already-set",
                    ticket_update=(ticket.id, event.occurred_at, target_id), **base,
                )
            effect = store.update_effect(
                ctx.db, EffectLedger(event_id=self.event_id, ticket_id=ticket.id,
                                     from_status_id=ticket.status, to_status_id=target_id),
            )
        base["from_status"] = labels.label(effect.from_status_id)
        if target_id is not None and effect.patched_at is None:
            if ticket.status != target_id:
                effect = store.update_effect(ctx.db, effect, patch_started_at=utcnow())
                client.set_ticket_status(ticket.id, target_id)
            effect = store.update_effect(ctx.db, effect, patched_at=utcnow())
        if decision.note and effect.note_id is None:
            effect = self._note_once(event, effect, lists)
        derived = self._follow_up(event, decision, ticket.id, target_id)
        result = self._finish(
            EventState.APPLIED, "applied", None,
            ticket_update=(ticket.id, event.occurred_at, target_id), derived=derived, **base,
        )
        if ctx.follow_up_delay_seconds <= SHORT_RETRY_MAX:  # else it waits parked for the sweeper
            for child in result.derived:
                ctx.enqueue(child, float(ctx.follow_up_delay_seconds))
        return result

    def _note_once(self, event: PartnerEvent, effect: EffectLedger, lists: Picklists) -> EffectLedger:
        ctx, client = self.ctx, self.ctx.client
        if effect.note_started_at is not None:
            # A previous run started the POST and died before recording its result: look first.
            found = client.find_ticket_notes(effect.ticket_id, containing=marker(self.event_id))
            if found:
                return store.update_effect(ctx.db, effect, note_id=found[0].id)
        note_type, publish = lists.note_settings(ctx.note_type, ctx.note_publish)
        title, description = render_note(
            event, event_id=self.event_id, from_status=lists.status.label(effect.from_status_id),
            to_status=lists.status.label(effect.to_status_id) if effect.to_status_id is not None else None,
            received_at=self.row.received_at,
        )
        effect = store.update_effect(ctx.db, effect, note_started_at=utcnow())
        note_id = client.add_ticket_note(
            effect.ticket_id, title=title, description=description, note_type=note_type, publish=publish
        )
        return store.update_effect(ctx.db, effect, note_id=note_id)

    def _follow_up(
        self, event: PartnerEvent, decision: Transition, ticket_id: int, target_id: int | None
    ) -> store.NewEvent | None:
        if decision.follow_up is None or target_id is None or decision.status is None:
            return None
        now = utcnow()
        # The follow-up belongs to its cause's moment on the partner's clock: stamping it with our
        # processing time would make later partner events look older than it (and "stale").
        body = FollowUpBody(
            cause_event_id=self.event_id, cause_type=event.type, ticket_id=ticket_id,
            expect_status_id=target_id, expect_status=decision.status, occurred_at=event.occurred_at,
        )
        delay = self.ctx.follow_up_delay_seconds
        return store.NewEvent(
            source="atrelay", external_id=f"{self.event_id}:{decision.follow_up.value}",
            event_type=decision.follow_up.value, body=body.encode(), headers={}, ticket_id=ticket_id,
            occurred_at=event.occurred_at, caused_by_id=self.event_id,
            not_before=now + timedelta(seconds=delay) if delay else None,
            state=EventState.PARKED if delay > SHORT_RETRY_MAX else EventState.ACCEPTED,
        )
