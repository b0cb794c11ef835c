"""SQL of the meter schema (raw asyncpg: the apply path and GetUsage are the hot paths).

Apply path: contributions are inserted with ``unnest`` arrays and ON CONFLICT DO NOTHING
(a replayed entry adds nothing), then every touched one-minute window is recomputed from its
contributions in one statement. Query path: one statement per request aggregates the whole
buckets inside the period plus the raw contributions of its unaligned edges.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from services.meter.domain.model import Contribution, Dimensions

WindowKey = tuple[str, str, datetime, str, str]  # customer_id, meter_key, window_start, dims_key, subscription_id

# Which subscriptions' usage a query reads: (everything, a, b). Everything: the customer's
# whole usage; else the usage attributed to subscription a or b ('' is unattributed), so
# (False, sub, sub) is one subscription's usage and (False, sub, '') adds the unattributed.
SubscriptionScope = tuple[bool, str, str]
ALL_SUBSCRIPTIONS: SubscriptionScope = (True, "", "")

ALERT_INSERT_LOCK = 0x7A11_A1E7  # serializes alert inserts so sequence order is commit order


@functools.lru_cache(maxsize=65536)
def dims_key(dimensions: Dimensions) -> str:
    """Canonical text of a dimension set (sorted JSON object)."""
    return json.dumps(dict(dimensions), sort_keys=True, separators=(",", ":"))


# ---------------------------------------------------------------- apply


# New contributions travel as few, cheap parameters (asyncpg checks and encodes every element
# of an array parameter in Python, which cost more than the SQL): meter keys, customers and
# dimension sets as small dictionaries plus comma-separated indexes, values and counts as
# comma-separated decimal text, positions as comma-separated integers. Entry ids stay a text
# array (an id may hold any character); the window is computed from ts by date_bin.
_CONTRIBUTIONS = """
    SELECT e.entry_id, ($2::text[])[e.m] AS meter_key, ($3::text[])[e.c] AS customer_id, ($4::text[])[e.d] AS dims_key,
           e.ts, date_bin('1 minute', e.ts, '1970-01-01 00:00+00') AS window_start,
           e.value::numeric AS value, e.count::numeric AS count, e.unique_value, e.position,
           ($13::text[])[e.s] AS subscription_id
    FROM unnest($1::text[], string_to_array($5, ',')::int4[], string_to_array($6, ',')::int4[],
                string_to_array($7, ',')::int4[], $8::timestamptz[], string_to_array($9, ','), string_to_array($10, ','),
                $11::text[], string_to_array($12, ',')::int8[], string_to_array($14, ',')::int4[])
         AS e(entry_id, m, c, d, ts, value, count, unique_value, position, s)"""

NewContribution = tuple[Contribution, int]  # the contribution and the log position of its entry



# Most rows one usage query may read into memory (per statement). A query over more
# (dimension sets x points, distinct values, weighted pieces) is refused before its rows are
# built, instead of growing the process: TooManyRows, which the use cases turn into
# INVALID_ARGUMENT naming what to narrow.
MAX_QUERY_ROWS = 200_000


class TooManyRows(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the query would read more than {limit:,} rows")
        self.limit = limit


async def _fetch_bounded(conn: asyncpg.Connection, query: str, *args: Any) -> list[asyncpg.Record]:
    rows = await conn.fetch(f"{query}\n        LIMIT {MAX_QUERY_ROWS + 1}", *args)
    if len(rows) > MAX_QUERY_ROWS:
        raise TooManyRows(MAX_QUERY_ROWS)
    return rows

async def insert_contributions(conn: asyncpg.Connection, rows: Sequence[NewContribution]) -> list[WindowKey]:
    """Store new contributions (with their log position); returns the windows they touched.

    Already stored (entry, meter) pairs and voided entries add nothing.
    """
    if not rows:
        return []
    records = await conn.fetch(
        f"""
        WITH x AS ({_CONTRIBUTIONS})
        INSERT INTO meter.contributions
            (entry_id, meter_key, customer_id, dims_key, ts, window_start, value, count, unique_value, position,
             subscription_id)
        SELECT * FROM x WHERE NOT EXISTS (SELECT 1 FROM meter.voided_entries v WHERE v.entry_id = x.entry_id)
        ON CONFLICT (entry_id, meter_key) DO NOTHING
        RETURNING customer_id, meter_key, window_start, dims_key, subscription_id
        """,
        *_contribution_columns(rows),
    )
    return [tuple(r) for r in records]


_INSERT_AND_MERGE = f"""
WITH x AS ({_CONTRIBUTIONS}
),
inserted AS (
    INSERT INTO meter.contributions
        (entry_id, meter_key, customer_id, dims_key, ts, window_start, value, count, unique_value, position,
         subscription_id)
    SELECT * FROM x WHERE NOT EXISTS (SELECT 1 FROM meter.voided_entries v WHERE v.entry_id = x.entry_id)
    ON CONFLICT (entry_id, meter_key) DO NOTHING
    RETURNING customer_id, meter_key, window_start, dims_key, ts, entry_id, value, count, unique_value, subscription_id
),
uniques AS (
    INSERT INTO meter.bucket_uniques (customer_id, meter_key, window_start, dims_key, value, dims, subscription_id)
    SELECT DISTINCT customer_id, meter_key, window_start, dims_key, unique_value, dims_key::jsonb, subscription_id
    FROM inserted WHERE unique_value IS NOT NULL
    ON CONFLICT DO NOTHING
),
summarized AS (
    SELECT customer_id, meter_key, window_start, dims_key, subscription_id,
           sum(count) AS count, sum(value) AS total, min(value) AS minimum, max(value) AS maximum,
           (array_agg(ts ORDER BY ts DESC, entry_id COLLATE "C" DESC))[1] AS latest_ts,
           (array_agg(entry_id ORDER BY ts DESC, entry_id COLLATE "C" DESC))[1] AS latest_id,
           (array_agg(value ORDER BY ts DESC, entry_id COLLATE "C" DESC))[1] AS latest_value,
           min(ts) AS first_ts
    FROM inserted
    GROUP BY customer_id, meter_key, window_start, dims_key, subscription_id
),
days AS (
    INSERT INTO meter.day_buckets AS d (customer_id, meter_key, day, dims_key, subscription_id, dims, count, total,
                                        minimum, maximum, latest_ts, latest_id, latest_value)
    SELECT customer_id, meter_key, date_bin('1 day', window_start, '2000-01-01 00:00+00'), dims_key, subscription_id,
           dims_key::jsonb,
           sum(count), sum(total), min(minimum), max(maximum),
           (array_agg(latest_ts ORDER BY latest_ts DESC, latest_id COLLATE "C" DESC))[1],
           (array_agg(latest_id ORDER BY latest_ts DESC, latest_id COLLATE "C" DESC))[1],
           (array_agg(latest_value ORDER BY latest_ts DESC, latest_id COLLATE "C" DESC))[1]
    FROM summarized
    GROUP BY 1, 2, 3, 4, 5
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (customer_id, meter_key, day, dims_key, subscription_id) DO UPDATE SET
        count = d.count + excluded.count,
        total = d.total + excluded.total,
        minimum = least(d.minimum, excluded.minimum),
        maximum = greatest(d.maximum, excluded.maximum),
        latest_ts = CASE WHEN (excluded.latest_ts, excluded.latest_id COLLATE "C") > (d.latest_ts, d.latest_id COLLATE "C")
                         THEN excluded.latest_ts ELSE d.latest_ts END,
        latest_value = CASE WHEN (excluded.latest_ts, excluded.latest_id COLLATE "C") > (d.latest_ts, d.latest_id COLLATE "C")
                            THEN excluded.latest_value ELSE d.latest_value END,
        latest_id = CASE WHEN (excluded.latest_ts, excluded.latest_id COLLATE "C") > (d.latest_ts, d.latest_id COLLATE "C")
                         THEN excluded.latest_id ELSE d.latest_id END
)
INSERT INTO meter.buckets AS b (customer_id, meter_key, window_start, dims_key, subscription_id, dims, count, total,
                                minimum, maximum, latest_ts, latest_id, latest_value, first_ts, integral)
