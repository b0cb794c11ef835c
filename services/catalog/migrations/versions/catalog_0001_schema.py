"""Create the catalog schema (tables come in later revisions).

Revision ID: catalog_0001
Revises:
"""

from alembic import op

revision = "catalog_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute('CREATE SCHEMA IF NOT EXISTS "catalog"')


def downgrade() -> None:
    op.execute('DROP SCHEMA IF EXISTS "catalog" CASCADE')
