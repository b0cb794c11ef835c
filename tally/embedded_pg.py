"""The embedded default: a real PostgreSQL started with pgserver when DATABASE_URL is unset."""

from __future__ import annotations

from pathlib import Path

import structlog

log = structlog.get_logger()


def start_embedded_postgres(data_dir: Path):
    """Start (or reuse) PostgreSQL in ``data_dir``/pg and return the pgserver handle.

    The server stops when the last process holding a handle exits; data is kept.
    """
    import pgserver  # imported lazily: only needed for the embedded default

    pgdata = (data_dir / "pg").resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    log.info("embedded_postgres_ready", pgdata=str(pgdata))
    return server


def resolve_database_url(database_url: str | None, data_dir: Path) -> tuple[str, object | None]:
    """DATABASE_URL when set, else the embedded server's URL and its handle (keep it alive)."""
    if database_url:
        return database_url, None
    server = start_embedded_postgres(data_dir)
    return server.get_uri(), server
