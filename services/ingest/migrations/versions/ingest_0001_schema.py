"""Create the ingest schema (tables come in later revisions).

Revision ID: ingest_0001
Revises:
"""

from alembic import op

revision = "ingest_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute('CREATE SCHEMA IF NOT EXISTS "ingest"')


def downgrade() -> None:
    op.execute('DROP SCHEMA IF EXISTS "ingest" CASCADE')
