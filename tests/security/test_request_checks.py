"""Requests are parsed and checked before any handler: malformed bytes, unknown enum numbers
and invalid Timestamps answer INVALID_ARGUMENT naming the field, never UNKNOWN."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest

from tally.grpc_errors import field_violations
from tally.request_checks import request_violations
from tally.server import ServiceApp
from tally_gen.catalog.v1 import catalog_pb2
from tally_gen.common.v1 import common_pb2
from tally_gen.ingest.v1 import ingest_pb2
from tests.harness import in_process
from tests.security.wire import field_bytes, timestamp

INGEST = "tally.ingest.v1.IngestService"
NOW = dt.datetime(2026, 1, 15, 12, tzinfo=dt.timezone.utc)


def event(seconds: int | None = None, nanos: int = 0) -> ingest_pb2.Event:
    out = ingest_pb2.Event(idempotency_key="k", event_type="api", customer=common_pb2.CustomerRef(id="c"))
    out.timestamp.FromDatetime(NOW)
    if seconds is not None:
        out.timestamp.seconds = seconds
    out.timestamp.nanos = nanos
    return out


def fields(violations) -> list[str]:
    return [v.field for v in violations]


class TestRequestViolations:
    def test_a_valid_request_has_none(self):
        assert request_violations(ingest_pb2.SendEventBatchRequest(events=[event()] * 3, mode=2)) == []

    def test_an_unknown_enum_number_is_named_by_its_field(self):
        violations = request_violations(ingest_pb2.SendEventBatchRequest(mode=7))
        assert fields(violations) == ["mode"]
        assert violations[0].reason == "UNKNOWN_ENUM"

    def test_an_enum_inside_repeated_messages_is_named_with_its_index(self):
        price = catalog_pb2.Price(model=42)
        request = catalog_pb2.CreatePlanRequest(
            plan=catalog_pb2.PlanSpec(
                charges=[
                    catalog_pb2.Charge(key="ok", usage=catalog_pb2.UsageCharge(price=catalog_pb2.Price(model=1))),
                    catalog_pb2.Charge(key="bad", usage=catalog_pb2.UsageCharge(price=price)),
                ],
                interval=99,
            )
        )
        assert fields(request_violations(request)) == ["plan.interval", "plan.charges[1].usage.price.model"]

    @pytest.mark.parametrize(
        "seconds, nanos",
        [(2**40, 0), (-70_000_000_000, 0), (1_768_478_400, -1), (1_768_478_400, 1_000_000_000)],
    )
    def test_a_timestamp_outside_the_valid_range_is_named(self, seconds, nanos):
        violations = request_violations(ingest_pb2.SendEventRequest(event=event(seconds, nanos)))
        assert fields(violations) == ["event.timestamp"]
        assert violations[0].reason == "INVALID_TIMESTAMP"

    def test_the_extremes_of_the_valid_range_pass(self):
        # tally.wire's instant range: [1970-01-01, 2200-01-01).
        assert request_violations(ingest_pb2.SendEventRequest(event=event(0))) == []
        assert request_violations(ingest_pb2.SendEventRequest(event=event(7_258_118_399, 999_999_999))) == []

    @pytest.mark.parametrize(
        "seconds",
        [-62_135_596_800, -1, 7_258_118_400, 253_402_300_799],
        ids=["0001-01-01", "1969-12-31T23:59:59", "2200-01-01", "9999-12-31T23:59:59"],
    )
    def test_a_timestamp_protobuf_allows_but_outside_tallys_range_is_named(self, seconds):
        violations = request_violations(ingest_pb2.SendEventRequest(event=event(seconds)))
        assert fields(violations) == ["event.timestamp"]
        assert "1970-01-01" in violations[0].description

    def test_timestamps_inside_batches_are_left_to_the_thorough_pass(self):
        request = ingest_pb2.SendEventBatchRequest(events=[event(), event(2**40)])
        assert request_violations(request) == []
        assert fields(request_violations(request, thorough=True)) == ["events[1].timestamp"]


def crashing_app(seen: list) -> ServiceApp:
    """A SendEvent that crashes the way careless mapping code does: ToDatetime on any input."""

    async def send_event(request: ingest_pb2.SendEventRequest, context):
        seen.append(request)
        request.event.timestamp.ToDatetime()
        if request.event.event_type == "boom":
            raise ValueError("a bug that is not the caller's fault")
        return ingest_pb2.SendEventResponse(event_id="e1")

    async def send_batch(request: ingest_pb2.SendEventBatchRequest, context):
        seen.append(request)
        for item in request.events:
            item.timestamp.ToDatetime()
        return ingest_pb2.SendEventBatchResponse(accepted_count=len(request.events))

    handlers = {
        "SendEvent": grpc.unary_unary_rpc_method_handler(
            send_event, ingest_pb2.SendEventRequest.FromString, ingest_pb2.SendEventResponse.SerializeToString
        ),
        "SendEventBatch": grpc.unary_unary_rpc_method_handler(
            send_batch, ingest_pb2.SendEventBatchRequest.FromString, ingest_pb2.SendEventBatchResponse.SerializeToString
        ),
    }
    return ServiceApp(
        name="probe",
        service_names=[INGEST],
        register=lambda server: server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(INGEST, handlers),)),
    )


async def rejected(channel, method: str, payload: bytes) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await channel.unary_unary(f"/{INGEST}/{method}")(payload, timeout=5)
    return caught.value


class TestServerSideChecks:
    async def test_bytes_that_are_not_a_message_get_invalid_argument_on_field_request(self):
        seen: list = []
        async with in_process(crashing_app(seen)) as (_running, channel):
            error = await rejected(channel, "SendEvent", field_bytes(1, field_bytes(1, b"\xff\xfe")))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [f for f, _ in field_violations(error)] == ["request"]
        assert seen == []

    async def test_an_invalid_timestamp_never_reaches_the_handler(self):
        seen: list = []
        async with in_process(crashing_app(seen)) as (_running, channel):
            payload = field_bytes(1, event().SerializeToString() + field_bytes(4, timestamp(2**40)))
            error = await rejected(channel, "SendEvent", payload)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [f for f, _ in field_violations(error)] == ["event.timestamp"]
        assert seen == []

    async def test_a_handler_that_trips_over_an_invalid_timestamp_in_a_batch_answers_invalid_argument(self):
        seen: list = []
        async with in_process(crashing_app(seen)) as (_running, channel):
            request = ingest_pb2.SendEventBatchRequest(events=[event(), event(2**40)])
            error = await rejected(channel, "SendEventBatch", request.SerializeToString())
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [f for f, _ in field_violations(error)] == ["events[1].timestamp"]
        assert len(seen) == 1

    async def test_a_handler_bug_on_a_valid_request_is_not_blamed_on_the_caller(self):
        seen: list = []
        async with in_process(crashing_app(seen)) as (_running, channel):
            request = ingest_pb2.SendEventRequest(event=event())
            request.event.event_type = "boom"
            error = await rejected(channel, "SendEvent", request.SerializeToString())
        assert error.code() == grpc.StatusCode.UNKNOWN
