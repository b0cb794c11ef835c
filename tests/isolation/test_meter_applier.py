"""The meter's applier sets aside a log entry it cannot process and applies the rest, with the
quarantine in the cursor's transaction; a failing applier is reported as stalled."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import asyncpg
import grpc

from services.meter import repository as repo
from services.meter.consumer import LogApplier, plan_isolated
from services.meter.domain.matching import IncomingEvent
from services.meter.domain.model import Aggregation
from services.meter.service import compute_points, plan_entries
from tally.db import asyncpg_dsn
from tests.harness import unique
from tests.meter.test_apply import EVENT_TYPE, MemoryCatalog

UTC = timezone.utc
T0 = datetime(2026, 6, 1, tzinfo=UTC)


def event(customer_id: str, value: str, minute: int) -> IncomingEvent:
    return IncomingEvent(unique("ev"), EVENT_TYPE, customer_id, T0 + timedelta(minutes=minute), {"v": value, "user": "ann", "region": "eu"})


def applier(catalog) -> LogApplier:
    # No ingest is called here: the channel is never used.
    channel = grpc.aio.insecure_channel("127.0.0.1:9")
    return LogApplier("postgresql://unused/db", channel, catalog, None, stall_seconds=0)  # type: ignore[arg-type]


class TestApplierQuarantine:
    async def test_an_entry_the_database_refuses_is_set_aside_and_the_rest_of_its_batch_applies(self, database_url):
        catalog = MemoryCatalog(unique("q"))
        customer = unique("cus")
        # Postgres text cannot hold NUL: the write of this one entry fails, as any poison row would.
        entries = [(1, event(customer, "2", 1)), (2, event("bad\x00customer", "5", 2)), (3, event(customer, "3", 3))]
        conn = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            worker = applier(catalog)
            async with conn.transaction():
                tally, _alerts, failed = await worker._write_isolated(conn, plan_entries(entries, catalog), entries)
                await repo.quarantine_entries(conn, failed)
            meter = catalog.meters[Aggregation.SUM]
            total = (await compute_points(conn, meter, customer, [(T0, T0 + timedelta(hours=1))], (), {}))[0].total
            count, recent = await repo.quarantine_summary(conn, 100)
        finally:
            await conn.close()
        assert [(p, kind) for p, _, kind, _ in failed] == [(2, "log_entry.event")]
        assert failed[0][1] == entries[1][1].event_id
        assert total == Decimal(5)
        assert tally.entries == 2
        assert count >= 1 and any(r["entry_id"] == entries[1][1].event_id for r in recent)

    def test_an_entry_that_cannot_be_planned_is_set_aside_and_the_others_are_planned(self):
        catalog = MemoryCatalog(unique("q"))
        original = catalog.customer_known

        def explode(customer_id):
            if customer_id == "poison":
                raise OverflowError("date value out of range")
            return original(customer_id)

        catalog.customer_known = explode
        entries = [(1, event("c1", "1", 1)), (2, event("poison", "1", 2)), (3, event("c1", "1", 3))]
        plan, poisoned = plan_isolated(entries, catalog)
        assert [(p, reason) for p, _, _, reason in poisoned] == [(2, "OverflowError: date value out of range")]
        assert plan is not None and plan.tally.entries == 2

    async def test_a_failing_applier_is_reported_stalled_with_the_reason_and_recovers(self):
        worker = applier(MemoryCatalog(unique("q")))
        assert worker.stall() == (False, "", None)
        worker._failed(RuntimeError("catalog cache is behind"))
        stalled, reason, since = worker.stall()
        assert stalled and reason == "RuntimeError: catalog cache is behind" and since is not None
        worker._progressed()
        assert worker.stall() == (False, "", None)

    def test_transient_database_failures_are_retried_never_quarantined(self):
        import asyncpg

        from services.meter.consumer import _transient

        assert _transient(asyncpg.exceptions.DeadlockDetectedError("deadlock detected"))
        assert _transient(asyncpg.exceptions.SerializationError("could not serialize"))
        assert _transient(asyncpg.exceptions.QueryCanceledError("statement timeout"))
        assert _transient(ConnectionResetError("reset"))
        assert not _transient(asyncpg.exceptions.CharacterNotInRepertoireError("invalid byte sequence"))
        assert not _transient(OverflowError("date value out of range"))
