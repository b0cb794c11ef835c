"""Checks every request gets before any service sees it: enum numbers the schema does not
define, and Timestamps outside Tally's instant range (tally.wire: [1970-01-01, 2200-01-01)).

Protobuf parses both without complaint (proto3 enums are open; a Timestamp is two integers),
so without this each service must remember them, and one that forgets answers UNKNOWN from a
ValueError deep inside ``ToDatetime``, or stores a nonsense value.

Cost matters on the ingest hot path (batches of 1,000 events), so the walk before the handler
visits only fields that can hold an enum or a Timestamp, never descends into Struct/Value/Any,
and checks Timestamps inside repeated messages only in the thorough pass. The thorough pass
runs when a handler fails unexpectedly: if the request was at fault, the caller gets
INVALID_ARGUMENT naming the field instead of UNKNOWN. (Ingest checks its events' timestamps
itself, against its late-event window.) The thorough pass also checks every string for NUL
and for tally.wire.MAX_TEXT_CHARS, and every repeated or map field for tally.wire.MAX_REPEATED:
the services check their own fields with tighter bounds, and this names the field of any
they missed.
"""

from __future__ import annotations

import enum

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from tally import wire
from tally.errors import Violation

TIMESTAMP = "google.protobuf.Timestamp"
# Well-known types that hold no enums or Timestamps of ours.
_OPAQUE = frozenset({"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue", "google.protobuf.Any"})
MIN_SECONDS = wire.MIN_SECONDS  # 1970-01-01T00:00:00Z
MAX_SECONDS = wire.MAX_SECONDS  # 2200-01-01T00:00:00Z, exclusive


class Depth(enum.Enum):
    THOROUGH = "thorough"  # enums and Timestamps everywhere
    CHEAP = "cheap"  # enums everywhere; Timestamps outside repeated messages
    ENUMS = "enums"  # enums only (below a repeated message, in the cheap pass)


def _child(depth: Depth, field: FieldDescriptor) -> Depth:
    if depth is Depth.CHEAP and field.is_repeated:
        return Depth.ENUMS
    return depth


# (field, kind, nested descriptor, nested depth); kind is "enum", "timestamp" or "message".
Plan = tuple[tuple[FieldDescriptor, str, Descriptor | None, Depth], ...]
_plans: dict[tuple[str, Depth], Plan] = {}


def _plan(descriptor: Descriptor, depth: Depth, visiting: frozenset[str] = frozenset()) -> Plan:
    key = (descriptor.full_name, depth)
    cached = _plans.get(key)
    if cached is not None:
        return cached
    inner = visiting | {descriptor.full_name}
    entries = []
    for field in descriptor.fields:
        if field.enum_type is not None:
            entries.append((field, "enum", None, depth))
            continue
        message_type = field.message_type
        if message_type is None or message_type.full_name in _OPAQUE or message_type.full_name in inner:
            continue
        if message_type.full_name == TIMESTAMP:
            if depth is not Depth.ENUMS:
                entries.append((field, "timestamp", None, depth))
            continue
        child = _child(depth, field)
        if _plan(message_type, child, inner):
            entries.append((field, "message", message_type, child))
    plan = tuple(entries)
    if not visiting:  # a plan cut short by a cycle guard is not cached
        _plans[key] = plan
    return plan


def _timestamp_problem(stamp, path: str) -> Violation | None:
    if wire.seconds_in_range(stamp.seconds, stamp.nanos):
        return None
    return Violation(
        path,
        f"is not a valid Timestamp: it {wire.INSTANT_DESCRIPTION} and nanos in [0, 999999999]",
        "INVALID_TIMESTAMP",
    )


def _check_value(field, kind, nested, depth, value, path: str, out: list[Violation]) -> None:
    if kind == "enum":
        if value not in field.enum_type.values_by_number:
            out.append(Violation(path, f"unknown value {value} for {field.enum_type.name}", "UNKNOWN_ENUM"))
    elif kind == "timestamp":
        problem = _timestamp_problem(value, path)
        if problem is not None:
            out.append(problem)
    else:
        _walk(value, _plan(nested, depth), path + ".", out)


def _walk(message: Message, plan: Plan, prefix: str, out: list[Violation]) -> None:
    for field, kind, nested, depth in plan:
        path = prefix + field.name
        if nested is not None and nested.GetOptions().map_entry:
            value_entries = [e for e in _plan(nested, depth) if e[0].name == "value"]
            for key, value in getattr(message, field.name).items():
                for entry in value_entries:
                    _check_value(*entry, value, f"{path}[{key}]", out)
        elif field.is_repeated:
            values = getattr(message, field.name)
            if kind == "enum":
                known = field.enum_type.values_by_number
                if all(v in known for v in values):
                    continue
            for index, value in enumerate(values):
                _check_value(field, kind, nested, depth, value, f"{path}[{index}]", out)
        elif kind == "enum":
            _check_value(field, kind, nested, depth, getattr(message, field.name), path, out)
        elif message.HasField(field.name):
            _check_value(field, kind, nested, depth, getattr(message, field.name), path, out)


def _check_string(value: str, path: str, out: list[Violation]) -> None:
    if "\x00" in value:
        out.append(Violation(path, "must not contain NUL characters", "INVALID_CHARACTER"))
    elif len(value) > wire.MAX_TEXT_CHARS:
        out.append(Violation(path, f"must be at most {wire.MAX_TEXT_CHARS} characters, got {len(value)}", "TOO_LONG"))


def _text_walk(message: Message, prefix: str, out: list[Violation], depth: int = 0) -> None:
    """NUL and oversized strings, oversized repeated fields: only the fields that are set."""
    if depth > 32 or message.DESCRIPTOR.full_name in _OPAQUE:
        return
    for field, value in message.ListFields():
        path = prefix + field.name
        is_message = field.type == FieldDescriptor.TYPE_MESSAGE
        if field.is_repeated:
            if len(value) > wire.MAX_REPEATED:
                out.append(Violation(path, f"must have at most {wire.MAX_REPEATED} entries, got {len(value)}", "TOO_MANY"))
                continue
            if is_message and field.message_type.GetOptions().map_entry:
                value_field = field.message_type.fields_by_name["value"]
                for key, item in value.items():
                    item_path = f"{path}[{wire.shorten(str(key))[1:-1]}]"
                    if isinstance(key, str):
                        _check_string(key, item_path, out)
                    if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                        _text_walk(item, item_path + ".", out, depth + 1)
                    elif isinstance(item, str):
                        _check_string(item, item_path, out)
                continue
            for index, item in enumerate(value):
                if is_message:
                    _text_walk(item, f"{path}[{index}].", out, depth + 1)
                elif isinstance(item, str):
                    _check_string(item, f"{path}[{index}]", out)
        elif is_message:
            _text_walk(value, path + ".", out, depth + 1)
        elif isinstance(value, str):
            _check_string(value, path, out)


def request_violations(message: object, thorough: bool = False) -> list[Violation]:
    """Unknown enum numbers and invalid Timestamps in ``message``, each named by field path;
    ``thorough`` adds them inside repeated messages, and NUL or oversized text anywhere."""
    if not isinstance(message, Message):
        return []
    plan = _plan(message.DESCRIPTOR, Depth.THOROUGH if thorough else Depth.CHEAP)
    out: list[Violation] = []
    if plan:
        _walk(message, plan, "", out)
    if thorough:
        _text_walk(message, "", out)
    return out
