"""Helpers for meter tests: catalog setup, sending events, waiting for the applier."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from decimal import Decimal

import grpc
from google.protobuf import struct_pb2, timestamp_pb2

from tally_gen.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from tally_gen.common.v1 import common_pb2
from tally_gen.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from tally_gen.meter.v1 import meter_pb2, meter_pb2_grpc
from tests.harness import unique

UTC = timezone.utc


def ts(instant: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(instant)
    return out


def struct(properties: dict) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(properties)
    return out


class Stubs:
    def __init__(self, catalog: grpc.aio.Channel, ingest: grpc.aio.Channel, meter: grpc.aio.Channel) -> None:
        self.catalog = catalog_pb2_grpc.CatalogServiceStub(catalog)
        self.ingest = ingest_pb2_grpc.IngestServiceStub(ingest)
        self.meter = meter_pb2_grpc.MeterServiceStub(meter)

    async def create_meter(self, event_type: str, aggregation: str, value_property: str = "", *, group_by=(), filters=(), key=None) -> str:
        key = key or unique("m")
        meter = catalog_pb2.Meter(
            key=key,
            name=key,
            unit="units",
            event_type=event_type,
            aggregation=catalog_pb2.Aggregation.Value(f"AGGREGATION_{aggregation}"),
            value_property=value_property,
            group_by=list(group_by),
            filters=[
                catalog_pb2.MeterFilter(property=p, operator=catalog_pb2.FilterOperator.Value(f"FILTER_OPERATOR_{op}"), values=list(v))
                for p, op, v in filters
            ],
        )
        await self.catalog.CreateMeter(catalog_pb2.CreateMeterRequest(meter=meter), timeout=10)
        return key

    async def create_customer(self, timezone_name: str = "UTC") -> str:
        reply = await self.catalog.CreateCustomer(
            catalog_pb2.CreateCustomerRequest(
                customer=catalog_pb2.Customer(external_id=unique("ext"), name="Test", timezone=timezone_name, currency="USD")
            ),
            timeout=10,
        )
        return reply.customer.id

    async def send(self, customer_id: str, event_type: str, events: list[tuple[str, datetime, dict]]) -> list[str]:
        """Send (idempotency key, timestamp, properties) events atomically; returns event ids."""
        ids = []
        for start in range(0, len(events), 1000):
            chunk = events[start : start + 1000]
            reply = await self.ingest.SendEventBatch(
                ingest_pb2.SendEventBatchRequest(
                    events=[
                        ingest_pb2.Event(
                            idempotency_key=key,
                            event_type=event_type,
                            customer=common_pb2.CustomerRef(id=customer_id),
                            timestamp=ts(when),
                            properties=struct(props),
                        )
                        for key, when, props in chunk
                    ]
                ),
                timeout=30,
            )
            ids.extend(r.event_id for r in reply.results)
        return ids

    async def usage(self, customer_id: str, meter_key: str, start: datetime, end: datetime, **kwargs) -> meter_pb2.GetUsageResponse:
        return await self.meter.GetUsage(
            meter_pb2.GetUsageRequest(
                customer=common_pb2.CustomerRef(id=customer_id), meter_key=meter_key, start=ts(start), end=ts(end), **kwargs
            ),
            timeout=10,
        )

    async def wait_applied(self, timeout: float = 30.0) -> meter_pb2.GetMeterStatusResponse:
        """Wait until the meter has applied everything ingest has committed so far."""
        stats = await self.ingest.GetIngestStats(ingest_pb2.GetIngestStatsRequest(), timeout=10)
        target = stats.head_position
        deadline = time.monotonic() + timeout
        while True:
            status = await self.meter.GetMeterStatus(meter_pb2.GetMeterStatusRequest(), timeout=10)
            if status.caught_up and status.head_position >= target:
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"meter not caught up with {target}: {status}")
            await asyncio.sleep(0.05)


def value(reply) -> Decimal:
    return Decimal(reply.value.value)
