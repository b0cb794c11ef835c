"""Events as ingest receives them: validation limits, canonical content and derived keys.

Pure: no grpc, protobuf or SQL. This is the hot path (hundreds of thousands of events a
second), which shapes two choices: instants are integer microseconds since the Unix epoch (UTC),
because building an aware datetime per event costs more than the whole validation, and the
per-event value objects are NamedTuples, immutable like frozen dataclasses but built and hashed
in C, several times faster.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

from services.ingest.domain.attribution import (
    Coverage,
    NamedSubscription,
    SubscriptionRef,
    ambiguity,
    check_named,
    pick,
    ref_violation,
    relevant_stretches,
)
from tally import wire
from tally.errors import Violation

MICROS_PER_SECOND = 1_000_000
MAX_IDEMPOTENCY_KEY_CHARS = 255
MAX_EVENT_TYPE_CHARS = 255
MAX_CUSTOMER_REF_CHARS = wire.MAX_EXTERNAL_ID_CHARS
MAX_PROPERTIES_BYTES = 8 * 1024
MAX_PROPERTIES_DEPTH = 8
MAX_BATCH_EVENTS = 1000
FUTURE_TOLERANCE_MICROS = 5 * 60 * MICROS_PER_SECOND


# The variant nibble of a UUID is 0b10xx: a random hex digit mapped onto 8, 9, a or b.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def generated_keys(count: int) -> list[str]:
    """``count`` new unique idempotency keys for events or usage records sent without one: UUIDv7s.

    Time-ordered (48-bit Unix milliseconds, RFC 9562) with 74 random bits, so every call
    without a key is a distinct event: a retry without a key counts again. The random bits
    of the whole batch come from one os.urandom call, taken as hex and cut into the UUID's
    text directly (uuid.UUID per key cost ~10 us of the hot path; this ~0.5 us).
    """
    millis = f"{time.time_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF:012x}"
    head = f"{millis[:8]}-{millis[8:]}-7"
    pool = os.urandom(10 * count).hex()
    variant = _VARIANT
    return [
        f"{head}{pool[at:at + 3]}-{variant[pool[at + 3]]}{pool[at + 4:at + 7]}-{pool[at + 7:at + 19]}"
        for at in range(0, 20 * count, 20)
    ]


def generated_key() -> str:
    """One new unique idempotency key (see generated_keys)."""
    return generated_keys(1)[0]


@dataclass(frozen=True, slots=True)
class Limits:
    """Validation limits that deployments may tune."""

    late_event_window_days: int = 35
    future_tolerance_micros: int = FUTURE_TOLERANCE_MICROS

    @property
    def late_event_window_micros(self) -> int:
        return self.late_event_window_days * 86_400 * MICROS_PER_SECOND


class CustomerRef(NamedTuple):
    """A customer named by Tally id or by the caller's external id; both empty means none."""

    id: str = ""
    external_id: str = ""

    @property
    def is_empty(self) -> bool:
        return not self.id and not self.external_id

    def describe(self) -> str:
        return f"id {self.id!r}" if self.id else f"external_id {self.external_id!r}"


class PropertiesShape(NamedTuple):
    """What validation needs to know about a properties document, measured by the mapping."""

    size_bytes: int
    # Nesting depth; a cheap byte-level bound may stand in for it when that bound already
    # proves the depth within MAX_PROPERTIES_DEPTH.
    depth: int
    # Dot paths of numbers that are NaN or +-Infinity.
    non_finite_paths: tuple[str, ...] = ()


class EventInput(NamedTuple):
    """One event as sent. ``properties`` is the deterministic serialization of its Struct."""

    idempotency_key: str
    event_type: str
    customer: CustomerRef
    # Microseconds since the epoch, None when the sender left it out.
    timestamp_micros: int | None
    properties: bytes
    shape: PropertiesShape
    # The subscription the sender named, None when it named none.
    subscription: SubscriptionRef | None = None


