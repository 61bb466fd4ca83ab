"""Schema migrations (Alembic) and the start-up check that refuses an out-of-date database."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from pipelines.db import engine_for

__all__ = ["SchemaOutOfDate", "alembic_config", "check_schema", "current_revision", "head_revision", "upgrade"]

_MIGRATIONS = Path(__file__).with_name("migrations")


class SchemaOutOfDate(Exception):
    """The audit database is not at the code's migration head."""


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url)
    return cfg


def head_revision(url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def current_revision(url: str) -> str | None:
    with engine_for(url).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(url: str) -> tuple[str | None, str | None]:
    """Apply every pending migration; return (revision before, revision after)."""
    before = current_revision(url)
    command.upgrade(alembic_config(url), "head")
    return before, current_revision(url)


def check_schema(url: str) -> None:
    """Raise :class:`SchemaOutOfDate` unless the database is at head."""
    current, head = current_revision(url), head_revision(url)
    if current != head:
        raise SchemaOutOfDate(
            f"the audit database is at revision {current or 'none (empty)'} but this version of atrelay "
            f"needs {head}; run `atrelay migrate` first"
        )
