"""Guiding rules: which meters an event feeds, with what value and which dimension values."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

from services.meter.domain.model import (
    Aggregation,
    Contribution,
    Dimensions,
    FilterOperator,
    MeterDefinition,
    MeterFilter,
)
from tally import wire
from tally.domain.price_points import PRICE_POINT_DIMENSION

MISSING: Any = object()


class IncomingEvent(NamedTuple):
    """An event as read from ingest's log; properties are plain JSON values (floats for numbers).

    Entries are built by the thousand per batch: a NamedTuple is immutable like a frozen
    dataclass and builds ~2.5x faster (0.4 vs 1.1 us).
    """

    event_id: str
    event_type: str
    customer_id: str
    timestamp: datetime
    properties: dict[str, Any]
    # '' when unattributed.
    subscription_id: str = ""


class IncomingUsage(NamedTuple):
    """A pre-aggregated usage record from ingest's log, counted as given for its meter."""

    record_id: str
    customer_id: str
    meter_key: str
    quantity: Decimal
    timestamp: datetime
    dimensions: dict[str, str]
    subscription_id: str = ""


def property_roots(meters: Iterable[MeterDefinition]) -> frozenset[str]:
    """The top-level property names that ``meters`` read (value, filters and group-by paths).

    Matching an event against these meters looks at nothing else, so a reader of the log may
    decode only these properties.
    """
    paths = [path for m in meters for path in (m.value_property, *m.group_by, *(f.property for f in m.filters))]
    return frozenset(path.split(".", 1)[0] for path in paths if path)


def lookup(properties: dict[str, Any], path: str) -> Any:
    """The value at a dot path such as ``usage.duration``, or MISSING."""
    current: Any = properties
    for part in path.split("."):
        if not isinstance(current, dict) or part not in current:
            return MISSING
        current = current[part]
    return current


def to_decimal(value: Any) -> Decimal | None:
    """A property value as an exact Decimal of the grammar (tally.wire: a JSON number by its
    shortest repr, or a decimal string), of any magnitude; None if not a number. Filters
    compare with it, and dimension values render with it."""
    return wire.json_number_unbounded(value)


def meter_value(value: Any) -> Decimal | None:
    """A property value as a meter's value: a number of the grammar within its bounds, which
    every column and sum holds exactly. Anything else would fail its batch in the database or
    round; it is an unusable value instead (counted, visible in GetMeterStatus)."""
    return wire.json_number(value)


def as_text(value: Any) -> str:
    """A property value as the string used for dimensions, unique values and string filters."""
    if value is MISSING or value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        number = to_decimal(value)
        if number is None:
            return repr(value)
        # 3.0 and 3 are the same number; render integers without a fraction.
        return str(number.to_integral_value()) if number == number.to_integral_value() else str(number.normalize())
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _equals(actual: Any, expected: str) -> bool:
    if isinstance(actual, (int, float)) and not isinstance(actual, bool):
        left, right = to_decimal(actual), to_decimal(expected)
        return left is not None and right is not None and left == right
    return as_text(actual) == expected


def filter_matches(condition: MeterFilter, properties: dict[str, Any]) -> bool:
    actual = lookup(properties, condition.property)
    op = condition.operator
    if op is FilterOperator.EXISTS:
        return actual is not MISSING
    if op is FilterOperator.NOT_EXISTS:
        return actual is MISSING
    if actual is MISSING:
        # A condition on an absent property holds only for the negative operators.
        return op in (FilterOperator.NEQ, FilterOperator.NOT_IN)
    if op is FilterOperator.EQ:
        return bool(condition.values) and _equals(actual, condition.values[0])
    if op is FilterOperator.NEQ:
        return not (condition.values and _equals(actual, condition.values[0]))
    if op is FilterOperator.IN:
        return any(_equals(actual, v) for v in condition.values)
    if op is FilterOperator.NOT_IN:
        return not any(_equals(actual, v) for v in condition.values)
    left = to_decimal(actual)
    right = to_decimal(condition.values[0]) if condition.values else None
    if left is None or right is None:
        return False
    if op is FilterOperator.GT:
        return left > right
    if op is FilterOperator.GTE:
        return left >= right
    if op is FilterOperator.LT:
        return left < right
    if op is FilterOperator.LTE:
        return left <= right
    return False


def meter_matches(meter: MeterDefinition, event: IncomingEvent) -> bool:
    """The event's type is the meter's and every filter holds."""
    return event.event_type == meter.event_type and all(
        filter_matches(f, event.properties) for f in meter.filters
    )


def dimension_values(meter: MeterDefinition, properties: dict[str, Any]) -> Dimensions:
    """The meter's group-by values for these properties (absent properties give "")."""
    return tuple((path, as_text(lookup(properties, path))) for path in meter.group_by)


class UnusableValue(Exception):
    """The event matched the meter but its value property is missing, not a number of the
    grammar, outside its bounds, or negative for a meter that does not allow negatives."""


def event_contribution(meter: MeterDefinition, event: IncomingEvent) -> Contribution:
    """What a matching event adds to ``meter``; raises UnusableValue when it has no usable value."""
    dims = dimension_values(meter, event.properties)
    agg = meter.aggregation
    unique_value = None
    if agg is Aggregation.COUNT:
        value = Decimal(1)
    elif agg is Aggregation.COUNT_UNIQUE:
        raw = lookup(event.properties, meter.value_property)
        if raw is MISSING or raw is None:
            raise UnusableValue(meter.value_property)
        unique_value, value = as_text(raw), Decimal(0)
    else:
        number = meter_value(lookup(event.properties, meter.value_property))
        if number is None or (number < 0 and not meter.allow_negative):
            raise UnusableValue(meter.value_property)
        value = number
    return Contribution(
        entry_id=event.event_id,
        meter_key=meter.key,
        customer_id=event.customer_id,
        dimensions=dims,
        timestamp=event.timestamp,
        value=value,
        count=Decimal(1),
        unique_value=unique_value,
        subscription_id=event.subscription_id,
    )


def usage_contribution(meter: MeterDefinition, usage: IncomingUsage) -> Contribution:
    """A usage record counted as given: its quantity is the count of a COUNT meter, else the value."""
    dims = tuple((path, usage.dimensions.get(path, "")) for path in meter.group_by)
    price_point = usage.dimensions.get(PRICE_POINT_DIMENSION, "")
    if price_point:
        # Kept whatever the meter's group-by: the invoice prices it (tally/domain/price_points.py).
        dims = (*dims, (PRICE_POINT_DIMENSION, price_point))
    count = usage.quantity if meter.aggregation is Aggregation.COUNT else Decimal(1)
    return Contribution(
        entry_id=usage.record_id,
        meter_key=meter.key,
        customer_id=usage.customer_id,
        dimensions=dims,
        timestamp=usage.timestamp,
        value=usage.quantity,
        count=count,
        unique_value=None,
        subscription_id=usage.subscription_id,
    )
