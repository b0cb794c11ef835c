"""Issue 12, "What was seen" items 1 (instants), 3, 4, 5 and 6, through the real services.

Each test sends what a hostile or careless client sent, to the four services as real
processes on real Postgres, and checks the specific INVALID_ARGUMENT and field, that nothing
was stored, and that metering and invoicing go on. tests/unit/test_wire.py covers the grammar
itself (tally.wire).
"""

from __future__ import annotations

import asyncio
import os
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import asyncpg
import grpc
import pytest
from google.protobuf import struct_pb2, timestamp_pb2
from prometheus_client.parser import text_string_to_metric_families

from tally.channels import connect
from tally.cli.status import gather_status
from tally.grpc_errors import field_violations
from tally_gen.catalog.v1 import catalog_pb2
from tally_gen.common.v1 import common_pb2
from tally_gen.ingest.v1 import ingest_pb2
from tally_gen.invoice.v1 import invoice_pb2, invoice_pb2_grpc
from tally_gen.meter.v1 import meter_pb2
from tally.config import SERVICES
from tally.migrations import upgrade
from tests.harness import ServiceProcesses, drop_database, free_port, recreate_database, unique
from tests.meter.helpers import Stubs, struct, ts, value

pytestmark = pytest.mark.e2e

UTC = timezone.utc
INVALID = grpc.StatusCode.INVALID_ARGUMENT
YEAR_1 = -62_135_596_800  # 0001-01-01T00:00:00Z
YEAR_9999 = 253_402_214_400  # 9999-12-31T00:00:00Z
# Each of these is a number to Python's Decimal(), and none is one of the grammar.
LENIENT = ["1_000", "  12 ", "12\xa0", "\u0661\u0662", "+7", "many"]


@pytest.fixture(scope="module")
async def stubs(services):
    channels = [connect(services.address(s)) for s in ("catalog", "ingest", "meter", "invoice")]
    stubs = Stubs(*channels[:3])
    stubs.invoice = invoice_pb2_grpc.InvoiceServiceStub(channels[3])
    yield stubs
    for channel in channels:
        await channel.close()


def recent(minutes_ago: float = 60) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=minutes_ago)


def raw_ts(seconds: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds)


def dec(text: str) -> common_pb2.Decimal:
    return common_pb2.Decimal(value=text)


async def refused(call) -> dict[str, str]:
    """The field violations of a call that must end INVALID_ARGUMENT."""
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call
    assert error.value.code() == INVALID, error.value.details()
    return dict(field_violations(error.value))


async def minutes_meter(stubs: Stubs, *, allow_negative: bool = False) -> tuple[str, str]:
    """A SUM meter over the ``minutes`` property of its own event type: (meter key, event type)."""
    event_type, key = unique("call"), unique("minutes")
    await stubs.catalog.CreateMeter(
        catalog_pb2.CreateMeterRequest(
            meter=catalog_pb2.Meter(
                key=key,
                name="Minutes",
                unit="minutes",
                event_type=event_type,
                aggregation=catalog_pb2.AGGREGATION_SUM,
                value_property="minutes",
                allow_negative=allow_negative,
            )
        ),
        timeout=10,
    )
    await _until_ingest_reads(stubs, event_type)
    return key, event_type


async def _until_ingest_reads(stubs: Stubs, event_type: str) -> None:
    """Wait until ingest's catalog cache has the new meter (it follows WatchCatalog, within a
    second): until then ingest cannot know that ``minutes`` is a meter's value. Probes sent
    before are stored, and the meter counts them as unusable values."""
    customer_id = await stubs.create_customer()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        probe = event(event_type, customer_id, unique("probe"), {"minutes": "not a number"})
        try:
            await stubs.ingest.SendEvent(ingest_pb2.SendEventRequest(event=probe), timeout=10)
        except grpc.aio.AioRpcError as error:
            assert error.code() == INVALID, error.details()
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"ingest never saw a meter for {event_type}")


def event(event_type: str, customer_id: str, key: str, properties: dict | struct_pb2.Struct) -> ingest_pb2.Event:
    return ingest_pb2.Event(
        idempotency_key=key,
        event_type=event_type,
        customer=common_pb2.CustomerRef(id=customer_id),
        timestamp=ts(recent()),
        properties=properties if isinstance(properties, struct_pb2.Struct) else struct(properties),
    )


