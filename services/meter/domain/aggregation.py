"""Window summaries and how they combine into the exact value of any period.

A bucket is the summary of one customer's contributions to one meter, for one set of
dimension values, in one fine window. Summaries combine associatively, so a period is the
combination of its windows. COUNT_UNIQUE cannot be combined from counts: it combines the sets
of distinct values kept per window. WEIGHTED_SUM combines "pieces" in time order, carrying the
value in force from one piece to the next.

``reference_value`` computes every aggregation straight from contributions; it is the
brute-force definition the bucketed path is tested against.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from services.meter.domain.model import Aggregation, Contribution, Dimensions
from tally import wire

ZERO = Decimal(0)
# Sums and integrals (value × seconds) of bounded values need more digits than the default
# 28 to stay exact: every addition and multiplication here uses the shared exact context.
_WIDE = wire.EXACT
_add = _WIDE.add

LatestKey = tuple[datetime, str]


@dataclass(frozen=True)
class Summary:
    """Everything SUM, COUNT, MIN, MAX, AVG and LATEST need from a set of contributions."""

    count: Decimal = ZERO
    total: Decimal = ZERO
    minimum: Decimal | None = None
    maximum: Decimal | None = None
    # LATEST by event timestamp; ties broken by the greater entry id.
    latest_key: LatestKey | None = None
    latest_value: Decimal | None = None

    def combine(self, other: "Summary") -> "Summary":
        latest_key, latest_value = self.latest_key, self.latest_value
        if other.latest_key is not None and (latest_key is None or other.latest_key > latest_key):
            latest_key, latest_value = other.latest_key, other.latest_value
        return Summary(
            count=_add(self.count, other.count),
            total=_add(self.total, other.total),
            minimum=_pick(min, self.minimum, other.minimum),
            maximum=_pick(max, self.maximum, other.maximum),
            latest_key=latest_key,
            latest_value=latest_value,
        )

    @staticmethod
    def of(contribution: Contribution) -> "Summary":
        return Summary(
            count=contribution.count,
            total=contribution.value,
            minimum=contribution.value,
            maximum=contribution.value,
            latest_key=(contribution.timestamp, contribution.entry_id),
            latest_value=contribution.value,
        )


def _pick(choose, a: Decimal | None, b: Decimal | None) -> Decimal | None:
    if a is None:
        return b
    if b is None:
        return a
    return choose(a, b)


def combine_all(summaries: Iterable[Summary]) -> Summary:
    result = Summary()
    for summary in summaries:
        result = result.combine(summary)
    return result


def summary_value(aggregation: Aggregation, summary: Summary, distinct_values: int = 0) -> Decimal:
    """The period's value from its combined summary; an empty period is 0 for every aggregation."""
    if aggregation is Aggregation.COUNT:
        return summary.count
    if aggregation is Aggregation.SUM:
        return summary.total
    if aggregation is Aggregation.MAX:
        return summary.maximum if summary.maximum is not None else ZERO
    if aggregation is Aggregation.MIN:
        return summary.minimum if summary.minimum is not None else ZERO
    if aggregation is Aggregation.LATEST:
        return summary.latest_value if summary.latest_value is not None else ZERO
    if aggregation is Aggregation.AVG:
        return summary.total / summary.count if summary.count else ZERO
    if aggregation is Aggregation.COUNT_UNIQUE:
        # Events add distinct values; usage records add their given quantity (in total).
        return _add(Decimal(distinct_values), summary.total)
    raise ValueError(f"{aggregation} is not a summary aggregation")


# ---------------------------------------------------------------- weighted sum


@dataclass(frozen=True)
class Piece:
    """A stretch of one dimension set's gauge: its first change, and the integral after it.

    ``integral`` is ∫ value dt (value × seconds) from ``first_time`` to ``end``; ``last_value``
    is the value in force at ``end``. A window bucket is a piece ending at the window's end; a
    single contribution is a piece with ``end == first_time`` and integral 0.
    """

    first_time: datetime
    end: datetime
    integral: Decimal
    last_value: Decimal


