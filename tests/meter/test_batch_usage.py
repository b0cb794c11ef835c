"""BatchGetUsage through the real services (ingest -> meter): the same answers as GetUsage."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from tally.channels import connect
from tally_gen.common.v1 import common_pb2
from tally_gen.meter.v1 import meter_pb2
from tests.harness import unique
from tests.meter.helpers import Stubs, ts

UTC = timezone.utc
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
async def stubs(services):
    channels = [connect(services.address(s)) for s in ("catalog", "ingest", "meter")]
    yield Stubs(*channels)
    for channel in channels:
        await channel.close()


def query(customer: str, meter: str, start: datetime, end: datetime, **kwargs) -> meter_pb2.GetUsageRequest:
    return meter_pb2.GetUsageRequest(
        customer=common_pb2.CustomerRef(id=customer), meter_key=meter, start=ts(start), end=ts(end), **kwargs
    )


def field_violations(error: grpc.aio.AioRpcError) -> set[str]:
    status = status_pb2.Status.FromString(dict(error.trailing_metadata())["grpc-status-details-bin"])
    request = error_details_pb2.BadRequest()
    [detail] = [d for d in status.details if d.Is(error_details_pb2.BadRequest.DESCRIPTOR)]
    detail.Unpack(request)
    return {v.field for v in request.field_violations}


def without_position(reply: meter_pb2.GetUsageResponse) -> meter_pb2.GetUsageResponse:
    copy = meter_pb2.GetUsageResponse()
    copy.CopyFrom(reply)
    copy.applied_position = 0
    return copy


class TestBatchGetUsage:
    async def test_batch_answers_exactly_what_get_usage_answers_for_each_query(self, stubs):
        event_type = unique("job")
        sum_meter = await stubs.create_meter(event_type, "SUM", "n", group_by=["region", "model"])
        meters = [sum_meter] + [
            await stubs.create_meter(event_type, aggregation, prop)
            for aggregation, prop in [
                ("COUNT", ""), ("MAX", "n"), ("MIN", "n"), ("LATEST", "n"), ("AVG", "n"), ("COUNT_UNIQUE", "user"), ("WEIGHTED_SUM", "n"),
            ]
        ]
        customers = [await stubs.create_customer() for _ in range(3)]
        base = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=2)
        step = timedelta(hours=7, minutes=13, seconds=27)
        for c, customer in enumerate(customers[:2]):
            await stubs.send(customer, event_type, [
                (unique("e"), base - k * step, {
                    "n": f"{k * (c + 2)}.{k % 10}5",
                    "region": ("eu", "us")[k % 2],
                    "model": ("large", "small", "tiny")[k % 3],
                    "user": f"u{k % 4}",
                })
                for k in range(12)
            ])
        await stubs.wait_applied()
        periods = [
            (base - timedelta(days=5), base + timedelta(hours=1)),  # whole days: day roll-ups and edges
            (base - timedelta(days=2, hours=3, seconds=17), base - timedelta(hours=11, seconds=-29)),
            (base - step - timedelta(seconds=1), base - step + timedelta(seconds=1)),  # one event inside
            (base + timedelta(hours=1), base + timedelta(hours=2)),  # nothing inside
        ]
        queries = [query(c, m, s, e) for c in customers for m in meters for s, e in periods]
        s, e = periods[0]
        queries += [
            query(customers[0], sum_meter, s, e, group_by=["region"]),
            query(customers[1], sum_meter, s, e, group_by=["region", "model"]),
            query(customers[0], sum_meter, s, e, dimension_filter={"region": "eu"}),
            query(customers[1], sum_meter, *periods[1], group_by=["model"], dimension_filter={"region": "us"}),
        ]

        batch = await stubs.meter.BatchGetUsage(meter_pb2.BatchGetUsageRequest(queries=queries), timeout=30)

        singles = [await stubs.meter.GetUsage(q, timeout=10) for q in queries]
        assert len(batch.results) == len(queries)
        assert [without_position(r) for r in batch.results] == [without_position(r) for r in singles]
        assert len({r.applied_position for r in batch.results}) == 1
        # The answers are real usage, not zeros on both sides.
        whole_sum = batch.results[meters.index(sum_meter) * len(periods)]
        assert Decimal(whole_sum.value.value) == sum(Decimal(f"{k * 2}.{k % 10}5") for k in range(12))
        by_region = {b.dimensions["region"]: Decimal(b.value.value) for b in batch.results[-4].breakdown}
        assert by_region == {
            region: sum(Decimal(f"{k * 2}.{k % 10}5") for k in range(12) if ("eu", "us")[k % 2] == region)
            for region in ("eu", "us")
        }
        assert Decimal(batch.results[-2].value.value) == by_region["eu"]
        unique_users = batch.results[meters.index(meters[6]) * len(periods)]
        assert Decimal(unique_users.value.value) == 4
        assert all(Decimal(r.value.value) == 0 for r in batch.results[2 * len(meters) * len(periods) : -4])

    async def test_an_empty_batch_answers_no_results(self, stubs):
        reply = await stubs.meter.BatchGetUsage(meter_pb2.BatchGetUsageRequest(), timeout=10)
        assert list(reply.results) == []

    async def test_more_than_1000_queries_are_invalid(self, stubs):
        customer = await stubs.create_customer()
        meter = await stubs.create_meter(unique("x"), "COUNT")
        now = datetime.now(UTC)
        queries = [query(customer, meter, now - timedelta(hours=1), now)] * 1001
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stubs.meter.BatchGetUsage(meter_pb2.BatchGetUsageRequest(queries=queries), timeout=30)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(error.value) == {"queries"}

    async def test_every_invalid_query_is_reported_by_its_index_and_field(self, stubs):
        customer = await stubs.create_customer()
        meter = await stubs.create_meter(unique("x"), "SUM", "n", group_by=["region"])
        now = datetime.now(UTC)
        queries = [
            query(customer, meter, now - timedelta(hours=1), now),
            query(customer, "", now - timedelta(hours=1), now),
            query(customer, meter, now - timedelta(hours=1), now, group_by=["colour"]),
            query(customer, meter, now, now - timedelta(hours=1)),
        ]
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stubs.meter.BatchGetUsage(meter_pb2.BatchGetUsageRequest(queries=queries), timeout=10)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(error.value) == {"queries[1].meter_key", "queries[2].group_by[0]", "queries[3].end"}

    async def test_an_unknown_meter_fails_the_whole_batch_as_not_found(self, stubs):
        customer = await stubs.create_customer()
        meter = await stubs.create_meter(unique("x"), "COUNT")
        now = datetime.now(UTC)
        queries = [query(customer, meter, now - timedelta(hours=1), now), query(customer, unique("nope"), now - timedelta(hours=1), now)]
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stubs.meter.BatchGetUsage(meter_pb2.BatchGetUsageRequest(queries=queries), timeout=10)
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
