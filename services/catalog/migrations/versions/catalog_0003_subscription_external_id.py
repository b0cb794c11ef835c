"""Subscriptions get the caller's own reference (external_id), unique when given.

Revision ID: catalog_0003
Revises: catalog_0002
"""

from alembic import op

revision = "catalog_0003"
down_revision = "catalog_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE catalog.subscriptions ADD COLUMN external_id text")
    op.execute(
        "ALTER TABLE catalog.subscriptions ADD CONSTRAINT subscriptions_external_id_key UNIQUE (external_id)"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE catalog.subscriptions DROP COLUMN IF EXISTS external_id")
