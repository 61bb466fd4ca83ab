"""Shadow mode: the periods the deployment ran in shadow mode, and the writes it would have made

Revision ID: 0015_shadow_mode
Revises: 0014_ticket_numbers
Create Date: 2026-12-06
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from pipelines.db import UTCDateTime

revision = '0015_shadow_mode'
down_revision = '0014_ticket_numbers'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'shadow_periods',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('started_at', UTCDateTime(), nullable=False),
        sa.Column('started_by', sa.String(length=160), nullable=False),
        sa.Column('ended_at', UTCDateTime(), nullable=True),
        sa.Column('ended_by', sa.String(length=160), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_table(
        'shadow_writes',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('event_id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=8), nullable=False),
        sa.Column('ticket_id', sa.BigInteger(), nullable=False),
        sa.Column('event_type', sa.String(length=64), nullable=False),
        sa.Column('from_status_id', sa.BigInteger(), nullable=True),
        sa.Column('to_status_id', sa.BigInteger(), nullable=True),
        sa.Column('to_status', sa.String(length=100), nullable=True),
        sa.Column('note_text', sa.Text(), nullable=True),
        sa.Column('at', UTCDateTime(), nullable=False),
        sa.Column('why', sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(['event_id'], ['inbound_events.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('event_id', 'kind', name='uq_shadow_writes_event_kind'),
    )
    op.create_index('ix_shadow_writes_ticket', 'shadow_writes', ['ticket_id'])


def downgrade() -> None:
    op.drop_index('ix_shadow_writes_ticket', table_name='shadow_writes')
    op.drop_table('shadow_writes')
    op.drop_table('shadow_periods')
