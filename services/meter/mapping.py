"""Protobuf <-> domain conversions of the meter service (the only module that converts)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2

from services.meter.domain.matching import IncomingEvent, IncomingUsage
from services.meter.domain.model import Aggregation, FilterOperator, MeterDefinition, MeterFilter
from services.meter.domain.thresholds import Alert, NewThreshold, Threshold
from services.meter.domain.windows import Granularity
from tally import wire
from tally_gen.catalog.v1 import catalog_pb2
from tally_gen.common.v1 import common_pb2
from tally_gen.ingest.v1 import ingest_pb2
from tally_gen.meter.v1 import meter_pb2

UTC = timezone.utc

_AGGREGATIONS = {
    catalog_pb2.AGGREGATION_COUNT: Aggregation.COUNT,
    catalog_pb2.AGGREGATION_SUM: Aggregation.SUM,
    catalog_pb2.AGGREGATION_MAX: Aggregation.MAX,
    catalog_pb2.AGGREGATION_MIN: Aggregation.MIN,
    catalog_pb2.AGGREGATION_COUNT_UNIQUE: Aggregation.COUNT_UNIQUE,
    catalog_pb2.AGGREGATION_LATEST: Aggregation.LATEST,
    catalog_pb2.AGGREGATION_AVG: Aggregation.AVG,
    catalog_pb2.AGGREGATION_WEIGHTED_SUM: Aggregation.WEIGHTED_SUM,
}
_OPERATORS = {
    catalog_pb2.FILTER_OPERATOR_EQ: FilterOperator.EQ,
    catalog_pb2.FILTER_OPERATOR_NEQ: FilterOperator.NEQ,
    catalog_pb2.FILTER_OPERATOR_IN: FilterOperator.IN,
    catalog_pb2.FILTER_OPERATOR_NOT_IN: FilterOperator.NOT_IN,
    catalog_pb2.FILTER_OPERATOR_GT: FilterOperator.GT,
    catalog_pb2.FILTER_OPERATOR_GTE: FilterOperator.GTE,
    catalog_pb2.FILTER_OPERATOR_LT: FilterOperator.LT,
    catalog_pb2.FILTER_OPERATOR_LTE: FilterOperator.LTE,
    catalog_pb2.FILTER_OPERATOR_EXISTS: FilterOperator.EXISTS,
    catalog_pb2.FILTER_OPERATOR_NOT_EXISTS: FilterOperator.NOT_EXISTS,
}
_GRANULARITIES = {
    meter_pb2.GRANULARITY_HOUR: Granularity.HOUR,
    meter_pb2.GRANULARITY_DAY: Granularity.DAY,
    meter_pb2.GRANULARITY_MONTH: Granularity.MONTH,
}
BACKFILL_STATES = {
    "running": meter_pb2.BACKFILL_STATE_RUNNING,
    "done": meter_pb2.BACKFILL_STATE_DONE,
    "failed": meter_pb2.BACKFILL_STATE_FAILED,
}


# ---------------------------------------------------------------- scalars


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_datetime(ts: timestamp_pb2.Timestamp) -> datetime:
    """A Timestamp as an aware UTC datetime (microseconds; the database keeps no more)."""
    # Positional timedelta arguments: half the cost of keywords, and this runs once per entry.
    return _EPOCH + timedelta(0, ts.seconds, ts.nanos // 1000)


def to_timestamp(instant: datetime | None) -> timestamp_pb2.Timestamp | None:
    if instant is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(instant.astimezone(UTC))
    return ts


def decimal_to_proto(value: Decimal) -> common_pb2.Decimal:
    return common_pb2.Decimal(value=format_decimal(value))


def format_decimal(value: Decimal) -> str:
    """Plain notation (no exponent), trailing fractional zeros kept as computed."""
    return wire.format_decimal(value)


def decimal_from_proto(value: common_pb2.Decimal, field: str) -> Decimal:
    """A request's decimal (tally.wire grammar and bounds); INVALID_ARGUMENT naming ``field``."""
    return wire.decimal_or_raise(value.value, field)


