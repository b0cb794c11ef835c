"""Alembic environment for the ingest schema."""

from alembic import context

from services.ingest.tables import metadata
from tally.migrations import run_env

run_env(context, "ingest", metadata)
