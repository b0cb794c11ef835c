"""SQL of the ingest schema, on raw asyncpg: this is the hot path.

One round-trip stores a whole batch (unnest arrays into INSERT ... ON CONFLICT DO NOTHING);
asyncpg prepares and caches each statement per connection.

Every write takes its transaction id first and its ingest_time after it (the ``tx`` CTE):
ReadLog's watermark relies on a row's ingest_time being later than the moment its
transaction got its xid.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

from services.ingest.domain.events import PreparedBatch
from services.ingest.domain.log import (
    LogEntry,
    LoggedEvent,
    LoggedUsage,
    LoggedVoid,
    LogHead,
    LogPosition,
)
from services.ingest.domain.usage import AcceptedUsage, UsageRecordQuery

TX_CTE = """
tx AS MATERIALIZED (
    SELECT xid, clock_timestamp() AS ingest_time
    FROM (SELECT pg_current_xact_id() AS xid OFFSET 0) AS assigned
)"""

# The batch travels as few, cheap parameters: asyncpg checks every element of an array
# parameter in Python, which cost more than the rest of the insert. So event types and
# customers go as small dictionaries plus indexes, integers as one comma-separated text, and
# each event's payload hash (32 bytes) and properties as one bytea. Integer microseconds become
# timestamptz in SQL; the float8 product is exact below 2^53 us (year 2255).
INSERT_EVENTS = f"""
WITH {TX_CTE}
INSERT INTO ingest.events
    (xid, ingest_time, idempotency_key, payload_hash, event_type, customer_id, event_time, properties, metered,
     subscription_id)
SELECT tx.xid, tx.ingest_time, e.key, substring(e.blob FROM 1 FOR 32), ($3::text[])[e.t], ($4::text[])[e.c],
       'epoch'::timestamptz + e.micros * interval '1 microsecond', substring(e.blob FROM 33), ($5::bool[])[e.t],
       ($9::text[])[e.s]
FROM tx, unnest(
    $1::text[], $2::bytea[],
    string_to_array($6, ',')::int4[], string_to_array($7, ',')::int4[], string_to_array($8, ',')::int8[],
    string_to_array($10, ',')::int4[]
) AS e(key, blob, t, c, micros, s)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING idempotency_key, event_id::text
"""

INSERT_NEW_EVENTS = INSERT_EVENTS.replace("ON CONFLICT (idempotency_key) DO NOTHING\n", "")
assert INSERT_NEW_EVENTS != INSERT_EVENTS

SELECT_EVENT_KEYS = """
SELECT idempotency_key, event_id::text, payload_hash, subscription_id
FROM ingest.events WHERE idempotency_key = ANY($1::text[])
"""

SELECT_EVENT = """
SELECT e.event_id::text, e.idempotency_key, e.event_type, e.customer_id, e.properties,
       (extract(epoch FROM e.event_time) * 1000000)::int8 AS event_micros,
       e.ingest_time, e.metered, v.reason AS void_reason, v.ingest_time AS void_time, e.subscription_id
FROM ingest.events e
LEFT JOIN ingest.voids v ON v.event_xid = e.xid AND v.event_position = e.position
WHERE e.idempotency_key = $1
"""

SELECT_EVENT_FOR_VOID = """
SELECT xid, position, event_id::text FROM ingest.events WHERE idempotency_key = $1
"""

INSERT_VOID = f"""
WITH {TX_CTE}
INSERT INTO ingest.voids (xid, ingest_time, event_xid, event_position, reason)
SELECT tx.xid, tx.ingest_time, $1::xid8, $2::int8, $3::text FROM tx
ON CONFLICT (event_xid, event_position) DO NOTHING
RETURNING ingest_time
"""

SELECT_VOID = """
SELECT ingest_time FROM ingest.voids WHERE event_xid = $1::xid8 AND event_position = $2::int8
"""

INSERT_USAGE = f"""
WITH {TX_CTE}
INSERT INTO ingest.usage_records
    (xid, ingest_time, idempotency_key, payload_hash, customer_id, meter_key, quantity, memo,
     usage_time, range_start, range_end, dimensions, subscription_id)
SELECT tx.xid, tx.ingest_time, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10::text::jsonb, $11 FROM tx
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING usage_record_id::text
"""

SELECT_USAGE_KEY = """
SELECT usage_record_id::text, payload_hash, subscription_id FROM ingest.usage_records WHERE idempotency_key = $1
"""

# Reading usage records back (GetUsageRecord, ListUsageRecords).
USAGE_RECORD_COLUMNS = """
SELECT usage_record_id::text, idempotency_key, customer_id, meter_key, quantity, memo, usage_time,
       range_start, range_end, dimensions::text AS dimensions, ingest_time, subscription_id
