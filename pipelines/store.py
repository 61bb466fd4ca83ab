"""Audit-log reads and writes used by the ingress, the pipeline and the CLI.

Each write that guards an external effect commits on its own, before or after that effect, so a
crash at any point leaves a record that tells the next run exactly what already happened.
"""

from __future__ import annotations

import functools
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, or_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from connectors.autotask.client import Attempt
from pipelines.audit import (
    DeploymentSecret,
    EffectLedger,
    EventState,
    InboundEvent,
    OutboundAttempt,
    PartnerSighting,
    PipelineRun,
    RejectedRequest,
    TicketState,
    TicketStatusChange,
)
from pipelines.db import db_now, engine_for, insert_for, session_scope, storable_counted, utcnow
from pipelines.invalid import INVALID_TYPE, revalidate_into

__all__ = [
    "NEVER",
    "QUIET_NOTE",
    "Claim",
    "EscalationClaim",
    "EventState",
    "LeaseLost",
    "NewEvent",
    "Observed",
    "Sighting",
    "claim_event",
    "claim_ticket",
    "dead_letters",
    "deployment_secret",
    "drop_effect",
    "escalation_claims",
    "event_story",
    "finish_run",
    "get_effect",
    "get_event",
    "insert_event",
    "last_change_id",
    "left_between_changes",
    "observe_status",
    "observed_change",
    "observed_status",
    "owns",
    "park",
    "partner_seen",
    "record_attempt",
    "record_crash",
    "record_patched",
    "record_rejection",
    "redate_event",
    "release_ticket",
    "renew_lease",
    "replay",
    "report_replaced",
    "saw_partner",
    "start_run",
    "status_changes_after",
    "status_changes_between",
    "update_effect",
]

NEVER = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_INT4 = 2**31 - 1
# Substrings of header names that carry credentials, whatever a sender calls them (api-key, x-auth,
# x-access-key, apiintegrationcode, session, ...): such headers are never kept.
_REDACT = ("authorization", "auth", "cookie", "secret", "apiintegrationcode", "key", "token", "password",
           "session", "credential", "signature-key")


def safe_headers(headers: dict[str, str]) -> dict[str, str]:
    """Request headers as kept in the audit log: anything credential-like is dropped."""
    return {k.lower(): v for k, v in headers.items() if not any(r in k.lower() for r in _REDACT)}


@dataclass(frozen=True)
class NewEvent:
    source: str
    external_id: str
    event_type: str
    body: bytes
    headers: dict[str, str]
    ticket_id: int | None = None
    ticket_number: str | None = None
    occurred_at: datetime | None = None
    caused_by_id: int | None = None
    not_before: datetime | None = None
    state: str = EventState.ACCEPTED
    reason: str | None = None  # why an event recorded as not runnable (ignored) is not


@functools.lru_cache(maxsize=4)
def _insert_statement(dialect: str) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING id, built once: it is the ingress's hot path."""
    dialect_insert = insert_for(dialect)
    columns = ("source", "external_id", "event_type", "body", "headers", "ticket_id", "ticket_number",
               "occurred_at", "caused_by_id", "not_before", "state", "received_at", "updated_at", "attempts",
               "replays", "reason")
    return (
        dialect_insert(InboundEvent)
        .values({name: bindparam(name) for name in columns})
        .on_conflict_do_nothing(index_elements=["source", "external_id"])
        .returning(col(InboundEvent.id))
    )


def insert_event(db: str, new: NewEvent) -> tuple[int, bool]:
    """Record an inbound event; return (id, created). A repeat of (source, external_id) is not created.

    One prepared INSERT in its own transaction, committed before this returns.
    """
    engine = engine_for(db)
    now = utcnow()
    params = {
        "source": new.source, "external_id": new.external_id, "event_type": new.event_type, "body": new.body,
        "headers": safe_headers(new.headers), "ticket_id": new.ticket_id, "ticket_number": new.ticket_number,
        "occurred_at": new.occurred_at, "caused_by_id": new.caused_by_id, "not_before": new.not_before,
        "state": str(new.state), "received_at": now, "updated_at": now, "attempts": 0, "replays": 0,
        "reason": new.reason,
    }
    with engine.begin() as conn:
        created = conn.execute(_insert_statement(engine.dialect.name), params).scalar()
        if created is not None:
            return int(created), True
        existing = conn.execute(
            select(InboundEvent.id).where(InboundEvent.source == new.source,
                                          InboundEvent.external_id == new.external_id)
        ).scalar_one()
        return int(existing), False


