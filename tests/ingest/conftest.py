"""Ingest under test: catalog and ingest served in-process over real gRPC and real Postgres."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from services.catalog.app import create_app as create_catalog_app
from services.ingest.app import create_app as create_ingest_app
from tests.harness import in_process, unique
from tally_gen.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from tally_gen.ingest.v1 import ingest_pb2_grpc


@dataclass
class IngestStack:
    catalog: catalog_pb2_grpc.CatalogServiceStub
    ingest: ingest_pb2_grpc.IngestServiceStub
    channel: object
    address: str

    async def customer(self, external_id: str | None = None) -> catalog_pb2.Customer:
        reply = await self.catalog.CreateCustomer(
            catalog_pb2.CreateCustomerRequest(
                customer=catalog_pb2.Customer(external_id=external_id or unique("acct"), name="Test", currency="USD")
            )
        )
        return reply.customer

    async def meter(self, event_type: str, key: str | None = None, group_by: tuple[str, ...] = ()) -> catalog_pb2.Meter:
        reply = await self.catalog.CreateMeter(
            catalog_pb2.CreateMeterRequest(
                meter=catalog_pb2.Meter(
                    key=key or unique("m"),
                    name="Test meter",
                    unit="calls",
                    event_type=event_type,
                    aggregation=catalog_pb2.AGGREGATION_COUNT,
                    group_by=list(group_by),
                )
            )
        )
        return reply.meter


@pytest.fixture(scope="session")
async def ingest_stack(database_url, settings):
    async with in_process(create_catalog_app(database_url, settings)) as (catalog, catalog_channel):
        app = create_ingest_app(database_url, settings, catalog_address=f"127.0.0.1:{catalog.port}")
        async with in_process(app) as (ingest, channel):
            yield IngestStack(
                catalog=catalog_pb2_grpc.CatalogServiceStub(catalog_channel),
                ingest=ingest_pb2_grpc.IngestServiceStub(channel),
                channel=channel,
                address=f"127.0.0.1:{ingest.port}",
            )
