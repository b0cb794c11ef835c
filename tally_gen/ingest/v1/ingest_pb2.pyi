import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from tally_gen.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EventStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_STATUS_UNSPECIFIED: _ClassVar[EventStatus]
    EVENT_STATUS_ACCEPTED: _ClassVar[EventStatus]
    EVENT_STATUS_DUPLICATE: _ClassVar[EventStatus]
    EVENT_STATUS_REJECTED: _ClassVar[EventStatus]

class BatchMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BATCH_MODE_UNSPECIFIED: _ClassVar[BatchMode]
    BATCH_MODE_ATOMIC: _ClassVar[BatchMode]
    BATCH_MODE_PARTIAL: _ClassVar[BatchMode]
EVENT_STATUS_UNSPECIFIED: EventStatus
EVENT_STATUS_ACCEPTED: EventStatus
EVENT_STATUS_DUPLICATE: EventStatus
EVENT_STATUS_REJECTED: EventStatus
BATCH_MODE_UNSPECIFIED: BatchMode
BATCH_MODE_ATOMIC: BatchMode
BATCH_MODE_PARTIAL: BatchMode

class Event(_message.Message):
    __slots__ = ("idempotency_key", "event_type", "customer", "timestamp", "properties", "subscription")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    event_type: str
    customer: _common_pb2.CustomerRef
    timestamp: _timestamp_pb2.Timestamp
    properties: _struct_pb2.Struct
    subscription: _common_pb2.SubscriptionRef
    def __init__(self, idempotency_key: _Optional[str] = ..., event_type: _Optional[str] = ..., customer: _Optional[_Union[_common_pb2.CustomerRef, _Mapping]] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., properties: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., subscription: _Optional[_Union[_common_pb2.SubscriptionRef, _Mapping]] = ...) -> None: ...

class EventResult(_message.Message):
    __slots__ = ("index", "status", "event_id", "idempotency_key", "violations", "subscription_id")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    VIOLATIONS_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    index: int
    status: EventStatus
    event_id: str
    idempotency_key: str
    violations: _containers.RepeatedCompositeFieldContainer[_common_pb2.FieldViolation]
    subscription_id: str
    def __init__(self, index: _Optional[int] = ..., status: _Optional[_Union[EventStatus, str]] = ..., event_id: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., violations: _Optional[_Iterable[_Union[_common_pb2.FieldViolation, _Mapping]]] = ..., subscription_id: _Optional[str] = ...) -> None: ...

class SendEventRequest(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: Event
    def __init__(self, event: _Optional[_Union[Event, _Mapping]] = ...) -> None: ...

class SendEventResponse(_message.Message):
    __slots__ = ("event_id", "idempotency_key", "duplicate", "subscription_id")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    idempotency_key: str
    duplicate: bool
    subscription_id: str
    def __init__(self, event_id: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., duplicate: _Optional[bool] = ..., subscription_id: _Optional[str] = ...) -> None: ...

class SendEventBatchRequest(_message.Message):
    __slots__ = ("events", "mode")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    mode: BatchMode
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., mode: _Optional[_Union[BatchMode, str]] = ...) -> None: ...

class SendEventBatchResponse(_message.Message):
    __slots__ = ("results", "accepted_count", "duplicate_count", "rejected_count")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_COUNT_FIELD_NUMBER: _ClassVar[int]
    REJECTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[EventResult]
    accepted_count: int
    duplicate_count: int
    rejected_count: int
    def __init__(self, results: _Optional[_Iterable[_Union[EventResult, _Mapping]]] = ..., accepted_count: _Optional[int] = ..., duplicate_count: _Optional[int] = ..., rejected_count: _Optional[int] = ...) -> None: ...

class StreamEventsRequest(_message.Message):
    __slots__ = ("batch_id", "events")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    events: _containers.RepeatedCompositeFieldContainer[Event]
    def __init__(self, batch_id: _Optional[str] = ..., events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ...) -> None: ...

class StreamEventsResponse(_message.Message):
    __slots__ = ("batch_id", "results", "accepted_count", "duplicate_count", "rejected_count")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_COUNT_FIELD_NUMBER: _ClassVar[int]
    REJECTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    results: _containers.RepeatedCompositeFieldContainer[EventResult]
    accepted_count: int
    duplicate_count: int
    rejected_count: int
    def __init__(self, batch_id: _Optional[str] = ..., results: _Optional[_Iterable[_Union[EventResult, _Mapping]]] = ..., accepted_count: _Optional[int] = ..., duplicate_count: _Optional[int] = ..., rejected_count: _Optional[int] = ...) -> None: ...

