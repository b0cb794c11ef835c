"""Use cases of the meter: apply log entries, answer usage queries, thresholds and alerts.

The applier's use case (``apply_entries``: ``plan_entries``, pure CPU, then ``write_plan``)
runs inside the caller's transaction so that the cursor can be committed with the bucket
updates; queries run on a pooled connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg
import structlog

from services.meter import repository as repo
from services.meter.domain.aggregation import (
    ZERO,
    Piece,
    Summary,
    combine_all,
    summary_value,
    weighted_value,
)
from services.meter.domain.matching import (
    IncomingEvent,
    IncomingUsage,
    UnusableValue,
    event_contribution,
    meter_matches,
    usage_contribution,
)
from services.meter.domain.model import Aggregation, MeterDefinition
from services.meter.domain.thresholds import Alert, NewThreshold, Threshold, alert_period, crossed
from services.meter.domain.windows import Granularity, TooManyWindows, aligned_span, series_windows, whole_days
from tally import wire
from tally.domain.periods import Schedule
from tally.domain.price_points import PRICE_POINT_DIMENSION
from tally.interceptors import is_connection_failure
from tally.quarantine import Quarantine
from tally.errors import InvalidInput, NotFound, Violation, Violations
from tally.metrics import ALERTS_FIRED

log = structlog.get_logger()
UTC = timezone.utc
# Usage queries per BatchGetUsage call.
MAX_BATCH_QUERIES = 1000
# Most points one UsageSeries returns; checked before the windows are built.
MAX_SERIES_POINTS = 10_000


@dataclass(frozen=True)
class BillingContext:
    """What thresholds need to know about a customer at an instant."""

    plan_key: str | None
    schedule: Schedule | None
    included_units: Decimal | None


class CatalogView(Protocol):
    """The meter's read-only view of the catalog (kept fresh by the catalog cache)."""

    def meters_for_event_type(self, event_type: str) -> list[MeterDefinition]: ...
    def meter(self, key: str) -> MeterDefinition | None: ...
    def customer_known(self, customer_id: str) -> bool: ...
    def customer_time_zone(self, customer_id: str) -> str: ...
    async def resolve_customer_id(self, customer_id: str, external_id: str) -> str | None: ...
    async def resolve_subscription(self, subscription_id: str, external_id: str) -> tuple[str, str] | None:
        """(id, customer id) of the subscription named by id or external id; None if unknown."""
    def billing(self, customer_id: str, instant: datetime, meter_key: str) -> BillingContext: ...
    async def sync(self) -> None: ...


# ---------------------------------------------------------------- apply


@dataclass
class AppliedBatch:
    tally: repo.Tally
    # (customer, meter) -> window starts that received new contributions.
    touched: dict[tuple[str, str], set[datetime]] = field(default_factory=dict)
    alerts: list[Alert] = field(default_factory=list)


@dataclass
class ApplyPlan:
    """What a batch of log entries will change, worked out without the database (plan_entries)."""

    tally: repo.Tally
    # New contributions merged into their buckets in place, and those (WEIGHTED_SUM) whose
    # windows are recomputed from all their contributions.
    mergeable: list[repo.NewContribution]
    weighted: list[repo.NewContribution]
    # Voided event id -> log position of the void.
    voided: dict[str, int]


async def apply_entries(
    conn: asyncpg.Connection,
    entries: Sequence[tuple[int, object]],
    catalog: CatalogView,
    only_meter: str | None = None,
) -> AppliedBatch:
    """Apply log entries (position, IncomingEvent | IncomingUsage | voided event id) to the buckets.

    ``only_meter`` restricts the batch to one meter (a backfill); the unmetered and unknown
    counters are then left to the main applier, which has already counted these entries.
    """
    return await write_plan(conn, plan_entries(entries, catalog, only_meter), catalog)


