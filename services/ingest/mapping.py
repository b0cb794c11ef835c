"""Protobuf <-> ingest domain: the only module of the service that converts."""

from __future__ import annotations

import datetime as dt
import math

from google.protobuf import struct_pb2, timestamp_pb2

from services.ingest.domain.attribution import SubscriptionRef
from services.ingest.domain.events import (
    ABSENT,
    MAX_PROPERTIES_DEPTH,
    CustomerRef,
    EventBatch,
    EventInput,
    PropertiesShape,
    PropertyReader,
)
from services.ingest.domain.log import LogCursor, LogEntry, LoggedEvent, LoggedUsage, LoggedVoid, LogPage, LogPosition
from services.ingest.domain.outcomes import BatchOutcome, EventOutcome, EventStatus
from services.ingest.domain.usage import UsageInput
from services.ingest.repository import IngestCounts, StoredEvent
from tally.pagination import decode_page_token, encode_page_token
from tally_gen.common.v1 import common_pb2
from tally_gen.ingest.v1 import ingest_pb2

_INFINITIES = (math.inf, -math.inf)
_STATUS = {
    EventStatus.ACCEPTED: ingest_pb2.EVENT_STATUS_ACCEPTED,
    EventStatus.DUPLICATE: ingest_pb2.EVENT_STATUS_DUPLICATE,
    EventStatus.REJECTED: ingest_pb2.EVENT_STATUS_REJECTED,
}
_CURSOR_KIND = "ingest_log"


# ---------------------------------------------------------------------- inbound


def _measure_struct(struct: struct_pb2.Struct, depth: int, path: str, non_finite: list[str]) -> int:
    """Deepest nesting level below ``struct`` (itself at ``depth``), collecting NaN/Inf paths."""
    deepest = depth
    for key, value in struct.fields.items():
        kind = value.WhichOneof("kind")
        if kind == "number_value":
            number = value.number_value
            if number != number or number in _INFINITIES:
                non_finite.append(path + key)
        elif kind == "struct_value":
            deepest = max(deepest, _measure_struct(value.struct_value, depth + 1, f"{path}{key}.", non_finite))
        elif kind == "list_value":
            deepest = max(deepest, _measure_list(value.list_value, depth + 1, f"{path}{key}", non_finite))
    return deepest


def _measure_list(values: struct_pb2.ListValue, depth: int, path: str, non_finite: list[str]) -> int:
    deepest = depth
    for position, value in enumerate(values.values):
        kind = value.WhichOneof("kind")
        if kind == "number_value":
            number = value.number_value
            if number != number or number in _INFINITIES:
                non_finite.append(f"{path}[{position}]")
        elif kind == "struct_value":
            deepest = max(deepest, _measure_struct(value.struct_value, depth + 1, f"{path}[{position}].", non_finite))
        elif kind == "list_value":
            deepest = max(deepest, _measure_list(value.list_value, depth + 1, f"{path}[{position}]", non_finite))
    return deepest


def customer_ref_from_proto(ref: common_pb2.CustomerRef) -> CustomerRef:
    which = ref.WhichOneof("ref")
    if which == "id":
        return CustomerRef(id=ref.id)
    if which == "external_id":
        return CustomerRef(external_id=ref.external_id)
    return CustomerRef()


def subscription_ref_from_proto(ref: common_pb2.SubscriptionRef) -> SubscriptionRef:
    """The named subscription; both fields empty stays a (malformed) ref, refused by validation."""
    if ref.WhichOneof("ref") == "external_id":
        return SubscriptionRef(external_id=ref.external_id)
    return SubscriptionRef(id=ref.id)


# Shapes of flat properties documents by size: one object per size, not one per event.
_FLAT_SHAPES: dict[int, PropertiesShape] = {}


def _properties(props: struct_pb2.Struct) -> tuple[bytes, PropertiesShape]:
    raw = props.SerializeToString(deterministic=True)
    if not raw:
        return raw, _EMPTY_SHAPE
    shape = _flat_shape(raw)
    if shape is not None:
        return raw, shape
    non_finite: list[str] = []
    depth = _measure_struct(props, 1, "", non_finite)
    return raw, PropertiesShape(len(raw), depth, tuple(non_finite))


