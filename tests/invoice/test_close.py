"""Period close through real gRPC: catalog, ingest and meter processes, real Postgres."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal as D

import grpc
import pytest
from sqlalchemy import text

from services.invoice.service import InvoiceService, InvoiceSettings
from tally.errors import InvalidInput
from tally_gen.catalog.v1 import catalog_pb2 as cpb
from tally_gen.common.v1 import common_pb2
from tally.channels import connect
from tally.grpc_errors import field_violations
from tally_gen.invoice.v1 import invoice_pb2 as ipb
from tally_gen.invoice.v1 import invoice_pb2_grpc
from tests.invoice.helpers import TIERS, dec, midnight_days_ago, money, per_unit, ts

pytestmark = pytest.mark.e2e
GRACE = timedelta(hours=1)
USAGE, FEE, ADJUSTMENT = ipb.LINE_KIND_USAGE, ipb.LINE_KIND_FIXED_FEE, ipb.LINE_KIND_ADJUSTMENT


async def daily_subscription(stubs, price=None, *, fee=None, days_ago=5, usage_fields=None, group_by=()):
    """A daily plan, a customer and a subscription started ``days_ago`` days ago at midnight UTC."""
    event_type, meter_key, plan_key = await stubs.meter_with_plan(price, fee=fee, usage_fields=usage_fields, group_by=group_by)
    customer = await stubs.customer()
    start = midnight_days_ago(days_ago)
    subscription = await stubs.subscribe(customer, plan_key, start)
    return event_type, customer, subscription, start


async def close_first_day(stubs, price, units, **kwargs):
    event_type, customer, subscription, start = await daily_subscription(stubs, price, **kwargs)
    await stubs.send(customer, event_type, [(start + timedelta(hours=1), {"units": str(units)})])
    await stubs.wait_applied()
    await stubs.close(start + timedelta(days=1) + GRACE, subscription)
    (invoice,) = await stubs.invoices_of(subscription)
    return invoice


class TestPricingModelsThroughTheServices:
    async def test_graduated_tiers_bill_12500_units_at_945(self, stubs):
        invoice = await close_first_day(stubs, cpb.Price(model=cpb.PRICING_MODEL_GRADUATED, tiers=TIERS), 12500)
        (line,) = invoice.lines
        assert money(line.amount) == D("945.00")
        assert [(money(t.quantity), money(t.amount)) for t in line.tiers] == [
            (D(1000), D("100.00")), (D(9000), D("720.00")), (D(2500), D("125.00"))
        ]
        assert invoice.status == ipb.INVOICE_STATUS_FINALIZED

    async def test_volume_tiers_bill_12500_units_at_625(self, stubs):
        invoice = await close_first_day(stubs, cpb.Price(model=cpb.PRICING_MODEL_VOLUME, tiers=TIERS), 12500)
        assert money(invoice.total) == D("625.00")

    async def test_package_pricing_bills_250_units_as_three_packages_of_100(self, stubs):
        price = cpb.Price(model=cpb.PRICING_MODEL_PACKAGE, package_size=dec(100), package_price=dec(5))
        invoice = await close_first_day(stubs, price, 250)
        assert money(invoice.total) == D("15.00")

    async def test_included_units_leave_500_of_1500_billable(self, stubs):
        invoice = await close_first_day(stubs, per_unit("0.002"), 1500, usage_fields={"included_units": dec(1000)})
        (line,) = invoice.lines
        assert (money(line.quantity), money(line.included_units), money(line.amount)) == (D(500), D(1000), D("1.00"))

    async def test_dimension_prices_split_usage_by_the_meters_group_by(self, stubs):
        fields = {"dimension_prices": [cpb.DimensionPrice(match={"region": "eu"}, price=per_unit("0.10"))]}
        event_type, customer, subscription, start = await daily_subscription(
            stubs, per_unit("0.01"), usage_fields=fields, group_by=["region"]
        )
        await stubs.send(customer, event_type, [
            (start + timedelta(hours=1), {"units": 10, "region": "eu"}),
            (start + timedelta(hours=2), {"units": 100, "region": "us"}),
        ])
        await stubs.wait_applied()
        await stubs.close(start + timedelta(days=1) + GRACE, subscription)
        (invoice,) = await stubs.invoices_of(subscription)
        assert [(dict(line.dimensions), money(line.amount)) for line in invoice.lines] == [
            ({"region": "eu"}, D("1.00")), ({}, D("1.00"))
        ]


class TestCloseDuePeriods:
    async def test_one_invoice_per_ended_period_with_gapless_numbers(self, stubs):
        _, _, subscription, start = await daily_subscription(stubs, fee="2.00", days_ago=4)
        reply = await stubs.close(start + timedelta(days=3) + GRACE, subscription)
        assert (reply.invoices_created, reply.invoices_finalized) == (3, 3)
        invoices = await stubs.invoices_of(subscription)
        assert [i.period.start.ToDatetime() for i in invoices] == [
            (start + timedelta(days=n)).replace(tzinfo=None) for n in range(3)
        ]
        numbers = [i.number for i in invoices]
        year = invoices[0].finalize_time.ToDatetime().year
        assert all(n.startswith(f"INV-{year}-") and len(n) == len(f"INV-{year}-000001") for n in numbers)
        values = [int(n.rsplit("-", 1)[1]) for n in numbers]
        assert values == list(range(values[0], values[0] + 3))

    async def test_closing_twice_creates_one_invoice(self, stubs):
        _, _, subscription, start = await daily_subscription(stubs, fee="1.00")
        as_of = start + timedelta(days=1) + GRACE
        first = await stubs.close(as_of, subscription)
        second = await stubs.close(as_of, subscription)
        assert (first.invoices_created, second.invoices_created) == (1, 0)
        assert len(await stubs.invoices_of(subscription)) == 1

    async def test_two_replicas_closing_concurrently_create_one_invoice_per_period(self, stubs, services):
        _, _, subscription, start = await daily_subscription(stubs, fee="1.00", days_ago=6)
        as_of = start + timedelta(days=5) + GRACE
        # Two replicas: this process's invoice service and the invoice process, same database.
        async with connect(services.address("invoice")) as channel:
            other = invoice_pb2_grpc.InvoiceServiceStub(channel)
            request = ipb.CloseDuePeriodsRequest(as_of=ts(as_of), subscription_ids=[subscription])
            replies = await asyncio.gather(
                stubs.close(as_of, subscription), other.CloseDuePeriods(request, timeout=60),
                stubs.close(as_of, subscription), other.CloseDuePeriods(request, timeout=60),
            )
        assert sum(r.invoices_created for r in replies) == 5
        assert sum(r.invoices_finalized for r in replies) == 5
        invoices = await stubs.invoices_of(subscription)
        assert len(invoices) == 5
        assert len({i.number for i in invoices}) == 5

    async def test_an_invoice_stays_a_draft_during_the_grace_period(self, stubs):
        _, _, subscription, start = await daily_subscription(stubs, per_unit("1"), fee="3.00")
        end = start + timedelta(days=1)
        reply = await stubs.close(end + timedelta(minutes=30), subscription)
        assert (reply.invoices_created, reply.invoices_finalized) == (1, 0)
        (draft,) = await stubs.invoices_of(subscription)
        assert (draft.status, draft.number, draft.content_hash) == (ipb.INVOICE_STATUS_DRAFT, "", "")
        assert draft.grace_end_time.ToDatetime() == (end + GRACE).replace(tzinfo=None)
        reply = await stubs.close(end + GRACE, subscription)
        assert (reply.invoices_created, reply.invoices_finalized) == (0, 1)
        (final,) = await stubs.invoices_of(subscription)
        assert final.id == draft.id and final.status == ipb.INVOICE_STATUS_FINALIZED

    async def test_a_draft_is_repriced_from_usage_that_arrived_during_the_grace_period(self, stubs):
        event_type, customer, subscription, start = await daily_subscription(stubs, per_unit("1"))
        end = start + timedelta(days=1)
        await stubs.send(customer, event_type, [(start + timedelta(hours=1), {"units": 5})])
        await stubs.wait_applied()
        await stubs.close(end + timedelta(minutes=1), subscription)
        (draft,) = await stubs.invoices_of(subscription)
        assert money(draft.total) == D("5.00")
        await stubs.send(customer, event_type, [(end - timedelta(minutes=1), {"units": 2})])
        await stubs.wait_applied()
        await stubs.close(end + GRACE, subscription)
        (final,) = await stubs.invoices_of(subscription)
        assert (final.status, money(final.total)) == (ipb.INVOICE_STATUS_FINALIZED, D("7.00"))

    async def test_a_draft_waits_while_the_meter_has_not_applied_past_period_end_plus_grace(
        self, stubs, invoice_service
    ):
        # 72 h of grace ends in the future, beyond anything the meter can have applied yet.
        _, _, subscription, start = await daily_subscription(stubs, fee="1.00", days_ago=2)
        end = start + timedelta(days=1)
        # A service whose clock says it is then (a real as_of that far ahead is refused).
        patient = InvoiceService(invoice_service.engine, invoice_service.catalog, invoice_service.meter,
                                 InvoiceSettings(grace_seconds=72 * 3600, close_interval_seconds=0),
                                 clock=lambda: end + timedelta(hours=72))
        result = await patient.close_due_periods(end + timedelta(hours=72), [subscription])
        # Four daily periods ended by then; only the first one's grace is over, and it waits.
        assert (len(result.created), result.finalized, result.waiting_for_usage) == (4, 0, 1)
        drafts = await stubs.invoices_of(subscription)
        assert [d.status for d in drafts] == [ipb.INVOICE_STATUS_DRAFT] * 4

    async def test_a_zero_amount_invoice_is_still_produced(self, stubs):
        _, _, subscription, start = await daily_subscription(stubs, per_unit("0.05"))
        await stubs.close(start + timedelta(days=1) + GRACE, subscription)
        (invoice,) = await stubs.invoices_of(subscription)
        assert (invoice.status, money(invoice.total), len(invoice.lines)) == (ipb.INVOICE_STATUS_FINALIZED, D("0.00"), 1)

    async def test_a_mid_period_plan_change_prices_each_part_with_its_version(self, stubs):
        event_type, meter_key, plan_key = await stubs.meter_with_plan(per_unit("1"), fee="24.00")
        await stubs.catalog.PublishPlanVersion(cpb.PublishPlanVersionRequest(plan=cpb.PlanSpec(
            key=plan_key, name="Test plan v2", currency="USD", interval=cpb.BILLING_INTERVAL_DAY, interval_count=1,
            charges=[
                cpb.Charge(key="fee", name="Base fee", fixed=cpb.FixedFee(amount=dec("48.00"), timing=cpb.FEE_TIMING_IN_ARREARS)),
                cpb.Charge(key="usage", name="Usage", usage=cpb.UsageCharge(meter_key=meter_key, price=per_unit("2"))),
            ])), timeout=10)
        customer = await stubs.customer()
        start = midnight_days_ago(3)
        subscription = await stubs.subscribe(customer, plan_key, start, version=1)
        change = start + timedelta(hours=12)
        await stubs.catalog.ChangeSubscriptionPlan(cpb.ChangeSubscriptionPlanRequest(
            id=subscription, plan_key=plan_key, plan_version=2, effective_time=ts(change)), timeout=10)
        await stubs.send(customer, event_type, [
            (start + timedelta(hours=1), {"units": 3}), (change + timedelta(hours=1), {"units": 4}),
        ])
        await stubs.wait_applied()
        await stubs.close(start + timedelta(days=1) + GRACE, subscription)
        (invoice,) = await stubs.invoices_of(subscription)
        got = [(line.kind, line.plan_version, money(line.amount)) for line in invoice.lines]
        # A daily period split at noon: the fee by days (0 of 1 day, then the whole day), usage by part.
        assert got == [(FEE, 1, D("0.00")), (USAGE, 1, D("3.00")), (FEE, 2, D("48.00")), (USAGE, 2, D("8.00"))]

    async def test_a_month_end_anniversary_bills_february_28_and_march_31(self, stubs):
        _, _, plan_key = await stubs.meter_with_plan(fee="30.00", interval=cpb.BILLING_INTERVAL_MONTH)
        customer = await stubs.customer()
        start = midnight_days_ago(0).replace(year=2025, month=1, day=31)
        subscription = await stubs.subscribe(customer, plan_key, start, anchor=cpb.BILLING_ANCHOR_ANNIVERSARY)
        await stubs.close(start.replace(month=4, day=30) + GRACE, subscription)
        invoices = await stubs.invoices_of(subscription)
        assert [(i.period.start.ToDatetime().date().isoformat(), i.period.end.ToDatetime().date().isoformat())
                for i in invoices] == [("2025-01-31", "2025-02-28"), ("2025-02-28", "2025-03-31"), ("2025-03-31", "2025-04-30")]
        assert [money(i.total) for i in invoices] == [D("30.00")] * 3

    async def test_a_subscription_with_an_unknown_id_is_not_found(self, stubs):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stubs.close(midnight_days_ago(0), "sub_does_not_exist")
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


class TestLateUsage:
    async def test_late_usage_after_finalization_is_an_adjustment_on_the_next_invoice(self, stubs):
        event_type, customer, subscription, start = await daily_subscription(stubs, per_unit("0.05"), fee="10.00")
        day1_end = start + timedelta(days=1)
        await stubs.send(customer, event_type, [(start + timedelta(hours=2), {"units": 361})])
        await stubs.wait_applied()
        await stubs.close(day1_end + GRACE, subscription)
        (first,) = await stubs.invoices_of(subscription)
        assert (money(first.total), first.status) == (D("28.05"), ipb.INVOICE_STATUS_FINALIZED)
        # 39 minutes of day 1 arrive after its invoice was finalized.
        await stubs.send(customer, event_type, [(start + timedelta(hours=3), {"units": 39})])
        await stubs.wait_applied()
        await stubs.close(day1_end + timedelta(days=1) + GRACE, subscription)
        first_again, second = await stubs.invoices_of(subscription)
        assert first_again == first
        adjustments = [line for line in second.lines if line.kind == ADJUSTMENT]
        assert [(money(a.amount), money(a.usage), a.adjusts_invoice_id) for a in adjustments] == [
            (D("1.95"), D(39), first.id)
        ]
        assert adjustments[0].adjusts_period == first.period
        assert money(second.total) == D("10.00") + D("1.95")
        # Each difference is adjusted exactly once.
        await stubs.close(day1_end + timedelta(days=2) + GRACE, subscription)
        third = (await stubs.invoices_of(subscription))[2]
        assert [line for line in third.lines if line.kind == ADJUSTMENT] == []

    async def test_a_voided_event_after_finalization_is_credited_on_the_next_invoice(self, stubs):
        from tally_gen.ingest.v1 import ingest_pb2

        event_type, customer, subscription, start = await daily_subscription(stubs, per_unit("1"))
        key = "void-me-" + subscription
        from google.protobuf import struct_pb2

        properties = struct_pb2.Struct()
        properties.update({"units": 4})
        await stubs.ingest.SendEventBatch(ingest_pb2.SendEventBatchRequest(events=[ingest_pb2.Event(
            idempotency_key=key, event_type=event_type, customer=common_pb2.CustomerRef(id=customer),
            timestamp=ts(start + timedelta(hours=1)), properties=properties)]), timeout=10)
        await stubs.send(customer, event_type, [(start + timedelta(hours=2), {"units": 6})])
        await stubs.wait_applied()
        await stubs.close(start + timedelta(days=1) + GRACE, subscription)
        (first,) = await stubs.invoices_of(subscription)
        assert money(first.total) == D("10.00")
        await stubs.ingest.VoidEvent(ingest_pb2.VoidEventRequest(idempotency_key=key, reason="wrong"), timeout=10)
        await stubs.wait_applied()
        await stubs.close(start + timedelta(days=2) + GRACE, subscription)
        first_again, second = await stubs.invoices_of(subscription)
        assert first_again == first
        assert [(line.kind, money(line.amount)) for line in second.lines] == [(USAGE, D("0.00")), (ADJUSTMENT, D("-4.00"))]


class TestFinalizedInvoicesNeverChange:
    async def test_the_stored_hash_matches_the_content_and_the_database_refuses_changes(self, stubs, invoice_service):
        from services.invoice.domain.invoices import content_hash

        _, _, subscription, start = await daily_subscription(stubs, per_unit("1"), fee="5.00")
        await stubs.close(start + timedelta(days=1) + GRACE, subscription)
        (invoice,) = await stubs.invoices_of(subscription)
        stored = await invoice_service.get_invoice(invoice.id)
        assert stored.content_hash == invoice.content_hash == content_hash(stored)
        for statement in (
            "UPDATE invoice.invoices SET total = total + 1 WHERE id = :id",
            "UPDATE invoice.invoices SET lines = '[]'::jsonb WHERE id = :id",
            "UPDATE invoice.invoices SET status = 'DRAFT' WHERE id = :id",
            "UPDATE invoice.invoices SET kind = 'PERIOD_START' WHERE id = :id",
            "DELETE FROM invoice.invoices WHERE id = :id",
        ):
            with pytest.raises(Exception, match="finalized|cannot"):
                async with invoice_service.engine.begin() as conn:
                    await conn.execute(text(statement), {"id": invoice.id})
        paid = await stubs.invoice.MarkInvoicePaid(ipb.MarkInvoicePaidRequest(id=invoice.id), timeout=10)
        assert paid.invoice.status == ipb.INVOICE_STATUS_PAID
        assert paid.invoice.content_hash == invoice.content_hash
        assert list(paid.invoice.lines) == list(invoice.lines)


class TestLifecycle:
    async def test_void_keeps_the_record_and_paid_or_void_need_a_finalized_invoice(self, stubs):
        _, _, subscription, start = await daily_subscription(stubs, fee="1.00")
        await stubs.close(start + timedelta(days=1) + timedelta(minutes=5), subscription)
        (draft,) = await stubs.invoices_of(subscription)
        for call in (stubs.invoice.MarkInvoicePaid(ipb.MarkInvoicePaidRequest(id=draft.id), timeout=10),
                     stubs.invoice.VoidInvoice(ipb.VoidInvoiceRequest(id=draft.id, reason="x"), timeout=10)):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        final = (await stubs.invoice.FinalizeInvoice(ipb.FinalizeInvoiceRequest(id=draft.id), timeout=30)).invoice
        assert final.status == ipb.INVOICE_STATUS_FINALIZED and final.number
        voided = (await stubs.invoice.VoidInvoice(ipb.VoidInvoiceRequest(id=draft.id, reason="duplicate"), timeout=10)).invoice
        assert (voided.status, voided.void_reason, voided.number) == (ipb.INVOICE_STATUS_VOID, "duplicate", final.number)
        by_number = (await stubs.invoice.GetInvoice(ipb.GetInvoiceRequest(number=final.number), timeout=10)).invoice
        assert by_number.id == draft.id and by_number.status == ipb.INVOICE_STATUS_VOID

    async def test_an_unknown_invoice_is_not_found(self, stubs):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stubs.invoice.GetInvoice(ipb.GetInvoiceRequest(id="inv_nope"), timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


class TestUpcomingInvoice:
    async def test_the_preview_prices_the_current_period_to_date_and_stores_nothing(self, stubs):
        event_type, customer, subscription, start = await daily_subscription(stubs, per_unit("0.5"), fee="2.00")
        await stubs.send(customer, event_type, [(start + timedelta(days=2, hours=3), {"units": 7})])
        await stubs.wait_applied()
        reply = await stubs.invoice.UpcomingInvoice(ipb.UpcomingInvoiceRequest(
            subscription_id=subscription, as_of=ts(start + timedelta(days=2, hours=12))), timeout=30)
        preview = reply.invoice
        assert preview.id == "" and preview.status == ipb.INVOICE_STATUS_DRAFT
        assert preview.period.start.ToDatetime() == (start + timedelta(days=2)).replace(tzinfo=None)
        assert money(preview.total) == D("5.50")
        assert await stubs.invoices_of(subscription) == []


class TestListBillingPeriods:
    async def test_periods_are_listed_in_pages_with_their_invoices(self, stubs):
        _, _, subscription, start = await daily_subscription(stubs, fee="1.00", days_ago=5)
        await stubs.close(start + timedelta(days=1) + GRACE, subscription)
        (invoice,) = await stubs.invoices_of(subscription)
        request = ipb.ListBillingPeriodsRequest(subscription_id=subscription, until=ts(start + timedelta(days=4, hours=1)),
                                                page_size=3)
        first = await stubs.invoice.ListBillingPeriods(request, timeout=10)
        request.page_token = first.next_page_token
        second = await stubs.invoice.ListBillingPeriods(request, timeout=10)
        periods = list(first.periods) + list(second.periods)
        assert [p.period.start.ToDatetime() for p in periods] == [(start + timedelta(days=n)).replace(tzinfo=None) for n in range(5)]
        assert [p.invoice_id for p in periods] == [invoice.id, "", "", "", ""]
        assert second.next_page_token == ""


class TestSettings:
    def test_a_grace_period_over_72_hours_is_refused(self):
        with pytest.raises(InvalidInput) as caught:
            InvoiceSettings(grace_seconds=72 * 3600 + 1)
        assert caught.value.violations[0].field == "TALLY_INVOICE_GRACE_SECONDS"


class TestBadRequests:
    async def test_an_as_of_beyond_year_9999_is_invalid_and_named(self, stubs):
        from google.protobuf import timestamp_pb2

        request = ipb.CloseDuePeriodsRequest(as_of=timestamp_pb2.Timestamp(seconds=2**40))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stubs.invoice.CloseDuePeriods(request, timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [field for field, _ in field_violations(caught.value)] == ["as_of"]

    async def test_missing_ids_are_invalid_arguments(self, stubs):
        for call in (stubs.invoice.RenderInvoicePdf(ipb.RenderInvoicePdfRequest(), timeout=10),
                     stubs.invoice.FinalizeInvoice(ipb.FinalizeInvoiceRequest(), timeout=10),
                     stubs.invoice.ListBillingPeriods(ipb.ListBillingPeriodsRequest(), timeout=10)):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


class TestLateUsageCheckCost:
    async def test_unchanged_billed_periods_cost_one_usage_query_per_meter_not_one_per_period(
        self, stubs, invoice_service, services
    ):
        from services.invoice.clients import MeterClient

        class CountingMeterClient(MeterClient):
            calls = 0

            async def usage(self, customer_id, query):
                CountingMeterClient.calls += 1
                return await super().usage(customer_id, query)

            async def usage_of_many(self, queries):
                CountingMeterClient.calls += len(queries)
                return await super().usage_of_many(queries)

        event_type, customer, subscription, start = await daily_subscription(stubs, per_unit("1"), days_ago=6)
        await stubs.send(customer, event_type, [(start + timedelta(days=n, hours=1), {"units": n + 1}) for n in range(4)])
        await stubs.wait_applied()
        await stubs.close(start + timedelta(days=3) + GRACE, subscription)
        async with connect(services.address("meter")) as channel:
            counting = InvoiceService(invoice_service.engine, invoice_service.catalog, CountingMeterClient(channel),
                                      InvoiceSettings(close_interval_seconds=0))
            result = await counting.close_due_periods(start + timedelta(days=4) + GRACE, [subscription])
        assert len(result.created) == 1
        # Day 4's usage, plus one query over the three billed days (instead of three).
        assert CountingMeterClient.calls == 2
        fourth = (await stubs.invoices_of(subscription))[3]
        assert [(line.kind, money(line.amount)) for line in fourth.lines] == [(USAGE, D("4.00"))]


class TestListInvoices:
    async def test_invoices_page_by_customer_and_filter_by_status(self, stubs):
        _, customer, subscription, start = await daily_subscription(stubs, fee="1.00", days_ago=5)
        await stubs.close(start + timedelta(days=3) + GRACE, subscription)
        await stubs.close(start + timedelta(days=4) + timedelta(minutes=1), subscription)
        seen, token = [], ""
        while True:
            reply = await stubs.invoice.ListInvoices(
                ipb.ListInvoicesRequest(customer_id=customer, page_size=2, page_token=token), timeout=10)
            seen.extend(reply.invoices)
            token = reply.next_page_token
            if not token:
                break
        assert len(seen) == 4 and len({i.id for i in seen}) == 4
        drafts = await stubs.invoice.ListInvoices(
            ipb.ListInvoicesRequest(customer_id=customer, status=ipb.INVOICE_STATUS_DRAFT), timeout=10)
        assert [i.period.start.ToDatetime() for i in drafts.invoices] == [(start + timedelta(days=3)).replace(tzinfo=None)]

    async def test_a_page_token_is_refused_with_other_filters(self, stubs):
        _, customer, subscription, start = await daily_subscription(stubs, fee="1.00", days_ago=4)
        await stubs.close(start + timedelta(days=2) + GRACE, subscription)
        first = await stubs.invoice.ListInvoices(ipb.ListInvoicesRequest(customer_id=customer, page_size=1), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stubs.invoice.ListInvoices(
                ipb.ListInvoicesRequest(customer_id="someone_else", page_token=first.next_page_token), timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
