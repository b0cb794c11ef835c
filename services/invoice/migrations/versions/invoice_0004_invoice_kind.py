"""Invoice kind: a period has a PERIOD_START invoice (in-advance fees) and a PERIOD_END invoice.

The unique constraint becomes (subscription_id, period_start, kind), keeping its name so
inserts still say ON CONFLICT ON CONSTRAINT invoices_one_per_subscription_period. Rows made
before this revision are PERIOD_END invoices. The immutability trigger now also guards kind.

Revision ID: invoice_0004
Revises: invoice_0003
"""

import sqlalchemy as sa
from alembic import op

revision = "invoice_0004"
down_revision = "invoice_0003"
branch_labels = None
depends_on = None

SCHEMA = "invoice"

GUARD = """
CREATE OR REPLACE FUNCTION invoice.guard_finalized_invoice() RETURNS trigger LANGUAGE plpgsql AS $$
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
      NEW.customer_external_id, NEW.warnings{new_kind})
     IS DISTINCT FROM
     (OLD.id, OLD.number, OLD.customer_id, OLD.subscription_id, OLD.currency, OLD.period_start,
      OLD.period_end, OLD.lines, OLD.subtotal, OLD.total, OLD.content_hash, OLD.create_time,
      OLD.grace_end_time, OLD.finalize_time, OLD.customer_name, OLD.customer_email,
      OLD.customer_external_id, OLD.warnings{old_kind}) THEN
    RAISE EXCEPTION 'invoice % is finalized; its content never changes', OLD.id
      USING ERRCODE = 'integrity_constraint_violation';
  END IF;
  RETURN NEW;
END $$;
"""


def upgrade() -> None:
    op.add_column("invoices", sa.Column("kind", sa.Text, nullable=False, server_default="PERIOD_END"), schema=SCHEMA)
    op.create_check_constraint("invoices_kind_known", "invoices", "kind IN ('PERIOD_START', 'PERIOD_END')", schema=SCHEMA)
    op.drop_constraint("invoices_one_per_subscription_period", "invoices", schema=SCHEMA)
    op.create_unique_constraint(
        "invoices_one_per_subscription_period", "invoices", ["subscription_id", "period_start", "kind"], schema=SCHEMA
    )
    op.execute(GUARD.format(new_kind=", NEW.kind", old_kind=", OLD.kind"))


def downgrade() -> None:
    op.execute(GUARD.format(new_kind="", old_kind=""))
    op.drop_constraint("invoices_one_per_subscription_period", "invoices", schema=SCHEMA)
    op.execute("DELETE FROM invoice.invoices WHERE kind = 'PERIOD_START' AND status = 'DRAFT'")
    op.create_unique_constraint(
        "invoices_one_per_subscription_period", "invoices", ["subscription_id", "period_start"], schema=SCHEMA
    )
    op.drop_constraint("invoices_kind_known", "invoices", schema=SCHEMA)
    op.drop_column("invoices", "kind", schema=SCHEMA)