async def stored(stubs: Stubs, key: str) -> bool:
    try:
        await stubs.ingest.GetEvent(ingest_pb2.GetEventRequest(idempotency_key=key), timeout=10)
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.NOT_FOUND
        return False
    return True


def plan_spec(key: str, *charges: catalog_pb2.Charge, **overrides) -> catalog_pb2.PlanSpec:
    base = dict(
        key=key,
        name="Plan",
        currency="USD",
        interval=catalog_pb2.BILLING_INTERVAL_MONTH,
        interval_count=1,
        charges=list(charges),
    )
    base.update(overrides)
    return catalog_pb2.PlanSpec(**base)


def per_unit(meter_key: str, price: str) -> catalog_pb2.Charge:
    return catalog_pb2.Charge(
        key="usage",
        name="Usage",
        usage=catalog_pb2.UsageCharge(
            meter_key=meter_key,
            price=catalog_pb2.Price(model=catalog_pb2.PRICING_MODEL_PER_UNIT, unit_price=dec(price)),
        ),
    )


def fixed(amount: str, key: str = "fee") -> catalog_pb2.Charge:
    return catalog_pb2.Charge(
        key=key, name="Fee", fixed=catalog_pb2.FixedFee(amount=dec(amount), timing=catalog_pb2.FEE_TIMING_IN_ARREARS)
    )


async def plan_exists(stubs: Stubs, key: str) -> bool:
    try:
        await stubs.catalog.GetPlan(catalog_pb2.GetPlanRequest(key=key), timeout=10)
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.NOT_FOUND
        return False
    return True


async def meter_exists(stubs: Stubs, key: str) -> bool:
    try:
        await stubs.catalog.GetMeter(catalog_pb2.GetMeterRequest(key=key), timeout=10)
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.NOT_FOUND
        return False
    return True


# ---------------------------------------------------------------- item 1: instants


class TestSubscriptionInstants:
    @pytest.mark.parametrize("seconds", [YEAR_1, YEAR_9999], ids=["0001-01-01", "9999-12-31"])
    async def test_a_start_outside_the_instant_range_is_refused_naming_start_time_and_nothing_is_stored(
        self, stubs, seconds
    ):
        meter_key, _ = await minutes_meter(stubs)
        plan_key = unique("plan")
        await stubs.catalog.CreatePlan(catalog_pb2.CreatePlanRequest(plan=plan_spec(plan_key, per_unit(meter_key, "1"))))
        customer_id = await stubs.create_customer()
        problems = await refused(
            stubs.catalog.CreateSubscription(
                catalog_pb2.CreateSubscriptionRequest(
                    customer=common_pb2.CustomerRef(id=customer_id), plan_key=plan_key, start_time=raw_ts(seconds)
                ),
                timeout=10,
            )
        )
        assert "start_time" in problems
        listed = await stubs.catalog.ListSubscriptions(
            catalog_pb2.ListSubscriptionsRequest(customer_id=customer_id), timeout=10
        )
        assert list(listed.subscriptions) == []

    async def test_a_cancellation_in_year_9999_is_refused_and_the_catalog_feed_still_serves(self, stubs):
        meter_key, _ = await minutes_meter(stubs)
        plan_key = unique("plan")
        await stubs.catalog.CreatePlan(catalog_pb2.CreatePlanRequest(plan=plan_spec(plan_key, per_unit(meter_key, "1"))))
        customer_id = await stubs.create_customer()
        sub = (
            await stubs.catalog.CreateSubscription(
                catalog_pb2.CreateSubscriptionRequest(customer=common_pb2.CustomerRef(id=customer_id), plan_key=plan_key),
                timeout=10,
            )
        ).subscription
        problems = await refused(
            stubs.catalog.CancelSubscription(catalog_pb2.CancelSubscriptionRequest(id=sub.id, at=raw_ts(YEAR_9999)), timeout=10)
        )
        assert "at" in problems
        # The whole feed still reads (it failed UNKNOWN on a poison row before).
        revision = (await stubs.catalog.GetCatalogRevision(catalog_pb2.GetCatalogRevisionRequest(), timeout=10)).revision
        seen = 0
        async for change in stubs.catalog.WatchCatalog(catalog_pb2.WatchCatalogRequest(after_revision=0), timeout=30):
            seen += 1
            if change.revision >= revision:
                break
        assert seen > 0
        got = await stubs.catalog.GetSubscription(catalog_pb2.GetSubscriptionRequest(id=sub.id), timeout=10)
        assert not got.subscription.HasField("cancel_at")


