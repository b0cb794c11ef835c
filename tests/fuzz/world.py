"""Real objects for the fuzzer to aim at, and the canary that proves metering and billing still work.

The world (meters of every aggregation, a product, plans with per-unit, graduated and
package prices, customers, subscriptions, events, a threshold, a backfill, invoices) seeds
the fuzzer's pools, so plausible requests name things that exist. The canary has objects of
its own that the fuzzer is never given: after each batch of fuzz cases one new event is sent
to it (and resent with the same key), and it must be metered exactly once and priced on the
canary subscription's upcoming invoice.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import grpc
from google.protobuf import timestamp_pb2
from google.protobuf.json_format import MessageToDict
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tally.channels import MAX_MESSAGE_BYTES
from tally_gen.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from tally_gen.common.v1 import common_pb2
from tally_gen.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from tally_gen.invoice.v1 import invoice_pb2, invoice_pb2_grpc
from tally_gen.meter.v1 import meter_pb2, meter_pb2_grpc
from tests.fuzz.strategies import ENTITY_OF_MESSAGE, Pools

UTC = timezone.utc
SERVICES = ("catalog", "ingest", "meter", "invoice")
CANARY_TIMEOUT_SECONDS = 30.0


def ts(instant: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(instant)
    return out


def dec(value: str) -> common_pb2.Decimal:
    return common_pb2.Decimal(value=value)


def channel_options() -> list[tuple[str, object]]:
    # No retries: the fuzzer wants to see each call's own status.
    return [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.enable_retries", 0),
    ]


class Channels:
    """One synchronous channel per service."""

    def __init__(self, addresses: dict[str, str]) -> None:
        self.channels = {name: grpc.insecure_channel(addr, options=channel_options()) for name, addr in addresses.items()}
        self.catalog = catalog_pb2_grpc.CatalogServiceStub(self.channels["catalog"])
        self.ingest = ingest_pb2_grpc.IngestServiceStub(self.channels["ingest"])
        self.meter = meter_pb2_grpc.MeterServiceStub(self.channels["meter"])
        self.invoice = invoice_pb2_grpc.InvoiceServiceStub(self.channels["invoice"])

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()


def harvest(pools: Pools, message, depth: int = 0) -> None:
    """Add the identifiers a response carries to the pools (ids of created subscriptions, ...)."""
    if depth > 6:
        return
    entity = ENTITY_OF_MESSAGE.get(message.DESCRIPTOR.name)
    if depth > 0:
        pools.add_example(message)
    for fld, value in message.ListFields():
        if fld.message_type is not None:
            if fld.message_type.GetOptions().map_entry:
                continue
            items = value if fld.is_repeated else [value]
            for item in items[:50]:
                harvest(pools, item, depth + 1)
        elif fld.type == fld.TYPE_STRING and not fld.is_repeated:
            if entity and fld.name == "id":
                pools.add(f"{entity}_id", value)
            elif entity and fld.name == "key":
                pools.add(entity, value)
            elif entity and fld.name == "external_id":
                pools.add(f"{entity}_external", value)
            elif fld.name == "idempotency_key":
                pools.add("idempotency_key", value)
            elif fld.name == "number" and entity == "invoice":
                pools.add("invoice_number", value)
            elif fld.name == "event_type":
                pools.add("event_type", value)


def seed_world(ch: Channels, now: datetime) -> Pools:
    """Create one of everything the fuzzer can name, and return the pools of their identifiers."""
    pools = Pools(now=now)
    tag = uuid.uuid4().hex[:8]
    pools.refs["property"] = ["qty", "user", "region"]
    pools.refs["dimension"] = ["region"]
    evt_a, evt_b = f"fz_evt_a_{tag}", f"fz_evt_b_{tag}"
    for event_type in (evt_a, evt_b):
        pools.add("event_type", event_type)

    def meter(key, event_type, aggregation, value_property="", group_by=(), filters=()):
        reply = ch.catalog.CreateMeter(
            catalog_pb2.CreateMeterRequest(
                meter=catalog_pb2.Meter(
                    key=f"{key}_{tag}", name=key, unit="units", event_type=event_type,
                    aggregation=aggregation, value_property=value_property, group_by=list(group_by), filters=list(filters),
                )
            ),
            timeout=10,
        )
        harvest(pools, reply)
        return reply.meter.key

    m_sum = meter("fz_sum", evt_a, catalog_pb2.AGGREGATION_SUM, "qty", group_by=["region"])
    m_count = meter("fz_count", evt_a, catalog_pb2.AGGREGATION_COUNT)
    meter("fz_max", evt_a, catalog_pb2.AGGREGATION_MAX, "qty")
    meter("fz_unique", evt_b, catalog_pb2.AGGREGATION_COUNT_UNIQUE, "user")
    meter("fz_latest", evt_b, catalog_pb2.AGGREGATION_LATEST, "qty")
    meter("fz_wsum", evt_b, catalog_pb2.AGGREGATION_WEIGHTED_SUM, "qty")
    meter(
        "fz_filtered", evt_b, catalog_pb2.AGGREGATION_SUM, "qty",
        filters=[catalog_pb2.MeterFilter(property="qty", operator=catalog_pb2.FILTER_OPERATOR_GT, values=["0"])],
    )

    harvest(pools, ch.catalog.CreateProduct(
        catalog_pb2.CreateProductRequest(product=catalog_pb2.Product(key=f"fz_product_{tag}", name="Fuzz product")), timeout=10
    ))

    def plan(key, interval, charges):
        reply = ch.catalog.CreatePlan(
            catalog_pb2.CreatePlanRequest(
                plan=catalog_pb2.PlanSpec(
                    key=f"{key}_{tag}", name=key, currency="USD", interval=interval, interval_count=1,
                    product_key=f"fz_product_{tag}", charges=charges,
                )
            ),
            timeout=10,
        )
        harvest(pools, reply)
        return reply.plan.key

    per_unit = catalog_pb2.Price(model=catalog_pb2.PRICING_MODEL_PER_UNIT, unit_price=dec("0.05"))
    graduated = catalog_pb2.Price(
        model=catalog_pb2.PRICING_MODEL_GRADUATED,
        tiers=[catalog_pb2.Tier(up_to=dec("10"), unit_price=dec("1")), catalog_pb2.Tier(unit_price=dec("0.5"), flat_amount=dec("2"))],
    )
    package = catalog_pb2.Price(model=catalog_pb2.PRICING_MODEL_PACKAGE, package_size=dec("100"), package_price=dec("3"))
    fee = catalog_pb2.Charge(key="base", name="Base", fixed=catalog_pb2.FixedFee(amount=dec("10"), timing=catalog_pb2.FEE_TIMING_IN_ADVANCE))
    monthly = plan("fz_monthly", catalog_pb2.BILLING_INTERVAL_MONTH, [
        fee,
        catalog_pb2.Charge(key="sum", name="Sum", usage=catalog_pb2.UsageCharge(
            meter_key=m_sum, price=per_unit, included_units=dec("5"),
            dimension_prices=[catalog_pb2.DimensionPrice(match={"region": "eu"}, price=package)],
        )),
    ])
    daily = plan("fz_daily", catalog_pb2.BILLING_INTERVAL_DAY, [
        catalog_pb2.Charge(key="count", name="Count", usage=catalog_pb2.UsageCharge(meter_key=m_count, price=graduated)),
    ])

    customers = []
    for zone in ("UTC", "Europe/Paris", "Asia/Kathmandu"):
        reply = ch.catalog.CreateCustomer(
            catalog_pb2.CreateCustomerRequest(customer=catalog_pb2.Customer(
                external_id=f"fz_ext_{zone.replace('/', '_')}_{tag}", name=f"Fuzz {zone}", email="fuzz@example.com",
                timezone=zone, currency="USD", metadata={"team": "fuzz"},
            )),
            timeout=10,
        )
        harvest(pools, reply)
        customers.append(reply.customer.id)

    for customer, plan_key, start in ((customers[0], monthly, now - timedelta(days=40)), (customers[1], daily, now - timedelta(days=3)),
                                      (customers[2], monthly, now)):
        harvest(pools, ch.catalog.CreateSubscription(
            catalog_pb2.CreateSubscriptionRequest(customer=common_pb2.CustomerRef(id=customer), plan_key=plan_key, start_time=ts(start)),
            timeout=10,
        ))

    events = []
    for i in range(6):
        events.append(ingest_pb2.Event(
            idempotency_key=f"fz_seed_{tag}_{i}", event_type=evt_a if i % 2 else evt_b,
            customer=common_pb2.CustomerRef(id=customers[i % 3]), timestamp=ts(now - timedelta(hours=i)),
        ))
        events[-1].properties.update({"qty": i + 1, "user": f"u{i}", "region": "eu" if i % 2 else "us"})
    harvest(pools, ch.ingest.SendEventBatch(ingest_pb2.SendEventBatchRequest(events=events), timeout=10))
    harvest(pools, ch.ingest.RecordUsage(ingest_pb2.RecordUsageRequest(
        idempotency_key=f"fz_usage_{tag}", customer=common_pb2.CustomerRef(id=customers[0]), meter_key=m_sum,
        quantity=dec("2.5"), timestamp=ts(now - timedelta(minutes=5)), dimensions={"region": "eu"},
    ), timeout=10))
    harvest(pools, ch.meter.CreateThreshold(meter_pb2.CreateThresholdRequest(threshold=meter_pb2.Threshold(
        meter_key=m_sum, customer_id=customers[0], name="fuzz", absolute_units=dec("3"),
    )), timeout=10))
    harvest(pools, ch.meter.BackfillMeter(meter_pb2.BackfillMeterRequest(meter_key=m_count), timeout=30))
    daily_subs = ch.catalog.ListSubscriptions(catalog_pb2.ListSubscriptionsRequest(customer_id=customers[1]), timeout=10)
    closed = ch.invoice.CloseDuePeriods(invoice_pb2.CloseDuePeriodsRequest(
        subscription_ids=[s.id for s in daily_subs.subscriptions]), timeout=60)
    for invoice_id in closed.invoice_ids:
        pools.add("invoice_id", invoice_id)
    pools.protect_all()
    pools.refs["seeded_subscription"] = list(pools.get("subscription_id"))
    return pools


def billing_problems(ch: Channels, pools: Pools) -> list[str]:
    """Each seeded subscription must still get an upcoming invoice (one tenant's poison
    event must not make its customer unbillable): anything but OK, NOT_FOUND or
    FAILED_PRECONDITION (a subscription the fuzzer canceled) is a problem."""
    problems = []
    for subscription_id in pools.get("seeded_subscription"):
        try:
            ch.invoice.UpcomingInvoice(invoice_pb2.UpcomingInvoiceRequest(subscription_id=subscription_id), timeout=20)
        except grpc.RpcError as error:
            if error.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION):
                problems.append(f"UpcomingInvoice for seeded subscription: {error.code().name} {(error.details() or '')[:300]}")
    return problems


@dataclass
class Canary:
    """A customer, COUNT meter, plan and subscription that only the canary check uses."""

    customer_id: str
    meter_key: str
    event_type: str
    subscription_id: str
    start: datetime
    acknowledged: list[str] = field(default_factory=list)
    duplicates_acknowledged: int = 0

    @classmethod
    def create(cls, ch: Channels, now: datetime) -> "Canary":
        tag = uuid.uuid4().hex
        event_type = f"canary_evt_{tag}"
        meter_key = f"canary_meter_{tag}"
        ch.catalog.CreateMeter(catalog_pb2.CreateMeterRequest(meter=catalog_pb2.Meter(
            key=meter_key, name="Canary", unit="events", event_type=event_type, aggregation=catalog_pb2.AGGREGATION_COUNT,
        )), timeout=10)
        plan_key = f"canary_plan_{tag}"
        ch.catalog.CreatePlan(catalog_pb2.CreatePlanRequest(plan=catalog_pb2.PlanSpec(
            key=plan_key, name="Canary", currency="USD", interval=catalog_pb2.BILLING_INTERVAL_MONTH, interval_count=1,
            charges=[catalog_pb2.Charge(key="events", name="Events", usage=catalog_pb2.UsageCharge(
                meter_key=meter_key, price=catalog_pb2.Price(model=catalog_pb2.PRICING_MODEL_PER_UNIT, unit_price=dec("1")),
            ))],
        )), timeout=10)
        customer = ch.catalog.CreateCustomer(catalog_pb2.CreateCustomerRequest(customer=catalog_pb2.Customer(
            external_id=f"canary_{tag}", name="Canary", timezone="UTC", currency="USD",
        )), timeout=10).customer
        start = now.replace(microsecond=0) - timedelta(minutes=5)
        subscription = ch.catalog.CreateSubscription(catalog_pb2.CreateSubscriptionRequest(
            customer=common_pb2.CustomerRef(id=customer.id), plan_key=plan_key, start_time=ts(start),
            anchor=catalog_pb2.BILLING_ANCHOR_ANNIVERSARY,
        ), timeout=10).subscription
        return cls(customer.id, meter_key, event_type, subscription.id, start)

    def reserved(self) -> set[str]:
        return {self.customer_id, self.meter_key, self.event_type, self.subscription_id}

    def check(self, ch: Channels, cluster) -> list[str]:
        """Problems found after a batch: health, applier, the canary metered once and invoiced."""
        problems = []
        for name in SERVICES:
            proc = cluster.procs[name]
            if proc.poll() is not None:
                problems.append(f"{name} process exited with {proc.returncode}")
                continue
            try:
                reply = health_pb2_grpc.HealthStub(ch.channels[name]).Check(health_pb2.HealthCheckRequest(), timeout=5)
                if reply.status != health_pb2.HealthCheckResponse.SERVING:
                    problems.append(f"{name} health is {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}")
            except grpc.RpcError as error:
                problems.append(f"{name} health check failed: {error.code().name} {error.details()}")
        if problems:
            return problems
        key = f"canary_{uuid.uuid4().hex}"
        event = ingest_pb2.Event(
            idempotency_key=key, event_type=self.event_type, customer=common_pb2.CustomerRef(id=self.customer_id),
            timestamp=ts(datetime.now(UTC)),
        )
        try:
            first = ch.ingest.SendEvent(ingest_pb2.SendEventRequest(event=event), timeout=10)
            self.acknowledged.append(key)
            again = ch.ingest.SendEvent(ingest_pb2.SendEventRequest(event=event), timeout=10)
            self.duplicates_acknowledged += 1
            if first.duplicate or not again.duplicate:
                problems.append(f"canary resend not reported as duplicate: first={first.duplicate} again={again.duplicate}")
        except grpc.RpcError as error:
            return [f"canary SendEvent failed: {error.code().name} {error.details()}"]
        expected = Decimal(len(self.acknowledged))
        deadline = time.monotonic() + CANARY_TIMEOUT_SECONDS
        value = None
        while True:
            try:
                status = ch.meter.GetMeterStatus(meter_pb2.GetMeterStatusRequest(), timeout=10)
                stalled = [f.name for f, v in status.ListFields() if "stall" in f.name and f.type == f.TYPE_BOOL and v]
                if stalled:
                    problems.append(f"meter reports a stalled applier: {MessageToDict(status)}")
                    return problems
                usage = ch.meter.GetUsage(meter_pb2.GetUsageRequest(
                    customer=common_pb2.CustomerRef(id=self.customer_id), meter_key=self.meter_key,
                    start=ts(self.start), end=ts(datetime.now(UTC) + timedelta(hours=1)),
                ), timeout=10)
                value = Decimal(usage.value.value or "0")
            except grpc.RpcError as error:
                problems.append(f"canary GetMeterStatus/GetUsage failed: {error.code().name} {error.details()}")
                return problems
            if value == expected:
                break
            if value > expected:
                return [f"canary counted {value} times for {expected} acknowledged events (double counting)"]
            if time.monotonic() > deadline:
                return [
                    f"canary not metered within {CANARY_TIMEOUT_SECONDS:.0f}s: usage {value}, expected {expected}; "
                    f"meter status {MessageToDict(status)}"
                ]
            time.sleep(0.1)
        try:
            upcoming = ch.invoice.UpcomingInvoice(
                invoice_pb2.UpcomingInvoiceRequest(subscription_id=self.subscription_id), timeout=20
            ).invoice
        except grpc.RpcError as error:
            return [f"canary UpcomingInvoice failed: {error.code().name} {error.details()}"]
        lines = [line for line in upcoming.lines if line.meter_key == self.meter_key]
        billed = sum((Decimal(line.quantity.value or "0") for line in lines), Decimal(0))
        amount = sum((Decimal(line.amount.value or "0") for line in lines), Decimal(0))
        if billed != expected or amount != expected:
            problems.append(f"canary invoice shows quantity {billed}, amount {amount}; expected {expected} events at 1 USD")
        return problems
