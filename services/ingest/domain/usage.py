"""Usage records: pre-aggregated usage for one customer and one meter, counted as given."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from decimal import Decimal

from services.ingest.domain.attribution import SubscriptionRef, ref_violation
from services.ingest.domain.events import (
    MAX_IDEMPOTENCY_KEY_CHARS,
    CustomerRef,
    Limits,
    generated_key,
    validate_instant,
)
from tally import wire
from tally.domain.price_points import PRICE_POINT_DIMENSION
from tally.errors import Violation, Violations

MAX_PRICE_POINT_CHARS = 128

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
# Dimension names Tally itself gives a meaning to: a caller's dimensions may not use them (a
# price point is named with RecordUsage.price_point and stored under its reserved name).
RESERVED_DIMENSIONS: frozenset[str] = frozenset({PRICE_POINT_DIMENSION})
# ListUsageRecords: at most this many dimension filters; names (like meter keys) this long, and
# values as long as a value can be (the whole properties document of an event).
MAX_FILTER_DIMENSIONS = 16
MAX_TEXT_CHARS = 255
MAX_DIMENSION_VALUE_CHARS = 8 * 1024


def to_micros(instant: dt.datetime) -> int:
    delta = instant - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(frozen=True, slots=True)
class MeterInfo:
    """What ingest needs to know about a meter: its declared dimensions, and whether it is archived."""

    group_by: tuple[str, ...]
    archived: bool = False


@dataclass(frozen=True, slots=True)
class UsageInput:
    """RecordUsage as sent: an instant, or a [range_start, range_end) range."""

    idempotency_key: str
    customer: CustomerRef
    meter_key: str
    quantity: str
    memo: str
    timestamp: dt.datetime | None
    range_start: dt.datetime | None
    range_end: dt.datetime | None
    dimensions: tuple[tuple[str, str], ...] = ()
    # The subscription the sender named, None when it named none.
    subscription: SubscriptionRef | None = None
    # A price point of the charge on this meter (tally/domain/price_points.py); "" for none.
    price_point: str = ""

    @property
    def usage_time(self) -> dt.datetime | None:
        """The instant the record is attributed to (range start, else timestamp; None: now)."""
        return self.range_start or self.timestamp


@dataclass(frozen=True, slots=True)
class AcceptedUsage:
    idempotency_key: str
    payload_hash: bytes
    customer_id: str
    meter_key: str
    quantity: Decimal
    memo: str
    usage_time: dt.datetime
    range_start: dt.datetime | None
    range_end: dt.datetime | None
    dimensions: tuple[tuple[str, str], ...]
    # '' when unattributed.
    subscription_id: str = ""


def parse_quantity(raw: str) -> Decimal | None:
    """The quantity as an exact Decimal of the grammar (tally.wire), or None."""
    try:
        return wire.parse_decimal(raw)
    except wire.DecimalError:
        return None


def validate_usage(usage: UsageInput, *, now: dt.datetime, limits: Limits) -> list[Violation]:
    """Every problem of a usage record except whether its customer and meter exist."""
    problems: list[Violation] = []
    key = usage.idempotency_key
    if key and not key.strip():
        problems.append(Violation("idempotency_key", "must not be blank", "IDEMPOTENCY_KEY_EMPTY"))
    elif len(key) > MAX_IDEMPOTENCY_KEY_CHARS:
        problems.append(
            Violation(
                "idempotency_key",
                f"must be at most {MAX_IDEMPOTENCY_KEY_CHARS} characters, got {len(key)}",
                "IDEMPOTENCY_KEY_TOO_LONG",
            )
        )
    text = Violations()
    if "\x00" in key:
        text.add("idempotency_key", "must not contain NUL characters", "INVALID_CHARACTER")
    if usage.customer.is_empty:
        problems.append(Violation("customer", "is required: set id or external_id", "CUSTOMER_MISSING"))
    else:
        wire.check_text(text, "customer.id", usage.customer.id, max_chars=wire.MAX_ID_CHARS)
        wire.check_text(text, "customer.external_id", usage.customer.external_id, max_chars=wire.MAX_EXTERNAL_ID_CHARS)
    if not usage.meter_key.strip():
        problems.append(Violation("meter_key", "is required", "METER_KEY_MISSING"))
    else:
        wire.check_text(text, "meter_key", usage.meter_key, max_chars=wire.MAX_KEY_CHARS)
    wire.check_text(text, "memo", usage.memo, max_chars=wire.MAX_MEMO_CHARS)
    wire.check_string_map(
        text,
        "dimensions",
        usage.dimensions,
        max_entries=wire.MAX_DIMENSION_ENTRIES,
        max_key_chars=wire.MAX_PATH_CHARS,
        max_value_chars=wire.MAX_DIMENSION_VALUE_CHARS,
    )
    problems.extend(text.items)
    try:
        quantity = wire.parse_decimal(usage.quantity)
    except wire.DecimalError as error:
        problems.append(
            Violation("quantity", f"{error.description}, got {wire.shorten(usage.quantity)}", "QUANTITY_INVALID")
        )
    else:
        if quantity < 0:
            problems.append(Violation("quantity", "must not be negative", "QUANTITY_NEGATIVE"))
    now_micros = to_micros(now)
    if usage.range_start is not None or usage.range_end is not None:
        if usage.timestamp is not None:
            problems.append(Violation("range", "set either timestamp or range, not both", "TIME_AMBIGUOUS"))
        if usage.range_start is None or usage.range_end is None:
            problems.append(Violation("range", "needs both start and end", "RANGE_INCOMPLETE"))
        elif usage.range_end <= usage.range_start:
            problems.append(Violation("range.end", "must be after range.start", "RANGE_EMPTY"))
        if usage.range_start is not None:
            problems.extend(
                validate_instant(to_micros(usage.range_start), now_micros=now_micros, limits=limits, field="range.start")
            )
    elif usage.timestamp is not None:
        problems.extend(validate_instant(to_micros(usage.timestamp), now_micros=now_micros, limits=limits, field="timestamp"))
    point = usage.price_point
    if point and (len(point) > MAX_PRICE_POINT_CHARS or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in point)):
        problems.append(
            Violation(
                "price_point",
                f"must be at most {MAX_PRICE_POINT_CHARS} characters without control characters",
                "PRICE_POINT_INVALID",
            )
        )
    return problems


def usage_digest(usage: UsageInput, customer_id: str, quantity: Decimal) -> bytes:
    """SHA-256 of the record's content as sent; equal for a retry of the same record."""

    def instant(value: dt.datetime | None) -> str:
        return "" if value is None else str(to_micros(value))

    parts = [
        customer_id,
        usage.meter_key,
        # 10 and 10.0 are the same quantity.
        str(quantity.normalize()) if quantity else "0",
        usage.memo,
        instant(usage.timestamp),
        instant(usage.range_start),
        instant(usage.range_end),
        *(f"{k}={v}" for k, v in sorted(usage.dimensions)),
        # Only when given, so records without one hash as they always did.
        *((f"{PRICE_POINT_DIMENSION}={usage.price_point}",) if usage.price_point else ()),
    ]
    if usage.subscription is not None:
        # Only when named, so a record naming none digests as it always did.
        parts.append(usage.subscription.canonical())
    canonical = "".join(f"{len(p)}:{p}" for p in parts)
    return hashlib.sha256(canonical.encode()).digest()


