"""Invoice benchmark: close the periods of N subscriptions with usage on two meters each.

Run with ``python -m bench invoice`` (``make bench`` runs every benchmark). All four services
run as real subprocesses on a fresh database (DATABASE_URL's server, else the embedded
Postgres). One CloseDuePeriods call, answered by the invoice process, lists every
subscription from the catalog, reads each one's usage of two meters from the meter, prices,
inserts and finalizes one invoice per subscription. Environment:

- TALLY_BENCH_INVOICE_SUBSCRIPTIONS: subscriptions (and customers) to close (default 10,000).
- TALLY_BENCH_INVOICE_EVENTS_PER_METER: events per customer and meter (default 2).

Baseline, measured in the same run: the usage reads the close needs (2 queries per
subscription), as bare BatchGetUsage calls of 1,000 queries, two at a time, without pricing or
storing anything.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
from decimal import Decimal
from pathlib import Path

from google.protobuf import struct_pb2

from bench.common import env_int, run_on_fresh_database
from tally.channels import connect
from tally.config import SERVICES
from tally_gen.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from tally_gen.common.v1 import common_pb2
from tally_gen.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from tally_gen.invoice.v1 import invoice_pb2, invoice_pb2_grpc
from tally_gen.meter.v1 import meter_pb2, meter_pb2_grpc
from tests.harness import ServiceProcesses

UTC = dt.timezone.utc
CONCURRENCY = 64
PLAN = "bench_invoice_plan"
METERS = (("bench_invoice_calls", "bench_call", "minutes", "0.05"), ("bench_invoice_sms", "bench_sms", "count", "0.01"))


def dec(value: str) -> common_pb2.Decimal:
    return common_pb2.Decimal(value=value)


async def bounded(calls, limit: int = CONCURRENCY) -> list:
    semaphore = asyncio.Semaphore(limit)

    async def one(factory):
        async with semaphore:
            return await factory()

    return await asyncio.gather(*(one(f) for f in calls))


async def setup(stubs: dict, subscriptions: int, per_meter: int, start: dt.datetime) -> list[str]:
    catalog = stubs["catalog"]
    charges = [catalog_pb2.Charge(key="fee", name="Monthly fee",
                                  fixed=catalog_pb2.FixedFee(amount=dec("10.00"), timing=catalog_pb2.FEE_TIMING_IN_ARREARS))]
    for key, event_type, prop, price in METERS:
        await catalog.CreateMeter(catalog_pb2.CreateMeterRequest(meter=catalog_pb2.Meter(
            key=key, name=key, unit=prop, event_type=event_type, aggregation=catalog_pb2.AGGREGATION_SUM,
            value_property=prop)), timeout=30)
        charges.append(catalog_pb2.Charge(key=key, name=key, usage=catalog_pb2.UsageCharge(
            meter_key=key, price=catalog_pb2.Price(model=catalog_pb2.PRICING_MODEL_PER_UNIT, unit_price=dec(price)))))
    await catalog.CreatePlan(catalog_pb2.CreatePlanRequest(plan=catalog_pb2.PlanSpec(
        key=PLAN, name="Bench", currency="USD", interval=catalog_pb2.BILLING_INTERVAL_DAY, interval_count=1,
        charges=charges)), timeout=30)

    async def customer_and_subscription(n: int) -> str:
        reply = await catalog.CreateCustomer(catalog_pb2.CreateCustomerRequest(customer=catalog_pb2.Customer(
            external_id=f"acct_invoice_bench_{n}", name=f"Bench {n}", currency="USD")), timeout=30)
        await catalog.CreateSubscription(catalog_pb2.CreateSubscriptionRequest(
            customer=common_pb2.CustomerRef(id=reply.customer.id), plan_key=PLAN, start_time=_ts(start),
            anchor=catalog_pb2.BILLING_ANCHOR_CALENDAR), timeout=30)
        return reply.customer.id

    began = time.perf_counter()
    customers = await bounded([lambda n=n: customer_and_subscription(n) for n in range(subscriptions)])
    print(f"  {subscriptions:,} customers and subscriptions in {time.perf_counter() - began:.1f} s", flush=True)

    events = []
    for n, customer in enumerate(customers):
        for m, (_, event_type, prop, _) in enumerate(METERS):
            for k in range(per_meter):
                properties = struct_pb2.Struct()
                properties.update({prop: (n % 50) + k + m})
                events.append(ingest_pb2.Event(
                    idempotency_key=f"bench-{n}-{m}-{k}", event_type=event_type,
                    customer=common_pb2.CustomerRef(id=customer),
                    timestamp=_ts(start + dt.timedelta(hours=1 + k % 20, seconds=n % 3600)), properties=properties))
    began = time.perf_counter()
    batches = [events[i:i + 1000] for i in range(0, len(events), 1000)]
    await bounded([lambda b=b: stubs["ingest"].SendEventBatch(ingest_pb2.SendEventBatchRequest(events=b), timeout=60)
                   for b in batches], limit=4)
    stats = await stubs["ingest"].GetIngestStats(ingest_pb2.GetIngestStatsRequest(), timeout=30)
    while True:
        status = await stubs["meter"].GetMeterStatus(meter_pb2.GetMeterStatusRequest(), timeout=30)
        if status.applied_position >= stats.head_position and status.HasField("applied_watermark"):
            break
        await asyncio.sleep(0.1)
    print(f"  {len(events):,} events ingested and metered in {time.perf_counter() - began:.1f} s", flush=True)
    return customers


def _ts(instant: dt.datetime):
    from google.protobuf import timestamp_pb2

    out = timestamp_pb2.Timestamp()
    out.FromDatetime(instant)
    return out


async def baseline_usage(stubs: dict, customers: list[str], start: dt.datetime, end: dt.datetime) -> float:
    queries = [
        meter_pb2.GetUsageRequest(customer=common_pb2.CustomerRef(id=c), meter_key=key, start=_ts(start), end=_ts(end))
        for c in customers for key, *_ in METERS
    ]
    calls = [
        lambda chunk=queries[i:i + 1000]: stubs["meter"].BatchGetUsage(
            meter_pb2.BatchGetUsageRequest(queries=chunk), timeout=60)
        for i in range(0, len(queries), 1000)
    ]
    began = time.perf_counter()
    await bounded(calls, limit=2)
    return time.perf_counter() - began


async def measure(database_url: str, log_dir: Path) -> dict:
    subscriptions = env_int("TALLY_BENCH_INVOICE_SUBSCRIPTIONS", 10_000)
    per_meter = env_int("TALLY_BENCH_INVOICE_EVENTS_PER_METER", 2)
    cluster = ServiceProcesses(database_url=database_url, log_dir=log_dir)
    cluster.extra_env.update(
        TALLY_LOG_LEVEL="warning",
        TALLY_INVOICE_CLOSE_INTERVAL_SECONDS="0",
        **{f"TALLY_{s.upper()}_METRICS_PORT": "0" for s in SERVICES},
    )
    await cluster.start_all()
    channels = {s: connect(cluster.address(s)) for s in SERVICES}
    stubs = {
        "catalog": catalog_pb2_grpc.CatalogServiceStub(channels["catalog"]),
        "ingest": ingest_pb2_grpc.IngestServiceStub(channels["ingest"]),
        "meter": meter_pb2_grpc.MeterServiceStub(channels["meter"]),
        "invoice": invoice_pb2_grpc.InvoiceServiceStub(channels["invoice"]),
    }
    today = dt.datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - dt.timedelta(days=2)
    end = start + dt.timedelta(days=1)
    try:
        print(f"setting up {subscriptions:,} subscriptions", flush=True)
        customers = await setup(stubs, subscriptions, per_meter, start)
        baseline = await baseline_usage(stubs, customers, start, end)
        print(f"  baseline: {2 * len(customers):,} usage queries by BatchGetUsage in {baseline:.1f} s", flush=True)
        as_of = end + dt.timedelta(hours=1)
        load_before = os.getloadavg()[0]
        began = time.perf_counter()
        reply = await stubs["invoice"].CloseDuePeriods(invoice_pb2.CloseDuePeriodsRequest(as_of=_ts(as_of)), timeout=600)
        seconds = time.perf_counter() - began
        print(f"  close: {reply.invoices_created:,} created, {reply.invoices_finalized:,} finalized in {seconds:.1f} s",
              flush=True)
        # Check the work: every invoice finalized, and one invoice's total recomputed by hand.
        listed = await stubs["invoice"].ListInvoices(invoice_pb2.ListInvoicesRequest(page_size=1), timeout=60)
        sample = listed.invoices[0]
        expected = Decimal("10.00") + sum(
            (Decimal(line.usage.value) * Decimal(line.unit_price.value) for line in sample.lines
             if line.kind == invoice_pb2.LINE_KIND_USAGE), Decimal(0))
        assert Decimal(sample.total.value) == expected.quantize(Decimal("0.01")), sample
        again = await stubs["invoice"].CloseDuePeriods(invoice_pb2.CloseDuePeriodsRequest(as_of=_ts(as_of)), timeout=600)
        return {
            "subscriptions": subscriptions,
            "per_meter": per_meter,
            "created": reply.invoices_created,
            "finalized": reply.invoices_finalized,
            "failed": reply.subscriptions_failed,
            "seconds": seconds,
            "baseline": baseline,
            "second_created": again.invoices_created,
            "load": load_before,
        }
    finally:
        for channel in channels.values():
            await channel.close()
        cluster.stop_all()


def report(r: dict) -> str:
    rate = r["created"] / r["seconds"] if r["seconds"] else 0
    verdict = "meets it" if r["seconds"] <= 20 and r["subscriptions"] >= 10_000 else "misses it"
    return "\n".join([
        "## Invoice",
        "",
        f"Period close: one `CloseDuePeriods` call to the invoice process closes the ended daily period of "
        f"{r['subscriptions']:,} subscriptions (one customer each, a $10.00 fee and usage on two SUM meters, "
        f"{r['per_meter']} events per meter per customer, sent through ingest and metered first). It lists the "
        "subscriptions from the catalog, fetches customers and plan versions, reads 2 usages per subscription "
        "from the meter over gRPC (BatchGetUsage, up to 1,000 queries a call), prices, inserts and finalizes (gapless numbers, content hash) one invoice each. "
        "All four services run as real processes on the same machine as Postgres and the client.",
        "",
        "| work | subscriptions | invoices created | finalized | time | invoices/s |",
        "|---|---|---|---|---|---|",
        f"| CloseDuePeriods | {r['subscriptions']:,} | {r['created']:,} | {r['finalized']:,} | **{r['seconds']:.1f} s** | {rate:,.0f} |",
        f"| baseline: the {2 * r['subscriptions']:,} usage queries alone, as bare BatchGetUsage calls | | | | {r['baseline']:.1f} s | |",
        "",
        f"Target: <= 20 s for 10,000 subscriptions on 2 cores: this run {verdict} (1-minute load average "
        f"{r['load']:.1f} when the close started). A second close right after created {r['second_created']} "
        f"invoices (idempotent); {r['failed']} subscriptions failed. The close reads usage with BatchGetUsage "
        "(one SQL statement per 1,000 queries) instead of one GetUsage per subscription and meter.",
    ]) + "\n"


def main(out: Path) -> None:
    run_on_fresh_database("invoice", measure, report, out)

