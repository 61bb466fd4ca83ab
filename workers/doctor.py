"""`atrelay doctor` and `atrelay rules`: check a deployment from the outside, one line per problem."""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from connectors.autotask.errors import AuthError, AutotaskError, TransportError
from connectors.autotask.picklists import Picklists, UnknownPicklistValue
from connectors.common.events import EventType
from pipelines.rules import Rule, RulesError, load_rules
from pipelines.schema import SchemaOutOfDate, check_schema
from workers.doctor_autotask import check_autotask_source, timezest_table, watch_rules_table
from workers.settings import Settings
from workers.startup import CREDENTIALS_HINT, autotask_problem
from workers.status import check_broker, liveness

__all__ = ["Report", "print_rules", "run_doctor"]


@dataclass
class Report:
    ok: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _client(settings: Settings):  # type: ignore[no-untyped-def]
    from workers.runtime import build_client

    return build_client(settings, max_attempts=1)


def _load_lists(settings: Settings, report: Report) -> Picklists | None:
    if not settings.autotask_configured:
        report.problems.append("autotask: not configured (set ATRELAY_AUTOTASK_USERNAME, _SECRET and "
                               "_INTEGRATION_CODE; `atrelay run` uses the bundled sandbox without them)")
        return None
    client = _client(settings)
    try:
        base = client.base_url
        report.ok.append(f"autotask: zone {base}" + (" (configured)" if settings.autotask_base_url else " (looked up)"))
        lists = Picklists.load(client)
        report.ok.append(f"autotask: credentials accepted; {len(lists.status.labels)} active ticket statuses")
        return lists
    except (AutotaskError, UnknownPicklistValue) as exc:
        reason = exc.reason if isinstance(exc, AutotaskError) else str(exc)
        if isinstance(exc, AuthError):
            reason += f". {CREDENTIALS_HINT}"
        elif isinstance(exc, TransportError):
            reason = autotask_problem(exc)
        report.problems.append(f"autotask: {reason}")
        return None
    finally:
        client.close()


def _rules(settings: Settings, report: Report) -> dict[EventType, Rule] | None:
    try:
        rules = load_rules(settings.rules_file)
    except RulesError as exc:
        report.problems.append(f"rules: {exc}")
        return None
    report.ok.append(f"rules: {'defaults' if settings.rules_file is None else settings.rules_file}")
    return rules


def _status_table(rules: dict[EventType, Rule], lists: Picklists | None, report: Report | None) -> Table:
    table = Table(title="Effective rules: event type -> status -> tenant id", header_style="bold")
    for name in ("event type", "status", "tenant id", "note"):
        table.add_column(name)
    for etype, rule in rules.items():
        if rule.status is None:
            table.add_row(etype.value, "(none: note only)", "-", "yes" if rule.note else "no")
            continue
        if lists is None:
            table.add_row(etype.value, escape(rule.status), "?", "yes" if rule.note else "no")
            continue
        try:
            value = str(lists.status_id(rule.status))
        except UnknownPicklistValue as exc:
            value = "MISSING"
            if report is not None:
                report.problems.append(f"status {rule.status!r} (for {etype.value}) is missing in the tenant: {exc}")
        table.add_row(etype.value, escape(rule.status), value, "yes" if rule.note else "no")
    return table


def _timezest(settings: Settings, report: Report) -> None:
    if settings.timezest_api_key is None:
        report.problems.append("timezest: ATRELAY_TIMEZEST_API_KEY is not set (the poller is off)")
        return
    from connectors.timezest.client import TimezestClient, TimezestError

    client = TimezestClient(api_key=settings.timezest_api_key.get_secret_value(),
                            base_url=settings.timezest_base_url, max_attempts=1)
    try:
        next(iter(client.scheduling_requests(max_pages=1)), None)
        report.ok.append(f"timezest: API key accepted at {settings.timezest_base_url}")
    except TimezestError as exc:
        report.problems.append(f"timezest: {exc}")
    finally:
        client.close()


def _alerts(settings: Settings, report: Report) -> None:
    """ATRELAY_NOTIFY_URLS, checked again against the installed apprise (start-up refuses a bad one)."""
    from workers.notify_urls import notify_url_problems

    urls = settings.notify_urls.split()
    if not urls:
        report.ok.append("alerts: no ATRELAY_NOTIFY_URLS (alerts are shown on the dashboard only)")
        return
    problems = notify_url_problems(settings.notify_urls)
    report.problems.extend(f"alerts: {p}" for p in problems)
    if not problems:
        schemes = sorted({u.partition("://")[0].lower() for u in urls})
        report.ok.append(f"alerts: {len(urls)} URL(s) apprise accepts ({', '.join(schemes)})")


