"""Usage per subscription: the subscription an entry is attributed to joins every bucket key.

'' is unattributed usage. Contributions keep their key (entry id, meter key: an entry
belongs to one subscription) and record the subscription; buckets, day roll-ups and distinct
values are keyed by it too, so each subscription's usage is exact and a customer's total is
the sum over its subscriptions (no entry is in two buckets: nothing is billed twice).

Revision ID: meter_0004
Revises: meter_0003
"""

from alembic import op

revision = "meter_0004"
down_revision = "meter_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("contributions", "buckets", "day_buckets", "bucket_uniques"):
        # Byte-order collation like the other key columns (meter_0003).
        op.execute(f"ALTER TABLE meter.{table} ADD COLUMN subscription_id text COLLATE \"C\" NOT NULL DEFAULT ''")
    op.execute("ALTER TABLE meter.buckets DROP CONSTRAINT buckets_pkey")
    op.execute(
        "ALTER TABLE meter.buckets ADD CONSTRAINT buckets_pkey "
        "PRIMARY KEY (customer_id, meter_key, window_start, dims_key, subscription_id)"
    )
    op.execute("ALTER TABLE meter.day_buckets DROP CONSTRAINT day_buckets_pkey")
    op.execute(
        "ALTER TABLE meter.day_buckets ADD CONSTRAINT day_buckets_pkey "
        "PRIMARY KEY (customer_id, meter_key, day, dims_key, subscription_id)"
    )
    op.execute("ALTER TABLE meter.bucket_uniques DROP CONSTRAINT bucket_uniques_pkey")
    op.execute(
        "ALTER TABLE meter.bucket_uniques ADD CONSTRAINT bucket_uniques_pkey "
        "PRIMARY KEY (customer_id, meter_key, window_start, dims_key, subscription_id, value)"
    )
    op.execute("ALTER TABLE meter.applier_state ADD COLUMN unattributed_entries bigint NOT NULL DEFAULT 0")


def downgrade() -> None:
    # Folding subscriptions back into one bucket would need a recompute; downgrade only an
    # empty meter schema.
    op.execute("ALTER TABLE meter.applier_state DROP COLUMN unattributed_entries")
    op.execute("ALTER TABLE meter.bucket_uniques DROP CONSTRAINT bucket_uniques_pkey")
    op.execute(
        "ALTER TABLE meter.bucket_uniques ADD CONSTRAINT bucket_uniques_pkey "
        "PRIMARY KEY (customer_id, meter_key, window_start, dims_key, value)"
    )
    op.execute("ALTER TABLE meter.day_buckets DROP CONSTRAINT day_buckets_pkey")
    op.execute(
        "ALTER TABLE meter.day_buckets ADD CONSTRAINT day_buckets_pkey PRIMARY KEY (customer_id, meter_key, day, dims_key)"
    )
    op.execute("ALTER TABLE meter.buckets DROP CONSTRAINT buckets_pkey")
    op.execute(
        "ALTER TABLE meter.buckets ADD CONSTRAINT buckets_pkey PRIMARY KEY (customer_id, meter_key, window_start, dims_key)"
    )
    for table in ("contributions", "buckets", "day_buckets", "bucket_uniques"):
        op.execute(f"ALTER TABLE meter.{table} DROP COLUMN subscription_id")
