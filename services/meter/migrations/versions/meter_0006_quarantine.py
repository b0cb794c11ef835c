"""Quarantined log entries: entries the applier could not process, set aside with the reason.

Written in the transaction that moves the applier's cursor past them, so each is skipped
exactly once and nothing is lost silently: GetMeterStatus and /metrics show them.

Revision ID: meter_0006_runtime
Revises: meter_0005_grammar
"""

from alembic import op

revision = "meter_0006_runtime"
down_revision = "meter_0005_grammar"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE meter.quarantined_entries (
            position bigint PRIMARY KEY,
            entry_id text NOT NULL,
            kind text NOT NULL,
            reason text NOT NULL,
            quarantined_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE meter.quarantined_entries")
