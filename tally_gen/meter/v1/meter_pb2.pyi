import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from tally_gen.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Granularity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GRANULARITY_UNSPECIFIED: _ClassVar[Granularity]
    GRANULARITY_HOUR: _ClassVar[Granularity]
    GRANULARITY_DAY: _ClassVar[Granularity]
    GRANULARITY_MONTH: _ClassVar[Granularity]

class BackfillState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BACKFILL_STATE_UNSPECIFIED: _ClassVar[BackfillState]
    BACKFILL_STATE_RUNNING: _ClassVar[BackfillState]
    BACKFILL_STATE_DONE: _ClassVar[BackfillState]
    BACKFILL_STATE_FAILED: _ClassVar[BackfillState]
GRANULARITY_UNSPECIFIED: Granularity
GRANULARITY_HOUR: Granularity
GRANULARITY_DAY: Granularity
GRANULARITY_MONTH: Granularity
BACKFILL_STATE_UNSPECIFIED: BackfillState
BACKFILL_STATE_RUNNING: BackfillState
BACKFILL_STATE_DONE: BackfillState
BACKFILL_STATE_FAILED: BackfillState

class DimensionValue(_message.Message):
    __slots__ = ("dimensions", "value")
    class DimensionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    dimensions: _containers.ScalarMap[str, str]
    value: _common_pb2.Decimal
    def __init__(self, dimensions: _Optional[_Mapping[str, str]] = ..., value: _Optional[_Union[_common_pb2.Decimal, _Mapping]] = ...) -> None: ...

class GetUsageRequest(_message.Message):
    __slots__ = ("customer", "meter_key", "start", "end", "group_by", "dimension_filter", "subscription", "include_unattributed", "only_unattributed")
    class DimensionFilterEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CUSTOMER_FIELD_NUMBER: _ClassVar[int]
    METER_KEY_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FILTER_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_UNATTRIBUTED_FIELD_NUMBER: _ClassVar[int]
    ONLY_UNATTRIBUTED_FIELD_NUMBER: _ClassVar[int]
    customer: _common_pb2.CustomerRef
    meter_key: str
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    group_by: _containers.RepeatedScalarFieldContainer[str]
    dimension_filter: _containers.ScalarMap[str, str]
    subscription: _common_pb2.SubscriptionRef
    include_unattributed: bool
    only_unattributed: bool
    def __init__(self, customer: _Optional[_Union[_common_pb2.CustomerRef, _Mapping]] = ..., meter_key: _Optional[str] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., group_by: _Optional[_Iterable[str]] = ..., dimension_filter: _Optional[_Mapping[str, str]] = ..., subscription: _Optional[_Union[_common_pb2.SubscriptionRef, _Mapping]] = ..., include_unattributed: _Optional[bool] = ..., only_unattributed: _Optional[bool] = ...) -> None: ...

class GetUsageResponse(_message.Message):
    __slots__ = ("meter_key", "customer_id", "start", "end", "value", "breakdown", "applied_position", "subscription_id")
    METER_KEY_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    BREAKDOWN_FIELD_NUMBER: _ClassVar[int]
    APPLIED_POSITION_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    meter_key: str
    customer_id: str
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    value: _common_pb2.Decimal
    breakdown: _containers.RepeatedCompositeFieldContainer[DimensionValue]
    applied_position: int
    subscription_id: str
    def __init__(self, meter_key: _Optional[str] = ..., customer_id: _Optional[str] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., value: _Optional[_Union[_common_pb2.Decimal, _Mapping]] = ..., breakdown: _Optional[_Iterable[_Union[DimensionValue, _Mapping]]] = ..., applied_position: _Optional[int] = ..., subscription_id: _Optional[str] = ...) -> None: ...

class BatchGetUsageRequest(_message.Message):
    __slots__ = ("queries",)
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    queries: _containers.RepeatedCompositeFieldContainer[GetUsageRequest]
    def __init__(self, queries: _Optional[_Iterable[_Union[GetUsageRequest, _Mapping]]] = ...) -> None: ...

class BatchGetUsageResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[GetUsageResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[GetUsageResponse, _Mapping]]] = ...) -> None: ...

class SeriesPoint(_message.Message):
    __slots__ = ("start", "end", "value")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    value: _common_pb2.Decimal
    def __init__(self, start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., value: _Optional[_Union[_common_pb2.Decimal, _Mapping]] = ...) -> None: ...