def plan_entries(entries: Sequence[tuple[int, object]], catalog: CatalogView, only_meter: str | None = None) -> ApplyPlan:
    """Match entries to meters and work out their contributions: CPU only, no database.

    The applier plans the next batch while the previous one is being written.
    """
    tally = repo.Tally(entries=len(entries))
    rows: dict[tuple[str, str], repo.NewContribution] = {}
    voided: dict[str, int] = {}
    counting = only_meter is None
    # Catalog answers, once per batch: planning never awaits, so the cache cannot change meanwhile.
    meters_of: dict[str, list[MeterDefinition]] = {}
    known: dict[str, bool] = {}
    for position, item in entries:
        if isinstance(item, IncomingEvent):
            if counting:
                is_known = known.get(item.customer_id)
                if is_known is None:
                    is_known = known[item.customer_id] = catalog.customer_known(item.customer_id)
                if not is_known:
                    tally.unknown_customer_entries += 1
            meters = meters_of.get(item.event_type)
            if meters is None:
                meters = meters_of[item.event_type] = [
                    m for m in catalog.meters_for_event_type(item.event_type) if only_meter in (None, m.key)
                ]
            matched = [m for m in meters if meter_matches(m, item)]
            if counting and not matched:
                tally.unmetered_events += 1
            elif counting and not item.subscription_id:
                tally.unattributed_entries += 1
            for meter in matched:
                try:
                    contribution = event_contribution(meter, item)
                except UnusableValue:
                    if counting:
                        tally.unusable_value_events += 1
                    continue
                rows.setdefault((contribution.entry_id, meter.key), (contribution, position))
        elif isinstance(item, IncomingUsage):
            if only_meter not in (None, item.meter_key):
                continue
            meter = catalog.meter(item.meter_key)
            if counting and not catalog.customer_known(item.customer_id):
                tally.unknown_customer_entries += 1
            if meter is None:
                if counting:
                    tally.unknown_meter_records += 1
                continue
            if counting and not item.subscription_id:
                tally.unattributed_entries += 1
            contribution = usage_contribution(meter, item)
            rows.setdefault((contribution.entry_id, meter.key), (contribution, position))
        elif isinstance(item, str):
            voided.setdefault(item, position)
    # WEIGHTED_SUM windows are recomputed from their contributions (their integral depends on
    # the order of every point); the other aggregations merge new contributions in place.
    meter_keys = {contribution.meter_key for contribution, _ in rows.values()}
    weighted_keys = {key for key in meter_keys if _aggregation(catalog, key) is Aggregation.WEIGHTED_SUM}
    weighted = [r for r in rows.values() if r[0].meter_key in weighted_keys]
    mergeable = [r for r in rows.values() if r[0].meter_key not in weighted_keys] if weighted_keys else list(rows.values())
    return ApplyPlan(tally, mergeable, weighted, voided)


async def write_plan(conn: asyncpg.Connection, plan: ApplyPlan, catalog: CatalogView) -> AppliedBatch:
    """Write a planned batch in the caller's transaction; returns the touched windows."""
    tally, voided = plan.tally, plan.voided
    merged = await repo.insert_and_merge(conn, plan.mergeable)
    recompute = await repo.insert_contributions(conn, plan.weighted)
    removed = await repo.void_entries(conn, list(voided), list(voided.values()))
    recompute += removed
    unique_meters = {key[1] for key in removed if _aggregation(catalog, key[1]) is Aggregation.COUNT_UNIQUE}
    await repo.recompute_windows(conn, recompute, unique_meters)
    inserted = [*merged, *recompute[: len(recompute) - len(removed)]]
    batch = AppliedBatch(tally=tally)
    for customer_id, meter_key, start, _dims, _subscription in inserted:
        batch.touched.setdefault((customer_id, meter_key), set()).add(start)
    return batch


async def fresh_meter(catalog: CatalogView, key: str) -> MeterDefinition | None:
    """The meter from the cache; on a miss, once more after the cache caught up with the catalog."""
    meter = catalog.meter(key)
    if meter is None:
        await catalog.sync()
        meter = catalog.meter(key)
    return meter


def _aggregation(catalog: CatalogView, meter_key: str) -> Aggregation | None:
    meter = catalog.meter(meter_key)
    return meter.aggregation if meter is not None else None


