"""``atrelay autotask webhooks install | status | remove``: Autotask's own webhooks, registered by atrelay;
``atrelay autotask resources``: the tenant's API users, and which setting names which.

With no Autotask settings of their own, these use the sandbox of a running `atrelay run` (as doctor and
rules do), so they work on a fresh `make run`."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, NoReturn
from urllib.parse import urlsplit

import typer
from rich.markup import escape
from rich.table import Table

from workers.cli.common import embedded_settings
from workers.cli.output import Format, emit, make_console
from workers.settings import Settings, webhook_secrets

if TYPE_CHECKING:
    from connectors.autotask.client import AutotaskClient
    from connectors.autotask.webhooks import InstalledWebhook

# The Autotask client and the database layer are imported by the commands that use them: the CLI
# module is also loaded by `atrelay run`, whose supervisor process should stay small.

__all__ = ["autotask_app"]

autotask_app = typer.Typer(help="Autotask as an event source: its ticket and note webhooks, its API resources.",
                           no_args_is_help=True)
webhooks_app = typer.Typer(help="atrelay's ticket and ticket-note webhooks in the tenant.", no_args_is_help=True)
autotask_app.add_typer(webhooks_app, name="webhooks")
console = make_console()
err = make_console(stderr=True)
_LOCAL = {"localhost", "127.0.0.1", "::1"}


def _fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(code)


def _settings() -> Settings:
    settings = embedded_settings()
    if not settings.autotask_configured:
        _fail("Autotask is not configured: set ATRELAY_AUTOTASK_USERNAME, ATRELAY_AUTOTASK_SECRET and "
              "ATRELAY_AUTOTASK_INTEGRATION_CODE (`atrelay run` registers the sandbox's webhooks itself)", 2)
    return settings


def _client(settings: Settings) -> AutotaskClient:
    from workers.celery.runtime import build_client

    return build_client(settings, max_attempts=2)


def check_public_url(url: str) -> str | None:
    """Refuse what Autotask could not call; return a warning for plain http on a local address."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        _fail(f"--url must be an absolute http(s) URL, got {url!r}", 2)
    if parts.query or parts.fragment:
        _fail("--url is the base URL only (no query or fragment); atrelay appends /webhooks/autotask/...", 2)
    if parts.scheme == "http":
        if parts.hostname not in _LOCAL:
            _fail("--url must use https: Autotask sends the webhook secret's signature and ticket data to it", 2)
        return "plain http accepted for a local URL only; Autotask in production needs https"
    return None


