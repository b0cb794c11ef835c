"""Issue 13 items 4, 8, 9, 10 through the real services: catalog, ingest and meter processes,
the invoice service over gRPC, real Postgres. Every amount is worked out by hand below.

Plans are daily, so a period is 86,400 s and every proration is a simple fraction of a day.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal as D

import grpc
import pytest

from tally.grpc_errors import field_violations
from tally_gen.catalog.v1 import catalog_pb2 as cpb
from tally_gen.invoice.v1 import invoice_pb2 as ipb
from tests.harness import unique
from tests.invoice.helpers import dec, midnight_days_ago, money, per_unit, ts

pytestmark = pytest.mark.e2e
GRACE = timedelta(hours=1)
FEE, USAGE, PRORATION = ipb.LINE_KIND_FIXED_FEE, ipb.LINE_KIND_USAGE, ipb.LINE_KIND_PRORATION
START, END = ipb.INVOICE_KIND_PERIOD_START, ipb.INVOICE_KIND_PERIOD_END


async def daily_plans(stubs):
    """basic: $50.00 a day in advance + $0.10 a unit; pro: $120.00 a day in advance + $0.05 a unit."""
    event_type, meter_key = unique("evt"), unique("meter")
    await stubs.catalog.CreateMeter(cpb.CreateMeterRequest(meter=cpb.Meter(
        key=meter_key, name=meter_key, unit="units", event_type=event_type,
        aggregation=cpb.AGGREGATION_SUM, value_property="units")), timeout=10)
    keys = {}
    for name, fee, unit in (("basic", "50.00", "0.10"), ("pro", "120.00", "0.05")):
        keys[name] = unique(name)
        await stubs.catalog.CreatePlan(cpb.CreatePlanRequest(plan=cpb.PlanSpec(
            key=keys[name], name=name, currency="USD", interval=cpb.BILLING_INTERVAL_DAY, interval_count=1,
            charges=[
                cpb.Charge(key="platform", name="Platform fee",
                           fixed=cpb.FixedFee(amount=dec(fee), timing=cpb.FEE_TIMING_IN_ADVANCE)),
                cpb.Charge(key="usage", name="Usage", usage=cpb.UsageCharge(meter_key=meter_key, price=per_unit(unit))),
            ])), timeout=10)
    return event_type, keys["basic"], keys["pro"]


def start_of(invoice) -> datetime:
    return invoice.period.start.ToDatetime().replace(tzinfo=timezone.utc)


async def by_kind(stubs, subscription):
    found = await stubs.invoices_of(subscription)
    return (
        {start_of(i): i for i in found if i.kind == START},
        {start_of(i): i for i in found if i.kind == END},
    )


def lines_of(invoice):
    return [(line.kind, line.plan_key.split("_")[0], money(line.amount)) for line in invoice.lines]


class TestInAdvanceFeesAtPeriodStart:
    async def test_each_opened_period_gets_its_own_in_advance_invoice_final_at_once(self, stubs):
        event_type, basic, _ = await daily_plans(stubs)
        customer = await stubs.customer()
        day0 = midnight_days_ago(2)
        subscription = await stubs.subscribe(customer, basic, day0)
        await stubs.send(customer, event_type, [(day0 + timedelta(hours=12), {"units": 10})])
        await stubs.wait_applied()
        # Day 1 has opened (its fee is due) but not ended.
        reply = await stubs.close(day0 + timedelta(days=1) + GRACE, subscription)
        assert reply.invoices_created == 3
        opening, closing = await by_kind(stubs, subscription)
        assert sorted(opening) == [day0, day0 + timedelta(days=1)]
        for invoice in opening.values():
            # 50.00 for the day, billed when it opens, final without waiting for usage.
            assert (invoice.status, lines_of(invoice)) == (ipb.INVOICE_STATUS_FINALIZED, [(FEE, "basic", D("50.00"))])
        # Day 0's period-end invoice: usage only, 10 x 0.10 = 1.00 (no in-advance fee on it).
        assert lines_of(closing[day0]) == [(USAGE, "basic", D("1.00"))]
        again = await stubs.close(day0 + timedelta(days=1) + GRACE, subscription)
        assert again.invoices_created == 0
        periods = await stubs.invoice.ListBillingPeriods(ipb.ListBillingPeriodsRequest(subscription_id=subscription), timeout=10)
        assert periods.periods[0].period_start_invoice_id == opening[day0].id
        assert periods.periods[0].invoice_id == closing[day0].id

    async def test_the_upcoming_invoice_carries_no_in_advance_fee_of_this_or_the_next_period(self, stubs):
        event_type, basic, _ = await daily_plans(stubs)
        customer = await stubs.customer()
        today = midnight_days_ago(0)
        subscription = await stubs.subscribe(customer, basic, today)
        upcoming = (await stubs.invoice.UpcomingInvoice(ipb.UpcomingInvoiceRequest(subscription_id=subscription),
                                                        timeout=10)).invoice
        assert [line.kind for line in upcoming.lines] == [USAGE]
        assert upcoming.kind == END
        await stubs.invoice.CloseDuePeriods(ipb.CloseDuePeriodsRequest(subscription_ids=[subscription]), timeout=60)
        opening, closing = await by_kind(stubs, subscription)
        assert (list(opening), closing) == ([today], {})
        assert money(opening[today].total) == D("50.00")
        only = await stubs.invoice.ListInvoices(ipb.ListInvoicesRequest(subscription_id=subscription, kind=START), timeout=10)
        assert [i.id for i in only.invoices] == [opening[today].id]


class TestProrationThroughTheServices:
    async def test_a_mid_period_upgrade_credits_the_unused_fee_and_charges_the_new_one_to_the_second(self, stubs):
        event_type, basic, pro = await daily_plans(stubs)
        customer = await stubs.customer()
        day0 = midnight_days_ago(3)
        day1 = day0 + timedelta(days=1)
        subscription = await stubs.subscribe(customer, basic, day0)
        change = day1 + timedelta(hours=6)
        await stubs.catalog.ChangeSubscriptionPlan(cpb.ChangeSubscriptionPlanRequest(
            id=subscription, plan_key=pro, effective_time=ts(change)), timeout=10)
        await stubs.send(customer, event_type, [
            (day1 + timedelta(hours=3), {"units": 4}), (day1 + timedelta(hours=15), {"units": 6}),
        ])
        await stubs.wait_applied()
        await stubs.close(day1 + timedelta(days=1) + GRACE, subscription)
        opening, closing = await by_kind(stubs, subscription)
        # Day 1 opened on basic: 50.00 in advance. Day 2 opened on pro: 120.00.
        assert lines_of(opening[day1]) == [(FEE, "basic", D("50.00"))]
        assert lines_of(opening[day1 + timedelta(days=1)]) == [(FEE, "pro", D("120.00"))]
        # Day 1's end: usage by part (4 x 0.10 = 0.40, 6 x 0.05 = 0.30), then 18 h of 24 left
        # at the change: basic 50.00 x 18/24 = 37.50 credited, pro 120.00 x 18/24 = 90.00 charged.
        assert lines_of(closing[day1]) == [
            (USAGE, "basic", D("0.40")), (USAGE, "pro", D("0.30")),
            (PRORATION, "basic", D("-37.50")), (PRORATION, "pro", D("90.00")),
        ]
        credit = closing[day1].lines[2]
        assert (credit.prorated_seconds, credit.period_seconds) == (64_800, 86_400)
        assert money(closing[day1].total) == D("53.20")

    async def test_a_mid_period_downgrade_credits_the_dearer_fee(self, stubs):
        _, basic, pro = await daily_plans(stubs)
        customer = await stubs.customer()
        day0 = midnight_days_ago(3)
        subscription = await stubs.subscribe(customer, pro, day0)
        # 20:00: 4 h of 24 left. pro 120.00 x 4/24 = 20.00 credited; basic 50.00 x 4/24 = 8.333... -> 8.33.
        await stubs.catalog.ChangeSubscriptionPlan(cpb.ChangeSubscriptionPlanRequest(
            id=subscription, plan_key=basic, effective_time=ts(day0 + timedelta(hours=20))), timeout=10)
        await stubs.close(day0 + timedelta(days=1) + GRACE, subscription)
        _, closing = await by_kind(stubs, subscription)
        assert [x for x in lines_of(closing[day0]) if x[0] == PRORATION] == [
            (PRORATION, "pro", D("-20.00")), (PRORATION, "basic", D("8.33")),
        ]

    async def test_a_change_two_hours_before_the_period_ends_is_prorated_to_the_second(self, stubs):
        _, basic, pro = await daily_plans(stubs)
        customer = await stubs.customer()
        day0 = midnight_days_ago(3)
        subscription = await stubs.subscribe(customer, basic, day0)
        # 22:00: 7,200 s of 86,400 left (1/12): basic 50.00/12 = 4.1666... -> 4.17 credited;
        # pro 120.00/12 = 10.00 charged.
        await stubs.catalog.ChangeSubscriptionPlan(cpb.ChangeSubscriptionPlanRequest(
            id=subscription, plan_key=pro, effective_time=ts(day0 + timedelta(hours=22))), timeout=10)
        await stubs.close(day0 + timedelta(days=1) + GRACE, subscription)
        _, closing = await by_kind(stubs, subscription)
        assert [x for x in lines_of(closing[day0]) if x[0] == PRORATION] == [
            (PRORATION, "basic", D("-4.17")), (PRORATION, "pro", D("10.00")),
        ]

    async def test_a_mid_period_cancellation_credits_the_unused_part_of_the_fee(self, stubs):
        _, basic, _ = await daily_plans(stubs)
        customer = await stubs.customer()
        day0 = midnight_days_ago(3)
        day1 = day0 + timedelta(days=1)
        subscription = await stubs.subscribe(customer, basic, day0)
        await stubs.close(day1 + timedelta(hours=1), subscription)
        opening, _ = await by_kind(stubs, subscription)
        assert money(opening[day1].total) == D("50.00")
        # Canceled at 18:00 on day 1, after its 50.00 was billed: 6 h of 24 unused = 12.50.
        await stubs.catalog.CancelSubscription(cpb.CancelSubscriptionRequest(id=subscription, at=ts(day1 + timedelta(hours=18))),
                                               timeout=10)
        await stubs.close(day1 + timedelta(hours=18) + GRACE, subscription)
        opening, closing = await by_kind(stubs, subscription)
        assert sorted(opening) == [day0, day1]
        assert lines_of(closing[day1]) == [(USAGE, "basic", D("0.00")), (PRORATION, "basic", D("-12.50"))]
        assert money(closing[day1].total) == D("-12.50")


class TestAnniversaryTimeOfDay:
    async def test_usage_before_the_anchors_time_of_day_lands_in_the_period_it_belongs_to(self, stubs):
        event_type, _, plan_key = await stubs.meter_with_plan(per_unit("1"), interval=cpb.BILLING_INTERVAL_MONTH)
        customer = await stubs.customer()
        anchor = midnight_days_ago(45) + timedelta(hours=9, minutes=30)
        subscription = await stubs.subscribe(customer, plan_key, anchor, anchor=cpb.BILLING_ANCHOR_ANNIVERSARY)
        periods = await stubs.invoice.ListBillingPeriods(ipb.ListBillingPeriodsRequest(subscription_id=subscription), timeout=10)
        first_end = periods.periods[0].period.end.ToDatetime().replace(tzinfo=timezone.utc)
        # One month later at the same 09:30 (the anchor's time of day), not at midnight.
        assert (first_end.hour, first_end.minute) == (9, 30)
        assert periods.periods[1].period.start == periods.periods[0].period.end
        # 05:00 on the anniversary date belongs to the first period; 10:00 to the second.
        await stubs.send(customer, event_type, [
            (first_end - timedelta(hours=4, minutes=30), {"units": 3}), (first_end + timedelta(minutes=30), {"units": 5}),
        ])
        await stubs.wait_applied()
        await stubs.close(first_end + GRACE, subscription)
        (invoice,) = await stubs.invoices_of(subscription)
        assert [(line.kind, money(line.amount)) for line in invoice.lines] == [(USAGE, D("3.00"))]


class TestTierFlatAmountAtZero:
    async def test_the_first_tiers_flat_amount_is_charged_at_zero_usage_unless_the_price_opts_out(self, stubs):
        tiers = [cpb.Tier(up_to=dec(100), unit_price=dec("0.10"), flat_amount=dec("5.00")), cpb.Tier(unit_price=dec("0.05"))]
        totals = []
        for opt_out in (None, False):
            price = cpb.Price(model=cpb.PRICING_MODEL_GRADUATED, tiers=tiers)
            if opt_out is not None:
                price.charge_flat_amount_at_zero = opt_out
            _, _, plan_key = await stubs.meter_with_plan(price)
            stored = await stubs.catalog.GetPlan(cpb.GetPlanRequest(key=plan_key), timeout=10)
            stored_price = stored.plan.latest_version.charges[0].usage.price
            assert stored_price.HasField("charge_flat_amount_at_zero") == (opt_out is not None)
            customer = await stubs.customer()
            start = midnight_days_ago(2)
            subscription = await stubs.subscribe(customer, plan_key, start)
            await stubs.close(start + timedelta(days=1) + GRACE, subscription)
            (invoice,) = await stubs.invoices_of(subscription)
            totals.append(money(invoice.total))
        # Default: quantity 0 lies in tier 1, which pays its 5.00 flat amount; opted out: 0.00.
        assert totals == [D("5.00"), D("0.00")]

    async def test_the_option_on_a_per_unit_price_is_refused_and_named(self, stubs):
        price = per_unit("0.10")
        price.charge_flat_amount_at_zero = True
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stubs.meter_with_plan(price)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [field for field, _ in field_violations(caught.value)] == [
            "plan.charges[0].usage.price.charge_flat_amount_at_zero"
        ]


class TestAsOfInTheFuture:
    async def test_an_as_of_in_the_future_is_invalid_and_named_and_creates_nothing(self, stubs):
        _, basic, _ = await daily_plans(stubs)
        customer = await stubs.customer()
        subscription = await stubs.subscribe(customer, basic, midnight_days_ago(1))
        future = datetime.now(timezone.utc) + timedelta(days=2)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stubs.close(future, subscription)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [field for field, _ in field_violations(caught.value)] == ["as_of"]
        assert await stubs.invoices_of(subscription) == []

    async def test_a_few_seconds_of_clock_skew_are_allowed_and_read_as_now(self, stubs):
        _, basic, _ = await daily_plans(stubs)
        customer = await stubs.customer()
        today = midnight_days_ago(0)
        subscription = await stubs.subscribe(customer, basic, today)
        reply = await stubs.close(datetime.now(timezone.utc) + timedelta(seconds=20), subscription)
        assert reply.invoices_created == 1


class TestBackdatedChangeAfterBilling:
    async def test_a_change_backdated_into_a_finalized_period_is_corrected_by_adjustments_on_the_next_invoice(self, stubs):
        _, basic, pro = await daily_plans(stubs)
        customer = await stubs.customer()
        day0 = midnight_days_ago(3)
        day1 = day0 + timedelta(days=1)
        subscription = await stubs.subscribe(customer, basic, day0)
        await stubs.close(day0 + timedelta(days=1) + GRACE, subscription)
        _, closing = await by_kind(stubs, subscription)
        assert (closing[day0].status, money(closing[day0].total)) == (ipb.INVOICE_STATUS_FINALIZED, D("0.00"))
        # Then an upgrade is recorded as of day 0 18:00, after day 0 was billed.
        await stubs.catalog.ChangeSubscriptionPlan(cpb.ChangeSubscriptionPlanRequest(
            id=subscription, plan_key=pro, effective_time=ts(day0 + timedelta(hours=18))), timeout=10)
        await stubs.close(day1 + timedelta(days=1) + GRACE, subscription)
        _, closing = await by_kind(stubs, subscription)
        # Day 0 never changes; day 1's period-end invoice adjusts it: 6 h of 24 at the change,
        # basic 50.00 x 6/24 = 12.50 credited, pro 120.00 x 6/24 = 30.00 charged.
        assert money(closing[day0].total) == D("0.00")
        adjustments = [(line.plan_key.split("_")[0], money(line.amount), line.adjusts_invoice_id)
                       for line in closing[day1].lines if line.kind == ipb.LINE_KIND_ADJUSTMENT]
        assert adjustments == [("basic", D("-12.50"), closing[day0].id), ("pro", D("30.00"), closing[day0].id)]


class TestInvoicesOfTheOldModel:
    async def test_a_period_billed_in_advance_by_an_old_style_invoice_is_not_billed_again(self, stubs, invoice_service):
        """Before PERIOD_START invoices, a period's invoice billed the next period's in-advance fee."""
        from services.invoice.domain.invoices import Invoice, InvoiceLine, InvoiceStatus, LineKind
        from services.invoice.repository import InvoiceRepository
        from tally.db import transaction

        event_type, basic, pro = await daily_plans(stubs)
        customer = await stubs.customer()
        day0 = midnight_days_ago(3)
        day1, day2 = day0 + timedelta(days=1), day0 + timedelta(days=2)
        subscription = await stubs.subscribe(customer, basic, day0)
        plan_key = basic

        def fee(start):
            return InvoiceLine(LineKind.FIXED_FEE, "Platform fee (in advance)", D("50.00"), start, start + timedelta(days=1),
                               charge_key="platform", plan_key=plan_key, plan_version=1, quantity=D(1), unit_price=D("50.00"))

        usage = InvoiceLine(LineKind.USAGE, "Usage", D("0.00"), day0, day1, charge_key="usage", plan_key=plan_key,
                            plan_version=1, quantity=D(0), unit_price=D("0.10"), usage=D(0), included_units=D(0))
        old = Invoice(
            id=unique("inv"), customer_id=customer, subscription_id=subscription, currency="USD",
            period_start=day0, period_end=day1, lines=(fee(day0), usage, fee(day1)),
            create_time=day1, grace_end_time=day1 + GRACE,
        ).finalize(unique("INV-OLD"), day1 + GRACE)
        async with transaction(invoice_service.engine) as conn:
            assert await InvoiceRepository(conn).insert_new([old]) == {old.id}
        # Upgrade on day 1 at 12:00: the old invoice's 50.00 for day 1 is what gets credited.
        await stubs.catalog.ChangeSubscriptionPlan(cpb.ChangeSubscriptionPlanRequest(
            id=subscription, plan_key=pro, effective_time=ts(day1 + timedelta(hours=12))), timeout=10)
        await stubs.wait_applied()
        await stubs.close(day2 + GRACE, subscription)
        opening, closing = await by_kind(stubs, subscription)
        # Day 0 was closed the old way, day 1's fee was on day 0's invoice: only day 2 opens anew.
        assert sorted(opening) == [day2]
        assert lines_of(opening[day2]) == [(FEE, "pro", D("120.00"))]
        # Day 1: half a day left at noon: 25.00 credited, 60.00 charged; no adjustment of day 0
        # for the in-advance lines it carried.
        assert [x for x in lines_of(closing[day1]) if x[0] != USAGE] == [
            (PRORATION, "basic", D("-25.00")), (PRORATION, "pro", D("60.00")),
        ]


class TestInvoiceKindRequests:
    async def test_an_unknown_invoice_kind_filter_is_invalid_and_named(self, stubs):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stubs.invoice.ListInvoices(ipb.ListInvoicesRequest(kind=99), timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [field for field, _ in field_violations(caught.value)] == ["kind"]

    async def test_a_page_token_is_refused_when_the_kind_filter_changes(self, stubs):
        _, basic, _ = await daily_plans(stubs)
        customer = await stubs.customer()
        day0 = midnight_days_ago(3)
        subscription = await stubs.subscribe(customer, basic, day0)
        await stubs.close(day0 + timedelta(days=2) + GRACE, subscription)
        first = await stubs.invoice.ListInvoices(ipb.ListInvoicesRequest(subscription_id=subscription, kind=START,
                                                                         page_size=1), timeout=10)
        assert first.next_page_token and [i.kind for i in first.invoices] == [START]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stubs.invoice.ListInvoices(ipb.ListInvoicesRequest(
                subscription_id=subscription, kind=END, page_size=1, page_token=first.next_page_token), timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


class TestVoidAndPreview:
    async def test_a_voided_period_start_invoice_is_neither_billed_again_nor_credited(self, stubs):
        _, basic, _ = await daily_plans(stubs)
        customer = await stubs.customer()
        day0 = midnight_days_ago(3)
        subscription = await stubs.subscribe(customer, basic, day0)
        await stubs.close(day0 + timedelta(hours=1), subscription)
        opening, _ = await by_kind(stubs, subscription)
        await stubs.invoice.VoidInvoice(ipb.VoidInvoiceRequest(id=opening[day0].id, reason="billed by hand"), timeout=10)
        await stubs.catalog.CancelSubscription(cpb.CancelSubscriptionRequest(id=subscription, at=ts(day0 + timedelta(hours=12))),
                                               timeout=10)
        await stubs.close(day0 + timedelta(hours=12) + GRACE, subscription)
        _, closing = await by_kind(stubs, subscription)
        assert lines_of(closing[day0]) == [(USAGE, "basic", D("0.00"))]

    async def test_the_upcoming_invoice_before_any_close_shows_the_corrections_the_period_end_will_carry(self, stubs):
        _, basic, pro = await daily_plans(stubs)
        customer = await stubs.customer()
        today = midnight_days_ago(0)
        subscription = await stubs.subscribe(customer, basic, today)
        # Upgrade at 06:00 today (18 h of 24 left), previewed before the period-start invoice exists.
        await stubs.catalog.ChangeSubscriptionPlan(cpb.ChangeSubscriptionPlanRequest(
            id=subscription, plan_key=pro, effective_time=ts(today + timedelta(hours=6))), timeout=10)
        upcoming = (await stubs.invoice.UpcomingInvoice(ipb.UpcomingInvoiceRequest(
            subscription_id=subscription, as_of=ts(today + timedelta(hours=7))), timeout=10)).invoice
        # basic 50.00 x 18/24 = 37.50 credited, pro 120.00 x 18/24 = 90.00 charged.
        assert [x for x in lines_of(upcoming) if x[0] == PRORATION] == [
            (PRORATION, "basic", D("-37.50")), (PRORATION, "pro", D("90.00")),
        ]
        assert await stubs.invoices_of(subscription) == []