def record_rejection(
    db: str, *, source: str, status_code: int, reason: str, webhook_id: str | None, remote: str | None,
    body_size: int, keep: int,
) -> None:
    """Record why a request was refused; the table keeps only the newest ``keep`` rows."""
    with session_scope(db) as s:
        row = RejectedRequest(
            source=source, status_code=status_code, reason=reason[:300],
            webhook_id=(webhook_id or None) and webhook_id[:200], remote=(remote or None) and remote[:64],
            # A client's claimed size can exceed any integer column (2**31 on PostgreSQL, 2**63 on SQLite).
            body_size=max(0, min(body_size, _MAX_INT4)),
        )
        s.add(row)
        s.flush()
        assert row.id is not None
        # Prune in batches (every 100th row) so a flood costs one cheap delete per hundred requests.
        if row.id % 100 == 0:
            s.execute(delete(RejectedRequest).where(col(RejectedRequest.id) <= row.id - keep))


def get_event(db: str, event_id: int) -> InboundEvent | None:
    with session_scope(db) as s:
        return s.get(InboundEvent, event_id)


def redate_event(db: str, event_id: int, occurred_at: datetime) -> None:
    """A derived event (a guard) acts for a person's later change: it is dated by that change from now on."""
    with session_scope(db) as s:
        s.execute(update(InboundEvent).where(col(InboundEvent.id) == event_id).values(occurred_at=occurred_at))


@dataclass(frozen=True)
class Claim:
    """The result of trying to take an event: ``event`` when this run owns it (as ``owner``)."""

    event: InboundEvent | None
    state: str
    wait_seconds: float = 0.0
    owner: str | None = None


class LeaseLost(Exception):
    """This run no longer holds the event's lease (it outlived it and another run took over)."""


def claim_event(db: str, event_id: int, lease_seconds: float, owner: str | None = None) -> Claim:
    """Take the event for this run, unless another run holds an unexpired lease or it is final.

    Times are the database's (:func:`db_now`), so machines whose clocks disagree agree on leases.
    """
    owner = owner or uuid.uuid4().hex
    now = db_now(db)
    with session_scope(db) as s:
        result = s.execute(
            update(InboundEvent)
            .where(col(InboundEvent.id) == event_id)
            .where(
                or_(
                    col(InboundEvent.state).in_([EventState.ACCEPTED, EventState.RETRYING, EventState.PARKED]),
                    (col(InboundEvent.state) == EventState.PROCESSING) & (col(InboundEvent.lease_until) < now),
                )
            )
            .where(or_(col(InboundEvent.not_before).is_(None), col(InboundEvent.not_before) <= now))
            .values(
                state=EventState.PROCESSING,
                lease_until=now + timedelta(seconds=lease_seconds),
                lease_owner=owner,
                attempts=col(InboundEvent.attempts) + 1,
                updated_at=now,
            )
        )
        row = s.get(InboundEvent, event_id)
        if row is None:
            return Claim(None, "missing")
        if result.rowcount == 1:  # type: ignore[attr-defined]
            return Claim(row, "claimed", owner=owner)
        if row.not_before is not None and row.not_before > now and not EventState(row.state).final:
            return Claim(None, "not-yet", (row.not_before - now).total_seconds())
        if row.state == EventState.PROCESSING and row.lease_until is not None:
            return Claim(None, "leased", max(1.0, (row.lease_until - now).total_seconds()))
        return Claim(None, row.state)


def _run_owner(s: Any, event_id: int) -> str:
    """The owner token of the run holding ``event_id`` (its ticket lease carries the same token)."""
    owner = s.exec(select(InboundEvent.lease_owner).where(InboundEvent.id == event_id)).first()
    return str(owner) if owner else f"event:{event_id}"


