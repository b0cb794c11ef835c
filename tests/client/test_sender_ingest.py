"""The event sender against the real ingest service, including an ingest crash mid-stream."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from tally.channels import connect
from tally.client import AsyncEventSender, EventSender
from tally_gen.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from tally_gen.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from tests.harness import ServiceProcesses, unique

pytestmark = pytest.mark.e2e


async def create_customer(address: str) -> str:
    async with connect(address) as channel:
        external_id = unique("acct")
        await catalog_pb2_grpc.CatalogServiceStub(channel).CreateCustomer(
            catalog_pb2.CreateCustomerRequest(customer=catalog_pb2.Customer(external_id=external_id)), timeout=10
        )
    return external_id


async def events_total(address: str) -> int:
    async with connect(address) as channel:
        stats = await ingest_pb2_grpc.IngestServiceStub(channel).GetIngestStats(
            ingest_pb2.GetIngestStatsRequest(), timeout=10
        )
    return stats.events_total


async def stored_keys(address: str, keys: list[str]) -> int:
    async with connect(address) as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        replies = await asyncio.gather(
            *(stub.GetEvent(ingest_pb2.GetEventRequest(idempotency_key=k), timeout=10) for k in keys)
        )
    return sum(1 for reply, key in zip(replies, keys, strict=True) if reply.event.idempotency_key == key)


class TestSenderAgainstIngest:
    async def test_events_are_stored_once_and_unknown_customers_are_reported(self, services):
        customer = await create_customer(services.address("catalog"))
        when = datetime.now(timezone.utc) - timedelta(minutes=5)
        async with AsyncEventSender(services.address("ingest"), batch_size=50, flush_interval=0.01) as sender:
            keys = [
                await sender.send("api_request", customer=customer, properties={"n": i}, timestamp=when)
                for i in range(120)
            ]
            stray = await sender.send("api_request", customer=unique("nobody"))
        assert sender.stats.accepted == 120
        assert [(r.idempotency_key, r.violations[0][1].startswith("unknown customer")) for r in sender.rejections] == [
            (stray, True)
        ]
        assert await stored_keys(services.address("ingest"), keys[:10]) == 10
        # The same events again, from a new sender: acknowledged, counted once. (The same key
        # with a different payload, such as another timestamp, would be a conflict.)
        async with AsyncEventSender(services.address("ingest"), batch_size=50) as again:
            for i, key in enumerate(keys):
                await again.send(
                    "api_request", customer=customer, properties={"n": i}, timestamp=when, idempotency_key=key
                )
            await again.send("api_request", customer=customer, properties={"n": -1}, timestamp=when,
                             idempotency_key=keys[0])
        assert (again.stats.accepted, again.stats.duplicate, again.stats.rejected) == (0, 120, 1)

    async def test_the_sync_sender_works_from_a_thread(self, services):
        customer = await create_customer(services.address("catalog"))

        def send() -> tuple[int, list[str]]:
            with EventSender(services.address("ingest"), batch_size=10) as sender:
                keys = [sender.send("api_request", customer=customer) for _ in range(25)]
            return sender.stats.accepted, keys

        accepted, keys = await asyncio.to_thread(send)
        assert accepted == 25
        assert await stored_keys(services.address("ingest"), keys) == 25

    async def test_an_ingest_crash_mid_stream_loses_and_doubles_nothing(self, database_url, tmp_path):
        cluster = ServiceProcesses(database_url=database_url, log_dir=tmp_path)
        await cluster.start_all(services=("catalog", "ingest"))
        try:
            customer = await create_customer(cluster.address("catalog"))
            before = await events_total(cluster.address("ingest"))
            sender = AsyncEventSender(
                cluster.address("ingest"), batch_size=100, flush_interval=0.01, initial_backoff=0.05
            )
            keys = [await sender.send("api_request", customer=customer, properties={"n": i}) for i in range(1000)]
            await sender.flush()
            cluster.kill("ingest")
            keys += [await sender.send("api_request", customer=customer, properties={"n": i}) for i in range(1000)]
            cluster.start("ingest")
            await asyncio.wait_for(sender.close(), 60)
            assert sender.stats.reconnects >= 1
            assert sender.stats.accepted + sender.stats.duplicate == 2000
            assert await events_total(cluster.address("ingest")) - before == 2000
            assert await stored_keys(cluster.address("ingest"), keys[1000:]) == 1000
        finally:
            cluster.stop_all()
