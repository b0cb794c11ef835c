"""SendEvent and SendEventBatch through real gRPC against real Postgres and the real catalog."""

from __future__ import annotations

import asyncio
import uuid
import datetime as dt

import grpc
import pytest

from tests.harness import unique
from tests.ingest.helpers import (
    event,
    expect_error,
    log_cursor_at_head,
    logged_keys,
    now,
    read_log_through_sentinel,
    ts,
    reason,
    violations,
)
from tally.grpc_errors import error_info
from tally_gen.catalog.v1 import catalog_pb2
from tally_gen.common.v1 import common_pb2
from tally_gen.ingest.v1 import ingest_pb2

pytestmark = pytest.mark.timeout(60)

INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
async def customer(ingest_stack):
    return await ingest_stack.customer()


async def send(stack, message):
    return await stack.ingest.SendEvent(ingest_pb2.SendEventRequest(event=message))


class TestSendEvent:
    async def test_an_accepted_event_is_stored_and_returned_by_get_event(self, ingest_stack, customer):
        key = unique("evt")
        when = now() - dt.timedelta(minutes=3)
        reply = await send(ingest_stack, event(customer, key=key, timestamp=when, properties={"region": "eu", "kb": 1.5}))
        assert reply.event_id and reply.idempotency_key == key and not reply.duplicate
        stored = (await ingest_stack.ingest.GetEvent(ingest_pb2.GetEventRequest(idempotency_key=key))).event
        assert stored.event_id == reply.event_id
        assert stored.customer_id == customer.id
        assert stored.event_type == "api_request"
        assert stored.timestamp.ToDatetime(dt.timezone.utc) == when.replace(microsecond=when.microsecond)
        assert dict(stored.properties) == {"region": "eu", "kb": 1.5}
        assert not stored.voided

    async def test_same_key_and_payload_is_a_duplicate_stored_once(self, ingest_stack, customer):
        cursor = await log_cursor_at_head(ingest_stack.ingest)
        message = event(customer, key=unique("evt"), timestamp=now(), properties={"n": 1})
        first = await send(ingest_stack, message)
        second = await send(ingest_stack, message)
        assert not first.duplicate and second.duplicate
        assert second.event_id == first.event_id
        keys = logged_keys(await read_log_through_sentinel(ingest_stack, cursor, customer))
        assert keys.count(message.idempotency_key) == 1

    async def test_same_key_with_a_different_payload_is_already_exists_naming_the_key(self, ingest_stack, customer):
        key = unique("evt")
        await send(ingest_stack, event(customer, key=key, timestamp=now(), properties={"n": 1}))
        error = await expect_error(
            send(ingest_stack, event(customer, key=key, timestamp=now(), properties={"n": 2})),
            grpc.StatusCode.ALREADY_EXISTS,
        )
        assert key in error.details()
        info = error_info(error)
        assert info.reason == "IDEMPOTENCY_KEY_CONFLICT"
        assert info.metadata["idempotency_key"] == key
        stored = (await ingest_stack.ingest.GetEvent(ingest_pb2.GetEventRequest(idempotency_key=key))).event
        assert dict(stored.properties) == {"n": 1}

    async def test_an_event_without_a_key_gets_a_generated_key_and_each_call_counts_once(self, ingest_stack, customer):
        # The same content twice, even with the same timestamp: two calls, two events.
        when = now()
        first = await send(ingest_stack, event(customer, timestamp=when, properties={"x": "y"}))
        again = await send(ingest_stack, event(customer, timestamp=when, properties={"x": "y"}))
        assert not first.duplicate and not again.duplicate
        assert first.event_id != again.event_id and first.idempotency_key != again.idempotency_key
        assert uuid.UUID(first.idempotency_key).version == 7
        for reply in (first, again):
            stored = (await ingest_stack.ingest.GetEvent(ingest_pb2.GetEventRequest(idempotency_key=reply.idempotency_key))).event
            assert stored.event_id == reply.event_id

    async def test_identical_key_less_events_without_timestamps_sent_seconds_apart_are_two_events(self, ingest_stack, customer):
        first = await send(ingest_stack, event(customer, properties={"x": "y"}))
        again = await send(ingest_stack, event(customer, properties={"x": "y"}))
        assert (first.duplicate, again.duplicate) == (False, False)
        assert first.event_id != again.event_id

    async def test_key_less_events_in_one_batch_are_each_stored(self, ingest_stack, customer):
        same = event(customer, timestamp=now(), properties={"x": "y"})
        reply = await ingest_stack.ingest.SendEventBatch(ingest_pb2.SendEventBatchRequest(events=[same, same, same]))
        assert reply.accepted_count == 3 and reply.duplicate_count == 0
        assert len({r.idempotency_key for r in reply.results}) == 3

    async def test_the_timestamp_defaults_to_the_time_received(self, ingest_stack, customer):
        before = now()
        reply = await send(ingest_stack, event(customer, key=unique("evt")))
        stored = (await ingest_stack.ingest.GetEvent(ingest_pb2.GetEventRequest(idempotency_key=reply.idempotency_key))).event
        assert before - dt.timedelta(seconds=1) <= stored.timestamp.ToDatetime(dt.timezone.utc) <= now()

    async def test_concurrent_senders_of_one_key_store_it_once(self, ingest_stack, customer):
        message = event(customer, key=unique("evt"), timestamp=now())
        replies = await asyncio.gather(*(send(ingest_stack, message) for _ in range(8)))
        assert sum(not r.duplicate for r in replies) == 1
        assert len({r.event_id for r in replies}) == 1


    async def test_concurrent_senders_are_answered_each_with_their_own_outcome(self, ingest_stack, customer):
        taken = event(customer, key=unique("g"), timestamp=now(), properties={"v": 1})
        await send(ingest_stack, taken)
        fresh = [event(customer, key=unique("g"), timestamp=now()) for _ in range(30)]
        clash = event(customer, key=taken.idempotency_key, timestamp=now(), properties={"v": 2})
        results = await asyncio.gather(
            *(send(ingest_stack, m) for m in [*fresh, clash, taken]), return_exceptions=True
        )
        replies, conflict, duplicate = results[:30], results[30], results[31]
        assert all(not r.duplicate for r in replies)
        assert [r.idempotency_key for r in replies] == [m.idempotency_key for m in fresh]
        assert len({r.event_id for r in replies}) == 30
        assert isinstance(conflict, grpc.aio.AioRpcError) and conflict.code() == grpc.StatusCode.ALREADY_EXISTS
        assert duplicate.duplicate


