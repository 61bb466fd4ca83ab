"""The pipeline task: a thin Celery wrapper that takes an event id and calls the idempotent run."""

from __future__ import annotations

import gc
import logging
import socket
from typing import Any

from celery.signals import worker_init, worker_process_init

from pipelines.audit import EventState
from pipelines.db import forget_engines_after_fork
from pipelines.process import Result, process_event
from workers.celery.app import app
from workers.celery.queue import PROCESS_EVENT, enqueue_event
from workers.celery.runtime import get_context, reset_runtime

__all__ = ["process_event_task"]

log = logging.getLogger("atrelay.pipeline")


@app.task(name=PROCESS_EVENT, bind=True, acks_late=True, reject_on_worker_lost=True)
def process_event_task(self: Any, event_id: int) -> str:
    ctx = get_context()
    worker = getattr(self.request, "hostname", None) or socket.gethostname()
    result: Result = process_event(ctx, event_id, task_id=self.request.id, worker=worker)
    # A dead letter needs a person (replay or fix): WARNING, so it stands out from the routine INFO lines.
    log.log(
        logging.WARNING if result.state == EventState.DEAD else logging.INFO,
        "pipeline.run.finished",
        extra={"event_id": event_id, "state": result.state, "reason": result.reason, "task_id": self.request.id},
    )
    if result.retry_in is not None:
        # A new message rather than self.retry(): the run is already recorded as retrying, and the
        # database, not the broker, says what is owed.
        enqueue_event(event_id, result.retry_in)
    return result.state


@worker_process_init.connect
def _after_fork(**_kwargs: Any) -> None:
    """Each prefork child opens its own database and HTTP connections (sockets must not be shared)."""
    forget_engines_after_fork()
    reset_runtime()
    gc.freeze()  # what the child inherited: never walked by the collector, so its pages stay shared


@worker_init.connect
def _freeze_start_up(**_kwargs: Any) -> None:
    """Start-up objects live as long as the worker: a full collection then walks only what runs allocate.

    The same change cut the ingress's CPU per request by about a quarter (docs/benchmarks.md). Before
    the worker forks anything (the embedded beat, prefork children): a collection after the fork
    writes to every object's header, which copies every page the children share (measured: the
    worker and its beat child each went from about 27 to 56 MB private).
    """
    gc.collect()
    gc.freeze()
