"""ops truth: process heartbeats, liveness incidents, per-URL alert deliveries and send leases, alert
severity, dead letters counted by alerts, small marks kept by the alert checks (issue 20)

Revision ID: 0013_ops_truth
Revises: 0012_ops_sessions
Create Date: 2026-12-05
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from pipelines.db import UTCDateTime

revision = '0013_ops_truth'
down_revision = '0012_ops_sessions'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('process_heartbeats',
    sa.Column('id', sa.String(length=160), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('host', sa.String(length=120), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('version', sa.String(length=32), nullable=False),
    sa.Column('started_at', UTCDateTime(), nullable=False),
    sa.Column('beat_at', UTCDateTime(), nullable=False),
    sa.Column('stopped_at', UTCDateTime(), nullable=True),
    sa.Column('ready', sa.Boolean(), nullable=False),
    sa.Column('problem', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_heartbeats_role_beat', 'process_heartbeats', ['role', 'beat_at'])
    op.create_table('liveness_incidents',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('opened_at', UTCDateTime(), nullable=False),
    sa.Column('cleared_at', UTCDateTime(), nullable=True),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('name'),
    )
    op.create_table('alert_deliveries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('alert_id', sa.Integer(), nullable=False),
    sa.Column('target', sa.String(length=16), nullable=False),
    sa.Column('label', sa.String(length=200), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_try_at', UTCDateTime(), nullable=True),
    sa.Column('sent_at', UTCDateTime(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['alert_id'], ['alerts.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('alert_id', 'target', name='uq_alert_deliveries_alert_target'),
    )
    op.create_table('alert_senders',
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('owner', sa.String(length=64), nullable=True),
    sa.Column('until', UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('kind'),
    )
    op.create_table('dead_letters_alerted',
    sa.Column('event_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('dead_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('event_id'),
    )
    op.create_table('ops_marks',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('value', sa.JSON(), nullable=False),
    sa.Column('at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('name'),
    )
    with op.batch_alter_table('alerts') as batch:
        batch.add_column(sa.Column('severity', sa.String(length=16), nullable=False, server_default='info'))


def downgrade() -> None:
    with op.batch_alter_table('alerts') as batch:
        batch.drop_column('severity')
    op.drop_table('ops_marks')
    op.drop_table('dead_letters_alerted')
    op.drop_table('alert_senders')
    op.drop_table('alert_deliveries')
    op.drop_table('liveness_incidents')
    op.drop_index('ix_heartbeats_role_beat', table_name='process_heartbeats')
    op.drop_table('process_heartbeats')