SELECT customer_id, meter_key, window_start, dims_key, subscription_id, dims_key::jsonb, count, total, minimum, maximum,
       latest_ts, latest_id, latest_value, first_ts, 0
FROM summarized
ORDER BY 1, 2, 3, 4, 5
ON CONFLICT (customer_id, meter_key, window_start, dims_key, subscription_id) DO UPDATE SET
    count = b.count + excluded.count,
    total = b.total + excluded.total,
    minimum = least(b.minimum, excluded.minimum),
    maximum = greatest(b.maximum, excluded.maximum),
    latest_ts = CASE WHEN (excluded.latest_ts, excluded.latest_id COLLATE "C") > (b.latest_ts, b.latest_id COLLATE "C")
                     THEN excluded.latest_ts ELSE b.latest_ts END,
    latest_value = CASE WHEN (excluded.latest_ts, excluded.latest_id COLLATE "C") > (b.latest_ts, b.latest_id COLLATE "C")
                        THEN excluded.latest_value ELSE b.latest_value END,
    latest_id = CASE WHEN (excluded.latest_ts, excluded.latest_id COLLATE "C") > (b.latest_ts, b.latest_id COLLATE "C")
                     THEN excluded.latest_id ELSE b.latest_id END,
    first_ts = least(b.first_ts, excluded.first_ts)
