"""The period close reads usage with the meter's BatchGetUsage (real services, real Postgres)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal as D

import pytest

from services.invoice.clients import MeterClient
from services.invoice.service import InvoiceService, InvoiceSettings
from tally.channels import connect
from tally.errors import Unavailable
from tally_gen.catalog.v1 import catalog_pb2 as cpb
from tests.harness import unique
from tests.invoice.helpers import dec, midnight_days_ago, money, per_unit

pytestmark = pytest.mark.e2e
GRACE = timedelta(hours=1)


class CountingMeterClient(MeterClient):
    """The production client, counting unary GetUsage calls and batched queries."""

    def __init__(self, channel, *, batch_fails: bool = False) -> None:
        super().__init__(channel)
        self.unary = 0
        self.batches: list[int] = []
        self.batch_fails = batch_fails

    async def usage(self, customer_id, query):
        self.unary += 1
        return await super().usage(customer_id, query)

    async def usage_of_many(self, queries):
        self.batches.append(len(queries))
        if self.batch_fails:
            raise Unavailable("meter batch unavailable in this test")
        return await super().usage_of_many(queries)


async def two_meter_plan(stubs) -> tuple[str, str, str]:
    """A daily plan: $1.00 fee, calls at $0.05 a minute, SMS at $0.01 each; returns (calls type, sms type, plan)."""
    call_type, sms_type, plan_key = unique("call"), unique("sms"), unique("plan")
    minutes, messages = unique("minutes"), unique("messages")
    for key, event_type, aggregation, prop in ((minutes, call_type, cpb.AGGREGATION_SUM, "minutes"),
                                               (messages, sms_type, cpb.AGGREGATION_COUNT, "")):
        await stubs.catalog.CreateMeter(cpb.CreateMeterRequest(meter=cpb.Meter(
            key=key, name=key, unit="units", event_type=event_type, aggregation=aggregation, value_property=prop)),
            timeout=10)
    charges = [
        cpb.Charge(key="fee", name="Base fee", fixed=cpb.FixedFee(amount=dec("1.00"), timing=cpb.FEE_TIMING_IN_ARREARS)),
        cpb.Charge(key="calls", name="Calls", usage=cpb.UsageCharge(meter_key=minutes, price=per_unit("0.05"))),
        cpb.Charge(key="sms", name="SMS", usage=cpb.UsageCharge(meter_key=messages, price=per_unit("0.01"))),
    ]
    await stubs.catalog.CreatePlan(cpb.CreatePlanRequest(plan=cpb.PlanSpec(
        key=plan_key, name="Two meters", currency="USD", interval=cpb.BILLING_INTERVAL_DAY, interval_count=1,
        charges=charges)), timeout=10)
    return call_type, sms_type, plan_key


async def subscriptions_with_usage(stubs, count: int):
    """``count`` subscriptions started 3 days ago; subscription n used 10·(n+1) minutes and n+1 SMS on each day."""
    call_type, sms_type, plan_key = await two_meter_plan(stubs)
    start = midnight_days_ago(3)
    subscriptions = []
    for n in range(count):
        customer = await stubs.customer()
        subscriptions.append(await stubs.subscribe(customer, plan_key, start))
        for day in range(2):
            noon = start + timedelta(days=day, hours=12)
            await stubs.send(customer, call_type, [(noon, {"minutes": str(10 * (n + 1))})])
            await stubs.send(customer, sms_type, [(noon + timedelta(minutes=m), {}) for m in range(n + 1)])
    await stubs.wait_applied()
    return subscriptions, start


async def close_with(invoice_service, services, meter_client_args, as_of, subscriptions):
    async with connect(services.address("meter")) as channel:
        client = CountingMeterClient(channel, **meter_client_args)
        service = InvoiceService(invoice_service.engine, invoice_service.catalog, client,
                                 InvoiceSettings(close_interval_seconds=0))
        result = await service.close_due_periods(as_of, subscriptions)
    return client, result


def expected_lines(n: int) -> list[D]:
    return [D("1.00"), D(10 * (n + 1)) * D("0.05"), D(n + 1) * D("0.01")]


class TestCloseReadsUsageInBatches:
    async def test_closing_many_subscriptions_reads_all_their_usage_in_one_batch_call(
        self, stubs, invoice_service, services
    ):
        subscriptions, start = await subscriptions_with_usage(stubs, 4)
        client, result = await close_with(invoice_service, services, {}, start + timedelta(days=2) + GRACE, subscriptions)
        assert len(result.created) == 8
        # Two periods x two meters x four subscriptions: one BatchGetUsage, no GetUsage.
        assert (client.batches, client.unary) == ([16], 0)
        for n, subscription in enumerate(subscriptions):
            invoices = await stubs.invoices_of(subscription)
            assert len(invoices) == 2
            for invoice in invoices:
                assert [money(line.amount) for line in invoice.lines] == expected_lines(n)
                assert money(invoice.total) == sum(expected_lines(n))

    async def test_when_the_batch_fails_each_subscription_reads_its_own_usage_and_is_still_billed(
        self, stubs, invoice_service, services
    ):
        subscriptions, start = await subscriptions_with_usage(stubs, 2)
        client, result = await close_with(
            invoice_service, services, {"batch_fails": True}, start + timedelta(days=1) + GRACE, subscriptions
        )
        assert len(result.created) == 2
        assert result.failed == 0
        assert (client.batches, client.unary) == ([4], 4)
        for n, subscription in enumerate(subscriptions):
            (invoice,) = await stubs.invoices_of(subscription)
            assert [money(line.amount) for line in invoice.lines] == expected_lines(n)
