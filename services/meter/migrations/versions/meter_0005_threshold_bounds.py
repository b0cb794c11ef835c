"""A threshold's level obeys tally.wire's decimal bounds in the database too.

The columns stay unconstrained ``numeric`` (exact, never rounded); the CHECK refuses what
the grammar refuses (10^38 or more, more than 18 places). NOT VALID: rows written before
are not re-checked. Contributions and buckets get no such check on purpose: they hold sums
and usage quantities recorded before the bounds, and a refused insert there would stall the
applier for everyone.

Revision ID: meter_0005_grammar
Revises: meter_0004
"""

from alembic import op

revision = "meter_0005_grammar"
down_revision = "meter_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for column in ("absolute_units", "percent_of_included"):
        op.execute(
            f"ALTER TABLE meter.thresholds ADD CONSTRAINT thresholds_{column}_bounded "
            f"CHECK ({column} IS NULL OR (abs({column}) < 1e38 AND {column} = round({column}, 18))) NOT VALID"
        )


def downgrade() -> None:
    for column in ("absolute_units", "percent_of_included"):
        op.execute(f"ALTER TABLE meter.thresholds DROP CONSTRAINT IF EXISTS thresholds_{column}_bounded")
