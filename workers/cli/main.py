"""The `atrelay` command."""

from __future__ import annotations

import base64
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.text import Text

from workers.cli.autotask import autotask_app
from workers.cli.common import embedded_settings as _embedded_settings
from workers.cli.common import fail as _fail
from workers.cli.common import require_schema as _require_schema
from workers.cli.common import settings as _settings
from workers.cli.output import Format, make_console
from workers.cli.shadow import secret_app, shadow_app
from workers.settings import (
    SANDBOX_AUTOTASK_CREDENTIALS,
    SANDBOX_TIMEZEST_API_KEY,
    Settings,
    SettingsError,
    get_settings,
)

__all__ = ["app", "main"]

app = typer.Typer(help="atrelay: keeps Autotask ticket statuses true to what partners report.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
events_app = typer.Typer(help="Recent events and their outcomes.", invoke_without_command=True)
sandbox_app = typer.Typer(help="Run a bundled partner-API emulator.", no_args_is_help=True)
audit_app = typer.Typer(help="The tamper-evident audit chain.", no_args_is_help=True)
app.add_typer(events_app, name="events")
app.add_typer(audit_app, name="audit")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(autotask_app, name="autotask")
app.add_typer(shadow_app, name="shadow")
app.add_typer(secret_app, name="secret")
console = make_console()
err = make_console(stderr=True, soft_wrap=True)
#: --format of the listing commands.
_FORMAT = typer.Option("--format", help="table (default; one line per row when piped), json or csv")


def _check_tenant_statuses(settings: Settings) -> None:
    """Refuse to start when a status the rules name is missing from the tenant."""
    from connectors.autotask.errors import AutotaskError
    from connectors.autotask.picklists import UnknownPicklistValue
    from workers.celery.runtime import get_context

    try:
        from pipelines import store
        from pipelines.context import check_rule_statuses

        ctx = get_context()
        db = settings.effective_database_url
        # Recorded like any other Autotask call: /readyz and the dashboard show picklists as loaded.
        ctx.client.set_attempt_hook(lambda attempt: store.record_attempt(db, None, None, attempt))
        try:
            check_rule_statuses(ctx.rules, ctx.lists())
        finally:
            ctx.client.set_attempt_hook(None)
    except UnknownPicklistValue as exc:
        _fail(f"{exc}. Fix the label in the rules file ({settings.rules_file or 'defaults'}) or in Autotask.")
    except AutotaskError as exc:
        # Keep running (seen, and working the moment Autotask answers) but not ready: the heartbeat says
        # why on every screen, and events wait as `retrying` (workers/celery/startup.py, pipelines/holds.py).
        from workers.celery.startup import autotask_problem, set_startup_problem

        problem = autotask_problem(exc)
        set_startup_problem(problem)
        err.print(f"[red]worker not ready:[/] {escape(problem)}. It keeps running and checks again every "
                  f"{max(30, int(3 * settings.heartbeat_seconds))} s.")
    except RuntimeError as exc:
        _fail(str(exc))


@app.command()
def migrate() -> None:
    """Apply pending audit-database migrations."""
    from pipelines.schema import upgrade

    settings = _settings()
    url = settings.effective_database_url
    try:
        before, after = upgrade(url)
    except Exception as exc:  # one line, as `doctor` says it, not a page of driver traceback
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        _fail(f"audit database {url.split('@')[-1]} unreachable: {type(exc).__name__}: {first}", 1)
    console.print(f"audit database {settings.effective_database_url.split('@')[-1]}: "
                  f"{before or 'empty'} -> {after}" if before != after else f"already at {after}")


@app.command()
def run(
    host: str = "127.0.0.1",
    port: int = 8000,
    autotask_sandbox_port: int = 8101,
    timezest_sandbox_port: int = 8102,
    verbose: Annotated[bool, typer.Option("--verbose", help="Also show Celery's banner and its per-task and "
                                                            "scheduler lines")] = False,
) -> None:
    """Embedded mode: migrate, then ingress + worker + beat (+ sandboxes when unconfigured)."""
    from workers.cli.supervisor import Supervisor

    settings = _settings()
    sup = Supervisor(settings, console, host=host, port=port, autotask_sandbox_port=autotask_sandbox_port,
                     timezest_sandbox_port=timezest_sandbox_port, verbose=verbose)
    try:
        lines = sup.start()
    except RuntimeError as exc:
        sup.stop()
        _fail(str(exc), 1)
    console.print(sup.banner(lines))
    raise typer.Exit(sup.watch())


@app.command()
def ingress(
    host: Annotated[str | None, typer.Option(help="Listen address (default ATRELAY_INGRESS_HOST, 127.0.0.1)")]
    = None,
    port: Annotated[int | None, typer.Option(help="Port (default ATRELAY_INGRESS_PORT, 8000)")] = None,
    workers: int = 1,
) -> None:
    """Run the HTTP ingress (webhook endpoints)."""
    import logging

    import uvicorn

    from workers.cli.mode import record_start

    settings = _settings()
    _require_schema(settings)
    record_start(settings, "ingress", err)
    from workers.settings import webhook_secrets

    host, port = host or settings.ingress_host, port or settings.ingress_port
    generated = [source for source in ("webform", "mission-control") if webhook_secrets(settings, source)[1]]
    # One line says where it listens and in which mode (uvicorn itself only logs warnings).
    logging.getLogger("atrelay.ingress").info("ingress.listening", extra={
        "url": f"http://{host}:{port}", "mode": settings.mode,
        **({"generated_secrets": f"{','.join(generated)} in {settings.var_path / 'dev-secrets.json'} "
                                 "(atrelay send signs with them)"} if generated else {})})
    # The guarded protocol bounds headers and cuts slow clients; limit_concurrency caps connections.
    # X-Forwarded-For is believed only from ATRELAY_TRUSTED_PROXIES (uvicorn's default trusts any local
    # client, and with no proxy in front that is anyone who can reach the port through one).
    proxies = settings.forwarded_allow_ips
    uvicorn.run("workers.http.ingress:create_app", factory=True, host=host, port=port, workers=workers,
                log_level="warning", access_log=False, http="workers.http.guard:GuardedHttpToolsProtocol",
                limit_concurrency=settings.max_connections, timeout_keep_alive=5,
                proxy_headers=bool(proxies), forwarded_allow_ips=proxies or None)


@app.command()
def worker(
    concurrency: Annotated[int | None, typer.Option(
        help="Runs at once: threads or processes per ATRELAY_WORKER_POOL (default ATRELAY_WORKER_CONCURRENCY)",
    )] = None,
    name: Annotated[str | None, typer.Option("--name", "-n", help="Celery node name")] = None,
    beat: Annotated[bool, typer.Option("--beat", help="Also run the scheduler in this process (embedded mode)")]
    = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No Celery banner, no Celery info lines (`atrelay run` "
                                                        "without --verbose)")] = False,
) -> None:
    """Run a Celery worker that processes events."""
    from workers.cli.mode import record_start

    settings = _settings()
    _require_schema(settings)
    record_start(settings, "worker", err)
    _check_tenant_statuses(settings)
    from workers.celery.app import QUEUE
    from workers.celery.app import app as celery

    argv = ["worker", "--loglevel", settings.log_level, "-Q", QUEUE, "--pool", settings.worker_pool,
            "--concurrency", str(concurrency or settings.worker_concurrency), "--without-gossip",
            "--without-mingle"]
    if quiet:
        _quiet_celery()
        argv.insert(0, "--quiet")
    if name:
        argv += ["-n", name]
    if beat:
        # One process fewer for a single-machine install; the lock still keeps it the only beat.
        from workers.celery.beat_lock import BeatLock

        BeatLock(settings).acquire()
        argv += ["--beat", "--schedule", str(settings.var_path / "celerybeat-schedule")]
    celery.worker_main(argv)


