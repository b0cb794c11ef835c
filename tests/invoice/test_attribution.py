"""Usage attributed to subscriptions, through the four real services (docs/billing-attribution.md).

The issue's case: a customer with two subscriptions whose plans both charge the same meter
was billed the same 9 calls on both invoices. Amounts here are worked out by hand.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import grpc
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2, status_pb2
from sqlalchemy import text

from tests.harness import unique
from tests.invoice.helpers import Stubs, dec, money, per_unit, ts
from tally_gen.catalog.v1 import catalog_pb2 as cpb
from tally_gen.common.v1 import common_pb2
from tally_gen.ingest.v1 import ingest_pb2
from tally_gen.invoice.v1 import invoice_pb2
from tally_gen.meter.v1 import meter_pb2

UTC = timezone.utc


def now() -> datetime:
    return datetime.now(UTC)


def today() -> datetime:
    return now().replace(hour=0, minute=0, second=0, microsecond=0)


async def second_plan(stubs: Stubs, meter_key: str, unit_price: str) -> str:
    """Another daily plan charging the same meter."""
    plan_key = unique("plan")
    await stubs.catalog.CreatePlan(cpb.CreatePlanRequest(plan=cpb.PlanSpec(
        key=plan_key, name="Second plan", currency="USD", interval=cpb.BILLING_INTERVAL_DAY, interval_count=1,
        charges=[cpb.Charge(key="usage", name="Usage", usage=cpb.UsageCharge(meter_key=meter_key, price=per_unit(unit_price)))],
    )), timeout=10)
    return plan_key


async def ingest_sees_catalog(stubs: Stubs, timeout: float = 10.0) -> None:
    """Until ingest's catalog cache reflects every catalog change made so far."""
    target = (await stubs.catalog.GetCatalogRevision(cpb.GetCatalogRevisionRequest(), timeout=10)).revision
    deadline = time.monotonic() + timeout
    while (await stubs.ingest.GetIngestStats(ingest_pb2.GetIngestStatsRequest(), timeout=10)).catalog_revision < target:
        assert time.monotonic() < deadline, "ingest's catalog cache did not catch up"
        await asyncio.sleep(0.02)


def event(customer_id: str, event_type: str, when: datetime, units: int, subscription: str | None = None) -> ingest_pb2.Event:
    properties = struct_pb2.Struct()
    properties.update({"units": units})
    message = ingest_pb2.Event(idempotency_key=unique("e"), event_type=event_type,
                               customer=common_pb2.CustomerRef(id=customer_id), timestamp=ts(when), properties=properties)
    if subscription is not None:
        message.subscription.id = subscription
    return message


def violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    bad = error_details_pb2.BadRequest()
                    detail.Unpack(bad)
                    return [(v.field, v.reason) for v in bad.field_violations]
    return []


def usage_total(invoice: invoice_pb2.Invoice) -> tuple[Decimal, Decimal]:
    """(usage quantity, amount) of the invoice's usage lines."""
    usage = [line for line in invoice.lines if line.kind == invoice_pb2.LINE_KIND_USAGE]
    return sum((money(line.usage) for line in usage), Decimal(0)), sum((money(line.amount) for line in usage), Decimal(0))


async def upcoming(stubs: Stubs, subscription_id: str) -> invoice_pb2.Invoice:
    reply = await stubs.invoice.UpcomingInvoice(
        invoice_pb2.UpcomingInvoiceRequest(subscription_id=subscription_id), timeout=30
    )
    return reply.invoice


@pytest.fixture
async def two_subscriptions(stubs: Stubs):
    """A customer with two subscriptions (started at midnight) whose plans both charge one meter:
    A at $0.10 a unit, B at $0.25 a unit."""
    event_type, meter_key, plan_a = await stubs.meter_with_plan(per_unit("0.10"))
    plan_b = await second_plan(stubs, meter_key, "0.25")
    customer = await stubs.customer()
    sub_a = await stubs.subscribe(customer, plan_a, today())
    sub_b = await stubs.subscribe(customer, plan_b, today())
    await ingest_sees_catalog(stubs)
    return event_type, meter_key, customer, sub_a, sub_b


