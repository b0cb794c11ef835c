"""SQLAlchemy tables of the catalog schema. Only services.catalog touches them."""

from sqlalchemy import MetaData

SCHEMA = "catalog"
metadata = MetaData(schema=SCHEMA)
