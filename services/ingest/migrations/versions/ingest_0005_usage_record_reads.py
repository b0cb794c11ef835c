"""Usage records are readable: by id, and a customer's records by meter and instant.

GetUsageRecord finds a record by its idempotency key (already unique) or by its id; the list
walks a customer's records in (usage_time, usage_record_id) order, of one meter or of all.

Revision ID: ingest_0005
Revises: ingest_0004_grammar
"""

from alembic import op

revision = "ingest_0005"
down_revision = "ingest_0004_grammar"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE UNIQUE INDEX usage_records_id_key ON ingest.usage_records (usage_record_id)")
    op.execute(
        "CREATE INDEX usage_records_customer_meter_time_idx "
        "ON ingest.usage_records (customer_id, meter_key, usage_time, usage_record_id)"
    )
    op.execute(
        "CREATE INDEX usage_records_customer_time_idx ON ingest.usage_records (customer_id, usage_time, usage_record_id)"
    )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ingest.usage_records_customer_time_idx")
    op.execute("DROP INDEX IF EXISTS ingest.usage_records_customer_meter_time_idx")
    op.execute("DROP INDEX IF EXISTS ingest.usage_records_id_key")
