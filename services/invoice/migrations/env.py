"""Alembic environment for the invoice schema."""

from alembic import context

from services.invoice.tables import metadata
from tally.migrations import run_env

run_env(context, "invoice", metadata)
