"""Ticket state: the last read of each ticket, shared by runs while fresh (pipelines.ticket_reads);
effects indexed by ticket

Revision ID: 0010_ticket_reads
Revises: 0009_note_text
Create Date: 2026-11-27
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from pipelines.db import UTCDateTime

revision = '0010_ticket_reads'
down_revision = '0009_note_text'
branch_labels = None
depends_on = None

_COLUMNS = ('read_status_id', 'read_activity_at', 'read_at', 'read_dropped_at', 'reading_until')


def upgrade() -> None:
    # All nullable and empty: a ticket without a read is simply read by the next run that needs it.
    with op.batch_alter_table('ticket_state') as batch:
        batch.add_column(sa.Column('read_status_id', sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column('read_activity_at', UTCDateTime(), nullable=True))
        batch.add_column(sa.Column('read_at', UTCDateTime(), nullable=True))
        batch.add_column(sa.Column('read_dropped_at', UTCDateTime(), nullable=True))
        batch.add_column(sa.Column('reading_until', UTCDateTime(), nullable=True))
    # A shared read is not trusted while any write to the ticket is unconfirmed: looked up by ticket.
    op.create_index('ix_effects_ticket', 'effects', ['ticket_id'])


def downgrade() -> None:
    op.drop_index('ix_effects_ticket', table_name='effects')
    with op.batch_alter_table('ticket_state') as batch:
        for name in _COLUMNS:
            batch.drop_column(name)