def _flat_shape(raw: bytes) -> PropertiesShape | None:
    """The shape of serialized properties when byte-level bounds prove them shallow and finite.

    Each nesting level needs one struct_value (0x2a) or list_value (0x32) tag byte, so fewer
    than 8 such bytes prove the depth within 8. A NaN or Infinity double has 0x7f or 0xff as
    its last byte, so bytes without either hold none. None: walk the Struct instead.
    """
    if raw.count(b"\x2a") + raw.count(b"\x32") < MAX_PROPERTIES_DEPTH and b"\x7f" not in raw and b"\xff" not in raw:
        size = len(raw)
        shape = _FLAT_SHAPES.get(size)
        if shape is None:
            shape = _FLAT_SHAPES[size] = PropertiesShape(size, 1)
        return shape
    return None


_EMPTY_SHAPE = PropertiesShape(0, 0)
_NO_CUSTOMER = CustomerRef("", "")


def _property_at(struct: struct_pb2.Struct, path: str):
    """The JSON value at a dot path of a Struct (nested objects and arrays as {} and []), or ABSENT."""
    if "." not in path:
        # The common case, a top-level property, with one map lookup.
        fields = struct.fields
        if path not in fields:
            return ABSENT
        value = fields[path]
        return _python_value(value, value.WhichOneof("kind"))
    current = struct
    value = None
    for part in path.split("."):
        if current is None:
            return ABSENT
        fields = current.fields
        if part not in fields:
            return ABSENT
        value = fields[part]
        current = value.struct_value if value.WhichOneof("kind") == "struct_value" else None
    return _python_value(value, value.WhichOneof("kind"))


def _python_value(value: struct_pb2.Value, kind: str | None):
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        return value.number_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return {}
    if kind == "list_value":
        return []
    return None


def _reader(events) -> PropertyReader:
    def read(index: int, path: str):
        return _property_at(events[index].properties, path)

    return read


def property_from_bytes(properties: bytes, path: str):
    """The same from serialized properties (a single event, whose message is not kept)."""
    return _property_at(struct_pb2.Struct.FromString(properties), path)


def event_from_proto(event: ingest_pb2.Event) -> EventInput:
    return events_from_proto([event]).event(0)