async def evaluate_thresholds(
    conn: asyncpg.Connection, batch: AppliedBatch, catalog: CatalogView, quarantine: Quarantine | None = None
) -> list[Alert]:
    """Record an alert for every threshold newly crossed by the batch, once per period.

    A (customer, meter) whose evaluation fails (its subscription's schedule cannot be
    computed, say) is skipped in a savepoint and quarantined; its usage is applied anyway.
    """
    if not batch.touched:
        return []
    meter_keys = sorted({meter_key for _, meter_key in batch.touched})
    thresholds = [_threshold(r) for r in await repo.thresholds_for_meters(conn, meter_keys)]
    if not thresholds:
        return []
    by_meter: dict[str, list[Threshold]] = defaultdict(list)
    for threshold in thresholds:
        by_meter[threshold.meter_key].append(threshold)
    fired: list[Alert] = []
    locked = False
    for (customer_id, meter_key), starts in sorted(batch.touched.items()):
        meter = catalog.meter(meter_key)
        if meter is None or meter_key not in by_meter:
            continue
        try:
            async with conn.transaction():
                alerts, locked = await _evaluate_one(
                    conn, catalog, meter, customer_id, meter_key, starts, by_meter[meter_key], locked
                )
        except Exception as error:  # noqa: BLE001 - one customer's thresholds must not stop metering
            if is_connection_failure(error):
                raise
            (quarantine or Quarantine()).add("meter.thresholds", "threshold_evaluation", f"{customer_id}/{meter_key}", error)
            continue
        fired.extend(alerts)
    return fired


async def _evaluate_one(conn, catalog, meter, customer_id, meter_key, starts, thresholds, locked) -> tuple[list[Alert], bool]:
    """The alerts one (customer, meter) fires; ``locked`` says the alert lock is already held."""
    fired: list[Alert] = []
    time_zone = catalog.customer_time_zone(customer_id)
    checked: set[datetime] = set()
    for instant in sorted(starts):
        context = catalog.billing(customer_id, instant, meter_key)
        period = alert_period(context.schedule, instant, time_zone)
        if period.start in checked:
            continue
        checked.add(period.start)
        usage: Decimal | None = None
        for threshold in thresholds:
            if not threshold.applies_to(customer_id, context.plan_key):
                continue
            level = threshold.units(context.included_units)
            if level is None:
                continue
            if usage is None:
                points = await compute_points(conn, meter, customer_id, [(period.start, period.end)], (), {})
                usage = points[0].total
            if not crossed(usage, level):
                continue
            if not locked:
                await repo.lock_alert_inserts(conn)
                locked = True
            row = await repo.insert_alert(
                conn,
                {
                    "id": str(uuid.uuid4()),
                    "threshold_id": threshold.id,
                    "customer_id": customer_id,
                    "meter_key": meter_key,
                    "period_start": period.start,
                    "period_end": period.end,
                    "threshold_units": level,
                    "usage": usage,
                },
            )
            if row is not None:
                fired.append(alert_from_row(row))
                ALERTS_FIRED.labels(meter_key).inc()
                log.info("alert_fired", threshold_id=threshold.id, customer_id=customer_id, meter_key=meter_key)
    return fired, locked


# ---------------------------------------------------------------- queries


@dataclass(frozen=True)
class PointValue:
    total: Decimal
    # Group-by values (as a sorted tuple of pairs) -> value.
    breakdown: dict[tuple[tuple[str, str], ...], Decimal]


@dataclass(frozen=True)
class UsageQuery:
    customer_id: str
    customer_external_id: str
    meter_key: str
    start: datetime
    end: datetime
    group_by: tuple[str, ...] = ()
    dimension_filter: dict[str, str] = field(default_factory=dict)
    # A subscription of the customer, by id or external id: only its usage (plus the
    # customer's unattributed usage with include_unattributed). Neither: the customer's total.
    subscription_id: str = ""
    subscription_external_id: str = ""
    include_unattributed: bool = False
    # Only the customer's unattributed usage (no subscription named).
    only_unattributed: bool = False

    @property
    def names_subscription(self) -> bool:
        return bool(self.subscription_id or self.subscription_external_id)


@dataclass(frozen=True)
class UsageResult:
    customer_id: str
    meter_key: str
    start: datetime
    end: datetime
    value: Decimal
    breakdown: list[tuple[dict[str, str], Decimal]]
    applied_position: int
    subscription_id: str = ""


def _group(dims: dict[str, str], group_by: Sequence[str]) -> tuple[tuple[str, str], ...]:
    return tuple((key, dims.get(key, "")) for key in group_by)


