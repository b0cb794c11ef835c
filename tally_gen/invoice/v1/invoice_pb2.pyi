import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from tally_gen.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InvoiceStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INVOICE_STATUS_UNSPECIFIED: _ClassVar[InvoiceStatus]
    INVOICE_STATUS_DRAFT: _ClassVar[InvoiceStatus]
    INVOICE_STATUS_FINALIZED: _ClassVar[InvoiceStatus]
    INVOICE_STATUS_PAID: _ClassVar[InvoiceStatus]
    INVOICE_STATUS_VOID: _ClassVar[InvoiceStatus]

class LineKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LINE_KIND_UNSPECIFIED: _ClassVar[LineKind]
    LINE_KIND_FIXED_FEE: _ClassVar[LineKind]
    LINE_KIND_USAGE: _ClassVar[LineKind]
    LINE_KIND_ADJUSTMENT: _ClassVar[LineKind]
    LINE_KIND_PRORATION: _ClassVar[LineKind]

class InvoiceKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INVOICE_KIND_UNSPECIFIED: _ClassVar[InvoiceKind]
    INVOICE_KIND_PERIOD_START: _ClassVar[InvoiceKind]
    INVOICE_KIND_PERIOD_END: _ClassVar[InvoiceKind]
INVOICE_STATUS_UNSPECIFIED: InvoiceStatus
INVOICE_STATUS_DRAFT: InvoiceStatus
INVOICE_STATUS_FINALIZED: InvoiceStatus
INVOICE_STATUS_PAID: InvoiceStatus
INVOICE_STATUS_VOID: InvoiceStatus
LINE_KIND_UNSPECIFIED: LineKind
LINE_KIND_FIXED_FEE: LineKind
LINE_KIND_USAGE: LineKind
LINE_KIND_ADJUSTMENT: LineKind
LINE_KIND_PRORATION: LineKind
INVOICE_KIND_UNSPECIFIED: InvoiceKind
INVOICE_KIND_PERIOD_START: InvoiceKind
INVOICE_KIND_PERIOD_END: InvoiceKind

class TierBreakdown(_message.Message):
    __slots__ = ("tier", "from_units", "up_to", "quantity", "unit_price", "flat_amount", "amount")
    TIER_FIELD_NUMBER: _ClassVar[int]
    FROM_UNITS_FIELD_NUMBER: _ClassVar[int]
    UP_TO_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    UNIT_PRICE_FIELD_NUMBER: _ClassVar[int]
    FLAT_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    tier: int
    from_units: _common_pb2.Decimal
    up_to: _common_pb2.Decimal
    quantity: _common_pb2.Decimal
    unit_price: _common_pb2.Decimal
    flat_amount: _common_pb2.Decimal
    amount: _common_pb2.Decimal
    def __init__(self, tier: _Optional[int] = ..., from_units: _Optional[_Union[_common_pb2.Decimal, _Mapping]] = ..., up_to: _Optional[_Union[_common_pb2.Decimal, _Mapping]] = ..., quantity: _Optional[_Union[_common_pb2.Decimal, _Mapping]] = ..., unit_price: _Optional[_Union[_common_pb2.Decimal, _Mapping]] = ..., flat_amount: _Optional[_Union[_common_pb2.Decimal, _Mapping]] = ..., amount: _Optional[_Union[_common_pb2.Decimal, _Mapping]] = ...) -> None: ...

