"""The apply path and the query path on real Postgres, against brute force over the same events.

These call the production use cases (apply_entries, compute_points) on a real connection to
the migrated test database; only the catalog is an in-memory view (meters are data here).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.meter import repository as repo
from services.meter.domain.aggregation import reference_value
from services.meter.domain.matching import IncomingEvent, IncomingUsage
from services.meter.domain.model import Aggregation, Contribution, MeterDefinition
from services.meter.service import BillingContext, apply_entries, compute_points
from tally.db import asyncpg_dsn
from tests.harness import unique

UTC = timezone.utc
T0 = datetime(2026, 6, 1, tzinfo=UTC)
EVENT_TYPE = "apply_test"


class MemoryCatalog:
    """A fixed catalog: every aggregation over the same event type."""

    def __init__(self, suffix: str) -> None:
        self.meters = {
            agg: MeterDefinition(
                key=f"{agg.value}_{suffix}",
                event_type=EVENT_TYPE,
                aggregation=agg,
                value_property="" if agg is Aggregation.COUNT else ("user" if agg is Aggregation.COUNT_UNIQUE else "v"),
                group_by=("region",),
                # The scenarios include negative values (a gauge going down, a credit).
                allow_negative=True,
            )
            for agg in Aggregation
        }
        self.by_key = {m.key: m for m in self.meters.values()}

    def meters_for_event_type(self, event_type):
        return list(self.meters.values()) if event_type == EVENT_TYPE else []

    def meter(self, key):
        return self.by_key.get(key)

    def customer_known(self, customer_id):
        return True

    def customer_time_zone(self, customer_id):
        return "UTC"

    async def resolve_customer_id(self, customer_id, external_id):
        return customer_id

    def billing(self, customer_id, instant, meter_key):
        return BillingContext(None, None, None)

    async def sync(self):
        return None


@st.composite
def scenarios(draw, span_seconds: int = 4 * 3600, unit: timedelta = timedelta(minutes=1)):
    n = draw(st.integers(1, 30))
    events = []
    for i in range(n):
        offset = draw(st.integers(0, span_seconds - 1))
        micros = draw(st.sampled_from([0, 1, 500_000]))
        events.append(
            {
                "id": f"ev{i}",
                "ts": T0 + timedelta(seconds=offset, microseconds=micros),
                "v": str(Decimal(draw(st.integers(-100, 10_000))) / 100),
                "user": draw(st.sampled_from(["ann", "bob", "cy", "di"])),
                "region": draw(st.sampled_from(["eu", "us"])),
                # The subscription the event is attributed to ('' unattributed).
                "sub": draw(st.sampled_from(["", "sub_a", "sub_b"])),
            }
        )
    voided = draw(st.sets(st.sampled_from([e["id"] for e in events]), max_size=max(1, n // 3)))
    # The log in arrival order (late events come after later ones), with duplicated entries.
    order = draw(st.permutations(events))
    duplicates = draw(st.lists(st.sampled_from(events), max_size=5))
    batches = draw(st.integers(1, 4))
    steps = span_seconds // int(unit.total_seconds())
    first = draw(st.integers(0, steps)) * unit
    length = draw(st.integers(1, steps)) * unit
    seconds = draw(st.sampled_from([0, 0, 17]))
    return events, voided, list(order) + duplicates, batches, first, length, seconds


def log_items(events_in_order, voided):
    items = []
    for position, e in enumerate(events_in_order, start=1):
        props = {"v": e["v"], "user": e["user"], "region": e["region"]}
        items.append((position, IncomingEvent(e["id"], EVENT_TYPE, "", e["ts"], props, e.get("sub", ""))))
    for i, event_id in enumerate(sorted(voided)):
        items.append((len(events_in_order) + i + 1, event_id))
    return items


def expected_contributions(events, voided, meter: MeterDefinition, customer: str, subscriptions=None) -> list[Contribution]:
    """What the meter should hold; with ``subscriptions``, only the events attributed to one of them."""
    out = []
    for e in events:
        if e["id"] in voided or (subscriptions is not None and e.get("sub", "") not in subscriptions):
            continue
        value = Decimal(0) if meter.aggregation is Aggregation.COUNT_UNIQUE else Decimal(e["v"])
        out.append(
            Contribution(
                entry_id=f"{customer}:{e['id']}",
                meter_key=meter.key,
                customer_id=customer,
                dimensions=(("region", e["region"]),),
                timestamp=e["ts"],
                value=Decimal(1) if meter.aggregation is Aggregation.COUNT else value,
                count=Decimal(1),
                unique_value=e["user"] if meter.aggregation is Aggregation.COUNT_UNIQUE else None,
            )
        )
    return out


def expected_value(aggregation, events, voided, meter, customer, subscriptions, start, end, dims=None) -> Decimal:
    """Brute force over the events attributed to ``subscriptions``.

    WEIGHTED_SUM keeps one time-weighted series per subscription (a gauge per subscription),
    so its value over several subscriptions is the sum of theirs; every other aggregation
    reads the contributions of all of them together.
    """
    if aggregation is Aggregation.WEIGHTED_SUM:
        return sum(
            (
                reference_value(aggregation, expected_contributions(events, voided, meter, customer, {sub}), start, end, dims)
                for sub in subscriptions
            ),
            Decimal(0),
        )
    return reference_value(aggregation, expected_contributions(events, voided, meter, customer, subscriptions), start, end, dims)


ALL_SUBS = frozenset({"", "sub_a", "sub_b"})


def agrees(aggregation, got: Decimal, want: Decimal) -> bool:
    """Exact, except WEIGHTED_SUM over several series: each series' average is a 28-digit
    quotient, and the brute force adds them in another order (last-digit differences)."""
    if aggregation is Aggregation.WEIGHTED_SUM:
        return abs(got - want) <= Decimal("1e-20")
    return got == want


def with_customer(items, customer):
    out = []
    for position, item in items:
        if isinstance(item, IncomingEvent):
            item = IncomingEvent(
                f"{customer}:{item.event_id}", item.event_type, customer, item.timestamp, item.properties, item.subscription_id
            )
        else:
            item = f"{customer}:{item}"
        out.append((position, item))
    return out


async def run_scenario(database_url: str, scenario) -> None:
    events, voided, order, batches, first, length, seconds = scenario
    customer = unique("cust")
    catalog = MemoryCatalog(unique("s"))
    items = with_customer(log_items(order, voided), customer)
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        size = max(1, len(items) // batches)
        for start in range(0, len(items), size):
            async with conn.transaction():
                await apply_entries(conn, items[start : start + size], catalog)
        # A replay of the whole log (a crash before the cursor moved) changes nothing.
        async with conn.transaction():
            await apply_entries(conn, items, catalog)
        period_start = T0 + first + timedelta(seconds=seconds)
        period_end = period_start + length
        for meter in catalog.meters.values():
            agg = meter.aggregation
            [point] = await compute_points(conn, meter, customer, [(period_start, period_end)], ("region",), {})
            want = expected_value(agg, events, voided, meter, customer, ALL_SUBS, period_start, period_end)
            assert agrees(agg, point.total, want), agg
            for (group,), got in point.breakdown.items():
                region = {"region": group[1]}
                want = expected_value(agg, events, voided, meter, customer, ALL_SUBS, period_start, period_end, region)
                assert agrees(agg, got, want), (agg, group)
            # Per subscription, and a subscription with the unattributed usage: the same
            # brute force over only the events attributed to them.
            for scope in ((False, "sub_a", "sub_a"), (False, "sub_b", ""), (False, "", "")):
                [point] = await compute_points(conn, meter, customer, [(period_start, period_end)], ("region",), {}, scope)
                subs = {scope[1], scope[2]}
                want = expected_value(agg, events, voided, meter, customer, subs, period_start, period_end)
                assert agrees(agg, point.total, want), (agg, scope)
    finally:
        await conn.close()


class TestApplyAndQueryOnPostgres:
    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(scenario=scenarios())
    def test_every_aggregation_equals_brute_force_with_late_events_voids_and_duplicates(self, database_url, scenario):
        asyncio.run(run_scenario(database_url, scenario))

    @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(scenario=scenarios(span_seconds=4 * 86_400, unit=timedelta(hours=1)))
    def test_periods_of_several_days_read_through_day_roll_ups_exactly(self, database_url, scenario):
        asyncio.run(run_scenario(database_url, scenario))

    def test_whole_days_merged_over_several_batches_equal_brute_force(self, database_url):
        events = [
            {"id": f"e{i}", "ts": T0 + timedelta(hours=7 * i, seconds=i), "v": str(i), "user": f"u{i % 3}", "region": "eu"}
            for i in range(20)
        ]
        scenario = (events, {"e3", "e11"}, events + events[:4], 3, timedelta(hours=3), timedelta(days=5, hours=1), 0)
        asyncio.run(run_scenario(database_url, scenario))

    def test_periods_of_whole_days_read_day_rows_alone_and_stay_exact_at_their_edges(self, database_url):
        # [T0, T0 + 2 days) is whole UTC days: the query reads day rows and nothing else. Events
        # sit on both edges (the last microsecond inside, the first instant outside), and the
        # same events are also queried over periods that need minute buckets and raw edges.
        edge = T0 + timedelta(days=2)
        stamps = [T0, T0 + timedelta(hours=5), T0 + timedelta(days=1, minutes=1), edge - timedelta(microseconds=1), edge,
                  edge + timedelta(minutes=3)]
        events = [
            {"id": f"e{i}", "ts": ts, "v": str(i + 1), "user": f"u{i % 2}", "region": ("eu", "us")[i % 2]}
            for i, ts in enumerate(stamps)
        ]
        for first, length, seconds in [
            (timedelta(0), timedelta(days=2), 0),  # whole days only
            (timedelta(minutes=1), timedelta(days=2), 0),  # minute buckets on both sides of the days
            (timedelta(0), timedelta(days=2), 17),  # raw edges too
        ]:
            scenario = (events, {"e1"}, events, 2, first, length, seconds)
            asyncio.run(run_scenario(database_url, scenario))

    def test_count_unique_across_window_boundaries_counts_each_user_once(self, database_url):
        events = [
            {"id": f"e{i}", "ts": T0 + timedelta(minutes=i, seconds=59), "v": "1", "user": "ann", "region": "eu"}
            for i in range(5)
        ]
        asyncio.run(run_scenario(database_url, (events, set(), events, 2, timedelta(0), timedelta(minutes=10), 0)))

    def test_a_void_recomputes_max_of_the_window(self, database_url):
        async def scenario():
            customer = unique("cust")
            catalog = MemoryCatalog(unique("s"))
            maximum = catalog.meters[Aggregation.MAX]
            items = [
                (1, IncomingEvent(f"{customer}:a", EVENT_TYPE, customer, T0, {"v": "5", "user": "x", "region": "eu"})),
                (2, IncomingEvent(f"{customer}:b", EVENT_TYPE, customer, T0 + timedelta(seconds=1), {"v": "9", "user": "x", "region": "eu"})),
            ]
            conn = await asyncpg.connect(asyncpg_dsn(database_url))
            try:
                async with conn.transaction():
                    await apply_entries(conn, items, catalog)
                [before] = await compute_points(conn, maximum, customer, [(T0, T0 + timedelta(minutes=1))], (), {})
                async with conn.transaction():
                    await apply_entries(conn, [(3, f"{customer}:b")], catalog)
                [after] = await compute_points(conn, maximum, customer, [(T0, T0 + timedelta(minutes=1))], (), {})
                # The voided event re-read (a replay) stays out.
                async with conn.transaction():
                    await apply_entries(conn, items, catalog)
                [replayed] = await compute_points(conn, maximum, customer, [(T0, T0 + timedelta(minutes=1))], (), {})
            finally:
                await conn.close()
            assert (before.total, after.total, replayed.total) == (9, 5, 5)

        asyncio.run(scenario())

    def test_a_value_beyond_postgres_numeric_is_counted_unusable_and_the_batch_still_applies(self, database_url):
        async def scenario():
            customer = unique("cust")
            catalog = MemoryCatalog(unique("s"))
            total = catalog.meters[Aggregation.SUM]
            items = [
                (1, IncomingEvent(f"{customer}:big", EVENT_TYPE, customer, T0, {"v": "1e200000", "user": "x", "region": "eu"})),
                (2, IncomingEvent(f"{customer}:ok", EVENT_TYPE, customer, T0, {"v": "2.5", "user": "x", "region": "eu"})),
            ]
            conn = await asyncpg.connect(asyncpg_dsn(database_url))
            try:
                async with conn.transaction():
                    batch = await apply_entries(conn, items, catalog)
                [point] = await compute_points(conn, total, customer, [(T0, T0 + timedelta(hours=1))], (), {})
            finally:
                await conn.close()
            assert point.total == Decimal("2.5")
            # SUM, MIN, MAX, LATEST, AVG and WEIGHTED_SUM read "v": one unusable value each.
            assert batch.tally.unusable_value_events == 6

        asyncio.run(scenario())

    def test_usage_records_count_as_given_and_unknown_meters_are_counted(self, database_url):
        async def scenario():
            customer = unique("cust")
            catalog = MemoryCatalog(unique("s"))
            count = catalog.meters[Aggregation.COUNT]
            items = [
                (1, IncomingUsage(f"{customer}:u1", customer, count.key, Decimal("1000"), T0, {"region": "eu"})),
                (2, IncomingUsage(f"{customer}:u2", customer, "no_such_meter", Decimal("5"), T0, {})),
                (3, IncomingEvent(f"{customer}:e", EVENT_TYPE, customer, T0, {"v": "1", "user": "x", "region": "us"})),
            ]
            conn = await asyncpg.connect(asyncpg_dsn(database_url))
            try:
                async with conn.transaction():
                    batch = await apply_entries(conn, items, catalog)
                [point] = await compute_points(conn, count, customer, [(T0, T0 + timedelta(hours=1))], ("region",), {})
            finally:
                await conn.close()
            assert point.total == 1001
            assert point.breakdown == {(("region", "eu"),): Decimal(1000), (("region", "us"),): Decimal(1)}
            assert batch.tally.unknown_meter_records == 1

        asyncio.run(scenario())
