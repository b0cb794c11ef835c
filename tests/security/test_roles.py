"""scripts/roles.sql: each service's Postgres role reaches its own schema and no other."""

from __future__ import annotations

import itertools

import asyncpg
import pytest

from tally.config import SERVICES
from tally.db import asyncpg_dsn
from tests.harness import REPO, unique

ROLES_SQL = (REPO / "scripts" / "roles.sql").read_text()


@pytest.fixture(scope="module")
async def admin(database_url):
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    await conn.execute(ROLES_SQL)
    yield conn
    await conn.close()


async def as_role(conn: asyncpg.Connection, role: str, sql: str):
    """Run ``sql`` with ``role``'s privileges only, then return to the admin."""
    async with conn.transaction():
        await conn.execute(f'SET LOCAL ROLE "{role}"')
        return await conn.fetch(sql)


class TestServiceRoles:
    @pytest.mark.parametrize("service", SERVICES)
    async def test_a_service_role_reads_and_writes_its_own_schema(self, admin, service):
        table = unique(f"{service}_probe")
        # Made by the owner after the script ran, as a later migration would be.
        await admin.execute(f'CREATE TABLE "{service}"."{table}" (id bigserial PRIMARY KEY, note text)')
        try:
            await as_role(admin, f"tally_{service}", f"INSERT INTO \"{service}\".\"{table}\" (note) VALUES ('x')")
            rows = await as_role(admin, f"tally_{service}", f'SELECT note FROM "{service}"."{table}"')
            assert [r["note"] for r in rows] == ["x"]
            versions = await as_role(admin, f"tally_{service}", f'SELECT * FROM "{service}".alembic_version')
            assert len(versions) == 1
        finally:
            await admin.execute(f'DROP TABLE "{service}"."{table}"')

    @pytest.mark.parametrize("role_of, schema", list(itertools.permutations(SERVICES, 2)))
    async def test_a_service_role_cannot_read_another_services_schema(self, admin, role_of, schema):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await as_role(admin, f"tally_{role_of}", f'SELECT * FROM "{schema}".alembic_version')

    async def test_the_meter_role_cannot_write_into_ingest_even_into_new_tables(self, admin):
        table = unique("ingest_probe")
        await admin.execute(f'CREATE TABLE ingest."{table}" (id int)')
        try:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await as_role(admin, "tally_meter", f'INSERT INTO ingest."{table}" VALUES (1)')
        finally:
            await admin.execute(f'DROP TABLE ingest."{table}"')

    @pytest.mark.parametrize("schema", ["public", "ingest"])
    async def test_a_service_role_cannot_create_tables_outside_what_it_was_given(self, admin, schema):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await as_role(admin, "tally_invoice", f'CREATE TABLE "{schema}"."{unique("sneaky")}" (id int)')

    async def test_the_script_can_run_again(self, admin):
        await admin.execute(ROLES_SQL)
        rows = await admin.fetch("SELECT rolname FROM pg_roles WHERE rolname LIKE 'tally\\_%' ORDER BY 1")
        assert {f"tally_{s}" for s in SERVICES} <= {r["rolname"] for r in rows}