class InvoiceLine(_message.Message):
    __slots__ = ("id", "kind", "description", "charge_key", "meter_key", "dimensions", "period", "plan_key", "plan_version", "quantity", "included_units", "unit_price", "tiers", "proration", "amount", "adjusts_invoice_id", "adjusts_period", "usage", "amount_before_limits", "prorated_seconds", "period_seconds", "price_override", "price_point")
    class DimensionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CHARGE_KEY_FIELD_NUMBER: _ClassVar[int]
    METER_KEY_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    PLAN_KEY_FIELD_NUMBER: _ClassVar[int]
    PLAN_VERSION_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    INCLUDED_UNITS_FIELD_NUMBER: _ClassVar[int]
    UNIT_PRICE_FIELD_NUMBER: _ClassVar[int]
    TIERS_FIELD_NUMBER: _ClassVar[int]
    PRORATION_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    ADJUSTS_INVOICE_ID_FIELD_NUMBER: _ClassVar[int]
    ADJUSTS_PERIOD_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_BEFORE_LIMITS_FIELD_NUMBER: _ClassVar[int]
    PRORATED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PERIOD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PRICE_OVERRIDE_FIELD_NUMBER: _ClassVar[int]
    PRICE_POINT_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: LineKind
    description: str
    charge_key: str
    meter_key: str
    dimensions: _containers.ScalarMap[str, str]
    period: _common_pb2.TimeRange
    plan_key: str
    plan_version: int
    quantity: _common_pb2.Decimal
    included_units: _common_pb2.Decimal
    unit_price: _common_pb2.Decimal
    tiers: _containers.RepeatedCompositeFieldContainer[TierBreakdown]
    proration: _common_pb2.Decimal
    amount: _common_pb2.Decimal
    adjusts_invoice_id: str
    adjusts_period: _common_pb2.TimeRange
    usage: _common_pb2.Decimal
    amount_before_limits: _common_pb2.Decimal
    prorated_seconds: int
    period_seconds: int
    price_override: bool
    price_point: str
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[_Union[LineKind, str]] = ..., description: _Optional[str] = ..., charge_key: _Optional[str] = ..., meter_key: _Optional[str] = ..., dimensions: _Optional[_Mapping[str, str]] = ..., period: _Optional[_Union[_common_pb2.TimeRange, _Mapping]] = ..., plan_key: _Optional[str] = ..., plan_version: _Optional[int] = ..., quantity: _Optional[_Union[_common_pb2.Decimal, _Mapping]] = ..., included_units: _Optional[_Union[_common_pb2.Decimal, _Mapping]] = ..., unit_price: _Optional[_Union[_common_pb2.Decimal, _Mapping]] = ..., tiers: _Optional[_Iterable[_Union[TierBreakdown, _Mapping]]] = ..., proration: _Optional[_Union[_common_pb2.Decimal, _Mapping]] = ..., amount: _Optional[_Union[_common_pb2.Decimal, _Mapping]] = ..., adjusts_invoice_id: _Optional[str] = ..., adjusts_period: _Optional[_Union[_common_pb2.TimeRange, _Mapping]] = ..., usage: _Optional[_Union[_common_pb2.Decimal, _Mapping]] = ..., amount_before_limits: _Optional[_Union[_common_pb2.Decimal, _Mapping]] = ..., prorated_seconds: _Optional[int] = ..., period_seconds: _Optional[int] = ..., price_override: _Optional[bool] = ..., price_point: _Optional[str] = ...) -> None: ...

class Invoice(_message.Message):
    __slots__ = ("id", "number", "customer_id", "subscription_id", "status", "currency", "period", "lines", "subtotal", "total", "content_hash", "create_time", "grace_end_time", "finalize_time", "paid_time", "void_time", "void_reason", "customer_name", "customer_email", "customer_external_id", "warnings", "kind")
    ID_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    SUBTOTAL_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    GRACE_END_TIME_FIELD_NUMBER: _ClassVar[int]
    FINALIZE_TIME_FIELD_NUMBER: _ClassVar[int]
    PAID_TIME_FIELD_NUMBER: _ClassVar[int]
    VOID_TIME_FIELD_NUMBER: _ClassVar[int]
    VOID_REASON_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_NAME_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_EMAIL_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    id: str
    number: str
    customer_id: str
    subscription_id: str
    status: InvoiceStatus
    currency: str
    period: _common_pb2.TimeRange
    lines: _containers.RepeatedCompositeFieldContainer[InvoiceLine]
    subtotal: _common_pb2.Decimal
    total: _common_pb2.Decimal
    content_hash: str
    create_time: _timestamp_pb2.Timestamp
    grace_end_time: _timestamp_pb2.Timestamp
    finalize_time: _timestamp_pb2.Timestamp
    paid_time: _timestamp_pb2.Timestamp
    void_time: _timestamp_pb2.Timestamp
    void_reason: str
    customer_name: str
    customer_email: str
    customer_external_id: str
    warnings: _containers.RepeatedCompositeFieldContainer[InvoiceWarning]
    kind: InvoiceKind
    def __init__(self, id: _Optional[str] = ..., number: _Optional[str] = ..., customer_id: _Optional[str] = ..., subscription_id: _Optional[str] = ..., status: _Optional[_Union[InvoiceStatus, str]] = ..., currency: _Optional[str] = ..., period: _Optional[_Union[_common_pb2.TimeRange, _Mapping]] = ..., lines: _Optional[_Iterable[_Union[InvoiceLine, _Mapping]]] = ..., subtotal: _Optional[_Union[_common_pb2.Decimal, _Mapping]] = ..., total: _Optional[_Union[_common_pb2.Decimal, _Mapping]] = ..., content_hash: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., grace_end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finalize_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., paid_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., void_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., void_reason: _Optional[str] = ..., customer_name: _Optional[str] = ..., customer_email: _Optional[str] = ..., customer_external_id: _Optional[str] = ..., warnings: _Optional[_Iterable[_Union[InvoiceWarning, _Mapping]]] = ..., kind: _Optional[_Union[InvoiceKind, str]] = ...) -> None: ...