class TestCustomerLookup:
    async def test_an_event_may_name_its_customer_by_external_id(self, ingest_stack):
        external = unique("acct")
        customer = await ingest_stack.customer(external)
        reply = await send(ingest_stack, event(customer, key=unique("evt"), by_external_id=True))
        stored = (await ingest_stack.ingest.GetEvent(ingest_pb2.GetEventRequest(idempotency_key=reply.idempotency_key))).event
        assert stored.customer_id == customer.id

    async def test_an_event_may_name_its_customer_by_tally_id(self, ingest_stack, customer):
        reply = await send(ingest_stack, event(customer, key=unique("evt"), by_external_id=False))
        stored = (await ingest_stack.ingest.GetEvent(ingest_pb2.GetEventRequest(idempotency_key=reply.idempotency_key))).event
        assert stored.customer_id == customer.id


class TestValidation:
    async def test_a_timestamp_more_than_five_minutes_ahead_is_rejected(self, ingest_stack, customer):
        error = await expect_error(
            send(ingest_stack, event(customer, key=unique("e"), timestamp=now() + dt.timedelta(minutes=6))), INVALID
        )
        assert [f for f, _ in violations(error)] == ["event.timestamp"]

    async def test_a_timestamp_four_minutes_ahead_is_accepted(self, ingest_stack, customer):
        reply = await send(ingest_stack, event(customer, key=unique("e"), timestamp=now() + dt.timedelta(minutes=4)))
        assert reply.event_id

    async def test_a_timestamp_older_than_the_late_event_window_is_rejected(self, ingest_stack, customer):
        error = await expect_error(
            send(ingest_stack, event(customer, key=unique("e"), timestamp=now() - dt.timedelta(days=36))), INVALID
        )
        assert violations(error)[0][0] == "event.timestamp"
        assert "35 days" in violations(error)[0][1]

    async def test_an_unknown_customer_is_rejected(self, ingest_stack):
        from tally_gen.catalog.v1 import catalog_pb2

        ghost = catalog_pb2.Customer(id="cus_missing", external_id=unique("ghost"))
        error = await expect_error(send(ingest_stack, event(ghost, key=unique("e"))), INVALID)
        field, description = violations(error)[0]
        assert field == "event.customer" and ghost.external_id in description

    async def test_a_missing_customer_is_rejected(self, ingest_stack):
        error = await expect_error(
            send(ingest_stack, ingest_pb2.Event(idempotency_key=unique("e"), event_type="api_request")), INVALID
        )
        assert [f for f, _ in violations(error)] == ["event.customer"]

    async def test_properties_larger_than_8_kb_are_rejected(self, ingest_stack, customer):
        error = await expect_error(
            send(ingest_stack, event(customer, key=unique("e"), properties={"blob": "x" * 8200})), INVALID
        )
        assert [f for f, _ in violations(error)] == ["event.properties"]

    async def test_properties_nested_deeper_than_8_levels_are_rejected(self, ingest_stack, customer):
        deep: dict = {"leaf": 1}
        for _ in range(8):
            deep = {"d": deep}
        error = await expect_error(send(ingest_stack, event(customer, key=unique("e"), properties=deep)), INVALID)
        assert [f for f, _ in violations(error)] == ["event.properties"]
        assert "9" in violations(error)[0][1]

    async def test_properties_nested_exactly_8_levels_are_accepted(self, ingest_stack, customer):
        deep: dict = {"leaf": 1}
        for _ in range(7):
            deep = {"d": deep}
        assert (await send(ingest_stack, event(customer, key=unique("e"), properties=deep))).event_id

    @pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
    async def test_a_nan_or_infinite_number_is_rejected(self, ingest_stack, customer, bad):
        error = await expect_error(
            send(ingest_stack, event(customer, key=unique("e"), properties={"ok": 1, "usage": {"x": bad}})), INVALID
        )
        assert [f for f, _ in violations(error)] == ["event.properties.usage.x"]

    async def test_a_blank_idempotency_key_is_rejected(self, ingest_stack, customer):
        error = await expect_error(send(ingest_stack, event(customer, key="   ")), INVALID)
        assert [f for f, _ in violations(error)] == ["event.idempotency_key"]

    async def test_an_idempotency_key_longer_than_255_characters_is_rejected(self, ingest_stack, customer):
        error = await expect_error(send(ingest_stack, event(customer, key="k" * 256)), INVALID)
        assert [f for f, _ in violations(error)] == ["event.idempotency_key"]

    async def test_an_idempotency_key_of_255_characters_is_accepted(self, ingest_stack, customer):
        key = unique("k").ljust(255, "k")
        assert (await send(ingest_stack, event(customer, key=key))).idempotency_key == key

    async def test_a_missing_event_type_is_rejected(self, ingest_stack, customer):
        error = await expect_error(send(ingest_stack, event(customer, key=unique("e"), event_type="")), INVALID)
        assert [f for f, _ in violations(error)] == ["event.event_type"]

    async def test_every_problem_of_an_event_is_reported_at_once(self, ingest_stack, customer):
        bad = event(customer, key="k" * 300, event_type="", timestamp=now() + dt.timedelta(hours=1))
        error = await expect_error(send(ingest_stack, bad), INVALID)
        assert sorted(f for f, _ in violations(error)) == ["event.event_type", "event.idempotency_key", "event.timestamp"]