def _liveness(settings: Settings, report: Report) -> None:
    """Which processes are alive and able, what waits, what is overdue (the dashboard's own reading)."""
    from pipelines.holds import held_count

    try:
        live = liveness(settings)
        held = held_count(settings.effective_database_url)
    except Exception as exc:  # the database check above already names an unreachable database
        report.problems.append(f"processes: cannot read the audit database ({type(exc).__name__})")
        return
    if live.workers.newest is None and live.beat.newest is None:
        # A pre-flight check before anything was started is not a failure of what runs.
        report.ok.append("processes: no worker or beat has run against this database yet (start `atrelay worker` "
                         "and `atrelay beat`, or `atrelay run`)")
        return
    for c in live.conditions:
        report.problems.append(f"{c.name.replace('_', ' ')}: {c.summary}. {c.todo}")
    for role, group in (("worker", live.workers), ("beat", live.beat)):
        for p in group.ready:
            report.ok.append(f"{role}: alive on {p.host} (pid {p.pid}, {p.version}), last heartbeat "
                             f"{(group.now - p.beat_at).total_seconds():.0f} s ago")
    if not live.conditions:
        report.ok.append(f"queues: {live.waiting_line}")
    if held:
        report.problems.append(f"{held} event(s) held (retrying) until Autotask accepts atrelay's credentials")


def run_doctor(settings: Settings, console: Console, err: Console) -> int:
    report = Report()
    db = settings.effective_database_url
    try:
        check_schema(db)
        report.ok.append(f"database: {db.split('@')[-1]} at the current schema")
    except SchemaOutOfDate as exc:
        report.problems.append(f"database: {exc}")
    except Exception as exc:
        report.problems.append(f"database: {db.split('@')[-1]} unreachable: {type(exc).__name__}: {exc}")
    broker = check_broker(settings)
    if broker:
        report.problems.append(broker)
    else:
        report.ok.append(f"broker: {settings.effective_broker_url.split('@')[-1]} reachable")
    if (settings.mc_webhook_secret is None or settings.webform_webhook_secret is None) and settings.embedded:
        # Embedded mode is the try-it-out mode: generated secrets are its design, not a problem.
        report.ok.append(f"webhooks: development secrets from {settings.var_path / 'dev-secrets.json'} "
                         "(set ATRELAY_WEBFORM_WEBHOOK_SECRET/ATRELAY_MC_WEBHOOK_SECRET for partners)")
    elif settings.mc_webhook_secret is None or settings.webform_webhook_secret is None:
        report.problems.append("webhooks: ATRELAY_WEBFORM_WEBHOOK_SECRET and/or ATRELAY_MC_WEBHOOK_SECRET unset "
                               "(a generated development secret is used)")
    else:
        report.ok.append("webhooks: both secrets configured")
    _alerts(settings, report)
    if not any(p.startswith("database:") for p in report.problems):
        _liveness(settings, report)
    rules = _rules(settings, report)
    lists = _load_lists(settings, report)
    _timezest(settings, report)
    check_autotask_source(settings, report)
    # Lines quote rules files, labels and server answers: escaped, so `[events."mc.no_contact"]` shows.
    for line in report.ok:
        console.print(f"[green]ok[/]      {escape(line)}", highlight=False)
    if rules is not None:
        console.print(_status_table(rules, lists, report))
        console.print(watch_rules_table(settings, lists))
    for line in report.problems:
        err.print(f"[red]problem[/] {escape(line)}", highlight=False)
    console.print(f"{len(report.problems)} problem(s)")
    return 1 if report.problems else 0


def print_rules(settings: Settings, console: Console) -> int:
    report = Report()
    rules = _rules(settings, report)
    if rules is None:
        console.print(f"[red]problem[/] {escape(report.problems[0])}", highlight=False)
        return 1
    lists = _load_lists(settings, report) if settings.autotask_configured else None
    console.print(_status_table(rules, lists, report))
    console.print(timezest_table(rules))
    console.print(watch_rules_table(settings, lists))
    for line in report.problems:
        console.print(f"[red]problem[/] {escape(line)}", highlight=False)
    return 1 if report.problems else 0
