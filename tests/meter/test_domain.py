"""Pure domain of the meter: matching, window summaries vs brute force, weighted sums, series windows."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.meter.domain.aggregation import (
    Piece,
    Summary,
    combine_all,
    reference_value,
    summary_value,
    weighted_value,
    window_piece,
)
from services.meter.domain.matching import (
    IncomingEvent,
    UnusableValue,
    event_contribution,
    filter_matches,
    meter_matches,
    to_decimal,
)
from services.meter.domain.model import Aggregation, Contribution, FilterOperator, MeterDefinition, MeterFilter
from services.meter.domain.thresholds import Threshold, calendar_month
from services.meter.domain.windows import GRAIN, Granularity, TooManyWindows, aligned_span, series_windows, window_start
from tally import wire

UTC = timezone.utc
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def event(props: dict, event_type: str = "call") -> IncomingEvent:
    return IncomingEvent("e1", event_type, "c1", T0, props)


def meter(*filters: MeterFilter, aggregation=Aggregation.SUM, value="minutes", group_by=()) -> MeterDefinition:
    return MeterDefinition("m", "call", aggregation, value, tuple(filters), tuple(group_by))


class TestMatching:
    @pytest.mark.parametrize(
        "condition, props, expected",
        [
            (MeterFilter("country", FilterOperator.EQ, ("USA",)), {"country": "USA"}, True),
            (MeterFilter("country", FilterOperator.EQ, ("USA",)), {"country": "FR"}, False),
            (MeterFilter("country", FilterOperator.NEQ, ("USA",)), {"country": "FR"}, True),
            (MeterFilter("country", FilterOperator.NEQ, ("USA",)), {}, True),
            (MeterFilter("country", FilterOperator.IN, ("USA", "CA")), {"country": "CA"}, True),
            (MeterFilter("country", FilterOperator.IN, ("USA", "CA")), {"country": "MX"}, False),
            (MeterFilter("country", FilterOperator.NOT_IN, ("USA", "CA")), {"country": "MX"}, True),
            (MeterFilter("duration", FilterOperator.GT, ("60",)), {"duration": 60.5}, True),
            (MeterFilter("duration", FilterOperator.GT, ("60",)), {"duration": 60}, False),
            (MeterFilter("duration", FilterOperator.GTE, ("60",)), {"duration": "60.0"}, True),
            (MeterFilter("duration", FilterOperator.LT, ("0.3",)), {"duration": 0.1 + 0.2}, False),
            (MeterFilter("duration", FilterOperator.LTE, ("10",)), {"duration": "abc"}, False),
            (MeterFilter("usage.region", FilterOperator.EXISTS), {"usage": {"region": "eu"}}, True),
            (MeterFilter("usage.region", FilterOperator.EXISTS), {"usage": {}}, False),
            (MeterFilter("usage.region", FilterOperator.NOT_EXISTS), {"usage": 3}, True),
            (MeterFilter("n", FilterOperator.EQ, ("3",)), {"n": 3.0}, True),
        ],
    )
    def test_each_filter_operator_compares_as_documented(self, condition, props, expected):
        assert meter_matches(meter(condition), event(props)) is expected

    def test_filters_are_anded_and_event_type_must_match(self):
        m = meter(MeterFilter("a", FilterOperator.EQ, ("1",)), MeterFilter("b", FilterOperator.EXISTS))
        assert meter_matches(m, event({"a": "1", "b": 0}))
        assert not meter_matches(m, event({"a": "1"}))
        assert not meter_matches(m, event({"a": "1", "b": 0}, event_type="sms"))

    def test_float_properties_are_read_by_their_shortest_decimal_form(self):
        assert to_decimal(1.4) == Decimal("1.4")
        assert to_decimal(0.1 + 0.2) == Decimal("0.30000000000000004")
        assert to_decimal("12.345") == Decimal("12.345")
        assert to_decimal(True) is None
        assert to_decimal("NaN") is None

    def test_group_by_values_are_kept_with_absent_ones_as_empty(self):
        m = meter(group_by=("region", "model.size"))
        c = event_contribution(m, event({"minutes": 2, "region": "eu", "model": {"size": 7}}))
        assert c.dimensions == (("region", "eu"), ("model.size", "7"))
        assert event_contribution(m, event({"minutes": 2})).dimensions == (("region", ""), ("model.size", ""))

    def test_a_value_within_the_grammars_bounds_is_counted_exactly(self):
        assert event_contribution(meter(), event({"minutes": "9" * 38})).value == Decimal("9" * 38)
        assert event_contribution(meter(), event({"minutes": "0.000000000000000001"})).value == Decimal("1e-18")
        assert event_contribution(meter(), event({"minutes": 1e37})).value == Decimal("1e37")

    @pytest.mark.parametrize(
        "value",
        ["9" * 40, "1e38", 1e308, "9e999999", "1e-19", 1e-20, "1_000", "  12 ", "12\xa0", "\u0661\u0662", "+7", ".5", "NaN"],
    )
    def test_a_value_outside_the_grammar_or_its_bounds_is_unusable_never_rounded(self, value):
        with pytest.raises(UnusableValue):
            event_contribution(meter(), event({"minutes": value}))

    def test_a_negative_value_is_unusable_unless_the_meter_allows_negatives(self):
        with pytest.raises(UnusableValue):
            event_contribution(meter(), event({"minutes": "-5"}))
        allowing = replace(meter(), allow_negative=True)
        assert event_contribution(allowing, event({"minutes": "-5"})).value == Decimal(-5)

    def test_filters_compare_any_finite_number_of_the_grammar_as_a_number(self):
        assert filter_matches(MeterFilter("minutes", FilterOperator.GT, ("5",)), {"minutes": "1e131072"})
        assert not filter_matches(MeterFilter("minutes", FilterOperator.GT, ("5",)), {"minutes": "1_000"})

    def test_an_event_without_a_numeric_value_is_unusable_not_zero(self):
        with pytest.raises(UnusableValue):
            event_contribution(meter(), event({"minutes": "many"}))

    def test_count_unique_reads_any_scalar_as_its_distinct_value(self):
        c = event_contribution(meter(aggregation=Aggregation.COUNT_UNIQUE, value="user"), event({"user": 42}))
        assert c.unique_value == "42"
        assert c.value == 0


# ---------------------------------------------------------------- windows vs brute force

AGGREGATIONS = list(Aggregation)


@st.composite
def contributions(draw, max_size=40):
    n = draw(st.integers(0, max_size))
    out = []
    for i in range(n):
        # Instants within three hours, at second resolution plus some microseconds.
        offset = draw(st.integers(0, 3 * 3600 - 1))
        micros = draw(st.sampled_from([0, 0, 250_000, 999_999]))
        value = Decimal(draw(st.integers(-500, 5000))) / Decimal(draw(st.sampled_from([1, 10, 100, 1000])))
        out.append(
            Contribution(
                entry_id=f"e{i:03d}",
                meter_key="m",
                customer_id="c",
                dimensions=(("region", draw(st.sampled_from(["eu", "us"]))),),
                timestamp=T0 + timedelta(seconds=offset, microseconds=micros),
                value=value,
                count=Decimal(1),
                unique_value=draw(st.sampled_from(["u1", "u2", "u3", "u4", "u5", "u6"])),
            )
        )
    return out


def windowed_value(aggregation: Aggregation, items: list[Contribution], start: datetime, end: datetime) -> Decimal:
    """The value the bucketed path computes: per-window summaries (and sets, and pieces) combined."""
    inside = [c for c in items if start <= c.timestamp < end]
    windows: dict[tuple, list[Contribution]] = defaultdict(list)
    for c in inside:
        windows[(window_start(c.timestamp), c.dimensions)].append(c)
    if aggregation is Aggregation.WEIGHTED_SUM:
        total = Decimal(0)
        for dims in {c.dimensions for c in items}:
            before = sorted((c for c in items if c.dimensions == dims and c.timestamp < start), key=lambda c: (c.timestamp, c.entry_id))
            carry = before[-1].value if before else Decimal(0)
            pieces = [window_piece(cs, w + GRAIN) for (w, d), cs in sorted(windows.items()) if d == dims]
            # Summed exactly, as the service sums the per-dimension values (tally.wire.EXACT).
            total = wire.EXACT.add(total, weighted_value(pieces, carry, start, end))
        return total
    per_window = [combine_all(Summary.of(c) for c in cs) for cs in windows.values()]
    distinct: set[str] = set()
    for cs in windows.values():
        distinct |= {c.unique_value for c in cs}
    if aggregation is Aggregation.COUNT_UNIQUE:
        return summary_value(aggregation, Summary(), len(distinct))
    return summary_value(aggregation, combine_all(per_window))


class TestWindowedAggregation:
    @settings(max_examples=60, deadline=None)
    @given(items=contributions(), first=st.integers(0, 180), length=st.integers(1, 180), aggregation=st.sampled_from(AGGREGATIONS))
    def test_combined_windows_equal_brute_force_for_every_aggregation(self, items, first, length, aggregation):
        start = T0 + timedelta(minutes=first)
        end = start + timedelta(minutes=length)
        expected = reference_value(aggregation, items, start, end)
        assert windowed_value(aggregation, items, start, end) == expected

    def test_count_unique_is_distinct_over_the_period_not_a_sum_of_windows(self):
        items = [
            Contribution(f"e{i}", "m", "c", (), T0 + timedelta(minutes=i), Decimal(0), Decimal(1), "alice")
            for i in range(3)
        ]
        assert reference_value(Aggregation.COUNT_UNIQUE, items, T0, T0 + timedelta(hours=1)) == 1
        assert windowed_value(Aggregation.COUNT_UNIQUE, items, T0, T0 + timedelta(hours=1)) == 1

    def test_latest_is_by_event_time_with_ties_broken_by_entry_id(self):
        items = [
            Contribution("b", "m", "c", (), T0 + timedelta(seconds=5), Decimal(7), Decimal(1)),
            Contribution("a", "m", "c", (), T0 + timedelta(seconds=9), Decimal(3), Decimal(1)),
            Contribution("c", "m", "c", (), T0 + timedelta(seconds=9), Decimal(4), Decimal(1)),
        ]
        assert reference_value(Aggregation.LATEST, items, T0, T0 + GRAIN) == 4
        assert windowed_value(Aggregation.LATEST, list(reversed(items)), T0, T0 + GRAIN) == 4


class TestWeightedSum:
    def test_gb_month_example_from_the_domain(self):
        month_start = datetime(2026, 4, 1, tzinfo=UTC)
        items = [
            Contribution("a", "m", "c", (), month_start, Decimal(10), Decimal(1)),
            Contribution("b", "m", "c", (), month_start + timedelta(days=10), Decimal(40), Decimal(1)),
        ]
        month_end = datetime(2026, 5, 1, tzinfo=UTC)
        assert reference_value(Aggregation.WEIGHTED_SUM, items, month_start, month_end) == 30
        assert windowed_value(Aggregation.WEIGHTED_SUM, items, month_start, month_end) == 30

    def test_value_in_force_before_the_period_carries_in(self):
        items = [Contribution("a", "m", "c", (), T0 - timedelta(days=3), Decimal(8), Decimal(1))]
        assert reference_value(Aggregation.WEIGHTED_SUM, items, T0, T0 + timedelta(days=1)) == 8

    def test_pieces_are_integrated_in_time_order(self):
        piece = Piece(T0 + timedelta(seconds=30), T0 + timedelta(seconds=60), Decimal(60), Decimal(2))
        # 0 for 30 s, then 2 for 30 s (integral 60), over a 60 s period: 1.
        assert weighted_value([piece], Decimal(0), T0, T0 + timedelta(seconds=60)) == 1


class TestSeriesWindows:
    def test_new_york_spring_forward_day_has_23_hours(self):
        zone = ZoneInfo("America/New_York")
        start, end = datetime(2026, 3, 7, 5, tzinfo=UTC), datetime(2026, 3, 10, 4, tzinfo=UTC)
        lengths = [e - s for s, e in series_windows(start, end, Granularity.DAY, zone)]
        assert lengths == [timedelta(hours=24), timedelta(hours=23), timedelta(hours=24)]

    def test_new_york_fall_back_day_has_25_hours(self):
        zone = ZoneInfo("America/New_York")
        start, end = datetime(2026, 11, 1, 4, tzinfo=UTC), datetime(2026, 11, 2, 5, tzinfo=UTC)
        windows = series_windows(start, end, Granularity.DAY, zone)
        assert [e - s for s, e in windows] == [timedelta(hours=25)]
        assert len(series_windows(start, end, Granularity.HOUR, zone)) == 25

    def test_months_follow_local_midnight_and_points_are_clipped_to_the_range(self):
        zone = ZoneInfo("Europe/Paris")
        windows = series_windows(datetime(2026, 1, 15, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC), Granularity.MONTH, zone)
        assert windows[0][0] == datetime(2026, 1, 15, tzinfo=UTC)
        assert windows[1] == (datetime(2026, 1, 31, 23, tzinfo=UTC), datetime(2026, 2, 28, 23, tzinfo=UTC))
        assert windows[-1] == (datetime(2026, 3, 31, 22, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))

    @pytest.mark.parametrize("granularity", list(Granularity))
    @pytest.mark.parametrize("zone_name", ["UTC", "America/New_York", "Pacific/Apia"])
    def test_a_series_over_its_limit_is_refused_before_its_windows_are_built(self, granularity, zone_name):
        import tracemalloc

        zone = ZoneInfo(zone_name)
        start, end = datetime(2, 1, 1, tzinfo=UTC), datetime(9999, 12, 1, tzinfo=UTC)
        tracemalloc.start()
        try:
            with pytest.raises(TooManyWindows):
                series_windows(start, end, granularity, zone, max_windows=100)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 200_000

    @pytest.mark.parametrize("granularity,days", [(Granularity.HOUR, 2), (Granularity.DAY, 40), (Granularity.MONTH, 1300)])
    def test_the_limit_is_exact_just_above_and_below_it(self, granularity, days):
        zone = ZoneInfo("Europe/Paris")
        start = datetime(2026, 1, 1, tzinfo=UTC)
        windows = series_windows(start, start + timedelta(days=days), granularity, zone)
        count = len(windows)
        assert series_windows(start, start + timedelta(days=days), granularity, zone, max_windows=count) == windows
        with pytest.raises(TooManyWindows):
            series_windows(start, start + timedelta(days=days), granularity, zone, max_windows=count - 1)

    def test_aligned_span_keeps_only_whole_windows(self):
        start = T0 + timedelta(seconds=10)
        end = T0 + timedelta(minutes=5, seconds=1)
        assert aligned_span(start, end) == (T0 + GRAIN, T0 + timedelta(minutes=5))


class TestThresholdLevels:
    def make(self, absolute=None, percent=None, customer="c1", plan=None) -> Threshold:
        return Threshold("t", "m", plan, customer, absolute, percent, "", T0)

    def test_percent_of_included_units_needs_a_plan_with_included_units(self):
        assert self.make(percent=Decimal(80)).units(Decimal(1000)) == 800
        assert self.make(percent=Decimal(80)).units(None) is None
        assert self.make(absolute=Decimal(5)).units(None) == 5

    def test_scope_is_the_customer_or_the_plan(self):
        assert self.make(customer="c1").applies_to("c1", None)
        assert not self.make(customer="c1").applies_to("c2", "pro")
        assert self.make(customer=None, plan="pro").applies_to("c9", "pro")
        assert not self.make(customer=None, plan="pro").applies_to("c9", None)

    def test_customers_without_subscription_use_the_calendar_month_of_their_time_zone(self):
        period = calendar_month(datetime(2026, 3, 1, 3, tzinfo=UTC), "America/New_York")
        assert (period.start, period.end) == (datetime(2026, 2, 1, 5, tzinfo=UTC), datetime(2026, 3, 1, 5, tzinfo=UTC))
