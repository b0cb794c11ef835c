"""Ingest domain: pure Python rules for events, usage records, voids and the log cursor."""
