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
from tally.interceptors import is_connection_failure
from tally.metrics import (
    METER_APPLIED_POSITION,
    METER_APPLIER_STALLED,
    METER_LAG_ENTRIES,
    METER_LAG_SECONDS,
    METER_QUARANTINED_ENTRIES,
    METER_UNUSABLE_VALUES,
)
from tally.quarantine import Quarantine, describe
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
        stall_seconds: float = 15.0,
        quarantine: Quarantine | None = None,
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
        # Stall reporting: when the applier's attempts keep failing (Postgres or ingest down,
        # the catalog unreachable), since when and why; cleared by the next good batch.
        self._stall_seconds = stall_seconds
        self._failing_since: float | None = None
        self._failing_since_wall: datetime | None = None
        self._last_error: str = ""
        self.quarantine = quarantine or Quarantine()

    def stall(self) -> tuple[bool, str, datetime | None]:
        """(stalled, why, since when): failing for at least stall_seconds without progress."""
        if self._failing_since is None or time.monotonic() - self._failing_since < self._stall_seconds:
            return False, "", None
        return True, self._last_error, self._failing_since_wall

    def _failed(self, error: BaseException) -> None:
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            self._failing_since_wall = datetime.now(UTC)
        self._last_error = describe(error)
        stalled, _, _ = self.stall()
        METER_APPLIER_STALLED.set(1 if stalled else 0)
        if stalled:
            log.error("applier_stalled", reason=self._last_error, since=self._failing_since_wall.isoformat())

    def _progressed(self) -> None:
        if self._failing_since is not None:
            log.info("applier_recovered", after_seconds=round(time.monotonic() - self._failing_since, 1))
        self._failing_since = None
        self._failing_since_wall = None
        self._last_error = ""
        METER_APPLIER_STALLED.set(0)

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
                self._failed(error)
                await asyncio.sleep(1.0)
            finally:
                self.holds_lease = False
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(conn.close(timeout=2))

    async def _read(
        self, cursor: str, wait: bool
    ) -> tuple[ingest_pb2.ReadLogResponse, list, ApplyPlan | None, list[tuple[int, str, str, str]]]:
        """One ReadLog call, decoded and planned; run as a task so that work overlaps the previous batch's SQL."""
        reply = await self._stub.ReadLog(
            ingest_pb2.ReadLogRequest(cursor=cursor, max_entries=self._batch_size, wait_millis=self._wait_millis if wait else 0),
            timeout=self._wait_millis / 1000 + 30,
        )
        if not reply.entries:
            return reply, [], None, []
        # Every catalog change committed before these entries must be in the cache before
        # they are matched (and decoded: decoding keeps the properties the meters read);
        # asking after the read (but off the apply path) guarantees it.
        await self._catalog.sync()
        entries, poisoned = decode_isolated(reply, self._catalog)
        plan, more = plan_isolated(entries, self._catalog)
        if more:
            bad = {position for position, *_ in more}
            entries = [e for e in entries if e[0] not in bad]
        return reply, entries, plan, poisoned + more

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
                reply, entries, plan, poisoned = await pending
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
                if entries or poisoned or reply.head_position != head or reply.caught_up != caught_up or reply.next_cursor != cursor:
                    alerts = []
                    async with conn.transaction():
                        tally = repo.Tally()
                        if plan is not None:
                            tally, alerts, failed = await self._write_isolated(conn, plan, entries)
                            poisoned = poisoned + failed
                        if poisoned:
                            # In the cursor's transaction: each bad entry is set aside exactly once.
                            await repo.quarantine_entries(conn, poisoned)
                            tally.entries += len(poisoned)
                        await repo.save_progress(
                            conn,
                            cursor=reply.next_cursor,
                            applied_position=max([*(p for p, _ in entries), *(p for p, *_ in poisoned)], default=0),
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
                    for position, entry_id, kind, reason in poisoned:
                        self.quarantine.add("meter.applier", kind, entry_id, reason, position=position)
                        METER_QUARANTINED_ENTRIES.inc()
                self._progressed()
                applied_position = max([applied_position, *(p for p, _ in entries), *(p for p, *_ in poisoned)])
                self._committed_position = applied_position
                cursor, caught_up, head = reply.next_cursor, reply.caught_up, reply.head_position
                self._report_lag(caught_up, head, applied_position, head_time, applied_time)
        finally:
            if pending is not None:
                pending.cancel()

    async def _write_isolated(
        self, conn: asyncpg.Connection, plan: ApplyPlan, entries: list
    ) -> tuple[repo.Tally, list, list[tuple[int, str, str, str]]]:
        """Write the batch; when it fails for a reason other than a lost connection, write it
        again entry by entry (each in a savepoint) and return the entries that still fail.

        (tally, alerts, failed entries as (position, entry_id, kind, reason)).
        """
        try:
            async with conn.transaction():  # a savepoint inside the cursor's transaction
                batch = await write_plan(conn, plan, self._catalog)
                alerts = await evaluate_thresholds(conn, batch, self._catalog, self.quarantine)
            return batch.tally, alerts, []
        except Exception as error:  # noqa: BLE001 - isolate the entry at fault below
            if _transient(error):
                raise
            log.warning("applier_batch_failed_isolating", entries=len(entries), error=describe(error))
        tally, alerts, failed = repo.Tally(), [], []
        for position, item in entries:
            try:
                async with conn.transaction():
                    batch = await write_plan(conn, plan_entries([(position, item)], self._catalog), self._catalog)
                    alerts += await evaluate_thresholds(conn, batch, self._catalog, self.quarantine)
            except Exception as error:  # noqa: BLE001 - this entry is quarantined, the rest applies
                if _transient(error):
                    raise
                failed.append((position, _item_id(item), _item_kind(item), describe(error)))
                continue
            for name in ("entries", "unmetered_events", "unknown_meter_records", "unknown_customer_entries", "unusable_value_events"):
                setattr(tally, name, getattr(tally, name) + getattr(batch.tally, name))
        return tally, alerts, failed

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


def _transient(error: BaseException) -> bool:
    """Failures that say nothing about the entries (a lost connection, a deadlock or
    serialization failure, a cancelled statement, the server out of resources or shutting
    down): the whole attempt is retried, nothing is quarantined."""
    if is_connection_failure(error):
        return True
    return isinstance(
        error,
        (
            asyncpg.exceptions.TransactionRollbackError,
            asyncpg.exceptions.QueryCanceledError,
            asyncpg.exceptions.InsufficientResourcesError,
            asyncpg.exceptions.OperatorInterventionError,
            asyncpg.exceptions.LockNotAvailableError,
        ),
    )


def _entry_kind(entry: ingest_pb2.LogEntry) -> str:
    return f"log_entry.{entry.WhichOneof('entry') or 'empty'}"


def _entry_id(entry: ingest_pb2.LogEntry) -> str:
    kind = entry.WhichOneof("entry")
    if kind == "event":
        return entry.event.event_id or entry.event.idempotency_key or str(entry.position)
    if kind is not None:
        inner = getattr(entry, kind)
        for name in ("event_id", "record_id", "id", "idempotency_key"):
            value = getattr(inner, name, "") if name in inner.DESCRIPTOR.fields_by_name else ""
            if value:
                return value
    return str(entry.position)


def _item_kind(item: object) -> str:
    if isinstance(item, str):
        return "log_entry.void"
    return "log_entry.usage" if type(item).__name__ == "IncomingUsage" else "log_entry.event"


def _item_id(item: object) -> str:
    if isinstance(item, str):
        return item
    return str(getattr(item, "event_id", "") or getattr(item, "record_id", "") or "")


def decode_isolated(
    reply: ingest_pb2.ReadLogResponse, catalog: CatalogView
) -> tuple[list[tuple[int, object]], list[tuple[int, str, str, str]]]:
    """``decode``, except that an entry that cannot be decoded is returned apart (as
    (position, entry_id, kind, reason)) instead of failing the whole page."""
    try:
        return decode(reply, catalog), []
    except Exception:  # noqa: BLE001 - find the entries at fault, one by one
        pass
    roots = lambda event_type: property_roots(catalog.meters_for_event_type(event_type))  # noqa: E731
    entries, poisoned = [], []
    for entry in reply.entries:
        try:
            entries.extend(mapping.log_items([entry], roots))
        except Exception as error:  # noqa: BLE001 - quarantined by the caller
            poisoned.append((entry.position, _entry_id(entry), _entry_kind(entry), describe(error)))
    return entries, poisoned


def plan_isolated(
    entries: list[tuple[int, object]], catalog: CatalogView
) -> tuple[ApplyPlan | None, list[tuple[int, str, str, str]]]:
    """``plan_entries``, except that entries that cannot be planned are returned apart."""
    try:
        return plan_entries(entries, catalog), []
    except Exception:  # noqa: BLE001 - find the entries at fault, one by one
        pass
    good, poisoned = [], []
    for position, item in entries:
        try:
            plan_entries([(position, item)], catalog)
        except Exception as error:  # noqa: BLE001 - quarantined by the caller
            poisoned.append((position, _item_id(item), _item_kind(item), describe(error)))
        else:
            good.append((position, item))
    return (plan_entries(good, catalog) if good else None), poisoned


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
