"""Invoice warnings: usage of the period the invoice did not bill, and why.

Unattributed usage that no subscription can take (several subscriptions of the customer
charge its meter) is billed by none and listed here. Warnings are content: the guard keeps
them unchanged once the invoice is finalized.

Revision ID: invoice_0003
Revises: invoice_0002
"""

from alembic import op

revision = "invoice_0003"
down_revision = "invoice_0002"
branch_labels = None
depends_on = None

_GUARD = """
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
      NEW.customer_external_id{new_warnings})
     IS DISTINCT FROM
     (OLD.id, OLD.number, OLD.customer_id, OLD.subscription_id, OLD.currency, OLD.period_start,
      OLD.period_end, OLD.lines, OLD.subtotal, OLD.total, OLD.content_hash, OLD.create_time,
      OLD.grace_end_time, OLD.finalize_time, OLD.customer_name, OLD.customer_email,
      OLD.customer_external_id{old_warnings}) THEN
    RAISE EXCEPTION 'invoice % is finalized; its content never changes', OLD.id
      USING ERRCODE = 'integrity_constraint_violation';
  END IF;
  RETURN NEW;
END $$;
"""


def upgrade() -> None:
    op.execute("ALTER TABLE invoice.invoices ADD COLUMN warnings jsonb NOT NULL DEFAULT '[]'::jsonb")
    op.execute(_GUARD.format(new_warnings=", NEW.warnings", old_warnings=", OLD.warnings"))


def downgrade() -> None:
    op.execute(_GUARD.format(new_warnings="", old_warnings=""))
    op.execute("ALTER TABLE invoice.invoices DROP COLUMN warnings")