FROM ingest.usage_records u
"""
SELECT_USAGE_BY_KEY = USAGE_RECORD_COLUMNS + "WHERE u.idempotency_key = $1"
SELECT_USAGE_BY_ID = USAGE_RECORD_COLUMNS + "WHERE u.usage_record_id = $1::uuid"

# The log: rows strictly after the cursor and strictly below the horizon (snapshot xmin).
READ_ALONG_THE_INDEX = "SET LOCAL enable_bitmapscan = off; SET LOCAL enable_sort = off"

READ_EVENTS = """
SELECT xid::text::int8 AS xid, position, (extract(epoch FROM ingest_time) * 1000000)::int8 AS ingest_micros,
       event_id::text, idempotency_key, event_type, customer_id,
       (extract(epoch FROM event_time) * 1000000)::int8 AS event_micros, properties, subscription_id
FROM ingest.events e
WHERE (e.xid, e.position) > ($1::xid8, $2::int8) AND e.xid < $3::xid8
-- Qualified: the bare name would sort by the int8 output column, not along the index.
ORDER BY e.xid, e.position
LIMIT $4
"""

READ_USAGE = """
SELECT xid::text::int8 AS xid, position, (extract(epoch FROM ingest_time) * 1000000)::int8 AS ingest_micros,
       usage_record_id::text, idempotency_key, customer_id,
       meter_key, quantity, memo, usage_time, range_start, range_end, dimensions::text AS dimensions, subscription_id
FROM ingest.usage_records u
WHERE (u.xid, u.position) > ($1::xid8, $2::int8) AND u.xid < $3::xid8
ORDER BY u.xid, u.position
LIMIT $4
"""

READ_VOIDS = """
SELECT v.xid::text::int8 AS xid, v.position, (extract(epoch FROM v.ingest_time) * 1000000)::int8 AS ingest_micros,
       v.reason, e.event_id::text, e.idempotency_key, e.event_type, e.customer_id,
       (extract(epoch FROM e.event_time) * 1000000)::int8 AS event_micros, e.properties, e.subscription_id
FROM ingest.voids v
JOIN ingest.events e ON e.xid = v.event_xid AND e.position = v.event_position
WHERE (v.xid, v.position) > ($1::xid8, $2::int8) AND v.xid < $3::xid8
ORDER BY v.xid, v.position
LIMIT $4
"""

# The log horizon comes from two statements, run in this order (services/ingest/README.md
# has the argument). Log writers are the transactions holding RowExclusiveLock on a log
# table: a writer takes that lock before its INSERT takes a transaction id (tx CTE), and
# releases it only once its commit is visible.
_LOG_WRITERS = """
    SELECT a.backend_xid, a.xact_start
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'relation' AND l.mode = 'RowExclusiveLock' AND l.granted
      AND l.relation IN ('ingest.events'::regclass, 'ingest.usage_records'::regclass, 'ingest.voids'::regclass)
      AND l.pid <> pg_backend_pid()
"""
# 1. An instant taken before reading (statement_timestamp() precedes the statement's work),
#    and when the log writers of that moment began.
WRITERS_BEFORE = f"""
WITH writers AS MATERIALIZED ({_LOG_WRITERS})
SELECT statement_timestamp(), (SELECT min(xact_start) FROM writers)
"""
# 2. The snapshot's xmax (taken when the statement starts), then the log writers of this
#    later moment: their 32-bit ids, widened in log_horizon, and when they began.
WRITERS_AFTER = f"""
WITH writers AS MATERIALIZED ({_LOG_WRITERS})
SELECT pg_snapshot_xmax(pg_current_snapshot())::text::int8,
       array_remove(array_agg(backend_xid::text::int8), NULL),
       min(xact_start)
FROM writers
"""

HEAD = """
SELECT xid::text::int8 AS xid, position, ingest_time FROM (
    (SELECT xid, position, ingest_time FROM ingest.events ORDER BY xid DESC, position DESC LIMIT 1)
    UNION ALL
    (SELECT xid, position, ingest_time FROM ingest.usage_records ORDER BY xid DESC, position DESC LIMIT 1)
    UNION ALL
    (SELECT xid, position, ingest_time FROM ingest.voids ORDER BY xid DESC, position DESC LIMIT 1)
) newest ORDER BY xid DESC, position DESC LIMIT 1
"""

COUNTS = """
SELECT (SELECT count(*) FROM ingest.events) AS events,
       (SELECT count(*) FROM ingest.usage_records) AS usage_records,
       (SELECT count(*) FROM ingest.voids) AS voids