def events_from_proto(events) -> EventBatch:
    """The batch as columns; one pass, reusing one CustomerRef per distinct customer.

    The hot loop of StreamEvents: every upb attribute access costs, so each field is read
    once and the common case (flat properties, customer by external id) takes the short way.
    """
    keys: list[str] = []
    types: list[str] = []
    customers: list[CustomerRef] = []
    timestamps: list[int | None] = []
    properties: list[bytes] = []
    shapes: list[PropertiesShape] = []
    by_external: dict[str, CustomerRef] = {}
    by_id: dict[str, CustomerRef] = {}
    subscriptions: list[SubscriptionRef | None] | None = None
    flat_shape = _flat_shape
    for position, event in enumerate(events):
        if event.HasField("subscription"):
            if subscriptions is None:
                subscriptions = [None] * position
            subscriptions.append(subscription_ref_from_proto(event.subscription))
        elif subscriptions is not None:
            subscriptions.append(None)
        keys.append(event.idempotency_key)
        types.append(event.event_type)
        customer = event.customer
        # A oneof: a non-empty external_id means id is unset, and both empty means no
        # customer (an explicitly empty value is as missing as an unset one).
        value = customer.external_id
        if value:
            ref = by_external.get(value)
            if ref is None:
                ref = by_external[value] = CustomerRef("", value)
        else:
            value = customer.id
            if value:
                ref = by_id.get(value)
                if ref is None:
                    ref = by_id[value] = CustomerRef(value, "")
            else:
                ref = _NO_CUSTOMER
        customers.append(ref)
        if event.HasField("timestamp"):
            ts = event.timestamp
            timestamps.append(ts.seconds * 1_000_000 + ts.nanos // 1000)
        else:
            timestamps.append(None)
        props = event.properties
        raw = props.SerializeToString(deterministic=True)
        shape = flat_shape(raw) if raw else _EMPTY_SHAPE
        if shape is None:
            raw, shape = _properties(props)
        properties.append(raw)
        shapes.append(shape)
    return EventBatch(
        keys, types, customers, timestamps, properties, shapes, subscriptions, read_property=_reader(events)
    )


def _instant(ts: timestamp_pb2.Timestamp) -> dt.datetime:
    return ts.ToDatetime(tzinfo=dt.timezone.utc)


def usage_from_proto(request: ingest_pb2.RecordUsageRequest) -> UsageInput:
    has_range = request.HasField("range")
    return UsageInput(
        idempotency_key=request.idempotency_key,
        customer=customer_ref_from_proto(request.customer),
        meter_key=request.meter_key,
        quantity=request.quantity.value,
        memo=request.memo,
        timestamp=_instant(request.timestamp) if request.HasField("timestamp") else None,
        range_start=_instant(request.range.start) if has_range and request.range.HasField("start") else None,
        range_end=_instant(request.range.end) if has_range and request.range.HasField("end") else None,
        dimensions=tuple(sorted(request.dimensions.items())),
        subscription=subscription_ref_from_proto(request.subscription) if request.HasField("subscription") else None,
        price_point=request.price_point,
    )


def cursor_from_proto(token: str) -> LogCursor:
    """INVALID_ARGUMENT (field ``cursor``) for a cursor this service did not issue."""
    state = decode_page_token(token, kind=_CURSOR_KIND, field="cursor")
    if state is None:
        return LogCursor()
    watermark = None
    if state.get("w") is not None:
        watermark = dt.datetime.fromisoformat(state["w"])
    return LogCursor(LogPosition(int(state["x"]), int(state["p"])), watermark)


# ---------------------------------------------------------------------- outbound


def cursor_to_proto(cursor: LogCursor) -> str:
    watermark = None if cursor.watermark is None else cursor.watermark.isoformat()
    return encode_page_token({"x": cursor.after.xid, "p": cursor.after.position, "w": watermark}, kind=_CURSOR_KIND)


def _violations_to_proto(violations) -> list[common_pb2.FieldViolation]:
    return [common_pb2.FieldViolation(field=v.field, description=v.description, reason=v.reason) for v in violations]


def _fill_results(results, batch: BatchOutcome) -> tuple[int, int, int]:
    """Append one EventResult per event (add() beats building and copying messages)."""
    add = results.add
    violations = batch.violations
    statuses = [_STATUS[status] for status in batch.statuses]
    subscriptions = batch.subscription_ids
    for index, (status, event_id, key) in enumerate(zip(statuses, batch.event_ids, batch.keys)):
        if subscriptions is not None and subscriptions[index]:
            add(index=index, status=status, event_id=event_id, idempotency_key=key, subscription_id=subscriptions[index])
        elif index in violations:
            add(
                index=index,
                status=status,
                event_id=event_id,
                idempotency_key=key,
                violations=_violations_to_proto(violations[index]),
            )
        else:
            add(index=index, status=status, event_id=event_id, idempotency_key=key)
    accepted = batch.count(EventStatus.ACCEPTED)
    duplicate = batch.count(EventStatus.DUPLICATE)
    return accepted, duplicate, len(batch) - accepted - duplicate


def batch_to_proto(batch: BatchOutcome) -> ingest_pb2.SendEventBatchResponse:
    response = ingest_pb2.SendEventBatchResponse()
    response.accepted_count, response.duplicate_count, response.rejected_count = _fill_results(response.results, batch)
    return response


def stream_ack_to_proto(batch_id: str, batch: BatchOutcome) -> ingest_pb2.StreamEventsResponse:
    response = ingest_pb2.StreamEventsResponse(batch_id=batch_id)
    response.accepted_count, response.duplicate_count, response.rejected_count = _fill_results(response.results, batch)
    return response


def send_event_to_proto(outcome: EventOutcome) -> ingest_pb2.SendEventResponse:
    return ingest_pb2.SendEventResponse(
        event_id=outcome.event_id,
        idempotency_key=outcome.idempotency_key,
        duplicate=outcome.status is EventStatus.DUPLICATE,
        subscription_id=outcome.subscription_id,
    )


def void_to_proto(event_id: str, already_voided: bool, void_time: dt.datetime) -> ingest_pb2.VoidEventResponse:
    response = ingest_pb2.VoidEventResponse(event_id=event_id, already_voided=already_voided)
    response.void_time.FromDatetime(void_time)
    return response


def usage_recorded_to_proto(
    record_id: str, key: str, duplicate: bool, subscription_id: str = ""
) -> ingest_pb2.RecordUsageResponse:
    return ingest_pb2.RecordUsageResponse(
        usage_record_id=record_id, idempotency_key=key, duplicate=duplicate, subscription_id=subscription_id
    )


def _timestamp(instant: dt.datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(instant)
    return ts


def stored_event_to_proto(stored: StoredEvent) -> ingest_pb2.StoredEvent:
    event = stored.event
    message = ingest_pb2.StoredEvent(
        event_id=event.event_id,
        idempotency_key=event.idempotency_key,
        event_type=event.event_type,
        customer_id=event.customer_id,
        timestamp=_timestamp(event.timestamp),
        ingest_time=_timestamp(stored.ingest_time),
        voided=stored.voided,
        void_reason=stored.void_reason,
        metered=stored.metered,
        subscription_id=event.subscription_id,
    )
    message.properties.MergeFromString(event.properties)
    return message


def stats_to_proto(counts: IngestCounts, head_position: int, catalog_revision: int = 0) -> ingest_pb2.GetIngestStatsResponse:
    return ingest_pb2.GetIngestStatsResponse(
        events_total=counts.events,
        usage_records_total=counts.usage_records,
        voids_total=counts.voids,
        unmetered_total=sum(n for _, n in counts.unmetered_by_type),
        unmetered_by_type=[ingest_pb2.EventTypeCount(event_type=t, count=n) for t, n in counts.unmetered_by_type],
        head_position=head_position,
        catalog_revision=catalog_revision,
    )


def _set_micros(target: timestamp_pb2.Timestamp, micros: int) -> None:
    seconds, rest = divmod(micros, 1_000_000)
    target.seconds = seconds
    target.nanos = rest * 1000


def _fill_logged_event(target: ingest_pb2.LoggedEvent, event: LoggedEvent) -> None:
    target.event_id = event.event_id
    target.idempotency_key = event.idempotency_key
    target.event_type = event.event_type
    target.customer_id = event.customer_id
    _set_micros(target.timestamp, event.timestamp_micros)
    if event.properties:
        target.properties.MergeFromString(event.properties)
    if event.subscription_id:
        target.subscription_id = event.subscription_id


def _entry_to_proto(entry: LogEntry, target: ingest_pb2.LogEntry) -> None:
    target.position = entry.at.position
    _set_micros(target.ingest_time, entry.ingest_micros)
    body = entry.body
    if type(body) is LoggedEvent:
        _fill_logged_event(target.event, body)
    elif isinstance(body, LoggedUsage):
        usage = target.usage
        usage.usage_record_id = body.usage_record_id
        usage.idempotency_key = body.idempotency_key
        usage.customer_id = body.customer_id
        usage.meter_key = body.meter_key
        usage.quantity.value = str(body.quantity)
        usage.memo = body.memo
        usage.timestamp.FromDatetime(body.timestamp)
        if body.range_start is not None and body.range_end is not None:
            usage.range.start.FromDatetime(body.range_start)
            usage.range.end.FromDatetime(body.range_end)
        usage.dimensions.update(body.dimensions)
        usage.subscription_id = body.subscription_id
    elif isinstance(body, LoggedVoid):
        void = target.void
        void.event_id = body.event.event_id
        void.idempotency_key = body.event.idempotency_key
        void.reason = body.reason
        _fill_logged_event(void.event, body.event)


def log_page_to_proto(page: LogPage) -> ingest_pb2.ReadLogResponse:
    response = ingest_pb2.ReadLogResponse(
        next_cursor=cursor_to_proto(page.next_cursor),
        caught_up=page.caught_up,
        head_position=page.head.position,
    )
    add = response.entries.add
    for entry in page.entries:
        at, ingest_micros, body = entry
        if type(body) is not LoggedEvent:
            _entry_to_proto(entry, add())
            continue
        # Events are nearly the whole log (pages of thousands): the fields are set inline,
        # each upb attribute read once, which costs about a third less than the calls above.
        target = add()
        target.position = at.position
        seconds, rest = divmod(ingest_micros, 1_000_000)
        stamp = target.ingest_time
        stamp.seconds = seconds
        stamp.nanos = rest * 1000
        event = target.event
        event_id, key, event_type, customer_id, micros, properties, subscription_id = body
        event.event_id = event_id
        event.idempotency_key = key
        event.event_type = event_type
        event.customer_id = customer_id
        seconds, rest = divmod(micros, 1_000_000)
        stamp = event.timestamp
        stamp.seconds = seconds
        stamp.nanos = rest * 1000
        if properties:
            event.properties.MergeFromString(properties)
        if subscription_id:
            event.subscription_id = subscription_id
    if page.next_cursor.watermark is not None:
        response.watermark.FromDatetime(page.next_cursor.watermark)
    if page.head.ingest_time is not None:
        response.head_ingest_time.FromDatetime(page.head.ingest_time)
    return response