class TestTwoSubscriptionsChargingOneMeter:
    async def test_each_upcoming_invoice_counts_only_its_own_usage(self, stubs, two_subscriptions):
        event_type, meter_key, customer, sub_a, sub_b = two_subscriptions
        when = now() - timedelta(seconds=5)
        # 9 calls in all: 5 name A, 4 name B.
        sent = [event(customer, event_type, when, 1, sub_a) for _ in range(5)]
        sent += [event(customer, event_type, when, 1, sub_b) for _ in range(4)]
        reply = await stubs.ingest.SendEventBatch(ingest_pb2.SendEventBatchRequest(events=sent), timeout=30)
        assert reply.accepted_count == 9
        assert [r.subscription_id for r in reply.results] == [sub_a] * 5 + [sub_b] * 4
        await stubs.wait_applied()

        invoice_a, invoice_b = await upcoming(stubs, sub_a), await upcoming(stubs, sub_b)
        # A: 5 x $0.10 = $0.50. B: 4 x $0.25 = $1.00. (Both used to bill all 9.)
        assert usage_total(invoice_a) == (Decimal(5), Decimal("0.50"))
        assert usage_total(invoice_b) == (Decimal(4), Decimal("1.00"))
        assert money(invoice_a.total) == Decimal("0.50") and money(invoice_b.total) == Decimal("1.00")
        assert not invoice_a.warnings and not invoice_b.warnings

    async def test_usage_is_answered_per_subscription_and_in_total(self, stubs, two_subscriptions):
        event_type, meter_key, customer, sub_a, sub_b = two_subscriptions
        when = now() - timedelta(seconds=5)
        sent = [event(customer, event_type, when, 3, sub_a), event(customer, event_type, when, 7, sub_b)]
        await stubs.ingest.SendEventBatch(ingest_pb2.SendEventBatchRequest(events=sent), timeout=30)
        await stubs.ingest.RecordUsage(ingest_pb2.RecordUsageRequest(
            idempotency_key=unique("u"), customer=common_pb2.CustomerRef(id=customer), meter_key=meter_key,
            quantity=dec("11"), timestamp=ts(when), subscription=common_pb2.SubscriptionRef(id=sub_b)), timeout=10)
        await stubs.wait_applied()

        def query(**fields) -> meter_pb2.GetUsageRequest:
            return meter_pb2.GetUsageRequest(customer=common_pb2.CustomerRef(id=customer), meter_key=meter_key,
                                             start=ts(today()), end=ts(now() + timedelta(minutes=1)), **fields)

        total = await stubs.meter.GetUsage(query(), timeout=10)
        only_a = await stubs.meter.GetUsage(query(subscription=common_pb2.SubscriptionRef(id=sub_a)), timeout=10)
        only_b = await stubs.meter.GetUsage(query(subscription=common_pb2.SubscriptionRef(id=sub_b)), timeout=10)
        assert (money(total.value), money(only_a.value), money(only_b.value)) == (21, 3, 18)
        assert (total.subscription_id, only_a.subscription_id) == ("", sub_a)
        batch = await stubs.meter.BatchGetUsage(meter_pb2.BatchGetUsageRequest(queries=[
            query(subscription=common_pb2.SubscriptionRef(id=sub_b), include_unattributed=True), query(only_unattributed=True),
        ]), timeout=10)
        assert [money(r.value) for r in batch.results] == [18, 0]
        series = await stubs.meter.UsageSeries(meter_pb2.UsageSeriesRequest(
            customer=common_pb2.CustomerRef(id=customer), meter_key=meter_key, start=ts(today()),
            end=ts(today() + timedelta(days=1)), granularity=meter_pb2.GRANULARITY_HOUR,
            subscription=common_pb2.SubscriptionRef(id=sub_a)), timeout=10)
        assert sum(money(p.value) for p in series.points) == 3

    async def test_an_event_naming_no_subscription_is_refused_as_ambiguous(self, stubs, two_subscriptions):
        event_type, meter_key, customer, sub_a, sub_b = two_subscriptions
        when = now() - timedelta(seconds=5)
        named = event(customer, event_type, when, 1, sub_a)
        unnamed = event(customer, event_type, when, 1)
        with pytest.raises(grpc.aio.AioRpcError) as atomic:
            await stubs.ingest.SendEventBatch(ingest_pb2.SendEventBatchRequest(events=[named, unnamed]), timeout=10)
        assert atomic.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert violations(atomic.value) == [("events[1].subscription", "SUBSCRIPTION_AMBIGUOUS")]

        partial = await stubs.ingest.SendEventBatch(ingest_pb2.SendEventBatchRequest(
            events=[named, unnamed], mode=ingest_pb2.BATCH_MODE_PARTIAL), timeout=10)
        assert [r.status for r in partial.results] == [ingest_pb2.EVENT_STATUS_ACCEPTED, ingest_pb2.EVENT_STATUS_REJECTED]
        [problem] = partial.results[1].violations
        assert problem.reason == "SUBSCRIPTION_AMBIGUOUS" and sub_a in problem.description and sub_b in problem.description

        with pytest.raises(grpc.aio.AioRpcError) as usage:
            await stubs.ingest.RecordUsage(ingest_pb2.RecordUsageRequest(
                customer=common_pb2.CustomerRef(id=customer), meter_key=meter_key, quantity=dec("1"), timestamp=ts(when)),
                timeout=10)
        assert violations(usage.value) == [("subscription", "SUBSCRIPTION_AMBIGUOUS")]

    async def test_a_subscription_of_another_customer_or_unknown_is_a_field_violation(self, stubs, two_subscriptions):
        event_type, meter_key, customer, sub_a, _ = two_subscriptions
        stranger = await stubs.customer()
        when = now() - timedelta(seconds=5)
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stubs.ingest.SendEventBatch(ingest_pb2.SendEventBatchRequest(events=[
                event(customer, event_type, when, 1, sub_a),
                event(stranger, event_type, when, 1, sub_a),
                event(customer, event_type, when, 1, "sub_that_does_not_exist"),
            ]), timeout=10)
        assert violations(error.value) == [
            ("events[1].subscription", "SUBSCRIPTION_OF_ANOTHER_CUSTOMER"),
            ("events[2].subscription", "SUBSCRIPTION_NOT_FOUND"),
        ]
        with pytest.raises(grpc.aio.AioRpcError) as query:
            await stubs.meter.GetUsage(meter_pb2.GetUsageRequest(
                customer=common_pb2.CustomerRef(id=stranger), meter_key=meter_key, start=ts(today()),
                end=ts(now()), subscription=common_pb2.SubscriptionRef(id=sub_a)), timeout=10)
        assert violations(query.value) == [("subscription", "SUBSCRIPTION_OF_ANOTHER_CUSTOMER")]


