"""Fault injection on real processes: a private cluster on its own database, workloads with
known exact answers, and SIGKILL at a seeded random moment."""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import grpc

from tally.channels import connect
from tally.client import AsyncEventSender, EventOutcome
from tally.migrations import upgrade
from tally_gen.catalog.v1 import catalog_pb2
from tally_gen.common.v1 import common_pb2
from tally_gen.invoice.v1 import invoice_pb2, invoice_pb2_grpc
from tests.harness import REPO, ServiceProcesses, drop_database, recreate_database, unique
from tests.meter.helpers import Stubs, ts

UTC = timezone.utc
SOAK_RESULTS = REPO / ".tally" / "soak-results.jsonl"

# The cluster applies and closes in small steps, so a kill lands mid-work more often.
CLUSTER_ENV = {
    "TALLY_METER_BATCH_SIZE": "200",
    "TALLY_METER_WAIT_MILLIS": "50",
    "TALLY_INVOICE_CLOSE_INTERVAL_SECONDS": "0",
    "TALLY_INVOICE_GRACE_SECONDS": "0",
    "TALLY_SHUTDOWN_GRACE_SECONDS": "2",
}


@dataclass
class FaultCluster:
    """The four services on a database of their own: no other test's meter competes for the
    applier lease, so killing this meter really stops the applying."""

    processes: ServiceProcesses
    stubs: Stubs
    invoice: invoice_pb2_grpc.InvoiceServiceStub
    channels: list[grpc.aio.Channel]

    def address(self, service: str) -> str:
        return self.processes.address(service)

    async def kill_and_restart(self, service: str, down_for: float) -> None:
        """SIGKILL ``service``, leave it down for ``down_for`` seconds, start it, wait for SERVING."""
        self.processes.kill(service)
        await asyncio.sleep(down_for)
        self.processes.start(service)
        await self.processes.wait(service)


async def start_fault_cluster(
    server_url: str,
    log_dir,
    *,
    extra_env: dict[str, str] | None = None,
    service_env: dict[str, dict[str, str]] | None = None,
    api_key: str | None = None,
) -> tuple[FaultCluster, str, str]:
    """The four services on a fresh database; ``api_key`` is what the cluster's stubs present."""
    name = f"tally_fault_{os.getpid()}_{unique('db')[-6:]}"
    database_url = await recreate_database(server_url, name)
    for service in ("catalog", "ingest", "meter", "invoice"):
        await asyncio.to_thread(upgrade, service, database_url)
    processes = ServiceProcesses(
        database_url=database_url,
        log_dir=log_dir,
        extra_env={**CLUSTER_ENV, **(extra_env or {})},
        service_env=dict(service_env or {}),
    )
    await processes.start_all()
    channels = [connect(processes.address(s), api_key=api_key) for s in ("catalog", "ingest", "meter", "invoice")]
    cluster = FaultCluster(processes, Stubs(*channels[:3]), invoice_pb2_grpc.InvoiceServiceStub(channels[3]), channels)
    return cluster, name, database_url


async def stop_fault_cluster(cluster: FaultCluster, server_url: str, name: str) -> None:
    for channel in cluster.channels:
        await channel.close()
    await asyncio.to_thread(cluster.processes.stop_all)
    await drop_database(server_url, name)


def record_soak_result(kind: str, seed: int, **figures) -> None:
    """Append one run's figures for RELIABILITY.md (only under `make soak`)."""
    if os.environ.get("TALLY_SOAK_RECORD") != "1":
        return
    SOAK_RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with SOAK_RESULTS.open("a") as out:
        out.write(json.dumps({"kind": kind, "seed": seed, "at": datetime.now(UTC).isoformat(), **figures}) + "\n")


# ---- streaming workload (ingest and meter kills) -----------------------------------------


@dataclass
class UsageWorkload:
    """Events with random exact quantities inside one hour, and the answers they must give."""

    event_type: str
    sum_meter: str
    count_meter: str
    customer_id: str
    start: datetime
    events: list[tuple[str, datetime, str]]
    outcomes: dict[str, str] = field(default_factory=dict)

    @property
    def expected_sum(self) -> Decimal:
        return sum((Decimal(q) for _, _, q in self.events), Decimal(0))

    rejections: list[EventOutcome] = field(default_factory=list)

    def on_result(self, outcome: EventOutcome) -> None:
        self.outcomes[outcome.idempotency_key] = outcome.status
        if outcome.status == "rejected":
            self.rejections.append(outcome)


