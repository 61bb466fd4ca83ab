"""ops_sessions: dashboard sign-ins kept server-side (sign-out and expiry hold on every ingress process)

Revision ID: 0012_ops_sessions
Revises: 0011_owned_leases
Create Date: 2026-12-03
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from pipelines.db import UTCDateTime

revision = '0012_ops_sessions'
down_revision = '0011_owned_leases'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('ops_sessions',
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('key_id', sa.String(length=16), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('expires_at', UTCDateTime(), nullable=False),
    sa.Column('ended_at', UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('digest'),
    )
    op.create_index(op.f('ix_ops_sessions_expires_at'), 'ops_sessions', ['expires_at'])


def downgrade() -> None:
    op.drop_index(op.f('ix_ops_sessions_expires_at'), table_name='ops_sessions')
    op.drop_table('ops_sessions')
