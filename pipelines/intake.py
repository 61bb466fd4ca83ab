"""The one intake path: record the raw event, commit, then enqueue its id.

The ingress (signed webhooks), the TimeZest poll and Autotask callouts all come through here, so
"nothing is lost" has one implementation: an event is durable before any queue hears of it, and a
failed enqueue only delays it (the sweeper re-queues whatever is owed and was never run).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from sqlmodel import Session, select

from pipelines import store
from pipelines.audit import EventState, InboundEvent

__all__ = ["Enqueue", "accept", "enqueue_committed", "record_in"]

log = logging.getLogger("atrelay.intake")

#: Puts one committed event id on the work queue (built by ``workers``; pipelines never see Celery).
Enqueue = Callable[[int], None]


def enqueue_committed(enqueue: Enqueue, event_ids: Iterable[int]) -> None:
    """Enqueue ids whose rows are committed; a broker failure is logged, never raised.

    The row is the record of what is owed: an id that could not be queued is picked up by the
    sweeper, so the caller can answer its sender as soon as the commit is done.
    """
    for event_id in event_ids:
        try:
            enqueue(event_id)
        except Exception:
            log.exception("intake.enqueue_failed", extra={"event_id": event_id})


def accept(db: str, new: store.NewEvent, enqueue: Enqueue) -> tuple[int, bool]:
    """Record one event in its own transaction, then enqueue it; return (id, created).

    A repeat of (source, external_id) is not recorded again and not enqueued again.
    """
    event_id, created = store.insert_event(db, new)  # committed when this returns
    if created and new.state == EventState.ACCEPTED:
        enqueue_committed(enqueue, [event_id])
    return event_id, created


def record_in(session: Session, new: store.NewEvent) -> int | None:
    """Add an event inside the caller's transaction (a poll that also saves its own state).

    Returns the id to enqueue once that transaction commits, or None when the event was already
    recorded or is not runnable (recorded as ignored, with its reason).
    """
    exists = session.exec(select(InboundEvent.id).where(
        InboundEvent.source == new.source, InboundEvent.external_id == new.external_id)).first()
    if exists is not None:
        return None
    row = InboundEvent(
        source=new.source, external_id=new.external_id, event_type=new.event_type, body=new.body,
        headers=store.safe_headers(new.headers), ticket_id=new.ticket_id, ticket_number=new.ticket_number,
        occurred_at=new.occurred_at, caused_by_id=new.caused_by_id, not_before=new.not_before,
        state=EventState(new.state), reason=new.reason,
    )
    session.add(row)
    session.flush()
    return row.id if row.state == EventState.ACCEPTED else None
