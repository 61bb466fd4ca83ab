"""Putting event ids on the work queue, by task name, so senders need not import the task's code."""

from __future__ import annotations

from collections.abc import Sequence

from workers.celery.app import app

__all__ = ["PROCESS_EVENT", "enqueue_event", "enqueue_many", "enqueue_now"]

PROCESS_EVENT = "atrelay.process_event"


def enqueue_event(event_id: int, countdown: float = 0.0) -> None:
    """Queue one event id; call only after the transaction that recorded it has committed."""
    app.send_task(PROCESS_EVENT, args=(event_id,), countdown=countdown if countdown > 0 else None)


def enqueue_now(event_id: int) -> None:
    """:data:`pipelines.intake.Enqueue` for the ingress and the polls: no delay."""
    enqueue_event(event_id)


def enqueue_many(event_ids: Sequence[int]) -> None:
    """:data:`pipelines.intake.EnqueueMany`: a group commit's ids in one broker round trip.

    Still one message per id, so one task per event (acks_late, a lease each). On Redis, kombu's
    producer batch sends them as one pipeline (one round trip, all or none on error); transports
    without batching (kombu's SQLAlchemy one, embedded mode) publish each at once, as before.
    """
    with app.producer_or_acquire() as producer, producer.batch():
        for event_id in event_ids:
            app.send_task(PROCESS_EVENT, args=(event_id,), producer=producer)