def validate_event(
    event: EventInput, *, now_micros: int, limits: Limits, prefix: str
) -> list[Violation]:
    """Every problem of one event; ``prefix`` names it (``event`` or ``events[3]``)."""
    problems: list[Violation] = []
    key = event.idempotency_key
    if key:
        if not key.strip():
            problems.append(
                Violation(f"{prefix}.idempotency_key", "must not be blank", "IDEMPOTENCY_KEY_EMPTY")
            )
        elif len(key) > MAX_IDEMPOTENCY_KEY_CHARS:
            problems.append(
                Violation(
                    f"{prefix}.idempotency_key",
                    f"must be at most {MAX_IDEMPOTENCY_KEY_CHARS} characters, got {len(key)}",
                    "IDEMPOTENCY_KEY_TOO_LONG",
                )
            )
    if "\x00" in key:
        problems.append(Violation(f"{prefix}.idempotency_key", "must not contain NUL characters", "INVALID_CHARACTER"))
    if "\x00" in event.event_type:
        problems.append(Violation(f"{prefix}.event_type", "must not contain NUL characters", "INVALID_CHARACTER"))
    elif not event.event_type.strip():
        problems.append(Violation(f"{prefix}.event_type", "is required", "EVENT_TYPE_MISSING"))
    elif len(event.event_type) > MAX_EVENT_TYPE_CHARS:
        problems.append(
            Violation(
                f"{prefix}.event_type",
                f"must be at most {MAX_EVENT_TYPE_CHARS} characters",
                "EVENT_TYPE_TOO_LONG",
            )
        )
    if event.customer.is_empty:
        problems.append(
            Violation(f"{prefix}.customer", "is required: set id or external_id", "CUSTOMER_MISSING")
        )
    elif "\x00" in event.customer.id or "\x00" in event.customer.external_id:
        problems.append(Violation(f"{prefix}.customer", "must not contain NUL characters", "INVALID_CHARACTER"))
    elif len(event.customer.id) > MAX_CUSTOMER_REF_CHARS or len(event.customer.external_id) > MAX_CUSTOMER_REF_CHARS:
        problems.append(
            Violation(f"{prefix}.customer", f"must be at most {MAX_CUSTOMER_REF_CHARS} characters", "TOO_LONG")
        )
    if event.timestamp_micros is not None:
        problems.extend(
            validate_instant(event.timestamp_micros, now_micros=now_micros, limits=limits, field=f"{prefix}.timestamp")
        )
    shape = event.shape
    if shape.size_bytes > MAX_PROPERTIES_BYTES:
        problems.append(
            Violation(
                f"{prefix}.properties",
                f"must be at most {MAX_PROPERTIES_BYTES} bytes serialized, got {shape.size_bytes}",
                "PROPERTIES_TOO_LARGE",
            )
        )
    if shape.depth > MAX_PROPERTIES_DEPTH:
        problems.append(
            Violation(
                f"{prefix}.properties",
                f"must be nested at most {MAX_PROPERTIES_DEPTH} levels deep, got {shape.depth}",
                "PROPERTIES_TOO_DEEP",
            )
        )
    for path in shape.non_finite_paths:
        problems.append(
            Violation(f"{prefix}.properties.{path}", "must be a finite number, not NaN or Infinity", "NUMBER_NOT_FINITE")
        )
    return problems


def validate_instant(micros: int, *, now_micros: int, limits: Limits, field: str) -> list[Violation]:
    """An instant must lie within [now - late window, now + 5 minutes]."""
    if micros > now_micros + limits.future_tolerance_micros:
        return [
            Violation(
                field,
                f"is more than {limits.future_tolerance_micros // 60_000_000} minutes in the future",
                "TIMESTAMP_IN_FUTURE",
            )
        ]
    if micros < now_micros - limits.late_event_window_micros:
        return [
            Violation(
                field,
                f"is older than the late-event window of {limits.late_event_window_days} days",
                "TIMESTAMP_TOO_OLD",
            )
        ]
    return []


def batch_size_violation(count: int, field: str = "events") -> Violation | None:
    if count > MAX_BATCH_EVENTS:
        return Violation(field, f"at most {MAX_BATCH_EVENTS} events per batch, got {count}", "BATCH_TOO_LARGE")
    return None


def content_digest(event: EventInput, customer_id: str) -> bytes:
    """SHA-256 of the event's content as sent (timestamp as given, customer resolved).

    Two sends of the same event digest alike: it is the payload hash that tells a duplicate
    of a keyed event from a conflict. It is never a key (keys are the sender's or generated).
    A named subscription is part of the content; an event naming none digests as before.
    """
    # Text fields cannot hold NUL (validated), so NUL separates them unambiguously.
    ts = "" if event.timestamp_micros is None else event.timestamp_micros
    head = f"{event.event_type}\x00{customer_id}\x00{ts}\x00".encode()
    tail = b"" if event.subscription is None else b"\x00" + event.subscription.canonical().encode()
    return hashlib.sha256(head + event.properties + tail).digest()