class TestSendEventBatch:
    async def test_an_atomic_batch_with_one_bad_event_stores_nothing(self, ingest_stack, customer):
        cursor = await log_cursor_at_head(ingest_stack.ingest)
        events = [event(customer, key=unique("b")) for _ in range(5)]
        events[1].event_type = ""
        events[3].timestamp.FromDatetime(now() + dt.timedelta(days=1))
        error = await expect_error(
            ingest_stack.ingest.SendEventBatch(ingest_pb2.SendEventBatchRequest(events=events)), INVALID
        )
        assert [f for f, _ in violations(error)] == ["events[1].event_type", "events[3].timestamp"]
        sent = {e.idempotency_key for e in events}
        assert not set(logged_keys(await read_log_through_sentinel(ingest_stack, cursor, customer))) & sent
        await expect_error(
            ingest_stack.ingest.GetEvent(ingest_pb2.GetEventRequest(idempotency_key=events[0].idempotency_key)),
            grpc.StatusCode.NOT_FOUND,
        )

    async def test_an_atomic_batch_with_a_conflicting_key_stores_nothing(self, ingest_stack, customer):
        taken = event(customer, key=unique("b"), properties={"v": 1})
        await send(ingest_stack, taken)
        clash = event(customer, key=taken.idempotency_key, properties={"v": 2})
        fresh = event(customer, key=unique("b"))
        error = await expect_error(
            ingest_stack.ingest.SendEventBatch(ingest_pb2.SendEventBatchRequest(events=[fresh, clash])),
            grpc.StatusCode.ALREADY_EXISTS,
        )
        assert error_info(error).metadata["idempotency_key"] == taken.idempotency_key
        assert [f for f, _ in violations(error)] == ["events[1].idempotency_key"]
        await expect_error(
            ingest_stack.ingest.GetEvent(ingest_pb2.GetEventRequest(idempotency_key=fresh.idempotency_key)),
            grpc.StatusCode.NOT_FOUND,
        )

    async def test_an_atomic_batch_repeating_a_key_with_another_payload_stores_nothing(self, ingest_stack, customer):
        key = unique("rep")
        events = [event(customer, key=unique("b")), event(customer, key=key, properties={"q": 1}),
                  event(customer, key=key, properties={"q": 2})]
        error = await expect_error(
            ingest_stack.ingest.SendEventBatch(ingest_pb2.SendEventBatchRequest(events=events)),
            grpc.StatusCode.ALREADY_EXISTS,
        )
        assert [f for f, _ in violations(error)] == ["events[2].idempotency_key"]
        for sent in events:
            await expect_error(
                ingest_stack.ingest.GetEvent(ingest_pb2.GetEventRequest(idempotency_key=sent.idempotency_key)),
                grpc.StatusCode.NOT_FOUND,
            )

    async def test_a_valid_atomic_batch_stores_every_event(self, ingest_stack, customer):
        events = [event(customer, key=unique("b"), properties={"i": i}) for i in range(20)]
        reply = await ingest_stack.ingest.SendEventBatch(ingest_pb2.SendEventBatchRequest(events=events))
        assert (reply.accepted_count, reply.duplicate_count, reply.rejected_count) == (20, 0, 0)
        assert [r.index for r in reply.results] == list(range(20))
        assert [r.idempotency_key for r in reply.results] == [e.idempotency_key for e in events]

    async def test_a_partial_batch_stores_the_valid_events_and_reports_each(self, ingest_stack, customer):
        taken = event(customer, key=unique("p"), properties={"v": 1})
        await send(ingest_stack, taken)
        events = [
            event(customer, key=unique("p")),
            event(customer, key=unique("p"), event_type=""),
            taken,
            event(customer, key=taken.idempotency_key, properties={"v": 2}),
            event(customer, key=unique("p"), timestamp=now() - dt.timedelta(days=40)),
        ]
        reply = await ingest_stack.ingest.SendEventBatch(
            ingest_pb2.SendEventBatchRequest(events=events, mode=ingest_pb2.BATCH_MODE_PARTIAL)
        )
        statuses = [r.status for r in reply.results]
        assert statuses == [
            ingest_pb2.EVENT_STATUS_ACCEPTED,
            ingest_pb2.EVENT_STATUS_REJECTED,
            ingest_pb2.EVENT_STATUS_DUPLICATE,
            ingest_pb2.EVENT_STATUS_REJECTED,
            ingest_pb2.EVENT_STATUS_REJECTED,
        ]
        assert (reply.accepted_count, reply.duplicate_count, reply.rejected_count) == (1, 1, 3)
        assert reply.results[1].violations[0].field == "events[1].event_type"
        assert reply.results[3].violations[0].reason == "IDEMPOTENCY_KEY_CONFLICT"
        assert reply.results[4].violations[0].reason == "TIMESTAMP_TOO_OLD"
        stored = await ingest_stack.ingest.GetEvent(ingest_pb2.GetEventRequest(idempotency_key=events[0].idempotency_key))
        assert stored.event.event_id == reply.results[0].event_id

    async def test_a_key_repeated_within_a_batch_is_stored_once(self, ingest_stack, customer):
        message = event(customer, key=unique("r"), timestamp=now())
        reply = await ingest_stack.ingest.SendEventBatch(
            ingest_pb2.SendEventBatchRequest(events=[message, message], mode=ingest_pb2.BATCH_MODE_PARTIAL)
        )
        assert [r.status for r in reply.results] == [ingest_pb2.EVENT_STATUS_ACCEPTED, ingest_pb2.EVENT_STATUS_DUPLICATE]
        assert reply.results[0].event_id == reply.results[1].event_id

    async def test_a_batch_of_more_than_1000_events_is_rejected(self, ingest_stack, customer):
        events = [event(customer, key=f"{unique('big')}") for _ in range(1001)]
        error = await expect_error(
            ingest_stack.ingest.SendEventBatch(
                ingest_pb2.SendEventBatchRequest(events=events, mode=ingest_pb2.BATCH_MODE_PARTIAL)
            ),
            INVALID,
        )
        assert [f for f, _ in violations(error)] == ["events"]
        assert reason(error) == "INVALID"

    async def test_a_batch_of_exactly_1000_events_is_accepted(self, ingest_stack, customer):
        events = [event(customer, key=unique("full")) for _ in range(1000)]
        reply = await ingest_stack.ingest.SendEventBatch(ingest_pb2.SendEventBatchRequest(events=events))
        assert reply.accepted_count == 1000


