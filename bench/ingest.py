"""Ingest throughput: StreamEvents vs raw COPY of the same rows, unary SendEvent, and memory.

Run with ``python -m bench ingest`` (``make bench`` runs every benchmark). The ingest and
catalog services run as real subprocesses on a fresh database (DATABASE_URL's server, else the
embedded Postgres). Environment:

- TALLY_BENCH_EVENTS: events to stream (default 1,000,000), in 1,000-event batches.
- TALLY_BENCH_STREAMS: concurrent streams (default 4).
- TALLY_BENCH_UNARY_EVENTS: events sent with unary SendEvent (default 20,000), 32 callers.
- TALLY_BENCH_PHASES: comma-separated subset of ``stream,unary,readlog`` for quick A/B runs
  (default: all three). Without ``stream`` there is no COPY baseline and ReadLog reads only
  the unary events.

Besides rates, the report gives the CPU time (user + system, from /proc/<pid>/stat) the ingest
process spent in each phase, per event or log entry: on 2 shared cores that is what bounds
throughput.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc

from bench.common import cpu_seconds, env_int, run_on_fresh_database
from tally.channels import connect
from tally.db import asyncpg_dsn
from tally_gen.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from tally_gen.common.v1 import common_pb2
from tally_gen.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from tests.harness import REPO, ServiceProcesses

BATCH = 1000
UNARY_CALLERS = 32
READ_LOG_PAGE = 2000  # entries per ReadLog page in the ReadLog phase
PHASES = ("stream", "unary", "readlog")
STREAM_METHOD = "/tally.ingest.v1.IngestService/StreamEvents"
EVENT_TYPES = ("api_request", "tokens", "storage")
REGIONS = ("us-east-1", "eu-west-1", "ap-south-1")

COPY_TABLE = """
CREATE SCHEMA IF NOT EXISTS bench_copy;
CREATE SEQUENCE bench_copy.seq AS bigint;
CREATE TABLE bench_copy.events (
    xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    position bigint NOT NULL DEFAULT nextval('bench_copy.seq'),
    ingest_time timestamptz NOT NULL DEFAULT clock_timestamp(),
    event_id uuid NOT NULL DEFAULT gen_random_uuid(),
    idempotency_key text NOT NULL,
    payload_hash bytea NOT NULL,
    event_type text NOT NULL,
    customer_id text NOT NULL,
    event_time timestamptz NOT NULL,
    properties bytea NOT NULL,
    metered boolean NOT NULL,
    PRIMARY KEY (xid, position),
    UNIQUE (idempotency_key)
);
CREATE INDEX ON bench_copy.events (event_type) WHERE NOT metered;
"""
COPY_COLUMNS = ["idempotency_key", "payload_hash", "event_type", "customer_id", "event_time", "properties", "metered"]


@dataclass
class MemorySampler:
    """Samples VmRSS and VmHWM of one process from /proc while a benchmark runs."""

    pid: int
    interval: float = 0.25
    samples: list[tuple[float, str, int]] = field(default_factory=list)
    phase: str = "idle"
    peak_hwm_kib: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def _read(self) -> tuple[int, int]:
        rss = hwm = 0
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
        return rss, hwm

    def run(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set():
            try:
                rss, hwm = self._read()
            except OSError:
                return
            self.samples.append((time.monotonic() - started, self.phase, rss))
            self.peak_hwm_kib = max(self.peak_hwm_kib, hwm)
            self._stop.wait(self.interval)

    def start(self) -> None:
        threading.Thread(target=self.run, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def rss_by_decile(self, phase: str) -> list[int]:
        """RSS (KiB) at each tenth of the phase: flat means no growth under load."""
        values = [rss for _, p, rss in self.samples if p == phase]
        if not values:
            return []
        return [values[min(len(values) - 1, round(i * (len(values) - 1) / 10))] for i in range(11)]


def build_batches(total: int, external_id: str, run: str) -> tuple[list[bytes], list[tuple]]:
    """Serialized StreamEventsRequest batches, and the same events as COPY rows."""
    base = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    batches: list[bytes] = []
    rows: list[tuple] = []
    ref = common_pb2.CustomerRef(external_id=external_id)
    for start in range(0, total, BATCH):
        request = ingest_pb2.StreamEventsRequest(batch_id=f"{run}-{start // BATCH}")
        for n in range(start, min(start + BATCH, total)):
            event = request.events.add()
            event.idempotency_key = f"{run}-{n}"
            event.event_type = EVENT_TYPES[n % 3]
            event.customer.CopyFrom(ref)
            when = base + dt.timedelta(microseconds=n * 3)
            event.timestamp.FromDatetime(when)
            event.properties.update({"region": REGIONS[n % 3], "tokens": n % 977, "model": "small"})
            props = event.properties.SerializeToString(deterministic=True)
            rows.append(
                (
                    f"copy-{run}-{n}",
                    hashlib.sha256(props).digest(),
                    event.event_type,
                    "cus_bench",
                    when,
                    props,
                    True,
                )
            )
        batches.append(request.SerializeToString())
    return batches, rows


async def stream_all(address: str, batches: list[bytes], streams: int) -> tuple[float, int, int]:
    """Send every batch over ``streams`` concurrent streams; (seconds, accepted, duplicate)."""
    channel = connect(address)
    call_factory = channel.stream_stream(
        STREAM_METHOD, request_serializer=lambda raw: raw, response_deserializer=ingest_pb2.StreamEventsResponse.FromString
    )
    accepted = duplicate = 0
    shares = [batches[i::streams] for i in range(streams)]

    async def one_stream(share: list[bytes]) -> None:
        nonlocal accepted, duplicate
        call = call_factory()

        async def write() -> None:
            for raw in share:
                await call.write(raw)
            await call.done_writing()

        writer = asyncio.create_task(write())
        acked = 0
        while acked < len(share):
            ack = await call.read()
            if ack is grpc.aio.EOF:
                raise RuntimeError("stream ended before every batch was acknowledged")
            if ack.rejected_count:
                raise RuntimeError(f"batch {ack.batch_id}: {ack.rejected_count} rejected: {ack.results[0]}")
            accepted += ack.accepted_count
            duplicate += ack.duplicate_count
            acked += 1
        await writer

    started = time.perf_counter()
    await asyncio.gather(*(one_stream(share) for share in shares))
    elapsed = time.perf_counter() - started
    await channel.close()
    return elapsed, accepted, duplicate


class CopyBaseline:
    """Raw COPY of the same rows into an equivalent table, 1,000-row committed batches."""

    def __init__(self, database_url: str, connections: int) -> None:
        self.database_url = database_url
        self.connections = connections
        self.seconds = 0.0

    async def open(self) -> None:
        self.conn = await asyncpg.connect(asyncpg_dsn(self.database_url))
        await self.conn.execute(COPY_TABLE)
        self.pool = await asyncpg.create_pool(
            asyncpg_dsn(self.database_url), min_size=self.connections, max_size=self.connections
        )

    async def copy_batches(self, rows: list[tuple]) -> None:
        chunks = [rows[i : i + BATCH] for i in range(0, len(rows), BATCH)]
        shares = [chunks[i :: self.connections] for i in range(self.connections)]

        async def copy_share(share) -> None:
            async with self.pool.acquire() as c:
                for chunk in share:
                    await c.copy_records_to_table(
                        "events", schema_name="bench_copy", columns=COPY_COLUMNS, records=chunk
                    )

        started = time.perf_counter()
        await asyncio.gather(*(copy_share(s) for s in shares))
        self.seconds += time.perf_counter() - started

    async def copy_once(self, rows: list[tuple]) -> float:
        """All rows in one COPY (fresh keys), for reference."""
        renamed = [(f"one-{r[0]}", *r[1:]) for r in rows]
        started = time.perf_counter()
        await self.conn.copy_records_to_table("events", schema_name="bench_copy", columns=COPY_COLUMNS, records=renamed)
        return time.perf_counter() - started

    async def close(self) -> None:
        await self.pool.close()
        await self.conn.close()


async def unary_all(address: str, external_id: str, total: int, run: str) -> float:
    channel = connect(address)
    stub = ingest_pb2_grpc.IngestServiceStub(channel)
    ref = common_pb2.CustomerRef(external_id=external_id)
    requests = []
    for n in range(total):
        event = ingest_pb2.Event(idempotency_key=f"{run}-unary-{n}", event_type="api_request", customer=ref)
        event.properties.update({"region": REGIONS[n % 3], "bytes": n})
        requests.append(ingest_pb2.SendEventRequest(event=event))
    queue = iter(requests)

    async def caller() -> None:
        for request in queue:
            reply = await stub.SendEvent(request)
            if reply.duplicate:
                raise RuntimeError("unexpected duplicate")

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(UNARY_CALLERS)))
    elapsed = time.perf_counter() - started
    await channel.close()
    return elapsed


async def read_whole_log(address: str) -> tuple[float, int]:
    """ReadLog from the start until caught up, pages of READ_LOG_PAGE; (seconds, entries)."""
    channel = connect(address)
    stub = ingest_pb2_grpc.IngestServiceStub(channel)
    cursor, entries = "", 0
    started = time.perf_counter()
    while True:
        reply = await stub.ReadLog(ingest_pb2.ReadLogRequest(cursor=cursor, max_entries=READ_LOG_PAGE))
        entries += len(reply.entries)
        cursor = reply.next_cursor
        if reply.caught_up and not reply.entries:
            break
    elapsed = time.perf_counter() - started
    await channel.close()
    return elapsed, entries


def bench_phases() -> tuple[str, ...]:
    chosen = tuple(p.strip() for p in os.environ.get("TALLY_BENCH_PHASES", ",".join(PHASES)).split(",") if p.strip())
    unknown = set(chosen) - set(PHASES)
    if unknown:
        raise SystemExit(f"TALLY_BENCH_PHASES: unknown phase(s) {sorted(unknown)}; choose from {PHASES}")
    return chosen


async def count_events(database_url: str) -> int:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        return await conn.fetchval("SELECT count(*) FROM ingest.events")
    finally:
        await conn.close()


async def measure(database_url: str, log_dir: Path) -> dict:
    phases = bench_phases()
    total = env_int("TALLY_BENCH_EVENTS", 1_000_000) if "stream" in phases else 0
    streams = env_int("TALLY_BENCH_STREAMS", 4)
    unary_total = env_int("TALLY_BENCH_UNARY_EVENTS", 20_000) if "unary" in phases else 0
    cluster = ServiceProcesses(database_url=database_url, log_dir=log_dir)
    cluster.extra_env.update(TALLY_LOG_LEVEL="warning", TALLY_INGEST_METRICS_PORT="0", TALLY_CATALOG_METRICS_PORT="0")
    await cluster.start_all(("catalog", "ingest"))
    results: dict = dict(phases=phases, total=total, streams=streams, unary_total=unary_total)
    try:
        catalog = catalog_pb2_grpc.CatalogServiceStub(connect(cluster.address("catalog")))
        customer = (
            await catalog.CreateCustomer(
                catalog_pb2.CreateCustomerRequest(customer=catalog_pb2.Customer(external_id="acct_bench", name="Bench"))
            )
        ).customer
        for event_type in EVENT_TYPES[:2]:
            await catalog.CreateMeter(
                catalog_pb2.CreateMeterRequest(
                    meter=catalog_pb2.Meter(
                        key=f"bench_{event_type}", name=event_type, event_type=event_type,
                        aggregation=catalog_pb2.AGGREGATION_COUNT,
                    )
                )
            )
        ingest_pid = cluster.procs["ingest"].pid
        print(f"building {total:,} events", flush=True)
        batches, rows = build_batches(total, customer.external_id, "s")
        sampler = MemorySampler(ingest_pid)
        sampler.start()
        # Warm up connections, prepared statements and the catalog cache.
        warm, _ = build_batches(2 * BATCH, customer.external_id, "warm")
        await stream_all(cluster.address("ingest"), warm, 2)
        results["rss_before"] = sampler.samples[-1][2] if sampler.samples else 0

        if "stream" in phases:
            # Stream and COPY take turns, a quarter of the rows at a time, so that the load other
            # processes put on the machine weighs on both alike.
            print(f"streaming {total:,} events over {streams} streams, COPY of the same rows in turns", flush=True)
            copy = CopyBaseline(database_url, streams)
            await copy.open()
            rounds = 4
            per_round = -(-len(batches) // rounds)
            stream_seconds, stream_cpu, accepted, duplicate = 0.0, 0.0, 0, 0
            for turn in range(rounds):
                sampler.phase = "stream"
                part = batches[turn * per_round : (turn + 1) * per_round]
                cpu_before = cpu_seconds(ingest_pid)
                seconds, part_accepted, part_duplicate = await stream_all(cluster.address("ingest"), part, streams)
                stream_cpu += cpu_seconds(ingest_pid) - cpu_before
                sampler.phase = "idle"
                stream_seconds += seconds
                accepted += part_accepted
                duplicate += part_duplicate
                await copy.copy_batches(rows[turn * per_round * BATCH : (turn + 1) * per_round * BATCH])
            if accepted != total or duplicate:
                raise RuntimeError(f"streamed {total} events, {accepted} accepted, {duplicate} duplicate")

            print("resending the first 10% (deduplicated)", flush=True)
            resend = batches[: max(1, len(batches) // 10)]
            resend_seconds, re_accepted, re_duplicate = await stream_all(cluster.address("ingest"), resend, streams)
            if re_accepted:
                raise RuntimeError(f"a resent event was stored twice ({re_accepted})")
            results.update(
                stream_seconds=stream_seconds, stream_cpu=stream_cpu, resend_events=len(resend) * BATCH,
                resend_seconds=resend_seconds, re_duplicate=re_duplicate, deciles=sampler.rss_by_decile("stream"),
            )

        if "unary" in phases:
            print(f"unary SendEvent: {unary_total:,} events, {UNARY_CALLERS} callers", flush=True)
            sampler.phase = "unary"
            cpu_before = cpu_seconds(ingest_pid)
            results["unary_seconds"] = await unary_all(cluster.address("ingest"), customer.external_id, unary_total, "u")
            results["unary_cpu"] = cpu_seconds(ingest_pid) - cpu_before
            sampler.phase = "idle"
            results["unary_deciles"] = sampler.rss_by_decile("unary")
        stored = await count_events(database_url)
        expected = total + 2 * BATCH + unary_total
        if stored != expected:
            raise RuntimeError(f"expected {expected} stored events, found {stored}")

        if "readlog" in phases:
            print(f"ReadLog of all {stored:,} entries, pages of {READ_LOG_PAGE:,}", flush=True)
            cpu_before = cpu_seconds(ingest_pid)
            results["readlog_seconds"], results["readlog_entries"] = await read_whole_log(cluster.address("ingest"))
            results["readlog_cpu"] = cpu_seconds(ingest_pid) - cpu_before
            if results["readlog_entries"] != stored:
                raise RuntimeError(f"ReadLog served {results['readlog_entries']} entries, {stored} stored")

        if "stream" in phases:
            print("one raw COPY of all rows, for reference", flush=True)
            results["copy_single"] = await copy.copy_once(rows)
            results["copy_batched"] = copy.seconds
            await copy.close()
        sampler.stop()
        results["peak_hwm"] = sampler.peak_hwm_kib
        return results
    finally:
        cluster.stop_all()


def report(r: dict) -> str:
    mib = lambda kib: f"{kib / 1024:.0f}"  # noqa: E731
    lines = ["## Ingest", ""]
    if "stream" in r["phases"]:
        lines += [
            f"{r['total']:,} events streamed with StreamEvents in 1,000-event batches over {r['streams']} concurrent "
            "streams to the ingest service (a real subprocess; catalog too), each batch validated, deduplicated and "
            "committed before its acknowledgement. Baseline: raw COPY of the same rows into an equivalent table "
            "(same columns, same unique index on idempotency_key, same primary key and partial index), in the same run.",
            "",
        ]
    else:
        lines += [f"Phases run: {', '.join(r['phases'])} (TALLY_BENCH_PHASES).", ""]
    lines += ["| measure | result | target |", "|---|---|---|"]
    if "stream" in r["phases"]:
        stream_rate = r["total"] / r["stream_seconds"]
        copy_rate = r["total"] / r["copy_batched"]
        single_rate = r["total"] / r["copy_single"]
        lines += [
            f"| StreamEvents, durable + deduplicated | **{stream_rate:,.0f} events/s** ({r['stream_seconds']:.1f} s) | >= 50,000 |",
            f"| raw COPY, 1,000-row committed batches, {r['streams']} connections, in turns with the stream | {copy_rate:,.0f} rows/s ({r['copy_batched']:.1f} s) | |",
            f"| StreamEvents / raw COPY | **{stream_rate / copy_rate:.2f}x** | >= 0.7x |",
            f"| raw COPY, one COPY of all rows (for reference) | {single_rate:,.0f} rows/s ({r['copy_single']:.1f} s) | |",
            f"| StreamEvents / single COPY | {stream_rate / single_rate:.2f}x | |",
            f"| ingest CPU while streaming | {r['stream_cpu']:.1f} s, {r['stream_cpu'] / r['total'] * 1e6:.2f} s per million events | |",
            f"| resend of {r['resend_events']:,} already-stored events | {r['resend_events'] / r['resend_seconds']:,.0f} events/s, "
            f"{r['re_duplicate']:,} acknowledged as duplicates, 0 stored | |",
        ]
    if "unary" in r["phases"]:
        unary_rate = r["unary_total"] / r["unary_seconds"]
        lines += [
            f"| unary SendEvent, {UNARY_CALLERS} concurrent callers, {r['unary_total']:,} events | **{unary_rate:,.0f} events/s** | >= 2,500 |",
            f"| ingest CPU per unary SendEvent | {r['unary_cpu'] / r['unary_total'] * 1e6:,.0f} us | |",
        ]
    if "readlog" in r["phases"]:
        lines.append(
            f"| ReadLog of the whole log, pages of {READ_LOG_PAGE:,} | {r['readlog_entries'] / r['readlog_seconds']:,.0f} entries/s, "
            f"ingest CPU {r['readlog_cpu'] / r['readlog_entries'] * 1e6:.1f} us per entry | |"
        )
    lines += [f"| ingest peak RSS (VmHWM) | {mib(r['peak_hwm'])} MiB | flat |", ""]
    memory = f"Ingest RSS (MiB) before streaming: {mib(r['rss_before'])}"
    if "stream" in r["phases"]:
        memory += f"; at each tenth of the stream: {', '.join(mib(v) for v in r['deciles'])}"
    if "unary" in r["phases"]:
        memory += f"; during unary: {', '.join(mib(v) for v in r['unary_deciles'][::2])}"
    lines.append(
        memory + ". The client generates and serializes every batch before the clock starts; client, services and "
        "Postgres share the machine's cores; CPU is user + system time of the ingest process (/proc/<pid>/stat)."
    )
    return "\n".join(lines) + "\n"


def main(out: Path) -> None:
    run_on_fresh_database("ingest", measure, report, out)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "bench" / "results" / "ingest.md")