def struct_to_python(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as plain JSON values; numbers stay floats (the domain reads them by shortest repr)."""
    return {key: _value_to_python(value) for key, value in struct.fields.items()}


def _value_to_python(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        return value.number_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return struct_to_python(value.struct_value)
    if kind == "list_value":
        return [_value_to_python(v) for v in value.list_value.values]
    return None


# ---------------------------------------------------------------- catalog


def meter_from_catalog(meter: catalog_pb2.Meter) -> MeterDefinition | None:
    """The catalog's meter as a definition; None when its aggregation is unknown to this version."""
    aggregation = _AGGREGATIONS.get(meter.aggregation)
    if aggregation is None:
        return None
    filters = tuple(
        MeterFilter(f.property, _OPERATORS[f.operator], tuple(f.values)) for f in meter.filters if f.operator in _OPERATORS
    )
    return MeterDefinition(
        key=meter.key,
        event_type=meter.event_type,
        aggregation=aggregation,
        value_property=meter.value_property,
        filters=filters,
        group_by=tuple(meter.group_by),
        allow_negative=meter.allow_negative,
    )


# ---------------------------------------------------------------- log


def log_items(
    entries: Iterable[ingest_pb2.LogEntry], property_roots: Callable[[str], frozenset[str]]
) -> list[tuple[int, object]]:
    """A ReadLog page as (position, item) pairs (see log_item).

    An event keeps only the top-level properties named by ``property_roots(event_type)``:
    what the meters of its type read. Converting every property of every event cost more than
    the rest of decoding.
    """
    roots_of: dict[str, frozenset[str]] = {}
    items = []
    for entry in entries:
        if entry.WhichOneof("entry") == "event":
            event = entry.event
            roots = roots_of.get(event.event_type)
            if roots is None:
                roots = roots_of[event.event_type] = property_roots(event.event_type)
            items.append((entry.position, _event(event, roots)))
        else:
            items.append((entry.position, log_item(entry)))
    return items


def log_item(entry: ingest_pb2.LogEntry):
    """A log entry as an IncomingEvent (with every property), IncomingUsage or the voided event's id (str)."""
    kind = entry.WhichOneof("entry")
    if kind == "event":
        return _event(entry.event, None)
    if kind == "usage":
        usage = entry.usage
        instant = usage.range.start if usage.HasField("range") else usage.timestamp
        return IncomingUsage(
            record_id=usage.usage_record_id,
            customer_id=usage.customer_id,
            meter_key=usage.meter_key,
            # Ingest stored it by the grammar; unbounded here, so a record is never lost to a
            # bound tightened later.
            quantity=wire.parse_decimal_unbounded(usage.quantity.value or "0"),
            timestamp=to_datetime(instant),
            dimensions=dict(usage.dimensions),
            subscription_id=usage.subscription_id,
        )
    if kind == "void":
        return entry.void.event_id
    return None


def _event(event: ingest_pb2.LoggedEvent, roots: frozenset[str] | None) -> IncomingEvent:
    if roots is None:
        properties = struct_to_python(event.properties)
    else:
        fields = event.properties.fields
        properties = {key: _value_to_python(fields[key]) for key in roots if key in fields}
    return IncomingEvent(
        event.event_id, event.event_type, event.customer_id, to_datetime(event.timestamp), properties, event.subscription_id
    )


# ---------------------------------------------------------------- requests


def required_range(start: timestamp_pb2.Timestamp, end: timestamp_pb2.Timestamp, has_start: bool, has_end: bool, problems) -> tuple[datetime, datetime]:
    if not has_start:
        problems.add("start", "is required", "REQUIRED")
    if not has_end:
        problems.add("end", "is required", "REQUIRED")
    s, e = to_datetime(start), to_datetime(end)
    if has_start and has_end and e <= s:
        problems.add("end", "must be after start", "INVALID_RANGE")
    return s, e


def granularity(value: int) -> Granularity | None:
    return _GRANULARITIES.get(value)


def usage_to_proto(result) -> meter_pb2.GetUsageResponse:
    """A UsageResult as GetUsage answers it."""
    return meter_pb2.GetUsageResponse(
        meter_key=result.meter_key,
        customer_id=result.customer_id,
        start=to_timestamp(result.start),
        end=to_timestamp(result.end),
        value=decimal_to_proto(result.value),
        breakdown=[dimension_values(dims, value) for dims, value in result.breakdown],
        applied_position=result.applied_position,
        subscription_id=result.subscription_id,
    )


def dimension_values(dims: dict[str, str], value: Decimal) -> meter_pb2.DimensionValue:
    return meter_pb2.DimensionValue(dimensions=dims, value=decimal_to_proto(value))


def new_threshold(request: meter_pb2.CreateThresholdRequest) -> NewThreshold:
    t = request.threshold
    absolute = decimal_from_proto(t.absolute_units, "threshold.absolute_units") if t.HasField("absolute_units") else None
    percent = (
        decimal_from_proto(t.percent_of_included, "threshold.percent_of_included")
        if t.HasField("percent_of_included")
        else None
    )
    scope = t.WhichOneof("scope")
    return NewThreshold(
        meter_key=t.meter_key,
        plan_key=t.plan_key if scope == "plan_key" and t.plan_key else None,
        customer_id=t.customer_id if scope == "customer_id" and t.customer_id else None,
        absolute_units=absolute,
        percent_of_included=percent,
        name=t.name,
    )


def threshold_to_proto(threshold: Threshold) -> meter_pb2.Threshold:
    message = meter_pb2.Threshold(
        id=threshold.id, meter_key=threshold.meter_key, name=threshold.name, create_time=to_timestamp(threshold.create_time)
    )
    if threshold.plan_key is not None:
        message.plan_key = threshold.plan_key
    else:
        message.customer_id = threshold.customer_id or ""
    if threshold.absolute_units is not None:
        message.absolute_units.CopyFrom(decimal_to_proto(threshold.absolute_units))
    elif threshold.percent_of_included is not None:
        message.percent_of_included.CopyFrom(decimal_to_proto(threshold.percent_of_included))
    return message


def alert_to_proto(alert: Alert, cursor: str) -> meter_pb2.Alert:
    return meter_pb2.Alert(
        id=alert.id,
        cursor=cursor,
        threshold_id=alert.threshold_id,
        customer_id=alert.customer_id,
        meter_key=alert.meter_key,
        period=common_pb2.TimeRange(start=to_timestamp(alert.period_start), end=to_timestamp(alert.period_end)),
        threshold_units=decimal_to_proto(alert.threshold_units),
        usage=decimal_to_proto(alert.usage),
        fire_time=to_timestamp(alert.fire_time),
    )


def dims_from_text(text: str) -> dict[str, str]:
    return json.loads(text)