class InvoiceWarning(_message.Message):
    __slots__ = ("code", "description", "meter_key", "period", "quantity", "competing_subscription_ids")
    CODE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    METER_KEY_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    COMPETING_SUBSCRIPTION_IDS_FIELD_NUMBER: _ClassVar[int]
    code: str
    description: str
    meter_key: str
    period: _common_pb2.TimeRange
    quantity: _common_pb2.Decimal
    competing_subscription_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, code: _Optional[str] = ..., description: _Optional[str] = ..., meter_key: _Optional[str] = ..., period: _Optional[_Union[_common_pb2.TimeRange, _Mapping]] = ..., quantity: _Optional[_Union[_common_pb2.Decimal, _Mapping]] = ..., competing_subscription_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class CloseDuePeriodsRequest(_message.Message):
    __slots__ = ("as_of", "subscription_ids")
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_IDS_FIELD_NUMBER: _ClassVar[int]
    as_of: _timestamp_pb2.Timestamp
    subscription_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., subscription_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class CloseDuePeriodsResponse(_message.Message):
    __slots__ = ("invoices_created", "invoices_finalized", "waiting_for_usage", "invoice_ids", "subscriptions_failed", "quarantined")
    INVOICES_CREATED_FIELD_NUMBER: _ClassVar[int]
    INVOICES_FINALIZED_FIELD_NUMBER: _ClassVar[int]
    WAITING_FOR_USAGE_FIELD_NUMBER: _ClassVar[int]
    INVOICE_IDS_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTIONS_FAILED_FIELD_NUMBER: _ClassVar[int]
    QUARANTINED_FIELD_NUMBER: _ClassVar[int]
    invoices_created: int
    invoices_finalized: int
    waiting_for_usage: int
    invoice_ids: _containers.RepeatedScalarFieldContainer[str]
    subscriptions_failed: int
    quarantined: _containers.RepeatedCompositeFieldContainer[_common_pb2.QuarantinedRecord]
    def __init__(self, invoices_created: _Optional[int] = ..., invoices_finalized: _Optional[int] = ..., waiting_for_usage: _Optional[int] = ..., invoice_ids: _Optional[_Iterable[str]] = ..., subscriptions_failed: _Optional[int] = ..., quarantined: _Optional[_Iterable[_Union[_common_pb2.QuarantinedRecord, _Mapping]]] = ...) -> None: ...

class GetInvoiceRequest(_message.Message):
    __slots__ = ("id", "number")
    ID_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    id: str
    number: str
    def __init__(self, id: _Optional[str] = ..., number: _Optional[str] = ...) -> None: ...

class GetInvoiceResponse(_message.Message):
    __slots__ = ("invoice",)
    INVOICE_FIELD_NUMBER: _ClassVar[int]
    invoice: Invoice
    def __init__(self, invoice: _Optional[_Union[Invoice, _Mapping]] = ...) -> None: ...

class ListInvoicesRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "customer_id", "subscription_id", "status", "kind", "customer", "subscription")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    customer_id: str
    subscription_id: str
    status: InvoiceStatus
    kind: InvoiceKind
    customer: _common_pb2.CustomerRef
    subscription: _common_pb2.SubscriptionRef
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., customer_id: _Optional[str] = ..., subscription_id: _Optional[str] = ..., status: _Optional[_Union[InvoiceStatus, str]] = ..., kind: _Optional[_Union[InvoiceKind, str]] = ..., customer: _Optional[_Union[_common_pb2.CustomerRef, _Mapping]] = ..., subscription: _Optional[_Union[_common_pb2.SubscriptionRef, _Mapping]] = ...) -> None: ...

