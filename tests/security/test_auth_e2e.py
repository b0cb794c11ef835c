"""The four services as real processes with API keys required: each calls the others with its
own key, callers need the right scope, and usage still flows ingest -> meter."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import grpc
import pytest

from tally.auth import CATALOG_WRITE, EVENTS_WRITE, INTERNAL, READ, KeyFile
from tally.channels import connect
from tally.grpc_errors import error_info
from tally_gen.catalog.v1 import catalog_pb2
from tally_gen.common.v1 import common_pb2
from tally_gen.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from tests.harness import unique
from tests.meter.helpers import struct, ts
from tests.reliability.faults import start_fault_cluster, stop_fault_cluster

pytestmark = pytest.mark.e2e
UTC = timezone.utc


@pytest.fixture(scope="module")
async def secured(server_url, tmp_path_factory):
    store = KeyFile(tmp_path_factory.mktemp("keys") / "api-keys.json")
    # Every service only reads from the others; the ones that follow a feed (the meter follows
    # ingest's log, ingest and the meter follow the catalog's) also need ``internal``.
    scopes = {"catalog": [READ], "ingest": [READ, INTERNAL], "meter": [READ, INTERNAL], "invoice": [READ]}
    service_keys = {s: store.create(f"{s}-service", scopes[s]).plaintext for s in scopes}
    operator = store.create("operator", [CATALOG_WRITE, READ]).plaintext
    sender = store.create("event-sender", [EVENTS_WRITE]).plaintext
    cluster, name, _ = await start_fault_cluster(
        server_url,
        tmp_path_factory.mktemp("auth-e2e-logs"),
        extra_env={
            "TALLY_AUTH_MODE": "required",
            "TALLY_AUTH_KEYS_FILE": str(store.path),
            "TALLY_PAGE_TOKEN_SECRET": "auth-e2e-page-token-secret-0123456789",
        },
        service_env={s: {"TALLY_SERVICE_API_KEY": key} for s, key in service_keys.items()},
        api_key=operator,
    )
    yield cluster, sender
    await stop_fault_cluster(cluster, server_url, name)


def batch(customer_id: str, event_type: str, quantities: list[int]) -> ingest_pb2.SendEventBatchRequest:
    when = datetime.now(UTC) - timedelta(hours=1)
    return ingest_pb2.SendEventBatchRequest(
        events=[
            ingest_pb2.Event(
                idempotency_key=unique("k"), event_type=event_type, customer=common_pb2.CustomerRef(id=customer_id),
                timestamp=ts(when), properties=struct({"qty": q}),
            )
            for q in quantities
        ]
    )


class TestServicesWithRequiredKeys:
    async def test_events_sent_with_a_writer_key_are_metered_through_service_keys(self, secured):
        cluster, sender = secured
        event_type = unique("secured")
        meter_key = await cluster.stubs.create_meter(event_type, "SUM", "qty")
        customer_id = await cluster.stubs.create_customer()
        async with connect(cluster.address("ingest"), api_key=sender) as channel:
            reply = await ingest_pb2_grpc.IngestServiceStub(channel).SendEventBatch(
                batch(customer_id, event_type, [3, 4, 5]), timeout=10
            )
        assert reply.accepted_count == 3
        await cluster.stubs.wait_applied(timeout=60)
        start = datetime.now(UTC) - timedelta(hours=2)
        usage = await cluster.stubs.usage(customer_id, meter_key, start, datetime.now(UTC))
        assert Decimal(usage.value.value) == Decimal(12)

    async def test_callers_without_a_key_or_the_scope_are_refused(self, secured):
        cluster, sender = secured
        request = batch("cus_nobody", "anything", [1])
        async with grpc.aio.insecure_channel(cluster.address("ingest")) as anonymous:
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await ingest_pb2_grpc.IngestServiceStub(anonymous).SendEventBatch(request, timeout=10)
        # The operator key reads and writes the catalog, but cannot send events.
        with pytest.raises(grpc.aio.AioRpcError) as wrong_scope:
            await cluster.stubs.ingest.SendEventBatch(request, timeout=10)
        # The sender key writes events but cannot read the log.
        async with connect(cluster.address("ingest"), api_key=sender) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as no_read:
                await ingest_pb2_grpc.IngestServiceStub(channel).ReadLog(ingest_pb2.ReadLogRequest(), timeout=10)
        assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert wrong_scope.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert no_read.value.code() == grpc.StatusCode.PERMISSION_DENIED

    async def test_a_read_key_cannot_read_the_raw_log_or_the_catalog_feed(self, secured):
        cluster, _ = secured
        # The operator key has read (and catalog:write) but not internal.
        with pytest.raises(grpc.aio.AioRpcError) as log_denied:
            await cluster.stubs.ingest.ReadLog(ingest_pb2.ReadLogRequest(), timeout=10)
        feed = cluster.stubs.catalog.WatchCatalog(catalog_pb2.WatchCatalogRequest(), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as feed_denied:
            await feed.read()
        assert log_denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert feed_denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error_info(feed_denied.value).metadata["required_scope"] == INTERNAL
