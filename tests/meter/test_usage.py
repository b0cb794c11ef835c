"""GetUsage, UsageSeries and GetMeterStatus through the real services (ingest -> meter)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import grpc
import pytest

from tally.channels import connect
from tally.grpc_errors import field_violations
from tests.harness import unique
from tally_gen.catalog.v1 import catalog_pb2
from tally_gen.common.v1 import common_pb2
from tally_gen.ingest.v1 import ingest_pb2
from tally_gen.meter.v1 import meter_pb2
from tests.meter.helpers import Stubs, ts, value

UTC = timezone.utc
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
async def stubs(services):
    channels = [connect(services.address(s)) for s in ("catalog", "ingest", "meter")]
    yield Stubs(*channels)
    for channel in channels:
        await channel.close()


def recent(minutes_ago: float) -> datetime:
    base = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=2)
    return base - timedelta(minutes=minutes_ago)


class TestGetUsage:
    async def test_sum_of_events_is_exact_and_ignores_events_outside_the_period(self, stubs):
        event_type = unique("call")
        meter = await stubs.create_meter(event_type, "SUM", "minutes")
        customer = await stubs.create_customer()
        t0 = recent(60)
        await stubs.send(customer, event_type, [
            (unique("e"), t0, {"minutes": 1.4}),
            (unique("e"), t0 + timedelta(seconds=30), {"minutes": "2.25"}),
            (unique("e"), t0 + timedelta(minutes=5), {"minutes": 3}),
            (unique("e"), t0 + timedelta(hours=2), {"minutes": 100}),
        ])
        status = await stubs.wait_applied()
        reply = await stubs.usage(customer, meter, t0, t0 + timedelta(hours=1))
        assert value(reply) == Decimal("6.65")
        assert reply.customer_id == customer
        assert reply.applied_position >= status.applied_position > 0

    async def test_breakdown_and_dimension_filter_split_the_value_by_group_by_values(self, stubs):
        event_type = unique("tokens")
        meter = await stubs.create_meter(event_type, "SUM", "n", group_by=["model", "dir"])
        customer = await stubs.create_customer()
        t0 = recent(200)
        await stubs.send(customer, event_type, [
            (unique("e"), t0, {"n": 100, "model": "large", "dir": "in"}),
            (unique("e"), t0, {"n": 30, "model": "large", "dir": "out"}),
            (unique("e"), t0, {"n": 7, "model": "small", "dir": "in"}),
        ])
        await stubs.wait_applied()
        end = t0 + timedelta(hours=1)
        reply = await stubs.usage(customer, meter, t0, end, group_by=["model"])
        assert value(reply) == 137
        assert {(b.dimensions["model"], Decimal(b.value.value)) for b in reply.breakdown} == {("large", 130), ("small", 7)}
        filtered = await stubs.usage(customer, meter, t0, end, dimension_filter={"dir": "in"})
        assert value(filtered) == 107

    async def test_a_voided_event_no_longer_counts_for_max(self, stubs):
        event_type = unique("seats")
        meter = await stubs.create_meter(event_type, "MAX", "seats")
        customer = await stubs.create_customer()
        t0 = recent(300)
        peak = unique("e")
        await stubs.send(customer, event_type, [(unique("e"), t0, {"seats": 4}), (peak, t0 + timedelta(seconds=1), {"seats": 40})])
        await stubs.wait_applied()
        assert value(await stubs.usage(customer, meter, t0, t0 + timedelta(hours=1))) == 40
        await stubs.ingest.VoidEvent(ingest_pb2.VoidEventRequest(idempotency_key=peak, reason="wrong"), timeout=10)
        await stubs.wait_applied()
        assert value(await stubs.usage(customer, meter, t0, t0 + timedelta(hours=1))) == 4

    async def test_unknown_meter_is_not_found_and_unknown_dimension_is_invalid(self, stubs):
        customer = await stubs.create_customer()
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stubs.usage(customer, unique("nope"), recent(10), recent(0))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        meter = await stubs.create_meter(unique("x"), "COUNT")
        with pytest.raises(grpc.aio.AioRpcError) as invalid:
            await stubs.usage(customer, meter, recent(10), recent(0), group_by=["region"])
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT


class TestMeterStatus:
    async def test_events_matching_no_meter_are_counted_as_unmetered(self, stubs):
        before = await stubs.wait_applied()
        await stubs.send(await stubs.create_customer(), unique("nobody_meters_this"), [(unique("e"), recent(5), {})] * 1)
        after = await stubs.wait_applied()
        assert after.unmetered_events == before.unmetered_events + 1
        assert after.caught_up and after.events_behind == 0
        assert after.applied_position > before.applied_position


class TestUsageSeries:
    async def test_daily_series_in_new_york_has_a_25_hour_day_on_2026_11_01(self, stubs):
        event_type = unique("dst")
        meter = await stubs.create_meter(event_type, "COUNT")
        customer = await stubs.create_customer("America/New_York")
        # 00:30 and 23:30 local on Nov 1st (EDT then EST), and 00:30 local on Nov 2nd.
        instants = [
            datetime(2026, 11, 1, 4, 30, tzinfo=UTC),
            datetime(2026, 11, 2, 4, 30, tzinfo=UTC),
            datetime(2026, 11, 2, 5, 30, tzinfo=UTC),
        ]
        await stubs.send(customer, event_type, [(unique("e"), t, {}) for t in instants])
        await stubs.wait_applied()
        reply = await stubs.meter.UsageSeries(
            meter_pb2.UsageSeriesRequest(
                customer=common_pb2.CustomerRef(id=customer),
                meter_key=meter,
                start=ts(datetime(2026, 10, 31, 4, tzinfo=UTC)),
                end=ts(datetime(2026, 11, 3, 5, tzinfo=UTC)),
                granularity=meter_pb2.GRANULARITY_DAY,
                time_zone="America/New_York",
            ),
            timeout=10,
        )
        hours = [(p.end.ToDatetime() - p.start.ToDatetime()) / timedelta(hours=1) for p in reply.points]
        assert hours == [24, 25, 24]
        assert [Decimal(p.value.value) for p in reply.points] == [0, 2, 1]

    async def test_an_hourly_series_over_the_whole_instant_range_is_refused_before_any_work(self, stubs):
        # Years 1..9999 (the request) are now refused as instants (tally.wire); the
        # widest range left, 1970..2200, is still ~2 million hourly points.
        meter = await stubs.create_meter(unique("huge"), "COUNT")
        customer = await stubs.create_customer()
        started = asyncio.get_running_loop().time()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stubs.meter.UsageSeries(
                meter_pb2.UsageSeriesRequest(
                    customer=common_pb2.CustomerRef(id=customer),
                    meter_key=meter,
                    start=ts(datetime(1970, 1, 1, tzinfo=UTC)),
                    end=ts(datetime(2199, 12, 31, tzinfo=UTC)),
                    granularity=meter_pb2.GRANULARITY_HOUR,
                ),
                timeout=10,
            )
        elapsed = asyncio.get_running_loop().time() - started
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [f for f, _ in field_violations(caught.value)] == ["granularity"]
        assert elapsed < 2
        # The meter still answers.
        status = await stubs.meter.GetMeterStatus(meter_pb2.GetMeterStatusRequest(), timeout=5)
        assert status.applied_position >= 0


class TestBackfill:
    async def test_a_meter_created_after_its_events_is_computed_by_backfill(self, stubs):
        event_type = unique("late_meter")
        customer = await stubs.create_customer()
        t0 = recent(400)
        await stubs.send(customer, event_type, [(unique("e"), t0 + timedelta(seconds=i), {"gb": i}) for i in range(10)])
        await stubs.wait_applied()
        meter = await stubs.create_meter(event_type, "SUM", "gb")
        assert value(await stubs.usage(customer, meter, t0, t0 + timedelta(hours=1))) == 0
        started = (await stubs.meter.BackfillMeter(meter_pb2.BackfillMeterRequest(meter_key=meter), timeout=10)).backfill
        done = await wait_backfill(stubs, started.id)
        assert done.state == meter_pb2.BACKFILL_STATE_DONE
        assert done.entries_applied > 0
        assert value(await stubs.usage(customer, meter, t0, t0 + timedelta(hours=1))) == 45
        # Backfilling again replays the same log: nothing counts twice.
        again = (await stubs.meter.BackfillMeter(meter_pb2.BackfillMeterRequest(meter_key=meter), timeout=10)).backfill
        await wait_backfill(stubs, again.id)
        assert value(await stubs.usage(customer, meter, t0, t0 + timedelta(hours=1))) == 45


async def wait_backfill(stubs, backfill_id):
    for _ in range(600):
        reply = await stubs.meter.GetBackfill(meter_pb2.GetBackfillRequest(id=backfill_id), timeout=10)
        if reply.backfill.state != meter_pb2.BACKFILL_STATE_RUNNING:
            return reply.backfill
        await asyncio.sleep(0.05)
    raise TimeoutError(backfill_id)


class TestAlerts:
    async def test_crossing_a_threshold_records_one_alert_per_period(self, stubs):
        event_type = unique("api")
        meter = await stubs.create_meter(event_type, "SUM", "n")
        customer = await stubs.create_customer()
        threshold = (
            await stubs.meter.CreateThreshold(
                meter_pb2.CreateThresholdRequest(
                    threshold=meter_pb2.Threshold(meter_key=meter, customer_id=customer, absolute_units=common_pb2.Decimal(value="10"))
                ),
                timeout=10,
            )
        ).threshold
        watch = stubs.meter.WatchAlerts(meter_pb2.WatchAlertsRequest(customer_id=customer))
        now = datetime.now(UTC) - timedelta(minutes=1)
        await stubs.send(customer, event_type, [(unique("e"), now, {"n": 6})])
        await stubs.wait_applied()
        await stubs.send(customer, event_type, [(unique("e"), now, {"n": 6})])
        await stubs.wait_applied()
        await stubs.send(customer, event_type, [(unique("e"), now, {"n": 6})])
        await stubs.wait_applied()
        listed = await stubs.meter.ListAlerts(meter_pb2.ListAlertsRequest(customer_id=customer), timeout=10)
        assert len(listed.alerts) == 1
        alert = listed.alerts[0]
        assert (alert.threshold_id, Decimal(alert.usage.value), Decimal(alert.threshold_units.value)) == (threshold.id, 12, 10)
        first = await asyncio.wait_for(watch.read(), 10)
        assert first.alert.id == alert.id
        watch.cancel()

    async def test_watch_alerts_resumes_after_its_cursor_and_misses_nothing(self, stubs):
        event_type = unique("api")
        meter = await stubs.create_meter(event_type, "COUNT")
        customer = await stubs.create_customer()
        for level in ("1", "2"):
            await stubs.meter.CreateThreshold(
                meter_pb2.CreateThresholdRequest(
                    threshold=meter_pb2.Threshold(meter_key=meter, customer_id=customer, absolute_units=common_pb2.Decimal(value=level))
                ),
                timeout=10,
            )
        now = datetime.now(UTC) - timedelta(minutes=1)
        await stubs.send(customer, event_type, [(unique("e"), now, {})])
        await stubs.wait_applied()
        watch = stubs.meter.WatchAlerts(meter_pb2.WatchAlertsRequest(customer_id=customer))
        first = await asyncio.wait_for(watch.read(), 10)
        watch.cancel()
        # Disconnected; the second crossing happens while nobody watches.
        await stubs.send(customer, event_type, [(unique("e"), now, {})])
        await stubs.wait_applied()
        resumed = stubs.meter.WatchAlerts(meter_pb2.WatchAlertsRequest(customer_id=customer, after_cursor=first.alert.cursor))
        second = await asyncio.wait_for(resumed.read(), 10)
        resumed.cancel()
        assert Decimal(first.alert.threshold_units.value) == 1
        assert Decimal(second.alert.threshold_units.value) == 2

    async def test_percent_of_included_units_uses_the_subscribed_plan(self, stubs):
        event_type = unique("min")
        meter = await stubs.create_meter(event_type, "SUM", "minutes")
        customer = await stubs.create_customer()
        plan_key = unique("plan")
        await stubs.catalog.CreatePlan(
            catalog_pb2.CreatePlanRequest(
                plan=catalog_pb2.PlanSpec(
                    key=plan_key,
                    name="VoIP",
                    currency="USD",
                    interval=catalog_pb2.BILLING_INTERVAL_MONTH,
                    interval_count=1,
                    charges=[
                        catalog_pb2.Charge(
                            key="minutes",
                            name="Minutes",
                            usage=catalog_pb2.UsageCharge(
                                meter_key=meter,
                                price=catalog_pb2.Price(model=catalog_pb2.PRICING_MODEL_PER_UNIT, unit_price=common_pb2.Decimal(value="0.05")),
                                included_units=common_pb2.Decimal(value="100"),
                            ),
                        )
                    ],
                )
            ),
            timeout=10,
        )
        await stubs.catalog.CreateSubscription(
            catalog_pb2.CreateSubscriptionRequest(
                customer=common_pb2.CustomerRef(id=customer),
                plan_key=plan_key,
                start_time=ts(datetime(2026, 1, 1, tzinfo=UTC)),
                anchor=catalog_pb2.BILLING_ANCHOR_CALENDAR,
            ),
            timeout=10,
        )
        await stubs.meter.CreateThreshold(
            meter_pb2.CreateThresholdRequest(
                threshold=meter_pb2.Threshold(meter_key=meter, plan_key=plan_key, percent_of_included=common_pb2.Decimal(value="80"))
            ),
            timeout=10,
        )
        now = datetime.now(UTC) - timedelta(minutes=1)
        await stubs.send(customer, event_type, [(unique("e"), now, {"minutes": 79})])
        await stubs.wait_applied()
        assert not (await stubs.meter.ListAlerts(meter_pb2.ListAlertsRequest(customer_id=customer), timeout=10)).alerts
        await stubs.send(customer, event_type, [(unique("e"), now, {"minutes": 1})])
        await stubs.wait_applied()
        [alert] = (await stubs.meter.ListAlerts(meter_pb2.ListAlertsRequest(customer_id=customer), timeout=10)).alerts
        assert Decimal(alert.threshold_units.value) == 80
        assert alert.period.start.ToDatetime(tzinfo=UTC) == datetime(now.year, now.month, 1, tzinfo=UTC)


class TestThresholds:
    async def test_invalid_threshold_reports_every_problem_at_once(self, stubs):
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stubs.meter.CreateThreshold(
                meter_pb2.CreateThresholdRequest(threshold=meter_pb2.Threshold(meter_key=unique("nope"))), timeout=10
            )
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        from google.rpc import error_details_pb2, status_pb2

        status = status_pb2.Status.FromString(
            dict(error.value.trailing_metadata())["grpc-status-details-bin"]
        )
        request = error_details_pb2.BadRequest()
        [detail] = [d for d in status.details if d.Is(error_details_pb2.BadRequest.DESCRIPTOR)]
        detail.Unpack(request)
        assert {v.field for v in request.field_violations} == {"threshold.meter_key", "threshold.scope", "threshold.level"}

    async def test_thresholds_are_listed_by_page_and_deleted(self, stubs):
        meter = await stubs.create_meter(unique("t"), "COUNT")
        customer = await stubs.create_customer()
        created = []
        for level in ("1", "2", "3"):
            reply = await stubs.meter.CreateThreshold(
                meter_pb2.CreateThresholdRequest(
                    threshold=meter_pb2.Threshold(meter_key=meter, customer_id=customer, absolute_units=common_pb2.Decimal(value=level))
                ),
                timeout=10,
            )
            created.append(reply.threshold.id)
        first = await stubs.meter.ListThresholds(meter_pb2.ListThresholdsRequest(meter_key=meter, page_size=2), timeout=10)
        second = await stubs.meter.ListThresholds(
            meter_pb2.ListThresholdsRequest(meter_key=meter, page_size=2, page_token=first.next_page_token), timeout=10
        )
        assert sorted(t.id for t in [*first.thresholds, *second.thresholds]) == sorted(created)
        assert second.next_page_token == ""
        await stubs.meter.DeleteThreshold(meter_pb2.DeleteThresholdRequest(id=created[0]), timeout=10)
        remaining = await stubs.meter.ListThresholds(meter_pb2.ListThresholdsRequest(meter_key=meter), timeout=10)
        assert sorted(t.id for t in remaining.thresholds) == sorted(created[1:])
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stubs.meter.DeleteThreshold(meter_pb2.DeleteThresholdRequest(id=created[0]), timeout=10)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
