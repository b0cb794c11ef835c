"""Background consumers of ingest's log: the main applier and backfills.

Exactly-once: each batch's contributions, window recomputations, alerts and the new cursor
commit in one transaction, on the one connection that holds the applier's lease (a session
advisory lock). A crash anywhere rolls the whole batch back and the next holder resumes from
the committed cursor; an entry seen twice adds nothing (contributions are keyed by entry and
meter). See services/meter/README.md for how replicas share the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
from datetime import datetime, timezone

import asyncpg
import grpc
import structlog

from services.meter import mapping
from services.meter import repository as repo
from services.meter.domain.matching import property_roots
from services.meter.service import (
    AlertBook,
    ApplyPlan,
    CatalogView,
    apply_entries,
    evaluate_thresholds,
    plan_entries,
    write_plan,
)
from tally.db import asyncpg_dsn
from tally.metrics import METER_APPLIED_POSITION, METER_LAG_ENTRIES, METER_LAG_SECONDS, METER_UNUSABLE_VALUES
from tally_gen.ingest.v1 import ingest_pb2, ingest_pb2_grpc

log = structlog.get_logger()
UTC = timezone.utc

# Partition 0 of the log: today the whole log. Splitting by customer hash would give each
# partition its own lock key and its own applier_state row.
APPLIER_LOCK = 0x7A11_0001
BACKFILL_LOCK_BASE = 0x7A11_B000


class LogApplier:
    """Reads ReadLog in batches and applies them, while holding the partition's lease."""

    def __init__(
        self,
        database_url: str,
        ingest: grpc.aio.Channel,
        catalog: CatalogView,
        alerts: AlertBook,
        *,
        batch_size: int = 5000,
        wait_millis: int = 500,
        standby_poll_seconds: float = 2.0,
    ) -> None:
        self._dsn = asyncpg_dsn(database_url)
        self._stub = ingest_pb2_grpc.IngestServiceStub(ingest)
        self._catalog = catalog
        self._alerts = alerts
        self._batch_size = batch_size
        self._wait_millis = wait_millis
        self._standby_poll = standby_poll_seconds
        self._task: asyncio.Task | None = None
        self.holds_lease = False
        self._committed_position: int | None = None

    def committed_position(self) -> int | None:
        """The applied position last committed by this process's applier; None without the lease."""
        return self._committed_position if self.holds_lease else None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="meter-applier")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self._dsn, server_settings={"application_name": "tally-meter-applier"})
                if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", APPLIER_LOCK):
                    await conn.close()
                    conn = None
                    await asyncio.sleep(self._standby_poll)
                    continue
                self.holds_lease = True
                log.info("applier_lease_acquired")
                await self._consume(conn)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - keep applying after transient failures
                log.warning("applier_failed", error=str(error), error_type=type(error).__name__)
                await asyncio.sleep(1.0)
            finally:
                self.holds_lease = False
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(conn.close(timeout=2))

    async def _read(self, cursor: str, wait: bool) -> tuple[ingest_pb2.ReadLogResponse, list, ApplyPlan | None]:
        """One ReadLog call, decoded and planned; run as a task so that work overlaps the previous batch's SQL."""
        reply = await self._stub.ReadLog(
            ingest_pb2.ReadLogRequest(cursor=cursor, max_entries=self._batch_size, wait_millis=self._wait_millis if wait else 0),
            timeout=self._wait_millis / 1000 + 30,
        )
        if not reply.entries:
            return reply, [], None
        # Every catalog change committed before these entries must be in the cache before
        # they are matched (and decoded: decoding keeps the properties the meters read);
        # asking after the read (but off the apply path) guarantees it.
        await self._catalog.sync()
        entries = decode(reply, self._catalog)
        return reply, entries, plan_entries(entries, self._catalog)

    async def _consume(self, conn: asyncpg.Connection) -> None:
        state = await repo.load_state(conn)
        cursor, caught_up, head = state.cursor, False, state.head_position
        applied_position = state.applied_position
        self._committed_position = applied_position
        pending: asyncio.Task | None = None
        try:
            while True:
                if pending is None:
                    pending = asyncio.create_task(self._read(cursor, caught_up))
                asked = time.monotonic()
                reply, entries, plan = await pending
                pending = None
                if not reply.entries and time.monotonic() - asked < 0.005:
                    # Nothing new and the long poll did not wait (the log cannot advance yet,
                    # for example while an older writer's transaction holds the horizon back):
                    # don't spin.
                    await asyncio.sleep(0.02)
                if not reply.caught_up:
                    # Read the next batch while this one is applied (the cursor is already
                    # known); long-poll when this read found nothing servable yet.
                    pending = asyncio.create_task(self._read(reply.next_cursor, not reply.entries))
                watermark = mapping.to_datetime(reply.watermark) if reply.HasField("watermark") else None
                head_time = mapping.to_datetime(reply.head_ingest_time) if reply.HasField("head_ingest_time") else None
                applied_time = mapping.to_datetime(reply.entries[-1].ingest_time) if reply.entries else None
                if entries or reply.head_position != head or reply.caught_up != caught_up or reply.next_cursor != cursor:
                    alerts = []
                    async with conn.transaction():
                        tally = repo.Tally()
                        if plan is not None:
                            batch = await write_plan(conn, plan, self._catalog)
                            alerts = await evaluate_thresholds(conn, batch, self._catalog)
                            tally = batch.tally
                        await repo.save_progress(
                            conn,
                            cursor=reply.next_cursor,
                            applied_position=max((p for p, _ in entries), default=0),
                            applied_ingest_time=applied_time,
                            watermark=watermark,
                            head_position=reply.head_position,
                            head_ingest_time=head_time,
                            caught_up=reply.caught_up,
                            tally=tally,
                        )
                    if tally.unusable_value_events:
                        METER_UNUSABLE_VALUES.inc(tally.unusable_value_events)
                    if alerts:
                        await self._alerts.notify()
                applied_position = max([applied_position, *(p for p, _ in entries)])
                self._committed_position = applied_position
                cursor, caught_up, head = reply.next_cursor, reply.caught_up, reply.head_position
                self._report_lag(caught_up, head, applied_position, head_time, applied_time)
        finally:
            if pending is not None:
                pending.cancel()

    @staticmethod
    def _report_lag(caught_up, head, applied_position, head_time, applied_time) -> None:
        METER_APPLIED_POSITION.set(applied_position)
        if caught_up:
            METER_LAG_ENTRIES.set(0)
            METER_LAG_SECONDS.set(0)
            return
        METER_LAG_ENTRIES.set(max(0, head - applied_position))
        if head_time is not None and applied_time is not None:
            METER_LAG_SECONDS.set(max(0.0, (head_time - applied_time).total_seconds()))