def _fold_summaries(
    agg: Aggregation, rows: Sequence[asyncpg.Record], count: int, group_by: Sequence[str], index_of
) -> tuple[list[list[Summary]], list[dict[tuple, list[Summary]]]]:
    """Summary rows as per-point summaries, overall and per group-by values."""
    totals: list[list[Summary]] = [[] for _ in range(count)]
    groups: list[dict[tuple, list[Summary]]] = [defaultdict(list) for _ in range(count)]
    for row in rows:
        index = index_of(row)
        if not 0 <= index < count:
            continue
        latest_key = (row["latest_ts"], row["latest_id"]) if agg is Aggregation.LATEST else None
        summary = Summary(
            count=row["count"],
            total=row["total"],
            minimum=row["minimum"],
            maximum=row["maximum"],
            latest_key=latest_key,
            latest_value=row["latest_value"] if latest_key else None,
        )
        totals[index].append(summary)
        if group_by:
            groups[index][_group(json.loads(row["dims"]), group_by)].append(summary)
    return totals, groups


def _summary_points(
    agg: Aggregation, totals: list[list[Summary]], groups: list[dict[tuple, list[Summary]]]
) -> list[PointValue]:
    return [
        PointValue(
            summary_value(agg, combine_all(point_totals)),
            {g: summary_value(agg, combine_all(s)) for g, s in point_groups.items()},
        )
        for point_totals, point_groups in zip(totals, groups)
    ]


async def compute_points(
    conn: asyncpg.Connection,
    meter: MeterDefinition,
    customer_id: str,
    points: Sequence[tuple[datetime, datetime]],
    group_by: Sequence[str],
    dimension_filter: dict[str, str],
    scope: repo.SubscriptionScope = repo.ALL_SUBSCRIPTIONS,
) -> list[PointValue]:
    """The exact value of each consecutive point [start, end) (and per group-by values), over
    the usage of the subscriptions ``scope`` names (all of the customer's by default)."""
    start, end = points[0][0], points[-1][1]
    inner_start, inner_end = aligned_span(start, end)
    span = (start, inner_start, inner_end, end)
    boundaries = [p[0] for p in points] + [end]
    agg = meter.aggregation
    if agg is Aggregation.WEIGHTED_SUM:
        return await _weighted_points(conn, meter, customer_id, points, span, group_by, dimension_filter, scope)
    # Day roll-ups serve a single period; a series' points may cut through a UTC day.
    days = whole_days(inner_start, inner_end) if len(points) == 1 else None
    rows = await repo.summary_rows(
        conn, customer_id, meter.key, span, boundaries, dimension_filter, agg is Aggregation.LATEST, days, scope
    )
    totals, groups = _fold_summaries(agg, rows, len(points), group_by, lambda row: row["point"] - 1)
    if agg is not Aggregation.COUNT_UNIQUE:
        return _summary_points(agg, totals, groups)
    distinct: list[set[str]] = [set() for _ in points]
    distinct_groups: list[dict[tuple, set[str]]] = [defaultdict(set) for _ in points]
    for row in await repo.unique_rows(conn, customer_id, meter.key, span, boundaries, dimension_filter, scope):
        index = row["point"] - 1
        if not 0 <= index < len(points):
            continue
        distinct[index].add(row["value"])
        if group_by:
            distinct_groups[index][_group(json.loads(row["dims"]), group_by)].add(row["value"])
    result = []
    for i in range(len(points)):
        keys = set(groups[i]) | set(distinct_groups[i])
        result.append(
            PointValue(
                summary_value(agg, combine_all(totals[i]), len(distinct[i])),
                {g: summary_value(agg, combine_all(groups[i].get(g, [])), len(distinct_groups[i].get(g, ()))) for g in keys},
            )
        )
    return result


async def _weighted_points(
    conn, meter, customer_id, points, span, group_by, dimension_filter, scope=repo.ALL_SUBSCRIPTIONS
) -> list[PointValue]:
    # One time-weighted series per dimension set and subscription.
    pieces: dict[tuple[str, str], list[tuple[tuple[datetime, str], Piece]]] = defaultdict(list)
    dims_of: dict[tuple[str, str], dict[str, str]] = {}
    for row in await repo.weighted_rows(conn, customer_id, meter.key, span, dimension_filter, scope):
        series = (row["dims_key"], row["subscription_id"])
        dims_of[series] = json.loads(row["dims"])
        piece = Piece(row["first_ts"], row["piece_end"], row["integral"], row["latest_value"])
        pieces[series].append(((row["first_ts"], row["tiebreak"]), piece))
    carry: dict[tuple[str, str], Decimal] = {}
    for row in await repo.carry_in_rows(conn, customer_id, meter.key, span[0], dimension_filter, scope):
        series = (row["dims_key"], row["subscription_id"])
        dims_of[series] = json.loads(row["dims"])
        carry[series] = row["value"]
    totals = [ZERO] * len(points)
    groups: list[dict[tuple, Decimal]] = [defaultdict(lambda: ZERO) for _ in points]
    for key, dims in dims_of.items():
        ordered = [p for _, p in sorted(pieces.get(key, []), key=lambda item: item[0])]
        current = carry.get(key, ZERO)
        cursor = 0
        for i, (p_start, p_end) in enumerate(points):
            inside = []
            while cursor < len(ordered) and ordered[cursor].first_time < p_end:
                inside.append(ordered[cursor])
                cursor += 1
            value = weighted_value(inside, current, p_start, p_end)
            if inside:
                current = inside[-1].last_value
            totals[i] = wire.EXACT.add(totals[i], value)
            if group_by:
                key = _group(dims, group_by)
                groups[i][key] = wire.EXACT.add(groups[i][key], value)
    return [PointValue(totals[i], dict(groups[i])) for i in range(len(points))]


