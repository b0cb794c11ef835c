"""Alembic environment for the catalog schema."""

from alembic import context

from services.catalog.tables import metadata
from tally.migrations import run_env

run_env(context, "catalog", metadata)