class RecordUsageRequest(_message.Message):
    __slots__ = ("idempotency_key", "customer", "meter_key", "quantity", "memo", "timestamp", "range", "dimensions", "subscription", "price_point")
    class DimensionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_FIELD_NUMBER: _ClassVar[int]
    METER_KEY_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    MEMO_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PRICE_POINT_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    customer: _common_pb2.CustomerRef
    meter_key: str
    quantity: _common_pb2.Decimal
    memo: str
    timestamp: _timestamp_pb2.Timestamp
    range: _common_pb2.TimeRange
    dimensions: _containers.ScalarMap[str, str]
    subscription: _common_pb2.SubscriptionRef
    price_point: str
    def __init__(self, idempotency_key: _Optional[str] = ..., customer: _Optional[_Union[_common_pb2.CustomerRef, _Mapping]] = ..., meter_key: _Optional[str] = ..., quantity: _Optional[_Union[_common_pb2.Decimal, _Mapping]] = ..., memo: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., range: _Optional[_Union[_common_pb2.TimeRange, _Mapping]] = ..., dimensions: _Optional[_Mapping[str, str]] = ..., subscription: _Optional[_Union[_common_pb2.SubscriptionRef, _Mapping]] = ..., price_point: _Optional[str] = ...) -> None: ...

class RecordUsageResponse(_message.Message):
    __slots__ = ("usage_record_id", "idempotency_key", "duplicate", "subscription_id")
    USAGE_RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    usage_record_id: str
    idempotency_key: str
    duplicate: bool
    subscription_id: str
    def __init__(self, usage_record_id: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., duplicate: _Optional[bool] = ..., subscription_id: _Optional[str] = ...) -> None: ...

