"""Contributions, one-minute buckets, distinct values, applier state, backfills, thresholds, alerts.

Revision ID: meter_0002
Revises: meter_0001
"""

from alembic import op

revision = "meter_0002"
down_revision = "meter_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # What each log entry added to each meter: the unit of exactly-once (primary key) and the
    # source from which windows are recomputed after a void.
    op.execute(
        """
        CREATE TABLE meter.contributions (
            entry_id text NOT NULL,
            meter_key text NOT NULL,
            customer_id text NOT NULL,
            dims_key text NOT NULL,
            ts timestamptz NOT NULL,
            window_start timestamptz NOT NULL,
            value numeric NOT NULL,
            count numeric NOT NULL,
            unique_value text,
            position bigint NOT NULL,
            CONSTRAINT contributions_pkey PRIMARY KEY (entry_id, meter_key)
        )
        """
    )
    op.execute("CREATE INDEX contributions_customer_meter_ts_idx ON meter.contributions (customer_id, meter_key, ts)")
    op.execute(
        """
        CREATE TABLE meter.buckets (
            customer_id text NOT NULL,
            meter_key text NOT NULL,
            window_start timestamptz NOT NULL,
            dims_key text NOT NULL,
            dims jsonb NOT NULL,
            count numeric NOT NULL,
            total numeric NOT NULL,
            minimum numeric NOT NULL,
            maximum numeric NOT NULL,
            latest_ts timestamptz NOT NULL,
            latest_id text NOT NULL,
            latest_value numeric NOT NULL,
            first_ts timestamptz NOT NULL,
            -- WEIGHTED_SUM: integral of value x seconds from first_ts to the window's end.
            integral numeric NOT NULL,
            CONSTRAINT buckets_pkey PRIMARY KEY (customer_id, meter_key, window_start, dims_key)
        )
        """
    )
    # Day roll-ups (UTC days) of the minute buckets, so a month reads ~30 rows, not ~40,000.
    op.execute(
        """
        CREATE TABLE meter.day_buckets (
            customer_id text NOT NULL,
            meter_key text NOT NULL,
            day timestamptz NOT NULL,
            dims_key text NOT NULL,
            dims jsonb NOT NULL,
            count numeric NOT NULL,
            total numeric NOT NULL,
            minimum numeric NOT NULL,
            maximum numeric NOT NULL,
            latest_ts timestamptz NOT NULL,
            latest_id text NOT NULL,
            latest_value numeric NOT NULL,
            CONSTRAINT day_buckets_pkey PRIMARY KEY (customer_id, meter_key, day, dims_key)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE meter.bucket_uniques (
            customer_id text NOT NULL,
            meter_key text NOT NULL,
            window_start timestamptz NOT NULL,
            dims_key text NOT NULL,
            value text NOT NULL,
            dims jsonb NOT NULL,
            CONSTRAINT bucket_uniques_pkey PRIMARY KEY (customer_id, meter_key, window_start, dims_key, value)
        )
        """
    )
    # Tombstones: a voided event is never counted again, whatever order a replay sees.
    op.execute(
        """
        CREATE TABLE meter.voided_entries (
            entry_id text PRIMARY KEY,
            position bigint NOT NULL,
            void_time timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE meter.applier_state (
            consumer text PRIMARY KEY,
            cursor text NOT NULL DEFAULT '',
            applied_position bigint NOT NULL DEFAULT 0,
            applied_ingest_time timestamptz,
            applied_watermark timestamptz,
            head_position bigint NOT NULL DEFAULT 0,
            head_ingest_time timestamptz,
            caught_up boolean NOT NULL DEFAULT false,
            entries_applied bigint NOT NULL DEFAULT 0,
            unmetered_events bigint NOT NULL DEFAULT 0,
            unknown_meter_records bigint NOT NULL DEFAULT 0,
            unknown_customer_entries bigint NOT NULL DEFAULT 0,
            unusable_value_events bigint NOT NULL DEFAULT 0,
            last_apply_time timestamptz
        )
        """
    )
    op.execute("INSERT INTO meter.applier_state (consumer) VALUES ('main')")
    op.execute(
        """
        CREATE TABLE meter.backfills (
            id text PRIMARY KEY,
            meter_key text NOT NULL,
            state text NOT NULL,
            cursor text NOT NULL DEFAULT '',
            position bigint NOT NULL DEFAULT 0,
            target_position bigint NOT NULL DEFAULT 0,
            entries_applied bigint NOT NULL DEFAULT 0,
            error text NOT NULL DEFAULT '',
            create_time timestamptz NOT NULL DEFAULT now(),
            finish_time timestamptz
        )
        """
    )
    op.execute("CREATE UNIQUE INDEX backfills_one_running_idx ON meter.backfills (meter_key) WHERE state = 'running'")
    op.execute(
        """
        CREATE TABLE meter.thresholds (
            id text PRIMARY KEY,
            meter_key text NOT NULL,
            plan_key text,
            customer_id text,
            absolute_units numeric,
            percent_of_included numeric,
            name text NOT NULL DEFAULT '',
            create_time timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT thresholds_scope_check CHECK ((plan_key IS NULL) <> (customer_id IS NULL)),
            CONSTRAINT thresholds_level_check CHECK ((absolute_units IS NULL) <> (percent_of_included IS NULL))
        )
        """
    )
    op.execute("CREATE INDEX thresholds_meter_idx ON meter.thresholds (meter_key)")
    op.execute(
        """
        CREATE TABLE meter.alerts (
            sequence bigserial NOT NULL UNIQUE,
            id text PRIMARY KEY,
            threshold_id text NOT NULL,
            customer_id text NOT NULL,
            meter_key text NOT NULL,
            period_start timestamptz NOT NULL,
            period_end timestamptz NOT NULL,
            threshold_units numeric NOT NULL,
            usage numeric NOT NULL,
            fire_time timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT alerts_once_per_period_key UNIQUE (threshold_id, customer_id, period_start)
        )
        """
    )
    op.execute("CREATE INDEX alerts_customer_idx ON meter.alerts (customer_id, sequence)")


def downgrade() -> None:
    for table in ("alerts", "thresholds", "backfills", "applier_state", "voided_entries", "bucket_uniques", "day_buckets", "buckets", "contributions"):
        op.execute(f"DROP TABLE IF EXISTS meter.{table}")
