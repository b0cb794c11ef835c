"""A usage record's quantity obeys tally.wire's decimal bounds in the database too.

The column stays unconstrained ``numeric``: exact, never rounded (a ``numeric(p, s)`` type
would round a value with more places silently instead of refusing it). The CHECK is the
grammar's bounds, below 10^38 and at most 18 places, so a value that slipped past the
service is refused, never stored. NOT VALID: rows written before are not re-checked.

Revision ID: ingest_0004_grammar
Revises: ingest_0003
"""

from alembic import op

revision = "ingest_0004_grammar"
down_revision = "ingest_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE ingest.usage_records ADD CONSTRAINT usage_records_quantity_bounded "
        "CHECK (abs(quantity) < 1e38 AND quantity = round(quantity, 18)) NOT VALID"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE ingest.usage_records DROP CONSTRAINT IF EXISTS usage_records_quantity_bounded")