class TestUnmeteredEvents:
    async def test_events_no_meter_reads_are_stored_and_counted_by_type(self, ingest_stack, customer):
        metered_type, unmetered_type = unique("metered"), unique("orphan")
        await ingest_stack.meter(metered_type)
        # The cache follows the catalog's change feed; wait until it holds the new meter.
        for _ in range(100):
            reply = await send(ingest_stack, event(customer, key=unique("probe"), event_type=metered_type))
            probe = await ingest_stack.ingest.GetEvent(ingest_pb2.GetEventRequest(idempotency_key=reply.idempotency_key))
            if probe.event.metered:
                break
            await asyncio.sleep(0.05)
        assert probe.event.metered
        before = await ingest_stack.ingest.GetIngestStats(ingest_pb2.GetIngestStatsRequest())
        for _ in range(3):
            await send(ingest_stack, event(customer, key=unique("o"), event_type=unmetered_type))
        await send(ingest_stack, event(customer, key=unique("m"), event_type=metered_type))
        after = await ingest_stack.ingest.GetIngestStats(ingest_pb2.GetIngestStatsRequest())
        by_type = {c.event_type: c.count for c in after.unmetered_by_type}
        before_by_type = {c.event_type: c.count for c in before.unmetered_by_type}
        assert by_type[unmetered_type] == 3
        # Probes sent before the cache held the meter count as unmetered; none after it.
        assert by_type.get(metered_type, 0) == before_by_type.get(metered_type, 0)
        assert after.unmetered_total - before.unmetered_total == 3
        assert after.events_total - before.events_total == 4
        assert after.head_position > before.head_position



