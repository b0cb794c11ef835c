"""Acceptance: the seed's VoIP example end to end, all four services as real processes.

examples/voip.yaml ($10.00 a month + $0.05 a minute) is applied through the catalog, `call`
events worth 361 minutes go through ingest, the meter aggregates them, and the invoice
service closes the period: two lines, $10.00 and $18.05, total $28.05. The other pricing
models of DOMAIN.md, a plan change, a month-end anchor, late usage and concurrent closes run
through the same four processes.
"""

from __future__ import annotations

import asyncio
import io
from datetime import timedelta
from decimal import Decimal as D
from pathlib import Path

import pytest
from pypdf import PdfReader

from tally.catalog_file import load_catalog_file
from tally.channels import connect
from tally_gen.catalog.v1 import catalog_pb2 as cpb
from tally_gen.invoice.v1 import invoice_pb2 as ipb
from tests.invoice.helpers import TIERS, Stubs, dec, midnight_days_ago, money, per_unit, ts

pytestmark = pytest.mark.e2e
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GRACE = timedelta(hours=1)  # the invoice service's default
FEE, USAGE, ADJUSTMENT = ipb.LINE_KIND_FIXED_FEE, ipb.LINE_KIND_USAGE, ipb.LINE_KIND_ADJUSTMENT


@pytest.fixture(scope="module")
async def cluster(services):
    # Closes in these tests are explicit; the process's own scheduler must not race them.
    if services.extra_env.get("TALLY_INVOICE_CLOSE_INTERVAL_SECONDS") != "0":
        services.extra_env["TALLY_INVOICE_CLOSE_INTERVAL_SECONDS"] = "0"
        services.terminate("invoice")
        services.start("invoice")
        await services.wait("invoice")
    channels = [connect(services.address(s)) for s in ("catalog", "ingest", "meter", "invoice")]
    yield Stubs(*channels)
    for channel in channels:
        await channel.close()


class TestVoipAcceptance:
    async def test_361_minutes_on_the_voip_plan_invoice_10_plus_18_05_totalling_28_05(self, cluster):
        applied = await cluster.catalog.ApplyCatalog(load_catalog_file(EXAMPLES / "voip.yaml"), timeout=30)
        assert {(r.kind, r.key) for r in applied.results} >= {("plan", "voip_monthly"), ("meter", "call_minutes")}
        customer = await cluster.customer()
        # A monthly anniversary subscription started 32 days ago: its first month has ended.
        start = midnight_days_ago(32)
        subscription = await cluster.subscribe(customer, "voip_monthly", start, anchor=cpb.BILLING_ANCHOR_ANNIVERSARY)
        periods = await cluster.invoice.ListBillingPeriods(
            ipb.ListBillingPeriodsRequest(subscription_id=subscription), timeout=10)
        period_end = periods.periods[0].period.end.ToDatetime().replace(tzinfo=start.tzinfo)
        # 19 calls of 19 minutes = 361 minutes, spread across the period.
        step = (period_end - start) / 20
        await cluster.send(customer, "call", [(start + step * (n + 1), {"minutes": 19}) for n in range(19)])
        await cluster.wait_applied()

        reply = await cluster.close(period_end + GRACE, subscription)

        assert (reply.invoices_created, reply.invoices_finalized) == (1, 1)
        (invoice,) = await cluster.invoices_of(subscription)
        assert invoice.status == ipb.INVOICE_STATUS_FINALIZED
        assert invoice.number.startswith("INV-") and len(invoice.number) == len("INV-2026-000001")
        assert [(line.kind, line.description, money(line.amount)) for line in invoice.lines] == [
            (FEE, "Monthly fee (in arrears)", D("10.00")),
            (USAGE, "Call minutes", D("18.05")),
        ]
        minutes = invoice.lines[1]
        assert (money(minutes.quantity), money(minutes.unit_price)) == (D(361), D("0.05"))
        assert (money(invoice.subtotal), money(invoice.total), invoice.currency) == (D("28.05"), D("28.05"), "USD")
        pdf = await cluster.invoice.RenderInvoicePdf(ipb.RenderInvoicePdfRequest(id=invoice.id), timeout=30)
        text = PdfReader(io.BytesIO(pdf.pdf)).pages[0].extract_text()
        assert "361 × 0.05" in text and "28.05 USD" in text and invoice.number in text, text


async def close_one_day(cluster: Stubs, price: cpb.Price, units: int, **usage_fields) -> ipb.Invoice:
    event_type, _, plan_key = await cluster.meter_with_plan(price, usage_fields=usage_fields)
    customer = await cluster.customer()
    start = midnight_days_ago(3)
    subscription = await cluster.subscribe(customer, plan_key, start)
    await cluster.send(customer, event_type, [(start + timedelta(hours=5), {"units": units})])
    await cluster.wait_applied()
    await cluster.close(start + timedelta(days=1) + GRACE, subscription)
    (invoice,) = await cluster.invoices_of(subscription)
    return invoice


