"""Meters declare whether their value may be negative (tally.catalog.v1.Meter.allow_negative).

Existing meters keep the default, false: ingest then refuses negative values for them, as
RecordUsage always refused negative quantities.

Revision ID: catalog_0005_grammar
Revises: catalog_0004
"""

from alembic import op

revision = "catalog_0005_grammar"
down_revision = "catalog_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE catalog.meters ADD COLUMN allow_negative boolean NOT NULL DEFAULT false")


def downgrade() -> None:
    op.execute("ALTER TABLE catalog.meters DROP COLUMN IF EXISTS allow_negative")
