"""Exactly-once: SIGKILL the meter process while it applies, restart it, totals equal brute force."""

from __future__ import annotations

import asyncio
import os
import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from tally.channels import connect
from tally.config import SERVICES
from tally.migrations import upgrade
from tally_gen.ingest.v1 import ingest_pb2
from tally_gen.meter.v1 import meter_pb2
from tests.harness import ServiceProcesses, drop_database, free_port, recreate_database, unique
from tests.meter.helpers import Stubs, value

UTC = timezone.utc
pytestmark = pytest.mark.e2e


@pytest.fixture
async def cluster(server_url, tmp_path):
    """Catalog and ingest as processes on a database of their own (the meter starts later).

    Small batches (10 entries) keep the meter applying for long enough to be killed midway.
    """
    name = f"tally_meter_kill_{os.getpid()}"
    url = await recreate_database(server_url, name)
    for service in SERVICES:
        await asyncio.to_thread(upgrade, service, url)
    processes = ServiceProcesses(database_url=url, log_dir=tmp_path, extra_env={"TALLY_METER_BATCH_SIZE": "10"})
    processes.ports["meter"] = free_port()
    await processes.start_all(("catalog", "ingest"))
    yield processes
    processes.stop_all()
    await drop_database(server_url, name)


class TestExactlyOnce:
    async def test_killing_the_meter_while_it_applies_neither_loses_nor_double_counts(self, cluster):
        channels = [connect(cluster.address(s)) for s in ("catalog", "ingest", "meter")]
        stubs = Stubs(*channels)
        try:
            event_type = unique("kill")
            total_meter = await stubs.create_meter(event_type, "SUM", "v")
            count_meter = await stubs.create_meter(event_type, "COUNT")
            customers = [await stubs.create_customer() for _ in range(3)]
            rng = random.Random(7)
            base = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
            sent: dict[str, list[tuple[str, Decimal]]] = {c: [] for c in customers}
            for customer in customers:
                events = []
                for _ in range(2000):
                    key = unique("e")
                    v = Decimal(rng.randint(1, 10_000)) / 100
                    events.append((key, base + timedelta(seconds=rng.randint(0, 86_400)), {"v": str(v)}))
                    sent[customer].append((key, v))
                await stubs.send(customer, event_type, events)
            voided = {key for c in customers for key, _ in rng.sample(sent[c], 50)}
            for key in voided:
                await stubs.ingest.VoidEvent(ingest_pb2.VoidEventRequest(idempotency_key=key), timeout=10)

            kills = 0
            for _ in range(2):
                cluster.start("meter")
                await cluster.wait("meter")
                while True:
                    status = await stubs.meter.GetMeterStatus(meter_pb2.GetMeterStatusRequest(), timeout=10)
                    if status.entries_applied > 0 or status.caught_up:
                        break
                    await asyncio.sleep(0.01)
                if status.caught_up:
                    break
                cluster.kill("meter")
                kills += 1
            if kills == 2:
                cluster.start("meter")
                await cluster.wait("meter")
            assert kills >= 1, "the meter finished before it could be killed; the test proved nothing"
            await stubs.wait_applied(timeout=120)

            start, end = base - timedelta(hours=1), base + timedelta(days=2)
            for customer in customers:
                kept = [v for key, v in sent[customer] if key not in voided]
                assert value(await stubs.usage(customer, total_meter, start, end)) == sum(kept)
                assert value(await stubs.usage(customer, count_meter, start, end)) == len(kept)
        finally:
            for channel in channels:
                await channel.close()