class ListInvoicesResponse(_message.Message):
    __slots__ = ("invoices", "next_page_token")
    INVOICES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    invoices: _containers.RepeatedCompositeFieldContainer[Invoice]
    next_page_token: str
    def __init__(self, invoices: _Optional[_Iterable[_Union[Invoice, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class FinalizeInvoiceRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class FinalizeInvoiceResponse(_message.Message):
    __slots__ = ("invoice",)
    INVOICE_FIELD_NUMBER: _ClassVar[int]
    invoice: Invoice
    def __init__(self, invoice: _Optional[_Union[Invoice, _Mapping]] = ...) -> None: ...

class MarkInvoicePaidRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class MarkInvoicePaidResponse(_message.Message):
    __slots__ = ("invoice",)
    INVOICE_FIELD_NUMBER: _ClassVar[int]
    invoice: Invoice
    def __init__(self, invoice: _Optional[_Union[Invoice, _Mapping]] = ...) -> None: ...

class VoidInvoiceRequest(_message.Message):
    __slots__ = ("id", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    reason: str
    def __init__(self, id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class VoidInvoiceResponse(_message.Message):
    __slots__ = ("invoice",)
    INVOICE_FIELD_NUMBER: _ClassVar[int]
    invoice: Invoice
    def __init__(self, invoice: _Optional[_Union[Invoice, _Mapping]] = ...) -> None: ...

class UpcomingInvoiceRequest(_message.Message):
    __slots__ = ("subscription_id", "as_of", "subscription")
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    subscription_id: str
    as_of: _timestamp_pb2.Timestamp
    subscription: _common_pb2.SubscriptionRef
    def __init__(self, subscription_id: _Optional[str] = ..., as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., subscription: _Optional[_Union[_common_pb2.SubscriptionRef, _Mapping]] = ...) -> None: ...

class UpcomingInvoiceResponse(_message.Message):
    __slots__ = ("invoice",)
    INVOICE_FIELD_NUMBER: _ClassVar[int]
    invoice: Invoice
    def __init__(self, invoice: _Optional[_Union[Invoice, _Mapping]] = ...) -> None: ...

class BillingPeriod(_message.Message):
    __slots__ = ("period", "invoice_id", "period_start_invoice_id")
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    INVOICE_ID_FIELD_NUMBER: _ClassVar[int]
    PERIOD_START_INVOICE_ID_FIELD_NUMBER: _ClassVar[int]
    period: _common_pb2.TimeRange
    invoice_id: str
    period_start_invoice_id: str
    def __init__(self, period: _Optional[_Union[_common_pb2.TimeRange, _Mapping]] = ..., invoice_id: _Optional[str] = ..., period_start_invoice_id: _Optional[str] = ...) -> None: ...

class ListBillingPeriodsRequest(_message.Message):
    __slots__ = ("subscription_id", "until", "page_size", "page_token", "subscription")
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    subscription_id: str
    until: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    subscription: _common_pb2.SubscriptionRef
    def __init__(self, subscription_id: _Optional[str] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., subscription: _Optional[_Union[_common_pb2.SubscriptionRef, _Mapping]] = ...) -> None: ...

class ListBillingPeriodsResponse(_message.Message):
    __slots__ = ("periods", "next_page_token")
    PERIODS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    periods: _containers.RepeatedCompositeFieldContainer[BillingPeriod]
    next_page_token: str
    def __init__(self, periods: _Optional[_Iterable[_Union[BillingPeriod, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RenderInvoicePdfRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class RenderInvoicePdfResponse(_message.Message):
    __slots__ = ("pdf", "filename")
    PDF_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    pdf: bytes
    filename: str
    def __init__(self, pdf: _Optional[bytes] = ..., filename: _Optional[str] = ...) -> None: ...

class GetInvoiceStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetInvoiceStatusResponse(_message.Message):
    __slots__ = ("quarantined", "quarantined_count")
    QUARANTINED_FIELD_NUMBER: _ClassVar[int]
    QUARANTINED_COUNT_FIELD_NUMBER: _ClassVar[int]
    quarantined: _containers.RepeatedCompositeFieldContainer[_common_pb2.QuarantinedRecord]
    quarantined_count: int
    def __init__(self, quarantined: _Optional[_Iterable[_Union[_common_pb2.QuarantinedRecord, _Mapping]]] = ..., quarantined_count: _Optional[int] = ...) -> None: ...
