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

class Aggregation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AGGREGATION_UNSPECIFIED: _ClassVar[Aggregation]
    AGGREGATION_COUNT: _ClassVar[Aggregation]
    AGGREGATION_SUM: _ClassVar[Aggregation]
    AGGREGATION_MAX: _ClassVar[Aggregation]
    AGGREGATION_MIN: _ClassVar[Aggregation]
    AGGREGATION_COUNT_UNIQUE: _ClassVar[Aggregation]
    AGGREGATION_LATEST: _ClassVar[Aggregation]
    AGGREGATION_AVG: _ClassVar[Aggregation]
    AGGREGATION_WEIGHTED_SUM: _ClassVar[Aggregation]

class FilterOperator(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FILTER_OPERATOR_UNSPECIFIED: _ClassVar[FilterOperator]
    FILTER_OPERATOR_EQ: _ClassVar[FilterOperator]
    FILTER_OPERATOR_NEQ: _ClassVar[FilterOperator]
    FILTER_OPERATOR_IN: _ClassVar[FilterOperator]
    FILTER_OPERATOR_NOT_IN: _ClassVar[FilterOperator]
    FILTER_OPERATOR_GT: _ClassVar[FilterOperator]
    FILTER_OPERATOR_GTE: _ClassVar[FilterOperator]
    FILTER_OPERATOR_LT: _ClassVar[FilterOperator]
    FILTER_OPERATOR_LTE: _ClassVar[FilterOperator]
    FILTER_OPERATOR_EXISTS: _ClassVar[FilterOperator]
    FILTER_OPERATOR_NOT_EXISTS: _ClassVar[FilterOperator]

class BillingInterval(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BILLING_INTERVAL_UNSPECIFIED: _ClassVar[BillingInterval]
    BILLING_INTERVAL_DAY: _ClassVar[BillingInterval]
    BILLING_INTERVAL_WEEK: _ClassVar[BillingInterval]
    BILLING_INTERVAL_MONTH: _ClassVar[BillingInterval]
    BILLING_INTERVAL_QUARTER: _ClassVar[BillingInterval]
    BILLING_INTERVAL_YEAR: _ClassVar[BillingInterval]

class FeeTiming(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEE_TIMING_UNSPECIFIED: _ClassVar[FeeTiming]
    FEE_TIMING_IN_ADVANCE: _ClassVar[FeeTiming]
    FEE_TIMING_IN_ARREARS: _ClassVar[FeeTiming]

class PricingModel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRICING_MODEL_UNSPECIFIED: _ClassVar[PricingModel]
    PRICING_MODEL_PER_UNIT: _ClassVar[PricingModel]
    PRICING_MODEL_PACKAGE: _ClassVar[PricingModel]
    PRICING_MODEL_GRADUATED: _ClassVar[PricingModel]
    PRICING_MODEL_VOLUME: _ClassVar[PricingModel]

class BillingAnchor(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BILLING_ANCHOR_UNSPECIFIED: _ClassVar[BillingAnchor]
    BILLING_ANCHOR_CALENDAR: _ClassVar[BillingAnchor]
    BILLING_ANCHOR_ANNIVERSARY: _ClassVar[BillingAnchor]

class SubscriptionStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SUBSCRIPTION_STATUS_UNSPECIFIED: _ClassVar[SubscriptionStatus]
    SUBSCRIPTION_STATUS_ACTIVE: _ClassVar[SubscriptionStatus]
    SUBSCRIPTION_STATUS_CANCELED: _ClassVar[SubscriptionStatus]
    SUBSCRIPTION_STATUS_ENDED: _ClassVar[SubscriptionStatus]

class ApplyAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    APPLY_ACTION_UNSPECIFIED: _ClassVar[ApplyAction]
    APPLY_ACTION_UNCHANGED: _ClassVar[ApplyAction]
    APPLY_ACTION_CREATED: _ClassVar[ApplyAction]
    APPLY_ACTION_UPDATED: _ClassVar[ApplyAction]
    APPLY_ACTION_VERSION_PUBLISHED: _ClassVar[ApplyAction]
AGGREGATION_UNSPECIFIED: Aggregation
AGGREGATION_COUNT: Aggregation
AGGREGATION_SUM: Aggregation
AGGREGATION_MAX: Aggregation
AGGREGATION_MIN: Aggregation
AGGREGATION_COUNT_UNIQUE: Aggregation
AGGREGATION_LATEST: Aggregation
AGGREGATION_AVG: Aggregation
AGGREGATION_WEIGHTED_SUM: Aggregation
FILTER_OPERATOR_UNSPECIFIED: FilterOperator
FILTER_OPERATOR_EQ: FilterOperator
FILTER_OPERATOR_NEQ: FilterOperator
FILTER_OPERATOR_IN: FilterOperator
FILTER_OPERATOR_NOT_IN: FilterOperator
FILTER_OPERATOR_GT: FilterOperator
FILTER_OPERATOR_GTE: FilterOperator
FILTER_OPERATOR_LT: FilterOperator
FILTER_OPERATOR_LTE: FilterOperator
FILTER_OPERATOR_EXISTS: FilterOperator
FILTER_OPERATOR_NOT_EXISTS: FilterOperator
BILLING_INTERVAL_UNSPECIFIED: BillingInterval
BILLING_INTERVAL_DAY: BillingInterval
BILLING_INTERVAL_WEEK: BillingInterval
BILLING_INTERVAL_MONTH: BillingInterval
BILLING_INTERVAL_QUARTER: BillingInterval
BILLING_INTERVAL_YEAR: BillingInterval
FEE_TIMING_UNSPECIFIED: FeeTiming
FEE_TIMING_IN_ADVANCE: FeeTiming
FEE_TIMING_IN_ARREARS: FeeTiming
PRICING_MODEL_UNSPECIFIED: PricingModel
PRICING_MODEL_PER_UNIT: PricingModel
PRICING_MODEL_PACKAGE: PricingModel
PRICING_MODEL_GRADUATED: PricingModel
PRICING_MODEL_VOLUME: PricingModel
BILLING_ANCHOR_UNSPECIFIED: BillingAnchor
BILLING_ANCHOR_CALENDAR: BillingAnchor
BILLING_ANCHOR_ANNIVERSARY: BillingAnchor
SUBSCRIPTION_STATUS_UNSPECIFIED: SubscriptionStatus
SUBSCRIPTION_STATUS_ACTIVE: SubscriptionStatus
SUBSCRIPTION_STATUS_CANCELED: SubscriptionStatus
SUBSCRIPTION_STATUS_ENDED: SubscriptionStatus
APPLY_ACTION_UNSPECIFIED: ApplyAction
APPLY_ACTION_UNCHANGED: ApplyAction
APPLY_ACTION_CREATED: ApplyAction
APPLY_ACTION_UPDATED: ApplyAction
APPLY_ACTION_VERSION_PUBLISHED: ApplyAction

class MeterFilter(_message.Message):
    __slots__ = ("property", "operator", "values")
    PROPERTY_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    property: str
    operator: FilterOperator
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, property: _Optional[str] = ..., operator: _Optional[_Union[FilterOperator, str]] = ..., values: _Optional[_Iterable[str]] = ...) -> None: ...

class Meter(_message.Message):
    __slots__ = ("id", "key", "name", "unit", "event_type", "aggregation", "value_property", "filters", "group_by", "description", "archived", "locked", "create_time", "update_time", "allow_negative")
    ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    AGGREGATION_FIELD_NUMBER: _ClassVar[int]
    VALUE_PROPERTY_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ARCHIVED_FIELD_NUMBER: _ClassVar[int]
    LOCKED_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ALLOW_NEGATIVE_FIELD_NUMBER: _ClassVar[int]
    id: str
    key: str
    name: str
    unit: str
    event_type: str
    aggregation: Aggregation
    value_property: str
    filters: _containers.RepeatedCompositeFieldContainer[MeterFilter]
    group_by: _containers.RepeatedScalarFieldContainer[str]
    description: str
    archived: bool
    locked: bool
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    allow_negative: bool
    def __init__(self, id: _Optional[str] = ..., key: _Optional[str] = ..., name: _Optional[str] = ..., unit: _Optional[str] = ..., event_type: _Optional[str] = ..., aggregation: _Optional[_Union[Aggregation, str]] = ..., value_property: _Optional[str] = ..., filters: _Optional[_Iterable[_Union[MeterFilter, _Mapping]]] = ..., group_by: _Optional[_Iterable[str]] = ..., description: _Optional[str] = ..., archived: _Optional[bool] = ..., locked: _Optional[bool] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., allow_negative: _Optional[bool] = ...) -> None: ...

class CreateMeterRequest(_message.Message):
    __slots__ = ("meter",)
    METER_FIELD_NUMBER: _ClassVar[int]
    meter: Meter
    def __init__(self, meter: _Optional[_Union[Meter, _Mapping]] = ...) -> None: ...

class CreateMeterResponse(_message.Message):
    __slots__ = ("meter",)
    METER_FIELD_NUMBER: _ClassVar[int]
    meter: Meter
    def __init__(self, meter: _Optional[_Union[Meter, _Mapping]] = ...) -> None: ...

class GetMeterRequest(_message.Message):
    __slots__ = ("id", "key")
    ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    id: str
    key: str
    def __init__(self, id: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...

class GetMeterResponse(_message.Message):
    __slots__ = ("meter",)
    METER_FIELD_NUMBER: _ClassVar[int]
    meter: Meter
    def __init__(self, meter: _Optional[_Union[Meter, _Mapping]] = ...) -> None: ...

class ListMetersRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "event_type", "include_archived")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_ARCHIVED_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    event_type: str
    include_archived: bool
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., event_type: _Optional[str] = ..., include_archived: _Optional[bool] = ...) -> None: ...

class ListMetersResponse(_message.Message):
    __slots__ = ("meters", "next_page_token")
    METERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    meters: _containers.RepeatedCompositeFieldContainer[Meter]
    next_page_token: str
    def __init__(self, meters: _Optional[_Iterable[_Union[Meter, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateMeterRequest(_message.Message):
    __slots__ = ("meter", "update_mask")
    METER_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    meter: Meter
    update_mask: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, meter: _Optional[_Union[Meter, _Mapping]] = ..., update_mask: _Optional[_Iterable[str]] = ...) -> None: ...

class UpdateMeterResponse(_message.Message):
    __slots__ = ("meter",)
    METER_FIELD_NUMBER: _ClassVar[int]
    meter: Meter
    def __init__(self, meter: _Optional[_Union[Meter, _Mapping]] = ...) -> None: ...

class ArchiveMeterRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class ArchiveMeterResponse(_message.Message):
    __slots__ = ("meter",)
    METER_FIELD_NUMBER: _ClassVar[int]
    meter: Meter
    def __init__(self, meter: _Optional[_Union[Meter, _Mapping]] = ...) -> None: ...

class Product(_message.Message):
    __slots__ = ("id", "key", "name", "description", "archived", "create_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ARCHIVED_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    key: str
    name: str
    description: str
    archived: bool
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., key: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., archived: _Optional[bool] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateProductRequest(_message.Message):
    __slots__ = ("product",)
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    product: Product
    def __init__(self, product: _Optional[_Union[Product, _Mapping]] = ...) -> None: ...

class CreateProductResponse(_message.Message):
    __slots__ = ("product",)
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    product: Product
    def __init__(self, product: _Optional[_Union[Product, _Mapping]] = ...) -> None: ...

class GetProductRequest(_message.Message):
    __slots__ = ("id", "key")
    ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    id: str
    key: str
    def __init__(self, id: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...

class GetProductResponse(_message.Message):
    __slots__ = ("product",)
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    product: Product
    def __init__(self, product: _Optional[_Union[Product, _Mapping]] = ...) -> None: ...

class ListProductsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "include_archived")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_ARCHIVED_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    include_archived: bool
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., include_archived: _Optional[bool] = ...) -> None: ...

class ListProductsResponse(_message.Message):
    __slots__ = ("products", "next_page_token")
    PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    products: _containers.RepeatedCompositeFieldContainer[Product]
    next_page_token: str
    def __init__(self, products: _Optional[_Iterable[_Union[Product, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateProductRequest(_message.Message):
    __slots__ = ("product", "update_mask")
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    product: Product
    update_mask: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, product: _Optional[_Union[Product, _Mapping]] = ..., update_mask: _Optional[_Iterable[str]] = ...) -> None: ...

class UpdateProductResponse(_message.Message):
    __slots__ = ("product",)
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    product: Product
    def __init__(self, product: _Optional[_Union[Product, _Mapping]] = ...) -> None: ...

class ArchiveProductRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class ArchiveProductResponse(_message.Message):
    __slots__ = ("product",)
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    product: Product
    def __init__(self, product: _Optional[_Union[Product, _Mapping]] = ...) -> None: ...

class Tier(_message.Message):
    __slots__ = ("up_to", "unit_price", "flat_amount")
    UP_TO_FIELD_NUMBER: _ClassVar[int]
    UNIT_PRICE_FIELD_NUMBER: _ClassVar[int]
    FLAT_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    up_to: _common_pb2.Decimal
    unit_price: _common_pb2.Decimal
    flat_amount: _common_pb2.Decimal
    def __init__(self, up_to: _Optional[_Union[_common_pb2.Decimal, _Mapping]] = ..., unit_price: _Optional[_Union[_common_pb2.Decimal, _Mapping]] = ..., flat_amount: _Optional[_Union[_common_pb2.Decimal, _Mapping]] = ...) -> None: ...

class Price(_message.Message):
    __slots__ = ("model", "unit_price", "package_size", "package_price", "tiers", "charge_flat_amount_at_zero")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    UNIT_PRICE_FIELD_NUMBER: _ClassVar[int]
    PACKAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PACKAGE_PRICE_FIELD_NUMBER: _ClassVar[int]
    TIERS_FIELD_NUMBER: _ClassVar[int]
    CHARGE_FLAT_AMOUNT_AT_ZERO_FIELD_NUMBER: _ClassVar[int]
    model: PricingModel
    unit_price: _common_pb2.Decimal
    package_size: _common_pb2.Decimal
    package_price: _common_pb2.Decimal
    tiers: _containers.RepeatedCompositeFieldContainer[Tier]
    charge_flat_amount_at_zero: bool
    def __init__(self, model: _Optional[_Union[PricingModel, str]] = ..., unit_price: _Optional[_Union[_common_pb2.Decimal, _Mapping]] = ..., package_size: _Optional[_Union[_common_pb2.Decimal, _Mapping]] = ..., package_price: _Optional[_Union[_common_pb2.Decimal, _Mapping]] = ..., tiers: _Optional[_Iterable[_Union[Tier, _Mapping]]] = ..., charge_flat_amount_at_zero: _Optional[bool] = ...) -> None: ...

class DimensionPrice(_message.Message):
    __slots__ = ("match", "price")
    class MatchEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MATCH_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    match: _containers.ScalarMap[str, str]
    price: Price
    def __init__(self, match: _Optional[_Mapping[str, str]] = ..., price: _Optional[_Union[Price, _Mapping]] = ...) -> None: ...

class FixedFee(_message.Message):
    __slots__ = ("amount", "timing", "prorate")
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    PRORATE_FIELD_NUMBER: _ClassVar[int]
    amount: _common_pb2.Decimal
    timing: FeeTiming
    prorate: bool
    def __init__(self, amount: _Optional[_Union[_common_pb2.Decimal, _Mapping]] = ..., timing: _Optional[_Union[FeeTiming, str]] = ..., prorate: _Optional[bool] = ...) -> None: ...

class UsageCharge(_message.Message):
    __slots__ = ("meter_key", "price", "included_units", "minimum_amount", "maximum_amount", "dimension_prices", "price_points")
    METER_KEY_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    INCLUDED_UNITS_FIELD_NUMBER: _ClassVar[int]
    MINIMUM_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    MAXIMUM_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_PRICES_FIELD_NUMBER: _ClassVar[int]
    PRICE_POINTS_FIELD_NUMBER: _ClassVar[int]
    meter_key: str
    price: Price
    included_units: _common_pb2.Decimal
    minimum_amount: _common_pb2.Decimal
    maximum_amount: _common_pb2.Decimal
    dimension_prices: _containers.RepeatedCompositeFieldContainer[DimensionPrice]
    price_points: _containers.RepeatedCompositeFieldContainer[PricePoint]
    def __init__(self, meter_key: _Optional[str] = ..., price: _Optional[_Union[Price, _Mapping]] = ..., included_units: _Optional[_Union[_common_pb2.Decimal, _Mapping]] = ..., minimum_amount: _Optional[_Union[_common_pb2.Decimal, _Mapping]] = ..., maximum_amount: _Optional[_Union[_common_pb2.Decimal, _Mapping]] = ..., dimension_prices: _Optional[_Iterable[_Union[DimensionPrice, _Mapping]]] = ..., price_points: _Optional[_Iterable[_Union[PricePoint, _Mapping]]] = ...) -> None: ...

class PricePoint(_message.Message):
    __slots__ = ("key", "name", "price")
    KEY_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    key: str
    name: str
    price: Price
    def __init__(self, key: _Optional[str] = ..., name: _Optional[str] = ..., price: _Optional[_Union[Price, _Mapping]] = ...) -> None: ...

class PriceOverride(_message.Message):
    __slots__ = ("charge_key", "price", "included_units", "minimum_amount", "maximum_amount", "amount")
    CHARGE_KEY_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    INCLUDED_UNITS_FIELD_NUMBER: _ClassVar[int]
    MINIMUM_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    MAXIMUM_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    charge_key: str
    price: Price
    included_units: _common_pb2.Decimal
    minimum_amount: _common_pb2.Decimal
    maximum_amount: _common_pb2.Decimal
    amount: _common_pb2.Decimal
    def __init__(self, charge_key: _Optional[str] = ..., price: _Optional[_Union[Price, _Mapping]] = ..., included_units: _Optional[_Union[_common_pb2.Decimal, _Mapping]] = ..., minimum_amount: _Optional[_Union[_common_pb2.Decimal, _Mapping]] = ..., maximum_amount: _Optional[_Union[_common_pb2.Decimal, _Mapping]] = ..., amount: _Optional[_Union[_common_pb2.Decimal, _Mapping]] = ...) -> None: ...

class Charge(_message.Message):
    __slots__ = ("key", "name", "fixed", "usage")
    KEY_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    FIXED_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    key: str
    name: str
    fixed: FixedFee
    usage: UsageCharge
    def __init__(self, key: _Optional[str] = ..., name: _Optional[str] = ..., fixed: _Optional[_Union[FixedFee, _Mapping]] = ..., usage: _Optional[_Union[UsageCharge, _Mapping]] = ...) -> None: ...

class PlanVersion(_message.Message):
    __slots__ = ("id", "plan_id", "plan_key", "version", "name", "currency", "interval", "interval_count", "charges", "product_key", "description", "publish_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    PLAN_ID_FIELD_NUMBER: _ClassVar[int]
    PLAN_KEY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_COUNT_FIELD_NUMBER: _ClassVar[int]
    CHARGES_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_KEY_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    plan_id: str
    plan_key: str
    version: int
    name: str
    currency: str
    interval: BillingInterval
    interval_count: int
    charges: _containers.RepeatedCompositeFieldContainer[Charge]
    product_key: str
    description: str
    publish_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., plan_id: _Optional[str] = ..., plan_key: _Optional[str] = ..., version: _Optional[int] = ..., name: _Optional[str] = ..., currency: _Optional[str] = ..., interval: _Optional[_Union[BillingInterval, str]] = ..., interval_count: _Optional[int] = ..., charges: _Optional[_Iterable[_Union[Charge, _Mapping]]] = ..., product_key: _Optional[str] = ..., description: _Optional[str] = ..., publish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Plan(_message.Message):
    __slots__ = ("id", "key", "name", "archived", "latest_version", "create_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARCHIVED_FIELD_NUMBER: _ClassVar[int]
    LATEST_VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    key: str
    name: str
    archived: bool
    latest_version: PlanVersion
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., key: _Optional[str] = ..., name: _Optional[str] = ..., archived: _Optional[bool] = ..., latest_version: _Optional[_Union[PlanVersion, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PlanSpec(_message.Message):
    __slots__ = ("key", "name", "description", "product_key", "currency", "interval", "interval_count", "charges")
    KEY_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_KEY_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_COUNT_FIELD_NUMBER: _ClassVar[int]
    CHARGES_FIELD_NUMBER: _ClassVar[int]
    key: str
    name: str
    description: str
    product_key: str
    currency: str
    interval: BillingInterval
    interval_count: int
    charges: _containers.RepeatedCompositeFieldContainer[Charge]
    def __init__(self, key: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., product_key: _Optional[str] = ..., currency: _Optional[str] = ..., interval: _Optional[_Union[BillingInterval, str]] = ..., interval_count: _Optional[int] = ..., charges: _Optional[_Iterable[_Union[Charge, _Mapping]]] = ...) -> None: ...

class CreatePlanRequest(_message.Message):
    __slots__ = ("plan",)
    PLAN_FIELD_NUMBER: _ClassVar[int]
    plan: PlanSpec
    def __init__(self, plan: _Optional[_Union[PlanSpec, _Mapping]] = ...) -> None: ...

class CreatePlanResponse(_message.Message):
    __slots__ = ("plan",)
    PLAN_FIELD_NUMBER: _ClassVar[int]
    plan: Plan
    def __init__(self, plan: _Optional[_Union[Plan, _Mapping]] = ...) -> None: ...

class GetPlanRequest(_message.Message):
    __slots__ = ("id", "key")
    ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    id: str
    key: str
    def __init__(self, id: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...

class GetPlanResponse(_message.Message):
    __slots__ = ("plan",)
    PLAN_FIELD_NUMBER: _ClassVar[int]
    plan: Plan
    def __init__(self, plan: _Optional[_Union[Plan, _Mapping]] = ...) -> None: ...

class ListPlansRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "include_archived")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_ARCHIVED_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    include_archived: bool
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., include_archived: _Optional[bool] = ...) -> None: ...

class ListPlansResponse(_message.Message):
    __slots__ = ("plans", "next_page_token")
    PLANS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    plans: _containers.RepeatedCompositeFieldContainer[Plan]
    next_page_token: str
    def __init__(self, plans: _Optional[_Iterable[_Union[Plan, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class PublishPlanVersionRequest(_message.Message):
    __slots__ = ("plan",)
    PLAN_FIELD_NUMBER: _ClassVar[int]
    plan: PlanSpec
    def __init__(self, plan: _Optional[_Union[PlanSpec, _Mapping]] = ...) -> None: ...

class PublishPlanVersionResponse(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: PlanVersion
    def __init__(self, version: _Optional[_Union[PlanVersion, _Mapping]] = ...) -> None: ...

class GetPlanVersionRequest(_message.Message):
    __slots__ = ("id", "key")
    ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    id: str
    key: PlanVersionKey
    def __init__(self, id: _Optional[str] = ..., key: _Optional[_Union[PlanVersionKey, _Mapping]] = ...) -> None: ...

class PlanVersionKey(_message.Message):
    __slots__ = ("plan_key", "version")
    PLAN_KEY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    plan_key: str
    version: int
    def __init__(self, plan_key: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class GetPlanVersionResponse(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: PlanVersion
    def __init__(self, version: _Optional[_Union[PlanVersion, _Mapping]] = ...) -> None: ...

class ListPlanVersionsRequest(_message.Message):
    __slots__ = ("plan_key", "page_size", "page_token")
    PLAN_KEY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    plan_key: str
    page_size: int
    page_token: str
    def __init__(self, plan_key: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListPlanVersionsResponse(_message.Message):
    __slots__ = ("versions", "next_page_token")
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[PlanVersion]
    next_page_token: str
    def __init__(self, versions: _Optional[_Iterable[_Union[PlanVersion, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ArchivePlanRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class ArchivePlanResponse(_message.Message):
    __slots__ = ("plan",)
    PLAN_FIELD_NUMBER: _ClassVar[int]
    plan: Plan
    def __init__(self, plan: _Optional[_Union[Plan, _Mapping]] = ...) -> None: ...

class Customer(_message.Message):
    __slots__ = ("id", "external_id", "name", "email", "timezone", "currency", "metadata", "archived", "create_time", "update_time")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    TIMEZONE_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    ARCHIVED_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    external_id: str
    name: str
    email: str
    timezone: str
    currency: str
    metadata: _containers.ScalarMap[str, str]
    archived: bool
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., external_id: _Optional[str] = ..., name: _Optional[str] = ..., email: _Optional[str] = ..., timezone: _Optional[str] = ..., currency: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., archived: _Optional[bool] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateCustomerRequest(_message.Message):
    __slots__ = ("customer",)
    CUSTOMER_FIELD_NUMBER: _ClassVar[int]
    customer: Customer
    def __init__(self, customer: _Optional[_Union[Customer, _Mapping]] = ...) -> None: ...

class CreateCustomerResponse(_message.Message):
    __slots__ = ("customer",)
    CUSTOMER_FIELD_NUMBER: _ClassVar[int]
    customer: Customer
    def __init__(self, customer: _Optional[_Union[Customer, _Mapping]] = ...) -> None: ...

class GetCustomerRequest(_message.Message):
    __slots__ = ("customer",)
    CUSTOMER_FIELD_NUMBER: _ClassVar[int]
    customer: _common_pb2.CustomerRef
    def __init__(self, customer: _Optional[_Union[_common_pb2.CustomerRef, _Mapping]] = ...) -> None: ...

class GetCustomerResponse(_message.Message):
    __slots__ = ("customer",)
    CUSTOMER_FIELD_NUMBER: _ClassVar[int]
    customer: Customer
    def __init__(self, customer: _Optional[_Union[Customer, _Mapping]] = ...) -> None: ...

class ListCustomersRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "include_archived", "query")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_ARCHIVED_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    include_archived: bool
    query: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., include_archived: _Optional[bool] = ..., query: _Optional[str] = ...) -> None: ...

class ListCustomersResponse(_message.Message):
    __slots__ = ("customers", "next_page_token")
    CUSTOMERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    customers: _containers.RepeatedCompositeFieldContainer[Customer]
    next_page_token: str
    def __init__(self, customers: _Optional[_Iterable[_Union[Customer, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateCustomerRequest(_message.Message):
    __slots__ = ("customer", "update_mask")
    CUSTOMER_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    customer: Customer
    update_mask: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, customer: _Optional[_Union[Customer, _Mapping]] = ..., update_mask: _Optional[_Iterable[str]] = ...) -> None: ...

class UpdateCustomerResponse(_message.Message):
    __slots__ = ("customer",)
    CUSTOMER_FIELD_NUMBER: _ClassVar[int]
    customer: Customer
    def __init__(self, customer: _Optional[_Union[Customer, _Mapping]] = ...) -> None: ...

class ArchiveCustomerRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ArchiveCustomerResponse(_message.Message):
    __slots__ = ("customer",)
    CUSTOMER_FIELD_NUMBER: _ClassVar[int]
    customer: Customer
    def __init__(self, customer: _Optional[_Union[Customer, _Mapping]] = ...) -> None: ...

class SubscriptionPhase(_message.Message):
    __slots__ = ("plan_version_id", "plan_key", "plan_version", "start_time", "end_time", "price_overrides")
    PLAN_VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    PLAN_KEY_FIELD_NUMBER: _ClassVar[int]
    PLAN_VERSION_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    PRICE_OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    plan_version_id: str
    plan_key: str
    plan_version: int
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    price_overrides: _containers.RepeatedCompositeFieldContainer[PriceOverride]
    def __init__(self, plan_version_id: _Optional[str] = ..., plan_key: _Optional[str] = ..., plan_version: _Optional[int] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., price_overrides: _Optional[_Iterable[_Union[PriceOverride, _Mapping]]] = ...) -> None: ...

class Subscription(_message.Message):
    __slots__ = ("id", "customer_id", "plan_version_id", "plan_key", "plan_version", "start_time", "anchor", "status", "cancel_at_period_end", "cancel_at", "canceled_time", "phases", "create_time", "metadata", "external_id", "price_overrides")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    PLAN_VERSION_ID_FIELD_NUMBER: _ClassVar[int]
    PLAN_KEY_FIELD_NUMBER: _ClassVar[int]
    PLAN_VERSION_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    ANCHOR_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CANCEL_AT_PERIOD_END_FIELD_NUMBER: _ClassVar[int]
    CANCEL_AT_FIELD_NUMBER: _ClassVar[int]
    CANCELED_TIME_FIELD_NUMBER: _ClassVar[int]
    PHASES_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    PRICE_OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    id: str
    customer_id: str
    plan_version_id: str
    plan_key: str
    plan_version: int
    start_time: _timestamp_pb2.Timestamp
    anchor: BillingAnchor
    status: SubscriptionStatus
    cancel_at_period_end: bool
    cancel_at: _timestamp_pb2.Timestamp
    canceled_time: _timestamp_pb2.Timestamp
    phases: _containers.RepeatedCompositeFieldContainer[SubscriptionPhase]
    create_time: _timestamp_pb2.Timestamp
    metadata: _containers.ScalarMap[str, str]
    external_id: str
    price_overrides: _containers.RepeatedCompositeFieldContainer[PriceOverride]
    def __init__(self, id: _Optional[str] = ..., customer_id: _Optional[str] = ..., plan_version_id: _Optional[str] = ..., plan_key: _Optional[str] = ..., plan_version: _Optional[int] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., anchor: _Optional[_Union[BillingAnchor, str]] = ..., status: _Optional[_Union[SubscriptionStatus, str]] = ..., cancel_at_period_end: _Optional[bool] = ..., cancel_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., canceled_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., phases: _Optional[_Iterable[_Union[SubscriptionPhase, _Mapping]]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., external_id: _Optional[str] = ..., price_overrides: _Optional[_Iterable[_Union[PriceOverride, _Mapping]]] = ...) -> None: ...

class CreateSubscriptionRequest(_message.Message):
    __slots__ = ("customer", "plan_key", "plan_version", "start_time", "anchor", "metadata", "external_id", "price_overrides")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CUSTOMER_FIELD_NUMBER: _ClassVar[int]
    PLAN_KEY_FIELD_NUMBER: _ClassVar[int]
    PLAN_VERSION_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    ANCHOR_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    PRICE_OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    customer: _common_pb2.CustomerRef
    plan_key: str
    plan_version: int
    start_time: _timestamp_pb2.Timestamp
    anchor: BillingAnchor
    metadata: _containers.ScalarMap[str, str]
    external_id: str
    price_overrides: _containers.RepeatedCompositeFieldContainer[PriceOverride]
    def __init__(self, customer: _Optional[_Union[_common_pb2.CustomerRef, _Mapping]] = ..., plan_key: _Optional[str] = ..., plan_version: _Optional[int] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., anchor: _Optional[_Union[BillingAnchor, str]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., external_id: _Optional[str] = ..., price_overrides: _Optional[_Iterable[_Union[PriceOverride, _Mapping]]] = ...) -> None: ...

class CreateSubscriptionResponse(_message.Message):
    __slots__ = ("subscription",)
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    subscription: Subscription
    def __init__(self, subscription: _Optional[_Union[Subscription, _Mapping]] = ...) -> None: ...

class GetSubscriptionRequest(_message.Message):
    __slots__ = ("id", "subscription")
    ID_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    id: str
    subscription: _common_pb2.SubscriptionRef
    def __init__(self, id: _Optional[str] = ..., subscription: _Optional[_Union[_common_pb2.SubscriptionRef, _Mapping]] = ...) -> None: ...

class GetSubscriptionResponse(_message.Message):
    __slots__ = ("subscription",)
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    subscription: Subscription
    def __init__(self, subscription: _Optional[_Union[Subscription, _Mapping]] = ...) -> None: ...

class ListSubscriptionsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "customer_id", "plan_key", "status", "customer")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    PLAN_KEY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    customer_id: str
    plan_key: str
    status: SubscriptionStatus
    customer: _common_pb2.CustomerRef
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., customer_id: _Optional[str] = ..., plan_key: _Optional[str] = ..., status: _Optional[_Union[SubscriptionStatus, str]] = ..., customer: _Optional[_Union[_common_pb2.CustomerRef, _Mapping]] = ...) -> None: ...

class ListSubscriptionsResponse(_message.Message):
    __slots__ = ("subscriptions", "next_page_token", "quarantined_ids")
    SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    QUARANTINED_IDS_FIELD_NUMBER: _ClassVar[int]
    subscriptions: _containers.RepeatedCompositeFieldContainer[Subscription]
    next_page_token: str
    quarantined_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, subscriptions: _Optional[_Iterable[_Union[Subscription, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., quarantined_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class CancelSubscriptionRequest(_message.Message):
    __slots__ = ("id", "subscription", "at_period_end", "at")
    ID_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    AT_PERIOD_END_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    subscription: _common_pb2.SubscriptionRef
    at_period_end: bool
    at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., subscription: _Optional[_Union[_common_pb2.SubscriptionRef, _Mapping]] = ..., at_period_end: _Optional[bool] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CancelSubscriptionResponse(_message.Message):
    __slots__ = ("subscription",)
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    subscription: Subscription
    def __init__(self, subscription: _Optional[_Union[Subscription, _Mapping]] = ...) -> None: ...

class ChangeSubscriptionPlanRequest(_message.Message):
    __slots__ = ("id", "subscription", "plan_key", "plan_version", "effective_time", "price_overrides")
    ID_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PLAN_KEY_FIELD_NUMBER: _ClassVar[int]
    PLAN_VERSION_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_TIME_FIELD_NUMBER: _ClassVar[int]
    PRICE_OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    id: str
    subscription: _common_pb2.SubscriptionRef
    plan_key: str
    plan_version: int
    effective_time: _timestamp_pb2.Timestamp
    price_overrides: _containers.RepeatedCompositeFieldContainer[PriceOverride]
    def __init__(self, id: _Optional[str] = ..., subscription: _Optional[_Union[_common_pb2.SubscriptionRef, _Mapping]] = ..., plan_key: _Optional[str] = ..., plan_version: _Optional[int] = ..., effective_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., price_overrides: _Optional[_Iterable[_Union[PriceOverride, _Mapping]]] = ...) -> None: ...

class ChangeSubscriptionPlanResponse(_message.Message):
    __slots__ = ("subscription",)
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    subscription: Subscription
    def __init__(self, subscription: _Optional[_Union[Subscription, _Mapping]] = ...) -> None: ...

class ApplyCatalogRequest(_message.Message):
    __slots__ = ("products", "meters", "plans", "dry_run")
    PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    METERS_FIELD_NUMBER: _ClassVar[int]
    PLANS_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    products: _containers.RepeatedCompositeFieldContainer[Product]
    meters: _containers.RepeatedCompositeFieldContainer[Meter]
    plans: _containers.RepeatedCompositeFieldContainer[PlanSpec]
    dry_run: bool
    def __init__(self, products: _Optional[_Iterable[_Union[Product, _Mapping]]] = ..., meters: _Optional[_Iterable[_Union[Meter, _Mapping]]] = ..., plans: _Optional[_Iterable[_Union[PlanSpec, _Mapping]]] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class ApplyResult(_message.Message):
    __slots__ = ("kind", "key", "action", "version")
    KIND_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    kind: str
    key: str
    action: ApplyAction
    version: int
    def __init__(self, kind: _Optional[str] = ..., key: _Optional[str] = ..., action: _Optional[_Union[ApplyAction, str]] = ..., version: _Optional[int] = ...) -> None: ...

class ApplyCatalogResponse(_message.Message):
    __slots__ = ("results", "revision")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ApplyResult]
    revision: int
    def __init__(self, results: _Optional[_Iterable[_Union[ApplyResult, _Mapping]]] = ..., revision: _Optional[int] = ...) -> None: ...

class GetCatalogRevisionRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetCatalogRevisionResponse(_message.Message):
    __slots__ = ("revision",)
    REVISION_FIELD_NUMBER: _ClassVar[int]
    revision: int
    def __init__(self, revision: _Optional[int] = ...) -> None: ...

class WatchCatalogRequest(_message.Message):
    __slots__ = ("after_revision",)
    AFTER_REVISION_FIELD_NUMBER: _ClassVar[int]
    after_revision: int
    def __init__(self, after_revision: _Optional[int] = ...) -> None: ...

class WatchCatalogResponse(_message.Message):
    __slots__ = ("revision", "meter", "customer", "plan_version", "subscription", "product", "plan", "quarantined")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    METER_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_FIELD_NUMBER: _ClassVar[int]
    PLAN_VERSION_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    QUARANTINED_FIELD_NUMBER: _ClassVar[int]
    revision: int
    meter: Meter
    customer: Customer
    plan_version: PlanVersion
    subscription: Subscription
    product: Product
    plan: Plan
    quarantined: _common_pb2.QuarantinedRecord
    def __init__(self, revision: _Optional[int] = ..., meter: _Optional[_Union[Meter, _Mapping]] = ..., customer: _Optional[_Union[Customer, _Mapping]] = ..., plan_version: _Optional[_Union[PlanVersion, _Mapping]] = ..., subscription: _Optional[_Union[Subscription, _Mapping]] = ..., product: _Optional[_Union[Product, _Mapping]] = ..., plan: _Optional[_Union[Plan, _Mapping]] = ..., quarantined: _Optional[_Union[_common_pb2.QuarantinedRecord, _Mapping]] = ...) -> None: ...

class GetCatalogStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetCatalogStatusResponse(_message.Message):
    __slots__ = ("revision", "quarantined", "quarantined_count")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    QUARANTINED_FIELD_NUMBER: _ClassVar[int]
    QUARANTINED_COUNT_FIELD_NUMBER: _ClassVar[int]
    revision: int
    quarantined: _containers.RepeatedCompositeFieldContainer[_common_pb2.QuarantinedRecord]
    quarantined_count: int
    def __init__(self, revision: _Optional[int] = ..., quarantined: _Optional[_Iterable[_Union[_common_pb2.QuarantinedRecord, _Mapping]]] = ..., quarantined_count: _Optional[int] = ...) -> None: ...
