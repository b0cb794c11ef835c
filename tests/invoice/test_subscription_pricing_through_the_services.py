"""Price overrides, price points and invoice list filters through the four real services, with
every amount worked out by hand in the test."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal as D

import grpc
import pytest

from tally.grpc_errors import error_info, field_violations
from tally_gen.catalog.v1 import catalog_pb2 as cpb
from tally_gen.common.v1 import common_pb2
from tally_gen.ingest.v1 import ingest_pb2
from tally_gen.invoice.v1 import invoice_pb2 as ipb
from tests.harness import unique
from tests.invoice.helpers import dec, midnight_days_ago, money, per_unit, ts

pytestmark = pytest.mark.e2e
GRACE = timedelta(hours=1)
USAGE, FEE = ipb.LINE_KIND_USAGE, ipb.LINE_KIND_FIXED_FEE
POINTS = [
    cpb.PricePoint(key="premium", name="Premium route", price=per_unit("0.09")),
    cpb.PricePoint(key="bulk", name="Bulk", price=per_unit("0.01")),
]


async def daily_plan(stubs, *, fee="10.00", price="0.05", points=()) -> tuple[str, str, str]:
    """(event type, meter key, plan key): a daily plan with a fee in arrears and a per-unit usage charge."""
    return await stubs.meter_with_plan(
        per_unit(price), fee=fee, usage_fields={"price_points": list(points)} if points else None
    )


async def subscribe(stubs, plan_key: str, *, days_ago: int = 5, overrides=(), external_id: str = ""):
    customer = await stubs.customer()
    start = midnight_days_ago(days_ago)
    reply = await stubs.catalog.CreateSubscription(
        cpb.CreateSubscriptionRequest(
            customer=common_pb2.CustomerRef(id=customer),
            plan_key=plan_key,
            start_time=ts(start),
            price_overrides=list(overrides),
            external_id=external_id,
        ),
        timeout=10,
    )
    return customer, reply.subscription, start


async def record(stubs, customer: str, meter_key: str, quantity: str, when, price_point: str = "", **fields):
    return await stubs.ingest.RecordUsage(
        ingest_pb2.RecordUsageRequest(
            idempotency_key=unique("usage"),
            customer=common_pb2.CustomerRef(id=customer),
            meter_key=meter_key,
            quantity=dec(quantity),
            timestamp=ts(when),
            price_point=price_point,
            **fields,
        ),
        timeout=10,
    )


async def first_invoice(stubs, subscription_id: str, start) -> ipb.Invoice:
    await stubs.wait_applied()
    await stubs.close(start + timedelta(days=1) + GRACE, subscription_id)
    invoices = await stubs.invoices_of(subscription_id)
    return invoices[0]


class TestPriceOverridesThroughTheServices:
    async def test_an_overridden_usage_price_and_fee_bill_22_94_instead_of_28_05(self, stubs):
        event_type, _, plan_key = await daily_plan(stubs)
        overrides = [
            cpb.PriceOverride(charge_key="usage", price=per_unit("0.04")),
            cpb.PriceOverride(charge_key="fee", amount=dec("8.50")),
        ]
        customer, sub, start = await subscribe(stubs, plan_key, overrides=overrides)
        await stubs.send(customer, event_type, [(start + timedelta(hours=1), {"units": 361})])
        invoice = await first_invoice(stubs, sub.id, start)
        lines = {line.kind: line for line in invoice.lines}
        # Fee: 8.50 instead of 10.00. Usage: 361 x 0.04 = 14.44 instead of 18.05.
        assert (money(lines[FEE].amount), lines[FEE].price_override) == (D("8.50"), True)
        assert (money(lines[USAGE].amount), money(lines[USAGE].unit_price)) == (D("14.44"), D("0.04"))
        assert lines[USAGE].price_override
        assert money(invoice.total) == D("22.94")

    async def test_a_subscription_without_overrides_on_the_same_plan_pays_the_plan_price(self, stubs):
        event_type, _, plan_key = await daily_plan(stubs)
        await subscribe(stubs, plan_key, overrides=[cpb.PriceOverride(charge_key="fee", amount=dec("1.00"))])
        customer, sub, start = await subscribe(stubs, plan_key)
        await stubs.send(customer, event_type, [(start + timedelta(hours=1), {"units": 361})])
        invoice = await first_invoice(stubs, sub.id, start)
        # 10.00 + 361 x 0.05 = 28.05, nothing flagged.
        assert money(invoice.total) == D("28.05")
        assert not any(line.price_override for line in invoice.lines)

    async def test_after_a_plan_change_each_day_is_priced_with_its_own_phases_overrides(self, stubs):
        event_type, meter_key, plan_a = await daily_plan(stubs)
        plan_b = unique("plan")
        await stubs.catalog.CreatePlan(
            cpb.CreatePlanRequest(
                plan=cpb.PlanSpec(
                    key=plan_b,
                    name="Plan B",
                    currency="USD",
                    interval=cpb.BILLING_INTERVAL_DAY,
                    interval_count=1,
                    charges=[
                        cpb.Charge(
                            key="fee",
                            fixed=cpb.FixedFee(amount=dec("20.00"), timing=cpb.FEE_TIMING_IN_ARREARS),
                        ),
                        cpb.Charge(
                            key="usage", usage=cpb.UsageCharge(meter_key=meter_key, price=per_unit("0.10"))
                        ),
                    ],
                )
            ),
            timeout=10,
        )
        customer, sub, start = await subscribe(
            stubs, plan_a, overrides=[cpb.PriceOverride(charge_key="usage", price=per_unit("0.03"))]
        )
        await stubs.catalog.ChangeSubscriptionPlan(
            cpb.ChangeSubscriptionPlanRequest(
                subscription=common_pb2.SubscriptionRef(id=sub.id),
                plan_key=plan_b,
                effective_time=ts(start + timedelta(days=1)),
                price_overrides=[cpb.PriceOverride(charge_key="fee", amount=dec("15.00"))],
            ),
            timeout=10,
        )
        await stubs.send(
            customer,
            event_type,
            [
                (start + timedelta(hours=1), {"units": 100}),
                (start + timedelta(days=1, hours=1), {"units": 100}),
            ],
        )
        await stubs.wait_applied()
        await stubs.close(start + timedelta(days=2) + GRACE, sub.id)
        day1, day2 = (await stubs.invoices_of(sub.id))[:2]
        # Day 1, plan A: fee 10.00 (not overridden) + 100 x 0.03 (override) = 13.00.
        assert money(day1.total) == D("13.00")
        assert [line.price_override for line in day1.lines if line.kind == USAGE] == [True]
        # Day 2, plan B: fee 15.00 (override) + 100 x 0.10 (B's price, A's override gone) = 25.00.
        assert money(day2.total) == D("25.00")
        assert {line.kind: line.price_override for line in day2.lines} == {FEE: True, USAGE: False}

    async def test_an_overridden_in_advance_fee_is_billed_at_the_override_for_every_period(self, stubs):
        plan_key = unique("plan")
        await stubs.catalog.CreatePlan(
            cpb.CreatePlanRequest(
                plan=cpb.PlanSpec(
                    key=plan_key,
                    name="Advance",
                    currency="USD",
                    interval=cpb.BILLING_INTERVAL_DAY,
                    interval_count=1,
                    charges=[
                        cpb.Charge(
                            key="fee",
                            fixed=cpb.FixedFee(amount=dec("50.00"), timing=cpb.FEE_TIMING_IN_ADVANCE),
                        )
                    ],
                )
            ),
            timeout=10,
        )
        _, sub, start = await subscribe(
            stubs, plan_key, days_ago=3, overrides=[cpb.PriceOverride(charge_key="fee", amount=dec("7.00"))]
        )
        await stubs.close(start + timedelta(days=2) + GRACE, sub.id)
        fee_lines = [
            line for invoice in await stubs.invoices_of(sub.id) for line in invoice.lines if line.kind == FEE
        ]
        # Whole days from midnight: each in-advance fee is the override's 7.00, never the plan's 50.00.
        assert fee_lines
        assert {(money(line.amount), line.price_override) for line in fee_lines} == {(D("7.00"), True)}


class TestPricePointsThroughTheServices:
    async def test_usage_recorded_with_a_price_point_is_priced_by_it_on_its_own_line(self, stubs):
        event_type, meter_key, plan_key = await daily_plan(stubs, points=POINTS)
        customer, sub, start = await subscribe(stubs, plan_key)
        await record(stubs, customer, meter_key, "100", start + timedelta(hours=1), price_point="premium")
        await record(stubs, customer, meter_key, "300", start + timedelta(hours=2), price_point="bulk")
        await record(stubs, customer, meter_key, "40", start + timedelta(hours=3))
        await stubs.send(customer, event_type, [(start + timedelta(hours=4), {"units": 60})])
        invoice = await first_invoice(stubs, sub.id, start)
        usage = {line.price_point: line for line in invoice.lines if line.kind == USAGE}
        # premium: 100 x 0.09 = 9.00; bulk: 300 x 0.01 = 3.00; plain: (40 + 60) x 0.05 = 5.00.
        assert {key: (money(line.usage), money(line.amount)) for key, line in usage.items()} == {
            "premium": (D(100), D("9.00")),
            "bulk": (D(300), D("3.00")),
            "": (D(100), D("5.00")),
        }
        assert usage["premium"].description == "Usage (price point Premium route)"
        assert dict(usage["premium"].dimensions) == {"tally:price_point": "premium"}
        # Fee 10.00 + 9.00 + 3.00 + 5.00.
        assert money(invoice.total) == D("27.00")

    async def test_an_undeclared_price_point_is_a_field_violation_and_nothing_is_counted(self, stubs):
        _, meter_key, plan_key = await daily_plan(stubs, points=POINTS)
        customer, sub, start = await subscribe(stubs, plan_key)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await record(stubs, customer, meter_key, "100", start + timedelta(hours=1), price_point="gold")
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        violations = dict(field_violations(caught.value))
        assert "price_point" in violations and "premium" in violations["price_point"]
        invoice = await first_invoice(stubs, sub.id, start)
        assert money(invoice.total) == D("10.00")

    async def test_a_price_point_of_another_plan_is_refused(self, stubs):
        _, meter_key, _ = await daily_plan(stubs, points=POINTS)
        _, _, plain_plan = await daily_plan(stubs)
        customer, _, start = await subscribe(stubs, plain_plan)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await record(stubs, customer, meter_key, "1", start + timedelta(hours=1), price_point="premium")
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "price_point" in dict(field_violations(caught.value))

    async def test_the_reserved_dimension_cannot_be_set_directly(self, stubs):
        _, meter_key, plan_key = await daily_plan(stubs, points=POINTS)
        customer, _, start = await subscribe(stubs, plan_key)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await record(
                stubs,
                customer,
                meter_key,
                "1",
                start + timedelta(hours=1),
                dimensions={"tally:price_point": "premium"},
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "dimensions[tally:price_point]" in dict(field_violations(caught.value))

    async def test_a_retry_naming_another_price_point_is_a_conflict_not_a_duplicate(self, stubs):
        _, meter_key, plan_key = await daily_plan(stubs, points=POINTS)
        customer, _, start = await subscribe(stubs, plan_key)
        key = unique("usage")
        request = ingest_pb2.RecordUsageRequest(
            idempotency_key=key,
            customer=common_pb2.CustomerRef(id=customer),
            meter_key=meter_key,
            quantity=dec("5"),
            timestamp=ts(start + timedelta(hours=1)),
            price_point="premium",
        )
        await stubs.ingest.RecordUsage(request, timeout=10)
        assert (await stubs.ingest.RecordUsage(request, timeout=10)).duplicate
        request.price_point = "bulk"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stubs.ingest.RecordUsage(request, timeout=10)
        assert caught.value.code() in (grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.INVALID_ARGUMENT)


class TestListInvoicesFilters:
    async def test_invoices_are_found_by_customer_and_subscription_external_ids(self, stubs):
        _, _, plan_key = await daily_plan(stubs)
        reference = unique("sub-ref")
        customer, sub, start = await subscribe(stubs, plan_key, external_id=reference)
        await first_invoice(stubs, sub.id, start)
        customer_external_id = (
            await stubs.catalog.GetCustomer(
                cpb.GetCustomerRequest(customer=common_pb2.CustomerRef(id=customer)), timeout=10
            )
        ).customer.external_id
        by_customer = await stubs.invoice.ListInvoices(
            ipb.ListInvoicesRequest(customer=common_pb2.CustomerRef(external_id=customer_external_id)),
            timeout=10,
        )
        by_subscription = await stubs.invoice.ListInvoices(
            ipb.ListInvoicesRequest(subscription=common_pb2.SubscriptionRef(external_id=reference)),
            timeout=10,
        )
        assert {i.subscription_id for i in by_customer.invoices} == {sub.id}
        assert [i.id for i in by_subscription.invoices] == [i.id for i in by_customer.invoices]
        assert by_customer.invoices

    async def test_an_unknown_customer_or_subscription_is_not_found_not_an_empty_page(self, stubs):
        for request, reason in (
            (
                ipb.ListInvoicesRequest(customer=common_pb2.CustomerRef(external_id=unique("ghost"))),
                "CUSTOMER_NOT_FOUND",
            ),
            (ipb.ListInvoicesRequest(customer_id=unique("cus")), "CUSTOMER_NOT_FOUND"),
            (
                ipb.ListInvoicesRequest(subscription=common_pb2.SubscriptionRef(external_id=unique("g"))),
                "SUBSCRIPTION_NOT_FOUND",
            ),
            (ipb.ListInvoicesRequest(subscription_id=unique("sub")), "SUBSCRIPTION_NOT_FOUND"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stubs.invoice.ListInvoices(request, timeout=10)
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND, request
            assert error_info(caught.value).reason == reason

    async def test_a_customer_without_invoices_gets_an_empty_page(self, stubs):
        customer = await stubs.customer()
        reply = await stubs.invoice.ListInvoices(
            ipb.ListInvoicesRequest(customer=common_pb2.CustomerRef(id=customer)), timeout=10
        )
        assert list(reply.invoices) == []

    async def test_conflicting_empty_or_unusable_filters_are_field_violations(self, stubs):
        request = ipb.ListInvoicesRequest(
            customer_id="cus_1",
            customer=common_pb2.CustomerRef(id="cus_1"),
            subscription=common_pb2.SubscriptionRef(),
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stubs.invoice.ListInvoices(request, timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert set(dict(field_violations(caught.value))) == {"customer", "subscription"}
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stubs.invoice.ListInvoices(
                ipb.ListInvoicesRequest(subscription=common_pb2.SubscriptionRef(external_id="a\x00b")),
                timeout=10,
            )
        assert set(dict(field_violations(caught.value))) == {"subscription.external_id"}


class TestNamingTheSubscriptionByItsReference:
    async def test_upcoming_invoice_and_billing_periods_take_the_subscriptions_external_id(self, stubs):
        _, _, plan_key = await daily_plan(stubs)
        reference = unique("sub-ref")
        _, sub, start = await subscribe(stubs, plan_key, days_ago=2, external_id=reference)
        ref = common_pb2.SubscriptionRef(external_id=reference)
        upcoming = await stubs.invoice.UpcomingInvoice(
            ipb.UpcomingInvoiceRequest(subscription=ref), timeout=10
        )
        assert upcoming.invoice.subscription_id == sub.id
        by_ref = await stubs.invoice.ListBillingPeriods(
            ipb.ListBillingPeriodsRequest(subscription=ref, until=ts(start + timedelta(days=2))), timeout=10
        )
        by_id = await stubs.invoice.ListBillingPeriods(
            ipb.ListBillingPeriodsRequest(subscription_id=sub.id, until=ts(start + timedelta(days=2))),
            timeout=10,
        )
        assert list(by_ref.periods) == list(by_id.periods) and len(by_ref.periods) == 2

    async def test_an_unknown_reference_is_not_found_and_a_missing_one_a_field_violation(self, stubs):
        ghost = common_pb2.SubscriptionRef(external_id=unique("ghost"))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stubs.invoice.UpcomingInvoice(ipb.UpcomingInvoiceRequest(subscription=ghost), timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert error_info(caught.value).reason == "SUBSCRIPTION_NOT_FOUND"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stubs.invoice.ListBillingPeriods(ipb.ListBillingPeriodsRequest(), timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "subscription_id" in dict(field_violations(caught.value))
