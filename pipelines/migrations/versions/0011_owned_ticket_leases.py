"""Owned ticket leases (a run releases or renews only a lease it holds), a crash count per event, and
the last status change an effect's decision knew of

Revision ID: 0011_owned_leases
Revises: 0010_ticket_reads
Create Date: 2026-12-02
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011_owned_leases'
down_revision = '0010_ticket_reads'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The run's owner token, as on inbound_events: keyed by the event id alone, a run that lost its
    # event to another worker could release that worker's ticket lease on its way out.
    with op.batch_alter_table('ticket_state') as batch:
        batch.add_column(sa.Column('lease_owner', sa.String(64), nullable=True))
    # Runs that ended in an unexpected exception: past ATRELAY_MAX_CRASHES the event is dead-lettered.
    with op.batch_alter_table('inbound_events') as batch:
        batch.add_column(sa.Column('crashes', sa.Integer(), nullable=False, server_default='0'))
    # Which recorded status change was the newest when an event decided to write: two reports of one
    # escalation are told from two escalations by what the ticket did between them, in recording order.
    # A duplicate report of an escalation names the report it pairs with (one per channel: MC's webhook
    # and the status MC set are one escalation; a second webhook in the same stay is another).
    with op.batch_alter_table('effects') as batch:
        batch.add_column(sa.Column('seen_change_id', sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column('duplicate_of', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('effects') as batch:
        batch.drop_column('duplicate_of')
        batch.drop_column('seen_change_id')
    with op.batch_alter_table('inbound_events') as batch:
        batch.drop_column('crashes')
    with op.batch_alter_table('ticket_state') as batch:
        batch.drop_column('lease_owner')
