"""Helpers for invoice tests: catalog setup, events through ingest, waiting for the meter."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import grpc
from google.protobuf import struct_pb2, timestamp_pb2

from tally_gen.catalog.v1 import catalog_pb2 as cpb
from tally_gen.catalog.v1 import catalog_pb2_grpc
from tally_gen.common.v1 import common_pb2
from tally_gen.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from tally_gen.invoice.v1 import invoice_pb2, invoice_pb2_grpc
from tally_gen.meter.v1 import meter_pb2, meter_pb2_grpc
from services.invoice.app import create_app
from services.invoice.service import InvoiceSettings
from tests.harness import unique

UTC = timezone.utc


def ts(instant: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(instant)
    return out


def dec(value) -> common_pb2.Decimal:
    return common_pb2.Decimal(value=str(value))


def money(message: common_pb2.Decimal) -> Decimal:
    return Decimal(message.value)


def midnight_days_ago(days: int) -> datetime:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days)


def per_unit(price: str) -> cpb.Price:
    return cpb.Price(model=cpb.PRICING_MODEL_PER_UNIT, unit_price=dec(price))


TIERS = [
    cpb.Tier(up_to=dec(1000), unit_price=dec("0.10")),
    cpb.Tier(up_to=dec(10000), unit_price=dec("0.08")),
    cpb.Tier(unit_price=dec("0.05")),
]


class Stubs:
    """Stubs of the four services."""

    def __init__(self, catalog: grpc.aio.Channel, ingest: grpc.aio.Channel, meter: grpc.aio.Channel,
                 invoice: grpc.aio.Channel) -> None:
        self.catalog = catalog_pb2_grpc.CatalogServiceStub(catalog)
        self.ingest = ingest_pb2_grpc.IngestServiceStub(ingest)
        self.meter = meter_pb2_grpc.MeterServiceStub(meter)
        self.invoice = invoice_pb2_grpc.InvoiceServiceStub(invoice)

    async def meter_with_plan(self, price: cpb.Price | None = None, *, fee: str | None = None,
                              interval=cpb.BILLING_INTERVAL_DAY, usage_fields=None, group_by=()) -> tuple[str, str, str]:
        """A fresh event type, SUM meter on ``units`` and a plan; returns (event_type, meter_key, plan_key)."""
        event_type, meter_key, plan_key = unique("evt"), unique("meter"), unique("plan")
        await self.catalog.CreateMeter(cpb.CreateMeterRequest(meter=cpb.Meter(
            key=meter_key, name=meter_key, unit="units", event_type=event_type,
            aggregation=cpb.AGGREGATION_SUM, value_property="units", group_by=list(group_by))), timeout=10)
        charges = []
        if fee is not None:
            charges.append(cpb.Charge(key="fee", name="Base fee",
                                      fixed=cpb.FixedFee(amount=dec(fee), timing=cpb.FEE_TIMING_IN_ARREARS)))
        if price is not None:
            charges.append(cpb.Charge(key="usage", name="Usage", usage=cpb.UsageCharge(
                meter_key=meter_key, price=price, **(usage_fields or {}))))
        await self.catalog.CreatePlan(cpb.CreatePlanRequest(plan=cpb.PlanSpec(
            key=plan_key, name="Test plan", currency="USD", interval=interval, interval_count=1,
            charges=charges)), timeout=10)
        return event_type, meter_key, plan_key

    async def customer(self, timezone_name: str = "UTC") -> str:
        reply = await self.catalog.CreateCustomer(cpb.CreateCustomerRequest(customer=cpb.Customer(
            external_id=unique("acct"), name="Ada Lovelace", email="ada@example.com",
            timezone=timezone_name, currency="USD")), timeout=10)
        return reply.customer.id

    async def subscribe(self, customer_id: str, plan_key: str, start: datetime,
                        anchor=cpb.BILLING_ANCHOR_CALENDAR, version: int = 0) -> str:
        reply = await self.catalog.CreateSubscription(cpb.CreateSubscriptionRequest(
            customer=common_pb2.CustomerRef(id=customer_id), plan_key=plan_key, plan_version=version,
            start_time=ts(start), anchor=anchor), timeout=10)
        return reply.subscription.id

    async def send(self, customer_id: str, event_type: str, events: list[tuple[datetime, dict]]) -> None:
        for start in range(0, len(events), 500):
            chunk = events[start:start + 500]
            batch = []
            for when, props in chunk:
                properties = struct_pb2.Struct()
                properties.update(props)
                batch.append(ingest_pb2.Event(idempotency_key=unique("e"), event_type=event_type,
                                              customer=common_pb2.CustomerRef(id=customer_id),
                                              timestamp=ts(when), properties=properties))
            await self.ingest.SendEventBatch(ingest_pb2.SendEventBatchRequest(events=batch), timeout=30)

    async def wait_applied(self, timeout: float = 60.0) -> None:
        """Until the meter has applied everything ingest has committed so far."""
        stats = await self.ingest.GetIngestStats(ingest_pb2.GetIngestStatsRequest(), timeout=10)
        deadline = time.monotonic() + timeout
        while True:
            status = await self.meter.GetMeterStatus(meter_pb2.GetMeterStatusRequest(), timeout=10)
            if status.applied_position >= stats.head_position and status.HasField("applied_watermark"):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"meter not caught up with {stats.head_position}: {status}")
            await asyncio.sleep(0.05)

    async def close(self, as_of: datetime, *subscription_ids: str) -> invoice_pb2.CloseDuePeriodsResponse:
        return await self.invoice.CloseDuePeriods(invoice_pb2.CloseDuePeriodsRequest(
            as_of=ts(as_of), subscription_ids=list(subscription_ids)), timeout=60)

    async def invoices_of(self, subscription_id: str) -> list[invoice_pb2.Invoice]:
        reply = await self.invoice.ListInvoices(invoice_pb2.ListInvoicesRequest(
            subscription_id=subscription_id, page_size=100), timeout=10)
        return sorted(reply.invoices, key=lambda i: i.period.start.ToDatetime())


def usage_amounts(invoice: invoice_pb2.Invoice) -> list[tuple[int, Decimal]]:
    return [(line.kind, money(line.amount)) for line in invoice.lines]


def invoice_app(services, database_url, settings, invoice_settings: InvoiceSettings):
    """An in-process invoice app that reaches the cluster's catalog, meter and ingest."""
    names = ("TALLY_CATALOG_ADDR", "TALLY_METER_ADDR", "TALLY_INGEST_ADDR")
    saved = {name: os.environ.get(name) for name in names}
    os.environ["TALLY_CATALOG_ADDR"] = services.address("catalog")
    os.environ["TALLY_METER_ADDR"] = services.address("meter")
    os.environ["TALLY_INGEST_ADDR"] = services.address("ingest")
    try:
        return create_app(database_url, settings, invoice_settings)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