# Aggregations the batched summary query answers; the others need their own queries.
_SUMMARY_AGGREGATIONS = frozenset(Aggregation) - {Aggregation.COUNT_UNIQUE, Aggregation.WEIGHTED_SUM}


@dataclass(frozen=True)
class ResolvedQuery:
    """A usage query over one period, its meter and customer found."""

    meter: MeterDefinition
    customer_id: str
    start: datetime
    end: datetime
    group_by: tuple[str, ...]
    dimension_filter: dict[str, str]
    scope: repo.SubscriptionScope = repo.ALL_SUBSCRIPTIONS

    @property
    def subscription_id(self) -> str:
        return "" if self.scope[0] else self.scope[1]


async def compute_many(conn: asyncpg.Connection, queries: Sequence[ResolvedQuery]) -> list[PointValue]:
    """The value of each query over its period, as ``compute_points`` gives it for one.

    Queries on summary aggregations share one SQL statement; COUNT_UNIQUE and WEIGHTED_SUM
    queries are computed one by one.
    """
    values: list[PointValue | None] = [None] * len(queries)
    batched = [i for i, q in enumerate(queries) if q.meter.aggregation in _SUMMARY_AGGREGATIONS]
    if batched:
        specs = []
        for i in batched:
            q = queries[i]
            inner_start, inner_end = aligned_span(q.start, q.end)
            span = (q.start, inner_start, inner_end, q.end)
            specs.append((q.customer_id, q.meter.key, span, whole_days(inner_start, inner_end), q.dimension_filter, q.scope))
        with_latest = any(queries[i].meter.aggregation is Aggregation.LATEST for i in batched)
        rows_of: dict[int, list[asyncpg.Record]] = defaultdict(list)
        for row in await repo.batch_summary_rows(conn, specs, with_latest):
            rows_of[row["query"] - 1].append(row)
        for n, i in enumerate(batched):
            agg = queries[i].meter.aggregation
            totals, groups = _fold_summaries(agg, rows_of.get(n, []), 1, queries[i].group_by, lambda row: 0)
            values[i] = _summary_points(agg, totals, groups)[0]
    for i, q in enumerate(queries):
        if values[i] is None:
            values[i] = (
                await compute_points(conn, q.meter, q.customer_id, [(q.start, q.end)], q.group_by, q.dimension_filter, q.scope)
            )[0]
    return values


def _usage_result(query: ResolvedQuery, point: PointValue, applied: int) -> UsageResult:
    breakdown = sorted(((dict(g), v) for g, v in point.breakdown.items()), key=lambda item: sorted(item[0].items()))
    return UsageResult(
        query.customer_id, query.meter.key, query.start, query.end, point.total, breakdown, applied, query.subscription_id
    )


