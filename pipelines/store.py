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
    PipelineRun,
    RejectedRequest,
    TicketState,
    TicketStatusChange,
)
from pipelines.db import db_now, engine_for, insert_for, session_scope, utcnow
from pipelines.invalid import INVALID_TYPE, revalidate_into

__all__ = [
    "NEVER",
    "Claim",
    "EventState",
    "LeaseLost",
    "NewEvent",
    "Observed",
    "claim_event",
    "claim_ticket",
    "dead_letters",
    "deployment_secret",
    "earlier_escalation",
    "event_story",
    "finish_run",
    "get_effect",
    "get_event",
    "insert_event",
    "observe_status",
    "observed_status",
    "owns",
    "park",
    "record_attempt",
    "record_rejection",
    "release_ticket",
    "renew_lease",
    "replay",
    "start_run",
    "status_changes_after",
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


def claim_ticket(db: str, ticket_id: int, event_id: int, lease_seconds: float) -> bool:
    """Serialise work per ticket across workers, so ordering checks and writes do not interleave."""
    now = db_now(db)
    with session_scope(db) as s:
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
                    col(TicketState.lease_event_id).is_(None),
                    col(TicketState.lease_event_id) == event_id,
                    col(TicketState.lease_until) < now,
                )
            )
            .values(lease_event_id=event_id, lease_until=now + timedelta(seconds=lease_seconds))
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def renew_lease(db: str, event_id: int, owner: str, lease_seconds: float, ticket_id: int | None = None) -> bool:
    """Extend this run's lease (and its ticket lease); False once another run owns the event."""
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
            s.execute(update(TicketState).where(col(TicketState.ticket_id) == ticket_id,
                                                col(TicketState.lease_event_id) == event_id)
                      .values(lease_until=until))
        return True


def owns(db: str, event_id: int, owner: str) -> bool:
    """Does this run still hold the event? Checked right before every Autotask write."""
    with session_scope(db) as s:
        row = s.exec(select(InboundEvent.lease_owner, InboundEvent.state).where(InboundEvent.id == event_id)).first()
        return row is not None and row[0] == owner and row[1] == EventState.PROCESSING


def release_ticket(db: str, ticket_id: int, event_id: int) -> None:
    with session_scope(db) as s:
        s.execute(
            update(TicketState)
            .where(col(TicketState.ticket_id) == ticket_id, col(TicketState.lease_event_id) == event_id)
            .values(lease_event_id=None, lease_until=None)
        )


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


def update_effect(db: str, effect: EffectLedger, **values: Any) -> EffectLedger:
    """Create or update the ledger row and commit at once (it guards an external write)."""
    with session_scope(db) as s:
        row = s.get(EffectLedger, effect.event_id)
        if row is None:
            row = EffectLedger(**effect.model_dump())
            s.add(row)
        for key, value in values.items():
            setattr(row, key, value)
        s.flush()
        return EffectLedger(**row.model_dump())


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
) -> int | None:
    """Close the run and the event in one transaction; return the id of a derived event if one was made.

    With ``owner``, only the run holding the lease may close the event: a run that lost it gets
    :class:`LeaseLost` (its run row is closed as ``lease-lost``; the event is left to its owner).
    """
    now = utcnow()
    with session_scope(db) as s:
        run = s.get(PipelineRun, run_id)
        assert run is not None
        event = s.get(InboundEvent, event_id)
        assert event is not None
        if owner is not None and (event.lease_owner != owner or event.state != EventState.PROCESSING):
            run.finished_at, run.outcome = now, "lease-lost"
            run.reason = f"lost the lease before finishing ({outcome}: {reason or '-'}); the new owner finishes it"
            derived = None
            lost = True
        else:
            lost = False
            run.finished_at, run.outcome, run.reason = now, outcome, reason
            run.decision, run.from_status, run.to_status = decision, from_status, to_status
            event.state, event.reason, event.updated_at, event.lease_until = state, reason, now, None
            event.lease_owner = None
            event.not_before = not_before
            if ticket_id is not None:
                event.ticket_id = ticket_id
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
                    not_before=derived.not_before, state=derived.state,
                )
                s.add(child)
                s.flush()
                derived_id = child.id
    if lost:
        raise LeaseLost(f"event #{event_id}: another run holds the lease")
    return derived_id


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


