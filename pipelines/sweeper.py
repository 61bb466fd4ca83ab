"""The sweeper's query: which events are owed a run now.

The database, not the broker, is the record of what is owed: an event accepted but never run (the
enqueue after commit failed, or the broker lost its queue), or held by a worker that died, is found
here and put back on the queue by beat (``workers.celery.beat``).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import or_, update
from sqlmodel import col, select

from pipelines.audit import EventState, InboundEvent
from pipelines.db import db_now, session_scope

__all__ = ["sweep"]


def sweep(db: str, *, limit: int = 500, stale_after: timedelta = timedelta(minutes=2)) -> list[int]:
    """Ids of events that are owed a run now; marks them re-queued.

    Parked events come back as soon as they are due. Anything else owed (accepted but never run,
    a short retry whose message was lost, a dead worker's expired lease) comes back once it has made
    no progress for ``stale_after`` (the lease time), and at most that often.
    """
    now = db_now(db)  # the database's clock: every machine judges leases alike
    due = or_(col(InboundEvent.not_before).is_(None), col(InboundEvent.not_before) <= now)
    with session_scope(db) as s:
        ids = list(
            s.exec(
                select(InboundEvent.id)
                .where(
                    or_(
                        (col(InboundEvent.state) == EventState.PARKED)
                        & (col(InboundEvent.not_before) <= now)
                        & (col(InboundEvent.updated_at) < col(InboundEvent.not_before)),
                        (col(InboundEvent.updated_at) < now - stale_after)
                        & or_(
                            col(InboundEvent.state).in_([EventState.ACCEPTED, EventState.RETRYING,
                                                         EventState.PARKED]) & due,
                            # a worker died holding it: its lease ran out
                            (col(InboundEvent.state) == EventState.PROCESSING)
                            & (col(InboundEvent.lease_until) < now),
                        ),
                    )
                )
                .order_by(col(InboundEvent.id))
                .limit(limit)
            ).all()
        )
        if ids:
            s.execute(update(InboundEvent).where(col(InboundEvent.id).in_(ids)).values(updated_at=now))
    return [i for i in ids if i is not None]
