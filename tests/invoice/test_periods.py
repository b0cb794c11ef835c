"""Billing periods on the local calendar: anchors, clamping, DST, backdating, cancellation."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tally.domain.periods import (
    Anchor,
    Interval,
    Period,
    Schedule,
    add_months,
    ended_periods,
    local_instant,
    local_midnight,
    period_containing,
    periods,
    proration,
)
from tally.errors import InvalidInput

UTC = timezone.utc


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def local(zone: str, *args) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(zone)).astimezone(UTC)


def take(schedule: Schedule, n: int) -> list[Period]:
    out = []
    for period in periods(schedule, utc(2200, 1, 1)):
        out.append(period)
        if len(out) == n:
            break
    return out


class TestCalendarAnchor:
    def test_monthly_calendar_periods_start_on_the_first_of_each_month(self):
        schedule = Schedule(utc(2026, 1, 1), Interval.MONTH)
        got = [(p.start, p.end) for p in take(schedule, 3)]
        assert got == [
            (utc(2026, 1, 1), utc(2026, 2, 1)),
            (utc(2026, 2, 1), utc(2026, 3, 1)),
            (utc(2026, 3, 1), utc(2026, 4, 1)),
        ]

    def test_a_backdated_mid_month_start_gives_a_partial_first_period(self):
        schedule = Schedule(utc(2026, 1, 15, 10, 30), Interval.MONTH)
        first, second = take(schedule, 2)
        assert (first.start, first.end) == (utc(2026, 1, 15, 10, 30), utc(2026, 2, 1))
        assert (first.full_start, first.full_end) == (utc(2026, 1, 1), utc(2026, 2, 1))
        assert first.is_partial
        assert (second.start, second.end) == (utc(2026, 2, 1), utc(2026, 3, 1))
        assert not second.is_partial

    def test_weekly_calendar_periods_start_on_monday(self):
        # 2026-01-07 is a Wednesday.
        schedule = Schedule(utc(2026, 1, 7), Interval.WEEK)
        first, second = take(schedule, 2)
        assert first.full_start == utc(2026, 1, 5)
        assert (first.start, first.end) == (utc(2026, 1, 7), utc(2026, 1, 12))
        assert (second.start, second.end) == (utc(2026, 1, 12), utc(2026, 1, 19))

    def test_quarterly_calendar_periods_start_on_quarter_months(self):
        schedule = Schedule(utc(2026, 5, 10), Interval.QUARTER)
        got = [(p.start, p.end) for p in take(schedule, 3)]
        assert got == [
            (utc(2026, 5, 10), utc(2026, 7, 1)),
            (utc(2026, 7, 1), utc(2026, 10, 1)),
            (utc(2026, 10, 1), utc(2027, 1, 1)),
        ]

    def test_yearly_calendar_periods_start_on_january_first(self):
        schedule = Schedule(utc(2027, 3, 1), Interval.YEAR)
        got = [(p.start, p.end) for p in take(schedule, 2)]
        assert got == [(utc(2027, 3, 1), utc(2028, 1, 1)), (utc(2028, 1, 1), utc(2029, 1, 1))]

    def test_every_two_months_counts_from_the_start_month(self):
        schedule = Schedule(utc(2026, 2, 1), Interval.MONTH, count=2)
        got = [p.end for p in take(schedule, 3)]
        assert got == [utc(2026, 4, 1), utc(2026, 6, 1), utc(2026, 8, 1)]

    def test_daily_periods_in_a_time_zone_start_at_local_midnight(self):
        schedule = Schedule(local("Asia/Tokyo", 2026, 3, 1), Interval.DAY, timezone="Asia/Tokyo")
        first = take(schedule, 1)[0]
        assert first.start == utc(2026, 2, 28, 15)
        assert first.end == utc(2026, 3, 1, 15)


class TestAnniversaryAnchor:
    def test_month_end_anchor_clamps_and_returns_to_the_31st(self):
        schedule = Schedule(utc(2026, 1, 31), Interval.MONTH, anchor=Anchor.ANNIVERSARY)
        ends = [p.end for p in take(schedule, 4)]
        assert ends == [utc(2026, 2, 28), utc(2026, 3, 31), utc(2026, 4, 30), utc(2026, 5, 31)]

    def test_month_end_anchor_in_a_leap_year_ends_on_february_29(self):
        schedule = Schedule(utc(2028, 1, 31), Interval.MONTH, anchor=Anchor.ANNIVERSARY)
        ends = [p.end for p in take(schedule, 2)]
        assert ends == [utc(2028, 2, 29), utc(2028, 3, 31)]

    def test_yearly_anchor_on_february_29_clamps_to_the_28th_then_returns(self):
        schedule = Schedule(utc(2024, 2, 29), Interval.YEAR, anchor=Anchor.ANNIVERSARY)
        ends = [p.end for p in take(schedule, 4)]
        assert ends == [utc(2025, 2, 28), utc(2026, 2, 28), utc(2027, 2, 28), utc(2028, 2, 29)]

    def test_a_mid_day_start_keeps_its_time_of_day_and_the_first_period_is_whole(self):
        schedule = Schedule(utc(2026, 3, 15, 14), Interval.MONTH, anchor=Anchor.ANNIVERSARY)
        first = take(schedule, 1)[0]
        assert (first.start, first.end) == (utc(2026, 3, 15, 14), utc(2026, 4, 15, 14))
        assert proration(schedule, first) == Decimal(1)

    def test_an_anchor_at_09_30_on_the_31st_keeps_09_30_and_returns_to_the_31st(self):
        schedule = Schedule(utc(2026, 3, 31, 9, 30), Interval.MONTH, anchor=Anchor.ANNIVERSARY)
        got = [(p.start, p.end) for p in take(schedule, 3)]
        assert got == [
            (utc(2026, 3, 31, 9, 30), utc(2026, 4, 30, 9, 30)),
            (utc(2026, 4, 30, 9, 30), utc(2026, 5, 31, 9, 30)),
            (utc(2026, 5, 31, 9, 30), utc(2026, 6, 30, 9, 30)),
        ]

    def test_an_instant_before_the_anchors_time_of_day_belongs_to_the_period_before(self):
        schedule = Schedule(utc(2026, 3, 31, 9, 30), Interval.MONTH, anchor=Anchor.ANNIVERSARY)
        before = period_containing(schedule, utc(2026, 4, 30, 9, 29, 59))
        after = period_containing(schedule, utc(2026, 4, 30, 9, 30))
        assert (before.start, before.end) == (utc(2026, 3, 31, 9, 30), utc(2026, 4, 30, 9, 30))
        assert after.start == utc(2026, 4, 30, 9, 30)

    def test_the_anchors_local_time_of_day_holds_across_dst_so_the_utc_instant_moves(self):
        # 10:30 in Paris: CET (+1) in January, CEST (+2) from March 29, 2026.
        zone = "Europe/Paris"
        schedule = Schedule(local(zone, 2026, 1, 20, 10, 30), Interval.MONTH, anchor=Anchor.ANNIVERSARY, timezone=zone)
        ends = [p.end for p in take(schedule, 3)]
        assert ends == [utc(2026, 2, 20, 9, 30), utc(2026, 3, 20, 9, 30), utc(2026, 4, 20, 8, 30)]

    def test_a_time_of_day_skipped_by_dst_is_read_with_the_offset_before_the_jump(self):
        # New York skipped 02:00-03:00 on 2026-03-08: 02:30 that day is read as 02:30 EST = 03:30 EDT.
        zone = "America/New_York"
        schedule = Schedule(local(zone, 2026, 2, 8, 2, 30), Interval.MONTH, anchor=Anchor.ANNIVERSARY, timezone=zone)
        first = take(schedule, 1)[0]
        assert first.end == utc(2026, 3, 8, 7, 30)
        assert first.end.astimezone(ZoneInfo(zone)).hour == 3

    def test_daily_anniversary_periods_run_from_the_start_time_to_the_same_time_next_day(self):
        schedule = Schedule(utc(2026, 5, 4, 18, 45), Interval.DAY, anchor=Anchor.ANNIVERSARY)
        assert [p.end for p in take(schedule, 2)] == [utc(2026, 5, 5, 18, 45), utc(2026, 5, 6, 18, 45)]

    def test_every_two_weeks_from_the_start_date(self):
        schedule = Schedule(utc(2026, 1, 7), Interval.WEEK, count=2, anchor=Anchor.ANNIVERSARY)
        ends = [p.end for p in take(schedule, 2)]
        assert ends == [utc(2026, 1, 21), utc(2026, 2, 4)]


class TestDaylightSaving:
    def test_daily_periods_are_23_and_25_hours_across_new_york_dst_changes(self):
        zone = "America/New_York"
        spring = period_containing(Schedule(local(zone, 2026, 1, 1), Interval.DAY, timezone=zone), utc(2026, 3, 8, 12))
        assert spring.end - spring.start == timedelta(hours=23)
        fall = period_containing(Schedule(local(zone, 2026, 1, 1), Interval.DAY, timezone=zone), utc(2026, 11, 1, 12))
        assert fall.end - fall.start == timedelta(hours=25)

    def test_monthly_periods_in_paris_follow_local_midnight_in_winter_and_summer(self):
        zone = "Europe/Paris"
        schedule = Schedule(local(zone, 2026, 1, 1), Interval.MONTH, timezone=zone)
        march = period_containing(schedule, utc(2026, 3, 15))
        # March 1 is CET (+1), April 1 is CEST (+2).
        assert march.start == utc(2026, 2, 28, 23)
        assert march.end == utc(2026, 3, 31, 22)

    def test_a_day_whose_midnight_does_not_exist_starts_at_the_transition(self):
        # Chile (America/Santiago) jumped from 00:00 to 01:00 on 2026-09-06.
        zone = "America/Santiago"
        schedule = Schedule(local(zone, 2026, 9, 1), Interval.DAY, timezone=zone)
        day = period_containing(schedule, local(zone, 2026, 9, 6, 12))
        assert day.start.astimezone(ZoneInfo(zone)).date() == date(2026, 9, 6)
        assert day.end - day.start == timedelta(hours=23)


class TestCancellation:
    def test_cancellation_ends_the_last_period_early_and_stops_the_schedule(self):
        schedule = Schedule(utc(2026, 1, 1), Interval.MONTH, end=utc(2026, 3, 10, 12))
        got = [(p.start, p.end) for p in periods(schedule, utc(2027, 1, 1))]
        assert got == [
            (utc(2026, 1, 1), utc(2026, 2, 1)),
            (utc(2026, 2, 1), utc(2026, 3, 1)),
            (utc(2026, 3, 1), utc(2026, 3, 10, 12)),
        ]
        assert period_containing(schedule, utc(2026, 3, 10, 12)) is None

    def test_cancellation_on_a_boundary_adds_no_empty_period(self):
        schedule = Schedule(utc(2026, 1, 1), Interval.MONTH, end=utc(2026, 3, 1))
        assert [p.end for p in periods(schedule, utc(2027, 1, 1))] == [utc(2026, 2, 1), utc(2026, 3, 1)]


class TestEndedPeriods:
    def test_only_periods_ended_by_as_of_are_returned(self):
        schedule = Schedule(utc(2026, 1, 1), Interval.MONTH)
        assert [p.end for p in ended_periods(schedule, utc(2026, 3, 1))] == [utc(2026, 2, 1), utc(2026, 3, 1)]
        assert list(ended_periods(schedule, utc(2026, 1, 31))) == []


class TestProration:
    def test_a_partial_first_month_is_prorated_by_local_days(self):
        schedule = Schedule(utc(2026, 1, 15), Interval.MONTH)
        first = take(schedule, 1)[0]
        assert proration(schedule, first) == Decimal(17) / Decimal(31)

    def test_a_cancelled_last_period_counts_the_started_day(self):
        schedule = Schedule(utc(2026, 4, 1), Interval.MONTH, end=utc(2026, 4, 10, 12))
        only = take(schedule, 1)[0]
        assert proration(schedule, only) == Decimal(10) / Decimal(30)


class TestValidation:
    def test_a_schedule_reports_every_problem_at_once(self):
        with pytest.raises(InvalidInput) as caught:
            Schedule(datetime(2026, 1, 1), Interval.MONTH, count=0, timezone="Mars/Olympus")
        fields = {v.field for v in caught.value.violations}
        assert fields == {"start", "count", "timezone"}


ZONES = ["UTC", "America/New_York", "Europe/Paris", "Australia/Lord_Howe", "Asia/Kolkata", "America/Santiago", "Pacific/Apia"]


@st.composite
def schedules(draw) -> Schedule:
    zone = draw(st.sampled_from(ZONES))
    start = draw(st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2060, 1, 1), timezones=st.just(UTC)))
    interval = draw(st.sampled_from(list(Interval)))
    count = draw(st.integers(1, 3))
    anchor = draw(st.sampled_from(list(Anchor)))
    end = None
    if draw(st.booleans()):
        end = start + timedelta(seconds=draw(st.integers(1, 5 * 366 * 86400)))
    return Schedule(start, interval, count, anchor, zone, end)


class TestProperties:
    @settings(max_examples=300, deadline=None)
    @given(schedules())
    def test_periods_are_contiguous_without_gaps_or_overlaps(self, schedule):
        got = take(schedule, 40)
        assert got[0].start == schedule.start
        for before, after in zip(got, got[1:]):
            assert before.end == after.start
        for period in got:
            assert period.start < period.end
            if schedule.end is not None:
                assert period.end <= schedule.end
        if schedule.end is not None and len(got) < 40:
            assert got[-1].end == schedule.end

    @settings(max_examples=300, deadline=None)
    @given(schedules())
    def test_inner_boundaries_fall_on_local_midnight_or_the_anchors_time_of_day(self, schedule):
        zone = ZoneInfo(schedule.timezone)
        clock = schedule.start.astimezone(zone).time().replace(tzinfo=None, fold=0)
        for period in take(schedule, 30)[1:]:
            local_start = period.start.astimezone(zone)
            if schedule.anchor is Anchor.CALENDAR:
                assert period.start == local_midnight(local_start.date(), zone)
            else:
                assert period.start == local_instant(local_start.date(), clock, zone) or period.start == local_instant(
                    local_start.date() - timedelta(days=1), clock, zone
                )

    @settings(max_examples=300, deadline=None)
    @given(schedules(), st.integers(0, 10 * 366 * 86400))
    def test_period_containing_agrees_with_the_enumeration(self, schedule, offset):
        instant = schedule.start + timedelta(seconds=offset)
        found = period_containing(schedule, instant)
        listed = [p for p in periods(schedule, instant + timedelta(seconds=1)) if p.contains(instant)]
        assert ([found] if found else []) == listed

    @settings(max_examples=200, deadline=None)
    @given(st.dates(min_value=date(1900, 1, 1), max_value=date(2100, 12, 31)), st.integers(0, 400))
    def test_adding_months_keeps_the_anchor_day_or_the_month_end(self, anchor, months):
        result = add_months(anchor, months)
        assert (result.year * 12 + result.month) - (anchor.year * 12 + anchor.month) == months
        assert result.day == anchor.day or (result.day < anchor.day and (result + timedelta(days=1)).day == 1)