async def subscribed_customer(stack, event_type: str):
    """A customer subscribed (since an hour ago) to a plan charging a COUNT meter on ``event_type``:
    (customer, subscription id, meter key), once ingest's catalog cache holds them."""
    meter = await stack.meter(event_type)
    plan_key = unique("plan")
    price = catalog_pb2.Price(model=catalog_pb2.PRICING_MODEL_PER_UNIT, unit_price=common_pb2.Decimal(value="1"))
    await stack.catalog.CreatePlan(catalog_pb2.CreatePlanRequest(plan=catalog_pb2.PlanSpec(
        key=plan_key, name="Plan", currency="USD", interval=catalog_pb2.BILLING_INTERVAL_MONTH, interval_count=1,
        charges=[catalog_pb2.Charge(key="calls", name="Calls", usage=catalog_pb2.UsageCharge(meter_key=meter.key, price=price))],
    )))
    customer = await stack.customer()
    reply = await stack.catalog.CreateSubscription(catalog_pb2.CreateSubscriptionRequest(
        customer=common_pb2.CustomerRef(id=customer.id), plan_key=plan_key,
        start_time=ts(now() - dt.timedelta(hours=1))))
    target = (await stack.catalog.GetCatalogRevision(catalog_pb2.GetCatalogRevisionRequest())).revision
    for _ in range(500):
        if (await stack.ingest.GetIngestStats(ingest_pb2.GetIngestStatsRequest())).catalog_revision >= target:
            break
        await asyncio.sleep(0.02)
    return customer, reply.subscription.id, meter.key


