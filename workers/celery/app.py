"""The Celery application, configured for at-least-once delivery.

``acks_late`` + ``reject_on_worker_lost`` mean a message is acknowledged only after its task has
finished, so a worker killed mid-run leaves the message to be delivered again; that is safe only
because every task takes an id and is idempotent (see ``pipelines.process``). Prefetch 1 keeps a
busy worker from sitting on messages another worker could run.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from workers.celery import broker_sqla
from workers.settings import get_settings

__all__ = ["QUEUE", "app", "configure"]

QUEUE = "atrelay"
# Task names are explicit (``atrelay.*``), not module paths: a queued message runs whichever module holds its task.
app = Celery("atrelay", include=["workers.celery.tasks", "workers.celery.beat", "workers.celery.alerts",
                                 "workers.celery.watchdog"])


def configure(celery: Celery) -> None:
    settings = get_settings()
    broker = settings.effective_broker_url
    transport: dict[str, Any] = {}
    if broker.startswith(("redis", "rediss")):
        # Every countdown we use is far below this, so Redis never redelivers a message early.
        transport = {"visibility_timeout": 3600}
    elif broker.startswith("sqla+"):
        settings.var_path.mkdir(parents=True, exist_ok=True)
        # kombu hands these to create_engine(): wait out SQLite write locks instead of failing.
        transport = {"connect_args": {"timeout": 30}}
        # Batched publishes and a 50 ms poll instead of 1 s (see workers/celery/broker_sqla.py).
        broker_sqla.use()
    celery.conf.update(
        broker_url=broker,
        broker_transport_options=transport,
        broker_connection_retry_on_startup=True,
        task_default_queue=QUEUE,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
        worker_send_task_events=True,
        task_send_sent_event=False,
        timezone="UTC",
        beat_schedule={
            "timezest-poll": {
                "task": "atrelay.timezest_poll",
                "schedule": float(settings.timezest_poll_seconds),
            },
            "sweep-owed-events": {"task": "atrelay.sweep", "schedule": settings.sweep_seconds},
            "autotask-reconcile": {
                "task": "atrelay.autotask_reconcile",
                "schedule": float(settings.autotask_reconcile_seconds),
            },
            "read-autotask-thresholds": {"task": "atrelay.tenant_usage", "schedule": 180.0},
            "seal-audit-log": {"task": "atrelay.audit_seal", "schedule": 30.0},
            # Alerts: record what is worth telling (each fact once) and send what is due (a digest per kind).
            "alerts-check": {"task": "atrelay.alerts_check", "schedule": 30.0},
        },
    )


configure(app)