class UsageQueries:
    """GetUsage, UsageSeries and GetMeterStatus over a pool."""

    def __init__(self, pool: asyncpg.Pool, catalog: CatalogView, local_applied_position=lambda: None) -> None:
        self._pool = pool
        self._catalog = catalog
        # The applier in this process knows its committed position; other replicas read it.
        self._local_applied_position = local_applied_position

    async def _check(self, query: UsageQuery, problems: Violations) -> MeterDefinition | None:
        """The query's meter (None if unknown); every problem of the query goes to ``problems``."""
        meter = None
        if not query.meter_key:
            problems.add("meter_key", "is required", "REQUIRED")
        elif wire.check_text(problems, "meter_key", query.meter_key, max_chars=wire.MAX_KEY_CHARS):
            meter = await fresh_meter(self._catalog, query.meter_key)
        if not query.customer_id and not query.customer_external_id:
            problems.add("customer", "name a customer by id or external_id", "REQUIRED")
        wire.check_text(problems, "customer.id", query.customer_id, max_chars=wire.MAX_ID_CHARS)
        wire.check_text(problems, "customer.external_id", query.customer_external_id, max_chars=wire.MAX_EXTERNAL_ID_CHARS)
        # Counts first: a list this long is not worth a problem per entry.
        bounded = wire.check_count(problems, "group_by", len(query.group_by), max_items=wire.MAX_GROUP_BY)
        bounded &= wire.check_string_map(
            problems,
            "dimension_filter",
            query.dimension_filter.items(),
            max_entries=wire.MAX_DIMENSION_ENTRIES,
            max_key_chars=wire.MAX_PATH_CHARS,
            max_value_chars=wire.MAX_DIMENSION_VALUE_CHARS,
        )
        if query.include_unattributed and not query.names_subscription:
            problems.add(
                "include_unattributed", "applies to a subscription's usage: name the subscription", "SUBSCRIPTION_REQUIRED"
            )
        if query.only_unattributed and (query.names_subscription or query.include_unattributed):
            problems.add(
                "only_unattributed", "reads usage attributed to no subscription: name none", "SUBSCRIPTION_CONFLICT"
            )
        reference = query.subscription_id or query.subscription_external_id
        if len(reference) > 256 or "\x00" in reference:
            problems.add("subscription", "must be at most 256 characters, without NUL", "INVALID_SUBSCRIPTION_REF")
        if meter is not None and bounded:
            for i, key in enumerate(query.group_by):
                if key not in meter.group_by and key != PRICE_POINT_DIMENSION:
                    problems.add(f"group_by[{i}]", f"{key!r} is not a group-by dimension of {meter.key}", "UNKNOWN_DIMENSION")
            for key in query.dimension_filter:
                if key not in meter.group_by:
                    problems.add(f"dimension_filter[{key}]", f"{key!r} is not a group-by dimension of {meter.key}", "UNKNOWN_DIMENSION")
        return meter

    async def _found(self, query: UsageQuery, meter: MeterDefinition | None, metadata: dict[str, str]) -> ResolvedQuery:
        if meter is None:
            raise NotFound(f"no meter with key {query.meter_key!r}", reason="METER_NOT_FOUND", metadata={"meter_key": query.meter_key, **metadata})
        customer_id = await self._catalog.resolve_customer_id(query.customer_id, query.customer_external_id)
        if customer_id is None:
            raise NotFound("no such customer", reason="CUSTOMER_NOT_FOUND", metadata={"external_id": query.customer_external_id, **metadata})
        scope = repo.ALL_SUBSCRIPTIONS
        if query.only_unattributed:
            scope = (False, "", "")
        elif query.names_subscription:
            scope = await self._subscription_scope(query, customer_id, metadata)
        return ResolvedQuery(meter, customer_id, query.start, query.end, query.group_by, query.dimension_filter, scope)

    async def _subscription_scope(self, query: UsageQuery, customer_id: str, metadata: dict[str, str]) -> repo.SubscriptionScope:
        named = query.subscription_id or query.subscription_external_id
        found = await self._catalog.resolve_subscription(query.subscription_id, query.subscription_external_id)
        if found is None:
            raise NotFound(
                f"no subscription {named!r}", reason="SUBSCRIPTION_NOT_FOUND", metadata={"subscription": named, **metadata}
            )
        subscription_id, owner = found
        if owner != customer_id:
            field = f"queries[{metadata['query_index']}].subscription" if "query_index" in metadata else "subscription"
            raise InvalidInput(
                "the subscription belongs to another customer",
                violations=[Violation(field, f"subscription {named!r} is not the customer's", "SUBSCRIPTION_OF_ANOTHER_CUSTOMER")],
            )
        return (False, subscription_id, "" if query.include_unattributed else subscription_id)

    async def _applied_position(self, conn: asyncpg.Connection, local: int | None) -> int:
        if local is None:
            local = await conn.fetchval("SELECT applied_position FROM meter.applier_state WHERE consumer = 'main'")
        return local or 0

    async def get_usage(self, query: UsageQuery, problems: Violations) -> UsageResult:
        meter = await self._check(query, problems)
        problems.raise_if_any("invalid usage query")
        resolved = await self._found(query, meter, {})
        async with self._pool.acquire() as conn, _bounded("start"):
            local = self._local_applied_position()
            points = await compute_points(
                conn,
                resolved.meter,
                resolved.customer_id,
                [(query.start, query.end)],
                query.group_by,
                query.dimension_filter,
                resolved.scope,
            )
            applied = await self._applied_position(conn, local)
        return _usage_result(resolved, points[0], applied)

    async def batch_get_usage(self, queries: Sequence[UsageQuery], problems: Sequence[Violations]) -> list[UsageResult]:
        """Many GetUsage answers in one round trip, in the order asked.

        Args:
            queries: at most MAX_BATCH_QUERIES.
            problems: one collector per query (already holding its decoding problems), whose
                fields are named ``queries[i].<field>``; all of them are reported together.
        """
        if len(queries) > MAX_BATCH_QUERIES:
            raise InvalidInput(
                "too many usage queries",
                violations=[Violation("queries", f"at most {MAX_BATCH_QUERIES} queries per call, got {len(queries)}", "TOO_MANY_QUERIES")],
            )
        meters = [await self._check(query, found) for query, found in zip(queries, problems)]
        every = Violations()
        for found in problems:
            every.extend(found)
        every.raise_if_any("invalid usage queries")
        resolved = [await self._found(q, m, {"query_index": str(i)}) for i, (q, m) in enumerate(zip(queries, meters))]
        if not resolved:
            return []
        async with self._pool.acquire() as conn, _bounded("queries"):
            local = self._local_applied_position()
            points = await compute_many(conn, resolved)
            applied = await self._applied_position(conn, local)
        return [_usage_result(q, p, applied) for q, p in zip(resolved, points)]

    async def usage_series(
        self, query: UsageQuery, granularity: Granularity | None, time_zone: str, problems: Violations
    ) -> list[tuple[datetime, datetime, Decimal]]:
        zone = None
        if granularity is None:
            problems.add("granularity", "must be HOUR, DAY or MONTH", "REQUIRED")
        try:
            zone = ZoneInfo(time_zone or "UTC")
        except (ZoneInfoNotFoundError, ValueError):
            problems.add("time_zone", f"unknown IANA time zone {time_zone!r}", "UNKNOWN_TIME_ZONE")
        meter = await self._check(query, problems)
        problems.raise_if_any("invalid usage query")
        resolved = await self._found(query, meter, {})
        customer_id = resolved.customer_id
        try:
            windows = series_windows(query.start, query.end, granularity, zone, max_windows=MAX_SERIES_POINTS)
        except TooManyWindows as error:
            raise InvalidInput(
                "too many points",
                violations=[Violation("granularity", f"{error}; shorten the range or use a coarser granularity", "TOO_MANY_POINTS")],
            ) from None
        async with self._pool.acquire() as conn, _bounded("start"):
            points = await compute_points(conn, meter, customer_id, windows, (), query.dimension_filter, resolved.scope)
        return [(s, e, p.total) for (s, e), p in zip(windows, points)]

    async def status(self) -> repo.ApplierState:
        async with self._pool.acquire() as conn:
            return await repo.load_state(conn)

    async def quarantined(self, limit: int = 100) -> tuple[int, list]:
        """(how many log entries the applier set aside, the most recent ``limit`` of them)."""
        async with self._pool.acquire() as conn:
            return await repo.quarantine_summary(conn, limit)


