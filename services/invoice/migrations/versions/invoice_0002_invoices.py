"""Invoices (one per subscription period), gapless number counters, immutability trigger.

Revision ID: invoice_0002
Revises: invoice_0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "invoice_0002"
down_revision = "invoice_0001"
branch_labels = None
depends_on = None

SCHEMA = "invoice"


def _ts(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "invoices",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("number", sa.Text, nullable=True, unique=True),
        sa.Column("customer_id", sa.Text, nullable=False),
        sa.Column("subscription_id", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("currency", sa.Text, nullable=False),
        _ts("period_start", nullable=False),
        _ts("period_end", nullable=False),
        sa.Column("lines", JSONB, nullable=False),
        sa.Column("subtotal", sa.Numeric, nullable=False),
        sa.Column("total", sa.Numeric, nullable=False),
        sa.Column("content_hash", sa.Text, nullable=False, server_default=""),
        _ts("create_time", nullable=False),
        _ts("grace_end_time", nullable=False),
        _ts("finalize_time"),
        _ts("paid_time"),
        _ts("void_time"),
        sa.Column("void_reason", sa.Text, nullable=False, server_default=""),
        sa.Column("customer_name", sa.Text, nullable=False, server_default=""),
        sa.Column("customer_email", sa.Text, nullable=False, server_default=""),
        sa.Column("customer_external_id", sa.Text, nullable=False, server_default=""),
        sa.UniqueConstraint("subscription_id", "period_start", name="invoices_one_per_subscription_period"),
        sa.CheckConstraint("status IN ('DRAFT', 'FINALIZED', 'PAID', 'VOID')", name="invoices_status_known"),
        sa.CheckConstraint("status = 'DRAFT' OR (number IS NOT NULL AND content_hash <> '')", name="invoices_final_numbered"),
        schema=SCHEMA,
    )
    op.create_index("invoices_customer_idx", "invoices", ["customer_id", "create_time", "id"], schema=SCHEMA)
    op.create_index("invoices_list_idx", "invoices", ["create_time", "id"], schema=SCHEMA)
    op.create_index(
        "invoices_due_drafts_idx", "invoices", ["grace_end_time"], schema=SCHEMA,
        postgresql_where=sa.text("status = 'DRAFT'"),
    )
    op.create_table(
        "number_counters",
        sa.Column("sequence", sa.Text, primary_key=True),
        sa.Column("last_value", sa.BigInteger, nullable=False),
        schema=SCHEMA,
    )
    # A finalized invoice never changes: only FINALIZED -> PAID | VOID (with their times and
    # reason) may be written, and a non-draft invoice cannot be deleted.
    op.execute(
        """
        CREATE FUNCTION invoice.guard_finalized_invoice() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF TG_OP = 'DELETE' THEN
            IF OLD.status <> 'DRAFT' THEN
              RAISE EXCEPTION 'invoice % is % and cannot be deleted', OLD.id, OLD.status
                USING ERRCODE = 'integrity_constraint_violation';
            END IF;
            RETURN OLD;
          END IF;
          IF OLD.status = 'DRAFT' THEN
            RETURN NEW;
          END IF;
          IF NOT (OLD.status = 'FINALIZED' AND NEW.status IN ('FINALIZED', 'PAID', 'VOID')) THEN
            RAISE EXCEPTION 'invoice % cannot go from % to %', OLD.id, OLD.status, NEW.status
              USING ERRCODE = 'integrity_constraint_violation';
          END IF;
          IF (NEW.id, NEW.number, NEW.customer_id, NEW.subscription_id, NEW.currency, NEW.period_start,
              NEW.period_end, NEW.lines, NEW.subtotal, NEW.total, NEW.content_hash, NEW.create_time,
              NEW.grace_end_time, NEW.finalize_time, NEW.customer_name, NEW.customer_email,
              NEW.customer_external_id)
             IS DISTINCT FROM
             (OLD.id, OLD.number, OLD.customer_id, OLD.subscription_id, OLD.currency, OLD.period_start,
              OLD.period_end, OLD.lines, OLD.subtotal, OLD.total, OLD.content_hash, OLD.create_time,
              OLD.grace_end_time, OLD.finalize_time, OLD.customer_name, OLD.customer_email,
              OLD.customer_external_id) THEN
            RAISE EXCEPTION 'invoice % is finalized; its content never changes', OLD.id
              USING ERRCODE = 'integrity_constraint_violation';
          END IF;
          RETURN NEW;
        END $$;
        """
    )
    op.execute(
        "CREATE TRIGGER invoices_immutable BEFORE UPDATE OR DELETE ON invoice.invoices "
        "FOR EACH ROW EXECUTE FUNCTION invoice.guard_finalized_invoice()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS invoices_immutable ON invoice.invoices")
    op.execute("DROP FUNCTION IF EXISTS invoice.guard_finalized_invoice()")
    op.drop_table("number_counters", schema=SCHEMA)
    op.drop_table("invoices", schema=SCHEMA)
