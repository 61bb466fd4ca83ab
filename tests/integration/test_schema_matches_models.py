"""The migrations build exactly the tables the models describe (one head, no drift), on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlmodel import SQLModel

import pipelines.alerts
import pipelines.audit
import pipelines.counters  # noqa: F401  (the metric totals table)
from pipelines.db import engine_for
from pipelines.schema import alembic_config


def test_one_migration_head(sqlite_url: str) -> None:
    heads = ScriptDirectory.from_config(alembic_config(sqlite_url)).get_heads()
    assert len(heads) == 1, f"several migration heads: {heads} (chain the newest after the other)"


def test_migrated_schema_matches_the_models(db_url: str) -> None:
    # db_url is migrated to head by its fixture
    with engine_for(db_url).connect() as conn:
        drift = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert drift == [], drift