# ---------------------------------------------------------------- thresholds and alerts


@contextlib.asynccontextmanager
async def _bounded(field_name: str):
    """A query that would read more rows than the repository allows is the request's fault:
    INVALID_ARGUMENT naming ``field_name`` and what to narrow, not a process grown by gigabytes."""
    try:
        yield
    except repo.TooManyRows as error:
        raise InvalidInput(
            "the usage query is too large",
            violations=[Violation(
                field_name,
                f"{error}; shorten the range, or narrow it with dimension_filter",
                "TOO_MANY_ROWS",
            )],
        ) from None


def _threshold(row) -> Threshold:
    return Threshold(
        id=row["id"],
        meter_key=row["meter_key"],
        plan_key=row["plan_key"],
        customer_id=row["customer_id"],
        absolute_units=row["absolute_units"],
        percent_of_included=row["percent_of_included"],
        name=row["name"],
        create_time=row["create_time"],
    )


def alert_from_row(row) -> Alert:
    return Alert(
        id=row["id"],
        sequence=row["sequence"],
        threshold_id=row["threshold_id"],
        customer_id=row["customer_id"],
        meter_key=row["meter_key"],
        period_start=row["period_start"],
        period_end=row["period_end"],
        threshold_units=row["threshold_units"],
        usage=row["usage"],
        fire_time=row["fire_time"],
    )