def claim_ticket(db: str, ticket_id: int, event_id: int, lease_seconds: float) -> bool:
    """Serialise work per ticket across workers, so ordering checks and writes do not interleave.

    The lease carries the claiming run's owner token (the event's ``lease_owner``): a run that lost
    its event to another worker holds nothing the new owner holds, so it cannot release or renew the
    new owner's ticket lease, and the new owner must wait for the old lease to expire.
    """
    now = db_now(db)
    with session_scope(db) as s:
        owner = _run_owner(s, event_id)
        if s.get(TicketState, ticket_id) is None:
            try:
                with s.begin_nested():
                    # updated_at means "atrelay last wrote to this ticket": never, for a new row.
                    s.add(TicketState(ticket_id=ticket_id, updated_at=NEVER))
            except IntegrityError:
                pass
        result = s.execute(
            update(TicketState)
            .where(col(TicketState.ticket_id) == ticket_id)
            .where(
                or_(
                    col(TicketState.lease_owner).is_(None),
                    col(TicketState.lease_owner) == owner,
                    col(TicketState.lease_until).is_(None),
                    col(TicketState.lease_until) < now,
                )
            )
            .values(lease_event_id=event_id, lease_owner=owner, lease_until=now + timedelta(seconds=lease_seconds))
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def renew_lease(db: str, event_id: int, owner: str, lease_seconds: float, ticket_id: int | None = None) -> bool:
    """Extend this run's lease (and its ticket lease); False once another run owns the event or the ticket."""
    until = db_now(db) + timedelta(seconds=lease_seconds)
    with session_scope(db) as s:
        result = s.execute(
            update(InboundEvent)
            .where(col(InboundEvent.id) == event_id, col(InboundEvent.lease_owner) == owner,
                   col(InboundEvent.state) == EventState.PROCESSING)
            .values(lease_until=until)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return False
        if ticket_id is not None:
            held = s.execute(update(TicketState).where(col(TicketState.ticket_id) == ticket_id,
                                                       col(TicketState.lease_owner) == owner)
                             .values(lease_until=until))
            if held.rowcount != 1:  # type: ignore[attr-defined]
                return False  # the ticket lease ran out and another run took the ticket
        return True


def owns(db: str, event_id: int, owner: str, ticket_id: int | None = None) -> bool:
    """Does this run still hold the event (and the ticket)? Checked right before every Autotask write."""
    now = db_now(db)
    with session_scope(db) as s:
        row = s.exec(select(InboundEvent.lease_owner, InboundEvent.state).where(InboundEvent.id == event_id)).first()
        if row is None or row[0] != owner or row[1] != EventState.PROCESSING:
            return False
        if ticket_id is None:
            return True
        ticket = s.exec(select(TicketState.lease_owner, TicketState.lease_until)
                        .where(TicketState.ticket_id == ticket_id)).first()
        return ticket is not None and ticket[0] == owner and ticket[1] is not None and ticket[1] > now


def release_ticket(db: str, ticket_id: int, event_id: int, owner: str | None = None) -> None:
    """Give the ticket up; with ``owner``, only if this run still holds it (never another run's lease)."""
    with session_scope(db) as s:
        q = update(TicketState).where(col(TicketState.ticket_id) == ticket_id,
                                      col(TicketState.lease_event_id) == event_id)
        if owner is not None:
            q = q.where(col(TicketState.lease_owner) == owner)
        s.execute(q.values(lease_event_id=None, lease_owner=None, lease_until=None))


def ticket_state(db: str, ticket_id: int) -> TicketState | None:
    with session_scope(db) as s:
        return s.get(TicketState, ticket_id)


def start_run(db: str, event_id: int, task_id: str | None, worker: str | None) -> int:
    with session_scope(db) as s:
        run = PipelineRun(event_id=event_id, task_id=task_id, worker=worker)
        s.add(run)
        s.flush()
        assert run.id is not None
        return run.id


def record_attempt(db: str, event_id: int | None, run_id: int | None, attempt: Attempt) -> None:
    with session_scope(db) as s:
        s.add(
            OutboundAttempt(
                event_id=event_id, run_id=run_id, method=attempt.method, path=attempt.path[:300],
                status_code=attempt.status_code, duration_ms=round(attempt.duration_ms, 2),
                error=attempt.error[:500] if attempt.error else None,
            )
        )


def get_effect(db: str, event_id: int) -> EffectLedger | None:
    with session_scope(db) as s:
        return s.get(EffectLedger, event_id)


def _replaced_note(field: str, count: int) -> str:
    return (f"stored {field} with {count} character{'' if count == 1 else 's'} the audit database cannot keep"
            " replaced by U+FFFD (in the audit log only)")


def _with_notes(reason: str | None, notes: str | None) -> str | None:
    return f"{reason}; {notes}" if reason and notes else reason or notes


def report_replaced(s: Any, event_id: int, field: str, count: int) -> None:
    """Say in the event's story (the reason of its open run) that ``count`` characters of ``field``
    were replaced to be stored, once per run and field.

    Written in the same transaction as the text it explains, so it is never lost to a crash. An open
    run has no reason of its own until it finishes; :func:`finish_run` and :func:`record_crash` keep
    what is noted here after the outcome's reason.
    """
    if count <= 0:
        return
    run = s.exec(select(PipelineRun).where(PipelineRun.event_id == event_id, col(PipelineRun.finished_at).is_(None))
                 .order_by(col(PipelineRun.id).desc())).first()
    if run is not None:
        _note_replaced(run, field, count)


def _note_replaced(run: PipelineRun, field: str, count: int) -> None:
    if count > 0 and f"stored {field} with " not in (run.reason or ""):
        run.reason = _with_notes(run.reason, _replaced_note(field, count))


#: An event's note that landed within this long of its own PATCH keeps the PATCH's verified-write mark
#: (pipelines.gate): what could come between is a person's change within the same moments, the window any
#: check made before a write leaves. A note that landed later clears it.
QUIET_NOTE = timedelta(seconds=2)


def update_effect(db: str, effect: EffectLedger, **values: Any) -> EffectLedger:
    """Create or update the ledger row and commit at once (it guards an external write)."""
    with session_scope(db) as s:
        row = s.get(EffectLedger, effect.event_id)
        if row is None:
            row = EffectLedger(**effect.model_dump())
            s.add(row)
        for key, given in values.items():
            value = given
            if isinstance(given, str):
                value, replaced = storable_counted(given)
                report_replaced(s, effect.event_id, key, replaced)
            setattr(row, key, value)
        if values.get("patch_started_at") is not None or values.get("note_started_at") is not None:
            # atrelay is about to write to the ticket for this event: the last verified write no longer
            # explains all activity on it (pipelines.gate), unless it is this event's own (its note).
            s.execute(update(TicketState).where(col(TicketState.ticket_id) == row.ticket_id,
                                                or_(col(TicketState.quiet_event_id).is_(None),
                                                    col(TicketState.quiet_event_id) != row.event_id))
                      .values(quiet_since=None, quiet_at=None, quiet_event_id=None, quiet_status_id=None))
        if values.get("note_id") is not None:
            # The event's own note landed. Later than QUIET_NOTE after its PATCH (it waited for a slot, a
            # retry after a 429, a re-run after a crash, a replay), it may have landed after a person's
            # change it now hides as the ticket's last activity: the mark goes.
            s.execute(update(TicketState).where(col(TicketState.ticket_id) == row.ticket_id,
                                                col(TicketState.quiet_event_id) == row.event_id,
                                                or_(col(TicketState.quiet_at).is_(None),
                                                    col(TicketState.quiet_at) < db_now(db) - QUIET_NOTE))
                      .values(quiet_since=None, quiet_at=None, quiet_event_id=None, quiet_status_id=None))
        s.flush()
        return EffectLedger(**row.model_dump())


def drop_effect(db: str, event_id: int) -> None:
    """Forget an event's decision to write, when nothing of it reached Autotask (no PATCH started or
    landed, no note): the gate said no on a later try."""
    with session_scope(db) as s:
        s.execute(delete(EffectLedger).where(col(EffectLedger.event_id) == event_id,
                                             col(EffectLedger.patch_started_at).is_(None),
                                             col(EffectLedger.patched_at).is_(None),
                                             col(EffectLedger.note_started_at).is_(None)))


def finish_run(
    db: str,
    *,
    event_id: int,
    run_id: int,
    state: EventState,
    outcome: str,
    reason: str | None = None,
    decision: str | None = None,
    from_status: str | None = None,
    to_status: str | None = None,
    ticket_id: int | None = None,
    not_before: datetime | None = None,
    ticket_update: tuple[int, datetime, int | None] | None = None,
    derived: NewEvent | None = None,
    owner: str | None = None,
    sighting: Sighting | None = None,
) -> int | None:
    """Close the run and the event in one transaction; return the id of a derived event if one was made.

    With ``owner``, only the run holding the lease may close the event: a run that lost it gets
    :class:`LeaseLost` (its run row is closed as ``lease-lost``; the event is left to its owner).
    ``sighting`` (an observation run's ticket status) is recorded in the same transaction as the
    events derived from it, or not at all: a re-run then sees the change again and derives them again.
    """
    now = utcnow()
    reason, replaced = storable_counted(reason)
    with session_scope(db) as s:
        run = s.get(PipelineRun, run_id)
        assert run is not None
        event = s.get(InboundEvent, event_id)
        assert event is not None
        _note_replaced(run, "reason", replaced)
        notes = run.reason  # what the run noted while open (text stored replaced): kept after the outcome
        if owner is not None and (event.lease_owner != owner or event.state != EventState.PROCESSING):
            run.finished_at, run.outcome = now, "lease-lost"
            run.reason = _with_notes(
                f"lost the lease before finishing ({outcome}: {reason or '-'}); the new owner finishes it", notes)
            derived = None
            lost = True
        else:
            lost = False
            run.finished_at, run.outcome, run.reason = now, outcome, _with_notes(reason, notes)
            run.decision, run.from_status, run.to_status = decision, from_status, to_status
            event.state, event.reason, event.updated_at, event.lease_until = state, reason, now, None
            event.lease_owner = None
            event.not_before = not_before
            if ticket_id is not None:
                event.ticket_id = ticket_id
        if sighting is not None and not lost:
            _observe_in(s, db, sighting)
        if ticket_update is not None and not lost:
            tid, occurred, status_id = ticket_update
            ts = s.get(TicketState, tid) or TicketState(ticket_id=tid)
            if ts.last_occurred_at is None or occurred >= ts.last_occurred_at:
                ts.last_event_id, ts.last_occurred_at = event_id, occurred
                if status_id is not None:
                    ts.last_status_id = status_id
            ts.updated_at = now
            s.add(ts)
        derived_id: int | None = None
        if derived is not None:
            exists = s.exec(
                select(InboundEvent.id).where(
                    InboundEvent.source == derived.source, InboundEvent.external_id == derived.external_id
                )
            ).first()
            if exists is None:
                child = InboundEvent(
                    source=derived.source, external_id=derived.external_id, event_type=derived.event_type,
                    body=derived.body, headers={}, ticket_id=derived.ticket_id,
                    occurred_at=derived.occurred_at, caused_by_id=derived.caused_by_id,
                    not_before=derived.not_before, state=derived.state, reason=derived.reason,
                    ticket_number=derived.ticket_number,
                )
                s.add(child)
                s.flush()
                derived_id = child.id
    if lost:
        raise LeaseLost(f"event #{event_id}: another run holds the lease")
    return derived_id


@dataclass(frozen=True)
class CrashRecord:
    """What :func:`record_crash` did: dead-lettered, or retried after ``retry_in`` seconds."""

    dead: bool
    reason: str
    retry_in: float | None


def record_crash(db: str, *, event_id: int, run_id: int, owner: str | None, summary: str,
                 max_crashes: int) -> CrashRecord:
    """A run ended in an unexpected exception: count it; past ``max_crashes``, dead-letter the event.

    Until then the event is retried after a growing pause (5, 10, 20 ... s). A run that no longer holds
    the event records only its own run row (the owner decides).
    """
    stored, replaced = storable_counted(summary[:500])
    summary = stored or "-"
    now = utcnow()
    with session_scope(db) as s:
        event = s.get(InboundEvent, event_id)
        run = s.get(PipelineRun, run_id)
        if event is None or run is None:
            return CrashRecord(False, summary, None)
        _note_replaced(run, "crash summary", replaced)
        notes = run.reason  # what the run noted while open (text stored replaced): kept after the outcome
        if owner is not None and (event.lease_owner != owner or event.state != EventState.PROCESSING):
            run.finished_at, run.outcome = now, "lease-lost"
            run.reason = _with_notes(f"crashed after losing the lease: {summary}", notes)
            return CrashRecord(False, summary, None)
        event.crashes = (event.crashes or 0) + 1
        dead = event.crashes >= max(1, max_crashes)
        if dead:
            reason = f"crashed {event.crashes} times: {summary}"
        else:
            reason = f"crashed ({event.crashes} of {max_crashes}): {summary}"
        delay = 0.0 if dead else min(300.0, 5.0 * 2 ** (event.crashes - 1))
        run.finished_at, run.outcome, run.reason = now, "dead" if dead else "retry", _with_notes(reason, notes)
        event.state = EventState.DEAD if dead else EventState.RETRYING
        event.reason, event.updated_at, event.lease_until, event.lease_owner = reason, now, None, None
        event.not_before = None if dead else now + timedelta(seconds=delay)
        return CrashRecord(dead, reason, None if dead else delay)


def park(db: str, event_id: int) -> None:
    """Leave an accepted event to the sweeper (its ``not_before`` is too far for a broker countdown)."""
    with session_scope(db) as s:
        s.execute(update(InboundEvent).where(col(InboundEvent.id) == event_id,
                                             col(InboundEvent.state) == EventState.ACCEPTED)
                  .values(state=EventState.PARKED, updated_at=utcnow()))


REPLAYABLE = (EventState.DEAD, EventState.SKIPPED, EventState.IGNORED, EventState.INVALID)


def replay(db: str, event_id: int) -> tuple[bool, str]:
    """Put a dead (or skipped/ignored) event back to run; return (queued, message).

    Idempotent by construction: the effect ledger still knows what the event already wrote, so a
    replay never writes a second status change or note. The retry horizon restarts now.
    """
    now = utcnow()
    with session_scope(db) as s:
        row = s.get(InboundEvent, event_id)
        if row is None:
            return False, f"no event #{event_id}"
        if row.state not in REPLAYABLE:
            return False, f"event #{event_id} is {row.state}; only dead, skipped or ignored events are replayed"
        # A kept invalid body is checked again with today's code first (pipelines/invalid.py).
        if row.event_type == INVALID_TYPE and (refused := revalidate_into(s, row)) is not None:
            return False, f"event #{event_id} not replayed: {refused}"
        row.state, row.reason, row.not_before, row.lease_until = EventState.ACCEPTED, None, None, None
        row.horizon_from, row.updated_at, row.replays = now, now, row.replays + 1
        row.crashes = 0  # a replay gets its own tries
        return True, f"event #{event_id} queued again (replay {row.replays})"


def dead_letters(db: str, *, since: datetime | None = None, limit: int | None = None) -> list[InboundEvent]:
    with session_scope(db) as s:
        q = select(InboundEvent).where(InboundEvent.state == EventState.DEAD).order_by(col(InboundEvent.id))
        if since is not None:
            q = q.where(col(InboundEvent.updated_at) >= since)
        if limit is not None:
            q = q.limit(limit)
        return list(s.exec(q).all())


@dataclass(frozen=True)
class EventStory:
    """One event with everything that happened to it: for `atrelay events show` and the dashboard."""

    event: InboundEvent
    runs: list[PipelineRun]
    attempts: list[OutboundAttempt]
    children: list[InboundEvent]


def event_story(db: str, event_id: int) -> EventStory | None:
    with session_scope(db) as s:
        event = s.get(InboundEvent, event_id)
        if event is None:
            return None
        runs = list(s.exec(select(PipelineRun).where(PipelineRun.event_id == event_id)
                           .order_by(col(PipelineRun.id))).all())
        attempts = list(s.exec(select(OutboundAttempt).where(OutboundAttempt.event_id == event_id)
                               .order_by(col(OutboundAttempt.id))).all())
        children = list(s.exec(select(InboundEvent).where(InboundEvent.caused_by_id == event_id)
                               .order_by(col(InboundEvent.id))).all())
        return EventStory(event, runs, attempts, children)


@dataclass(frozen=True)
class Observed:
    """The outcome of recording a ticket status seen in Autotask."""

    changed: bool
    previous: int | None  # the status atrelay knew before (None: never seen)


@dataclass(frozen=True)
class Sighting:
    """A ticket status seen in Autotask (or written by atrelay), to record; see :func:`observe_status`."""

    ticket_id: int
    status_id: int
    changed_at: datetime
    by_resource_id: int | None
    by_atrelay: bool
    via: str  # callout | reconciliation | atrelay | read
    event_id: int | None
    baseline_only: bool = False


def observe_status(db: str, ticket_id: int, status_id: int, *, changed_at: datetime, by_resource_id: int | None,
                   by_atrelay: bool, via: str, event_id: int | None, baseline_only: bool = False) -> Observed:
    """Record that Autotask shows ``status_id`` on the ticket; a change from what atrelay knew is kept.

    Run under the ticket's lease, so observations and atrelay's own writes on one ticket do not
    interleave. ``baseline_only`` records the status without counting it as a change (first sight).
    """
    with session_scope(db) as s:
        return _observe_in(s, db, Sighting(ticket_id, status_id, changed_at, by_resource_id, by_atrelay, via,
                                           event_id, baseline_only))


def _observe_in(s: Any, db: str, seen: Sighting) -> Observed:
    """:func:`observe_status` inside the caller's transaction."""
    ts = s.get(TicketState, seen.ticket_id)
    if ts is None:
        ts = TicketState(ticket_id=seen.ticket_id, updated_at=NEVER)
    previous = ts.observed_status_id
    if seen.via == "atrelay" or not seen.by_atrelay:
        # A read shared by runs (pipelines.ticket_reads) is stale now. atrelay's own write is not kept
        # in its place: only the follow-up that runs right after knows nobody acted since. Written as
        # its own UPDATE (not left to the ORM, which skips a column it thinks unchanged) so a read
        # another run stored after this row was loaded is dropped too.
        dropped = db_now(db)
        if ts in s:
            s.execute(update(TicketState).where(col(TicketState.ticket_id) == seen.ticket_id)
                      .values(read_at=None, read_dropped_at=dropped))
        else:
            ts.read_at, ts.read_dropped_at = None, dropped
            s.add(ts)
    if previous == seen.status_id:
        return Observed(False, previous)
    ts.observed_status_id, ts.observed_at = seen.status_id, seen.changed_at
    s.add(ts)
    if previous is None and seen.baseline_only:
        return Observed(False, None)
    s.add(TicketStatusChange(ticket_id=seen.ticket_id, from_status_id=previous, to_status_id=seen.status_id,
                             changed_at=seen.changed_at, by_resource_id=seen.by_resource_id,
                             by_atrelay=seen.by_atrelay, via=seen.via, event_id=seen.event_id))
    return Observed(True, previous)


def record_patched(db: str, effect: EffectLedger, status_id: int, *, at: datetime,
                   quiet_since: datetime | None = None) -> EffectLedger:
    """The PATCH landed: its ledger mark and atrelay's own write as the ticket's status, in one transaction.

    ``quiet_since``: the event's time, when its gate found nobody else had changed the status since
    (kept as the ticket's last verified write, pipelines.gate).
    """
    with session_scope(db) as s:
        row = s.get(EffectLedger, effect.event_id)
        assert row is not None
        row.patched_at = at
        _observe_in(s, db, Sighting(effect.ticket_id, status_id, at, None, True, "atrelay", effect.event_id))
        s.flush()
        if quiet_since is not None:
            s.execute(update(TicketState).where(col(TicketState.ticket_id) == effect.ticket_id)
                      .values(quiet_since=quiet_since, quiet_at=db_now(db), quiet_event_id=effect.event_id,
                              quiet_status_id=status_id))
        return EffectLedger(**row.model_dump())


def observed_status(db: str, ticket_id: int) -> int | None:
    with session_scope(db) as s:
        ts = s.get(TicketState, ticket_id)
        return ts.observed_status_id if ts is not None else None


@dataclass(frozen=True)
class EscalationClaim:
    """Another report of an escalation that took it on (see :func:`escalation_claims`)."""

    event_id: int
    occurred_at: datetime
    seen_change_id: int | None  # the newest recorded status change on the ticket when it decided


def escalation_claims(db: str, *, ticket_id: int, event_type: str, exclude_event_id: int,
                      other_than_source: str) -> list[EscalationClaim]:
    """Events of this type from the *other* channel that took this ticket's escalation on, newest first.

    Mission Control reports one escalation through two channels: its webhook, and the status it sets
    in Autotask (seen by callout or reconciliation). Two reports through the same channel are two
    escalations (a webhook repeated by MC is the same message and never gets this far).
    An event takes the escalation on when its run records an effect (its write or its note is owed),
    whatever state it is in now: retrying or parked counts, so an escalation reported twice while the
    first report waits on a 429 is still one. Dead events do not count: whoever reports the
    escalation next writes its note.
    """
    with session_scope(db) as s:
        # A claim pairs with one report of the other channel at most: one already paired with a report
        # from this event's channel is not this event's echo.
        paired = (select(EffectLedger.duplicate_of)
                  .join(InboundEvent, col(InboundEvent.id) == col(EffectLedger.event_id))
                  .where(col(EffectLedger.duplicate_of).is_not(None), col(EffectLedger.ticket_id) == ticket_id,
                         InboundEvent.source == other_than_source, col(InboundEvent.id) != exclude_event_id))
        rows = s.exec(
            select(InboundEvent.id, InboundEvent.occurred_at, InboundEvent.received_at, EffectLedger.seen_change_id)
            .join(EffectLedger, col(EffectLedger.event_id) == col(InboundEvent.id))
            .where(InboundEvent.event_type == event_type, col(EffectLedger.ticket_id) == ticket_id,
                   col(InboundEvent.id) != exclude_event_id, col(InboundEvent.source) != other_than_source,
                   col(EffectLedger.duplicate_of).is_(None), col(InboundEvent.id).not_in(paired),
                   col(InboundEvent.state).not_in([EventState.DEAD, EventState.INVALID, EventState.IGNORED]))
            .order_by(col(InboundEvent.id).desc()).limit(10)
        ).all()
        return [EscalationClaim(int(i), at or received, seen) for i, at, received, seen in rows if i is not None]


def last_change_id(db: str, ticket_id: int) -> int:
    """The newest recorded status change of the ticket (0: none): what a decision knew of."""
    with session_scope(db) as s:
        found = s.exec(select(TicketStatusChange.id).where(TicketStatusChange.ticket_id == ticket_id)
                       .order_by(col(TicketStatusChange.id).desc()).limit(1)).first()
        return int(found) if found is not None else 0


def observed_change(db: str, ticket_id: int, observation_id: int) -> TicketStatusChange | None:
    """The status change an observation run recorded (what an event derived from it reports)."""
    with session_scope(db) as s:
        return s.exec(select(TicketStatusChange).where(TicketStatusChange.ticket_id == ticket_id,
                                                       TicketStatusChange.event_id == observation_id)
                      .order_by(col(TicketStatusChange.id).desc()).limit(1)).first()


def left_between_changes(db: str, ticket_id: int, status_id: int | None, *, after_id: int, before_id: int) -> bool:
    """Did the ticket move to a status other than ``status_id`` between two recorded changes (by row order)?"""
    with session_scope(db) as s:
        return s.exec(select(TicketStatusChange.id).where(
            TicketStatusChange.ticket_id == ticket_id, col(TicketStatusChange.id) > after_id,
            col(TicketStatusChange.id) < before_id, col(TicketStatusChange.to_status_id) != status_id)
            .limit(1)).first() is not None


def status_changes_between(db: str, ticket_id: int, start: datetime, end: datetime) -> list[TicketStatusChange]:
    """Every recorded status change (atrelay's own included) with ``start < changed_at <= end``."""
    with session_scope(db) as s:
        return list(s.exec(select(TicketStatusChange).where(
            TicketStatusChange.ticket_id == ticket_id, col(TicketStatusChange.changed_at) > start,
            col(TicketStatusChange.changed_at) <= end).order_by(col(TicketStatusChange.changed_at))).all())


def atrelay_wrote(db: str, ticket_id: int, status_id: int) -> bool:
    """True when the effect ledger shows atrelay itself set this status on this ticket."""
    with session_scope(db) as s:
        return s.exec(select(EffectLedger.event_id).where(
            EffectLedger.ticket_id == ticket_id, EffectLedger.to_status_id == status_id,
            col(EffectLedger.patched_at).is_not(None))).first() is not None


def status_changes_after(db: str, ticket_id: int, after: datetime) -> list[TicketStatusChange]:
    """Status changes seen in Autotask after ``after`` that atrelay did not make, oldest first."""
    with session_scope(db) as s:
        return list(s.exec(select(TicketStatusChange).where(
            TicketStatusChange.ticket_id == ticket_id, col(TicketStatusChange.changed_at) > after,
            col(TicketStatusChange.by_atrelay).is_(False)).order_by(col(TicketStatusChange.changed_at))).all())


def deployment_secret(db: str, name: str) -> str:
    """A random value shared by every machine of this deployment, created on first use (race-safe)."""
    with session_scope(db) as s:
        row = s.get(DeploymentSecret, name)
        if row is not None:
            return row.value
        try:
            with s.begin_nested():
                s.add(DeploymentSecret(name=name, value=secrets.token_hex(32)))
        except IntegrityError:
            pass  # another machine created it first: use theirs
    with session_scope(db) as s:
        row = s.get(DeploymentSecret, name)
        assert row is not None
        return row.value


def saw_partner(db: str, name: str, *, at: datetime, ticket_id: int | None = None) -> None:
    """Remember that a partner (``timezest-psa``) was seen writing to a ticket at ``at`` (kept: the latest)."""
    with session_scope(db) as s:
        row = s.get(PartnerSighting, name)
        if row is not None:
            if row.last_seen_at < at:
                row.last_seen_at, row.ticket_id = at, ticket_id
                s.add(row)
            return
        try:
            with s.begin_nested():
                s.add(PartnerSighting(name=name, last_seen_at=at, ticket_id=ticket_id))
        except IntegrityError:
            pass  # another worker saw it at the same moment: one sighting is all it takes


def partner_seen(db: str, name: str) -> PartnerSighting | None:
    """The last sighting of a partner writing to the tenant's tickets (``saw_partner``), or None: never seen."""
    with session_scope(db) as s:
        return s.get(PartnerSighting, name)
