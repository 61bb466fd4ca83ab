"""Alembic environment: the URL comes from the caller (``atrelay migrate``), never from a file."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import pipelines.alerts  # the alerts table
import pipelines.audit  # registers the audit tables on SQLModel.metadata
import pipelines.counters  # noqa: F401  (the metric totals table)
from pipelines.db import engine_for

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url, "sqlalchemy.url must be set by the caller"

with engine_for(url).connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