# ---------------------------------------------------------------- item 3: exactness


class TestExactness:
    async def test_a_value_of_forty_nines_is_refused_at_ingest_never_metered_as_ten_to_the_forty(self, stubs):
        meter_key, event_type = await minutes_meter(stubs)
        customer_id = await stubs.create_customer()
        key = unique("e")
        problems = await refused(
            stubs.ingest.SendEventBatch(
                ingest_pb2.SendEventBatchRequest(events=[event(event_type, customer_id, key, {"minutes": "9" * 40})]),
                timeout=10,
            )
        )
        assert "events[0].properties.minutes" in problems
        assert not await stored(stubs, key)

    async def test_a_json_number_1e308_as_a_meter_value_is_refused(self, stubs):
        meter_key, event_type = await minutes_meter(stubs)
        customer_id = await stubs.create_customer()
        key = unique("e")
        props = struct_pb2.Struct(fields={"minutes": struct_pb2.Value(number_value=1e308)})
        problems = await refused(
            stubs.ingest.SendEvent(ingest_pb2.SendEventRequest(event=event(event_type, customer_id, key, props)), timeout=10)
        )
        assert "event.properties.minutes" in problems
        assert not await stored(stubs, key)

    async def test_a_29_digit_sum_is_metered_and_invoiced_to_the_last_digit(self, stubs):
        meter_key, event_type = await minutes_meter(stubs)
        plan_key = unique("plan")
        await stubs.catalog.CreatePlan(catalog_pb2.CreatePlanRequest(plan=plan_spec(plan_key, per_unit(meter_key, "1"))))
        customer_id = await stubs.create_customer()
        start = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        sub = (
            await stubs.catalog.CreateSubscription(
                catalog_pb2.CreateSubscriptionRequest(
                    customer=common_pb2.CustomerRef(id=customer_id), plan_key=plan_key, start_time=ts(start)
                ),
                timeout=10,
            )
        ).subscription
        when = max(start, datetime.now(UTC) - timedelta(minutes=5))
        await stubs.send(
            customer_id,
            event_type,
            [(unique("e"), when, {"minutes": v}) for v in ("12345678901234567890123456789", "1", "0.000001")],
        )
        await stubs.wait_applied()
        usage = await stubs.usage(customer_id, meter_key, start, datetime.now(UTC) + timedelta(minutes=1))
        assert usage.value.value == "12345678901234567890123456790.000001"
        invoice = (
            await stubs.invoice.UpcomingInvoice(invoice_pb2.UpcomingInvoiceRequest(subscription_id=sub.id), timeout=30)
        ).invoice
        assert invoice.total.value == "12345678901234567890123456790.00"

    async def test_record_usage_of_1e999999_is_invalid_argument_naming_quantity(self, stubs):
        meter_key, _ = await minutes_meter(stubs)
        customer_id = await stubs.create_customer()
        problems = await refused(
            stubs.ingest.RecordUsage(
                ingest_pb2.RecordUsageRequest(
                    idempotency_key=unique("u"),
                    customer=common_pb2.CustomerRef(id=customer_id),
                    meter_key=meter_key,
                    quantity=dec("1e999999"),
                    timestamp=ts(recent()),
                ),
                timeout=10,
            )
        )
        assert "quantity" in problems

    async def test_a_threshold_of_1e999999_is_invalid_argument_naming_the_level(self, stubs):
        meter_key, _ = await minutes_meter(stubs)
        customer_id = await stubs.create_customer()
        problems = await refused(
            stubs.meter.CreateThreshold(
                meter_pb2.CreateThresholdRequest(
                    threshold=meter_pb2.Threshold(meter_key=meter_key, customer_id=customer_id, absolute_units=dec("1e999999"))
                ),
                timeout=10,
            )
        )
        assert "threshold.absolute_units" in problems

    @pytest.mark.parametrize("where", ["unit_price", "fixed_fee"])
    async def test_a_price_or_fee_of_1e999999_is_refused_not_stored(self, stubs, where):
        meter_key, _ = await minutes_meter(stubs)
        plan_key = unique("plan")
        charge = per_unit(meter_key, "1e999999") if where == "unit_price" else fixed("1e999999")
        field = "plan.charges[0].usage.price.unit_price" if where == "unit_price" else "plan.charges[0].fixed.amount"
        problems = await refused(stubs.catalog.CreatePlan(catalog_pb2.CreatePlanRequest(plan=plan_spec(plan_key, charge)), timeout=10))
        assert field in problems
        assert not await plan_exists(stubs, plan_key)


