"""lease owner: renewals and writes check which run holds an event's lease

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('inbound_events') as batch:
        batch.add_column(sa.Column('lease_owner', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('inbound_events') as batch:
        batch.drop_column('lease_owner')
