"""SQLAlchemy metadata of the meter schema. Only services.meter touches it.

The tables are created by the Alembic revisions in migrations/versions (raw DDL) and accessed
with raw asyncpg in repository.py: every meter statement is on a hot path (apply, GetUsage),
so there are no ORM models here.
"""

from sqlalchemy import MetaData

SCHEMA = "meter"
metadata = MetaData(schema=SCHEMA)