class AlertBook:
    """Thresholds and alerts; wakes WatchAlerts streams when the applier records alerts."""

    def __init__(self, pool: asyncpg.Pool, catalog: CatalogView) -> None:
        self._pool = pool
        self._catalog = catalog
        self._changed = asyncio.Condition()

    async def notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for_new(self, timeout: float) -> None:
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait(), timeout)
            except TimeoutError:
                pass

    async def create_threshold(self, new: NewThreshold) -> Threshold:
        known = bool(new.meter_key) and await fresh_meter(self._catalog, new.meter_key) is not None
        new.validate(known_meter=known)
        async with self._pool.acquire() as conn:
            row = await repo.insert_threshold(conn, {"id": str(uuid.uuid4()), **new.__dict__})
        log.info("threshold_created", threshold_id=row["id"], meter_key=new.meter_key)
        return _threshold(row)

    async def list_thresholds(self, meter_key: str, after_id: str, limit: int) -> list[Threshold]:
        async with self._pool.acquire() as conn:
            return [_threshold(r) for r in await repo.list_thresholds(conn, meter_key, after_id, limit)]

    async def delete_threshold(self, threshold_id: str) -> None:
        async with self._pool.acquire() as conn:
            if not await repo.delete_threshold(conn, threshold_id):
                raise NotFound("no such threshold", reason="THRESHOLD_NOT_FOUND", metadata={"id": threshold_id})

    async def alerts_after(self, sequence: int, customer_id: str, meter_key: str, limit: int) -> list[Alert]:
        async with self._pool.acquire() as conn:
            return [alert_from_row(r) for r in await repo.list_alerts(conn, sequence, customer_id, meter_key, limit)]


# ---------------------------------------------------------------- backfills


@dataclass(frozen=True)
class BackfillView:
    id: str
    meter_key: str
    state: str
    position: int
    target_position: int
    entries_applied: int
    error: str
    create_time: datetime
    finish_time: datetime | None


def _backfill(row) -> BackfillView:
    return BackfillView(
        id=row["id"],
        meter_key=row["meter_key"],
        state=row["state"],
        position=row["position"],
        target_position=row["target_position"],
        entries_applied=row["entries_applied"],
        error=row["error"],
        create_time=row["create_time"],
        finish_time=row["finish_time"],
    )


class BackfillRunner(Protocol):
    async def head_position(self) -> int: ...
    def ensure_running(self, backfill_id: str, meter_key: str) -> None: ...


class BackfillService:
    """BackfillMeter and GetBackfill: replays of the log for one meter, run in the background."""

    def __init__(self, pool: asyncpg.Pool, catalog: CatalogView, runner: BackfillRunner) -> None:
        self._pool = pool
        self._catalog = catalog
        self._runner = runner

    async def start_backfill(self, meter_key: str) -> BackfillView:
        """Start replaying the log for ``meter_key``; while one runs, return that one (idempotent)."""
        if not meter_key:
            raise InvalidInput("meter_key is required", violations=[Violation("meter_key", "is required", "REQUIRED")])
        await self._catalog.sync()
        if self._catalog.meter(meter_key) is None:
            raise NotFound(f"no meter with key {meter_key!r}", reason="METER_NOT_FOUND", metadata={"meter_key": meter_key})
        target = await self._runner.head_position()
        async with self._pool.acquire() as conn:
            row = await repo.create_backfill(conn, str(uuid.uuid4()), meter_key, target)
            if row is None:
                row = await repo.find_running_backfill(conn, meter_key)
        self._runner.ensure_running(row["id"], meter_key)
        log.info("backfill_requested", backfill_id=row["id"], meter_key=meter_key)
        return _backfill(row)

    async def get_backfill(self, backfill_id: str) -> BackfillView:
        async with self._pool.acquire() as conn:
            row = await repo.get_backfill(conn, backfill_id)
        if row is None:
            raise NotFound("no such backfill", reason="BACKFILL_NOT_FOUND", metadata={"id": backfill_id})
        return _backfill(row)