class TestDomainExamplesEndToEnd:
    @pytest.mark.parametrize(
        ("price", "units", "fields", "total"),
        [
            (cpb.Price(model=cpb.PRICING_MODEL_GRADUATED, tiers=TIERS), 12500, {}, D("945.00")),
            (cpb.Price(model=cpb.PRICING_MODEL_VOLUME, tiers=TIERS), 12500, {}, D("625.00")),
            (cpb.Price(model=cpb.PRICING_MODEL_PACKAGE, package_size=dec(100), package_price=dec(5)), 250, {}, D("15.00")),
            (per_unit("0.002"), 1500, {"included_units": dec(1000)}, D("1.00")),
        ],
        ids=["graduated", "volume", "package", "included"],
    )
    async def test_the_worked_example_is_billed_exactly(self, cluster, price, units, fields, total):
        invoice = await close_one_day(cluster, price, units, **fields)
        assert money(invoice.total) == total
        assert invoice.status == ipb.INVOICE_STATUS_FINALIZED


class TestBillingScenariosEndToEnd:
    async def test_a_mid_period_plan_change_bills_each_part_with_its_version(self, cluster):
        event_type, meter_key, plan_key = await cluster.meter_with_plan(per_unit("1"))
        await cluster.catalog.PublishPlanVersion(cpb.PublishPlanVersionRequest(plan=cpb.PlanSpec(
            key=plan_key, name="v2", currency="USD", interval=cpb.BILLING_INTERVAL_DAY, interval_count=1,
            charges=[cpb.Charge(key="usage", name="Usage", usage=cpb.UsageCharge(meter_key=meter_key, price=per_unit("3")))],
        )), timeout=10)
        customer = await cluster.customer()
        start = midnight_days_ago(3)
        subscription = await cluster.subscribe(customer, plan_key, start, version=1)
        change = start + timedelta(hours=6)
        await cluster.catalog.ChangeSubscriptionPlan(cpb.ChangeSubscriptionPlanRequest(
            id=subscription, plan_key=plan_key, plan_version=2, effective_time=ts(change)), timeout=10)
        await cluster.send(customer, event_type, [(start + timedelta(hours=1), {"units": 10}),
                                                  (change + timedelta(hours=1), {"units": 10})])
        await cluster.wait_applied()
        await cluster.close(start + timedelta(days=1) + GRACE, subscription)
        (invoice,) = await cluster.invoices_of(subscription)
        assert [(line.plan_version, money(line.amount)) for line in invoice.lines] == [(1, D("10.00")), (2, D("30.00"))]

    async def test_a_month_end_anchor_clamps_to_february_28_and_returns_to_the_31st(self, cluster):
        _, _, plan_key = await cluster.meter_with_plan(fee="10.00", interval=cpb.BILLING_INTERVAL_MONTH)
        customer = await cluster.customer()
        start = midnight_days_ago(0).replace(year=2025, month=1, day=31)
        subscription = await cluster.subscribe(customer, plan_key, start, anchor=cpb.BILLING_ANCHOR_ANNIVERSARY)
        await cluster.close(start.replace(month=3, day=31) + GRACE, subscription)
        ends = [i.period.end.ToDatetime().date().isoformat() for i in await cluster.invoices_of(subscription)]
        assert ends == ["2025-02-28", "2025-03-31"]

    async def test_late_usage_after_finalization_is_adjusted_on_the_next_invoice(self, cluster):
        event_type, _, plan_key = await cluster.meter_with_plan(per_unit("0.05"), fee="10.00")
        customer = await cluster.customer()
        start = midnight_days_ago(4)
        subscription = await cluster.subscribe(customer, plan_key, start)
        await cluster.send(customer, event_type, [(start + timedelta(hours=1), {"units": 361})])
        await cluster.wait_applied()
        await cluster.close(start + timedelta(days=1) + GRACE, subscription)
        await cluster.send(customer, event_type, [(start + timedelta(hours=2), {"units": 100})])
        await cluster.wait_applied()
        await cluster.close(start + timedelta(days=2) + GRACE, subscription)
        first, second = await cluster.invoices_of(subscription)
        assert money(first.total) == D("28.05")
        assert [(line.kind, money(line.amount), line.adjusts_invoice_id) for line in second.lines] == [
            (FEE, D("10.00"), ""), (USAGE, D("0.00"), ""), (ADJUSTMENT, D("5.00"), first.id)
        ]

    async def test_concurrent_closes_make_one_invoice_per_period(self, cluster):
        _, _, plan_key = await cluster.meter_with_plan(fee="1.00")
        customer = await cluster.customer()
        start = midnight_days_ago(4)
        subscription = await cluster.subscribe(customer, plan_key, start)
        replies = await asyncio.gather(*(cluster.close(start + timedelta(days=3) + GRACE, subscription) for _ in range(5)))
        assert sum(r.invoices_created for r in replies) == 3
        invoices = await cluster.invoices_of(subscription)
        assert len(invoices) == 3 and len({i.number for i in invoices}) == 3
