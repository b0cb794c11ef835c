"""SQLAlchemy tables of the ingest schema. Only services.ingest touches them.

They describe what migrations/versions/ingest_0002_log.py and ingest_0003 create; the hot path writes and
reads them with raw SQL in repository.py.
"""

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    LargeBinary,
    MetaData,
    Numeric,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB, TIMESTAMP, UUID
from sqlalchemy.types import UserDefinedType

SCHEMA = "ingest"
metadata = MetaData(schema=SCHEMA)


class Xid8(UserDefinedType):
    """Postgres xid8: the 64-bit id of the transaction that wrote a log row."""

    cache_ok = True

    def get_col_spec(self, **kw) -> str:
        return "xid8"


def _log_columns() -> list[Column]:
    return [
        Column("xid", Xid8(), primary_key=True),
        Column("position", BigInteger, primary_key=True),
        Column("ingest_time", TIMESTAMP(timezone=True), nullable=False),
    ]


events = Table(
    "events",
    metadata,
    *_log_columns(),
    Column("event_id", UUID, nullable=False),
    Column("idempotency_key", Text, nullable=False),
    Column("payload_hash", LargeBinary, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("customer_id", Text, nullable=False),
    Column("event_time", TIMESTAMP(timezone=True), nullable=False),
    Column("properties", LargeBinary, nullable=False),
    Column("metered", Boolean, nullable=False),
    # '' when unattributed (migration ingest_0003).
    Column("subscription_id", Text, nullable=False, server_default=""),
    UniqueConstraint("idempotency_key", name="events_idempotency_key_key"),
)

usage_records = Table(
    "usage_records",
    metadata,
    *_log_columns(),
    Column("usage_record_id", UUID, nullable=False),
    Column("idempotency_key", Text, nullable=False),
    Column("payload_hash", LargeBinary, nullable=False),
    Column("customer_id", Text, nullable=False),
    Column("meter_key", Text, nullable=False),
    Column("quantity", Numeric, nullable=False),
    Column("memo", Text, nullable=False),
    Column("usage_time", TIMESTAMP(timezone=True), nullable=False),
    Column("range_start", TIMESTAMP(timezone=True)),
    Column("range_end", TIMESTAMP(timezone=True)),
    Column("dimensions", JSONB, nullable=False),
    Column("subscription_id", Text, nullable=False, server_default=""),
    UniqueConstraint("idempotency_key", name="usage_records_idempotency_key_key"),
)

voids = Table(
    "voids",
    metadata,
    *_log_columns(),
    Column("event_xid", Xid8(), nullable=False),
    Column("event_position", BigInteger, nullable=False),
    Column("reason", Text, nullable=False),
    UniqueConstraint("event_xid", "event_position", name="voids_event_key"),
)
