"""Meter benchmarks: freshness (lag) while ingest streams, and GetUsage over 10M stored events.

Run with ``python -m bench meter`` (``make bench`` runs every benchmark). Catalog, ingest and
meter run as real subprocesses on a fresh database (DATABASE_URL's server, else the embedded
Postgres). Environment:

- TALLY_BENCH_METER_LAG_EVENTS: events streamed during the lag phases (default 300,000).
- TALLY_BENCH_METER_RATES: the paced phases' rates in events/s (default 10000,15000,20000).
- TALLY_BENCH_METER_PHASES: which phases run, of lag and usage (default both).
- TALLY_BENCH_METER_EVENTS: events stored for the GetUsage phase (default 10,000,000).
- TALLY_BENCH_METER_CUSTOMERS: customers they belong to (default 10,000).
- TALLY_BENCH_METER_QUERIES: GetUsage calls measured (default 2,000).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import grpc

from bench.common import cpu_seconds, env_int, postgres_cpu_seconds, run_on_fresh_database
from tally.channels import connect
from tally.db import asyncpg_dsn
from tally_gen.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from tally_gen.common.v1 import common_pb2
from tally_gen.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from tally_gen.meter.v1 import meter_pb2, meter_pb2_grpc
from tests.harness import ServiceProcesses

UTC = dt.timezone.utc
BATCH = 1000
STREAMS = 4
STREAM_METHOD = "/tally.ingest.v1.IngestService/StreamEvents"
REGIONS = ("us-east-1", "eu-west-1", "ap-south-1")
MONTH_START = dt.datetime(2026, 10, 1, tzinfo=UTC)
MONTH_END = dt.datetime(2026, 11, 1, tzinfo=UTC)
USAGE_METER = "bench_usage_tokens"
# How often the probe asks GetUsage whether its event counts yet: the lag's resolution. Asking
# much more often loads the meter's event loop with the asking (500 calls/s at 2 ms).
PROBE_POLL_SECONDS = 0.01


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


# ---------------------------------------------------------------- lag


def build_batches(total: int, customers: list[str], run: str) -> list[bytes]:
    base = dt.datetime.now(UTC) - dt.timedelta(hours=1)
    batches = []
    for start in range(0, total, BATCH):
        request = ingest_pb2.StreamEventsRequest(batch_id=f"{run}-{start // BATCH}")
        for n in range(start, min(start + BATCH, total)):
            event = request.events.add()
            event.idempotency_key = f"{run}-{n}"
            event.event_type = "api_request" if n % 2 else "tokens"
            event.customer.id = customers[n % len(customers)]
            event.timestamp.FromDatetime(base + dt.timedelta(microseconds=n * 7))
            event.properties.update({"region": REGIONS[n % 3], "tokens": n % 977, "model": "small"})
        batches.append(request.SerializeToString())
    return batches


async def stream_batches(channel: grpc.aio.Channel, batches: list[bytes], rate: float | None) -> float:
    """Send the batches over STREAMS streams, paced at ``rate`` events/s when given; returns seconds."""
    factory = channel.stream_stream(
        STREAM_METHOD, request_serializer=lambda raw: raw, response_deserializer=ingest_pb2.StreamEventsResponse.FromString
    )
    started = time.perf_counter()
    shares = [list(enumerate(batches))[i::STREAMS] for i in range(STREAMS)]

    async def one(share) -> None:
        call = factory()

        async def write() -> None:
            for index, raw in share:
                if rate:
                    due = started + index * BATCH / rate
                    delay = due - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                await call.write(raw)
            await call.done_writing()

        writer = asyncio.create_task(write())
        for _ in share:
            ack = await call.read()
            if ack is grpc.aio.EOF or ack.rejected_count:
                raise RuntimeError(f"stream failed: {ack}")
        await writer

    await asyncio.gather(*(one(s) for s in shares))
    return time.perf_counter() - started


async def probe_freshness(channels, customer: str, stop: asyncio.Event, samples: list[float]) -> None:
    """Repeatedly: send one probe event, then poll GetUsage until it counts; record the delay."""
    ingest = ingest_pb2_grpc.IngestServiceStub(channels["ingest"])
    meter = meter_pb2_grpc.MeterServiceStub(channels["meter"])
    start = dt.datetime.now(UTC) - dt.timedelta(days=1)
    end = dt.datetime.now(UTC) + dt.timedelta(days=1)
    request = meter_pb2.GetUsageRequest(customer=common_pb2.CustomerRef(id=customer), meter_key="bench_probe")
    request.start.FromDatetime(start)
    request.end.FromDatetime(end)
    # Earlier phases' probes are in the same period: count only this phase's.
    sent = int((await meter.GetUsage(request, timeout=30)).value.value)
    while not stop.is_set():
        event = ingest_pb2.Event(
            idempotency_key=f"probe-{os.getpid()}-{time.time_ns()}",
            event_type="probe",
            customer=common_pb2.CustomerRef(id=customer),
        )
        await ingest.SendEvent(ingest_pb2.SendEventRequest(event=event), timeout=30)
        acked = time.perf_counter()
        sent += 1
        while True:
            reply = await meter.GetUsage(request, timeout=30)
            if int(reply.value.value) >= sent:
                break
            await asyncio.sleep(PROBE_POLL_SECONDS)
        samples.append(time.perf_counter() - acked)
        await asyncio.sleep(0.05)


async def sample_time_behind(channels, stop: asyncio.Event, samples: list[float]) -> None:
    """Every 100 ms: GetMeterStatus.time_behind (ingest time of the newest entry minus that of the last applied one)."""
    meter = meter_pb2_grpc.MeterServiceStub(channels["meter"])
    while not stop.is_set():
        status = await meter.GetMeterStatus(meter_pb2.GetMeterStatusRequest(), timeout=30)
        samples.append(status.time_behind.seconds + status.time_behind.nanos / 1e9)
        await asyncio.sleep(0.1)


async def wait_caught_up(channels, timeout: float = 600) -> float:
    ingest = ingest_pb2_grpc.IngestServiceStub(channels["ingest"])
    meter = meter_pb2_grpc.MeterServiceStub(channels["meter"])
    head = (await ingest.ReadLog(ingest_pb2.ReadLogRequest(max_entries=1), timeout=60)).head_position
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        status = await meter.GetMeterStatus(meter_pb2.GetMeterStatusRequest(), timeout=30)
        if status.caught_up and status.head_position >= head:
            return time.perf_counter() - started
        await asyncio.sleep(0.02)
    raise TimeoutError("meter did not catch up")


async def lag_phase(
    channels, cpu_of: dict[str, Callable[[], float]], customers, probe_customer, total: int, rate: float | None, run: str
) -> dict:
    batches = build_batches(total, customers, run)
    stop = asyncio.Event()
    samples: list[float] = []
    behind: list[float] = []
    prober = asyncio.create_task(probe_freshness(channels, probe_customer, stop, samples))
    sampler = asyncio.create_task(sample_time_behind(channels, stop, behind))
    cpu_before = {name: read() for name, read in cpu_of.items()}
    seconds = await stream_batches(channels["ingest"], batches, rate)
    # What is left to apply when the stream ends, and how fast the meter applies it on its own.
    status = await meter_pb2_grpc.MeterServiceStub(channels["meter"]).GetMeterStatus(
        meter_pb2.GetMeterStatusRequest(), timeout=30
    )
    backlog = 0 if status.caught_up else max(0, status.head_position - status.applied_position)
    drain = await wait_caught_up(channels)
    cpu = {name: read() - cpu_before[name] for name, read in cpu_of.items()}
    stop.set()
    await prober
    await sampler
    return {
        "events": total, "seconds": seconds, "rate": total / seconds, "drain": drain, "lag": samples, "behind": behind,
        "backlog": backlog, "cpu": cpu,
        # Other work on the machine skews every figure: record it.
        "load": os.getloadavg()[0],
    }


# ---------------------------------------------------------------- GetUsage at scale

RAW_TABLE = """
CREATE SCHEMA IF NOT EXISTS bench_raw;
CREATE UNLOGGED TABLE bench_raw.events (customer_id text NOT NULL, ts timestamptz NOT NULL, value numeric NOT NULL);
"""


async def load_usage_state(database_url: str, events: int, customers: int) -> dict:
    """10M raw events in time order; the meter's one-minute buckets computed from them."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await conn.execute(RAW_TABLE)
        started = time.perf_counter()
        # Arrival order is time order, as in production: one customer's rows are spread out.
        await conn.execute(
            f"""
            INSERT INTO bench_raw.events (customer_id, ts, value)
            SELECT 'bc_' || lpad(((i * 7919) % {customers})::text, 5, '0'),
                   $1::timestamptz + (i::float8 / {events}) * ($2::timestamptz - $1::timestamptz),
                   ((i * 31) % 10000)::numeric / 100
            FROM generate_series(0::bigint, {events} - 1) AS i
            """,
            MONTH_START,
            MONTH_END,
        )
        raw_insert = time.perf_counter() - started
        started = time.perf_counter()
        await conn.execute("CREATE INDEX ON bench_raw.events (customer_id, ts)")
        raw_index = time.perf_counter() - started
        started = time.perf_counter()
        await conn.execute(
            """
            INSERT INTO meter.buckets (customer_id, meter_key, window_start, dims_key, dims, count, total, minimum, maximum,
                                       latest_ts, latest_id, latest_value, first_ts, integral)
            SELECT customer_id, $1, date_bin('1 minute', ts, '2000-01-01 00:00+00'), '{}', '{}'::jsonb,
                   count(*), sum(value), min(value), max(value), max(ts), '', (array_agg(value ORDER BY ts DESC))[1],
                   min(ts), 0
            FROM bench_raw.events
            GROUP BY customer_id, date_bin('1 minute', ts, '2000-01-01 00:00+00')
            ORDER BY 3
            """,
            USAGE_METER,
        )
        await conn.execute(
            """
            INSERT INTO meter.day_buckets (customer_id, meter_key, day, dims_key, dims, count, total, minimum, maximum,
                                           latest_ts, latest_id, latest_value)
            SELECT customer_id, meter_key, date_bin('1 day', window_start, '2000-01-01 00:00+00'), dims_key, dims_key::jsonb,
                   sum(count), sum(total), min(minimum), max(maximum), max(latest_ts), '',
                   (array_agg(latest_value ORDER BY latest_ts DESC))[1]
            FROM meter.buckets WHERE meter_key = $1
            GROUP BY 1, 2, 3, 4
            """,
            USAGE_METER,
        )
        bucket_load = time.perf_counter() - started
        await conn.execute("VACUUM ANALYZE bench_raw.events")
        await conn.execute("VACUUM ANALYZE meter.buckets")
        await conn.execute("VACUUM ANALYZE meter.day_buckets")
        buckets = await conn.fetchval("SELECT count(*) FROM meter.buckets WHERE meter_key = $1", USAGE_METER)
        stored = await conn.fetchval("SELECT count(*) FROM bench_raw.events")
        return {"raw_insert": raw_insert, "raw_index": raw_index, "bucket_load": bucket_load, "buckets": buckets, "stored": stored}
    finally:
        await conn.close()


