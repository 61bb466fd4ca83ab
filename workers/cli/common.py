"""What every `atrelay` command shares: the settings (checked once, one line per problem), the schema
check, and how a command fails. Kept apart from ``workers.cli.main`` so the command groups in their own
modules (``autotask``, ``shadow``) use the same checks without importing the main CLI."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import typer
from rich.text import Text

from workers.cli.output import make_console
from workers.settings import Settings, SettingsError, get_settings

__all__ = ["embedded_settings", "err", "fail", "require_schema", "settings"]

err = make_console(stderr=True, soft_wrap=True)


def fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def settings() -> Settings:
    """The settings, refused with one line when malformed, misspelt (environment or .env) or half-set."""
    from workers.settings import partial_autotask_credentials, unknown_variables

    try:
        found = get_settings()
    except SettingsError as exc:
        fail(str(exc))
    unknown = unknown_variables()
    if unknown:
        fail(f"unknown setting(s): {', '.join(unknown)}. Every variable is listed in infra/env.example")
    missing = partial_autotask_credentials(found)
    if missing:
        # Two of three would otherwise be ignored and the sandbox used instead of the tenant.
        fail(f"Autotask credentials are partly set: {', '.join(missing)} missing (set all three, or none "
             "for the sandbox)")
    from workers.logs import configure_logging

    configure_logging(found.log_level, json_lines=found.json_logs)
    return found


def embedded_settings() -> Settings:
    """The settings, completed with the sandboxes of a running `atrelay run` when none are configured."""
    from workers.cli.embedded import use_embedded

    used = use_embedded(settings())
    if used.note:
        err.print(Text(used.note))
    return used.settings


def require_schema(found: Settings) -> None:
    from pipelines.schema import SchemaOutOfDate, check_schema

    url = found.effective_database_url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        # Opening it would create an empty database here and advise `migrate`: say which var/ is meant.
        fail(f"no audit database at {url.removeprefix('sqlite:///')} (var folder {found.var_path}): run "
             "`atrelay migrate` first (or `atrelay run`), or set ATRELAY_VAR_DIR to the var/ folder it uses")
    try:
        check_schema(found.effective_database_url)
    except SchemaOutOfDate as exc:
        fail(str(exc))
