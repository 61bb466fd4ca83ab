"""Celery tasks: thin wrappers that take ids and call the idempotent pipeline."""

from __future__ import annotations

import logging
import socket
from typing import Any

from pipelines.context import get_context
from pipelines.process import Result, process_event
from workers.celery_app import app

__all__ = ["enqueue_event", "process_event_task"]

log = logging.getLogger("atrelay.pipeline")


@app.task(name="atrelay.process_event", bind=True, acks_late=True, reject_on_worker_lost=True)
def process_event_task(self: Any, event_id: int) -> str:
    ctx = get_context()
    worker = getattr(self.request, "hostname", None) or socket.gethostname()
    result: Result = process_event(ctx, event_id, task_id=self.request.id, worker=worker)
    log.info(
        "pipeline.run.finished",
        extra={"event_id": event_id, "state": result.state, "reason": result.reason, "task_id": self.request.id},
    )
    if result.retry_in is not None:
        # A new message rather than self.retry(): the run is already recorded as retrying, and the
        # database, not the broker, says what is owed.
        enqueue_event(event_id, result.retry_in)
    return result.state


def enqueue_event(event_id: int, countdown: float = 0.0) -> None:
    """Queue one event id; call only after the transaction that recorded it has committed."""
    if countdown > 0:
        process_event_task.apply_async((event_id,), countdown=countdown)
    else:
        process_event_task.apply_async((event_id,))