async def usage_phase(database_url: str, channels, customers: int, queries: int) -> dict:
    meter = meter_pb2_grpc.MeterServiceStub(channels["meter"])
    rng = random.Random(1)
    ids = [f"bc_{rng.randrange(customers):05d}" for _ in range(queries + 200)]

    def request(customer: str) -> meter_pb2.GetUsageRequest:
        r = meter_pb2.GetUsageRequest(customer=common_pb2.CustomerRef(id=customer), meter_key=USAGE_METER)
        r.start.FromDatetime(MONTH_START)
        r.end.FromDatetime(MONTH_END)
        return r

    rpc: list[float] = []
    answers: dict[str, str] = {}
    for i, customer in enumerate(ids):
        started = time.perf_counter()
        reply = await meter.GetUsage(request(customer), timeout=30)
        if i >= 200:
            rpc.append(time.perf_counter() - started)
        answers[customer] = reply.value.value
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    raw: list[float] = []
    try:
        statement = await conn.prepare(
            "SELECT coalesce(sum(value), 0) FROM bench_raw.events WHERE customer_id = $1 AND ts >= $2 AND ts < $3"
        )
        mismatches = 0
        for i, customer in enumerate(ids):
            started = time.perf_counter()
            total = await statement.fetchval(customer, MONTH_START, MONTH_END)
            if i >= 200:
                raw.append(time.perf_counter() - started)
            if str(total) != answers[customer] and float(total) != float(answers[customer]):
                mismatches += 1
    finally:
        await conn.close()
    if mismatches:
        raise RuntimeError(f"GetUsage disagreed with the raw SUM for {mismatches} customers")
    return {"rpc": rpc, "raw": raw, "queries": queries}


