"""Create the invoice schema (tables come in later revisions).

Revision ID: invoice_0001
Revises:
"""

from alembic import op

revision = "invoice_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute('CREATE SCHEMA IF NOT EXISTS "invoice"')


def downgrade() -> None:
    op.execute('DROP SCHEMA IF EXISTS "invoice" CASCADE')
