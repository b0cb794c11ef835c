"""SQLAlchemy tables of the catalog schema. Only services.catalog touches them."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

SCHEMA = "catalog"
metadata = MetaData(schema=SCHEMA)


def _ts(name: str, nullable: bool = False) -> Column:
    return Column(name, DateTime(timezone=True), nullable=nullable)


# Every change, in commit order: the feed behind GetCatalogRevision and WatchCatalog.
changes = Table(
    "changes",
    metadata,
    Column("revision", BigInteger, primary_key=True, autoincrement=True),
    Column("kind", Text, nullable=False),
    Column("entity_id", Text, nullable=False),
    _ts("changed_at"),
)

meters = Table(
    "meters",
    metadata,
    Column("id", Text, primary_key=True),
    Column("key", Text, nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("unit", Text, nullable=False),
    Column("event_type", Text, nullable=False, index=True),
    Column("aggregation", Text, nullable=False),
    Column("value_property", Text, nullable=False),
    Column("filters", JSONB, nullable=False),
    Column("group_by", JSONB, nullable=False),
    Column("description", Text, nullable=False),
    Column("archived", Boolean, nullable=False),
    Column("locked", Boolean, nullable=False),
    Column("allow_negative", Boolean, nullable=False, server_default="false"),
    _ts("created_at"),
    _ts("updated_at"),
)

products = Table(
    "products",
    metadata,
    Column("id", Text, primary_key=True),
    Column("key", Text, nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("archived", Boolean, nullable=False),
    _ts("created_at"),
    _ts("updated_at"),
)

plans = Table(
    "plans",
    metadata,
    Column("id", Text, primary_key=True),
    Column("key", Text, nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("archived", Boolean, nullable=False),
    Column("latest_version", Integer, nullable=False),
    _ts("created_at"),
    _ts("updated_at"),
)

# Published versions are immutable: rows are inserted, never updated.
plan_versions = Table(
    "plan_versions",
    metadata,
    Column("id", Text, primary_key=True),
    Column("plan_id", Text, ForeignKey("catalog.plans.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("name", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("product_key", Text, nullable=False),
    Column("currency", Text, nullable=False),
    Column("interval", Text, nullable=False),
    Column("interval_count", Integer, nullable=False),
    Column("charges", JSONB, nullable=False),
    _ts("published_at"),
    UniqueConstraint("plan_id", "version"),
)

# The meters each plan version's usage charges read; drives the meter edit lock.
plan_version_meters = Table(
    "plan_version_meters",
    metadata,
    Column("plan_version_id", Text, ForeignKey("catalog.plan_versions.id"), nullable=False),
    Column("meter_key", Text, nullable=False, index=True),
    PrimaryKeyConstraint("plan_version_id", "meter_key"),
)

customers = Table(
    "customers",
    metadata,
    Column("id", Text, primary_key=True),
    # NULL when the caller gave none; unique otherwise.
    Column("external_id", Text, nullable=True, unique=True),
    Column("name", Text, nullable=False),
    Column("email", Text, nullable=False),
    Column("timezone", Text, nullable=False),
    Column("currency", Text, nullable=False),
    Column("metadata", JSONB, nullable=False),
    Column("archived", Boolean, nullable=False),
    _ts("created_at"),
    _ts("updated_at"),
)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("id", Text, primary_key=True),
    Column("customer_id", Text, ForeignKey("catalog.customers.id"), nullable=False, index=True),
    _ts("start_time"),
    Column("anchor", Text, nullable=False),
    Column("cancel_at_period_end", Boolean, nullable=False),
    _ts("cancel_at", nullable=True),
    _ts("canceled_time", nullable=True),
    Column("metadata", JSONB, nullable=False),
    _ts("created_at"),
    _ts("updated_at"),
    # The caller's own reference; NULL when none was given, unique otherwise.
    Column("external_id", Text, nullable=True, unique=True),
)

# The plan version in force over [start_time, end_time); end_time NULL on the open phase.
subscription_phases = Table(
    "subscription_phases",
    metadata,
    Column("subscription_id", Text, ForeignKey("catalog.subscriptions.id"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("plan_version_id", Text, ForeignKey("catalog.plan_versions.id"), nullable=False, index=True),
    _ts("start_time"),
    _ts("end_time", nullable=True),
    # The phase's price overrides (PriceOverride as JSON, decimals as strings); [] for none.
    Column("price_overrides", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    PrimaryKeyConstraint("subscription_id", "seq"),
)