def usage_instant(usage: UsageInput, now: dt.datetime) -> dt.datetime:
    """The instant usage is attributed to: its range's start, its timestamp, else now."""
    return usage.range_start or usage.timestamp or now


def accept_usage(
    usage: UsageInput, *, customer_id: str, now: dt.datetime, subscription_id: str = ""
) -> AcceptedUsage:
    """The stored form of a valid record: final key (generated when none was sent), payload
    hash, attributed instant and subscription."""
    quantity = parse_quantity(usage.quantity)
    assert quantity is not None, "validate_usage first"
    digest = usage_digest(usage, customer_id, quantity)
    usage_time = usage_instant(usage, now)
    return AcceptedUsage(
        idempotency_key=usage.idempotency_key or generated_key(),
        payload_hash=digest,
        customer_id=customer_id,
        meter_key=usage.meter_key,
        quantity=quantity,
        memo=usage.memo,
        usage_time=usage_time,
        range_start=usage.range_start,
        range_end=usage.range_end,
        dimensions=tuple(
            sorted((*usage.dimensions, *(((PRICE_POINT_DIMENSION, usage.price_point),) if usage.price_point else ())))
        ),
        subscription_id=subscription_id,
    )


def dimension_violations(
    dimensions: Collection[str],
    declared: Collection[str] | None,
    *,
    meter_key: str,
    reserved: Collection[str] = RESERVED_DIMENSIONS,
) -> list[Violation]:
    """One violation per dimension name of a caller's usage record that it may not carry.

    The one place that decides which names a usage record's dimensions may hold: the meter's
    group_by (``declared``; None when the meter is unknown, so only reserved names are judged),
    never a name Tally reserves. A meter splits usage only by its group_by dimensions; any other
    name would be stored, then ignored by the meter and priced at the default, without a word.
    """
    shown = ", ".join(sorted(declared)) if declared else "none"
    problems = []
    for name in sorted(dimensions):
        if name in reserved:
            problems.append(
                Violation(f"dimensions.{name}", "is reserved: name a price point with the price_point field", "RESERVED_DIMENSION")
            )
        elif declared is not None and name not in declared:
            problems.append(
                Violation(
                    f"dimensions.{name}",
                    f"meter {meter_key!r} does not declare dimension {name!r} (its dimensions: {shown})",
                    "DIMENSION_UNDECLARED",
                )
            )
    return problems


# ---------------------------------------------------------------------- reading records


@dataclass(frozen=True, slots=True)
class UsageRecordRef:
    """GetUsageRecord: a record named by its idempotency key or by its id."""

    idempotency_key: str = ""
    usage_record_id: str = ""


