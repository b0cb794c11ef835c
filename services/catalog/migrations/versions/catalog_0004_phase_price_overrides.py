"""Subscription phases get their price overrides (JSON; [] for none).

Revision ID: catalog_0004
Revises: catalog_0003
"""

from alembic import op

revision = "catalog_0004"
down_revision = "catalog_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE catalog.subscription_phases ADD COLUMN price_overrides jsonb NOT NULL DEFAULT '[]'::jsonb"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE catalog.subscription_phases DROP COLUMN IF EXISTS price_overrides")