# ---------------------------------------------------------------- item 4: lenient numbers, negatives, unusable


class TestMeterValues:
    @pytest.mark.parametrize("bad", LENIENT)
    async def test_an_atomic_batch_with_a_value_outside_the_grammar_is_refused_whole(self, stubs, bad):
        meter_key, event_type = await minutes_meter(stubs)
        customer_id = await stubs.create_customer()
        good, wrong = unique("good"), unique("bad")
        problems = await refused(
            stubs.ingest.SendEventBatch(
                ingest_pb2.SendEventBatchRequest(
                    events=[
                        event(event_type, customer_id, good, {"minutes": "3"}),
                        event(event_type, customer_id, wrong, {"minutes": bad}),
                    ]
                ),
                timeout=10,
            )
        )
        assert list(problems) == ["events[1].properties.minutes"]
        assert meter_key in problems["events[1].properties.minutes"]
        assert not await stored(stubs, good)
        assert not await stored(stubs, wrong)

    async def test_a_partial_batch_rejects_only_the_event_with_the_bad_value(self, stubs):
        meter_key, event_type = await minutes_meter(stubs)
        customer_id = await stubs.create_customer()
        good, wrong = unique("good"), unique("bad")
        reply = await stubs.ingest.SendEventBatch(
            ingest_pb2.SendEventBatchRequest(
                mode=ingest_pb2.BATCH_MODE_PARTIAL,
                events=[
                    event(event_type, customer_id, good, {"minutes": "3"}),
                    event(event_type, customer_id, wrong, {"minutes": "1_000"}),
                ],
            ),
            timeout=10,
        )
        assert [r.status for r in reply.results] == [ingest_pb2.EVENT_STATUS_ACCEPTED, ingest_pb2.EVENT_STATUS_REJECTED]
        assert [(v.field, v.reason) for v in reply.results[1].violations] == [
            ("events[1].properties.minutes", "INVALID_METER_VALUE")
        ]
        assert await stored(stubs, good) and not await stored(stubs, wrong)

    async def test_a_negative_value_is_refused_unless_the_meter_allows_negatives(self, stubs):
        strict_key, strict_type = await minutes_meter(stubs)
        customer_id = await stubs.create_customer()
        problems = await refused(
            stubs.ingest.SendEvent(
                ingest_pb2.SendEventRequest(event=event(strict_type, customer_id, unique("neg"), {"minutes": "-5"})),
                timeout=10,
            )
        )
        assert "event.properties.minutes" in problems
        credit_key, credit_type = await minutes_meter(stubs, allow_negative=True)
        meter = await stubs.catalog.GetMeter(catalog_pb2.GetMeterRequest(key=credit_key), timeout=10)
        assert meter.meter.allow_negative
        start = recent(120)
        await stubs.send(customer_id, credit_type, [(unique("e"), recent(), {"minutes": "10"}), (unique("e"), recent(), {"minutes": "-5"})])
        await stubs.wait_applied()
        assert value(await stubs.usage(customer_id, credit_key, start, recent(-5))) == Decimal(5)

    async def test_an_absent_value_is_accepted_and_shows_as_unusable_in_status(self, stubs, services, monkeypatch):
        meter_key, event_type = await minutes_meter(stubs)
        customer_id = await stubs.create_customer()
        before = (await stubs.wait_applied()).unusable_value_events
        key = unique("absent")
        await stubs.ingest.SendEvent(
            ingest_pb2.SendEventRequest(event=event(event_type, customer_id, key, {"region": "eu"})), timeout=10
        )
        assert await stored(stubs, key)
        status = await stubs.wait_applied()
        assert status.unusable_value_events == before + 1
        for service in ("catalog", "ingest", "meter", "invoice"):
            monkeypatch.setenv(f"TALLY_{service.upper()}_ADDR", services.address(service))
        report = await gather_status()
        assert report["meter"]["unusable_value_events"] == status.unusable_value_events

    @pytest.mark.parametrize("bad", ["+7", "1_000", " 12 ", "\u0661\u0662"])
    async def test_a_lenient_price_is_refused_naming_the_field(self, stubs, bad):
        meter_key, _ = await minutes_meter(stubs)
        plan_key = unique("plan")
        problems = await refused(
            stubs.catalog.CreatePlan(catalog_pb2.CreatePlanRequest(plan=plan_spec(plan_key, per_unit(meter_key, bad))), timeout=10)
        )
        assert problems["plan.charges[0].usage.price.unit_price"].startswith("must be a decimal number")
        assert not await plan_exists(stubs, plan_key)