class UsageSeriesRequest(_message.Message):
    __slots__ = ("customer", "meter_key", "start", "end", "granularity", "time_zone", "dimension_filter", "subscription", "include_unattributed", "only_unattributed")
    class DimensionFilterEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CUSTOMER_FIELD_NUMBER: _ClassVar[int]
    METER_KEY_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    GRANULARITY_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FILTER_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_UNATTRIBUTED_FIELD_NUMBER: _ClassVar[int]
    ONLY_UNATTRIBUTED_FIELD_NUMBER: _ClassVar[int]
    customer: _common_pb2.CustomerRef
    meter_key: str
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    granularity: Granularity
    time_zone: str
    dimension_filter: _containers.ScalarMap[str, str]
    subscription: _common_pb2.SubscriptionRef
    include_unattributed: bool
    only_unattributed: bool
    def __init__(self, customer: _Optional[_Union[_common_pb2.CustomerRef, _Mapping]] = ..., meter_key: _Optional[str] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., granularity: _Optional[_Union[Granularity, str]] = ..., time_zone: _Optional[str] = ..., dimension_filter: _Optional[_Mapping[str, str]] = ..., subscription: _Optional[_Union[_common_pb2.SubscriptionRef, _Mapping]] = ..., include_unattributed: _Optional[bool] = ..., only_unattributed: _Optional[bool] = ...) -> None: ...

class UsageSeriesResponse(_message.Message):
    __slots__ = ("points",)
    POINTS_FIELD_NUMBER: _ClassVar[int]
    points: _containers.RepeatedCompositeFieldContainer[SeriesPoint]
    def __init__(self, points: _Optional[_Iterable[_Union[SeriesPoint, _Mapping]]] = ...) -> None: ...

class GetMeterStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetMeterStatusResponse(_message.Message):
    __slots__ = ("applied_position", "head_position", "events_behind", "time_behind", "applied_watermark", "unmetered_events", "unknown_meter_records", "unknown_customer_entries", "last_apply_time", "unusable_value_events", "caught_up", "entries_applied", "unattributed_entries", "quarantined_entries", "recent_quarantined", "applier_stalled", "stall_reason", "stalled_since", "catalog_cache_quarantined")
    APPLIED_POSITION_FIELD_NUMBER: _ClassVar[int]
    HEAD_POSITION_FIELD_NUMBER: _ClassVar[int]
    EVENTS_BEHIND_FIELD_NUMBER: _ClassVar[int]
    TIME_BEHIND_FIELD_NUMBER: _ClassVar[int]
    APPLIED_WATERMARK_FIELD_NUMBER: _ClassVar[int]
    UNMETERED_EVENTS_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_METER_RECORDS_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_CUSTOMER_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    LAST_APPLY_TIME_FIELD_NUMBER: _ClassVar[int]
    UNUSABLE_VALUE_EVENTS_FIELD_NUMBER: _ClassVar[int]
    CAUGHT_UP_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_APPLIED_FIELD_NUMBER: _ClassVar[int]
    UNATTRIBUTED_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    QUARANTINED_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    RECENT_QUARANTINED_FIELD_NUMBER: _ClassVar[int]
    APPLIER_STALLED_FIELD_NUMBER: _ClassVar[int]
    STALL_REASON_FIELD_NUMBER: _ClassVar[int]
    STALLED_SINCE_FIELD_NUMBER: _ClassVar[int]
    CATALOG_CACHE_QUARANTINED_FIELD_NUMBER: _ClassVar[int]
    applied_position: int
    head_position: int
    events_behind: int
    time_behind: _duration_pb2.Duration
    applied_watermark: _timestamp_pb2.Timestamp
    unmetered_events: int
    unknown_meter_records: int
    unknown_customer_entries: int
    last_apply_time: _timestamp_pb2.Timestamp
    unusable_value_events: int
    caught_up: bool
    entries_applied: int
    unattributed_entries: int
    quarantined_entries: int
    recent_quarantined: _containers.RepeatedCompositeFieldContainer[_common_pb2.QuarantinedRecord]
    applier_stalled: bool
    stall_reason: str
    stalled_since: _timestamp_pb2.Timestamp
    catalog_cache_quarantined: int
    def __init__(self, applied_position: _Optional[int] = ..., head_position: _Optional[int] = ..., events_behind: _Optional[int] = ..., time_behind: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., applied_watermark: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., unmetered_events: _Optional[int] = ..., unknown_meter_records: _Optional[int] = ..., unknown_customer_entries: _Optional[int] = ..., last_apply_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., unusable_value_events: _Optional[int] = ..., caught_up: _Optional[bool] = ..., entries_applied: _Optional[int] = ..., unattributed_entries: _Optional[int] = ..., quarantined_entries: _Optional[int] = ..., recent_quarantined: _Optional[_Iterable[_Union[_common_pb2.QuarantinedRecord, _Mapping]]] = ..., applier_stalled: _Optional[bool] = ..., stall_reason: _Optional[str] = ..., stalled_since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., catalog_cache_quarantined: _Optional[int] = ...) -> None: ...