def validate_record_ref(ref: UsageRecordRef) -> list[Violation]:
    """Problems with a GetUsageRecord reference: exactly one, bounded, NUL-free, ids are UUIDs."""
    if ref.usage_record_id:
        try:
            uuid.UUID(ref.usage_record_id)
        except ValueError:
            return [Violation("usage_record_id", "must be a usage record id (a UUID)", "INVALID_ID")]
        return []
    return _text_violations("idempotency_key", ref.idempotency_key, required=True, limit=MAX_IDEMPOTENCY_KEY_CHARS)


@dataclass(frozen=True, slots=True)
class UsageRecordQuery:
    """ListUsageRecords filters: a customer, and optionally a meter, a range and dimension values."""

    customer: CustomerRef
    meter_key: str = ""
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    dimensions: tuple[tuple[str, str], ...] = ()
    # Records matching every pair of any of these sets are left out.
    exclude: tuple[tuple[tuple[str, str], ...], ...] = ()
    # Whose records: the subscription's (with the unattributed ones when include_unattributed),
    # only the unattributed ones (only_unattributed), or all the customer's (neither).
    subscription: SubscriptionRef | None = None
    include_unattributed: bool = False
    only_unattributed: bool = False

    def fingerprint(self) -> str:
        """Identifies the filters, so a page token is only honoured with the filters it was issued for."""
        parts = [
            self.customer.id,
            self.customer.external_id,
            self.meter_key,
            "" if self.start is None else str(to_micros(self.start)),
            "" if self.end is None else str(to_micros(self.end)),
            *(f"{k}={v}" for k, v in self.dimensions),
            *(f"not:{len(match)}" for match in self.exclude),
            *(f"{k}={v}" for match in self.exclude for k, v in match),
            "" if self.subscription is None else f"sub:{self.subscription.id}:{self.subscription.external_id}",
            f"with:{self.include_unattributed}:only:{self.only_unattributed}",
        ]
        canonical = "".join(f"{len(p)}:{p}" for p in parts)
        return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def validate_usage_query(query: UsageRecordQuery) -> list[Violation]:
    """Every problem of a ListUsageRecords request except whether its customer and meter exist."""
    problems: list[Violation] = []
    if query.customer.is_empty:
        problems.append(Violation("customer", "is required: set id or external_id", "CUSTOMER_MISSING"))
    else:
        problems.extend(
            _text_violations("customer", query.customer.id or query.customer.external_id, required=True, limit=MAX_TEXT_CHARS)
        )
    problems.extend(_text_violations("meter_key", query.meter_key, required=False, limit=MAX_TEXT_CHARS))
    if query.subscription is not None:
        wrong = ref_violation(query.subscription, "subscription")
        if wrong is not None:
            problems.append(wrong)
        if query.only_unattributed:
            problems.append(
                Violation("only_unattributed", "cannot be set with subscription (use include_unattributed)", "CONFLICTING")
            )
    elif query.include_unattributed:
        problems.append(Violation("include_unattributed", "needs subscription (or use only_unattributed)", "CONFLICTING"))
    if query.start is not None and query.end is not None and query.end <= query.start:
        problems.append(Violation("range.end", "must be after range.start", "RANGE_EMPTY"))
    if len(query.dimensions) > MAX_FILTER_DIMENSIONS:
        problems.append(
            Violation("dimensions", f"at most {MAX_FILTER_DIMENSIONS} dimension filters, got {len(query.dimensions)}", "TOO_MANY")
        )
    else:
        problems.extend(_dimension_values_violations("dimensions", query.dimensions))
    if len(query.exclude) > MAX_FILTER_DIMENSIONS:
        problems.append(
            Violation(
                "exclude_dimensions",
                f"at most {MAX_FILTER_DIMENSIONS} sets, got {len(query.exclude)}",
                "TOO_MANY",
            )
        )
    else:
        for index, match in enumerate(query.exclude):
            field = f"exclude_dimensions[{index}].dimensions"
            if not match:
                problems.append(Violation(field, "must name at least one dimension", "REQUIRED"))
            elif len(match) > MAX_FILTER_DIMENSIONS:
                problems.append(Violation(field, f"at most {MAX_FILTER_DIMENSIONS} values, got {len(match)}", "TOO_MANY"))
            else:
                problems.extend(_dimension_values_violations(field, match))
    return problems


def _dimension_values_violations(field: str, pairs: tuple[tuple[str, str], ...]) -> list[Violation]:
    problems: list[Violation] = []
    for name, value in pairs:
        problems.extend(_text_violations(field, name, required=True, limit=MAX_TEXT_CHARS, what="a name"))
        problems.extend(
            _text_violations(f"{field}.{name[:MAX_TEXT_CHARS]}", value, required=False, limit=MAX_DIMENSION_VALUE_CHARS)
        )
    return problems


def _text_violations(field: str, value: str, *, required: bool, limit: int, what: str = "") -> list[Violation]:
    subject = f"{what} " if what else ""
    if "\x00" in value:
        return [Violation(field, f"{subject}must not contain NUL characters".strip(), "INVALID_CHARACTER")]
    if required and not value.strip():
        return [Violation(field, f"{subject}is required".strip(), "REQUIRED")]
    if len(value) > limit:
        return [Violation(field, f"{subject}must be at most {limit} characters, got {len(value)}".strip(), "TOO_LONG")]
    return []
