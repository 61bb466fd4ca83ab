"""deployment secrets: values every machine of one deployment shares (the note-marker key)

Revision ID: 0007
Revises: 0006_timezest
Create Date: 2026-11-26
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0007'
down_revision = '0006_timezest'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('deployment_secrets',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('value', sa.String(length=128), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )


def downgrade() -> None:
    op.drop_table('deployment_secrets')
