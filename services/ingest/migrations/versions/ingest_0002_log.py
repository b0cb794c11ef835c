"""Events, usage records and voids: one ordered, deduplicated log.

Every row carries the id of the transaction that wrote it (``xid``, xid8) and the log
position it took from one shared sequence. Readers serve rows in (xid, position) order and
only below ``pg_snapshot_xmin(pg_current_snapshot())``, so a transaction that commits late
can never be skipped (see services/ingest/README.md).

Revision ID: ingest_0002
Revises: ingest_0001
"""

from alembic import op

revision = "ingest_0002"
down_revision = "ingest_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE SEQUENCE ingest.log_position_seq AS bigint")
    op.execute(
        """
        CREATE TABLE ingest.events (
            xid xid8 NOT NULL,
            position bigint NOT NULL DEFAULT nextval('ingest.log_position_seq'),
            ingest_time timestamptz NOT NULL,
            event_id uuid NOT NULL DEFAULT gen_random_uuid(),
            idempotency_key text NOT NULL,
            payload_hash bytea NOT NULL,
            event_type text NOT NULL,
            customer_id text NOT NULL,
            event_time timestamptz NOT NULL,
            -- The properties Struct, serialized deterministically (protobuf wire format).
            properties bytea NOT NULL,
            -- False when no meter read the event type when it was stored.
            metered boolean NOT NULL,
            CONSTRAINT events_pkey PRIMARY KEY (xid, position),
            CONSTRAINT events_idempotency_key_key UNIQUE (idempotency_key)
        )
        """
    )
    op.execute("CREATE INDEX events_unmetered_type_idx ON ingest.events (event_type) WHERE NOT metered")
    op.execute(
        """
        CREATE TABLE ingest.usage_records (
            xid xid8 NOT NULL,
            position bigint NOT NULL DEFAULT nextval('ingest.log_position_seq'),
            ingest_time timestamptz NOT NULL,
            usage_record_id uuid NOT NULL DEFAULT gen_random_uuid(),
            idempotency_key text NOT NULL,
            payload_hash bytea NOT NULL,
            customer_id text NOT NULL,
            meter_key text NOT NULL,
            quantity numeric NOT NULL CHECK (quantity >= 0),
            memo text NOT NULL DEFAULT '',
            usage_time timestamptz NOT NULL,
            range_start timestamptz,
            range_end timestamptz,
            dimensions jsonb NOT NULL DEFAULT '{}'::jsonb,
            CONSTRAINT usage_records_pkey PRIMARY KEY (xid, position),
            CONSTRAINT usage_records_idempotency_key_key UNIQUE (idempotency_key),
            CONSTRAINT usage_records_range_check CHECK (range_end IS NULL OR range_end > range_start)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE ingest.voids (
            xid xid8 NOT NULL,
            position bigint NOT NULL DEFAULT nextval('ingest.log_position_seq'),
            ingest_time timestamptz NOT NULL,
            -- The voided event, by its primary key in ingest.events.
            event_xid xid8 NOT NULL,
            event_position bigint NOT NULL,
            reason text NOT NULL DEFAULT '',
            CONSTRAINT voids_pkey PRIMARY KEY (xid, position),
            CONSTRAINT voids_event_key UNIQUE (event_xid, event_position)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS ingest.voids")
    op.execute("DROP TABLE IF EXISTS ingest.usage_records")
    op.execute("DROP TABLE IF EXISTS ingest.events")
    op.execute("DROP SEQUENCE IF EXISTS ingest.log_position_seq")