class VoidEventRequest(_message.Message):
    __slots__ = ("idempotency_key", "reason")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    reason: str
    def __init__(self, idempotency_key: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class VoidEventResponse(_message.Message):
    __slots__ = ("event_id", "already_voided", "void_time")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    ALREADY_VOIDED_FIELD_NUMBER: _ClassVar[int]
    VOID_TIME_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    already_voided: bool
    void_time: _timestamp_pb2.Timestamp
    def __init__(self, event_id: _Optional[str] = ..., already_voided: _Optional[bool] = ..., void_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class StoredEvent(_message.Message):
    __slots__ = ("event_id", "idempotency_key", "event_type", "customer_id", "timestamp", "properties", "ingest_time", "voided", "void_reason", "metered", "subscription_id")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    INGEST_TIME_FIELD_NUMBER: _ClassVar[int]
    VOIDED_FIELD_NUMBER: _ClassVar[int]
    VOID_REASON_FIELD_NUMBER: _ClassVar[int]
    METERED_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    idempotency_key: str
    event_type: str
    customer_id: str
    timestamp: _timestamp_pb2.Timestamp
    properties: _struct_pb2.Struct
    ingest_time: _timestamp_pb2.Timestamp
    voided: bool
    void_reason: str
    metered: bool
    subscription_id: str
    def __init__(self, event_id: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., event_type: _Optional[str] = ..., customer_id: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., properties: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., ingest_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., voided: _Optional[bool] = ..., void_reason: _Optional[str] = ..., metered: _Optional[bool] = ..., subscription_id: _Optional[str] = ...) -> None: ...

class GetEventRequest(_message.Message):
    __slots__ = ("idempotency_key",)
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    def __init__(self, idempotency_key: _Optional[str] = ...) -> None: ...

class GetEventResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: StoredEvent
    def __init__(self, event: _Optional[_Union[StoredEvent, _Mapping]] = ...) -> None: ...

class EventTypeCount(_message.Message):
    __slots__ = ("event_type", "count")
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    event_type: str
    count: int
    def __init__(self, event_type: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class GetIngestStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetIngestStatsResponse(_message.Message):
    __slots__ = ("events_total", "usage_records_total", "voids_total", "unmetered_total", "unmetered_by_type", "head_position", "catalog_revision")
    EVENTS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    USAGE_RECORDS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    VOIDS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    UNMETERED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    UNMETERED_BY_TYPE_FIELD_NUMBER: _ClassVar[int]
    HEAD_POSITION_FIELD_NUMBER: _ClassVar[int]
    CATALOG_REVISION_FIELD_NUMBER: _ClassVar[int]
    events_total: int
    usage_records_total: int
    voids_total: int
    unmetered_total: int
    unmetered_by_type: _containers.RepeatedCompositeFieldContainer[EventTypeCount]
    head_position: int
    catalog_revision: int
    def __init__(self, events_total: _Optional[int] = ..., usage_records_total: _Optional[int] = ..., voids_total: _Optional[int] = ..., unmetered_total: _Optional[int] = ..., unmetered_by_type: _Optional[_Iterable[_Union[EventTypeCount, _Mapping]]] = ..., head_position: _Optional[int] = ..., catalog_revision: _Optional[int] = ...) -> None: ...

class LoggedEvent(_message.Message):
    __slots__ = ("event_id", "idempotency_key", "event_type", "customer_id", "timestamp", "properties", "subscription_id")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    idempotency_key: str
    event_type: str
    customer_id: str
    timestamp: _timestamp_pb2.Timestamp
    properties: _struct_pb2.Struct
    subscription_id: str
    def __init__(self, event_id: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., event_type: _Optional[str] = ..., customer_id: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., properties: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., subscription_id: _Optional[str] = ...) -> None: ...

class LoggedUsage(_message.Message):
    __slots__ = ("usage_record_id", "idempotency_key", "customer_id", "meter_key", "quantity", "memo", "timestamp", "range", "dimensions", "subscription_id")
    class DimensionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    USAGE_RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    METER_KEY_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    MEMO_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    usage_record_id: str
    idempotency_key: str
    customer_id: str
    meter_key: str
    quantity: _common_pb2.Decimal
    memo: str
    timestamp: _timestamp_pb2.Timestamp
    range: _common_pb2.TimeRange
    dimensions: _containers.ScalarMap[str, str]
    subscription_id: str
    def __init__(self, usage_record_id: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., customer_id: _Optional[str] = ..., meter_key: _Optional[str] = ..., quantity: _Optional[_Union[_common_pb2.Decimal, _Mapping]] = ..., memo: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., range: _Optional[_Union[_common_pb2.TimeRange, _Mapping]] = ..., dimensions: _Optional[_Mapping[str, str]] = ..., subscription_id: _Optional[str] = ...) -> None: ...

class LoggedVoid(_message.Message):
    __slots__ = ("event_id", "idempotency_key", "reason", "event")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    idempotency_key: str
    reason: str
    event: LoggedEvent
    def __init__(self, event_id: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., reason: _Optional[str] = ..., event: _Optional[_Union[LoggedEvent, _Mapping]] = ...) -> None: ...

class LogEntry(_message.Message):
    __slots__ = ("position", "ingest_time", "event", "usage", "void")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    INGEST_TIME_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    VOID_FIELD_NUMBER: _ClassVar[int]
    position: int
    ingest_time: _timestamp_pb2.Timestamp
    event: LoggedEvent
    usage: LoggedUsage
    void: LoggedVoid
    def __init__(self, position: _Optional[int] = ..., ingest_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., event: _Optional[_Union[LoggedEvent, _Mapping]] = ..., usage: _Optional[_Union[LoggedUsage, _Mapping]] = ..., void: _Optional[_Union[LoggedVoid, _Mapping]] = ...) -> None: ...

class ReadLogRequest(_message.Message):
    __slots__ = ("cursor", "max_entries", "wait_millis")
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    MAX_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    WAIT_MILLIS_FIELD_NUMBER: _ClassVar[int]
    cursor: str
    max_entries: int
    wait_millis: int
    def __init__(self, cursor: _Optional[str] = ..., max_entries: _Optional[int] = ..., wait_millis: _Optional[int] = ...) -> None: ...

class ReadLogResponse(_message.Message):
    __slots__ = ("entries", "next_cursor", "caught_up", "watermark", "head_position", "head_ingest_time")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    CAUGHT_UP_FIELD_NUMBER: _ClassVar[int]
    WATERMARK_FIELD_NUMBER: _ClassVar[int]
    HEAD_POSITION_FIELD_NUMBER: _ClassVar[int]
    HEAD_INGEST_TIME_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[LogEntry]
    next_cursor: str
    caught_up: bool
    watermark: _timestamp_pb2.Timestamp
    head_position: int
    head_ingest_time: _timestamp_pb2.Timestamp
    def __init__(self, entries: _Optional[_Iterable[_Union[LogEntry, _Mapping]]] = ..., next_cursor: _Optional[str] = ..., caught_up: _Optional[bool] = ..., watermark: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., head_position: _Optional[int] = ..., head_ingest_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