# ---------------------------------------------------------------- main


async def setup_catalog(channels, customers: int) -> tuple[list[str], str]:
    catalog = catalog_pb2_grpc.CatalogServiceStub(channels["catalog"])
    meters = [
        ("bench_api_requests", "api_request", catalog_pb2.AGGREGATION_COUNT, "", []),
        ("bench_tokens", "tokens", catalog_pb2.AGGREGATION_SUM, "tokens", ["region"]),
        ("bench_probe", "probe", catalog_pb2.AGGREGATION_COUNT, "", []),
        (USAGE_METER, "usage_tokens", catalog_pb2.AGGREGATION_SUM, "tokens", []),
    ]
    for key, event_type, aggregation, value_property, group_by in meters:
        await catalog.CreateMeter(
            catalog_pb2.CreateMeterRequest(
                meter=catalog_pb2.Meter(
                    key=key, name=key, event_type=event_type, aggregation=aggregation,
                    value_property=value_property, group_by=group_by,
                )
            )
        )
    ids = []
    for n in range(customers + 1):
        reply = await catalog.CreateCustomer(
            catalog_pb2.CreateCustomerRequest(customer=catalog_pb2.Customer(external_id=f"acct_meter_bench_{n}", name=f"Bench {n}"))
        )
        ids.append(reply.customer.id)
    return ids[:-1], ids[-1]


