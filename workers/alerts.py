"""Alert tasks: find what to tell the team (beat), and send it through apprise (``ATRELAY_NOTIFY_URLS``).

The decisions and records live in :mod:`pipelines.alerts`; this module is the edge: it reads the
settings, asks Autotask what a rule needs (an escalated ticket's owner, the tenant's web URL) and
hands messages to apprise, one URL scheme for Slack, Teams, e-mail and plain JSON webhooks. A send
that fails is retried by Celery with a growing delay; the alert stays ``pending`` meanwhile, so it
is never lost and never holds up a pipeline run (they do not share a task).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from celery import Task

from workers.celery_app import app
from workers.settings import Settings, get_settings

__all__ = ["alerts_check_task", "alerts_send_task", "send_due"]

log = logging.getLogger("atrelay.alerts")


class AlertSendFailed(Exception):
    """No configured URL accepted the message (apprise names no cause; the receiver's log has it)."""


def _notify(urls: list[str], title: str, body: str) -> None:
    import apprise  # an edge dependency, imported where it is used

    sender = apprise.Apprise()
    for url in urls:
        sender.add(url)
    if not sender.notify(title=title, body=body):
        raise AlertSendFailed(f"no alert URL accepted the message ({len(urls)} configured)")


def send_due(settings: Settings) -> int:
    """Send what is due (one message per kind; several alerts become a digest); return messages sent.

    Raises :class:`AlertSendFailed` after recording the failure, so the task retries.
    """
    from pipelines import alerts

    db = settings.effective_database_url
    urls = settings.notify_urls.split()
    sent, failed = 0, None
    for out in alerts.take_due(db, digest_seconds=settings.alert_digest_seconds):
        if not urls:
            alerts.mark_sent(db, out.ids, state="shown")  # no URL: the dashboard is where it is seen
            continue
        try:
            _notify(urls, out.title, out.body)
        except Exception as exc:
            alerts.mark_failed(db, out.ids, f"{type(exc).__name__}: {exc}")
            failed = exc
            continue
        alerts.mark_sent(db, out.ids, batch=f"{out.kind}:{len(out.ids)}")
        sent += 1
    if failed is not None:
        raise AlertSendFailed(str(failed))
    return sent


@app.task(name="atrelay.alerts_send", bind=True, ignore_result=True, max_retries=None)
def alerts_send_task(self: Task[Any, Any]) -> int:
    try:
        return send_due(get_settings())
    except AlertSendFailed as exc:
        delay = min(300, 5 * 2 ** min(self.request.retries, 6))
        log.warning("alerts.send.failed", extra={"error": str(exc), "retry_in": delay})
        raise self.retry(exc=exc, countdown=delay) from None


def _idle_escalations(settings: Settings, web_url: str | None) -> list[int]:
    """Escalated tickets still without a primary resource after ATRELAY_ESCALATION_IDLE_MINUTES, once each."""
    from connectors.autotask.errors import AutotaskError
    from connectors.autotask.picklists import UnknownPicklistValue
    from pipelines import alerts
    from workers.runtime import get_context

    ctx = get_context()
    try:
        lists = ctx.lists()
        label = ctx.watch_rules["mc-escalated"].status or "Sent from MC"
        status_id = lists.status_id(label)
    except (AutotaskError, UnknownPicklistValue, KeyError):
        return []
    idle = timedelta(minutes=settings.escalation_idle_minutes)
    made: list[int] = []
    for ticket_id, _change in alerts.escalations_to_check(settings.effective_database_url, status_ids={status_id},
                                                           idle=idle):
        try:
            ticket = ctx.client.get_ticket(ticket_id)
        except AutotaskError:
            continue
        if ticket.status != status_id or ticket.assigned_resource_id is not None:
            continue  # moved on or owned: nothing to say (checked again on a later escalation)
        link = alerts.ticket_link(web_url, ticket.ticket_number)
        number = ticket.ticket_number or str(ticket.id)
        alert = alerts.record_alert(
            settings.effective_database_url, kind="escalation_idle", key=f"escalation_idle:{ticket.id}",
            ticket_id=ticket.id, title=f"Escalated ticket {number} has no owner after "
                                      f"{settings.escalation_idle_minutes} minutes",
            body="\n".join(x for x in (f"Status: {label}", f"Ticket: {number}", f"Title: {ticket.title or '-'}",
                                       f"Link: {link}" if link else "") if x),
            fields={"kind": "escalation_idle", "status": label, "ticket_number": number, "ticket_id": ticket.id,
                    "idle_minutes": settings.escalation_idle_minutes, "link": link})
        if alert is not None:
            made.append(alert)
    return made


def _health(settings: Settings) -> list[int]:
    """A silent Autotask webhook and a nearly spent hourly budget, at most once an hour each."""
    from pipelines import alerts
    from pipelines.autotask_status import autotask_intake
    from pipelines.db import utcnow
    from workers.runtime import get_governor

    db, now, made = settings.effective_database_url, utcnow(), []
    hour = now.strftime("%Y-%m-%dT%H")
    if settings.webhook_silence_minutes:
        last = autotask_intake(db).last_callout_at
        if last is not None and now - last > timedelta(minutes=settings.webhook_silence_minutes):
            made.append(alerts.record_alert(
                db, kind="webhook", key=f"webhook:silent:{hour}", title="Autotask webhooks are silent",
                body=f"No callout since {last:%Y-%m-%d %H:%M} UTC (over {settings.webhook_silence_minutes} "
                     "minutes); reconciliation still finds changes. Check `atrelay autotask webhooks status`.",
                fields={"kind": "webhook", "problem": "silent", "last_callout_at": last.isoformat()}))
    usage = get_governor().usage()
    if usage.budget and usage.used_last_hour * 100 >= usage.budget * settings.budget_alert_percent:
        made.append(alerts.record_alert(
            db, kind="budget", key=f"budget:{hour}", title="Autotask hourly budget nearly spent",
            body=f"{usage.used_last_hour} of {usage.budget} requests used in the last hour; work is parked "
                 "when it is spent.", fields={"kind": "budget", "used": usage.used_last_hour,
                                              "budget": usage.budget}))
    return [m for m in made if m is not None]


@app.task(name="atrelay.alerts_check", ignore_result=True)
def alerts_check_task() -> int:
    """Beat: record what is worth telling (each fact once), then send what is due."""
    from connectors.autotask.errors import AutotaskError
    from pipelines import alerts
    from workers.runtime import get_context

    settings = get_settings()
    db = settings.effective_database_url
    web_url: str | None = None
    if settings.autotask_configured:
        try:
            web_url = get_context().client.web_url()
        except AutotaskError:
            web_url = None  # alerts go out without a link rather than not at all
    made = [*alerts.record_escalations(db, web_url=web_url), *alerts.record_dead_letters(db),
            *alerts.record_deactivations(db)]
    if settings.autotask_configured:
        made += _idle_escalations(settings, web_url)
    made += _health(settings)
    alerts_send_task.delay()
    return len(made)
