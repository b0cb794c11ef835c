"""Billing periods on the customer's local calendar.

A schedule (start instant, interval × count, anchor, IANA time zone, optional end) yields
half-open periods [start, end) as aware UTC datetimes. Boundaries fall on a local wall-clock
time of the boundary dates (midnight for CALENDAR, the start's time of day for ANNIVERSARY),
so a daily period across a DST change is 23 or 25 hours long.

Anchoring:
- CALENDAR: boundaries on calendar units (local midnight; Monday for weeks; the 1st for
  months; Jan/Apr/Jul/Oct 1st for quarters; Jan 1st for years), counted from the unit that
  contains the start. A start between boundaries gives a partial first period.
- ANNIVERSARY: boundaries at the start's local time of day on the start's local date plus k
  intervals, so a subscription started 2026-03-31T09:30Z (UTC customer) has monthly periods
  [03-31 09:30, 04-30 09:30), [04-30 09:30, 05-31 09:30), ... Month arithmetic is always
  taken from the original anchor day and clamped to the month's length, so an anchor on the
  31st gives Feb 28 (or 29), then Mar 31, then Apr 30 — never drifting to the 28th.
  The time of day is the customer's local wall-clock time: across DST the UTC instant moves
  by the offset change. A wall-clock time that does not exist on a boundary date (skipped by
  a DST jump) is read with the offset before the jump (02:30 on a 02:00->03:00 day is 03:30);
  one that occurs twice is its first occurrence.

An end (cancellation) instant truncates the last period; no period starts at or after it.

Pure: no grpc, no protobuf, no SQL. Shared by invoice (period close) and meter (alert periods).
"""

from __future__ import annotations

import calendar
import enum
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tally.errors import Violations

UTC = timezone.utc


class Interval(enum.Enum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    QUARTER = "quarter"
    YEAR = "year"


class Anchor(enum.Enum):
    CALENDAR = "calendar"
    ANNIVERSARY = "anniversary"


@dataclass(frozen=True)
class Period:
    """A billing period [start, end) in UTC.

    ``full_start``/``full_end`` are the bounds of the whole nominal period this one belongs to;
    they differ from start/end only for a partial first period or a period cut by cancellation.
    """

    start: datetime
    end: datetime
    full_start: datetime | None = None
    full_end: datetime | None = None

    @property
    def is_partial(self) -> bool:
        return (self.full_start is not None and self.start != self.full_start) or (
            self.full_end is not None and self.end != self.full_end
        )

    def contains(self, instant: datetime) -> bool:
        return self.start <= instant < self.end


@dataclass(frozen=True)
class Schedule:
    """When a subscription's periods fall. ``end`` is a cancellation or end instant."""

    start: datetime
    interval: Interval
    count: int = 1
    anchor: Anchor = Anchor.CALENDAR
    timezone: str = "UTC"
    end: datetime | None = None

    def __post_init__(self) -> None:
        problems = Violations()
        if self.start.tzinfo is None:
            problems.add("start", "must be an aware datetime", "NAIVE_DATETIME")
        if self.end is not None and self.end.tzinfo is None:
            problems.add("end", "must be an aware datetime", "NAIVE_DATETIME")
        if not isinstance(self.interval, Interval):
            problems.add("interval", "must be day, week, month, quarter or year", "INVALID_INTERVAL")
        if not isinstance(self.anchor, Anchor):
            problems.add("anchor", "must be calendar or anniversary", "INVALID_ANCHOR")
        if not isinstance(self.count, int) or self.count < 1:
            problems.add("count", "must be an integer >= 1", "INVALID_INTERVAL_COUNT")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            problems.add("timezone", f"unknown IANA time zone {self.timezone!r}", "UNKNOWN_TIME_ZONE")
        problems.raise_if_any("invalid billing schedule")

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def local_midnight(day: date, zone: ZoneInfo) -> datetime:
    """The first instant of local ``day`` in ``zone``, in UTC.

    Where midnight does not exist (a DST jump at 00:00) fold=0 resolves to the transition
    instant, which is the day's first instant; where it occurs twice, fold=0 is the first.
    """
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def local_instant(day: date, clock: time, zone: ZoneInfo) -> datetime:
    """Wall-clock ``clock`` of local ``day`` in ``zone``, in UTC (fold=0: see the module doc)."""
    if clock == time(0):
        return local_midnight(day, zone)
    return datetime.combine(day, clock, tzinfo=zone).astimezone(UTC)


def _time_of_day(schedule: Schedule) -> time:
    """The local wall-clock time boundaries fall on: the start's for ANNIVERSARY, else midnight."""
    if schedule.anchor is Anchor.ANNIVERSARY:
        return schedule.start.astimezone(schedule.zone).time().replace(tzinfo=None, fold=0)
    return time(0)


def add_months(anchor: date, months: int) -> date:
    """``anchor`` plus ``months``, clamping the anchor's day to the target month's length."""
    index = anchor.year * 12 + (anchor.month - 1) + months
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(anchor.day, last))