RETURNING customer_id, meter_key, window_start, dims_key, subscription_id
"""


async def insert_and_merge(conn: asyncpg.Connection, rows: Sequence[NewContribution]) -> list[WindowKey]:
    """Store new contributions and merge them into their buckets in one statement.

    For every aggregation except WEIGHTED_SUM a window's summary (and its distinct values) can
    absorb new contributions without rereading the old ones; a replayed or voided entry is
    filtered out by the insert before anything is merged. Returns the windows that changed.
    """
    if not rows:
        return []
    records = await conn.fetch(_INSERT_AND_MERGE, *_contribution_columns(rows))
    return [tuple(r) for r in records]


def _contribution_columns(rows: Sequence[NewContribution]) -> list:
    meters: dict[str, int] = {}
    customers: dict[str, int] = {}
    dimension_sets: dict[Dimensions, int] = {}
    subscriptions: dict[str, int] = {}
    # Postgres arrays are 1-based.
    meter_of = [meters.setdefault(c.meter_key, len(meters) + 1) for c, _ in rows]
    customer_of = [customers.setdefault(c.customer_id, len(customers) + 1) for c, _ in rows]
    dims_of = [dimension_sets.setdefault(c.dimensions, len(dimension_sets) + 1) for c, _ in rows]
    subscription_of = [subscriptions.setdefault(c.subscription_id, len(subscriptions) + 1) for c, _ in rows]
    uniques = [c.unique_value for c, _ in rows]
    return [
        [c.entry_id for c, _ in rows],
        list(meters),
        list(customers),
        [dims_key(d) for d in dimension_sets],
        ",".join(map(str, meter_of)),
        ",".join(map(str, customer_of)),
        ",".join(map(str, dims_of)),
        [c.timestamp for c, _ in rows],
        ",".join([str(c.value) for c, _ in rows]),
        ",".join([str(c.count) for c, _ in rows]),
        # unnest pads a shorter array with NULLs: no unique values, no array to send.
        uniques if any(u is not None for u in uniques) else [],
        ",".join([str(p) for _, p in rows]),
        list(subscriptions),
        ",".join(map(str, subscription_of)),
    ]


async def void_entries(conn: asyncpg.Connection, entry_ids: Sequence[str], positions: Sequence[int]) -> list[WindowKey]:
    """Tombstone voided entries and remove their contributions; returns the windows to recompute."""
    if not entry_ids:
        return []
    await conn.execute(
        """
        INSERT INTO meter.voided_entries (entry_id, position)
        SELECT * FROM unnest($1::text[], $2::bigint[]) ON CONFLICT (entry_id) DO NOTHING
        """,
        list(entry_ids),
        list(positions),
    )
    records = await conn.fetch(
        """
        DELETE FROM meter.contributions WHERE entry_id = ANY($1::text[])
        RETURNING customer_id, meter_key, window_start, dims_key, subscription_id
        """,
        list(entry_ids),
    )
    return [tuple(r) for r in records]


_TOUCHED = """
    touched AS (
        SELECT DISTINCT customer_id, meter_key, window_start, dims_key, subscription_id
        FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[])
             AS t(customer_id, meter_key, window_start, dims_key, subscription_id)
    )"""

_RECOMPUTE_BUCKETS = f"""
WITH {_TOUCHED},
contributed AS (
    SELECT t.customer_id, t.meter_key, t.window_start, t.dims_key, t.subscription_id, c.ts, c.entry_id, c.value, c.count,
           lead(c.ts) OVER (PARTITION BY t.customer_id, t.meter_key, t.window_start, t.dims_key, t.subscription_id
                            ORDER BY c.ts, c.entry_id COLLATE "C") AS next_ts
    FROM touched t
    JOIN meter.contributions c
      ON c.customer_id = t.customer_id AND c.meter_key = t.meter_key
     AND c.ts >= t.window_start AND c.ts < t.window_start + interval '1 minute' AND c.dims_key = t.dims_key
     AND c.subscription_id = t.subscription_id
),
summarized AS (
    SELECT customer_id, meter_key, window_start, dims_key, subscription_id,
           dims_key::jsonb AS dims,
           sum(count) AS count, sum(value) AS total, min(value) AS minimum, max(value) AS maximum,
           (array_agg(ts ORDER BY ts DESC, entry_id COLLATE "C" DESC))[1] AS latest_ts,
           (array_agg(entry_id ORDER BY ts DESC, entry_id COLLATE "C" DESC))[1] AS latest_id,
           (array_agg(value ORDER BY ts DESC, entry_id COLLATE "C" DESC))[1] AS latest_value,
           min(ts) AS first_ts,
           sum(value * extract(epoch FROM coalesce(next_ts, window_start + interval '1 minute') - ts)) AS integral
    FROM contributed
    GROUP BY customer_id, meter_key, window_start, dims_key, subscription_id
),
emptied AS (
    DELETE FROM meter.buckets b USING touched t
    WHERE b.customer_id = t.customer_id AND b.meter_key = t.meter_key
      AND b.window_start = t.window_start AND b.dims_key = t.dims_key AND b.subscription_id = t.subscription_id
      AND NOT EXISTS (
          SELECT 1 FROM summarized s
          WHERE s.customer_id = t.customer_id AND s.meter_key = t.meter_key
            AND s.window_start = t.window_start AND s.dims_key = t.dims_key AND s.subscription_id = t.subscription_id)
)
INSERT INTO meter.buckets (customer_id, meter_key, window_start, dims_key, subscription_id, dims, count, total,
                           minimum, maximum, latest_ts, latest_id, latest_value, first_ts, integral)
SELECT customer_id, meter_key, window_start, dims_key, subscription_id, dims, count, total, minimum, maximum,
       latest_ts, latest_id, latest_value, first_ts, integral
