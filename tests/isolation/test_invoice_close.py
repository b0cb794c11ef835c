"""A subscription whose close fails (a start at 9999-12-31 overflows its schedule) is quarantined:
counted, named in the reply and in GetInvoiceStatus, and every other subscription still closes.
The poison start is written with SQL into the catalog's schema, whatever the API allows."""

from __future__ import annotations

import asyncpg

from tally.db import asyncpg_dsn
from tally_gen.catalog.v1 import catalog_pb2 as cpb
from tally_gen.invoice.v1 import invoice_pb2
from tests.invoice.conftest import invoice_service, invoice_stack, stubs  # noqa: F401 - fixtures
from tests.invoice.helpers import midnight_days_ago


async def start_at_the_end_of_time(database_url: str, subscription_id: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        async with conn.transaction():
            await conn.execute(
                "UPDATE catalog.subscriptions SET start_time = '9999-12-31 00:00+00' WHERE id = $1", subscription_id
            )
            await conn.execute(
                "UPDATE catalog.subscription_phases SET start_time = '9999-12-31 00:00+00' WHERE subscription_id = $1",
                subscription_id,
            )
            await conn.execute(
                "INSERT INTO catalog.changes (kind, entity_id, changed_at) VALUES ('subscription', $1, now())",
                subscription_id,
            )
    finally:
        await conn.close()


class TestPoisonSubscriptionAtClose:
    async def test_the_others_close_and_the_bad_one_is_named_counted_and_listed(self, stubs, database_url):
        _, _, plan_key = await stubs.meter_with_plan(fee="10.00")
        good = await stubs.subscribe(await stubs.customer(), plan_key, midnight_days_ago(3))
        bad = await stubs.subscribe(await stubs.customer(), plan_key, midnight_days_ago(3))
        await start_at_the_end_of_time(database_url, bad)

        reply = await stubs.close(midnight_days_ago(0), bad, good)
        status = await stubs.invoice.GetInvoiceStatus(invoice_pb2.GetInvoiceStatusRequest(), timeout=10)
        invoices = await stubs.invoices_of(good)
        # Cancelling the bad subscription is not blocked by it.
        canceled = await stubs.catalog.CancelSubscription(
            cpb.CancelSubscriptionRequest(id=bad, at_period_end=True), timeout=10
        )

        assert len(invoices) == 3
        assert reply.subscriptions_failed == 1
        assert [q.id for q in reply.quarantined] == [bad]
        assert reply.quarantined[0].component == "invoice.close"
        assert "OverflowError" in reply.quarantined[0].reason or "range" in reply.quarantined[0].reason
        assert bad in {q.id for q in status.quarantined} and status.quarantined_count >= 1
        assert canceled.subscription.id == bad
