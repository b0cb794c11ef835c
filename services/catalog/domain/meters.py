"""Meters: how events become a number."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal, InvalidOperation

from services.catalog.domain.common import check_enum, check_key, check_path
from tally.errors import Violations

AGGREGATIONS = frozenset({"COUNT", "SUM", "MAX", "MIN", "COUNT_UNIQUE", "LATEST", "AVG", "WEIGHTED_SUM"})
OPERATORS = frozenset({"EQ", "NEQ", "IN", "NOT_IN", "GT", "GTE", "LT", "LTE", "EXISTS", "NOT_EXISTS"})
SINGLE_VALUE_OPERATORS = frozenset({"EQ", "NEQ"})
LIST_OPERATORS = frozenset({"IN", "NOT_IN"})
NUMERIC_OPERATORS = frozenset({"GT", "GTE", "LT", "LTE"})
PRESENCE_OPERATORS = frozenset({"EXISTS", "NOT_EXISTS"})
MAX_GROUP_BY = 5

# Fields whose change would rewrite what past usage meant: locked once a subscription uses the meter.
LOCKED_FIELDS = ("event_type", "aggregation", "value_property", "filters")
MUTABLE_FIELDS = ("name", "unit", "description", "group_by", *LOCKED_FIELDS)


@dataclass(frozen=True)
class MeterFilter:
    property: str
    operator: str
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class MeterSpec:
    """What a caller gives to create or update a meter."""

    key: str
    name: str
    unit: str
    event_type: str
    aggregation: str
    value_property: str = ""
    filters: tuple[MeterFilter, ...] = ()
    group_by: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class Meter:
    id: str
    spec: MeterSpec
    archived: bool
    locked: bool
    created_at: datetime
    updated_at: datetime

    @property
    def key(self) -> str:
        return self.spec.key


@dataclass(frozen=True)
class MeterChange:
    """The result of applying an update mask to a meter's spec."""

    spec: MeterSpec
    changed_fields: tuple[str, ...] = field(default_factory=tuple)


def validate_meter(spec: MeterSpec, prefix: str = "meter") -> Violations:
    """Every problem of a meter spec at once, as field violations under ``prefix``."""
    v = Violations(prefix)
    check_key(v, "key", spec.key)
    if not spec.event_type:
        v.add("event_type", "is required", "REQUIRED")
    elif len(spec.event_type) > 200 or any(c.isspace() for c in spec.event_type):
        v.add("event_type", "must be at most 200 characters without whitespace", "INVALID_EVENT_TYPE")
    known = check_enum(v, "aggregation", spec.aggregation, AGGREGATIONS)
    if spec.value_property:
        check_path(v, "value_property", spec.value_property)
        if spec.aggregation == "COUNT":
            v.add(
                "value_property",
                "must be empty: COUNT counts events and reads no value",
                "UNEXPECTED_VALUE_PROPERTY",
            )
    elif known and spec.aggregation != "COUNT":
        v.add("value_property", f"is required for {spec.aggregation}", "REQUIRED")
    for i, condition in enumerate(spec.filters):
        validate_filter(v.nested(f"filters[{i}]"), condition, into=v)
    if len(spec.group_by) > MAX_GROUP_BY:
        v.add(
            "group_by",
            f"has {len(spec.group_by)} paths; at most {MAX_GROUP_BY} are allowed",
            "TOO_MANY_GROUP_BY",
        )
    seen: set[str] = set()
    for i, path in enumerate(spec.group_by):
        check_path(v, f"group_by[{i}]", path)
        if path in seen:
            v.add(f"group_by[{i}]", f"{path!r} is listed twice", "DUPLICATE")
        seen.add(path)
    return v


def validate_filter(v: Violations, condition: MeterFilter, *, into: Violations) -> None:
    check_path(v, "property", condition.property)
    op = condition.operator
    if check_enum(v, "operator", op, OPERATORS):
        n = len(condition.values)
        if op in SINGLE_VALUE_OPERATORS and n != 1:
            v.add("values", f"{op} takes exactly one value, got {n}", "WRONG_VALUE_COUNT")
        elif op in LIST_OPERATORS and n < 1:
            v.add("values", f"{op} needs at least one value", "WRONG_VALUE_COUNT")
        elif op in PRESENCE_OPERATORS and n:
            v.add("values", f"{op} takes no values, got {n}", "WRONG_VALUE_COUNT")
        elif op in NUMERIC_OPERATORS:
            if n != 1:
                v.add("values", f"{op} takes exactly one decimal value, got {n}", "WRONG_VALUE_COUNT")
            elif not _is_finite_decimal(condition.values[0]):
                v.add(
                    "values[0]",
                    f"{op} compares numbers: {condition.values[0]!r} is not a decimal",
                    "INVALID_DECIMAL",
                )
    into.extend(v)


def _is_finite_decimal(text: str) -> bool:
    try:
        return Decimal(text.strip()).is_finite() and bool(text.strip())
    except InvalidOperation:
        return False


def apply_meter_update(current: MeterSpec, update: MeterSpec, mask: tuple[str, ...]) -> MeterChange:
    """The spec after updating the masked fields (all mutable fields when ``mask`` is empty)."""
    fields = mask or MUTABLE_FIELDS
    v = Violations("update_mask")
    for i, name in enumerate(fields):
        if name not in MUTABLE_FIELDS:
            v.add(
                f"[{i}]",
                f"{name!r} cannot be updated; mutable fields: {', '.join(MUTABLE_FIELDS)}",
                "IMMUTABLE_FIELD",
            )
    v.raise_if_any("invalid update mask")
    values = {name: getattr(update, name) for name in fields}
    spec = replace(current, **values)
    changed = tuple(name for name in MUTABLE_FIELDS if getattr(spec, name) != getattr(current, name))
    return MeterChange(spec=spec, changed_fields=changed)