def _quiet_celery() -> None:
    """The embedded terminal shows atrelay's lines: Celery's (connected, ready, every scheduler tick) only
    from WARNING up, and its superuser warning not at all (`atrelay run` explains running as root once)."""
    import logging
    import warnings

    from celery.exceptions import SecurityWarning

    logging.getLogger("celery").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=SecurityWarning)


@app.command()
def beat() -> None:
    """Run the scheduler (TimeZest polls, stuck-event sweeper)."""
    from workers.cli.mode import record_start

    settings = _settings()
    _require_schema(settings)
    record_start(settings, "beat", err)
    from workers.celery.app import app as celery
    from workers.celery.beat_lock import BeatLock

    settings.var_path.mkdir(parents=True, exist_ok=True)
    BeatLock(settings).acquire()  # safe to run twice: the second waits as standby
    celery.start(["beat", "--loglevel", settings.log_level,
                  "--schedule", str(settings.var_path / "celerybeat-schedule")])


@app.command()
def send(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A JSON event, e.g. samples/*.json")],
    url: str = "http://127.0.0.1:8000",
    msg_id: Annotated[str | None, typer.Option(help="webhook-id (default: a new one)")] = None,
) -> None:
    """Sign a sample event as the partner would and post it to a running ingress."""
    import httpx

    from connectors.common.standard_webhooks import sign
    from workers.settings import webhook_secrets

    settings = _settings()
    body = file.read_bytes()
    try:
        parsed = json.loads(body)
    except json.JSONDecodeError as exc:  # where it breaks, as an editor counts (line and column from 1)
        _fail(f"{file}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")
    except UnicodeDecodeError as exc:
        _fail(f"{file}: not UTF-8 text (byte {exc.start})")
    if not isinstance(parsed, dict):
        _fail(f"{file} is JSON but not an object ({type(parsed).__name__}); a partner event is an object")
    kind = str(parsed.get("type", ""))
    source = "mission-control" if kind.startswith("mc.") else "webform"
    configured = settings.mc_webhook_secret if source == "mission-control" else settings.webform_webhook_secret
    dev_secrets = settings.var_path / "dev-secrets.json"
    # No secret anywhere: a secret minted and stored here could only earn a 401 from a running ingress
    # (it uses the var/ it started with). Sign with a throwaway one and explain a refusal instead.
    stray = configured is None and not dev_secrets.exists()
    throwaway = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    secret = throwaway if stray else webhook_secrets(settings, source)[0][0]
    headers = sign(body, secret, msg_id=msg_id)
    path = "/webhooks/mission-control" if source == "mission-control" else "/webhooks/webform"
    try:
        response = httpx.post(url.rstrip("/") + path, content=body, headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        _fail(f"could not reach the ingress at {url}: {exc}. Is `atrelay run` running?", 1)
    console.print(Text(f"{response.status_code} {response.text}"))  # the server's text is not markup
    if response.status_code == 401 and stray:
        _fail(f"no webhook secret here: none configured and no {dev_secrets} (var folder {settings.var_path}). "
              "Run this where `atrelay run` runs, or set ATRELAY_VAR_DIR to its var/ folder", 1)
    if response.status_code >= 400:
        raise typer.Exit(1)


@events_app.callback()
def events(
    ctx: typer.Context,
    *,
    limit: int = 30,
    source: str | None = None,
    state: str | None = None,
    ticket: Annotated[str | None, typer.Option(help="ticket number (T2026...) or id; includes follow-ups")] = None,
    fmt: Annotated[Format, _FORMAT] = Format.table,
) -> None:
    """List recent events and outcomes (`atrelay events show ID` for one event)."""
    if ctx.invoked_subcommand is not None:
        return
    from connectors.common.events import Source
    from pipelines.audit import EventState
    from workers.cli.reports import print_events

    # A misspelt filter would silently match nothing: name the values that exist instead.
    if source is not None and source not in {s.value for s in Source}:
        _fail(f"--source {source!r} is not a source; use one of: {', '.join(s.value for s in Source)}")
    if state is not None and state not in {s.value for s in EventState}:
        _fail(f"--state {state!r} is not a state; use one of: {', '.join(s.value for s in EventState)}")
    settings = _settings()
    _require_schema(settings)
    print_events(settings.effective_database_url, console, limit=limit, source=source, state=state, ticket=ticket,
                 fmt=fmt)


@events_app.command("show")
def events_show(event_id: int) -> None:
    """Print one event with its pipeline runs and Autotask attempts."""
    from workers.cli.reports import print_event

    settings = _settings()
    _require_schema(settings)
    if not print_event(settings.effective_database_url, console, event_id):
        _fail(f"no event #{event_id}", 1)


@app.command()
def doctor() -> None:
    """Check configuration, Autotask, the rules' statuses, TimeZest, database and broker."""
    from workers.cli.doctor import run_doctor

    raise typer.Exit(run_doctor(_embedded_settings(), console, err))


@app.command()
def rules() -> None:
    """Print the effective table: event type -> status label -> tenant id."""
    from workers.cli.doctor import print_rules

    raise typer.Exit(print_rules(_embedded_settings(), console))


@app.command()
def dlq(limit: int = 100, fmt: Annotated[Format, _FORMAT] = Format.table) -> None:
    """List dead letters with their reason and age."""
    from workers.cli.reports import print_dead_letters

    settings = _settings()
    _require_schema(settings)
    print_dead_letters(settings.effective_database_url, console, limit=limit, fmt=fmt)


@app.command()
def replay(
    event_id: Annotated[int | None, typer.Argument(help="One event to re-drive")] = None,
    dead: Annotated[bool, typer.Option("--dead", help="Re-drive every dead letter")] = False,
    since: Annotated[datetime | None, typer.Option(help="With --dead: only those that died since (UTC)")] = None,
) -> None:
    """Re-drive dead letters, idempotently (nothing already written is written again)."""
    from rich.progress import Progress

    from pipelines import store
    from workers.celery.queue import enqueue_event

    settings = _settings()
    _require_schema(settings)
    db = settings.effective_database_url
    if event_id is not None and not dead:
        queued, message = store.replay(db, event_id)
        if queued:
            enqueue_event(event_id)
        (console if queued else err).print(message)
        raise typer.Exit(0 if queued else 1)
    if not dead:
        _fail("give an event id, or --dead [--since DATE] for every dead letter")
    cutoff = since.replace(tzinfo=UTC) if since is not None and since.tzinfo is None else since
    ids = [row.id for row in store.dead_letters(db, since=cutoff) if row.id is not None]
    done = 0
    with Progress(console=console, transient=False) as progress:
        task = progress.add_task(f"replaying {len(ids)} dead letters", total=len(ids))
        for one in ids:
            queued, _ = store.replay(db, one)
            if queued:
                enqueue_event(one)
                done += 1
            progress.advance(task)
    console.print(f"{done} of {len(ids)} dead letters queued again")


@app.command()
def rejections(limit: int = 30, fmt: Annotated[Format, _FORMAT] = Format.table) -> None:
    """List recent refused requests and why."""
    from workers.cli.reports import print_rejections

    settings = _settings()
    _require_schema(settings)
    print_rejections(settings.effective_database_url, console, limit=limit, fmt=fmt)


@app.command()
def polls(limit: int = 20, fmt: Annotated[Format, _FORMAT] = Format.table) -> None:
    """List recent partner polls (TimeZest) and their results."""
    from workers.cli.reports import print_polls

    settings = _settings()
    _require_schema(settings)
    print_polls(settings.effective_database_url, console, limit=limit, fmt=fmt)


@audit_app.command("seal")
def audit_seal() -> None:
    """Seal finished events into the chain now (beat does this every 30 s)."""
    from pipelines.chain import seal

    settings = _settings()
    _require_schema(settings)
    total = 0
    while True:
        n = seal(settings.effective_database_url)
        total += n
        if n == 0:
            break
    console.print(f"sealed {total} event(s)")


@audit_app.command("verify")
def audit_verify() -> None:
    """Walk the hash chain; name the first event whose audit rows were changed, inserted or removed."""
    from pipelines.chain import verify

    settings = _settings()
    _require_schema(settings)
    result = verify(settings.effective_database_url)
    if not result.ok:
        err.print(f"[red]audit chain broken after {result.checked} good seal(s):[/] {result.problem}")
        raise typer.Exit(1)
    console.print(f"audit chain OK: {result.checked} seal(s) verified; "
                  f"{result.unsealed_final} finished event(s) not sealed yet")


@audit_app.command("prune")
def audit_prune(
    older_than_days: Annotated[int, typer.Option(min=1, help="Delete sealed events sealed before this many days ago")],
) -> None:
    """Delete old sealed events and their runs/attempts; the chain stays verifiable (anchor)."""
    from datetime import timedelta

    from pipelines.chain import prune

    settings = _settings()
    _require_schema(settings)
    result = prune(settings.effective_database_url, datetime.now(UTC) - timedelta(days=older_than_days))
    console.print(f"pruned {result.seals} seal(s) and {result.events} event(s)")


_FRESH = typer.Option("--fresh", help="Start from the seed data, replacing the state saved in var/")


def _sandbox_var() -> Path:
    # Only the var folder matters here: a sandbox must start even when Autotask settings are partial.
    try:
        return get_settings().var_path
    except SettingsError as exc:
        _fail(str(exc))


_AUTOTASK_SANDBOX_HELP = (
    "Serve the Autotask REST emulator; its state is kept in var/.\n\n"
    "It accepts only its own credentials (not secrets; they open nothing else): "
    f"ATRELAY_AUTOTASK_USERNAME={SANDBOX_AUTOTASK_CREDENTIALS['username']} "
    f"ATRELAY_AUTOTASK_SECRET={SANDBOX_AUTOTASK_CREDENTIALS['secret']} "
    f"ATRELAY_AUTOTASK_INTEGRATION_CODE={SANDBOX_AUTOTASK_CREDENTIALS['integration_code']} "
    "ATRELAY_AUTOTASK_ZONE_URL=http://HOST:PORT/atservicesrest/v1.0/zoneInformation"
)


@sandbox_app.command("autotask", help=_AUTOTASK_SANDBOX_HELP)
def sandbox_autotask(host: str = "127.0.0.1", port: int = 8101, fresh: Annotated[bool, _FRESH] = False) -> None:
    from workers.cli.sandbox_serve import serve_sandbox

    console.print(f"Autotask sandbox on http://{host}:{port} (zone lookup: /atservicesrest/v1.0/zoneInformation)")
    serve_sandbox("autotask", host, port, _sandbox_var(), fresh=fresh, console=console, err=err)


@sandbox_app.command("timezest", help="Serve the TimeZest API emulator; its state is kept in var/.\n\n"
                                       f"It accepts the API key ATRELAY_TIMEZEST_API_KEY={SANDBOX_TIMEZEST_API_KEY} "
                                       "with ATRELAY_TIMEZEST_BASE_URL=http://HOST:PORT/v1 (not a secret).")
def sandbox_timezest(host: str = "127.0.0.1", port: int = 8102, fresh: Annotated[bool, _FRESH] = False) -> None:
    from workers.cli.sandbox_serve import serve_sandbox

    console.print(f"TimeZest sandbox on http://{host}:{port}/v1")
    serve_sandbox("timezest", host, port, _sandbox_var(), fresh=fresh, console=console, err=err)


def main() -> None:
    # Files atrelay creates (var/atrelay.db, the broker file, dev secrets, beat's schedule) hold audit
    # data and secrets: readable by this user only.
    os.umask(0o077)
    try:
        app()
    except SettingsError as exc:
        err.print(f"[red]error:[/] {exc}")
        sys.exit(2)


if __name__ == "__main__":
    main()
