"""SQLAlchemy tables of the invoice schema. Only services.invoice touches them."""

from sqlalchemy import MetaData

SCHEMA = "invoice"
metadata = MetaData(schema=SCHEMA)