class TestOneCandidate:
    async def test_an_unnamed_event_goes_to_the_one_subscription_charging_its_meter(self, stubs):
        event_type, meter_key, plan = await stubs.meter_with_plan(per_unit("0.10"))
        _, _, other_plan = await stubs.meter_with_plan(per_unit("1.00"))  # charges another meter
        customer = await stubs.customer()
        sub = await stubs.subscribe(customer, plan, today())
        await stubs.subscribe(customer, other_plan, today())
        await ingest_sees_catalog(stubs)
        reply = await stubs.ingest.SendEvent(
            ingest_pb2.SendEventRequest(event=event(customer, event_type, now() - timedelta(seconds=5), 6)), timeout=10
        )
        assert reply.subscription_id == sub
        stored = await stubs.ingest.GetEvent(ingest_pb2.GetEventRequest(idempotency_key=reply.idempotency_key), timeout=10)
        assert stored.event.subscription_id == sub
        await stubs.wait_applied()
        # 6 x $0.10.
        assert usage_total(await upcoming(stubs, sub)) == (Decimal(6), Decimal("0.60"))


class TestUnattributedUsage:
    async def test_events_before_a_backdated_subscription_are_billed_by_the_only_one(self, stubs):
        event_type, meter_key, plan = await stubs.meter_with_plan(per_unit("0.05"))
        customer = await stubs.customer()
        reply = await stubs.ingest.SendEvent(
            ingest_pb2.SendEventRequest(event=event(customer, event_type, now() - timedelta(seconds=5), 361)), timeout=10
        )
        assert reply.subscription_id == ""
        sub = await stubs.subscribe(customer, plan, today())
        await stubs.wait_applied()
        # 361 x $0.05 = $18.05.
        assert usage_total(await upcoming(stubs, sub)) == (Decimal(361), Decimal("18.05"))

    async def test_unattributed_usage_two_subscriptions_could_take_is_billed_by_neither_and_shown(self, stubs):
        event_type, meter_key, plan_a = await stubs.meter_with_plan(per_unit("0.10"))
        plan_b = await second_plan(stubs, meter_key, "0.25")
        customer = await stubs.customer()
        before = (await stubs.meter.GetMeterStatus(meter_pb2.GetMeterStatusRequest(), timeout=10)).unattributed_entries
        # Sent before any subscription exists, then both are backdated over it.
        await stubs.ingest.SendEventBatch(ingest_pb2.SendEventBatchRequest(
            events=[event(customer, event_type, now() - timedelta(seconds=5), 4) for _ in range(2)]), timeout=10)
        sub_a = await stubs.subscribe(customer, plan_a, today())
        sub_b = await stubs.subscribe(customer, plan_b, today())
        await ingest_sees_catalog(stubs)
        await stubs.ingest.SendEvent(ingest_pb2.SendEventRequest(
            event=event(customer, event_type, now() - timedelta(seconds=5), 3, sub_a)), timeout=10)
        await stubs.wait_applied()
        status = await stubs.meter.GetMeterStatus(meter_pb2.GetMeterStatusRequest(), timeout=10)
        assert status.unattributed_entries - before >= 2

        invoice_a, invoice_b = await upcoming(stubs, sub_a), await upcoming(stubs, sub_b)
        # A bills its own 3 units (3 x $0.10); B has none; the 8 unattributed units go to neither.
        assert usage_total(invoice_a) == (Decimal(3), Decimal("0.30"))
        assert usage_total(invoice_b) == (Decimal(0), Decimal("0.00"))
        for invoice, other in ((invoice_a, sub_b), (invoice_b, sub_a)):
            [warning] = invoice.warnings
            assert warning.code == "UNATTRIBUTED_USAGE_NOT_BILLED" and warning.meter_key == meter_key
            assert money(warning.quantity) == 8 and list(warning.competing_subscription_ids) == [other]