class TestUnusableValuesOnMetrics:
    async def test_the_meters_metrics_page_counts_unusable_values(self, server_url, tmp_path):
        # A database of its own: on the session's, the session's meter holds the applier lock
        # and this cluster's meter would only stand by (and count nothing).
        name = f"tally_grammar_metrics_{os.getpid()}"
        database_url = await recreate_database(server_url, name)
        for service in SERVICES:
            await asyncio.to_thread(upgrade, service, database_url)
        port = free_port()
        cluster = ServiceProcesses(
            database_url=database_url,
            log_dir=tmp_path,
            # Beside the session's cluster: small pools, so both fit Postgres' connection limit.
            extra_env={"TALLY_METER_METRICS_PORT": str(port), "TALLY_DB_POOL_SIZE": "2", "TALLY_INGEST_DB_POOL_SIZE": "2"},
        )
        channels = []
        try:
            await cluster.start_all(services=("catalog", "ingest", "meter"))
            channels = [connect(cluster.address(s)) for s in ("catalog", "ingest", "meter")]
            stubs = Stubs(*channels)
            _, event_type = await minutes_meter(stubs)
            customer_id = await stubs.create_customer()
            await stubs.send(customer_id, event_type, [(unique("e"), recent(), {"minutes": None})])
            await stubs.wait_applied()
            deadline = time.monotonic() + 10
            while True:
                samples = await asyncio.to_thread(_scrape, port)
                if samples.get("tally_meter_unusable_value_events_total", 0) >= 1 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            assert samples["tally_meter_unusable_value_events_total"] >= 1
        finally:
            for channel in channels:
                await channel.close()
            cluster.stop_all()
            await drop_database(server_url, name)


def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples}


# ---------------------------------------------------------------- item 5: no UNKNOWN that leaks internals


class TestNoUnknown:
    async def test_nul_in_a_meter_name_is_invalid_argument_naming_it(self, stubs):
        key = unique("m")
        meter = catalog_pb2.Meter(
            key=key, name="a\x00b", unit="u", event_type="t", aggregation=catalog_pb2.AGGREGATION_COUNT
        )
        problems = await refused(stubs.catalog.CreateMeter(catalog_pb2.CreateMeterRequest(meter=meter), timeout=10))
        assert problems["meter.name"] == "must not contain NUL characters"
        assert not await meter_exists(stubs, key)

    async def test_nul_in_a_customer_external_id_is_invalid_argument_naming_it(self, stubs):
        problems = await refused(
            stubs.catalog.CreateCustomer(
                catalog_pb2.CreateCustomerRequest(customer=catalog_pb2.Customer(external_id="acct\x00x", name="n")), timeout=10
            )
        )
        assert "customer.external_id" in problems
        problems = await refused(
            stubs.catalog.GetCustomer(
                catalog_pb2.GetCustomerRequest(customer=common_pb2.CustomerRef(external_id="acct\x00x")), timeout=10
            )
        )
        assert "customer.external_id" in problems

    async def test_nul_in_a_get_event_key_is_invalid_argument_naming_it(self, stubs):
        problems = await refused(stubs.ingest.GetEvent(ingest_pb2.GetEventRequest(idempotency_key="k\x00"), timeout=10))
        assert "idempotency_key" in problems

    async def test_nul_in_any_looked_up_key_is_named_by_the_central_check(self, stubs):
        problems = await refused(stubs.catalog.GetMeter(catalog_pb2.GetMeterRequest(key="m\x00"), timeout=10))
        assert "key" in problems

    async def test_a_ten_thousand_entry_group_by_gets_a_bounded_invalid_argument_not_resource_exhausted(self, stubs):
        meter_key, _ = await minutes_meter(stubs)
        customer_id = await stubs.create_customer()
        paths = [f"dimension_{i}" for i in range(10_000)]
        problems = await refused(
            stubs.meter.GetUsage(
                meter_pb2.GetUsageRequest(
                    customer=common_pb2.CustomerRef(id=customer_id),
                    meter_key=meter_key,
                    start=ts(recent(120)),
                    end=ts(recent()),
                    group_by=paths,
                ),
                timeout=10,
            )
        )
        assert "group_by" in problems
        problems = await refused(
            stubs.catalog.CreateMeter(
                catalog_pb2.CreateMeterRequest(
                    meter=catalog_pb2.Meter(
                        key=unique("m"), name="n", unit="u", event_type="t", aggregation=catalog_pb2.AGGREGATION_COUNT,
                        group_by=["bad path!"] * 10_000,
                    )
                ),
                timeout=10,
            )
        )
        assert "meter.group_by" in problems


