"""The tamper-evident audit log: a SHA-256 hash chain over finished events.

Once an event is final, the sealer (beat, every 30 s) appends a seal: the hash of the event's
immutable fields with every run and Autotask attempt up to that point, chained to the previous
seal (``hash = sha256(prev_hash + content_hash)``). ``atrelay audit verify`` recomputes everything
and names the first seal whose event, runs or attempts were changed, inserted or removed, or where
the chain itself was cut. Pruning deletes the oldest seals with their rows and moves the anchor
(the last pruned hash) forward, so what remains still verifies.

A single writer is guaranteed by a lock on the anchor row. The mutable bookkeeping of an event
(state, lease, attempts) is not sealed; its outcome is, through its finished runs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, or_, update
from sqlmodel import Session, col, select

from pipelines.audit import AuditAnchor, AuditSeal, EffectLedger, EventState, InboundEvent, OutboundAttempt, PipelineRun
from pipelines.db import session_scope, utcnow

__all__ = ["PruneResult", "VerifyResult", "content_hash", "prune", "seal", "verify"]

# Not INVALID: a replay that re-validates an invalid event rewrites the sealed identity fields (type,
# external id, ticket), so such an event is sealed once it reaches its real outcome.
FINAL = [EventState.APPLIED, EventState.SKIPPED, EventState.IGNORED, EventState.DEAD]
ZERO = "0" * 64


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _canonical(event: InboundEvent, runs: list[PipelineRun], attempts: list[OutboundAttempt]) -> bytes:
    doc: dict[str, Any] = {
        "event": {
            "id": event.id, "source": event.source, "external_id": event.external_id,
            "event_type": event.event_type, "received_at": _iso(event.received_at), "headers": event.headers,
            "body_sha256": hashlib.sha256(event.body).hexdigest(), "ticket_number": event.ticket_number,
            "occurred_at": _iso(event.occurred_at), "caused_by_id": event.caused_by_id,
        },
        "runs": [
            {"id": r.id, "task_id": r.task_id, "worker": r.worker, "started_at": _iso(r.started_at),
             "finished_at": _iso(r.finished_at), "decision": r.decision, "from": r.from_status,
             "to": r.to_status, "outcome": r.outcome, "reason": r.reason}
            for r in runs
        ],
        "attempts": [
            {"id": a.id, "run_id": a.run_id, "at": _iso(a.at), "method": a.method, "path": a.path,
             "status": a.status_code, "ms": a.duration_ms, "error": a.error}
            for a in attempts
        ],
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _bundle(s: Session, event_id: int, max_run_id: int, max_attempt_id: int | None = None
            ) -> tuple[InboundEvent | None, list[PipelineRun], list[OutboundAttempt]]:
    event = s.get(InboundEvent, event_id)
    runs = list(s.exec(select(PipelineRun).where(PipelineRun.event_id == event_id,
                                                  col(PipelineRun.id) <= max_run_id)
                       .order_by(col(PipelineRun.id))).all())
    q = select(OutboundAttempt).where(OutboundAttempt.event_id == event_id,
                                      or_(col(OutboundAttempt.run_id).is_(None),
                                          col(OutboundAttempt.run_id) <= max_run_id))
    if max_attempt_id is not None:
        q = q.where(col(OutboundAttempt.id) <= max_attempt_id)
    attempts = list(s.exec(q.order_by(col(OutboundAttempt.id))).all())
    return event, runs, attempts


def content_hash(event: InboundEvent, runs: list[PipelineRun], attempts: list[OutboundAttempt]) -> str:
    return hashlib.sha256(_canonical(event, runs, attempts)).hexdigest()


def _link(prev_hash: str, content: str) -> str:
    return hashlib.sha256((prev_hash + content).encode()).hexdigest()


def _lock_anchor(s: Session) -> AuditAnchor:
    # The write takes PostgreSQL's row lock / SQLite's write lock: one sealer or pruner at a time.
    s.execute(update(AuditAnchor).where(col(AuditAnchor.id) == 1).values(id=1))
    anchor = s.get(AuditAnchor, 1)
    if anchor is None:
        anchor = AuditAnchor(id=1, last_seq=0, last_hash=ZERO)
        s.add(anchor)
        s.flush()
    return anchor


def seal(db: str, *, limit: int = 2000) -> int:
    """Append seals for final events not yet sealed (or with runs added since); return how many."""
    with session_scope(db) as s:
        anchor = _lock_anchor(s)
        last = s.exec(select(AuditSeal).order_by(col(AuditSeal.seq).desc()).limit(1)).first()
        prev = last.hash if last is not None else anchor.last_hash
        runs_max = (select(PipelineRun.event_id, func.max(PipelineRun.id).label("r"))
                    .group_by(col(PipelineRun.event_id)).subquery())
        sealed = (select(AuditSeal.event_id, func.max(AuditSeal.max_run_id).label("m"))
                  .group_by(col(AuditSeal.event_id)).subquery())
        newest_run = func.coalesce(runs_max.c.r, 0)
        todo = s.execute(
            select(InboundEvent.id, newest_run)
            .outerjoin(runs_max, runs_max.c.event_id == InboundEvent.id)
            .outerjoin(sealed, sealed.c.event_id == InboundEvent.id)
            .where(col(InboundEvent.state).in_(FINAL))
            .where(or_(sealed.c.m.is_(None), newest_run > sealed.c.m))
            .order_by(col(InboundEvent.updated_at), col(InboundEvent.id))
            .limit(limit)
        ).all()
        for event_id, max_run_id in todo:
            event, runs, attempts = _bundle(s, int(event_id), int(max_run_id))
            assert event is not None
            content = content_hash(event, runs, attempts)
            entry = AuditSeal(event_id=int(event_id), max_run_id=int(max_run_id),
                              max_attempt_id=max((a.id or 0 for a in attempts), default=0),
                              content_hash=content, prev_hash=prev, hash=_link(prev, content))
            s.add(entry)
            prev = entry.hash
        return len(todo)


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    problem: str | None = None
    unsealed_final: int = 0


def verify(db: str) -> VerifyResult:
    """Walk the chain from the anchor; stop at the first seal that does not hold."""
    with session_scope(db) as s:
        anchor = s.get(AuditAnchor, 1) or AuditAnchor(id=1, last_seq=0, last_hash=ZERO)
        prev, expected_seq, checked = anchor.last_hash, anchor.last_seq + 1, 0
        for entry in s.exec(select(AuditSeal).order_by(col(AuditSeal.seq))).all():
            if entry.seq != expected_seq:
                return VerifyResult(False, checked, f"seal #{expected_seq} is missing (the chain jumps to "
                                                     f"#{entry.seq}): a seal was removed")
            if entry.prev_hash != prev or entry.hash != _link(entry.prev_hash, entry.content_hash):
                return VerifyResult(False, checked, f"seal #{entry.seq} (event #{entry.event_id}) does not "
                                                     "chain to the one before it: a seal was changed or inserted")
            event, runs, attempts = _bundle(s, entry.event_id, entry.max_run_id, entry.max_attempt_id)
            if event is None:
                return VerifyResult(False, checked, f"seal #{entry.seq}: event #{entry.event_id} was removed")
            if content_hash(event, runs, attempts) != entry.content_hash:
                return VerifyResult(False, checked, f"seal #{entry.seq}: event #{entry.event_id} was changed "
                                                     "(its row, or one of its runs or Autotask attempts, was "
                                                     "changed, inserted or removed after sealing)")
            extra = s.exec(select(func.min(OutboundAttempt.id)).where(
                OutboundAttempt.event_id == entry.event_id, col(OutboundAttempt.run_id) <= entry.max_run_id,
                col(OutboundAttempt.id) > entry.max_attempt_id)).one()
            if extra is not None:
                return VerifyResult(False, checked, f"seal #{entry.seq}: attempt #{extra} was inserted into event "
                                                     f"#{entry.event_id}'s sealed runs")
            prev, expected_seq, checked = entry.hash, expected_seq + 1, checked + 1
        sealed_ids = select(AuditSeal.event_id)
        unsealed = s.exec(select(func.count()).select_from(InboundEvent)
                          .where(col(InboundEvent.state).in_(FINAL))
                          .where(col(InboundEvent.id).not_in(sealed_ids))).one()
    return VerifyResult(True, checked, None, int(unsealed))


@dataclass(frozen=True)
class PruneResult:
    seals: int
    events: int


def prune(db: str, before: datetime) -> PruneResult:
    """Delete the seals made before ``before`` and their events; the anchor keeps the chain whole."""
    with session_scope(db) as s:
        anchor = _lock_anchor(s)
        seals = list(s.exec(select(AuditSeal).order_by(col(AuditSeal.seq))).all())
        cut = [e for e in seals if e.sealed_at < before]
        cut = cut[: next((i for i, e in enumerate(cut) if e.seq != seals[i].seq), len(cut))]  # a prefix only
        if not cut:
            return PruneResult(0, 0)
        last = cut[-1]
        pruned_ids = {e.event_id for e in cut}
        kept_ids = {e.event_id for e in seals[len(cut):]}
        # Events still referenced by a later seal or by a remaining follow-up keep their rows.
        children = s.exec(select(InboundEvent.caused_by_id).where(col(InboundEvent.caused_by_id).in_(pruned_ids),
                                                                   col(InboundEvent.id).not_in(pruned_ids))).all()
        deletable = pruned_ids - kept_ids - {c for c in children if c is not None}
        if deletable:
            ids = list(deletable)
            s.execute(delete(OutboundAttempt).where(col(OutboundAttempt.event_id).in_(ids)))
            s.execute(delete(PipelineRun).where(col(PipelineRun.event_id).in_(ids)))
            s.execute(delete(EffectLedger).where(col(EffectLedger.event_id).in_(ids)))
            s.execute(update(InboundEvent).where(col(InboundEvent.caused_by_id).in_(ids)).values(caused_by_id=None))
            s.execute(delete(InboundEvent).where(col(InboundEvent.id).in_(ids)))
        s.execute(delete(AuditSeal).where(col(AuditSeal.seq) <= last.seq))
        anchor.last_seq, anchor.last_hash, anchor.pruned_at = int(last.seq or 0), last.hash, utcnow()
        s.add(anchor)
        return PruneResult(len(cut), len(deletable))
