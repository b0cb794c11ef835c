"""Shared fixtures: every test runs against real Postgres through the production code path.

DATABASE_URL set: a fresh database is created on that server for the session.
DATABASE_URL unset: the embedded PostgreSQL (pgserver, ./.tally/pg) is started, as `make run` does.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

import tally  # noqa: F401 - first: it turns grpc's fork handlers off before grpc is imported (tally/__init__.py)
from tally.config import SERVICES, Settings
from tally.embedded_pg import resolve_database_url
from tally.logging import configure_logging
from tally.migrations import upgrade
from tests.harness import REPO, ServiceProcesses, drop_database, recreate_database

configure_logging("console", os.environ.get("TALLY_LOG_LEVEL", "warning"))


@pytest.fixture(scope="session")
def server_url() -> str:
    """URL of the Postgres server under test (external or embedded)."""
    url, handle = resolve_database_url(os.environ.get("DATABASE_URL"), REPO / ".tally")
    yield url
    if handle is not None:
        handle.cleanup()


@pytest.fixture(scope="session")
def database_url(server_url: str) -> str:
    """A fresh database for this test session, with all four schemas migrated by Alembic."""
    name = f"tally_test_{os.getpid()}"
    url = asyncio.run(recreate_database(server_url, name))
    for service in SERVICES:
        upgrade(service, url)
    yield url
    asyncio.run(drop_database(server_url, name))


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings.from_env()


@pytest.fixture(scope="session")
async def services(database_url: str, tmp_path_factory) -> ServiceProcesses:
    """All four services as real processes against the test database."""
    cluster = ServiceProcesses(database_url=database_url, log_dir=tmp_path_factory.mktemp("service-logs"))
    await cluster.start_all()
    yield cluster
    cluster.stop_all()