class TestAttributionAtIngest:
    async def test_the_attributed_subscription_is_stored_returned_and_carried_on_the_log(self, ingest_stack):
        event_type = unique("t")
        customer, subscription_id, meter_key = await subscribed_customer(ingest_stack, event_type)
        cursor = await log_cursor_at_head(ingest_stack.ingest)
        key, when = unique("evt"), now()
        reply = await send(ingest_stack, event(customer, key=key, event_type=event_type, timestamp=when))
        again = await send(ingest_stack, event(customer, key=key, event_type=event_type, timestamp=when))
        assert (reply.subscription_id, again.subscription_id, again.duplicate) == (subscription_id, subscription_id, True)
        stored = (await ingest_stack.ingest.GetEvent(ingest_pb2.GetEventRequest(idempotency_key=key))).event
        assert stored.subscription_id == subscription_id
        usage = await ingest_stack.ingest.RecordUsage(ingest_pb2.RecordUsageRequest(
            customer=common_pb2.CustomerRef(id=customer.id), meter_key=meter_key, quantity=common_pb2.Decimal(value="2"),
            subscription=common_pb2.SubscriptionRef(id=subscription_id)))
        assert usage.subscription_id == subscription_id and uuid.UUID(usage.idempotency_key).version == 7
        entries = await read_log_through_sentinel(ingest_stack, cursor, customer)
        logged = {getattr(e, e.WhichOneof("entry")).idempotency_key: e for e in entries}
        assert logged[key].event.subscription_id == subscription_id
        assert logged[usage.idempotency_key].usage.subscription_id == subscription_id

    async def test_a_blank_or_oversized_subscription_reference_is_a_field_violation(self, ingest_stack, customer):
        blank = event(customer, key=unique("evt"), timestamp=now())
        blank.subscription.id = ""
        huge = event(customer, key=unique("evt"), timestamp=now())
        huge.subscription.external_id = "x" * 300
        error = await expect_error(
            ingest_stack.ingest.SendEventBatch(ingest_pb2.SendEventBatchRequest(events=[blank, huge])),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert violations(error) == [
            ("events[0].subscription", "must name a subscription by id or external_id"),
            ("events[1].subscription", "must be at most 256 characters"),
        ]