FROM summarized
ON CONFLICT (customer_id, meter_key, window_start, dims_key, subscription_id) DO UPDATE SET
    count = excluded.count, total = excluded.total, minimum = excluded.minimum, maximum = excluded.maximum,
    latest_ts = excluded.latest_ts, latest_id = excluded.latest_id, latest_value = excluded.latest_value,
    first_ts = excluded.first_ts, integral = excluded.integral
"""


_RECOMPUTE_DAYS = """
WITH touched AS (
    SELECT DISTINCT customer_id, meter_key, date_bin('1 day', window_start, '2000-01-01 00:00+00') AS day, dims_key,
           subscription_id
    FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[])
         AS t(customer_id, meter_key, window_start, dims_key, subscription_id)
),
summarized AS (
    SELECT t.customer_id, t.meter_key, t.day, t.dims_key, t.subscription_id,
           sum(b.count) AS count, sum(b.total) AS total, min(b.minimum) AS minimum, max(b.maximum) AS maximum,
           (array_agg(b.latest_ts ORDER BY b.latest_ts DESC, b.latest_id COLLATE "C" DESC))[1] AS latest_ts,
           (array_agg(b.latest_id ORDER BY b.latest_ts DESC, b.latest_id COLLATE "C" DESC))[1] AS latest_id,
           (array_agg(b.latest_value ORDER BY b.latest_ts DESC, b.latest_id COLLATE "C" DESC))[1] AS latest_value
    FROM touched t
    JOIN meter.buckets b
      ON b.customer_id = t.customer_id AND b.meter_key = t.meter_key
     AND b.window_start >= t.day AND b.window_start < t.day + interval '1 day' AND b.dims_key = t.dims_key
     AND b.subscription_id = t.subscription_id
    GROUP BY 1, 2, 3, 4, 5
),
emptied AS (
    DELETE FROM meter.day_buckets d USING touched t
    WHERE d.customer_id = t.customer_id AND d.meter_key = t.meter_key AND d.day = t.day AND d.dims_key = t.dims_key
      AND d.subscription_id = t.subscription_id
      AND NOT EXISTS (
          SELECT 1 FROM summarized s
          WHERE s.customer_id = t.customer_id AND s.meter_key = t.meter_key AND s.day = t.day AND s.dims_key = t.dims_key
            AND s.subscription_id = t.subscription_id)
)
INSERT INTO meter.day_buckets (customer_id, meter_key, day, dims_key, subscription_id, dims, count, total, minimum,
                               maximum, latest_ts, latest_id, latest_value)
SELECT customer_id, meter_key, day, dims_key, subscription_id, dims_key::jsonb, count, total, minimum, maximum,
       latest_ts, latest_id, latest_value
FROM summarized
ON CONFLICT (customer_id, meter_key, day, dims_key, subscription_id) DO UPDATE SET
    count = excluded.count, total = excluded.total, minimum = excluded.minimum, maximum = excluded.maximum,
    latest_ts = excluded.latest_ts, latest_id = excluded.latest_id, latest_value = excluded.latest_value
"""


async def recompute_windows(conn: asyncpg.Connection, keys: Sequence[WindowKey], unique_meters: set[str]) -> None:
    """Recompute each touched window's bucket (and, for COUNT_UNIQUE meters, its distinct values)."""
    if not keys:
        return
    keys = sorted(set(keys))
    columns = [list(col) for col in zip(*keys)]
    await conn.execute(_RECOMPUTE_BUCKETS, *columns)
    await conn.execute(_RECOMPUTE_DAYS, *columns)
    unique_keys = [k for k in keys if k[1] in unique_meters]
    if not unique_keys:
        return
    columns = [list(col) for col in zip(*unique_keys)]
    await conn.execute(
        f"""
        WITH {_TOUCHED}
        DELETE FROM meter.bucket_uniques u USING touched t
        WHERE u.customer_id = t.customer_id AND u.meter_key = t.meter_key
          AND u.window_start = t.window_start AND u.dims_key = t.dims_key AND u.subscription_id = t.subscription_id
        """,
        *columns,
    )
    await conn.execute(
        f"""
        WITH {_TOUCHED}
        INSERT INTO meter.bucket_uniques (customer_id, meter_key, window_start, dims_key, value, dims, subscription_id)
        SELECT DISTINCT ON (t.customer_id, t.meter_key, t.window_start, t.dims_key, t.subscription_id, c.unique_value)
               t.customer_id, t.meter_key, t.window_start, t.dims_key, c.unique_value, t.dims_key::jsonb, t.subscription_id
        FROM touched t
        JOIN meter.contributions c
          ON c.customer_id = t.customer_id AND c.meter_key = t.meter_key
         AND c.ts >= t.window_start AND c.ts < t.window_start + interval '1 minute' AND c.dims_key = t.dims_key
         AND c.subscription_id = t.subscription_id
        WHERE c.unique_value IS NOT NULL
        """,
        *columns,
    )


# ---------------------------------------------------------------- applier state


