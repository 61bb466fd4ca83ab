"""Periodic tasks run by beat: the TimeZest poll and the sweeper that re-queues stuck events.

The database, not the broker, is the record of what is owed: an event accepted but never run (the
enqueue after commit failed, or the broker lost its queue), or held by a worker that died, is put
back on the queue here.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import or_, update
from sqlmodel import col, select

from pipelines.audit import EventState, InboundEvent
from pipelines.db import session_scope, utcnow
from pipelines.tasks import enqueue_event
from workers.celery_app import app
from workers.settings import get_settings

__all__ = ["audit_seal_task", "sweep", "sweep_task", "tenant_usage_task", "timezest_poll_task"]

log = logging.getLogger("atrelay.beat")


def sweep(db: str, *, limit: int = 500, stale_after: timedelta = timedelta(minutes=2)) -> list[int]:
    """Ids of events that are owed a run now; marks them re-queued.

    Parked events come back as soon as they are due. Anything else owed (accepted but never run,
    a short retry whose message was lost, a dead worker's expired lease) comes back once it has made
    no progress for ``stale_after`` (the lease time), and at most that often.
    """
    now = utcnow()
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


@app.task(name="atrelay.sweep", ignore_result=True)
def sweep_task() -> int:
    settings = get_settings()
    ids = sweep(settings.effective_database_url, stale_after=timedelta(seconds=settings.lease_seconds))
    for event_id in ids:
        enqueue_event(event_id)
    if ids:
        log.warning("sweeper.requeued", extra={"count": len(ids), "event_ids": ids[:20]})
    return len(ids)


@app.task(name="atrelay.timezest_poll", ignore_result=True)
def timezest_poll_task() -> int:
    from connectors.timezest.poller import poll_from_settings

    return poll_from_settings(get_settings())


@app.task(name="atrelay.tenant_usage", ignore_result=True)
def tenant_usage_task() -> int:
    """Read ThresholdInformation (one call every few minutes) so every worker can yield to the tenant."""
    from connectors.autotask.errors import AutotaskError
    from pipelines.context import get_context, get_governor

    try:
        info = get_context().client.threshold_information()
    except AutotaskError as exc:
        log.warning("quota.threshold_read_failed", extra={"error": exc.reason})
        return -1
    get_governor().record_tenant(info.current_timeframe_request_count, info.external_request_threshold)
    return info.current_timeframe_request_count


@app.task(name="atrelay.audit_seal", ignore_result=True)
def audit_seal_task() -> int:
    """Extend the tamper-evident chain over events that finished since the last run."""
    from pipelines.chain import seal

    return seal(get_settings().effective_database_url)