"""

UNMETERED_BY_TYPE = """
SELECT event_type, count(*) AS n FROM ingest.events WHERE NOT metered GROUP BY event_type ORDER BY event_type
"""


class WriteConflict(Exception):
    """The write lost a deadlock against a concurrent writer and was rolled back: retry it."""


@dataclass(frozen=True, slots=True)
class StoredKeys:
    """After an insert: event id per key written now, (event id, payload hash, subscription id)
    per key held before."""

    inserted: dict[str, str]
    held: dict[str, tuple[str, bytes, str]]


@dataclass(frozen=True, slots=True)
class StoredKey:
    """What the table holds for an idempotency key."""

    record_id: str
    payload_hash: bytes
    # True when this call wrote the row.
    inserted: bool
    # The stored record's subscription ('' when unattributed).
    subscription_id: str = ""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    event: LoggedEvent
    ingest_time: dt.datetime
    metered: bool
    voided: bool
    void_reason: str


@dataclass(frozen=True, slots=True)
class StoredUsage:
    """A usage record as stored, for reading back."""

    usage: LoggedUsage
    ingest_time: dt.datetime


@dataclass(frozen=True, slots=True)
class IngestCounts:
    events: int
    usage_records: int
    voids: int
    unmetered_by_type: list[tuple[str, int]]


def _logged_event(row: asyncpg.Record) -> LoggedEvent:
    return LoggedEvent(
        row["event_id"],
        row["idempotency_key"],
        row["event_type"],
        row["customer_id"],
        row["event_micros"],
        row["properties"],
        row["subscription_id"],
    )


def _stored_usage(row: asyncpg.Record) -> StoredUsage:
    return StoredUsage(_logged_usage(row), row["ingest_time"])


def _logged_usage(row: asyncpg.Record) -> LoggedUsage:
    return LoggedUsage(
        usage_record_id=row["usage_record_id"],
        idempotency_key=row["idempotency_key"],
        customer_id=row["customer_id"],
        meter_key=row["meter_key"],
        quantity=row["quantity"],
        memo=row["memo"],
        timestamp=row["usage_time"],
        range_start=row["range_start"],
        range_end=row["range_end"],
        dimensions=json.loads(row["dimensions"]),
        subscription_id=row["subscription_id"],
    )


class IngestRepository:
    """SQL over one asyncpg connection; a use case gets one from ``IngestStore.connection``."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def insert_events(self, batch: PreparedBatch, *, optimistic: bool = False) -> StoredKeys:
        """Insert the events whose keys are new; report what every other key already holds.

        Keys taken by a concurrent sender are waited for by ON CONFLICT, then read back by a
        second statement, whose fresh snapshot sees that sender's committed row. Send order is
        log order. Two concurrent batches sharing keys in different orders can deadlock;
        Postgres then aborts one, reported as WriteConflict for the service to retry.

        ``optimistic`` (outside a transaction only) first tries a plain INSERT, which skips
        ON CONFLICT's speculative insertion (a quarter of the insert's cost); any taken key
        makes it fail whole and the ON CONFLICT statement runs instead.
        """
        types: dict[str, int] = {}
        customers: dict[str, int] = {}
        subscriptions: dict[str, int] = {}
        # Postgres arrays are 1-based.
        type_of = [types.setdefault(t, len(types) + 1) for t in batch.event_types]
        customer_of = [customers.setdefault(c, len(customers) + 1) for c in batch.customer_ids]
        subscription_of = [subscriptions.setdefault(s, len(subscriptions) + 1) for s in batch.subscription_ids]
        metered = dict(zip(batch.event_types, batch.metered))
        args = (
            batch.keys,
            list(map(bytes.__add__, batch.payload_hashes, batch.properties)),
            list(types),
            list(customers),
            [metered[t] for t in types],
            ",".join(map(str, type_of)),
            ",".join(map(str, customer_of)),
            ",".join(map(str, batch.timestamps)),
            list(subscriptions),
            ",".join(map(str, subscription_of)),
        )
        rows = None
        try:
            if optimistic:
                try:
                    rows = await self.conn.fetch(INSERT_NEW_EVENTS, *args)
                except asyncpg.UniqueViolationError:
                    rows = None
            if rows is None:
                rows = await self.conn.fetch(INSERT_EVENTS, *args)
        except asyncpg.DeadlockDetectedError as error:
            raise WriteConflict(str(error)) from error
        inserted = dict(rows)
        held: dict[str, tuple[str, bytes, str]] = {}
        if len(inserted) < len(batch):
            missing = [key for key in batch.keys if key not in inserted]
            for key, event_id, payload_hash, subscription_id in await self.conn.fetch(SELECT_EVENT_KEYS, missing):
                held[key] = (event_id, bytes(payload_hash), subscription_id)
        return StoredKeys(inserted, held)

    async def get_event(self, idempotency_key: str) -> StoredEvent | None:
        row = await self.conn.fetchrow(SELECT_EVENT, idempotency_key)
        if row is None:
            return None
        return StoredEvent(
            event=_logged_event(row),
            ingest_time=row["ingest_time"],
            metered=row["metered"],
            voided=row["void_time"] is not None,
            void_reason=row["void_reason"] or "",
        )

    async def void_event(self, idempotency_key: str, reason: str) -> tuple[str, bool, dt.datetime] | None:
        """(event id, already voided, void time); None when no event has the key."""
        event = await self.conn.fetchrow(SELECT_EVENT_FOR_VOID, idempotency_key)
        if event is None:
            return None
        xid, position, event_id = event
        void_time = await self.conn.fetchval(INSERT_VOID, xid, position, reason)
        if void_time is not None:
            return event_id, False, void_time
        return event_id, True, await self.conn.fetchval(SELECT_VOID, xid, position)

    async def insert_usage(self, usage: AcceptedUsage) -> StoredKey:
        record_id = await self.conn.fetchval(
            INSERT_USAGE,
            usage.idempotency_key,
            usage.payload_hash,
            usage.customer_id,
            usage.meter_key,
            usage.quantity,
            usage.memo,
            usage.usage_time,
            usage.range_start,
            usage.range_end,
            json.dumps(dict(usage.dimensions), sort_keys=True),
            usage.subscription_id,
        )
        if record_id is not None:
            return StoredKey(record_id, usage.payload_hash, True, usage.subscription_id)
        row = await self.conn.fetchrow(SELECT_USAGE_KEY, usage.idempotency_key)
        return StoredKey(row["usage_record_id"], bytes(row["payload_hash"]), False, row["subscription_id"])

    async def get_usage_record(self, *, idempotency_key: str = "", usage_record_id: str = "") -> StoredUsage | None:
        """One usage record by key, or by id when no key is given."""
        if idempotency_key:
            row = await self.conn.fetchrow(SELECT_USAGE_BY_KEY, idempotency_key)
        else:
            row = await self.conn.fetchrow(SELECT_USAGE_BY_ID, usage_record_id)
        return None if row is None else _stored_usage(row)

    async def usage_record_id_of(self, idempotency_key: str) -> str | None:
        """The id of the usage record with this key, if there is one (for GetEvent's hint)."""
        row = await self.conn.fetchrow(SELECT_USAGE_KEY, idempotency_key)
        return None if row is None else row["usage_record_id"]

    async def list_usage_records(
        self,
        customer_id: str,
        query: UsageRecordQuery,
        after: tuple[dt.datetime, str] | None,
        limit: int,
        subscription_id: str | None = None,
    ) -> list[StoredUsage]:
        """Up to ``limit`` records of a customer matching ``query``, by (instant, id), after ``after``.

        The conditions are only those the query sets, so the planner sees plain equalities and
        ranges and walks (customer_id, meter_key, usage_time, usage_record_id) or
        (customer_id, usage_time, usage_record_id) in order, stopping after ``limit`` rows.
        """
        conditions = ["u.customer_id = $1"]
        args: list[object] = [customer_id]

        def arg(value: object, cast: str = "") -> str:
            args.append(value)
            return f"${len(args)}{cast}"

        if query.meter_key:
            conditions.append(f"u.meter_key = {arg(query.meter_key)}")
        # Whose: '' is unattributed (ingest_0003).
        if subscription_id is not None and query.include_unattributed:
            conditions.append(f"u.subscription_id IN ({arg(subscription_id)}, '')")
        elif subscription_id is not None:
            conditions.append(f"u.subscription_id = {arg(subscription_id)}")
        elif query.only_unattributed:
            conditions.append("u.subscription_id = ''")
        if query.start is not None:
            conditions.append(f"u.usage_time >= {arg(query.start)}")
        if query.end is not None:
            conditions.append(f"u.usage_time < {arg(query.end)}")
        def matches(pairs: tuple[tuple[str, str], ...]) -> str:
            # As the meter counts it: a dimension the record does not carry has the value "".
            return " AND ".join(f"coalesce(u.dimensions ->> {arg(name)}::text, '') = {arg(value)}::text" for name, value in pairs)

        if query.dimensions:
            conditions.append(f"({matches(query.dimensions)})")
        for match in query.exclude:
            conditions.append(f"NOT ({matches(match)})")
        if after is not None:
            conditions.append(f"(u.usage_time, u.usage_record_id) > ({arg(after[0])}, {arg(after[1], '::uuid')})")
        sql = (
            USAGE_RECORD_COLUMNS
            + "WHERE "
            + " AND ".join(conditions)
            + f" ORDER BY u.usage_time, u.usage_record_id LIMIT {arg(limit)}"
        )
        return [_stored_usage(row) for row in await self.conn.fetch(sql, *args)]

    # ------------------------------------------------------------------ log

    async def log_horizon(self) -> tuple[int, dt.datetime]:
        """(horizon, watermark) for a log read that follows.

        Every log-writing transaction below the horizon has finished, and every row that can
        still appear at or above it carries an ingest_time at or after the watermark. Only the
        log's own writers count: a long transaction elsewhere on the server holds nothing back.
        """
        started, oldest_before = await self.conn.fetchrow(WRITERS_BEFORE)
        xmax, xids32, oldest_after = await self.conn.fetchrow(WRITERS_AFTER)
        horizon = xmax
        for xid32 in xids32 or ():
            # How far the 32-bit id lies behind xmax; more than 2^31 means it lies ahead.
            behind = (xmax - xid32) % 2**32
            if behind <= 2**31:
                horizon = min(horizon, xmax - behind)
        watermark = min(t for t in (started, oldest_before, oldest_after) if t is not None)
        return horizon, watermark

    async def read_log(self, after: LogPosition, horizon: int, limit: int) -> list[LogEntry]:
        """Up to ``limit`` entries after ``after`` and below ``horizon``, in (xid, position) order."""
        args = (after.xid, after.position, horizon, limit)
        async with self.conn.transaction():
            # The planner cannot estimate a row comparison and may fetch the whole backlog to
            # sort it; the log must be read along its (xid, position) index instead.
            await self.conn.execute(READ_ALONG_THE_INDEX)
            event_rows = await self.conn.fetch(READ_EVENTS, *args)
            usage_rows = await self.conn.fetch(READ_USAGE, *args)
            void_rows = await self.conn.fetch(READ_VOIDS, *args)
        events = [
            LogEntry(
                LogPosition(xid, position), ingest, LoggedEvent(event_id, key, event_type, customer, micros, props, sub)
            )
            for xid, position, ingest, event_id, key, event_type, customer, micros, props, sub in event_rows
        ]
        others: list[LogEntry] = []
        for row in usage_rows:
            usage = _logged_usage(row)
            others.append(LogEntry(LogPosition(row["xid"], row["position"]), row["ingest_micros"], usage))
        for row in void_rows:
            void = LoggedVoid(row["reason"], _logged_event(row))
            others.append(LogEntry(LogPosition(row["xid"], row["position"]), row["ingest_micros"], void))
        if not others:
            return events
        entries = events + others
        entries.sort(key=lambda entry: entry.at)
        return entries[:limit]

    async def head(self) -> LogHead:
        row = await self.conn.fetchrow(HEAD)
        return LogHead() if row is None else LogHead(row["position"], row["ingest_time"], row["xid"])

    async def counts(self) -> IngestCounts:
        totals = await self.conn.fetchrow(COUNTS)
        unmetered = [(r["event_type"], r["n"]) for r in await self.conn.fetch(UNMETERED_BY_TYPE)]
        return IngestCounts(totals["events"], totals["usage_records"], totals["voids"], unmetered)


class IngestStore:
    """The asyncpg pool: hands each use case one connection, in a transaction when asked."""

    def __init__(self, pool: asyncpg.Pool | None = None) -> None:
        # Opened by the app's start hook: an asyncpg pool belongs to the serving event loop.
        self.pool = pool

    @asynccontextmanager
    async def connection(self, *, transaction: bool = False) -> AsyncIterator[IngestRepository]:
        """A repository on one pooled connection.

        Without ``transaction`` each statement commits on its own, which is enough when a use
        case writes with one statement (dedup and write are that one INSERT ... ON CONFLICT).
        """
        async with self.pool.acquire() as conn:
            if transaction:
                async with conn.transaction():
                    yield IngestRepository(conn)
            else:
                yield IngestRepository(conn)
