"""A catalog row that cannot be encoded is quarantined: lists, Gets of other rows, the feed and
the caches that follow it go on for everyone. The poison row is written with SQL straight into
the catalog's schema, as a bad migration or a manual fix could leave it, whatever the API allows."""

from __future__ import annotations

import asyncio

import asyncpg
import grpc
import pytest

from tally.catalog_cache import CatalogCache
from tally.channels import connect
from tally.db import asyncpg_dsn
from tally.grpc_errors import error_info
from tally_gen.catalog.v1 import catalog_pb2 as pb
from tests.catalog.conftest import catalog_channel, catalog_server, stub  # noqa: F401 - fixtures
from tests.catalog.helpers import create_customer, create_plan


async def subscribe(stub) -> pb.Subscription:
    plan = await create_plan(stub)
    customer = await create_customer(stub)
    reply = await stub.CreateSubscription(pb.CreateSubscriptionRequest(customer={"id": customer.id}, plan_key=plan.key))
    return reply.subscription


async def poison(database_url: str, subscription_id: str) -> None:
    """Start the subscription at -infinity (asyncpg reads it as year 1, which no Timestamp holds
    once converted) and record a change, as a write would."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        async with conn.transaction():
            await conn.execute("UPDATE catalog.subscriptions SET start_time = '-infinity' WHERE id = $1", subscription_id)
            await conn.execute(
                "UPDATE catalog.subscription_phases SET start_time = '-infinity' WHERE subscription_id = $1", subscription_id
            )
            await conn.execute(
                "INSERT INTO catalog.changes (kind, entity_id, changed_at) VALUES ('subscription', $1, now())",
                subscription_id,
            )
    finally:
        await conn.close()


class TestPoisonSubscription:
    async def test_lists_and_gets_go_on_and_the_bad_row_is_named_not_unknown(self, stub, database_url):
        good = await subscribe(stub)
        bad = await subscribe(stub)
        await poison(database_url, bad.id)

        listed = await stub.ListSubscriptions(pb.ListSubscriptionsRequest(page_size=1000))
        got_good = await stub.GetSubscription(pb.GetSubscriptionRequest(id=good.id))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetSubscription(pb.GetSubscriptionRequest(id=bad.id))
        status = await stub.GetCatalogStatus(pb.GetCatalogStatusRequest())

        ids = {s.id for s in listed.subscriptions}
        assert good.id in ids and bad.id not in ids
        assert bad.id in listed.quarantined_ids
        assert got_good.subscription.id == good.id
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_info(caught.value).reason == "RECORD_QUARANTINED"
        assert error_info(caught.value).metadata["id"] == bad.id
        quarantined = {(q.kind, q.id): q for q in status.quarantined}
        assert ("subscription", bad.id) in quarantined
        assert "year" in quarantined[("subscription", bad.id)].reason
        assert status.quarantined_count >= 1

    async def test_the_feed_skips_and_reports_the_row_and_a_cache_keeps_following(self, stub, catalog_server, database_url):
        start = (await stub.GetCatalogRevision(pb.GetCatalogRevisionRequest())).revision
        bad = await subscribe(stub)
        await poison(database_url, bad.id)
        running, _ = catalog_server
        channel = connect(f"127.0.0.1:{running.port}")
        cache = CatalogCache(channel, start_timeout=10)
        try:
            await cache.start()  # would time out if the feed stopped at the bad row
            later = await create_customer(stub)
            revision = (await stub.GetCatalogRevision(pb.GetCatalogRevisionRequest())).revision
            assert await cache.wait_for_revision(revision, 5)
            stream = stub.WatchCatalog(pb.WatchCatalogRequest(after_revision=start))
            changes = []
            async for change in stream:
                changes.append(change)
                if change.revision >= revision:
                    break
            stream.cancel()
        finally:
            await cache.stop()
            await channel.close()
        assert cache.customer_by_id(later.id) is not None
        assert cache.subscription(bad.id) is None
        assert cache.quarantine.contains("catalog_cache", "subscription", bad.id)
        marked = [c for c in changes if c.HasField("quarantined")]
        assert [c.quarantined.id for c in marked][-1] == bad.id
        assert all(c.WhichOneof("entity") is None for c in marked)

    async def test_a_cache_skips_a_change_it_cannot_apply_and_still_advances(self, stub, catalog_server):
        running, _ = catalog_server
        channel = connect(f"127.0.0.1:{running.port}")
        cache = CatalogCache(channel, start_timeout=10)
        await cache.start()
        try:
            original = cache._put_customer

            def broken(customer):
                if customer.name == "explodes":
                    raise RuntimeError("cannot apply")
                original(customer)

            cache._put_customer = broken
            bad = await create_customer(stub, name="explodes")
            good = await create_customer(stub)
            revision = (await stub.GetCatalogRevision(pb.GetCatalogRevisionRequest())).revision
            assert await cache.wait_for_revision(revision, 5)
        finally:
            await cache.stop()
            await channel.close()
        assert cache.customer_by_id(good.id) is not None
        assert cache.quarantine.contains("catalog_cache", "customer", bad.id)