@dataclass(frozen=True)
class ApplierState:
    cursor: str
    applied_position: int
    applied_ingest_time: datetime | None
    applied_watermark: datetime | None
    head_position: int
    head_ingest_time: datetime | None
    caught_up: bool
    entries_applied: int
    unmetered_events: int
    unknown_meter_records: int
    unknown_customer_entries: int
    unusable_value_events: int
    last_apply_time: datetime | None
    unattributed_entries: int = 0


@dataclass
class Tally:
    """Counts of one applied batch, added to the applier's totals."""

    entries: int = 0
    unmetered_events: int = 0
    unknown_meter_records: int = 0
    unknown_customer_entries: int = 0
    unusable_value_events: int = 0
    # Metered entries attributed to no subscription.
    unattributed_entries: int = 0


async def load_state(conn: asyncpg.Connection, consumer: str = "main") -> ApplierState:
    row = await conn.fetchrow(
        """
        SELECT cursor, applied_position, applied_ingest_time, applied_watermark, head_position, head_ingest_time,
               caught_up, entries_applied, unmetered_events, unknown_meter_records, unknown_customer_entries,
               unusable_value_events, last_apply_time, unattributed_entries
        FROM meter.applier_state WHERE consumer = $1
        """,
        consumer,
    )
    return ApplierState(**dict(row))


async def save_progress(
    conn: asyncpg.Connection,
    *,
    cursor: str,
    applied_position: int,
    applied_ingest_time: datetime | None,
    watermark: datetime | None,
    head_position: int,
    head_ingest_time: datetime | None,
    caught_up: bool,
    tally: Tally,
    consumer: str = "main",
) -> None:
    """Advance the cursor; called in the same transaction as the bucket updates."""
    await conn.execute(
        """
        UPDATE meter.applier_state SET
            cursor = $2,
            applied_position = greatest(applied_position, $3),
            applied_ingest_time = coalesce($4, applied_ingest_time),
            applied_watermark = coalesce($5, applied_watermark),
            head_position = greatest(head_position, $6),
            head_ingest_time = coalesce($7, head_ingest_time),
            caught_up = $8,
            entries_applied = entries_applied + $9,
            unmetered_events = unmetered_events + $10,
            unknown_meter_records = unknown_meter_records + $11,
            unknown_customer_entries = unknown_customer_entries + $12,
            unusable_value_events = unusable_value_events + $13,
            unattributed_entries = unattributed_entries + $14,
            last_apply_time = CASE WHEN $9 > 0 THEN now() ELSE last_apply_time END
        WHERE consumer = $1
        """,
        consumer,
        cursor,
        applied_position,
        applied_ingest_time,
        watermark,
        head_position,
        head_ingest_time,
        caught_up,
        tally.entries,
        tally.unmetered_events,
        tally.unknown_meter_records,
        tally.unknown_customer_entries,
        tally.unusable_value_events,
        tally.unattributed_entries,
    )


# ---------------------------------------------------------------- queries


def _edge_args(start: datetime, inner_start: datetime, inner_end: datetime, end: datetime) -> list[datetime]:
    return [start, inner_start, inner_end, end]


_EDGE = "((c.ts >= $3 AND c.ts < $4) OR (c.ts >= $5 AND c.ts < $6))"


