"""Create the meter schema (tables come in later revisions).

Revision ID: meter_0001
Revises:
"""

from alembic import op

revision = "meter_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute('CREATE SCHEMA IF NOT EXISTS "meter"')


def downgrade() -> None:
    op.execute('DROP SCHEMA IF EXISTS "meter" CASCADE')
