"""TimeZest poll state: the booked start time seen last (reschedules are seen by its change)

Revision ID: 0006_timezest
Revises: 0005
Create Date: 2026-11-27
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006_timezest'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable with no backfill: rows from before this revision learn their start on the next poll,
    # and a reschedule is only reported once a start has been recorded (never a guess).
    with op.batch_alter_table('timezest_requests') as batch:
        batch.add_column(sa.Column('selected_start_time', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('timezest_requests') as batch:
        batch.drop_column('selected_start_time')