UNKNOWN_CUSTOMER = "UNKNOWN_CUSTOMER"
INVALID_METER_VALUE = "INVALID_METER_VALUE"
NEGATIVE_METER_VALUE = "NEGATIVE_METER_VALUE"

# What a property reader returns for a path the properties do not have.
ABSENT: Any = object()
# Reads the property at a dot path of the event at an index of the batch: a str, float,
# bool, None (JSON null), a dict or list (a nested object or array), or ABSENT.
PropertyReader = Callable[[int, str], Any]


class ValueRule(NamedTuple):
    """A property that meters of an event type read as their value (tally.wire decimals)."""

    path: str
    meter_keys: tuple[str, ...]
    # False when any of those meters refuses negative values.
    allow_negative: bool


def _no_rules(_event_type: str) -> tuple[ValueRule, ...]:
    return ()


def _shown(raw: Any) -> str:
    if isinstance(raw, str):
        return wire.shorten(raw)
    if isinstance(raw, bool):
        return "a boolean"
    if isinstance(raw, dict):
        return "an object"
    if isinstance(raw, list):
        return "an array"
    return repr(raw)


def _values_surely_usable(rules: Sequence[ValueRule], read: PropertyReader, index: int) -> bool:
    """The common case, cheaply: every value absent or a short non-negative plain number
    (False: let value_violations decide, exactly)."""
    surely_bounded = wire.surely_bounded
    for rule in rules:
        raw = read(index, rule.path)
        if raw is ABSENT or raw is None:
            continue
        if not surely_bounded(raw):
            return False
        if not rule.allow_negative and (raw < 0 if type(raw) is float else raw[0] == "-"):
            return False
    return True


def value_violations(rules: Sequence[ValueRule], read: Callable[[str], Any], prefix: str) -> list[Violation]:
    """Problems of the values that meters will read from one event.

    An absent property (or JSON null) is fine: the event still counts for COUNT-like use and
    the meter reports it as an unusable value. A present one must be a number of the grammar
    (a JSON number or a decimal string), within the bounds, and not negative unless every
    meter reading it allows negative values.
    """
    problems: list[Violation] = []
    for rule in rules:
        raw = read(rule.path)
        if raw is ABSENT or raw is None:
            continue
        number = wire.json_number(raw)
        meters = ", ".join(repr(k) for k in rule.meter_keys)
        if number is None:
            shown = _shown(raw)
            problems.append(
                Violation(
                    f"{prefix}.properties.{rule.path}",
                    f"is the value of meter {meters}: must be {wire.SYNTAX_DESCRIPTION} with at most "
                    f"{wire.MAX_SIGNIFICANT_DIGITS} significant digits, below 10^{wire.MAX_INTEGER_DIGITS} and "
                    f"at most {wire.MAX_SCALE} places, got {shown}",
                    INVALID_METER_VALUE,
                )
            )
        elif number < 0 and not rule.allow_negative:
            problems.append(
                Violation(
                    f"{prefix}.properties.{rule.path}",
                    f"is the value of meter {meters}, which does not allow negative values",
                    NEGATIVE_METER_VALUE,
                )
            )
    return problems