def _months_per_step(schedule: Schedule) -> int:
    return {Interval.MONTH: 1, Interval.QUARTER: 3, Interval.YEAR: 12}[schedule.interval] * schedule.count


def _origin(schedule: Schedule) -> date:
    """Local date of boundary 0; boundary 0 is at or before the start."""
    local = schedule.start.astimezone(schedule.zone).date()
    if schedule.anchor is Anchor.ANNIVERSARY:
        return local
    match schedule.interval:
        case Interval.DAY:
            return local
        case Interval.WEEK:
            return local - timedelta(days=local.weekday())
        case Interval.MONTH:
            return local.replace(day=1)
        case Interval.QUARTER:
            return date(local.year, 3 * ((local.month - 1) // 3) + 1, 1)
        case Interval.YEAR:
            return date(local.year, 1, 1)
    raise AssertionError(schedule.interval)


def _boundary_date(schedule: Schedule, origin: date, k: int) -> date:
    if schedule.interval is Interval.DAY:
        return origin + timedelta(days=k * schedule.count)
    if schedule.interval is Interval.WEEK:
        return origin + timedelta(days=7 * k * schedule.count)
    return add_months(origin, k * _months_per_step(schedule))


def _boundary(schedule: Schedule, origin: date, k: int) -> datetime:
    """Boundary k as a UTC instant."""
    return local_instant(_boundary_date(schedule, origin, k), _time_of_day(schedule), schedule.zone)


def _estimate_index(schedule: Schedule, origin: date, day: date) -> int:
    """A k close to the boundary index at or before local ``day`` (exact up to ±1)."""
    if schedule.interval is Interval.DAY:
        return (day - origin).days // schedule.count
    if schedule.interval is Interval.WEEK:
        return (day - origin).days // (7 * schedule.count)
    months = (day.year - origin.year) * 12 + (day.month - origin.month)
    return months // _months_per_step(schedule)


def _period(schedule: Schedule, origin: date, k: int) -> Period | None:
    """Period number k (0 is the first), or None when it starts at or after the end."""
    full_start = _boundary(schedule, origin, k)
    full_end = _boundary(schedule, origin, k + 1)
    start = max(full_start, schedule.start.astimezone(UTC))
    end = full_end
    if schedule.end is not None:
        if start >= schedule.end:
            return None
        end = min(end, schedule.end.astimezone(UTC))
    return Period(start=start, end=end, full_start=full_start, full_end=full_end)


def periods(schedule: Schedule, until: datetime) -> Iterator[Period]:
    """The schedule's periods that start before ``until``, in order, contiguous."""
    origin = _origin(schedule)
    k = 0
    while True:
        period = _period(schedule, origin, k)
        if period is None or period.start >= until:
            return
        yield period
        k += 1


def period_containing(schedule: Schedule, instant: datetime) -> Period | None:
    """The period that contains ``instant``, or None before the start or at/after the end."""
    instant = instant.astimezone(UTC)
    if instant < schedule.start or (schedule.end is not None and instant >= schedule.end):
        return None
    origin = _origin(schedule)
    k = max(0, _estimate_index(schedule, origin, instant.astimezone(schedule.zone).date()))
    # The estimate is off by at most one step either way (clamped month days, a boundary's
    # time of day); walk to it.
    while k > 0 and _boundary(schedule, origin, k) > instant:
        k -= 1
    while _boundary(schedule, origin, k + 1) <= instant:
        k += 1
    return _period(schedule, origin, k)


def ended_periods(schedule: Schedule, as_of: datetime) -> Iterator[Period]:
    """The periods whose end is at or before ``as_of`` (the ones that can be closed)."""
    for period in periods(schedule, as_of):
        if period.end > as_of:
            return
        yield period


def local_days(start: datetime, end: datetime, zone: ZoneInfo, *, count_last_started_day: bool = True) -> int:
    """Local calendar days from the day of ``start`` to ``end``.

    A started last day counts as a whole day unless ``count_last_started_day`` is False (used
    for a split inside a period, so the day of the split is counted once, by the later part).
    """
    first = start.astimezone(zone).date()
    last = end.astimezone(zone).date()
    if count_last_started_day and local_midnight(last, zone) < end.astimezone(UTC):
        last += timedelta(days=1)
    return max(0, (last - first).days)


def proration(schedule: Schedule, period: Period, start: datetime | None = None, end: datetime | None = None) -> Decimal:
    """Share of the nominal period that [start, end) covers, by local days (1 for a full period).

    Args:
        schedule: the schedule the period belongs to (for its time zone).
        period: the period; its full_start/full_end are the nominal bounds.
        start, end: the covered part; default to the period's own bounds.
    """
    zone = schedule.zone
    full_start = period.full_start or period.start
    full_end = period.full_end or period.end
    part_end = end or period.end
    covered = local_days(start or period.start, part_end, zone, count_last_started_day=part_end >= period.end)
    total = local_days(full_start, full_end, zone)
    if total <= 0 or covered >= total:
        return Decimal(1)
    return Decimal(covered) / Decimal(total)
