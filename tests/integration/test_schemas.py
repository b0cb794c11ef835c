"""Each service's Alembic history lives in its own schema."""

from __future__ import annotations

import asyncpg
import pytest

from tally.config import SERVICES
from tally.db import asyncpg_dsn


@pytest.mark.parametrize("service", SERVICES)
async def test_each_schema_has_its_own_alembic_version_table(database_url, service):
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        version = await conn.fetchval(f'SELECT version_num FROM "{service}".alembic_version')
        public = await conn.fetchval(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        )
    finally:
        await conn.close()
    assert version.startswith(f"{service}_")
    assert public == 0
