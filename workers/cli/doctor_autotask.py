"""Doctor checks and the rules table for Autotask as an event source (webhooks, reconciliation, watch rules)."""

from __future__ import annotations

from typing import Protocol

from rich.markup import escape
from rich.table import Table

from connectors.autotask.errors import AutotaskError
from connectors.autotask.picklists import Picklists, UnknownPicklistValue
from connectors.autotask.webhooks import webhook_status
from connectors.common.events import EventType
from pipelines.autotask_status import autotask_intake
from pipelines.rules import TIMEZEST_CASES, Rule, RulesError, load_watch_rules
from workers.settings import Settings

__all__ = ["check_autotask_source", "watch_rules_table"]


class _Report(Protocol):
    ok: list[str]
    problems: list[str]


def check_autotask_source(settings: Settings, report: _Report) -> None:
    """Webhooks installed, active and ready; deactivation notices; the last reconciliation."""
    try:
        intake = autotask_intake(settings.effective_database_url)
    except Exception as exc:  # the database check above already names an unreachable database
        report.problems.append(f"autotask intake: cannot read the audit database ({type(exc).__name__})")
        return
    if intake.deactivation_notices:
        # Unsigned: anyone can send one. Counted, never quoted; what counts is the state Autotask shows,
        # read below (and by the alert check, which alerts only a webhook really inactive or missing).
        report.ok.append(f"autotask webhooks: {intake.deactivation_notices} deactivation notice(s) received, last "
                         f"{intake.last_deactivation_at:%Y-%m-%d %H:%M} UTC (unsigned, so not trusted: the webhooks' "
                         "state in Autotask is what decides)")
    if intake.last_reconcile_outcome == "failed":
        report.problems.append(f"autotask reconciliation: last run failed: {intake.last_reconcile_error}")
    elif intake.last_reconcile_at is not None:
        report.ok.append(f"autotask reconciliation: last run {intake.last_reconcile_at:%Y-%m-%d %H:%M:%S} UTC "
                         f"({intake.last_reconcile_outcome}); {intake.recovered_total} dropped callouts recovered")
    if not settings.autotask_configured:
        return
    from workers.celery.runtime import build_client

    client = build_client(settings, max_attempts=1)
    try:
        found = webhook_status(client)
    except AutotaskError as exc:
        report.problems.append(f"autotask webhooks: cannot read them: {exc.reason}")
        return
    finally:
        client.close()
    last = f"; last callout {intake.last_callout_at:%Y-%m-%d %H:%M:%S} UTC" if intake.last_callout_at else ""
    for spec, item in found:
        if item is None:
            report.problems.append(f"autotask webhooks: {spec.entity} not installed (changes are then seen only by "
                                   "reconciliation; run `atrelay autotask webhooks install --url ...`)")
        elif not (item.webhook.is_active and item.webhook.is_ready):
            report.problems.append(f"autotask webhooks: {spec.entity} #{item.webhook.id} active="
                                   f"{item.webhook.is_active} ready={item.webhook.is_ready} (run install again)")
        else:
            report.ok.append(f"autotask webhooks: {spec.entity} #{item.webhook.id} active and ready -> "
                             f"{item.webhook.webhook_url}{last}")


def timezest_table(rules: dict[EventType, Rule]) -> Table:
    """Per TimeZest event: what atrelay does when TimeZest's own PSA action wrote its status, another, or none."""
    table = Table(title="TimeZest events: verify and repair, never repeat", header_style="bold")
    for name in ("event", "status", "TimeZest set it", "TimeZest set another", "TimeZest set nothing"):
        table.add_column(name)
    for etype, (same, other, none) in TIMEZEST_CASES.items():
        rule = rules.get(etype)
        status = (rule.status or "(leave as it is)") if rule is not None else "(no rule)"
        table.add_row(etype.value, escape(status), same, other, none)
    return table


def watch_rules_table(settings: Settings, lists: Picklists | None) -> Table:
    """What Autotask's own events mean: rule, trigger, resolved tenant id, event it emits, on/off."""
    table = Table(title="Autotask watch rules: change seen in Autotask -> event", header_style="bold")
    for name in ("rule", "on", "trigger", "tenant id", "emits", "enabled"):
        table.add_column(name)
    try:
        rules = load_watch_rules(settings.rules_file)
    except RulesError as exc:
        table.add_row("-", "-", escape(str(exc)), "-", "-", "-")
        return table
    for rule in rules.values():
        trigger = (rule.status if rule.on == "status" else f"note title ~ {settings.webform_note_title}"
                   if rule.on == "note" else f"status {rule.status}" if rule.status else "see docs/rules.md")
        value = "-"
        if rule.on in ("status", "guard") and rule.status:
            try:
                value = str(lists.status_id(rule.status)) if lists is not None else "?"
            except UnknownPicklistValue:
                value = "MISSING"
        table.add_row(rule.name, rule.on, escape(trigger or "-"), value, rule.emits.value,
                      "yes" if rule.enabled else "no")
    return table