class TestSubscriptionReference:
    async def test_events_usage_records_and_queries_may_name_the_subscription_by_the_callers_reference(self, stubs):
        event_type, meter_key, plan_a = await stubs.meter_with_plan(per_unit("0.10"))
        plan_b = await second_plan(stubs, meter_key, "0.25")
        customer = await stubs.customer()
        ref_a, ref_b = unique("team-plan"), unique("addon")
        subs = {}
        for plan, ref in ((plan_a, ref_a), (plan_b, ref_b)):
            reply = await stubs.catalog.CreateSubscription(cpb.CreateSubscriptionRequest(
                customer=common_pb2.CustomerRef(id=customer), plan_key=plan, start_time=ts(today()), external_id=ref),
                timeout=10)
            subs[ref] = reply.subscription.id
        when = now() - timedelta(seconds=5)
        named = event(customer, event_type, when, 2)
        named.subscription.external_id = ref_a
        reply = await stubs.ingest.SendEvent(ingest_pb2.SendEventRequest(event=named), timeout=10)
        assert reply.subscription_id == subs[ref_a]
        usage = await stubs.ingest.RecordUsage(ingest_pb2.RecordUsageRequest(
            customer=common_pb2.CustomerRef(id=customer), meter_key=meter_key, quantity=dec("3"), timestamp=ts(when),
            subscription=common_pb2.SubscriptionRef(external_id=ref_b)), timeout=10)
        assert usage.subscription_id == subs[ref_b]
        unknown = event(customer, event_type, when, 1)
        unknown.subscription.external_id = unique("nobody")
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stubs.ingest.SendEvent(ingest_pb2.SendEventRequest(event=unknown), timeout=10)
        assert violations(error.value) == [("event.subscription", "SUBSCRIPTION_NOT_FOUND")]
        await stubs.wait_applied()
        by_ref = await stubs.meter.GetUsage(meter_pb2.GetUsageRequest(
            customer=common_pb2.CustomerRef(id=customer), meter_key=meter_key, start=ts(today()),
            end=ts(now() + timedelta(minutes=1)), subscription=common_pb2.SubscriptionRef(external_id=ref_b)), timeout=10)
        assert (money(by_ref.value), by_ref.subscription_id) == (3, subs[ref_b])
        # A: 2 x $0.10; B: 3 x $0.25.
        assert usage_total(await upcoming(stubs, subs[ref_a])) == (Decimal(2), Decimal("0.20"))
        assert usage_total(await upcoming(stubs, subs[ref_b])) == (Decimal(3), Decimal("0.75"))


