"""Process heartbeats: which atrelay processes are alive, and whether they can do their work.

Every worker, beat and ingress process writes its row every ``ATRELAY_HEARTBEAT_SECONDS``
(``workers/celery/watchdog.py``). A process is *alive* while its last beat is younger than the timeout and it
has not said it stopped. Rows are written on the database's clock (:func:`pipelines.db.db_now`), the one
clock every machine shares, so a host whose clock runs ahead cannot make a dead worker look alive.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, update
from sqlmodel import col, select

from pipelines.audit import ProcessHeartbeat
from pipelines.db import db_now, session_scope

__all__ = ["ROLES", "Alive", "alive", "beat", "forget_old", "mark_stopped"]

ROLES = ("worker", "beat", "ingress")
#: Rows of processes gone this long are dropped, so the table holds the processes of about a day.
_KEEP = timedelta(days=1)


def beat(db: str, *, process_id: str, role: str, host: str, pid: int, version: str, ready: bool = True,
         problem: str | None = None) -> datetime:
    """Record that this process is alive now (its row is made on the first beat); return the time."""
    assert role in ROLES, role
    now = db_now(db)
    with session_scope(db) as s:
        changed = s.execute(update(ProcessHeartbeat).where(col(ProcessHeartbeat.id) == process_id).values(
            beat_at=now, ready=ready, problem=problem, stopped_at=None)).rowcount  # type: ignore[attr-defined]
        if not changed:
            s.add(ProcessHeartbeat(id=process_id, role=role, host=host[:120], pid=pid, version=version[:32],
                                   started_at=now, beat_at=now, ready=ready, problem=problem))
    return now


def mark_stopped(db: str, process_id: str) -> None:
    """A process that stops on purpose says so: it is not alive from now on (no timeout to wait out)."""
    with session_scope(db) as s:
        s.execute(update(ProcessHeartbeat).where(col(ProcessHeartbeat.id) == process_id)
                  .values(stopped_at=db_now(db)))


def forget_old(db: str) -> int:
    """Drop rows of processes not heard of for a day (bounded by the processes, never by requests)."""
    with session_scope(db) as s:
        return int(s.execute(delete(ProcessHeartbeat).where(  # type: ignore[attr-defined]
            col(ProcessHeartbeat.beat_at) < db_now(db) - _KEEP)).rowcount or 0)


@dataclass(frozen=True)
class Alive:
    """The processes of one role: those alive now, and the newest beat of any (alive or not)."""

    role: str
    alive: list[ProcessHeartbeat]
    newest: ProcessHeartbeat | None
    now: datetime

    @property
    def count(self) -> int:
        return len(self.alive)

    @property
    def ready(self) -> list[ProcessHeartbeat]:
        return [p for p in self.alive if p.ready]

    @property
    def not_ready(self) -> list[ProcessHeartbeat]:
        return [p for p in self.alive if not p.ready]

    @property
    def silent_for(self) -> float | None:
        """Seconds since the newest beat of any process of this role; None when none ever beat."""
        return None if self.newest is None else max(0.0, (self.now - self.newest.beat_at).total_seconds())


def alive(db: str, role: str, *, timeout_seconds: float) -> Alive:
    """The processes of ``role`` that beat within the timeout and did not say they stopped."""
    now = db_now(db)
    since = now - timedelta(seconds=timeout_seconds)
    with session_scope(db) as s:
        rows = list(s.exec(select(ProcessHeartbeat).where(ProcessHeartbeat.role == role)
                           .order_by(col(ProcessHeartbeat.beat_at).desc()).limit(200)).all())
    live = [r for r in rows if r.beat_at >= since and r.stopped_at is None]
    return Alive(role, live, rows[0] if rows else None, now)