class Backfill(_message.Message):
    __slots__ = ("id", "meter_key", "state", "position", "target_position", "entries_applied", "error", "create_time", "finish_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    METER_KEY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    TARGET_POSITION_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_APPLIED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    FINISH_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    meter_key: str
    state: BackfillState
    position: int
    target_position: int
    entries_applied: int
    error: str
    create_time: _timestamp_pb2.Timestamp
    finish_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., meter_key: _Optional[str] = ..., state: _Optional[_Union[BackfillState, str]] = ..., position: _Optional[int] = ..., target_position: _Optional[int] = ..., entries_applied: _Optional[int] = ..., error: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class BackfillMeterRequest(_message.Message):
    __slots__ = ("meter_key",)
    METER_KEY_FIELD_NUMBER: _ClassVar[int]
    meter_key: str
    def __init__(self, meter_key: _Optional[str] = ...) -> None: ...

class BackfillMeterResponse(_message.Message):
    __slots__ = ("backfill",)
    BACKFILL_FIELD_NUMBER: _ClassVar[int]
    backfill: Backfill
    def __init__(self, backfill: _Optional[_Union[Backfill, _Mapping]] = ...) -> None: ...

class GetBackfillRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetBackfillResponse(_message.Message):
    __slots__ = ("backfill",)
    BACKFILL_FIELD_NUMBER: _ClassVar[int]
    backfill: Backfill
    def __init__(self, backfill: _Optional[_Union[Backfill, _Mapping]] = ...) -> None: ...

class Threshold(_message.Message):
    __slots__ = ("id", "meter_key", "plan_key", "customer_id", "absolute_units", "percent_of_included", "name", "create_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    METER_KEY_FIELD_NUMBER: _ClassVar[int]
    PLAN_KEY_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    ABSOLUTE_UNITS_FIELD_NUMBER: _ClassVar[int]
    PERCENT_OF_INCLUDED_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    meter_key: str
    plan_key: str
    customer_id: str
    absolute_units: _common_pb2.Decimal
    percent_of_included: _common_pb2.Decimal
    name: str
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., meter_key: _Optional[str] = ..., plan_key: _Optional[str] = ..., customer_id: _Optional[str] = ..., absolute_units: _Optional[_Union[_common_pb2.Decimal, _Mapping]] = ..., percent_of_included: _Optional[_Union[_common_pb2.Decimal, _Mapping]] = ..., name: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateThresholdRequest(_message.Message):
    __slots__ = ("threshold",)
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    threshold: Threshold
    def __init__(self, threshold: _Optional[_Union[Threshold, _Mapping]] = ...) -> None: ...

class CreateThresholdResponse(_message.Message):
    __slots__ = ("threshold",)
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    threshold: Threshold
    def __init__(self, threshold: _Optional[_Union[Threshold, _Mapping]] = ...) -> None: ...

class ListThresholdsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "meter_key")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    METER_KEY_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    meter_key: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., meter_key: _Optional[str] = ...) -> None: ...

class ListThresholdsResponse(_message.Message):
    __slots__ = ("thresholds", "next_page_token")
    THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    thresholds: _containers.RepeatedCompositeFieldContainer[Threshold]
    next_page_token: str
    def __init__(self, thresholds: _Optional[_Iterable[_Union[Threshold, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteThresholdRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DeleteThresholdResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Alert(_message.Message):
    __slots__ = ("id", "cursor", "threshold_id", "customer_id", "meter_key", "period", "threshold_units", "usage", "fire_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    METER_KEY_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_UNITS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    FIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    cursor: str
    threshold_id: str
    customer_id: str
    meter_key: str
    period: _common_pb2.TimeRange
    threshold_units: _common_pb2.Decimal
    usage: _common_pb2.Decimal
    fire_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., cursor: _Optional[str] = ..., threshold_id: _Optional[str] = ..., customer_id: _Optional[str] = ..., meter_key: _Optional[str] = ..., period: _Optional[_Union[_common_pb2.TimeRange, _Mapping]] = ..., threshold_units: _Optional[_Union[_common_pb2.Decimal, _Mapping]] = ..., usage: _Optional[_Union[_common_pb2.Decimal, _Mapping]] = ..., fire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListAlertsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "customer_id", "meter_key")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    METER_KEY_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    customer_id: str
    meter_key: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., customer_id: _Optional[str] = ..., meter_key: _Optional[str] = ...) -> None: ...

class ListAlertsResponse(_message.Message):
    __slots__ = ("alerts", "next_page_token")
    ALERTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    alerts: _containers.RepeatedCompositeFieldContainer[Alert]
    next_page_token: str
    def __init__(self, alerts: _Optional[_Iterable[_Union[Alert, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchAlertsRequest(_message.Message):
    __slots__ = ("after_cursor", "customer_id")
    AFTER_CURSOR_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    after_cursor: str
    customer_id: str
    def __init__(self, after_cursor: _Optional[str] = ..., customer_id: _Optional[str] = ...) -> None: ...

class WatchAlertsResponse(_message.Message):
    __slots__ = ("alert",)
    ALERT_FIELD_NUMBER: _ClassVar[int]
    alert: Alert
    def __init__(self, alert: _Optional[_Union[Alert, _Mapping]] = ...) -> None: ...
