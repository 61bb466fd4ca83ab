"""The ticket's last verified write: what lets the write gate skip a TicketHistory read it cannot need

Revision ID: 0016_quiet_writes
Revises: 0015_shadow_mode
Create Date: 2026-12-02
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from pipelines.db import UTCDateTime

revision = '0016_quiet_writes'
down_revision = '0015_shadow_mode'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('ticket_state') as batch:
        batch.add_column(sa.Column('quiet_since', UTCDateTime(), nullable=True))
        batch.add_column(sa.Column('quiet_at', UTCDateTime(), nullable=True))
        batch.add_column(sa.Column('quiet_event_id', sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column('quiet_status_id', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('ticket_state') as batch:
        batch.drop_column('quiet_status_id')
        batch.drop_column('quiet_event_id')
        batch.drop_column('quiet_at')
        batch.drop_column('quiet_since')
