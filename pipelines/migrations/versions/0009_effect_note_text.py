"""Effect ledger: the note text atrelay posted, for the dashboard's event page

Revision ID: 0009_note_text
Revises: 0008
Create Date: 2026-11-27
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009_note_text'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no backfill: notes posted before this revision were never kept, and re-rendering
    # them now could show a text that differs from what the technician saw.
    with op.batch_alter_table('effects') as batch:
        batch.add_column(sa.Column('note_text', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('effects') as batch:
        batch.drop_column('note_text')
