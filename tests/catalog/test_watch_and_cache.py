"""The change feed (GetCatalogRevision, WatchCatalog) and the CatalogCache built on it."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from services.catalog.app import create_app
from tally.catalog_cache import CatalogCache
from tally.channels import connect
from tally.errors import Unavailable
from tally_gen.catalog.v1 import catalog_pb2 as pb
from tally_gen.catalog.v1 import catalog_pb2_grpc as pb_grpc
from tally_gen.common.v1 import common_pb2
from tests.catalog.helpers import (
    create_customer,
    create_meter,
    create_plan,
    fixed_charge,
    plan_spec,
    usage_charge,
)
from tests.harness import free_port, unique


async def revision(stub) -> int:
    return (await stub.GetCatalogRevision(pb.GetCatalogRevisionRequest())).revision


async def next_changes(stream, count: int) -> list[pb.WatchCatalogResponse]:
    out = []
    async for change in stream:
        out.append(change)
        if len(out) == count:
            break
    return out


class TestCatalogRevision:
    async def test_every_change_raises_the_revision(self, stub):
        before = await revision(stub)
        await create_meter(stub)
        after_meter = await revision(stub)
        await create_customer(stub)
        assert before < after_meter < await revision(stub)

    async def test_a_rejected_change_leaves_the_revision_alone(self, stub):
        before = await revision(stub)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.CreateMeter(pb.CreateMeterRequest(meter=pb.Meter(key="bad key")))
        assert await revision(stub) == before


class TestWatchCatalog:
    async def test_watch_replays_changes_after_a_revision_then_streams_live_ones(self, stub):
        start = await revision(stub)
        meter = await create_meter(stub)
        stream = stub.WatchCatalog(pb.WatchCatalogRequest(after_revision=start))
        try:
            (replayed,) = await asyncio.wait_for(next_changes(stream, 1), 5)
            customer = await create_customer(stub)
            (live,) = await asyncio.wait_for(next_changes(stream, 1), 2)
        finally:
            stream.cancel()
        assert replayed.WhichOneof("entity") == "meter" and replayed.meter.key == meter.key
        assert live.WhichOneof("entity") == "customer" and live.customer.id == customer.id
        assert start < replayed.revision < live.revision

    async def test_concurrent_writers_never_make_a_watcher_skip_a_change(self, stub):
        start = await revision(stub)
        stream = stub.WatchCatalog(pb.WatchCatalogRequest(after_revision=start))
        keys = {unique("race") for _ in range(20)}
        try:
            await asyncio.gather(*(create_meter(stub, key=key) for key in keys))
            seen = await asyncio.wait_for(next_changes(stream, len(keys)), 10)
        finally:
            stream.cancel()
        assert {c.meter.key for c in seen} == keys
        revisions = [c.revision for c in seen]
        assert revisions == sorted(revisions)

    async def test_a_plan_brings_its_published_version_along(self, stub):
        start = await revision(stub)
        plan = await create_plan(stub)
        stream = stub.WatchCatalog(pb.WatchCatalogRequest(after_revision=start))
        try:
            changes = await asyncio.wait_for(next_changes(stream, 2), 5)
        finally:
            stream.cancel()
        kinds = {c.WhichOneof("entity"): c for c in changes}
        assert kinds["plan_version"].plan_version.id == plan.latest_version.id
        assert kinds["plan"].plan.key == plan.key


class TestShutdown:
    async def test_stopping_the_server_ends_watch_streams_cleanly_instead_of_cancelling_them(
        self, database_url, settings
    ):
        running = await in_process_on(database_url, settings, 0)
        channel = connect(f"127.0.0.1:{running.port}")
        try:
            stream = pb_grpc.CatalogServiceStub(channel).WatchCatalog(
                pb.WatchCatalogRequest(after_revision=10**12)
            )
            reader = asyncio.ensure_future(next_changes(stream, 1))
            await stream.wait_for_connection()
            await running.stop(grace=2)
            assert await reader == []
            assert await stream.code() == grpc.StatusCode.OK
        finally:
            await running.stop(grace=0)
            await channel.close()


class TestCatalogCache:
    async def test_start_loads_what_exists_and_lookups_need_no_rpc(self, stub, catalog_channel):
        meter = await create_meter(stub, group_by=["region"])
        customer = await create_customer(stub, currency="USD")
        plan = await create_plan(stub, charges=[fixed_charge(), usage_charge(meter.key)])
        sub = (
            await stub.CreateSubscription(
                pb.CreateSubscriptionRequest(
                    customer=common_pb2.CustomerRef(id=customer.id), plan_key=plan.key
                )
            )
        ).subscription
        cache = CatalogCache(catalog_channel)
        await cache.start()
        try:
            assert cache.revision >= await revision(stub)
            assert cache.meter_by_key(meter.key).locked
            assert [m.key for m in cache.meters_for_event_type(meter.event_type)] == [meter.key]
            assert cache.customer_by_id(customer.id).external_id == customer.external_id
            assert cache.customer_by_external_id(customer.external_id).id == customer.id
            assert cache.plan_version(plan.latest_version.id).charges[1].usage.meter_key == meter.key
            assert [s.id for s in cache.subscriptions_for_customer(customer.id)] == [sub.id]
            assert meter.key in {m.key for m in cache.all_meters()}
        finally:
            await cache.stop()

    async def test_a_change_reaches_a_started_cache_within_a_second(self, stub, catalog_channel):
        cache = CatalogCache(catalog_channel)
        await cache.start()
        try:
            meter = await create_meter(stub)
            customer = await create_customer(stub)
            assert await cache.wait_for_revision(await revision(stub), timeout=1.0)
            assert cache.meter_by_key(meter.key) == meter
            assert cache.customer_by_id(customer.id).external_id == customer.external_id

            await stub.ArchiveMeter(pb.ArchiveMeterRequest(key=meter.key))
            await stub.UpdateCustomer(
                pb.UpdateCustomerRequest(
                    customer=pb.Customer(id=customer.id, external_id=unique("renamed")),
                    update_mask=["external_id"],
                )
            )
            assert await cache.wait_for_revision(await revision(stub), timeout=1.0)
            assert cache.meters_for_event_type(meter.event_type) == []
            assert cache.meter_by_key(meter.key).archived
            assert cache.customer_by_external_id(customer.external_id) is None
        finally:
            await cache.stop()

    async def test_plan_changes_show_up_in_the_cached_subscription(self, stub, catalog_channel):
        a = await create_plan(stub)
        b = await create_plan(stub, charges=[fixed_charge("20.00")])
        customer = await create_customer(stub)
        sub = (
            await stub.CreateSubscription(
                pb.CreateSubscriptionRequest(customer=common_pb2.CustomerRef(id=customer.id), plan_key=a.key)
            )
        ).subscription
        cache = CatalogCache(catalog_channel)
        await cache.start()
        try:
            await stub.ChangeSubscriptionPlan(pb.ChangeSubscriptionPlanRequest(id=sub.id, plan_key=b.key))
            v2 = (
                await stub.PublishPlanVersion(pb.PublishPlanVersionRequest(plan=plan_spec(key=a.key)))
            ).version
            assert await cache.wait_for_revision(await revision(stub), timeout=5.0)
            (cached,) = cache.subscriptions_for_customer(customer.id)
            assert [p.plan_key for p in cached.phases] == [a.key, b.key]
            assert cache.plan_version(v2.id).version == 2
        finally:
            await cache.stop()

    async def test_resolve_customer_falls_back_to_get_customer_on_a_miss_and_caches_the_answer(
        self, stub, catalog_channel
    ):
        cache = CatalogCache(catalog_channel)
        await cache.start()
        await cache.stop()  # frozen: only resolve_customer's own call can learn about new customers
        customer = await create_customer(stub)
        assert cache.customer_by_external_id(customer.external_id) is None
        found = await cache.resolve_customer(common_pb2.CustomerRef(external_id=customer.external_id))
        missing = await cache.resolve_customer(common_pb2.CustomerRef(external_id=unique("ghost")))
        assert found.id == customer.id
        assert cache.customer_by_id(customer.id).id == customer.id
        assert missing is None

    async def test_start_fails_with_unavailable_when_no_catalog_answers(self):
        channel = connect(f"127.0.0.1:{free_port()}")
        try:
            with pytest.raises(Unavailable):
                await CatalogCache(channel, start_timeout=0.5).start()
        finally:
            await channel.close()

    async def test_the_cache_reconnects_after_the_catalog_restarts(self, database_url, settings, stub):
        port = free_port()
        first = await in_process_on(database_url, settings, port)
        channel = connect(f"127.0.0.1:{port}")
        cache = CatalogCache(channel, max_backoff=0.2)
        try:
            await cache.start()
            await first.stop(grace=0)
            meter = await create_meter(stub)  # written while the cache's catalog is down
            second = await in_process_on(database_url, settings, port)
            try:
                assert await cache.wait_for_revision(await revision(stub), timeout=5.0)
                assert cache.meter_by_key(meter.key) is not None
            finally:
                await second.stop(grace=0)
        finally:
            await cache.stop()
            await channel.close()


async def in_process_on(database_url, settings, port):
    from tally.server import start_server

    return await start_server(create_app(database_url, settings), "127.0.0.1", port)
