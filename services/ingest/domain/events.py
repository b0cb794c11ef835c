"""Events as ingest receives them: validation limits, canonical content and derived keys.

Pure: no grpc, protobuf or SQL. Instants on this hot path are integer microseconds since the
Unix epoch (UTC): building an aware datetime per event costs more than everything else the
validation does, and Postgres takes the integers directly.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from tally.errors import Violation

MICROS_PER_SECOND = 1_000_000
MAX_IDEMPOTENCY_KEY_CHARS = 255
MAX_EVENT_TYPE_CHARS = 255
MAX_PROPERTIES_BYTES = 8 * 1024
MAX_PROPERTIES_DEPTH = 8
MAX_BATCH_EVENTS = 1000
FUTURE_TOLERANCE_MICROS = 5 * 60 * MICROS_PER_SECOND
DERIVED_KEY_PREFIX = "sha256:"


@dataclass(frozen=True, slots=True)
class Limits:
    """Validation limits that deployments may tune."""

    late_event_window_days: int = 35
    future_tolerance_micros: int = FUTURE_TOLERANCE_MICROS

    @property
    def late_event_window_micros(self) -> int:
        return self.late_event_window_days * 86_400 * MICROS_PER_SECOND


@dataclass(frozen=True, slots=True)
class CustomerRef:
    """A customer named by Tally id or by the caller's external id; both empty means none."""

    id: str = ""
    external_id: str = ""

    @property
    def is_empty(self) -> bool:
        return not self.id and not self.external_id


@dataclass(frozen=True, slots=True)
class PropertiesShape:
    """What validation needs to know about a properties document, measured by the mapping."""

    size_bytes: int
    depth: int
    # Dot paths of numbers that are NaN or +-Infinity.
    non_finite_paths: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EventInput:
    """One event as sent. ``properties`` is the deterministic serialization of its Struct."""

    idempotency_key: str
    event_type: str
    customer: CustomerRef
    # Microseconds since the epoch, None when the sender left it out.
    timestamp_micros: int | None
    properties: bytes
    shape: PropertiesShape


@dataclass(frozen=True, slots=True)
class AcceptedEvent:
    """A valid event, ready to store: its key is final and its customer resolved."""

    index: int
    idempotency_key: str
    payload_hash: bytes
    event_type: str
    customer_id: str
    timestamp_micros: int
    properties: bytes
    metered: bool


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
    if not event.event_type.strip():
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

    Two sends of the same event digest alike, so the digest is both the payload hash that
    tells a duplicate from a conflict and the source of a derived idempotency key.
    """
    et = event.event_type.encode()
    cid = customer_id.encode()
    ts = b"" if event.timestamp_micros is None else str(event.timestamp_micros).encode()
    head = b"%d:%b%d:%b%d:%b" % (len(et), et, len(cid), cid, len(ts), ts)
    return hashlib.sha256(head + event.properties).digest()


def derived_key(digest: bytes) -> str:
    """The idempotency key of an event sent without one: a function of its content."""
    return DERIVED_KEY_PREFIX + digest.hex()


def accept_event(
    event: EventInput, *, index: int, customer_id: str, now_micros: int, metered: bool
) -> AcceptedEvent:
    """The stored form of a valid event: final key, payload hash, default timestamp."""
    digest = content_digest(event, customer_id)
    return AcceptedEvent(
        index=index,
        idempotency_key=event.idempotency_key or derived_key(digest),
        payload_hash=digest,
        event_type=event.event_type,
        customer_id=customer_id,
        timestamp_micros=now_micros if event.timestamp_micros is None else event.timestamp_micros,
        properties=event.properties,
        metered=metered,
    )