def decode(reply: ingest_pb2.ReadLogResponse, catalog: CatalogView) -> list[tuple[int, object]]:
    """A ReadLog page as entries, each event with the properties its meters read (call after sync)."""
    return mapping.log_items(reply.entries, lambda event_type: property_roots(catalog.meters_for_event_type(event_type)))


def lag_of(state: repo.ApplierState) -> tuple[int, float]:
    """(entries behind, seconds behind): zero once the last read found nothing more."""
    if state.caught_up:
        return 0, 0.0
    entries = max(0, state.head_position - state.applied_position)
    seconds = 0.0
    if state.head_ingest_time is not None and state.applied_ingest_time is not None:
        seconds = max(0.0, (state.head_ingest_time - state.applied_ingest_time).total_seconds())
    return entries, seconds


class Backfills:
    """Replays the log from the start for one meter, in the background, resumably."""

    def __init__(self, database_url: str, pool: asyncpg.Pool, ingest: grpc.aio.Channel, catalog: CatalogView, *, batch_size: int = 5000) -> None:
        self._dsn = asyncpg_dsn(database_url)
        self._pool = pool
        self._stub = ingest_pb2_grpc.IngestServiceStub(ingest)
        self._catalog = catalog
        self._batch_size = batch_size
        self._tasks: dict[str, asyncio.Task] = {}

    async def head_position(self) -> int:
        reply = await self._stub.ReadLog(ingest_pb2.ReadLogRequest(max_entries=1, wait_millis=0), timeout=30)
        return reply.head_position

    def ensure_running(self, backfill_id: str, meter_key: str) -> None:
        task = self._tasks.get(backfill_id)
        if task is None or task.done():
            self._tasks[backfill_id] = asyncio.create_task(self._run(backfill_id, meter_key), name=f"backfill-{backfill_id}")

    async def resume_all(self) -> None:
        async with self._pool.acquire() as conn:
            for row in await repo.running_backfills(conn):
                self.ensure_running(row["id"], row["meter_key"])

    async def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _run(self, backfill_id: str, meter_key: str) -> None:
        conn = await asyncpg.connect(self._dsn, server_settings={"application_name": "tally-meter-backfill"})
        try:
            lock = BACKFILL_LOCK_BASE + (zlib.crc32(backfill_id.encode()) & 0xFFFF)
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", lock):
                return  # another replica runs it
            row = await repo.get_backfill(conn, backfill_id)
            cursor = row["cursor"]
            log.info("backfill_started", backfill_id=backfill_id, meter_key=meter_key)
            while True:
                reply = await self._stub.ReadLog(
                    ingest_pb2.ReadLogRequest(cursor=cursor, max_entries=self._batch_size, wait_millis=0), timeout=60
                )
                await self._catalog.sync()
                if self._catalog.meter(meter_key) is None:
                    await repo.fail_backfill(conn, backfill_id, f"meter {meter_key!r} is not in the catalog")
                    return
                entries = decode(reply, self._catalog)
                async with conn.transaction():
                    await apply_entries(conn, entries, self._catalog, only_meter=meter_key)
                    await repo.save_backfill_progress(
                        conn,
                        backfill_id,
                        reply.next_cursor,
                        max((p for p, _ in entries), default=0),
                        len(entries),
                        done=reply.caught_up,
                    )
                cursor = reply.next_cursor
                if reply.caught_up:
                    log.info("backfill_done", backfill_id=backfill_id, meter_key=meter_key)
                    return
                if not reply.entries:
                    # Committed entries lie beyond the horizon (an older writer is still
                    # running): wait for it rather than asking again at once.
                    await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - recorded on the backfill for GetBackfill
            log.warning("backfill_failed", backfill_id=backfill_id, error=str(error))
            with contextlib.suppress(Exception):
                await repo.fail_backfill(conn, backfill_id, str(error))
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(conn.close(timeout=2))


def now() -> datetime:
    return datetime.now(UTC)
