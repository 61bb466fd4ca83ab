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


def test_every_table_a_run_fills_is_emptied_between_tests() -> None:
    """Tests that share a database (PostgreSQL, the model test's examples) empty DATA_TABLES between them: a
    new table left out leaks one test's rows into the next (a partner sighting did, making a tenant where
    TimeZest never writes look as if it did). The tables kept on purpose: the audit chain's anchor (reset in
    place) and the deployment's secrets (the same for a deployment's whole life)."""
    from tests.conftest import DATA_TABLES

    kept = {"audit_anchor", "deployment_secrets"}
    assert set(SQLModel.metadata.tables) - kept == set(DATA_TABLES), (
        set(SQLModel.metadata.tables) - kept ^ set(DATA_TABLES))