def seconds(delta: timedelta) -> Decimal:
    """An exact duration in seconds (microsecond resolution)."""
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return Decimal(micros).scaleb(-6)


def window_piece(contributions: Sequence[Contribution], window_end: datetime) -> Piece:
    """The piece of one window's contributions (of one dimension set)."""
    ordered = sorted(contributions, key=lambda c: (c.timestamp, c.entry_id))
    integral = ZERO
    for current, following in zip(ordered, [*ordered[1:], None]):
        until = following.timestamp if following is not None else window_end
        integral = _WIDE.add(integral, _WIDE.multiply(current.value, seconds(until - current.timestamp)))
    return Piece(ordered[0].timestamp, window_end, integral, ordered[-1].value)


def weighted_value(pieces: Iterable[Piece], carry_in: Decimal, start: datetime, end: datetime) -> Decimal:
    """Time-weighted value over [start, end) of one gauge, from pieces inside it in time order.

    ``carry_in`` is the value in force at ``start`` (the latest value before it, else 0).
    """
    if end <= start:
        return ZERO
    integral, current, position = _weighted_integral(pieces, carry_in, start, end)
    integral = _WIDE.add(integral, _WIDE.multiply(current, seconds(end - position)))
    return integral / seconds(end - start)


def _weighted_integral(pieces: Iterable[Piece], carry_in: Decimal, start: datetime, end: datetime):
    integral, current, position = ZERO, carry_in, start
    for piece in pieces:
        integral = _WIDE.add(integral, _WIDE.multiply(current, seconds(piece.first_time - position)))
        integral = _WIDE.add(integral, piece.integral)
        current, position = piece.last_value, piece.end
    return integral, current, position


# ---------------------------------------------------------------- brute force


def reference_value(
    aggregation: Aggregation,
    contributions: Sequence[Contribution],
    start: datetime,
    end: datetime,
    dimension_filter: dict[str, str] | None = None,
) -> Decimal:
    """The exact value of [start, end) computed directly from contributions (one meter, one customer).

    ``contributions`` may include ones before ``start``: WEIGHTED_SUM needs the value in force.
    """
    wanted = [c for c in contributions if _dims_match(c.dimensions, dimension_filter)]
    inside = [c for c in wanted if start <= c.timestamp < end]
    if aggregation is Aggregation.COUNT_UNIQUE:
        distinct = {c.unique_value for c in inside if c.unique_value is not None}
        return _add(Decimal(len(distinct)), _sum(c.value for c in inside if c.unique_value is None))
    if aggregation is Aggregation.WEIGHTED_SUM:
        total = ZERO
        for dims in sorted({c.dimensions for c in wanted}):
            series = sorted((c for c in wanted if c.dimensions == dims), key=lambda c: (c.timestamp, c.entry_id))
            before = [c for c in series if c.timestamp < start]
            carry = before[-1].value if before else ZERO
            pieces = [Piece(c.timestamp, c.timestamp, ZERO, c.value) for c in series if start <= c.timestamp < end]
            total = _add(total, weighted_value(pieces, carry, start, end))
        return total
    if aggregation is Aggregation.COUNT:
        return _sum(c.count for c in inside)
    if aggregation is Aggregation.SUM:
        return _sum(c.value for c in inside)
    if not inside:
        return ZERO
    if aggregation is Aggregation.MAX:
        return max(c.value for c in inside)
    if aggregation is Aggregation.MIN:
        return min(c.value for c in inside)
    if aggregation is Aggregation.AVG:
        return _sum(c.value for c in inside) / _sum(c.count for c in inside)
    if aggregation is Aggregation.LATEST:
        return max(inside, key=lambda c: (c.timestamp, c.entry_id)).value
    raise ValueError(aggregation)


def _sum(values: Iterable[Decimal]) -> Decimal:
    total = ZERO
    for value in values:
        total = _add(total, value)
    return total


def _dims_match(dims: Dimensions, wanted: dict[str, str] | None) -> bool:
    if not wanted:
        return True
    as_dict = dict(dims)
    return all(as_dict.get(k) == v for k, v in wanted.items())
