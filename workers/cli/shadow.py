"""``atrelay shadow report`` (what shadow mode would have written, beside what people did) and
``atrelay secret new`` (a secret in the format its setting takes)."""

from __future__ import annotations

import base64
import json
import secrets
import sys
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

import typer

from workers.cli.common import require_schema
from workers.cli.common import settings as cli_settings
from workers.cli.output import Format, emit, make_console

__all__ = ["secret_app", "shadow_app"]

shadow_app = typer.Typer(help="Shadow mode (ATRELAY_MODE=shadow): what atrelay would have written.",
                         no_args_is_help=True)
secret_app = typer.Typer(help="Make secrets for atrelay's settings.", no_args_is_help=True)
console = make_console()
err = make_console(stderr=True, soft_wrap=True)


@shadow_app.command("report")
def report(
    since: Annotated[datetime | None, typer.Option(help="Only events accepted since then (UTC)")] = None,
    events: Annotated[bool, typer.Option("--events", help="Also list every event with its verdict")] = False,
    fmt: Annotated[Format, typer.Option("--format", help="table, json or csv (csv: one row per event)")]
    = Format.table,
) -> None:
    """Per rule: would-apply, agreement with what people then set (within ATRELAY_SHADOW_AGREE_MINUTES),
    note-only, would-skip by reason, and the tickets to look at."""
    from pipelines.shadow_report import shadow_report

    settings = cli_settings()
    require_schema(settings)
    cutoff = since.replace(tzinfo=UTC) if since is not None and since.tzinfo is None else since
    found = shadow_report(settings.effective_database_url, agree_minutes=settings.shadow_agree_minutes,
                          since=cutoff)
    lines = [(str(e.event_id), e.rule, e.ticket, e.verdict, e.would_set or "-", "yes" if e.note else "no",
              e.people_set or "-", e.state, e.reason or "") for e in found.events]
    columns = ("event", "rule", "ticket", "verdict", "would set", "note", "then set by someone", "state", "reason")
    if fmt == Format.json:
        agreed, decided = found.agreement
        sys.stdout.write(json.dumps({
            "since": found.since.isoformat() if found.since else None,
            "until": found.until.isoformat() if found.until else None,
            "agree_minutes": found.agree_minutes, "agreed": agreed, "decided": decided,
            "rules": [{"rule": r.rule, "events": r.events, "would_apply": r.would_apply, "agree": r.agree,
                       "disagree": r.disagree, "no_change": r.no_change, "pending": r.pending,
                       "note_only": r.note_only, "waiting": r.waiting, "skipped": dict(r.skipped),
                       "look_at": r.look_at} for r in found.rules],
            "events": [dict(zip(columns, line, strict=True)) for line in lines]}, indent=2) + "\n")
        return
    if fmt == Format.csv:
        emit(console, title="", columns=columns, rows=lines, fmt=fmt)
        return
    if found.since is None:
        console.print("atrelay has not run in shadow mode (ATRELAY_MODE=shadow) on this database.")
        return
    agreed, decided = found.agreement
    until = f"until {found.until:%Y-%m-%d %H:%M} UTC" if found.until else "still on"
    console.print(f"Shadow mode since {found.since:%Y-%m-%d %H:%M} UTC ({until}): {len(found.events)} event(s); "
                  f"a person's status change counts within {found.agree_minutes} min of atrelay's would-be write")
    console.print(f"Agreement: {agreed} of {decided} would-be status change(s) that someone then decided "
                  f"({round(100 * agreed / decided) if decided else 0} %)")
    emit(console, title="Per rule", fmt=fmt,
         columns=("rule", "events", "would apply", "agree", "disagree", "no change", "pending", "note only",
                  "would skip (reason)", "waiting", "tickets to look at"),
         rows=[(r.rule, str(r.events), str(r.would_apply), str(r.agree), str(r.disagree), str(r.no_change),
                str(r.pending), str(r.note_only), ", ".join(f"{k} {v}" for k, v in sorted(r.skipped.items())) or "-",
                str(r.waiting), ", ".join(r.look_at) or "-") for r in found.rules],
         style=lambda column, value: "red" if column == "disagree" and value != "0" else "")
    if events:
        emit(console, title="Events", fmt=fmt, columns=columns, rows=lines)


class SecretKind(StrEnum):
    standard_webhooks = "standard-webhooks"
    autotask = "autotask"
    admin_token = "admin-token"  # noqa: S105 (the name of a kind of secret, not one)


_WHERE = {
    SecretKind.standard_webhooks: "ATRELAY_WEBFORM_WEBHOOK_SECRET or ATRELAY_MC_WEBHOOK_SECRET (one each), and give "
                                  "it to the partner who signs with it",
    SecretKind.autotask: "ATRELAY_AUTOTASK_WEBHOOK_SECRET; `atrelay autotask webhooks install` gives it to Autotask",
    SecretKind.admin_token: "ATRELAY_ADMIN_TOKEN (the dashboard and the admin API)",
}


@secret_app.command("new")
def new(
    kind: Annotated[SecretKind, typer.Option("--kind", help="standard-webhooks: whsec_ + base64 of 32 random bytes "
                                                            "(web form, Mission Control); autotask: 48 hex "
                                                            "characters (Autotask allows at most 64); admin-token")]
    = SecretKind.standard_webhooks,
) -> None:
    """Print a new random secret in the format its setting takes (and say which setting, on stderr)."""
    if kind == SecretKind.standard_webhooks:
        value = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    elif kind == SecretKind.autotask:
        value = secrets.token_hex(24)
    else:
        value = secrets.token_urlsafe(32)
    sys.stdout.write(value + "\n")  # alone on stdout: `VAR=$(atrelay secret new)` takes exactly it
    err.print(f"set it as {_WHERE[kind]}", highlight=False)
