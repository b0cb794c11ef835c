"""Catalog entities and the change feed.

Revision ID: catalog_0002
Revises: catalog_0001
"""

from alembic import op

revision = "catalog_0002"
down_revision = "catalog_0001"
branch_labels = None
depends_on = None

TABLES = """
CREATE TABLE catalog.changes (
    revision bigserial PRIMARY KEY,
    kind text NOT NULL,
    entity_id text NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE catalog.meters (
    id text PRIMARY KEY,
    key text NOT NULL UNIQUE,
    name text NOT NULL,
    unit text NOT NULL,
    event_type text NOT NULL,
    aggregation text NOT NULL,
    value_property text NOT NULL,
    filters jsonb NOT NULL,
    group_by jsonb NOT NULL,
    description text NOT NULL,
    archived boolean NOT NULL,
    locked boolean NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE INDEX ix_meters_event_type ON catalog.meters (event_type);
CREATE TABLE catalog.products (
    id text PRIMARY KEY,
    key text NOT NULL UNIQUE,
    name text NOT NULL,
    description text NOT NULL,
    archived boolean NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE TABLE catalog.plans (
    id text PRIMARY KEY,
    key text NOT NULL UNIQUE,
    name text NOT NULL,
    archived boolean NOT NULL,
    latest_version integer NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE TABLE catalog.plan_versions (
    id text PRIMARY KEY,
    plan_id text NOT NULL REFERENCES catalog.plans (id),
    version integer NOT NULL,
    name text NOT NULL,
    description text NOT NULL,
    product_key text NOT NULL,
    currency text NOT NULL,
    interval text NOT NULL,
    interval_count integer NOT NULL,
    charges jsonb NOT NULL,
    published_at timestamptz NOT NULL,
    UNIQUE (plan_id, version)
);
CREATE TABLE catalog.plan_version_meters (
    plan_version_id text NOT NULL REFERENCES catalog.plan_versions (id),
    meter_key text NOT NULL,
    PRIMARY KEY (plan_version_id, meter_key)
);
CREATE INDEX ix_plan_version_meters_meter_key ON catalog.plan_version_meters (meter_key);
CREATE TABLE catalog.customers (
    id text PRIMARY KEY,
    external_id text UNIQUE,
    name text NOT NULL,
    email text NOT NULL,
    timezone text NOT NULL,
    currency text NOT NULL,
    metadata jsonb NOT NULL,
    archived boolean NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE TABLE catalog.subscriptions (
    id text PRIMARY KEY,
    customer_id text NOT NULL REFERENCES catalog.customers (id),
    start_time timestamptz NOT NULL,
    anchor text NOT NULL,
    cancel_at_period_end boolean NOT NULL,
    cancel_at timestamptz,
    canceled_time timestamptz,
    metadata jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE INDEX ix_subscriptions_customer_id ON catalog.subscriptions (customer_id);
CREATE TABLE catalog.subscription_phases (
    subscription_id text NOT NULL REFERENCES catalog.subscriptions (id),
    seq integer NOT NULL,
    plan_version_id text NOT NULL REFERENCES catalog.plan_versions (id),
    start_time timestamptz NOT NULL,
    end_time timestamptz,
    PRIMARY KEY (subscription_id, seq)
);
CREATE INDEX ix_subscription_phases_plan_version_id ON catalog.subscription_phases (plan_version_id);
"""


def upgrade() -> None:
    for statement in TABLES.split(";"):
        if statement.strip():
            op.execute(statement)


def downgrade() -> None:
    for table in (
        "subscription_phases",
        "subscriptions",
        "customers",
        "plan_version_meters",
        "plan_versions",
        "plans",
        "products",
        "meters",
        "changes",
    ):
        op.execute(f"DROP TABLE IF EXISTS catalog.{table}")
