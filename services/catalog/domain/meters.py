"""Meters: how events become a number."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from services.catalog.domain.common import check_enum, check_key, check_path
from tally import wire
from tally.errors import Violations

AGGREGATIONS = frozenset({"COUNT", "SUM", "MAX", "MIN", "COUNT_UNIQUE", "LATEST", "AVG", "WEIGHTED_SUM"})
OPERATORS = frozenset({"EQ", "NEQ", "IN", "NOT_IN", "GT", "GTE", "LT", "LTE", "EXISTS", "NOT_EXISTS"})
SINGLE_VALUE_OPERATORS = frozenset({"EQ", "NEQ"})
LIST_OPERATORS = frozenset({"IN", "NOT_IN"})
NUMERIC_OPERATORS = frozenset({"GT", "GTE", "LT", "LTE"})
PRESENCE_OPERATORS = frozenset({"EXISTS", "NOT_EXISTS"})
MAX_GROUP_BY = 5
# A numeric filter compares with a number of the grammar (tally.wire), unbounded.

# Fields whose change would rewrite what past usage meant: locked once a subscription uses the meter.
LOCKED_FIELDS = ("event_type", "aggregation", "value_property", "filters", "allow_negative")
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
    # Whether the value property may be negative; ingest refuses negative values otherwise.
    allow_negative: bool = False


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
    wire.check_text(v, "name", spec.name, max_chars=wire.MAX_NAME_CHARS)
    wire.check_text(v, "unit", spec.unit, max_chars=wire.MAX_UNIT_CHARS)
    wire.check_text(v, "description", spec.description, max_chars=wire.MAX_DESCRIPTION_CHARS)
    if not spec.event_type:
        v.add("event_type", "is required", "REQUIRED")
    elif len(spec.event_type) > 200 or any(c.isspace() or c == "\x00" for c in spec.event_type):
        v.add("event_type", "must be at most 200 characters without whitespace or NUL", "INVALID_EVENT_TYPE")
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
    if wire.check_count(v, "filters", len(spec.filters), max_items=wire.MAX_FILTERS):
        for i, condition in enumerate(spec.filters):
            validate_filter(v.nested(f"filters[{i}]"), condition, into=v)
    if len(spec.group_by) > MAX_GROUP_BY:
        # The count alone: a list this long is not worth a problem per path.
        v.add(
            "group_by",
            f"has {len(spec.group_by)} paths; at most {MAX_GROUP_BY} are allowed",
            "TOO_MANY_GROUP_BY",
        )
        return v
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
    if not wire.check_count(v, "values", len(condition.values), max_items=wire.MAX_FILTER_VALUES):
        into.extend(v)
        return
    for i, value in enumerate(condition.values):
        wire.check_text(v, f"values[{i}]", value, max_chars=wire.MAX_FILTER_VALUE_CHARS)
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
            elif not _is_decimal(condition.values[0]):
                v.add(
                    "values[0]",
                    f"{op} compares numbers: {wire.shorten(condition.values[0])} is not "
                    f"{wire.SYNTAX_DESCRIPTION}",
                    "INVALID_DECIMAL",
                )
    into.extend(v)


def _is_decimal(text: str) -> bool:
    try:
        wire.parse_decimal_syntax(text)
    except wire.DecimalError:
        return False
    return True


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
