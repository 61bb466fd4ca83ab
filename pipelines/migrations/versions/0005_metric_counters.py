"""Running totals for /metrics, so a scrape reads only what is new

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from pipelines.counters import fold
from pipelines.db import utcnow

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('metric_counters',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('labels', sa.String(length=400), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('name', 'labels')
    )
    # Count the existing history once, here, so no scrape ever has to (the live tail past the cursor
    # is what scrapes read).
    fold(op.get_bind(), utcnow())


def downgrade() -> None:
    op.drop_table('metric_counters')
