"""SQLAlchemy tables of the ingest schema. Only services.ingest touches them."""

from sqlalchemy import MetaData

SCHEMA = "ingest"
metadata = MetaData(schema=SCHEMA)