async def usage_workload(cluster: FaultCluster, rng: random.Random, count: int) -> UsageWorkload:
    event_type = unique("fault")
    sum_meter = await cluster.stubs.create_meter(event_type, "SUM", "qty")
    count_meter = await cluster.stubs.create_meter(event_type, "COUNT")
    customer_id = await cluster.stubs.create_customer()
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=1)
    prefix = unique("ev")
    events = [
        (
            f"{prefix}-{i}",
            start + timedelta(seconds=rng.randrange(3600), microseconds=rng.randrange(1_000_000)),
            # Cents with up to 12 places: exact only if every step is Decimal.
            str(Decimal(rng.randrange(1, 10**6)) / Decimal(10 ** rng.randrange(0, 13))),
        )
        for i in range(count)
    ]
    return UsageWorkload(event_type, sum_meter, count_meter, customer_id, start, events)


async def stream_with_kill(
    cluster: FaultCluster, workload: UsageWorkload, rng: random.Random, victim: str
) -> dict[str, float]:
    """Stream every event through a retrying sender and SIGKILL ``victim`` mid-stream."""
    return await stream_with_fault(
        cluster, workload, rng, lambda down_for: cluster.kill_and_restart(victim, down_for)
    )


async def stream_with_fault(
    cluster: FaultCluster, workload: UsageWorkload, rng: random.Random, fault, max_down: float = 0.5
) -> dict[str, float]:
    """Stream every event through a retrying sender; run ``fault(down_for)`` mid-stream."""
    batch_size = 100
    batches = -(-len(workload.events) // batch_size)
    kill_after = rng.randrange(1, max(2, batches - 2))
    jitter = rng.uniform(0, 0.05)
    down_for = rng.uniform(0, max_down)
    sender = AsyncEventSender(
        cluster.address("ingest"),
        batch_size=batch_size,
        flush_interval=0.02,
        max_buffered=batch_size * 4,
        initial_backoff=0.05,
        max_backoff=0.5,
        max_reconnects=200,
        on_result=workload.on_result,
    )

    async def produce() -> None:
        for key, when, qty in workload.events:
            await sender.send(
                workload.event_type,
                customer_id=workload.customer_id,
                properties={"qty": qty},
                timestamp=when,
                idempotency_key=key,
            )

    async def kill_mid_stream() -> None:
        while sender.stats.batches_acknowledged < kill_after:
            await asyncio.sleep(0.005)
        await asyncio.sleep(jitter)
        await fault(down_for)

    started = time.monotonic()
    async with sender:
        await asyncio.gather(produce(), kill_mid_stream())
    return {
        "kill_after_batches": kill_after,
        "down_for_s": round(down_for, 3),
        "reconnects": sender.stats.reconnects,
        "accepted": sender.stats.accepted,
        "duplicates": sender.stats.duplicate,
        "rejected": sender.stats.rejected,
        "elapsed_s": round(time.monotonic() - started, 2),
    }


async def settled_usage(cluster: FaultCluster, workload: UsageWorkload) -> tuple[Decimal, Decimal]:
    """(sum, count) once the meter has applied everything ingest committed."""
    await cluster.stubs.wait_applied(timeout=60)
    end = workload.start + timedelta(hours=1)
    total = await cluster.stubs.usage(workload.customer_id, workload.sum_meter, workload.start, end)
    count = await cluster.stubs.usage(workload.customer_id, workload.count_meter, workload.start, end)
    return Decimal(total.value.value), Decimal(count.value.value)


# ---- period close workload (invoice kills) -----------------------------------------------


@dataclass
class BillingWorkload:
    """Daily subscriptions with known usage per day: each ended day has one exact invoice."""

    subscriptions: dict[str, str]  # subscription id -> customer id
    days: list[datetime]
    # (subscription id, day start) -> expected total
    expected: dict[tuple[str, datetime], Decimal]


FEE = Decimal("1.00")
UNIT_PRICE = Decimal("0.01")


async def billing_workload(cluster: FaultCluster, rng: random.Random, customers: int, days: int) -> BillingWorkload:
    event_type = unique("billed")
    meter_key = await cluster.stubs.create_meter(event_type, "SUM", "qty")
    plan_key = unique("daily")
    D = lambda v: common_pb2.Decimal(value=str(v))  # noqa: E731
    await cluster.stubs.catalog.CreatePlan(
        catalog_pb2.CreatePlanRequest(
            plan=catalog_pb2.PlanSpec(
                key=plan_key,
                name="Daily",
                currency="USD",
                interval=catalog_pb2.BILLING_INTERVAL_DAY,
                interval_count=1,
                charges=[
                    catalog_pb2.Charge(
                        key="base", name="Base", fixed=catalog_pb2.FixedFee(amount=D(FEE), timing=catalog_pb2.FEE_TIMING_IN_ARREARS)
                    ),
                    catalog_pb2.Charge(
                        key="units",
                        name="Units",
                        usage=catalog_pb2.UsageCharge(
                            meter_key=meter_key,
                            price=catalog_pb2.Price(model=catalog_pb2.PRICING_MODEL_PER_UNIT, unit_price=D(UNIT_PRICE)),
                        ),
                    ),
                ],
            )
        ),
        timeout=10,
    )
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    first_day = today - timedelta(days=days)
    day_starts = [first_day + timedelta(days=d) for d in range(days)]
    subscriptions: dict[str, str] = {}
    expected: dict[tuple[str, datetime], Decimal] = {}
    events = []
    for _ in range(customers):
        customer_id = await cluster.stubs.create_customer()
        reply = await cluster.stubs.catalog.CreateSubscription(
            catalog_pb2.CreateSubscriptionRequest(
                customer=common_pb2.CustomerRef(id=customer_id),
                plan_key=plan_key,
                start_time=ts(first_day),
                anchor=catalog_pb2.BILLING_ANCHOR_CALENDAR,
            ),
            timeout=10,
        )
        subscription_id = reply.subscription.id
        subscriptions[subscription_id] = customer_id
        for day in day_starts:
            quantities = [rng.randrange(0, 500) for _ in range(rng.randrange(1, 4))]
            for qty in quantities:
                events.append((customer_id, (unique("b"), day + timedelta(seconds=rng.randrange(86400)), {"qty": qty})))
            expected[(subscription_id, day)] = FEE + (sum(quantities) * UNIT_PRICE).quantize(Decimal("0.01"))
    by_customer: dict[str, list] = {}
    for customer_id, event in events:
        by_customer.setdefault(customer_id, []).append(event)
    for customer_id, batch in by_customer.items():
        await cluster.stubs.send(customer_id, event_type, batch)
    await cluster.stubs.wait_applied(timeout=60)
    return BillingWorkload(subscriptions, day_starts, expected)


async def close_until_settled(cluster: FaultCluster, subscription_ids: list[str], attempts: int = 30) -> int:
    """Call CloseDuePeriods until a run creates nothing and fails nothing; returns the runs made."""
    for run in range(1, attempts + 1):
        try:
            reply = await cluster.invoice.CloseDuePeriods(
                invoice_pb2.CloseDuePeriodsRequest(subscription_ids=subscription_ids), timeout=60
            )
        except grpc.aio.AioRpcError as error:
            if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise
            await asyncio.sleep(0.2)
            continue
        if reply.invoices_created == 0 and reply.subscriptions_failed == 0 and reply.waiting_for_usage == 0:
            return run
        await asyncio.sleep(0.1)
    raise AssertionError(f"periods not settled after {attempts} CloseDuePeriods runs")


async def invoices_of(cluster: FaultCluster, subscription_id: str) -> list[invoice_pb2.Invoice]:
    found, token = [], ""
    while True:
        reply = await cluster.invoice.ListInvoices(
            invoice_pb2.ListInvoicesRequest(subscription_id=subscription_id, page_size=100, page_token=token), timeout=10
        )
        found.extend(reply.invoices)
        token = reply.next_page_token
        if not token:
            return found


async def close_with_kill(cluster: FaultCluster, workload: BillingWorkload, rng: random.Random) -> dict[str, float]:
    """Start a period close, SIGKILL invoice at a random moment in it, restart, close again."""
    ids = list(workload.subscriptions)
    delay = rng.uniform(0.0, 0.25)
    down_for = rng.uniform(0, 0.3)
    first = asyncio.ensure_future(
        cluster.invoice.CloseDuePeriods(invoice_pb2.CloseDuePeriodsRequest(subscription_ids=ids), timeout=60)
    )
    await asyncio.sleep(delay)
    interrupted = not first.done()
    await cluster.kill_and_restart("invoice", down_for)
    try:
        await first
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.UNAVAILABLE, error
    runs = await close_until_settled(cluster, ids)
    return {"kill_after_s": round(delay, 3), "interrupted": interrupted, "down_for_s": round(down_for, 3), "close_runs": runs}