async def summary_rows(
    conn: asyncpg.Connection,
    customer_id: str,
    meter_key: str,
    span: tuple[datetime, datetime, datetime, datetime],
    boundaries: Sequence[datetime],
    dimension_filter: dict[str, str],
    with_latest: bool,
    days: tuple[datetime, datetime] | None = None,
    scope: SubscriptionScope = ALL_SUBSCRIPTIONS,
) -> list[asyncpg.Record]:
    """Per (dims, point) sums, counts, min, max (and latest) over [start, end).

    ``span`` is (start, inner_start, inner_end, end): whole buckets cover [inner_start,
    inner_end), raw contributions cover the edges. ``days`` (whole UTC days inside the inner
    span, only when no point boundary falls inside them) are read from the day roll-ups.
    ``boundaries`` split the period into points.
    """
    start, inner_start, inner_end, end = span
    day_start, day_end = days if days is not None else (inner_end, inner_end)
    latest = (
        """, (array_agg(latest_ts ORDER BY latest_ts DESC, latest_id COLLATE "C" DESC))[1] AS latest_ts,
             (array_agg(latest_id ORDER BY latest_ts DESC, latest_id COLLATE "C" DESC))[1] AS latest_id,
             (array_agg(latest_value ORDER BY latest_ts DESC, latest_id COLLATE "C" DESC))[1] AS latest_value"""
        if with_latest
        else ""
    )
    # Only the sources the period needs: a period of whole UTC days (a calendar month, say)
    # reads its day rows alone, instead of also probing the minute buckets and contributions
    # with empty ranges (each probe a descent of a large index).
    args: list[Any] = [customer_id, meter_key, list(boundaries), json.dumps(dimension_filter)]

    def param(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    # The subscriptions read, as a condition on a source's alias ('' reads them all).
    scoped = "" if scope[0] else f" AND {{alias}}.subscription_id IN ({param(scope[1])}, {param(scope[2])})"

    def only(alias: str) -> str:
        return scoped.format(alias=alias)

    parts = []
    if day_start < day_end:
        parts.append(
            f"""
            SELECT d.dims_key, d.dims, d.day AS t, d.count, d.total, d.minimum, d.maximum,
                   d.latest_ts, d.latest_id, d.latest_value
            FROM meter.day_buckets d
            WHERE d.customer_id = $1 AND d.meter_key = $2 AND d.day >= {param(day_start)} AND d.day < {param(day_end)}
              AND d.dims @> $4::jsonb{only("d")}"""
        )
    for low, high in ((inner_start, day_start), (day_end, inner_end)):
        if low < high:
            parts.append(
                f"""
            SELECT b.dims_key, b.dims, b.window_start AS t, b.count, b.total, b.minimum, b.maximum,
                   b.latest_ts, b.latest_id, b.latest_value
            FROM meter.buckets b
            WHERE b.customer_id = $1 AND b.meter_key = $2
              AND b.window_start >= {param(low)} AND b.window_start < {param(high)} AND b.dims @> $4::jsonb{only("b")}"""
            )
    if start < inner_start or inner_end < end:
        edge = (
            f"((c.ts >= {param(start)} AND c.ts < {param(inner_start)}) "
            f"OR (c.ts >= {param(inner_end)} AND c.ts < {param(end)}))"
        )
        parts.append(
            f"""
            SELECT c.dims_key, c.dims_key::jsonb AS dims, c.ts AS t, c.count, c.value AS total, c.value AS minimum,
                   c.value AS maximum, c.ts AS latest_ts, c.entry_id AS latest_id, c.value AS latest_value
            FROM meter.contributions c
            WHERE c.customer_id = $1 AND c.meter_key = $2 AND {edge} AND c.dims_key::jsonb @> $4::jsonb{only("c")}"""
        )
    if not parts:
        return []
    union = "\n            UNION ALL".join(parts)
    return await _fetch_bounded(
        conn,
        f"""
        SELECT dims_key, min(dims::text) AS dims, width_bucket(t, $3::timestamptz[]) AS point,
               sum(count) AS count, sum(total) AS total, min(minimum) AS minimum, max(maximum) AS maximum
               {latest}
        FROM ({union}
        ) x
        GROUP BY dims_key, point
        """,
        *args,
    )


async def batch_summary_rows(
    conn: asyncpg.Connection,
    queries: Sequence[
        tuple[
            str,
            str,
            tuple[datetime, datetime, datetime, datetime],
            tuple[datetime, datetime] | None,
            dict[str, str],
            SubscriptionScope,
        ]
    ],
    with_latest: bool,
) -> list[asyncpg.Record]:
    """``summary_rows`` of many single-period queries in one statement, per (query, dims).

    Each query is (customer_id, meter_key, span, days, dimension_filter, scope) as in
    ``summary_rows``; the ``query`` column of a row is the 1-based position of its query.
    """
    latest = (
        """, (array_agg(x.latest_ts ORDER BY x.latest_ts DESC, x.latest_id COLLATE "C" DESC))[1] AS latest_ts,
             (array_agg(x.latest_id ORDER BY x.latest_ts DESC, x.latest_id COLLATE "C" DESC))[1] AS latest_id,
             (array_agg(x.latest_value ORDER BY x.latest_ts DESC, x.latest_id COLLATE "C" DESC))[1] AS latest_value"""
        if with_latest
        else ""
    )
    columns: list[list] = [[] for _ in range(12)]
    for customer_id, meter_key, span, days, dimension_filter, scope in queries:
        day_start, day_end = days if days is not None else (span[2], span[2])
        values = (customer_id, meter_key, *span, day_start, day_end, json.dumps(dimension_filter), *scope)
        for column, value in zip(columns, values):
            column.append(value)
    return await _fetch_bounded(
        conn,
        f"""
        SELECT q.idx AS query, x.dims_key, min(x.dims::text) AS dims,
               sum(x.count) AS count, sum(x.total) AS total, min(x.minimum) AS minimum, max(x.maximum) AS maximum
               {latest}
        FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::timestamptz[],
                    $6::timestamptz[], $7::timestamptz[], $8::timestamptz[], $9::text[], $10::bool[], $11::text[],
                    $12::text[])
             WITH ORDINALITY AS q(customer_id, meter_key, s, inner_s, inner_e, e, day_s, day_e, filter, every, sub_a,
                                  sub_b, idx)
        CROSS JOIN LATERAL (
            SELECT d.dims_key, d.dims, d.count, d.total, d.minimum, d.maximum, d.latest_ts, d.latest_id, d.latest_value
            FROM meter.day_buckets d
            WHERE d.customer_id = q.customer_id AND d.meter_key = q.meter_key AND d.day >= q.day_s AND d.day < q.day_e
              AND d.dims @> q.filter::jsonb AND (q.every OR d.subscription_id IN (q.sub_a, q.sub_b))
            UNION ALL
            SELECT b.dims_key, b.dims, b.count, b.total, b.minimum, b.maximum, b.latest_ts, b.latest_id, b.latest_value
            FROM meter.buckets b
            WHERE b.customer_id = q.customer_id AND b.meter_key = q.meter_key
              AND b.window_start >= q.inner_s AND b.window_start < q.day_s AND b.dims @> q.filter::jsonb
              AND (q.every OR b.subscription_id IN (q.sub_a, q.sub_b))
            UNION ALL
            SELECT b.dims_key, b.dims, b.count, b.total, b.minimum, b.maximum, b.latest_ts, b.latest_id, b.latest_value
            FROM meter.buckets b
            WHERE b.customer_id = q.customer_id AND b.meter_key = q.meter_key
              AND b.window_start >= q.day_e AND b.window_start < q.inner_e AND b.dims @> q.filter::jsonb
              AND (q.every OR b.subscription_id IN (q.sub_a, q.sub_b))
            UNION ALL
            SELECT c.dims_key, c.dims_key::jsonb, c.count, c.value, c.value, c.value, c.ts, c.entry_id, c.value
            FROM meter.contributions c
            WHERE c.customer_id = q.customer_id AND c.meter_key = q.meter_key
              AND ((c.ts >= q.s AND c.ts < q.inner_s) OR (c.ts >= q.inner_e AND c.ts < q.e))
              AND c.dims_key::jsonb @> q.filter::jsonb AND (q.every OR c.subscription_id IN (q.sub_a, q.sub_b))
        ) x
        GROUP BY q.idx, x.dims_key
        """,
        *columns,
    )


async def unique_rows(
    conn: asyncpg.Connection,
    customer_id: str,
    meter_key: str,
    span: tuple[datetime, datetime, datetime, datetime],
    boundaries: Sequence[datetime],
    dimension_filter: dict[str, str],
    scope: SubscriptionScope = ALL_SUBSCRIPTIONS,
) -> list[asyncpg.Record]:
    """Distinct (dims, point, value) of a COUNT_UNIQUE meter over [start, end)."""
    return await _fetch_bounded(
        conn,
        f"""
        SELECT DISTINCT dims_key, dims::text AS dims, width_bucket(t, $7::timestamptz[]) AS point, value
        FROM (
            SELECT u.dims_key, u.dims, u.window_start AS t, u.value
            FROM meter.bucket_uniques u
            WHERE u.customer_id = $1 AND u.meter_key = $2 AND u.window_start >= $4 AND u.window_start < $5
              AND u.dims @> $8::jsonb AND ($9 OR u.subscription_id IN ($10, $11))
            UNION ALL
            SELECT c.dims_key, c.dims_key::jsonb, c.ts, c.unique_value
            FROM meter.contributions c
            WHERE c.customer_id = $1 AND c.meter_key = $2 AND {_EDGE} AND c.dims_key::jsonb @> $8::jsonb
              AND c.unique_value IS NOT NULL AND ($9 OR c.subscription_id IN ($10, $11))
        ) x
        """,
        customer_id,
        meter_key,
        *span,
        list(boundaries),
        json.dumps(dimension_filter),
        *scope,
    )


async def weighted_rows(
    conn: asyncpg.Connection,
    customer_id: str,
    meter_key: str,
    span: tuple[datetime, datetime, datetime, datetime],
    dimension_filter: dict[str, str],
    scope: SubscriptionScope = ALL_SUBSCRIPTIONS,
) -> list[asyncpg.Record]:
    """Pieces of a WEIGHTED_SUM meter inside [start, end): whole buckets and edge contributions.

    Each subscription's usage is its own series (a gauge per subscription).
    """
    return await _fetch_bounded(
        conn,
        f"""
        SELECT b.dims_key, b.subscription_id, b.dims::text AS dims, b.first_ts,
               b.window_start + interval '1 minute' AS piece_end, b.integral, b.latest_value, b.latest_id AS tiebreak
        FROM meter.buckets b
        WHERE b.customer_id = $1 AND b.meter_key = $2 AND b.window_start >= $4 AND b.window_start < $5
          AND b.dims @> $7::jsonb AND ($8 OR b.subscription_id IN ($9, $10))
        UNION ALL
        SELECT c.dims_key, c.subscription_id, c.dims_key, c.ts, c.ts, 0, c.value, c.entry_id
        FROM meter.contributions c
        WHERE c.customer_id = $1 AND c.meter_key = $2 AND {_EDGE} AND c.dims_key::jsonb @> $7::jsonb
          AND ($8 OR c.subscription_id IN ($9, $10))
        """,
        customer_id,
        meter_key,
        *span,
        json.dumps(dimension_filter),
        *scope,
    )


async def carry_in_rows(
    conn: asyncpg.Connection,
    customer_id: str,
    meter_key: str,
    before: datetime,
    dimension_filter: dict[str, str],
    scope: SubscriptionScope = ALL_SUBSCRIPTIONS,
) -> list[asyncpg.Record]:
    """The value in force at ``before`` per dimension set and subscription: each one's latest contribution before it."""
    return await _fetch_bounded(
        conn,
        """
        SELECT DISTINCT ON (dims_key, subscription_id) dims_key, subscription_id, dims_key AS dims, value
        FROM meter.contributions
        WHERE customer_id = $1 AND meter_key = $2 AND ts < $3 AND dims_key::jsonb @> $4::jsonb
          AND ($5 OR subscription_id IN ($6, $7))
        ORDER BY dims_key, subscription_id, ts DESC, entry_id DESC
        """,
        customer_id,
        meter_key,
        before,
        json.dumps(dimension_filter),
        *scope,
    )


# ---------------------------------------------------------------- backfills


async def find_running_backfill(conn, meter_key: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM meter.backfills WHERE meter_key = $1 AND state = 'running'", meter_key)


async def create_backfill(conn, backfill_id: str, meter_key: str, target_position: int) -> asyncpg.Record:
    return await conn.fetchrow(
        """
        INSERT INTO meter.backfills (id, meter_key, state, target_position) VALUES ($1, $2, 'running', $3)
        ON CONFLICT (meter_key) WHERE state = 'running' DO NOTHING
        RETURNING *
        """,
        backfill_id,
        meter_key,
        target_position,
    )


async def get_backfill(conn, backfill_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM meter.backfills WHERE id = $1", backfill_id)


async def running_backfills(conn) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM meter.backfills WHERE state = 'running' ORDER BY create_time")


async def save_backfill_progress(conn, backfill_id: str, cursor: str, position: int, entries: int, done: bool) -> None:
    await conn.execute(
        """
        UPDATE meter.backfills SET cursor = $2, position = greatest(position, $3), entries_applied = entries_applied + $4,
               state = CASE WHEN $5 THEN 'done' ELSE state END,
               finish_time = CASE WHEN $5 THEN now() ELSE finish_time END
        WHERE id = $1
        """,
        backfill_id,
        cursor,
        position,
        entries,
        done,
    )


async def fail_backfill(conn, backfill_id: str, error: str) -> None:
    await conn.execute(
        "UPDATE meter.backfills SET state = 'failed', error = $2, finish_time = now() WHERE id = $1", backfill_id, error
    )


# ---------------------------------------------------------------- thresholds and alerts


async def insert_threshold(conn, values: dict[str, Any]) -> asyncpg.Record:
    return await conn.fetchrow(
        """
        INSERT INTO meter.thresholds (id, meter_key, plan_key, customer_id, absolute_units, percent_of_included, name)
        VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *
        """,
        values["id"],
        values["meter_key"],
        values["plan_key"],
        values["customer_id"],
        values["absolute_units"],
        values["percent_of_included"],
        values["name"],
    )


async def list_thresholds(conn, meter_key: str, after_id: str, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        """
        SELECT * FROM meter.thresholds WHERE ($1 = '' OR meter_key = $1) AND id > $2 ORDER BY id LIMIT $3
        """,
        meter_key,
        after_id,
        limit,
    )


async def thresholds_for_meters(conn, meter_keys: Sequence[str]) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT * FROM meter.thresholds WHERE meter_key = ANY($1::text[])", list(meter_keys))


async def delete_threshold(conn, threshold_id: str) -> bool:
    return (await conn.execute("DELETE FROM meter.thresholds WHERE id = $1", threshold_id)) != "DELETE 0"


async def lock_alert_inserts(conn) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock($1)", ALERT_INSERT_LOCK)


async def insert_alert(conn, values: dict[str, Any]) -> asyncpg.Record | None:
    """Record an alert unless this threshold already fired for this customer and period."""
    return await conn.fetchrow(
        """
        INSERT INTO meter.alerts (id, threshold_id, customer_id, meter_key, period_start, period_end, threshold_units, usage)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        ON CONFLICT (threshold_id, customer_id, period_start) DO NOTHING
        RETURNING *
        """,
        values["id"],
        values["threshold_id"],
        values["customer_id"],
        values["meter_key"],
        values["period_start"],
        values["period_end"],
        values["threshold_units"],
        values["usage"],
    )


async def list_alerts(conn, after_sequence: int, customer_id: str, meter_key: str, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        """
        SELECT * FROM meter.alerts
        WHERE sequence > $1 AND ($2 = '' OR customer_id = $2) AND ($3 = '' OR meter_key = $3)
        ORDER BY sequence LIMIT $4
        """,
        after_sequence,
        customer_id,
        meter_key,
        limit,
    )


# ---------------------------------------------------------------- quarantined log entries


async def quarantine_entries(conn: asyncpg.Connection, entries: Sequence[tuple[int, str, str, str]]) -> None:
    """Set aside (position, entry_id, kind, reason) rows, in the caller's (cursor's) transaction."""
    if not entries:
        return
    await conn.executemany(
        """
        INSERT INTO meter.quarantined_entries (position, entry_id, kind, reason) VALUES ($1, $2, $3, $4)
        ON CONFLICT (position) DO NOTHING
        """,
        list(entries),
    )


async def quarantine_summary(conn: asyncpg.Connection, limit: int = 100) -> tuple[int, list[asyncpg.Record]]:
    """(how many entries are quarantined, the most recent ``limit`` of them)."""
    count = await conn.fetchval("SELECT count(*) FROM meter.quarantined_entries")
    rows = await conn.fetch(
        "SELECT position, entry_id, kind, reason, quarantined_at FROM meter.quarantined_entries "
        "ORDER BY position DESC LIMIT $1",
        limit,
    )
    return count, rows
