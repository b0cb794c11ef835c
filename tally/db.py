"""Database access: SQLAlchemy 2 async engines and raw asyncpg pools over one DATABASE_URL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine


def sqlalchemy_url(url: str) -> str:
    """postgresql://... -> postgresql+asyncpg://... (other drivers are not supported)."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+")[0]
    if scheme not in ("postgres", "postgresql"):
        raise ValueError(f"DATABASE_URL must be a postgresql:// URL, got {parts.scheme}://")
    return urlunsplit(("postgresql+asyncpg", *parts[1:]))


def asyncpg_dsn(url: str) -> str:
    """postgresql+asyncpg://... -> postgresql://... for asyncpg.connect/create_pool."""
    parts = urlsplit(url)
    return urlunsplit(("postgresql", *parts[1:]))


def with_database(url: str, database: str) -> str:
    """The same server URL pointing at another database name."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def create_engine(url: str, *, application_name: str, pool_size: int = 10) -> AsyncEngine:
    """An async engine; statements name their schema explicitly (no search_path tricks)."""
    return create_async_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        connect_args={"server_settings": {"application_name": application_name}},
    )


async def create_pool(
    url: str, *, application_name: str, min_size: int = 1, max_size: int = 10, **options
) -> asyncpg.Pool:
    """A raw asyncpg pool for hot paths (COPY, unnest, prepared statements).

    ``options`` go to asyncpg.create_pool as they are (for example ``reset``).
    """
    return await asyncpg.create_pool(
        asyncpg_dsn(url),
        min_size=min_size,
        max_size=max_size,
        server_settings={"application_name": application_name},
        **options,
    )


@asynccontextmanager
async def transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """One transaction per use case: commit on success, roll back on any exception."""
    async with engine.begin() as conn:
        yield conn


async def ensure_database(url: str) -> None:
    """Create the database named in ``url`` if it does not exist."""
    dsn = asyncpg_dsn(url)
    name = urlsplit(dsn).path.lstrip("/") or "postgres"
    admin = await asyncpg.connect(asyncpg_dsn(with_database(url, "postgres")))
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