async def measure(database_url: str, log_dir: Path) -> dict:
    lag_events = env_int("TALLY_BENCH_METER_LAG_EVENTS", 300_000)
    rates = [int(r) for r in os.environ.get("TALLY_BENCH_METER_RATES", "10000,15000,20000").split(",") if r]
    phases = set(os.environ.get("TALLY_BENCH_METER_PHASES", "lag,usage").split(","))
    usage_events = env_int("TALLY_BENCH_METER_EVENTS", 10_000_000)
    usage_customers = env_int("TALLY_BENCH_METER_CUSTOMERS", 10_000)
    queries = env_int("TALLY_BENCH_METER_QUERIES", 2_000)
    cluster = ServiceProcesses(database_url=database_url, log_dir=log_dir)
    cluster.extra_env.update(
        TALLY_LOG_LEVEL="warning",
        TALLY_INGEST_METRICS_PORT="0",
        TALLY_CATALOG_METRICS_PORT="0",
        TALLY_METER_METRICS_PORT="0",
    )
    await cluster.start_all(("catalog", "ingest", "meter"))
    channels = {s: connect(cluster.address(s)) for s in ("catalog", "ingest", "meter")}
    # What each phase reads the CPU time of.
    cpu_of = {
        "ingest": lambda pid=cluster.procs["ingest"].pid: cpu_seconds(pid),
        "meter": lambda pid=cluster.procs["meter"].pid: cpu_seconds(pid),
        "postgres": postgres_cpu_seconds,
    }
    results: dict = {"lag": [], "usage": None, "customers": usage_customers}
    try:
        customers, probe_customer = await setup_catalog(channels, 100)
        if "lag" in phases:
            # Warm-up: connections, prepared statements, caches.
            await lag_phase(channels, cpu_of, customers, probe_customer, 5 * BATCH, None, "warm")
            for rate in [*rates, None]:
                name = f"paced at {rate:,} events/s" if rate else "full speed"
                print(f"{name}: {lag_events:,} events", flush=True)
                phase = await lag_phase(channels, cpu_of, customers, probe_customer, lag_events, rate, f"r{rate or 'full'}")
                phase["name"] = name
                results["lag"].append(phase)
                lag = phase["lag"]
                print(f"  {phase['rate']:,.0f} events/s, lag p50 {percentile(lag, 0.5):.3f} s, "
                      f"p99 {percentile(lag, 0.99):.3f} s, behind p99 {percentile(phase['behind'], 0.99):.3f} s, "
                      f"backlog {phase['backlog']:,}, drain {phase['drain']:.1f} s, cpu {phase['cpu']}", flush=True)
        if "usage" in phases:
            print(f"loading {usage_events:,} events for {usage_customers:,} customers", flush=True)
            load = await load_usage_state(database_url, usage_events, usage_customers)
            print(f"GetUsage x {queries:,}", flush=True)
            usage = await usage_phase(database_url, channels, usage_customers, queries)
            usage["load"] = os.getloadavg()[0]
            results["usage"] = {"load": load, "usage": usage}
        return results
    finally:
        for channel in channels.values():
            await channel.close()
        cluster.stop_all()


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def report(r: dict) -> str:
    def lag_row(phase: dict) -> str:
        lag, behind, cpu = phase["lag"], phase["behind"], phase["cpu"]

        def per_event(seconds: float) -> str:
            return f"{seconds * 1e6 / phase['events']:.0f}"

        # The meter's own pace once the stream has ended: the backlog left over the time to apply it.
        alone = f"{phase['backlog'] / phase['drain']:,.0f}/s" if phase["backlog"] and phase["drain"] > 0.5 else "-"
        return (
            f"| {phase['name']}, {phase['events']:,} events | {phase['rate']:,.0f} events/s | {len(lag)} | "
            f"**{ms(percentile(lag, 0.5))}** | **{ms(percentile(lag, 0.99))}** | {ms(max(lag))} | "
            f"{ms(percentile(behind, 0.5))} / {ms(percentile(behind, 0.99))} | {phase['backlog']:,} in {ms(phase['drain'])} ({alone}) | "
            f"{per_event(cpu['ingest'])} / {per_event(cpu['meter'])} / {per_event(cpu['postgres'])} us | {phase['load']:.1f} |"
        )

    lines = ["## Meter", ""]
    if r["lag"]:
        lines += [
            "Freshness: while events stream into ingest (StreamEvents, 1,000-event batches, 4 streams, paced or at "
            "full speed), a probe sends one event with SendEvent and polls GetUsage every 10 ms until it counts; the delay from "
            "SendEvent's acknowledgement to the usage showing it is one lag sample. In parallel GetMeterStatus is "
            "sampled every 100 ms (time_behind: ingest time of the newest log entry minus that of the last applied "
            "one). When the stream ends, the entries not yet applied and the time the meter takes to apply them "
            "(alone, with ingest idle) are recorded. CPU is user + system time over the phase (stream and catch-up) "
            "of the ingest process, the meter process and all Postgres processes, per event streamed. Catalog, ingest and meter run as real processes on the same 2-core machine as Postgres and the "
            "client.",
            "",
            "| ingest load | ingest rate achieved | probes | lag p50 | lag p99 | lag max | status time_behind p50 / p99 "
            "| left to apply when the stream ended (meter alone) | CPU per event, ingest / meter / Postgres | load average (1 min) |",
            "|---|---|---|---|---|---|---|---|---|---|",
            *[lag_row(phase) for phase in r["lag"]],
            "",
            "Target: lag p99 <= 1 s while ingest sustains its benchmark rate. (Lago publishes < 2 s event to billable.)",
            "",
        ]
    if r["usage"]:
        load, usage = r["usage"]["load"], r["usage"]["usage"]
        rpc, raw = usage["rpc"], usage["raw"]
        lines += [
            f"GetUsage: one customer's calendar month (SUM meter) with {load['stored']:,} events stored for "
            f"{r.get('customers', 10_000):,} customers ({load['buckets']:,} one-minute buckets and their UTC-day roll-ups, "
            "loaded in time order from the same events with the meter's bucket shape; a month reads ~30 day rows plus the "
            "minute rows of partial days). The baseline is a prepared "
            "`SELECT sum(value)` over a raw events table with a (customer_id, ts) index, in the same run, "
            "called directly on asyncpg (no gRPC). Every GetUsage answer was checked equal to the raw SUM.",
            "",
            "| query | calls | p50 | p99 |",
            "|---|---|---|---|",
            f"| GetUsage RPC (gRPC + buckets) | {len(rpc):,} | **{ms(percentile(rpc, 0.5))}** | **{ms(percentile(rpc, 0.99))}** |",
            f"| raw SUM over events (SQL only) | {len(raw):,} | {ms(percentile(raw, 0.5))} | {ms(percentile(raw, 0.99))} |",
            "",
            f"Target: GetUsage p99 <= 5 ms. (Lago publishes < 100 ms p99 aggregation.) Load average after the "
            f"queries: {usage['load']:.1f} on {os.cpu_count()} cores.",
            "",
            f"Load times: raw events {load['raw_insert']:.0f} s + index {load['raw_index']:.0f} s; "
            f"buckets {load['bucket_load']:.0f} s.",
        ]
    return "\n".join(lines) + "\n"


def main(out: Path) -> None:
    run_on_fresh_database("meter", measure, report, out)
