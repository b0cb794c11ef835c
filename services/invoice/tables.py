"""SQLAlchemy tables of the invoice schema. Only services.invoice touches them."""

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    MetaData,
    Numeric,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

SCHEMA = "invoice"
metadata = MetaData(schema=SCHEMA)


def _ts(name: str, nullable: bool = True) -> Column:
    return Column(name, DateTime(timezone=True), nullable=nullable)


# One row per subscription period and kind. The unique (subscription_id, period_start, kind) constraint is
# what makes period close idempotent across retries and replicas. Lines are stored as JSONB
# (decimal strings) with the invoice, so a finalized invoice is one immutable row; a trigger
# (migration invoice_0002) refuses any change to the content of a non-draft invoice.
invoices = Table(
    "invoices",
    metadata,
    Column("id", Text, primary_key=True),
    Column("number", Text, nullable=True, unique=True),
    Column("customer_id", Text, nullable=False),
    Column("subscription_id", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("currency", Text, nullable=False),
    _ts("period_start", nullable=False),
    _ts("period_end", nullable=False),
    Column("lines", JSONB, nullable=False),
    Column("subtotal", Numeric, nullable=False),
    Column("total", Numeric, nullable=False),
    Column("content_hash", Text, nullable=False, server_default=""),
    _ts("create_time", nullable=False),
    _ts("grace_end_time", nullable=False),
    _ts("finalize_time"),
    _ts("paid_time"),
    _ts("void_time"),
    Column("void_reason", Text, nullable=False, server_default=""),
    Column("customer_name", Text, nullable=False, server_default=""),
    Column("customer_email", Text, nullable=False, server_default=""),
    Column("customer_external_id", Text, nullable=False, server_default=""),
    # Usage of the period the invoice did not bill, and why (migration invoice_0003).
    Column("warnings", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    # PERIOD_START (in-advance fees, made when the period opens) or PERIOD_END (migration 0004).
    Column("kind", Text, nullable=False, server_default="PERIOD_END"),
    UniqueConstraint("subscription_id", "period_start", "kind", name="invoices_one_per_subscription_period"),
    Index("invoices_customer_idx", "customer_id", "create_time", "id"),
    Index("invoices_list_idx", "create_time", "id"),
    Index("invoices_due_drafts_idx", "grace_end_time", postgresql_where=text("status = 'DRAFT'")),
)

# Gapless human numbers: one counter row per sequence ("INV-2026"), incremented in the
# transaction that finalizes, so a rolled-back finalization leaves no hole.
number_counters = Table(
    "number_counters",
    metadata,
    Column("sequence", Text, primary_key=True),
    Column("last_value", BigInteger, nullable=False),
)
