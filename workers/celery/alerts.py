"""Alert tasks: find what to tell the team (beat), and send it through apprise (``ATRELAY_NOTIFY_URLS``).

The decisions and records live in :mod:`pipelines.alerts` (what to tell), :mod:`pipelines.alert_sends`
(who sends, per URL, how often) and :mod:`pipelines.webhook_check`; this module is the edge: it reads the
settings, asks Autotask what a message needs (the ticket's number, title and company, the tenant's web
URL, whether a webhook is really inactive) and hands each message to apprise, one URL at a time, in the
markup the target renders (markdown for Slack and Teams, plain text for e-mail).

Sending is also done by every process's watchdog (``workers/celery/watchdog.py``), so alerts go out when no
worker is alive; the per-kind lease keeps that to one sender at a time. Retries are the deliveries' own
schedule (a growing pause, a bounded number of tries), never Celery retries.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING

from workers.celery.app import app
from workers.settings import Settings, get_settings

if TYPE_CHECKING:
    from pipelines.alert_sends import Target
    from pipelines.alert_text import Message, TicketFacts
    from pipelines.alerts import Alert

__all__ = ["AlertSendFailed", "alerts_check_task", "alerts_send_task", "send_due", "send_pending"]

log = logging.getLogger("atrelay.alerts")


class AlertSendFailed(Exception):
    """Some URL did not take a message this round (recorded per URL; retried on the delivery's schedule)."""


def _targets(urls: list[str]) -> list[tuple[Target, str]]:
    """Each URL with its digest, its masked label and whether it renders markdown."""
    import apprise  # an edge dependency, imported where it is used
    from apprise import NotifyFormat

    from pipelines.alert_sends import Target

    out = []
    for url in urls:
        plugin = apprise.Apprise.instantiate(url)
        formats = getattr(type(plugin), "notify_format", ()) if plugin else ()
        formats = formats if isinstance(formats, tuple) else (formats,)
        masked = str(plugin.url(privacy=True)) if plugin else url.partition("://")[0] + "://?"  # type: ignore[no-untyped-call]
        label = masked.split("?")[0]
        key = hashlib.sha256(url.encode()).hexdigest()[:16]
        out.append((Target(key, label, NotifyFormat.MARKDOWN in formats), url))
    return out


def _notify(url: str, title: str, body: str, severity: str, markdown: bool) -> str | None:
    """Send one message to one URL; None when it was taken, else why not (apprise's own words, masked)."""
    import apprise
    from apprise import NotifyFormat, NotifyType

    kind = {"critical": NotifyType.FAILURE, "warning": NotifyType.WARNING}.get(severity, NotifyType.INFO)
    sender = apprise.Apprise()
    sender.add(url)
    with apprise.LogCapture(level=logging.WARNING) as logs:  # type: ignore[no-untyped-call]
        ok = sender.notify(title=title, body=body, notify_type=kind,
                           body_format=NotifyFormat.MARKDOWN if markdown else NotifyFormat.TEXT)
        said = logs.getvalue() if hasattr(logs, "getvalue") else ""
    if ok:
        return None
    lines = [line.split(" - ", 2)[-1] for line in str(said).splitlines() if line.strip()]
    why = (lines[-1] if lines else "not delivered (no reason given)")[:300]
    for secret in url.replace("://", "/").split("/")[1:]:
        if len(secret) >= 6:
            why = why.replace(secret, "***")  # apprise may quote parts of the URL; they are tokens
    return why


def _message(alert: Alert) -> Message:
    from pipelines.alert_text import Message, from_fields

    stored = from_fields(alert.fields.get("message") or {})
    if stored is not None:
        return stored
    # A row from before messages were stored: its title and plain body as they are.
    return Message(title=alert.title, severity=alert.severity if alert.severity in ("info", "warning", "critical")
                   else "info", happened=alert.body, todo="See the dashboard.")


def send_due(settings: Settings) -> int:
    """Send what is due, one message per kind and URL; return the messages sent.

    Raises :class:`AlertSendFailed` after recording, when some URL refused (the caller logs it; the
    delivery is tried again on its own schedule).
    """
    from pipelines import alert_sends
    from pipelines.alert_text import render
    from pipelines.alerts import KINDS

    db = settings.effective_database_url
    targets = _targets(settings.notify_urls.split()) if settings.notify_urls.strip() else []
    # Each call is its own sender (a worker's four threads are four senders), holding a kind's lease
    # while it sends that kind.
    owner = f"sender-{uuid.uuid4().hex[:16]}"
    sent, failures = 0, []
    for kind in KINDS:
        if not alert_sends.claim(db, kind, owner):
            continue  # another sender has this kind now
        try:
            if not targets:
                alert_sends.mark_shown(db, kind)  # no URL: the dashboard is where it is seen
                continue
            for target, url in targets:
                for batch in alert_sends.due(db, kind, target, digest_seconds=settings.alert_digest_seconds):
                    title, body, severity = render([_message(a) for a in batch], kind, as_markdown=target.markdown)
                    error = _notify(url, title, body, severity, target.markdown)
                    alert_sends.record(db, [a.id for a in batch if a.id is not None], target, error=error,
                                       retry_seconds=settings.alert_retry_seconds,
                                       max_attempts=settings.alert_max_attempts)
                    if error is None:
                        sent += 1
                    else:
                        failures.append(f"{target.label}: {error}")
            alert_sends.settle(db, kind, [t for t, _ in targets])
        finally:
            alert_sends.release(db, kind, owner)
    if failures:
        raise AlertSendFailed("; ".join(failures))
    return sent


def send_pending(settings: Settings) -> int:
    """:func:`send_due` when any alert waits (one indexed read otherwise); failures are logged, not raised."""
    from sqlmodel import func, select

    from pipelines.alerts import Alert
    from pipelines.db import session_scope

    with session_scope(settings.effective_database_url) as s:
        waiting = s.exec(select(func.count()).where(Alert.state == "pending")).one()
    if not waiting:
        return 0
    try:
        return send_due(settings)
    except AlertSendFailed as exc:
        log.warning("alerts.send.failed", extra={"error": str(exc)})
        return 0


@app.task(name="atrelay.alerts_send", ignore_result=True)
def alerts_send_task() -> int:
    return send_pending(get_settings())


#: Company names already read by this process (a company's name is a lookup per company, not per alert).
_company_names: dict[int, str | None] = {}


def _describer(settings: Settings, web_url: str | None):  # type: ignore[no-untyped-def]
    """Reads a ticket for an alert: number, title, company (when Autotask has its name), link, status."""
    from connectors.autotask.errors import AutotaskError
    from pipelines.alert_text import TicketFacts
    from pipelines.alerts import ticket_link
    from workers.celery.runtime import get_context

    ctx = get_context()

    def describe(ticket_id: int | None, number: str | None) -> TicketFacts | None:
        try:
            ticket = (ctx.client.get_ticket(ticket_id) if ticket_id is not None
                      else ctx.client.find_ticket_by_number(number or ""))
        except AutotaskError:
            return None  # told without the title rather than not at all
        company = _company_names.get(ticket.company_id) if ticket.company_id is not None else None
        if ticket.company_id is not None and ticket.company_id not in _company_names:
            try:
                company = ctx.client.company_name(ticket.company_id)
            except AutotaskError:
                company = None  # "when known": the alert goes out without it
            else:
                _company_names[ticket.company_id] = company  # names hardly change: one call per company
        status = None
        try:
            status = ctx.lists().status.label(ticket.status)
        except Exception:
            status = None
        num = ticket.ticket_number or number
        return TicketFacts(ticket_id=ticket.id, number=num, title=ticket.title, company=company,
                           link=ticket_link(web_url, num), status=status)

    return describe


def _idle_escalations(settings: Settings, web_url: str | None) -> list[int]:
    """Escalated tickets still without a primary resource after ATRELAY_ESCALATION_IDLE_MINUTES: each
    escalation once (a ticket escalated again later is alerted again)."""
    from connectors.autotask.errors import AutotaskError
    from connectors.autotask.picklists import UnknownPicklistValue
    from pipelines import alerts
    from pipelines.alert_text import Message
    from workers.celery.runtime import get_context

    ctx = get_context()
    try:
        lists = ctx.lists()
        label = ctx.watch_rules["mc-escalated"].status or "Sent from MC"
        status_id = lists.status_id(label)
    except (AutotaskError, UnknownPicklistValue, KeyError):
        return []
    minutes = settings.escalation_idle_minutes
    describe = _describer(settings, web_url)
    made: list[int] = []
    for ticket_id, change_id in alerts.escalations_to_check(settings.effective_database_url, status_ids={status_id},
                                                            idle=timedelta(minutes=minutes)):
        try:
            ticket = ctx.client.get_ticket(ticket_id)
        except AutotaskError:
            continue
        if ticket.status != status_id or ticket.assigned_resource_id is not None:
            continue  # moved on or owned: nothing to say (checked again on a later escalation)
        facts: TicketFacts | None = describe(ticket.id, ticket.ticket_number)
        message = Message(
            title=f"Escalated ticket {(facts.name if facts else None) or ticket.ticket_number or ticket.id} has no "
                  f"owner after {minutes} minutes", severity="warning", ticket=facts,
            happened=f"Mission Control escalated it {minutes}+ minutes ago; it is still {label} and nobody is its "
                     "primary resource.",
            todo="Assign a primary resource now and contact the user (Mission Control has handed it over).")
        alert = alerts.record_alert(
            settings.effective_database_url, kind="escalation_idle", key=alerts.idle_key(ticket.id, change_id),
            ticket_id=ticket.id, message=message,
            fields={"kind": "escalation_idle", "status": label, "ticket_number": ticket.ticket_number,
                    "ticket_id": ticket.id, "idle_minutes": minutes, "change_id": change_id,
                    "link": facts.link if facts else None})
        if alert is not None:
            made.append(alert)
    return made


def _health(settings: Settings) -> list[int]:
    """A silent Autotask webhook and a nearly spent hourly budget, at most once an hour each."""
    from pipelines import alerts
    from pipelines.alert_text import Message
    from pipelines.autotask_status import autotask_intake
    from pipelines.db import utcnow
    from workers.celery.runtime import get_governor

    db, now, made = settings.effective_database_url, utcnow(), []
    hour = now.strftime("%Y-%m-%dT%H")
    if settings.webhook_silence_minutes:
        last = autotask_intake(db).last_callout_at
        if last is not None and now - last > timedelta(minutes=settings.webhook_silence_minutes):
            made.append(alerts.record_alert(db, kind="webhook", key=f"webhook:silent:{hour}", message=Message(
                title="Autotask webhooks are silent", severity="warning",
                happened=f"No callout since {last:%Y-%m-%d %H:%M} UTC (over {settings.webhook_silence_minutes} "
                         "minutes); reconciliation still finds changes, minutes later.",
                todo="Run `atrelay autotask webhooks status`; install them again if they are inactive."),
                fields={"kind": "webhook", "problem": "silent", "last_callout_at": last.isoformat()}))
    usage = get_governor().usage()
    if usage.budget and usage.used_last_hour * 100 >= usage.budget * settings.budget_alert_percent:
        made.append(alerts.record_alert(db, kind="budget", key=f"budget:{hour}", message=Message(
            title="Autotask hourly budget nearly spent", severity="warning",
            happened=f"{usage.used_last_hour} of {usage.budget} requests used in the last hour; work is parked "
                     "when it is spent.",
            todo="Look for a loop or a burst on the dashboard; raise ATRELAY_AUTOTASK_HOURLY_BUDGET only if the "
                 "tenant's other integrations leave room."),
            fields={"kind": "budget", "used": usage.used_last_hour, "budget": usage.budget}))
    return [m for m in made if m is not None]


def _webhooks(settings: Settings) -> list[int]:
    """Deactivation notices verified against Autotask (rate-limited; pipelines/webhook_check.py)."""
    from pipelines.webhook_check import check_webhooks
    from workers.celery.runtime import build_client

    client = build_client(settings, max_attempts=1)
    try:
        return check_webhooks(settings.effective_database_url, client)
    finally:
        client.close()


@app.task(name="atrelay.alerts_check", ignore_result=True)
def alerts_check_task() -> int:
    """Beat: record what is worth telling (each fact once), then send what is due."""
    from connectors.autotask.errors import AutotaskError
    from pipelines import alerts
    from workers.celery.runtime import get_context

    settings = get_settings()
    db = settings.effective_database_url
    web_url: str | None = None
    describe = None
    if settings.autotask_configured:
        try:
            web_url = get_context().client.web_url()
        except AutotaskError:
            web_url = None  # alerts go out without a link rather than not at all
        describe = _describer(settings, web_url)
    made = [*alerts.record_escalations(db, web_url=web_url, describe=describe,
                                       idle_minutes=settings.escalation_idle_minutes),
            *alerts.record_dead_letters(db, web_url=web_url, describe=describe)]
    if settings.autotask_configured:
        made += _idle_escalations(settings, web_url)
        made += _webhooks(settings)
    made += _health(settings)
    send_pending(settings)
    return len(made)
