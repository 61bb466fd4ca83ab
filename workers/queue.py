"""Putting event ids on the work queue, by task name, so senders need not import the task's code."""

from __future__ import annotations

from workers.celery_app import app

__all__ = ["PROCESS_EVENT", "enqueue_event", "enqueue_now"]

PROCESS_EVENT = "atrelay.process_event"


def enqueue_event(event_id: int, countdown: float = 0.0) -> None:
    """Queue one event id; call only after the transaction that recorded it has committed."""
    app.send_task(PROCESS_EVENT, args=(event_id,), countdown=countdown if countdown > 0 else None)


def enqueue_now(event_id: int) -> None:
    """:data:`pipelines.intake.Enqueue` for the ingress and the polls: no delay."""
    enqueue_event(event_id)