class TestUsageQueriesNamingSubscriptions:
    async def test_contradictory_or_unknown_subscription_scopes_are_refused(self, stubs, two_subscriptions):
        _, meter_key, customer, sub_a, _ = two_subscriptions
        base = dict(customer=common_pb2.CustomerRef(id=customer), meter_key=meter_key, start=ts(today()), end=ts(now()))
        with pytest.raises(grpc.aio.AioRpcError) as alone:
            await stubs.meter.GetUsage(meter_pb2.GetUsageRequest(**base, include_unattributed=True), timeout=10)
        assert violations(alone.value) == [("include_unattributed", "SUBSCRIPTION_REQUIRED")]
        with pytest.raises(grpc.aio.AioRpcError) as both:
            await stubs.meter.GetUsage(meter_pb2.GetUsageRequest(
                **base, only_unattributed=True, subscription=common_pb2.SubscriptionRef(id=sub_a)), timeout=10)
        assert violations(both.value) == [("only_unattributed", "SUBSCRIPTION_CONFLICT")]
        with pytest.raises(grpc.aio.AioRpcError) as blank:
            await stubs.meter.GetUsage(meter_pb2.GetUsageRequest(**base, subscription=common_pb2.SubscriptionRef()), timeout=10)
        assert violations(blank.value) == [("subscription", "SUBSCRIPTION_REF_EMPTY")]
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await stubs.meter.BatchGetUsage(meter_pb2.BatchGetUsageRequest(queries=[meter_pb2.GetUsageRequest(
                **base, subscription=common_pb2.SubscriptionRef(external_id=unique("nobody")))]), timeout=30)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


class TestClosedInvoices:
    async def test_a_closed_invoice_keeps_its_warning_and_the_database_refuses_to_change_it(self, stubs, invoice_service):
        event_type, meter_key, plan_a = await stubs.meter_with_plan(per_unit("0.10"))
        plan_b = await second_plan(stubs, meter_key, "0.25")
        customer = await stubs.customer()
        yesterday = today() - timedelta(days=1)
        # Unattributed (no subscription yet), then both subscriptions backdated over it.
        await stubs.ingest.SendEventBatch(ingest_pb2.SendEventBatchRequest(
            events=[event(customer, event_type, yesterday + timedelta(hours=12), 5)]), timeout=10)
        sub_a = await stubs.subscribe(customer, plan_a, yesterday)
        sub_b = await stubs.subscribe(customer, plan_b, yesterday)
        await stubs.wait_applied()
        await stubs.close(today() + timedelta(hours=1, minutes=1), sub_a, sub_b)
        for subscription, other in ((sub_a, sub_b), (sub_b, sub_a)):
            (invoice,) = await stubs.invoices_of(subscription)
            assert invoice.status == invoice_pb2.INVOICE_STATUS_FINALIZED
            assert usage_total(invoice) == (Decimal(0), Decimal("0.00"))
            [warning] = invoice.warnings
            assert (money(warning.quantity), list(warning.competing_subscription_ids)) == (5, [other])
            stored = await invoice_service.get_invoice(invoice.id)
            assert stored.warnings[0].quantity == 5 and stored.content_hash == invoice.content_hash
        with pytest.raises(Exception, match="finalized"):
            async with invoice_service.engine.begin() as conn:
                await conn.execute(text("UPDATE invoice.invoices SET warnings = '[]'::jsonb WHERE id = :id"), {"id": invoice.id})
