"""SQLAlchemy tables of the meter schema. Only services.meter touches them."""

from sqlalchemy import MetaData

SCHEMA = "meter"
metadata = MetaData(schema=SCHEMA)
