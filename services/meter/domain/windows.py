"""Time windows: the fine bucket grain, and chart series on a time zone's local calendar."""

from __future__ import annotations

import enum
import sys
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from tally.domain.periods import add_months, local_midnight

UTC = timezone.utc
# Buckets are one minute wide: every real time zone offset is a whole number of minutes, so
# local hours, days and months (and billing periods) are unions of whole buckets.
GRAIN = timedelta(minutes=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Granularity(enum.Enum):
    HOUR = "hour"
    DAY = "day"
    MONTH = "month"


def window_start(instant: datetime) -> datetime:
    """The start of the bucket window holding ``instant``."""
    return instant - (instant - _EPOCH) % GRAIN


def ceil_window(instant: datetime) -> datetime:
    """The first window boundary at or after ``instant``."""
    floor = window_start(instant)
    return floor if floor == instant else floor + GRAIN


def aligned_span(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The whole windows inside [start, end): [ceil(start), floor(end)), empty when start == end."""
    inner_start, inner_end = ceil_window(start), window_start(end)
    if inner_end < inner_start:
        return start, start
    return inner_start, inner_end


class TooManyWindows(ValueError):
    """A series would have more than its limit of windows; raised before they are built."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the series would exceed {limit:,} points")
        self.limit = limit


def series_windows(
    start: datetime, end: datetime, granularity: Granularity, zone: ZoneInfo, max_windows: int | None = None
) -> list[tuple[datetime, datetime]]:
    """Consecutive windows covering [start, end), clipped to it, on the local calendar of ``zone``.

    Days and months begin at local midnight, so a day across a DST change lasts 23 or 25 hours.
    Hours are 60-minute steps aligned to the zone's local hours. With ``max_windows``, a series
    that would have more windows raises TooManyWindows before more than that many are built:
    the cost of a request is checked before its memory is spent.
    """
    if end <= start:
        return []
    if max_windows is not None and _fewest_windows(start, end, granularity) > max_windows:
        raise TooManyWindows(max_windows)
    boundaries = _boundaries(start, end, granularity, zone, None if max_windows is None else max_windows + 2)
    windows = [(max(a, start), min(b, end)) for a, b in zip(boundaries, boundaries[1:]) if b > start and a < end]
    if max_windows is not None and len(windows) > max_windows:
        raise TooManyWindows(max_windows)
    return windows


def _fewest_windows(start: datetime, end: datetime, granularity: Granularity) -> int:
    """A lower bound on the number of windows in [start, end), from arithmetic alone.

    Local days last at least 22 hours and months at least 27 days of local time in every
    zone, however the zone's offset moves (the largest jumps in the tz database are about a
    day, and they only make a window disappear, which this bound allows for by halving).
    """
    elapsed = end - start
    if granularity is Granularity.HOUR:
        return elapsed // timedelta(hours=1)
    if granularity is Granularity.DAY:
        return elapsed // timedelta(hours=48)
    return elapsed // timedelta(days=62)


def _boundaries(
    start: datetime, end: datetime, granularity: Granularity, zone: ZoneInfo, most: int | None = None
) -> list[datetime]:
    local = start.astimezone(zone)
    most = most if most is not None else sys.maxsize
    if granularity is Granularity.HOUR:
        first = local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
        result = [first]
        while result[-1] < end and len(result) <= most:
            result.append(result[-1] + timedelta(hours=1))
        return result
    if granularity is Granularity.DAY:
        day = local.date()
        result = [local_midnight(day, zone)]
        while result[-1] < end and len(result) <= most:
            day += timedelta(days=1)
            result.append(local_midnight(day, zone))
        return result
    first_day = date(local.year, local.month, 1)
    result, k = [local_midnight(first_day, zone)], 0
    while result[-1] < end and len(result) <= most:
        k += 1
        result.append(local_midnight(add_months(first_day, k), zone))
    return result


DAY = timedelta(days=1)


def whole_days(start: datetime, end: datetime) -> tuple[datetime, datetime] | None:
    """The whole UTC days inside [start, end) (for day roll-ups), or None when there are none."""
    first = start - (start - _EPOCH) % DAY
    if first < start:
        first += DAY
    last = end - (end - _EPOCH) % DAY
    return (first, last) if first < last else None
