"""Ticket numbers resolved in batches (number -> id, kept: it never changes); shared reads keep the
whole ticket as read (callout runs act on it, and the guards need its due date)

Revision ID: 0014_ticket_numbers
Revises: 0013_ops_truth
Create Date: 2026-12-02
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from pipelines.db import UTCDateTime

revision = '0014_ticket_numbers'
down_revision = '0013_ops_truth'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'ticket_numbers',
        sa.Column('number', sa.String(50), primary_key=True),
        sa.Column('ticket_id', sa.BigInteger(), nullable=True),
        # A run is asking Autotask for this number now (others wait for it rather than ask again).
        sa.Column('resolving_until', UTCDateTime(), nullable=True),
        sa.Column('resolved_at', UTCDateTime(), nullable=True),
    )
    with op.batch_alter_table('ticket_state') as batch:
        batch.add_column(sa.Column('read_item', sa.JSON(), nullable=True))
    # Waiting events that name their ticket by number are found by it.
    op.create_index('ix_inbound_ticket_number', 'inbound_events', ['ticket_number'])


def downgrade() -> None:
    op.drop_index('ix_inbound_ticket_number', table_name='inbound_events')
    with op.batch_alter_table('ticket_state') as batch:
        batch.drop_column('read_item')
    op.drop_table('ticket_numbers')
