"""A table of malformed requests across the four services, sent to the real processes.

Each case expects its specific status code and, for INVALID_ARGUMENT, the field violations
that name the offending field. Cases that could store something check afterwards that
nothing was stored, and every service must still answer health checks at the end. Requests
that no generated class would build (invalid UTF-8, out-of-range timestamps, unknown enum
numbers, nesting past the parser's limit) are written as raw wire bytes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import grpc
import pytest
from google.protobuf import struct_pb2, timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tally.channels import MAX_MESSAGE_BYTES, connect
from tally.grpc_errors import field_violations
from tally_gen.catalog.v1 import catalog_pb2
from tally_gen.common.v1 import common_pb2
from tally_gen.ingest.v1 import ingest_pb2
from tally_gen.invoice.v1 import invoice_pb2
from tally_gen.meter.v1 import meter_pb2
from tests.harness import unique
from tests.meter.helpers import Stubs
from tests.security.wire import field_bytes, field_varint, nested_struct, timestamp

pytestmark = pytest.mark.e2e

UTC = timezone.utc
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
SERVICES = {
    "catalog": "tally.catalog.v1.CatalogService",
    "ingest": "tally.ingest.v1.IngestService",
    "meter": "tally.meter.v1.MeterService",
    "invoice": "tally.invoice.v1.InvoiceService",
}
SQL_INJECTION = "x'); DROP TABLE ingest.events; --"
JSON_INJECTION = '{"$gt": ""}", "customer": {"id": "other"}'


@dataclass
class World:
    """Valid things the malformed requests refer to, made once per module."""

    customer_id: str
    event_type: str
    meter_key: str
    # Keys a bad request might have stored if it were partially applied.
    keys: dict[str, str] = field(default_factory=dict)

    def key(self, name: str) -> str:
        return self.keys.setdefault(name, unique(name))


def ts(instant: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(instant)
    return out


def recent() -> datetime:
    return datetime.now(UTC) - timedelta(hours=1)


def event(world: World, key: str, **overrides) -> ingest_pb2.Event:
    base = dict(
        idempotency_key=key,
        event_type=world.event_type,
        customer=common_pb2.CustomerRef(id=world.customer_id),
        timestamp=ts(recent()),
    )
    base.update(overrides)
    return ingest_pb2.Event(**base)


def props(**values) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    for name, value in values.items():
        out.fields[name].number_value = value
    return out


def send_event(world: World, name: str, **overrides) -> bytes:
    return ingest_pb2.SendEventRequest(event=event(world, world.key(name), **overrides)).SerializeToString()


def raw_event(world: World, name: str, extra: bytes) -> bytes:
    """A valid SendEventRequest whose Event gets ``extra`` raw fields appended."""
    inner = event(world, world.key(name)).SerializeToString() + extra
    return field_bytes(1, inner)


def batch(world: World, name: str, *events: ingest_pb2.Event, mode=ingest_pb2.BATCH_MODE_ATOMIC) -> bytes:
    return ingest_pb2.SendEventBatchRequest(events=list(events), mode=mode).SerializeToString()


def dec(value: str) -> common_pb2.Decimal:
    return common_pb2.Decimal(value=value)


def usage(world: World, name: str, **overrides) -> bytes:
    base = dict(
        idempotency_key=world.key(name),
        customer=common_pb2.CustomerRef(id=world.customer_id),
        meter_key=world.meter_key,
        quantity=dec("1"),
        timestamp=ts(recent()),
    )
    base.update(overrides)
    return ingest_pb2.RecordUsageRequest(**base).SerializeToString()


def meter_spec(world: World, name: str, **overrides) -> catalog_pb2.Meter:
    base = dict(
        key=world.key(name),
        name="Corpus meter",
        unit="units",
        event_type=unique("corpus_evt"),
        aggregation=catalog_pb2.AGGREGATION_SUM,
        value_property="qty",
    )
    base.update(overrides)
    return catalog_pb2.Meter(**base)


def create_meter(world: World, name: str, **overrides) -> bytes:
    return catalog_pb2.CreateMeterRequest(meter=meter_spec(world, name, **overrides)).SerializeToString()


def create_customer(world: World, name: str, **overrides) -> bytes:
    base = dict(external_id=world.key(name), name="Corpus", timezone="UTC", currency="USD")
    base.update(overrides)
    return catalog_pb2.CreateCustomerRequest(customer=catalog_pb2.Customer(**base)).SerializeToString()


def plan(world: World, name: str, price: catalog_pb2.Price | None = None, **overrides) -> bytes:
    price = price or catalog_pb2.Price(model=catalog_pb2.PRICING_MODEL_PER_UNIT, unit_price=dec("0.05"))
    base = dict(
        key=world.key(name),
        name="Corpus plan",
        currency="USD",
        interval=catalog_pb2.BILLING_INTERVAL_MONTH,
        interval_count=1,
        charges=[catalog_pb2.Charge(key="usage", name="Usage", usage=catalog_pb2.UsageCharge(meter_key=world.meter_key, price=price))],
    )
    base.update(overrides)
    return catalog_pb2.CreatePlanRequest(plan=catalog_pb2.PlanSpec(**base)).SerializeToString()


def tiers(*bounds: tuple[str | None, str]) -> catalog_pb2.Price:
    return catalog_pb2.Price(
        model=catalog_pb2.PRICING_MODEL_GRADUATED,
        tiers=[catalog_pb2.Tier(up_to=dec(up) if up else None, unit_price=dec(price)) for up, price in bounds],
    )


def get_usage(world: World, **overrides) -> bytes:
    base = dict(
        customer=common_pb2.CustomerRef(id=world.customer_id),
        meter_key=world.meter_key,
        start=ts(recent() - timedelta(hours=1)),
        end=ts(recent()),
    )
    base.update(overrides)
    return meter_pb2.GetUsageRequest(**base).SerializeToString()


def series(world: World, **overrides) -> bytes:
    base = dict(
        customer=common_pb2.CustomerRef(id=world.customer_id),
        meter_key=world.meter_key,
        start=ts(recent() - timedelta(days=1)),
        end=ts(recent()),
        granularity=meter_pb2.GRANULARITY_HOUR,
    )
    base.update(overrides)
    return meter_pb2.UsageSeriesRequest(**base).SerializeToString()


def threshold(world: World, **level) -> bytes:
    return meter_pb2.CreateThresholdRequest(
        threshold=meter_pb2.Threshold(meter_key=world.meter_key, customer_id=world.customer_id, name="corpus", **level)
    ).SerializeToString()


TAMPERED = "eyJrIjoibWV0ZXJzIiwicyI6eyJhZnRlciI6InoifX0.Zm9yZ2Vk"


@dataclass(frozen=True)
class Case:
    id: str
    service: str
    method: str
    build: Callable[[World], bytes]
    code: grpc.StatusCode
    # Every one of these must be named by a field violation.
    fields: tuple[str, ...] = ()
    # Requests that must answer NOT_FOUND afterwards: nothing was stored.
    absent: Callable[[World], list[tuple[str, str, bytes]]] | None = None
    stream: bool = False
    # A known defect in the service under test: the case is an expected failure until fixed.
    bug: str | None = None

    def param(self):
        marks = [pytest.mark.xfail(reason=self.bug, strict=True)] if self.bug else []
        return pytest.param(self, id=self.id, marks=marks)


def event_absent(*names: str):
    return lambda w: [
        ("ingest", "GetEvent", ingest_pb2.GetEventRequest(idempotency_key=w.key(n)).SerializeToString()) for n in names
    ]


def meter_absent(name: str):
    return lambda w: [("catalog", "GetMeter", catalog_pb2.GetMeterRequest(key=w.key(name)).SerializeToString())]


def plan_absent(name: str):
    return lambda w: [("catalog", "GetPlan", catalog_pb2.GetPlanRequest(key=w.key(name)).SerializeToString())]


def customer_absent(name: str):
    return lambda w: [
        ("catalog", "GetCustomer",
         catalog_pb2.GetCustomerRequest(customer=common_pb2.CustomerRef(external_id=w.key(name))).SerializeToString())
    ]


NAN, INF = math.nan, math.inf
FAR_FUTURE = datetime(2999, 1, 1, tzinfo=UTC)
LONG_AGO = datetime(2001, 1, 1, tzinfo=UTC)

CASES = [
    # ---------------------------------------------------------------- ingest: events
    Case("event_without_type", "ingest", "SendEvent", lambda w: send_event(w, "e1", event_type=""), INVALID,
         ("event.event_type",), event_absent("e1")),
    Case("event_without_customer", "ingest", "SendEvent", lambda w: send_event(w, "e2", customer=None), INVALID,
         ("event.customer",), event_absent("e2")),
    Case("event_in_year_2999", "ingest", "SendEvent", lambda w: send_event(w, "e3", timestamp=ts(FAR_FUTURE)), INVALID,
         ("event.timestamp",), event_absent("e3")),
    Case("event_older_than_the_late_window", "ingest", "SendEvent",
         lambda w: send_event(w, "e4", timestamp=ts(LONG_AGO)), INVALID, ("event.timestamp",), event_absent("e4")),
    Case("event_timestamp_before_year_1", "ingest", "SendEvent",
         lambda w: raw_event(w, "e5", field_bytes(4, timestamp(-70_000_000_000))), INVALID, ("event.timestamp",),
         event_absent("e5")),
    Case("event_timestamp_past_year_9999", "ingest", "SendEvent",
         lambda w: raw_event(w, "e6", field_bytes(4, timestamp(2**62))), INVALID, ("event.timestamp",),
         event_absent("e6")),
    Case("event_timestamp_with_nanos_out_of_range", "ingest", "SendEvent",
         lambda w: raw_event(w, "e7", field_bytes(4, timestamp(int(recent().timestamp()), 2_000_000_000))), INVALID,
         ("event.timestamp",), event_absent("e7")),
    Case("event_with_nan_property", "ingest", "SendEvent", lambda w: send_event(w, "e8", properties=props(qty=NAN)),
         INVALID, ("event.properties.qty",), event_absent("e8")),
    Case("event_with_infinite_property", "ingest", "SendEvent",
         lambda w: send_event(w, "e9", properties=props(qty=INF, neg=-INF)), INVALID,
         ("event.properties.qty", "event.properties.neg"), event_absent("e9")),
    Case("event_with_properties_over_8kb", "ingest", "SendEvent",
         lambda w: send_event(w, "e10", properties=struct_pb2.Struct(fields={"blob": struct_pb2.Value(string_value="x" * 9000)})),
         INVALID, ("event.properties",), event_absent("e10")),
    Case("event_with_properties_nested_ten_deep", "ingest", "SendEvent",
         lambda w: raw_event(w, "e11", field_bytes(5, nested_struct(10))), INVALID, ("event.properties",),
         event_absent("e11")),
    Case("event_with_properties_nested_past_the_parser_limit", "ingest", "SendEvent",
         lambda w: raw_event(w, "e12", field_bytes(5, nested_struct(200))), INVALID, ("request",),
         event_absent("e12")),
    Case("event_with_a_300_character_key", "ingest", "SendEvent",
         lambda w: ingest_pb2.SendEventRequest(event=event(w, "k" * 300)).SerializeToString(), INVALID,
         ("event.idempotency_key",)),
    Case("event_with_a_blank_key", "ingest", "SendEvent",
         lambda w: ingest_pb2.SendEventRequest(event=event(w, "   ")).SerializeToString(), INVALID,
         ("event.idempotency_key",)),
    Case("event_with_a_one_megabyte_event_type", "ingest", "SendEvent",
         lambda w: send_event(w, "e13", event_type="t" * 1_000_000), INVALID, ("event.event_type",), event_absent("e13")),
    Case("event_key_with_invalid_utf8", "ingest", "SendEvent",
         lambda w: field_bytes(1, field_bytes(1, b"evt-\xff\xfe") + field_bytes(2, w.event_type.encode())), INVALID,
         ("request",)),
    Case("event_type_with_invalid_utf8", "ingest", "SendEvent",
         lambda w: raw_event(w, "e14", field_bytes(2, b"api_\xc3\x28")), INVALID, ("request",), event_absent("e14")),
    Case("truncated_event_bytes", "ingest", "SendEvent", lambda w: send_event(w, "e16")[:-3], INVALID, ("request",),
         event_absent("e16")),
    Case("atomic_batch_with_one_bad_event_stores_nothing", "ingest", "SendEventBatch",
         lambda w: batch(w, "b1", event(w, w.key("b1a")), event(w, w.key("b1b"), timestamp=ts(FAR_FUTURE)),
                         event(w, w.key("b1c"))),
         INVALID, ("events[1].timestamp",), event_absent("b1a", "b1c")),
    Case("atomic_batch_reports_every_bad_event", "ingest", "SendEventBatch",
         lambda w: batch(w, "b2", event(w, w.key("b2a"), event_type=""), event(w, w.key("b2b")),
                         event(w, w.key("b2c"), customer=None)),
         INVALID, ("events[0].event_type", "events[2].customer"), event_absent("b2b")),
    Case("batch_of_1001_events", "ingest", "SendEventBatch",
         lambda w: batch(w, "b3", *[event(w, f"{w.key('b3')}-{i}") for i in range(1001)]), INVALID, ("events",),
         lambda w: [("ingest", "GetEvent", ingest_pb2.GetEventRequest(idempotency_key=f"{w.key('b3')}-0").SerializeToString())]),
    Case("batch_with_unknown_mode_number", "ingest", "SendEventBatch",
         lambda w: batch(w, "b4", event(w, w.key("b4a"))) + field_varint(2, 7), INVALID, ("mode",), event_absent("b4a")),
    Case("same_key_twice_with_different_payloads_in_one_atomic_batch", "ingest", "SendEventBatch",
         lambda w: batch(w, "b5", event(w, w.key("b5"), properties=props(qty=1)), event(w, w.key("b5"), properties=props(qty=2))),
         grpc.StatusCode.ALREADY_EXISTS, ("events[1].idempotency_key",), event_absent("b5")),
    Case("stream_batch_of_1001_events", "ingest", "StreamEvents",
         lambda w: ingest_pb2.StreamEventsRequest(batch_id="s1", events=[event(w, f"{w.key('s1')}-{i}") for i in range(1001)]).SerializeToString(),
         INVALID, ("events",),
         lambda w: [("ingest", "GetEvent", ingest_pb2.GetEventRequest(idempotency_key=f"{w.key('s1')}-0").SerializeToString())],
         stream=True),
    Case("stream_message_with_invalid_utf8", "ingest", "StreamEvents",
         lambda w: field_bytes(1, b"batch-\xff"), INVALID, ("request",), stream=True),
    # ---------------------------------------------------------------- ingest: usage, voids, lookups, log
    Case("usage_with_negative_quantity", "ingest", "RecordUsage", lambda w: usage(w, "u1", quantity=dec("-5")), INVALID,
         ("quantity",)),
    Case("usage_with_nan_quantity", "ingest", "RecordUsage", lambda w: usage(w, "u2", quantity=dec("NaN")), INVALID,
         ("quantity",)),
    Case("usage_with_infinite_quantity", "ingest", "RecordUsage", lambda w: usage(w, "u3", quantity=dec("Infinity")),
         INVALID, ("quantity",)),
    Case("usage_with_a_comma_decimal", "ingest", "RecordUsage", lambda w: usage(w, "u4", quantity=dec("12,5")), INVALID,
         ("quantity",)),
    Case("usage_with_a_word_for_quantity", "ingest", "RecordUsage", lambda w: usage(w, "u11", quantity=dec("twelve")),
         INVALID, ("quantity",)),
    Case("usage_with_sql_in_the_quantity", "ingest", "RecordUsage", lambda w: usage(w, "u5", quantity=dec("1; DROP TABLE x")),
         INVALID, ("quantity",)),
    Case("usage_without_meter_key", "ingest", "RecordUsage", lambda w: usage(w, "u6", meter_key=""), INVALID, ("meter_key",)),
    Case("usage_without_customer", "ingest", "RecordUsage", lambda w: usage(w, "u7", customer=None), INVALID, ("customer",)),
    Case("usage_with_both_timestamp_and_range", "ingest", "RecordUsage",
         lambda w: usage(w, "u8", range=common_pb2.TimeRange(start=ts(recent() - timedelta(hours=1)), end=ts(recent()))),
         INVALID, ("range",)),
    Case("usage_with_a_range_ending_before_it_starts", "ingest", "RecordUsage",
         lambda w: usage(w, "u9", timestamp=None, range=common_pb2.TimeRange(start=ts(recent()), end=ts(recent() - timedelta(hours=1)))),
         INVALID, ("range.end",)),
    Case("usage_timestamp_past_year_9999", "ingest", "RecordUsage",
         lambda w: usage(w, "u10") + field_bytes(6, timestamp(2**40)), INVALID, ("timestamp",)),
    Case("void_without_key", "ingest", "VoidEvent", lambda w: ingest_pb2.VoidEventRequest(idempotency_key="").SerializeToString(),
         INVALID, ("idempotency_key",)),
    Case("void_of_an_unknown_event", "ingest", "VoidEvent",
         lambda w: ingest_pb2.VoidEventRequest(idempotency_key=unique("nope")).SerializeToString(), NOT_FOUND),
    Case("get_event_with_sql_in_the_key", "ingest", "GetEvent",
         lambda w: ingest_pb2.GetEventRequest(idempotency_key=SQL_INJECTION).SerializeToString(), NOT_FOUND),
    Case("read_log_with_a_tampered_cursor", "ingest", "ReadLog",
         lambda w: ingest_pb2.ReadLogRequest(cursor=TAMPERED).SerializeToString(), INVALID, ("cursor",)),
    Case("read_log_with_a_garbage_cursor", "ingest", "ReadLog",
         lambda w: ingest_pb2.ReadLogRequest(cursor="%%%not-base64").SerializeToString(), INVALID, ("cursor",)),
    Case("read_log_with_negative_wait", "ingest", "ReadLog",
         lambda w: ingest_pb2.ReadLogRequest(wait_millis=-100).SerializeToString(), INVALID, ("wait_millis",)),
    # ---------------------------------------------------------------- catalog
    Case("meter_without_key", "catalog", "CreateMeter", lambda w: create_meter(w, "m0", key=""), INVALID, ("meter.key",)),
    Case("meter_key_with_sql", "catalog", "CreateMeter", lambda w: create_meter(w, "m1", key=SQL_INJECTION), INVALID,
         ("meter.key",)),
    Case("meter_key_of_a_megabyte", "catalog", "CreateMeter", lambda w: create_meter(w, "m2", key="m" * 1_000_000), INVALID,
         ("meter.key",)),
    Case("meter_with_unknown_aggregation_number", "catalog", "CreateMeter",
         lambda w: field_bytes(1, meter_spec(w, "m3").SerializeToString() + field_varint(6, 99)), INVALID,
         ("meter.aggregation",), meter_absent("m3")),
    Case("meter_sum_without_value_property", "catalog", "CreateMeter",
         lambda w: create_meter(w, "m4", value_property=""), INVALID, ("meter.value_property",), meter_absent("m4")),
    Case("meter_without_event_type", "catalog", "CreateMeter", lambda w: create_meter(w, "m5", event_type=""), INVALID,
         ("meter.event_type",), meter_absent("m5")),
    Case("meter_filter_with_unknown_operator_number", "catalog", "CreateMeter",
         lambda w: field_bytes(1, meter_spec(w, "m6").SerializeToString()
                               + field_bytes(8, field_bytes(1, b"region") + field_varint(2, 42) + field_bytes(3, b"eu"))),
         INVALID, ("meter.filters[0].operator",), meter_absent("m6")),
    Case("meter_value_property_with_json_injection", "catalog", "CreateMeter",
         lambda w: create_meter(w, "m7", value_property=JSON_INJECTION), INVALID, ("meter.value_property",),
         meter_absent("m7")),
    Case("meter_key_with_invalid_utf8", "catalog", "CreateMeter",
         lambda w: field_bytes(1, meter_spec(w, "m8").SerializeToString() + field_bytes(2, b"key-\xed\xa0\x80")), INVALID,
         ("request",), meter_absent("m8")),
    Case("customer_with_unknown_timezone", "catalog", "CreateCustomer",
         lambda w: create_customer(w, "c1", timezone="Mars/Olympus_Mons"), INVALID, ("customer.timezone",),
         customer_absent("c1")),
    Case("customer_with_unknown_currency", "catalog", "CreateCustomer",
         lambda w: create_customer(w, "c2", currency="DOGE"), INVALID, ("customer.currency",), customer_absent("c2")),
    Case("customer_with_invalid_email", "catalog", "CreateCustomer",
         lambda w: create_customer(w, "c3", email="not-an-email"), INVALID, ("customer.email",), customer_absent("c3")),
    Case("customer_external_id_of_300_characters", "catalog", "CreateCustomer",
         lambda w: create_customer(w, "c4", external_id="x" * 300), INVALID, ("customer.external_id",)),
    Case("plan_with_negative_unit_price", "catalog", "CreatePlan",
         lambda w: plan(w, "p1", catalog_pb2.Price(model=catalog_pb2.PRICING_MODEL_PER_UNIT, unit_price=dec("-0.05"))),
         INVALID, ("plan.charges[0].usage.price.unit_price",), plan_absent("p1")),
    Case("plan_with_nan_unit_price", "catalog", "CreatePlan",
         lambda w: plan(w, "p2", catalog_pb2.Price(model=catalog_pb2.PRICING_MODEL_PER_UNIT, unit_price=dec("NaN"))),
         INVALID, ("plan.charges[0].usage.price.unit_price",), plan_absent("p2")),
    Case("plan_with_tiers_out_of_order", "catalog", "CreatePlan",
         lambda w: plan(w, "p3", tiers(("1000", "0.10"), ("500", "0.08"), (None, "0.05"))), INVALID,
         ("plan.charges[0].usage.price.tiers[1].up_to",), plan_absent("p3")),
    Case("plan_with_unknown_interval_number", "catalog", "CreatePlan",
         lambda w: field_bytes(1, catalog_pb2.CreatePlanRequest.FromString(plan(w, "p4")).plan.SerializeToString() + field_varint(6, 12)),
         INVALID, ("plan.interval",), plan_absent("p4")),
    Case("plan_with_a_word_for_unit_price", "catalog", "CreatePlan",
         lambda w: plan(w, "p5", catalog_pb2.Price(model=catalog_pb2.PRICING_MODEL_PER_UNIT, unit_price=dec("five cents"))),
         INVALID, ("plan.charges[0].usage.price.unit_price",), plan_absent("p5")),
    Case("plan_with_unknown_pricing_model_number", "catalog", "CreatePlan",
         lambda w: plan(w, "p8", catalog_pb2.Price(model=42, unit_price=dec("1"))), INVALID,
         ("plan.charges[0].usage.price.model",), plan_absent("p8")),
    Case("meter_filter_comparing_with_a_word", "catalog", "CreateMeter",
         lambda w: create_meter(w, "m9", filters=[catalog_pb2.MeterFilter(property="duration", operator=catalog_pb2.FILTER_OPERATOR_GT, values=["long"])]),
         INVALID, ("meter.filters[0].values[0]",), meter_absent("m9")),
    Case("plan_with_negative_interval_count", "catalog", "CreatePlan",
         lambda w: field_bytes(1, catalog_pb2.CreatePlanRequest.FromString(plan(w, "p6")).plan.SerializeToString() + field_varint(7, -3)),
         INVALID, ("plan.interval_count",), plan_absent("p6")),
    Case("plan_charging_an_unknown_meter", "catalog", "CreatePlan",
         lambda w: catalog_pb2.CreatePlanRequest(plan=catalog_pb2.PlanSpec(
             key=w.key("p7"), name="x", currency="USD", interval=catalog_pb2.BILLING_INTERVAL_MONTH, interval_count=1,
             charges=[catalog_pb2.Charge(key="u", name="u", usage=catalog_pb2.UsageCharge(
                 meter_key=unique("ghost"), price=catalog_pb2.Price(model=catalog_pb2.PRICING_MODEL_PER_UNIT, unit_price=dec("1"))))],
         )).SerializeToString(),
         INVALID, ("plan.charges[0].usage.meter_key",), plan_absent("p7")),
    Case("subscription_without_plan", "catalog", "CreateSubscription",
         lambda w: catalog_pb2.CreateSubscriptionRequest(customer=common_pb2.CustomerRef(id=w.customer_id)).SerializeToString(),
         INVALID, ("plan_key",)),
    Case("subscription_with_unknown_anchor_number", "catalog", "CreateSubscription",
         lambda w: catalog_pb2.CreateSubscriptionRequest(customer=common_pb2.CustomerRef(id=w.customer_id), plan_key="x").SerializeToString()
         + field_varint(5, 77), INVALID, ("anchor",)),
    Case("list_meters_with_a_tampered_page_token", "catalog", "ListMeters",
         lambda w: catalog_pb2.ListMetersRequest(page_token=TAMPERED).SerializeToString(), INVALID, ("page_token",)),
    Case("list_customers_with_negative_page_size", "catalog", "ListCustomers",
         lambda w: catalog_pb2.ListCustomersRequest(page_size=-5).SerializeToString(), INVALID, ("page_size",)),
    Case("get_meter_naming_nothing", "catalog", "GetMeter", lambda w: catalog_pb2.GetMeterRequest().SerializeToString(),
         INVALID, ("ref",)),
    Case("get_customer_with_sql_external_id", "catalog", "GetCustomer",
         lambda w: catalog_pb2.GetCustomerRequest(customer=common_pb2.CustomerRef(external_id=SQL_INJECTION)).SerializeToString(),
         NOT_FOUND),
    # ---------------------------------------------------------------- meter
    Case("usage_query_ending_before_it_starts", "meter", "GetUsage",
         lambda w: get_usage(w, start=ts(recent()), end=ts(recent() - timedelta(hours=2))), INVALID, ("end",)),
    Case("usage_query_without_customer", "meter", "GetUsage", lambda w: get_usage(w, customer=None), INVALID, ("customer",)),
    Case("usage_query_without_meter", "meter", "GetUsage", lambda w: get_usage(w, meter_key=""), INVALID, ("meter_key",)),
    Case("usage_query_for_an_unknown_meter", "meter", "GetUsage", lambda w: get_usage(w, meter_key=unique("ghost")), NOT_FOUND),
    Case("usage_query_start_before_year_1", "meter", "GetUsage",
         lambda w: get_usage(w) + field_bytes(3, timestamp(-70_000_000_000)), INVALID, ("start",)),
    Case("usage_query_grouped_by_an_unknown_dimension", "meter", "GetUsage",
         lambda w: get_usage(w, group_by=["region"]), INVALID, ("group_by[0]",)),
    Case("series_with_unknown_granularity_number", "meter", "UsageSeries", lambda w: series(w) + field_varint(5, 9), INVALID,
         ("granularity",)),
    Case("series_with_unknown_time_zone", "meter", "UsageSeries", lambda w: series(w, time_zone="Europe/Atlantis"), INVALID,
         ("time_zone",)),
    Case("series_with_too_many_points", "meter", "UsageSeries",
         lambda w: series(w, start=ts(datetime(1990, 1, 1, tzinfo=UTC)), end=ts(datetime(2030, 1, 1, tzinfo=UTC))), INVALID,
         ("granularity",)),
    Case("threshold_with_negative_units", "meter", "CreateThreshold", lambda w: threshold(w, absolute_units=dec("-10")),
         INVALID, ("threshold.absolute_units",)),
    Case("threshold_with_nan_percent", "meter", "CreateThreshold", lambda w: threshold(w, percent_of_included=dec("NaN")),
         INVALID, ("threshold.percent_of_included",)),
    Case("list_alerts_with_a_tampered_page_token", "meter", "ListAlerts",
         lambda w: meter_pb2.ListAlertsRequest(page_token=TAMPERED).SerializeToString(), INVALID, ("page_token",)),
    Case("backfill_of_an_unknown_meter", "meter", "BackfillMeter",
         lambda w: meter_pb2.BackfillMeterRequest(meter_key=unique("ghost")).SerializeToString(), NOT_FOUND),
    # ---------------------------------------------------------------- invoice
    Case("close_periods_of_an_unknown_subscription", "invoice", "CloseDuePeriods",
         lambda w: invoice_pb2.CloseDuePeriodsRequest(subscription_ids=[unique("sub")]).SerializeToString(), NOT_FOUND),
    Case("close_periods_as_of_past_year_9999", "invoice", "CloseDuePeriods",
         lambda w: invoice_pb2.CloseDuePeriodsRequest(subscription_ids=[unique("sub")]).SerializeToString()
         + field_bytes(1, timestamp(2**40)), INVALID, ("as_of",)),
    Case("get_invoice_naming_nothing", "invoice", "GetInvoice", lambda w: invoice_pb2.GetInvoiceRequest().SerializeToString(),
         INVALID, ("ref",)),
    Case("get_invoice_with_sql_number", "invoice", "GetInvoice",
         lambda w: invoice_pb2.GetInvoiceRequest(number=SQL_INJECTION).SerializeToString(), NOT_FOUND),
    Case("list_invoices_with_a_tampered_page_token", "invoice", "ListInvoices",
         lambda w: invoice_pb2.ListInvoicesRequest(page_token=TAMPERED).SerializeToString(), INVALID, ("page_token",)),
    Case("list_invoices_with_unknown_status_number", "invoice", "ListInvoices",
         lambda w: invoice_pb2.ListInvoicesRequest().SerializeToString() + field_varint(5, 17), INVALID, ("status",)),
    Case("finalize_an_unknown_invoice", "invoice", "FinalizeInvoice",
         lambda w: invoice_pb2.FinalizeInvoiceRequest(id=unique("inv")).SerializeToString(), NOT_FOUND),
    Case("pay_an_unknown_invoice", "invoice", "MarkInvoicePaid",
         lambda w: invoice_pb2.MarkInvoicePaidRequest(id=unique("inv")).SerializeToString(), NOT_FOUND),
    Case("void_an_unknown_invoice", "invoice", "VoidInvoice",
         lambda w: invoice_pb2.VoidInvoiceRequest(id=unique("inv")).SerializeToString(), NOT_FOUND),
    Case("billing_periods_without_subscription", "invoice", "ListBillingPeriods",
         lambda w: invoice_pb2.ListBillingPeriodsRequest().SerializeToString(), INVALID, ("subscription_id",)),
    Case("render_pdf_without_id", "invoice", "RenderInvoicePdf",
         lambda w: invoice_pb2.RenderInvoicePdfRequest().SerializeToString(), INVALID, ("id",)),
]


@pytest.fixture(scope="module")
async def world(services):
    channels = [connect(services.address(s)) for s in ("catalog", "ingest", "meter")]
    stubs = Stubs(*channels)
    event_type = unique("corpus")
    meter_key = await stubs.create_meter(event_type, "SUM", "qty")
    customer_id = await stubs.create_customer()
    yield World(customer_id, event_type, meter_key)
    for channel in channels:
        await channel.close()


@pytest.fixture(scope="module")
async def raw_channels(services):
    # The server's own limits decide: this client would send anything up to 64 MB.
    opened = {
        name: grpc.aio.insecure_channel(
            services.address(name), options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
        )
        for name in SERVICES
    }
    yield opened
    for channel in opened.values():
        await channel.close()


async def call_raw(channels, service: str, method: str, payload: bytes, stream: bool = False):
    path = f"/{SERVICES[service]}/{method}"
    channel = channels[service]
    if stream:
        call = channel.stream_stream(path)(iter([payload]), timeout=30)
        return [reply async for reply in call]
    return await channel.unary_unary(path)(payload, timeout=30)


def test_the_corpus_has_at_least_sixty_cases_across_all_four_services():
    assert len(CASES) >= 60
    assert {c.service for c in CASES} == set(SERVICES)
    assert len({c.id for c in CASES}) == len(CASES)


class TestBadInputCorpus:
    @pytest.mark.parametrize("case", [c.param() for c in CASES])
    async def test_a_malformed_request_gets_its_specific_status_and_field(self, world, raw_channels, case):
        payload = case.build(world)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call_raw(raw_channels, case.service, case.method, payload, case.stream)
        error = caught.value
        named = {f for f, _ in field_violations(error)}
        assert (error.code(), sorted(set(case.fields) - named)) == (case.code, []), (
            f"{case.id}: got {error.code().name} {error.details()!r} with fields {sorted(named)}"
        )
        for service, method, lookup in case.absent(world) if case.absent else []:
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await call_raw(raw_channels, service, method, lookup)
            assert missing.value.code() == NOT_FOUND, f"{case.id} stored something: {method} found it"

    async def test_an_oversized_message_gets_resource_exhausted_from_every_service(self, raw_channels):
        writes = {"catalog": "CreateMeter", "ingest": "SendEventBatch", "meter": "GetUsage", "invoice": "CloseDuePeriods"}
        for service, method in writes.items():
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call_raw(raw_channels, service, method, b"\x0a" + b"\xff" * (MAX_MESSAGE_BYTES + 16))
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, service

    async def test_strings_that_look_like_injection_are_stored_verbatim_and_the_tables_survive(self, world, raw_channels):
        key = unique("inj") + SQL_INJECTION
        payload = ingest_pb2.SendEventRequest(
            event=event(world, key, event_type=world.event_type, properties=struct_pb2.Struct(
                fields={"note": struct_pb2.Value(string_value=JSON_INJECTION)}))
        ).SerializeToString()
        sent = ingest_pb2.SendEventResponse.FromString(await call_raw(raw_channels, "ingest", "SendEvent", payload))
        got = ingest_pb2.GetEventResponse.FromString(
            await call_raw(raw_channels, "ingest", "GetEvent", ingest_pb2.GetEventRequest(idempotency_key=key).SerializeToString())
        )
        assert got.event.event_id == sent.event_id
        assert got.event.idempotency_key == key
        assert got.event.properties.fields["note"].string_value == JSON_INJECTION

    async def test_every_service_still_answers_health_checks_and_real_work_after_the_corpus(self, world, raw_channels, services):
        for service, full_name in SERVICES.items():
            async with grpc.aio.insecure_channel(services.address(service)) as channel:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=full_name), timeout=5
                )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
        accepted = ingest_pb2.SendEventResponse.FromString(
            await call_raw(raw_channels, "ingest", "SendEvent", send_event(world, "after_corpus"))
        )
        assert accepted.event_id and not accepted.duplicate