def observe_status(db: str, ticket_id: int, status_id: int, *, changed_at: datetime, by_resource_id: int | None,
                   by_atrelay: bool, via: str, event_id: int | None, baseline_only: bool = False) -> Observed:
    """Record that Autotask shows ``status_id`` on the ticket; a change from what atrelay knew is kept.

    Run under the ticket's lease, so observations and atrelay's own writes on one ticket do not
    interleave. ``baseline_only`` records the status without counting it as a change (first sight).
    """
    with session_scope(db) as s:
        ts = s.get(TicketState, ticket_id)
        if ts is None:
            ts = TicketState(ticket_id=ticket_id, updated_at=NEVER)
        previous = ts.observed_status_id
        if via == "atrelay" or not by_atrelay:
            # A read shared by runs (pipelines.ticket_reads) is stale now. atrelay's own write is not kept
            # in its place: only the follow-up that runs right after knows nobody acted since. Written as
            # its own UPDATE (not left to the ORM, which skips a column it thinks unchanged) so a read
            # another run stored after this row was loaded is dropped too.
            dropped = db_now(db)
            if ts in s:
                s.execute(update(TicketState).where(col(TicketState.ticket_id) == ticket_id)
                          .values(read_at=None, read_dropped_at=dropped))
            else:
                ts.read_at, ts.read_dropped_at = None, dropped
                s.add(ts)
        if previous == status_id:
            return Observed(False, previous)
        ts.observed_status_id, ts.observed_at = status_id, changed_at
        s.add(ts)
        if previous is None and baseline_only:
            return Observed(False, None)
        s.add(TicketStatusChange(ticket_id=ticket_id, from_status_id=previous, to_status_id=status_id,
                                 changed_at=changed_at, by_resource_id=by_resource_id, by_atrelay=by_atrelay,
                                 via=via, event_id=event_id))
        return Observed(True, previous)


def observed_status(db: str, ticket_id: int) -> int | None:
    with session_scope(db) as s:
        ts = s.get(TicketState, ticket_id)
        return ts.observed_status_id if ts is not None else None


def earlier_escalation(db: str, *, ticket_id: int, event_type: str, exclude_event_id: int,
                       target_status_id: int | None, window: timedelta) -> int | None:
    """Another event of this type already applied to this ticket (its note written or owed), same episode.

    Mission Control's webhook and the status MC set in Autotask report one escalation twice. It is
    the same episode unless someone other than atrelay moved the ticket to another status since the
    earlier event finished (then a new escalation is new), and only within ``window``.
    """
    since = utcnow() - window
    with session_scope(db) as s:
        rows = s.exec(
            select(InboundEvent.id, InboundEvent.updated_at)
            .join(EffectLedger, col(EffectLedger.event_id) == col(InboundEvent.id))
            .where(InboundEvent.event_type == event_type, col(EffectLedger.ticket_id) == ticket_id,
                   col(InboundEvent.id) != exclude_event_id, InboundEvent.state == EventState.APPLIED,
                   col(InboundEvent.updated_at) >= since)
            .order_by(col(InboundEvent.id).desc()).limit(5)
        ).all()
        for other_id, finished in rows:
            moved = s.exec(
                select(TicketStatusChange.id).where(
                    TicketStatusChange.ticket_id == ticket_id, col(TicketStatusChange.changed_at) > finished,
                    col(TicketStatusChange.by_atrelay).is_(False),
                    col(TicketStatusChange.to_status_id) != target_status_id)
            ).first()
            if moved is None and other_id is not None:
                return int(other_id)
        return None


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