@dataclass(frozen=True, slots=True)
class EventBatch:
    """A batch of events as sent, column by column.

    The batch, not the event, is the unit of work on the hot path: columns cost no object
    per event, and the repository sends them to Postgres as they are.
    """

    keys: list[str]
    event_types: list[str]
    customers: list[CustomerRef]
    # Microseconds since the epoch, None where the sender left the timestamp out.
    timestamps: list[int | None]
    properties: list[bytes]
    shapes: list[PropertiesShape]
    # The subscription each event names (None where it names none); None when no event does.
    subscriptions: list[SubscriptionRef | None] | None = None
    # Reads properties from the decoded request (the mapping's); None: from ``properties``.
    read_property: PropertyReader | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def event(self, index: int) -> EventInput:
        return EventInput(
            self.keys[index],
            self.event_types[index],
            self.customers[index],
            self.timestamps[index],
            self.properties[index],
            self.shapes[index],
            None if self.subscriptions is None else self.subscriptions[index],
        )

    @classmethod
    def of(cls, events: Sequence[EventInput]) -> EventBatch:
        subscriptions = [e.subscription for e in events]
        return cls(
            [e.idempotency_key for e in events],
            [e.event_type for e in events],
            [e.customer for e in events],
            [e.timestamp_micros for e in events],
            [e.properties for e in events],
            [e.shape for e in events],
            subscriptions if any(ref is not None for ref in subscriptions) else None,
        )

    def named_subscriptions(self) -> set[SubscriptionRef]:
        """The distinct subscriptions the batch names."""
        return {ref for ref in self.subscriptions or () if ref is not None}


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    """The valid events of a batch, ready to store (columns), and the problems of the rest."""

    # Position in the sent batch of each accepted event.
    indexes: list[int]
    keys: list[str]
    payload_hashes: list[bytes]
    event_types: list[str]
    customer_ids: list[str]
    timestamps: list[int]
    properties: list[bytes]
    metered: list[bool]
    # The subscription each event is attributed to ('' when unattributed).
    subscription_ids: list[str]
    rejected: dict[int, list[Violation]]

    def __len__(self) -> int:
        return len(self.keys)

    def first_of_each_key(self) -> PreparedBatch:
        """The batch without repeats of a key (the first occurrence stays)."""
        if len(set(self.keys)) == len(self.keys):
            return self
        seen: set[str] = set()
        keep = [i for i, key in enumerate(self.keys) if not (key in seen or seen.add(key))]
        return PreparedBatch(
            *([column[i] for i in keep] for column in (
                self.indexes, self.keys, self.payload_hashes, self.event_types, self.customer_ids,
                self.timestamps, self.properties, self.metered, self.subscription_ids,
            )),
            rejected=self.rejected,
        )


def resolvable_refs(customers: Sequence[CustomerRef]) -> set[CustomerRef]:
    """The customer refs worth looking up: non-empty and free of NUL characters."""
    return {
        ref
        for ref in set(customers)
        if (ref.id or ref.external_id)
        and "\x00" not in ref.id
        and "\x00" not in ref.external_id
        and len(ref.id) <= MAX_CUSTOMER_REF_CHARS
        and len(ref.external_id) <= MAX_CUSTOMER_REF_CHARS
    }


def _no_coverage(_customer_id: str) -> Sequence[Coverage]:
    return ()


def _no_meters(_event_type: str) -> frozenset[str]:
    return frozenset()


