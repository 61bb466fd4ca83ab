"""When atrelay last saw a partner (TimeZest's PSA actions) write to the tenant's tickets

Revision ID: 0017_partner_sightings
Revises: 0016_quiet_writes
Create Date: 2026-12-03
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from pipelines.db import UTCDateTime

revision = '0017_partner_sightings'
down_revision = '0016_quiet_writes'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'partner_sightings',
        sa.Column('name', sa.String(length=32), nullable=False),
        sa.Column('last_seen_at', UTCDateTime(), nullable=False),
        sa.Column('ticket_id', sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint('name'),
    )


def downgrade() -> None:
    op.drop_table('partner_sightings')
