"""Periodic tasks run by beat: the TimeZest poll and the sweeper that re-queues stuck events.

The database, not the broker, is the record of what is owed: an event accepted but never run (the
enqueue after commit failed, or the broker lost its queue), or held by a worker that died, is put
back on the queue here.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from pipelines.sweeper import sweep
from workers.celery.app import app
from workers.celery.queue import enqueue_event
from workers.settings import get_settings

__all__ = ["audit_seal_task", "autotask_reconcile_task", "sweep_task", "tenant_usage_task", "timezest_poll_task"]

if TYPE_CHECKING:
    from connectors.autotask.picklists import Picklists
    from pipelines.rules import WatchRule

log = logging.getLogger("atrelay.beat")


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
    from connectors.timezest.client import TimezestClient
    from pipelines.timezest_poll import poll_once

    settings = get_settings()
    if settings.timezest_api_key is None:
        return 0
    client = TimezestClient(api_key=settings.timezest_api_key.get_secret_value(),
                            base_url=settings.timezest_base_url)
    try:
        result = poll_once(settings.effective_database_url, client, enqueue_event)
    finally:
        client.close()
    return len(result.emitted or [])


@app.task(name="atrelay.tenant_usage", ignore_result=True)
def tenant_usage_task() -> int:
    """Read ThresholdInformation (one call every few minutes) so every worker can yield to the tenant."""
    from connectors.autotask.errors import AutotaskError
    from workers.celery.runtime import get_context, get_governor

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


def _overdue_status(rules: dict[str, WatchRule], lists: Picklists) -> int | None:
    """Deferred's tenant id while the deferred-without-due-date guard is on (reconciliation's extra read)."""
    from connectors.autotask.picklists import UnknownPicklistValue

    rule = rules.get("guard-deferred-no-due-date")
    if rule is None or not rule.enabled or not rule.status:
        return None
    try:
        return lists.status_id(rule.status)
    except UnknownPicklistValue:
        return None


@app.task(name="atrelay.autotask_reconcile", ignore_result=True)
def autotask_reconcile_task() -> int:
    """Recover Autotask callouts that were dropped: the same events, found by asking Autotask."""
    from connectors.autotask.errors import AutotaskError
    from connectors.autotask.picklists import UnknownPicklistValue
    from pipelines.reconcile import reconcile_once, yielding_gate
    from workers.celery.queue import enqueue_now
    from workers.celery.runtime import build_client, get_context, get_governor

    settings = get_settings()
    ctx = get_context()
    try:
        lists = ctx.lists()
        own = ctx.own_resource_id()
    except AutotaskError as exc:
        log.warning("autotask.reconcile.failed", extra={"error": exc.reason})
        return -1
    watched: set[int] = set()
    for rule in ctx.watch_rules.values():
        # Watch rules and guards alike: a ticket first met in a status they act on is observed in full.
        if rule.on in ("status", "guard") and rule.enabled and rule.status:
            try:
                watched.add(lists.status_id(rule.status))
            except UnknownPicklistValue:
                continue
    client = build_client(settings, gate=yielding_gate(get_governor(), settings.autotask_max_in_flight))
    try:
        result = reconcile_once(settings.effective_database_url, client, enqueue_now,
                                watched_status_ids=watched, own_resource_id=own,
                                overdue_status_id=_overdue_status(ctx.watch_rules, lists))
    finally:
        client.close()
    return len(result.emitted)