def prepare_events(
    batch: EventBatch,
    *,
    customers: Mapping[CustomerRef, str | None],
    is_metered: Callable[[str], bool],
    now_micros: int,
    limits: Limits,
    prefix: Callable[[int], str],
    named: Mapping[SubscriptionRef, NamedSubscription | None] | None = None,
    coverage_of: Callable[[str], Sequence[Coverage]] = _no_coverage,
    meter_keys_of: Callable[[str], frozenset[str]] = _no_meters,
    new_keys: Callable[[int], list[str]] = generated_keys,
    value_rules: Callable[[str], tuple[ValueRule, ...]] = _no_rules,
    read_property: PropertyReader | None = None,
) -> PreparedBatch:
    """Validate, attribute and accept a batch in one pass.

    One guard expression clears a valid event; only an event that trips it goes through the
    full validate_event, which reports every problem. This keeps a valid event at a few
    microseconds, which is what the streaming throughput is made of.

    Attribution (services/ingest/domain/attribution.py) reads ``named`` (the batch's named
    subscriptions, resolved once per batch), ``coverage_of`` (a customer's subscriptions and
    the meters they charge, asked once per customer) and ``meter_keys_of`` (the meters
    reading an event type, asked once per type). An event sent without a key gets a key from
    ``new_keys`` (drawn once per batch, on the first such event): every such event is a new one.
    """
    low = now_micros - limits.late_event_window_micros
    high = now_micros + limits.future_tolerance_micros
    metered_by_type: dict[str, bool] = {}
    rules_by_type: dict[str, tuple[ValueRule, ...]] = {}
    rejected: dict[int, list[Violation]] = {}
    indexes: list[int] = []
    keys: list[str] = []
    hashes: list[bytes] = []
    types: list[str] = []
    customer_ids: list[str] = []
    timestamps: list[int] = []
    properties: list[bytes] = []
    metered: list[bool] = []
    subscription_ids: list[str] = []
    # (customer, event type) -> the stretches of the customer's subscriptions charging a meter
    # the type feeds: worked out once per pair, so an event costs a lookup and a short scan.
    stretches_of: dict[tuple[str, str], tuple[tuple[str, int, int | None], ...]] = {}
    meter_keys_by_type: dict[str, frozenset[str]] = {}
    fresh_keys: Iterator[str] | None = None
    refs = batch.subscriptions
    named = named or {}
    sha256 = hashlib.sha256
    columns = zip(batch.keys, batch.event_types, batch.customers, batch.timestamps, batch.properties, batch.shapes)
    for index, (key, event_type, customer, ts, props, shape) in enumerate(columns):
        problems = None
        customer_id = customers.get(customer)
        if (
            customer_id is None
            or not event_type
            or len(key) > MAX_IDEMPOTENCY_KEY_CHARS
            or len(event_type) > MAX_EVENT_TYPE_CHARS
            or shape.size_bytes > MAX_PROPERTIES_BYTES
            or shape.depth > MAX_PROPERTIES_DEPTH
            or shape.non_finite_paths
            or (ts is not None and not low <= ts <= high)
            or (key and not key.strip())
            or not event_type.strip()
            or "\x00" in key
            or "\x00" in event_type
        ):
            problems = validate_event(batch.event(index), now_micros=now_micros, limits=limits, prefix=prefix(index))
            if customer_id is None and not any(p.field.endswith(".customer") for p in problems):
                problems.append(
                    Violation(f"{prefix(index)}.customer", f"unknown customer {customer.describe()}", UNKNOWN_CUSTOMER)
                )
        ref = None if refs is None else refs[index]
        subscription_id = ""
        if ref is not None:
            field = f"{prefix(index)}.subscription"
            wrong = ref_violation(ref, field)
            if wrong is None and customer_id is not None:
                subscription_id, wrong = check_named(ref, named.get(ref), customer_id, field)
            if wrong is not None:
                problems = [*(problems or ()), wrong]
        elif customer_id is not None and not problems:
            stretches = stretches_of.get((customer_id, event_type))
            if stretches is None:
                fed = meter_keys_by_type.get(event_type)
                if fed is None:
                    fed = meter_keys_by_type[event_type] = meter_keys_of(event_type)
                stretches = stretches_of[(customer_id, event_type)] = relevant_stretches(coverage_of(customer_id), fed)
            if len(stretches) == 1:
                # The common case, inline: one subscription charging this usage.
                only, start, end = stretches[0]
                at = now_micros if ts is None else ts
                if start <= at and (end is None or at < end):
                    subscription_id = only
            elif stretches:
                subscription_id, several = pick(stretches, now_micros if ts is None else ts)
                if several:
                    problems = [ambiguity(several, f"{prefix(index)}.subscription")]
        if problems:
            rejected[index] = problems
            continue
        is_type_metered = metered_by_type.get(event_type)
        if is_type_metered is None:
            is_type_metered = metered_by_type[event_type] = is_metered(event_type)
        if is_type_metered and read_property is not None:
            rules = rules_by_type.get(event_type)
            if rules is None:
                rules = rules_by_type[event_type] = value_rules(event_type)
            if rules and not _values_surely_usable(rules, read_property, index):
                problems = value_violations(rules, partial(read_property, index), prefix(index))
                if problems:
                    rejected[index] = problems
                    continue
        # Text fields cannot hold NUL (validated), so NUL separates them unambiguously; the
        # same content as content_digest.
        head = f"{event_type}\x00{customer_id}\x00{'' if ts is None else ts}\x00".encode()
        if ref is None:
            digest = sha256(head + props).digest()
        else:
            digest = sha256(head + props + b"\x00" + ref.canonical().encode()).digest()
        indexes.append(index)
        if not key:
            if fresh_keys is None:
                fresh_keys = iter(new_keys(len(batch) - index))
            key = next(fresh_keys)
        keys.append(key)
        hashes.append(digest)
        types.append(event_type)
        customer_ids.append(customer_id)
        timestamps.append(now_micros if ts is None else ts)
        properties.append(props)
        metered.append(is_type_metered)
        subscription_ids.append(subscription_id)
    return PreparedBatch(
        indexes, keys, hashes, types, customer_ids, timestamps, properties, metered, subscription_ids, rejected
    )