def _ts(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _table(rows: list[InstalledWebhook]) -> Table:
    table = Table(title="Autotask webhooks")
    for column in ("kind", "id", "active", "ready", "callout URL", "fields", "excluded resources"):
        table.add_column(column)
    for item in rows:
        w = item.webhook
        table.add_row(escape(item.spec.entity), str(w.id), "yes" if w.is_active else "[red]no[/red]",
                      "yes" if w.is_ready else "[red]no[/red]", escape(w.webhook_url or "-"), str(len(item.fields)),
                      ", ".join(str(r.resource_id) for r in item.excluded) or "-")
    return table


@webhooks_app.command("install")
def install(
    url: Annotated[str, typer.Option("--url", help="atrelay's public base URL, e.g. https://atrelay.example.com")],
    notify: Annotated[str | None, typer.Option(help="Autotask's failure e-mails go here")] = None,
) -> None:
    """Create or update atrelay's ticket and note webhooks (idempotent: run it again any time)."""
    warning = check_public_url(url)
    if warning:
        err.print(f"[yellow]warning:[/yellow] {warning}")
    from connectors.autotask.errors import AutotaskError
    from connectors.autotask.webhooks import WebhookSetupError, install_webhooks

    settings = _settings()
    secret = webhook_secrets(settings, "autotask")[0][0]
    with _client(settings) as client:
        try:
            own = client.find_resource_by_username(client.username)
            if own is None:
                err.print("[yellow]warning:[/yellow] no resource found for the API user; atrelay's own writes "
                          "will call back (they are recognised and ignored, at the cost of a callout each)")
            rows = install_webhooks(client, base_url=url, secret=secret, notification_email=notify,
                                    exclude_resource_id=own.id if own else None)
        except (AutotaskError, WebhookSetupError) as exc:
            _fail(f"could not install the webhooks: {exc}")
    console.print(_table(rows))
    for row in rows:
        console.print(f"{'created' if row.created else 'updated'} {row.spec.entity} #{row.webhook.id}")


@webhooks_app.command("status")
def status() -> None:
    """Each webhook as Autotask shows it, the last callout received, reconciliation and deactivations."""
    from connectors.autotask.errors import AutotaskError
    from connectors.autotask.webhooks import webhook_status
    from pipelines.autotask_status import autotask_intake

    settings = _settings()
    with _client(settings) as client:
        try:
            found = webhook_status(client)
        except AutotaskError as exc:
            _fail(f"could not read the webhooks: {exc}")
    installed = [item for _spec, item in found if item is not None]
    if installed:
        console.print(_table(installed))
    for spec, item in found:
        if item is None:
            console.print(f"[red]{spec.entity}: not installed[/red] "
                          "(run `atrelay autotask webhooks install --url ...`)")
    intake = autotask_intake(settings.effective_database_url)
    console.print(f"last callout received: {_ts(intake.last_callout_at)} ({intake.callouts_total} in all)")
    console.print(f"last reconciliation: {_ts(intake.last_reconcile_at)} {intake.last_reconcile_outcome or ''} "
                  f"({intake.recovered_total} changes recovered in all)")
    if intake.deactivation_notices:
        console.print(f"[red]deactivation notices: {intake.deactivation_notices}[/red]; last "
                      f"{_ts(intake.last_deactivation_at)}: {escape(intake.last_deactivation or '')}")
    bad = [i for i in installed if not (i.webhook.is_active and i.webhook.is_ready)] or len(installed) < len(found)
    raise typer.Exit(1 if bad else 0)


@autotask_app.command("resources")
def resources(
    every: Annotated[bool, typer.Option("--all", help="Every active resource, not only API users")] = False,
    fmt: Annotated[Format, typer.Option("--format", help="table, json or csv")] = Format.table,
) -> None:
    """The tenant's API users (resources): atrelay's own, TimeZest's, Mission Control's, with the setting
    that names each; `atrelay doctor` checks ATRELAY_TIMEZEST_RESOURCE_ID against this list."""
    from connectors.autotask.errors import AutotaskError
    from workers.celery.runtime import timezest_resource_id
    from workers.cli.tenant_resources import check_timezest_resource, list_resources

    settings = _settings()
    with _client(settings) as client:
        try:
            rows = list_resources(client)
        except AutotaskError as exc:
            _fail(f"could not read the tenant's resources: {exc}")
    use = {"atrelay": "atrelay's API user (ATRELAY_AUTOTASK_USERNAME; excluded from its webhooks)",
           "timezest": "TimeZest: ATRELAY_TIMEZEST_RESOURCE_ID={id}",
           "mission-control": "Mission Control's bridge (its changes drive the mc-* watch rules)"}
    shown = [r for r in rows if every or r.api_user]
    emit(console, title="Autotask resources" if every else "Autotask API users", fmt=fmt,
         columns=("id", "name", "user name", "license", "API user", "is"),
         rows=[(str(r.id), r.resource.name, r.resource.user_name or "-",
                r.license or (str(r.resource.license_type) if r.resource.license_type is not None else "-"),
                "yes" if r.api_user else "no", use[r.owner].format(id=r.id) if r.owner else "-") for r in shown])
    if fmt == Format.table:
        check = check_timezest_resource(timezest_resource_id(settings), rows)
        (console if check.level == "ok" else err).print(f"{check.level}: {escape(check.message)}", highlight=False)


@webhooks_app.command("remove")
def remove() -> None:
    """Delete atrelay's webhooks (reconciliation still notices changes, every interval)."""
    from connectors.autotask.errors import AutotaskError
    from connectors.autotask.webhooks import remove_webhooks

    settings = _settings()
    with _client(settings) as client:
        try:
            count = remove_webhooks(client)
        except AutotaskError as exc:
            _fail(f"could not remove the webhooks: {exc}")
    console.print(f"removed {count} webhook(s)")
