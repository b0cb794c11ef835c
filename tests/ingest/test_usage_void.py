"""RecordUsage and VoidEvent."""

from __future__ import annotations

import asyncio
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
    read_log_after,
    read_log_through_sentinel,
    ts,
    violations,
)
from tally.grpc_errors import error_info
from tally_gen.common.v1 import common_pb2
from tally_gen.ingest.v1 import ingest_pb2

pytestmark = pytest.mark.timeout(60)
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
async def usage_setup(ingest_stack):
    customer = await ingest_stack.customer()
    meter = await ingest_stack.meter(unique("minutes"), group_by=("region",))
    return customer, meter


def usage(customer, meter_key: str, quantity: str = "22", **fields) -> ingest_pb2.RecordUsageRequest:
    request = ingest_pb2.RecordUsageRequest(
        idempotency_key=fields.pop("key", unique("u")),
        customer=common_pb2.CustomerRef(external_id=customer.external_id),
        meter_key=meter_key,
        quantity=common_pb2.Decimal(value=quantity),
        **fields,
    )
    return request


class TestRecordUsage:
    async def test_a_range_record_is_logged_as_given(self, ingest_stack, usage_setup):
        customer, meter = usage_setup
        cursor = await log_cursor_at_head(ingest_stack.ingest)
        start = now().replace(microsecond=0) - dt.timedelta(days=1)
        request = usage(
            customer,
            meter.key,
            "22.000000000001",
            memo="22 minutes",
            range=common_pb2.TimeRange(start=ts(start), end=ts(start + dt.timedelta(hours=24))),
            dimensions={"region": "eu"},
        )
        reply = await ingest_stack.ingest.RecordUsage(request)
        assert reply.usage_record_id and not reply.duplicate
        entries = await read_log_after(ingest_stack.ingest, cursor, {request.idempotency_key})
        [entry] = [e for e in entries if e.WhichOneof("entry") == "usage" and e.usage.idempotency_key == request.idempotency_key]
        logged = entry.usage
        assert logged.quantity.value == "22.000000000001"
        assert logged.customer_id == customer.id and logged.meter_key == meter.key and logged.memo == "22 minutes"
        assert logged.timestamp.ToDatetime(dt.timezone.utc) == start
        assert logged.range.end.ToDatetime(dt.timezone.utc) == start + dt.timedelta(hours=24)
        assert dict(logged.dimensions) == {"region": "eu"}

    async def test_a_retried_record_is_a_duplicate_and_a_changed_one_a_conflict(self, ingest_stack, usage_setup):
        customer, meter = usage_setup
        request = usage(customer, meter.key, "10", timestamp=ts(now()))
        first = await ingest_stack.ingest.RecordUsage(request)
        again = await ingest_stack.ingest.RecordUsage(request)
        assert again.duplicate and again.usage_record_id == first.usage_record_id
        request.quantity.value = "11"
        error = await expect_error(ingest_stack.ingest.RecordUsage(request), grpc.StatusCode.ALREADY_EXISTS)
        assert error_info(error).metadata["idempotency_key"] == request.idempotency_key

    async def test_a_negative_quantity_is_rejected(self, ingest_stack, usage_setup):
        customer, meter = usage_setup
        error = await expect_error(ingest_stack.ingest.RecordUsage(usage(customer, meter.key, "-1")), INVALID)
        assert [f for f, _ in violations(error)] == ["quantity"]

    @pytest.mark.parametrize("bad", ["", "abc", "1e", "NaN", "Infinity"])
    async def test_a_quantity_that_is_not_a_decimal_is_rejected(self, ingest_stack, usage_setup, bad):
        customer, meter = usage_setup
        error = await expect_error(ingest_stack.ingest.RecordUsage(usage(customer, meter.key, bad)), INVALID)
        assert [f for f, _ in violations(error)] == ["quantity"]

    async def test_an_unknown_meter_is_rejected(self, ingest_stack, usage_setup):
        customer, _ = usage_setup
        error = await expect_error(ingest_stack.ingest.RecordUsage(usage(customer, unique("nometer"))), INVALID)
        assert [f for f, _ in violations(error)] == ["meter_key"]

    async def test_a_meter_created_a_moment_ago_is_known(self, ingest_stack):
        customer = await ingest_stack.customer()
        meter = await ingest_stack.meter(unique("fresh"))
        assert (await ingest_stack.ingest.RecordUsage(usage(customer, meter.key))).usage_record_id

    async def test_a_range_that_ends_at_or_before_its_start_is_rejected(self, ingest_stack, usage_setup):
        customer, meter = usage_setup
        start = now() - dt.timedelta(hours=2)
        request = usage(customer, meter.key, range=common_pb2.TimeRange(start=ts(start), end=ts(start)))
        error = await expect_error(ingest_stack.ingest.RecordUsage(request), INVALID)
        assert [f for f, _ in violations(error)] == ["range.end"]

    async def test_an_unknown_customer_is_rejected(self, ingest_stack, usage_setup):
        _, meter = usage_setup
        request = usage(common_pb2.CustomerRef(external_id=unique("ghost")), meter.key)
        error = await expect_error(ingest_stack.ingest.RecordUsage(request), INVALID)
        assert [f for f, _ in violations(error)] == ["customer"]


