"""The catalog service in-process on a free port, against the session's migrated database."""

from __future__ import annotations

import pytest

from services.catalog.app import create_app
from tally_gen.catalog.v1 import catalog_pb2_grpc
from tests.harness import in_process


@pytest.fixture(scope="session")
async def catalog_server(database_url, settings):
    async with in_process(create_app(database_url, settings)) as (running, channel):
        yield running, channel


@pytest.fixture(scope="session")
def catalog_channel(catalog_server):
    return catalog_server[1]


@pytest.fixture(scope="session")
def stub(catalog_channel) -> catalog_pb2_grpc.CatalogServiceStub:
    return catalog_pb2_grpc.CatalogServiceStub(catalog_channel)