# ---------------------------------------------------------------- item 6: catalog size limits


MEGABYTE = "x" * 1_000_000


class TestCatalogLimits:
    async def test_a_megabyte_description_is_refused(self, stubs):
        key = unique("m")
        meter = catalog_pb2.Meter(
            key=key, name="n", unit="u", event_type="t", aggregation=catalog_pb2.AGGREGATION_COUNT, description=MEGABYTE
        )
        problems = await refused(stubs.catalog.CreateMeter(catalog_pb2.CreateMeterRequest(meter=meter), timeout=10))
        assert "meter.description" in problems
        assert not await meter_exists(stubs, key)

    async def test_a_megabyte_email_and_ten_thousand_metadata_entries_are_refused(self, stubs):
        external_id = unique("ext")
        customer = catalog_pb2.Customer(
            external_id=external_id,
            name="n",
            email=MEGABYTE + "@example.com",
            metadata={f"k{i}": "v" for i in range(10_000)},
        )
        problems = await refused(stubs.catalog.CreateCustomer(catalog_pb2.CreateCustomerRequest(customer=customer), timeout=10))
        assert {"customer.email", "customer.metadata"} <= set(problems)
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stubs.catalog.GetCustomer(
                catalog_pb2.GetCustomerRequest(customer=common_pb2.CustomerRef(external_id=external_id)), timeout=10
            )
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND

    async def test_ten_thousand_filters_are_refused(self, stubs):
        key = unique("m")
        meter = catalog_pb2.Meter(
            key=key, name="n", unit="u", event_type="t", aggregation=catalog_pb2.AGGREGATION_COUNT,
            filters=[catalog_pb2.MeterFilter(property="p", operator=catalog_pb2.FILTER_OPERATOR_EXISTS)] * 10_000,
        )
        problems = await refused(stubs.catalog.CreateMeter(catalog_pb2.CreateMeterRequest(meter=meter), timeout=10))
        assert "meter.filters" in problems
        assert not await meter_exists(stubs, key)

    async def test_ten_thousand_charges_and_an_interval_count_of_a_billion_are_refused(self, stubs):
        plan_key = unique("plan")
        charges = [fixed("1", key=f"fee_{i}") for i in range(10_000)]
        problems = await refused(
            stubs.catalog.CreatePlan(catalog_pb2.CreatePlanRequest(plan=plan_spec(plan_key, *charges)), timeout=30)
        )
        assert "plan.charges" in problems
        problems = await refused(
            stubs.catalog.CreatePlan(
                catalog_pb2.CreatePlanRequest(plan=plan_spec(plan_key, fixed("1"), interval_count=10**9)), timeout=10
            )
        )
        assert "plan.interval_count" in problems
        assert not await plan_exists(stubs, plan_key)


class TestStorageAgreesWithTheGrammar:
    @pytest.mark.parametrize(
        "statement",
        [
            "INSERT INTO ingest.usage_records (xid, ingest_time, idempotency_key, payload_hash, customer_id, meter_key,"
            " quantity, usage_time) VALUES (pg_current_xact_id(), now(), $1, '\\x00', 'c', 'm', $2, now())",
            "INSERT INTO meter.thresholds (id, meter_key, customer_id, absolute_units, name) VALUES ($1, 'm', 'c', $2, '')",
        ],
        ids=["usage_quantity", "threshold_level"],
    )
    @pytest.mark.parametrize("number", ["1e38", "0.0000000000000000001"])
    async def test_a_value_outside_the_bounds_is_refused_by_the_database_not_rounded(self, database_url, statement, number):
        conn = await asyncpg.connect(database_url)
        outer = conn.transaction()
        await outer.start()
        try:
            with pytest.raises(asyncpg.CheckViolationError):
                async with conn.transaction():
                    await conn.execute(statement, unique("row"), Decimal(number))
            # A value with all 38 digits the grammar admits is stored exactly.
            largest = Decimal("9" * 20 + "." + "9" * 18)
            await conn.execute(statement, unique("row"), largest)
        finally:
            # Nothing stays behind: these tables feed the log and the applier.
            await outer.rollback()
            await conn.close()