class TestVoidEvent:
    async def test_voiding_logs_a_void_carrying_the_event(self, ingest_stack):
        customer = await ingest_stack.customer()
        message = event(customer, key=unique("v"), properties={"minutes": 3})
        sent = await ingest_stack.ingest.SendEvent(ingest_pb2.SendEventRequest(event=message))
        cursor = await log_cursor_at_head(ingest_stack.ingest)
        reply = await ingest_stack.ingest.VoidEvent(
            ingest_pb2.VoidEventRequest(idempotency_key=message.idempotency_key, reason="sent by mistake")
        )
        assert reply.event_id == sent.event_id and not reply.already_voided
        entries = await read_log_after(ingest_stack.ingest, cursor, {message.idempotency_key})
        [entry] = [e for e in entries if e.WhichOneof("entry") == "void" and e.void.idempotency_key == message.idempotency_key]
        assert entry.void.event_id == sent.event_id and entry.void.reason == "sent by mistake"
        assert dict(entry.void.event.properties) == {"minutes": 3}
        stored = await ingest_stack.ingest.GetEvent(ingest_pb2.GetEventRequest(idempotency_key=message.idempotency_key))
        assert stored.event.voided and stored.event.void_reason == "sent by mistake"

    async def test_voiding_a_voided_event_changes_nothing(self, ingest_stack):
        customer = await ingest_stack.customer()
        message = event(customer, key=unique("v"))
        await ingest_stack.ingest.SendEvent(ingest_pb2.SendEventRequest(event=message))
        first = await ingest_stack.ingest.VoidEvent(ingest_pb2.VoidEventRequest(idempotency_key=message.idempotency_key, reason="a"))
        cursor = await log_cursor_at_head(ingest_stack.ingest)
        replies = await asyncio.gather(
            *(
                ingest_stack.ingest.VoidEvent(ingest_pb2.VoidEventRequest(idempotency_key=message.idempotency_key, reason="b"))
                for _ in range(3)
            )
        )
        assert all(r.already_voided for r in replies)
        assert {r.void_time.ToDatetime() for r in replies} == {first.void_time.ToDatetime()}
        entries = await read_log_through_sentinel(ingest_stack, cursor, customer)
        assert message.idempotency_key not in logged_keys(entries, "void")
        stored = await ingest_stack.ingest.GetEvent(ingest_pb2.GetEventRequest(idempotency_key=message.idempotency_key))
        assert stored.event.void_reason == "a"

    async def test_voiding_an_unknown_key_is_not_found(self, ingest_stack):
        await expect_error(
            ingest_stack.ingest.VoidEvent(ingest_pb2.VoidEventRequest(idempotency_key=unique("none"))),
            grpc.StatusCode.NOT_FOUND,
        )

    async def test_a_voided_event_resent_is_still_a_duplicate(self, ingest_stack):
        customer = await ingest_stack.customer()
        message = event(customer, key=unique("v"), timestamp=now())
        await ingest_stack.ingest.SendEvent(ingest_pb2.SendEventRequest(event=message))
        await ingest_stack.ingest.VoidEvent(ingest_pb2.VoidEventRequest(idempotency_key=message.idempotency_key))
        again = await ingest_stack.ingest.SendEvent(ingest_pb2.SendEventRequest(event=message))
        assert again.duplicate
