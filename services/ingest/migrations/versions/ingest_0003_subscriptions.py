"""Events and usage records carry the subscription their usage is attributed to.

'' means unattributed (no subscription named, none charging the usage when it arrived).
Adding a NOT NULL column with a constant default rewrites nothing (Postgres 11+).

Revision ID: ingest_0003
Revises: ingest_0002
"""

from alembic import op

revision = "ingest_0003"
down_revision = "ingest_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE ingest.events ADD COLUMN subscription_id text NOT NULL DEFAULT ''")
    op.execute("ALTER TABLE ingest.usage_records ADD COLUMN subscription_id text NOT NULL DEFAULT ''")


def downgrade() -> None:
    op.execute("ALTER TABLE ingest.usage_records DROP COLUMN IF EXISTS subscription_id")
    op.execute("ALTER TABLE ingest.events DROP COLUMN IF EXISTS subscription_id")
