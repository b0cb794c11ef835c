"""Alembic environment for the meter schema."""

from alembic import context

from services.meter.tables import metadata
from tally.migrations import run_env

run_env(context, "meter", metadata)
