"""Autotask as an event source: observed ticket status, status changes seen in Autotask

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
import pipelines.db


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('ticket_status_changes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('ticket_id', sa.BigInteger(), nullable=False),
    sa.Column('from_status_id', sa.BigInteger(), nullable=True),
    sa.Column('to_status_id', sa.BigInteger(), nullable=False),
    sa.Column('changed_at', pipelines.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('by_resource_id', sa.BigInteger(), nullable=True),
    sa.Column('by_atrelay', sa.Boolean(), nullable=False),
    sa.Column('via', sa.String(length=16), nullable=False),
    sa.Column('event_id', sa.BigInteger(), nullable=True),
    sa.Column('recorded_at', pipelines.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_status_changes_ticket_changed', 'ticket_status_changes', ['ticket_id', 'changed_at'],
                    unique=False)
    with op.batch_alter_table('ticket_state') as batch:
        batch.add_column(sa.Column('observed_status_id', sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column('observed_at', pipelines.db.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('ticket_state') as batch:
        batch.drop_column('observed_at')
        batch.drop_column('observed_status_id')
    op.drop_index('ix_status_changes_ticket_changed', table_name='ticket_status_changes')
    op.drop_table('ticket_status_changes')
