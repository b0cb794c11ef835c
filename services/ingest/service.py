"""Ingest use cases: send events, record usage, void, look up, count, and read the log.

Every write is acknowledged only after the transaction that deduplicates and stores it has
committed. The dedup check *is* the write (INSERT ... ON CONFLICT DO NOTHING), so a failed
write can never leave a key marked as seen.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol

import structlog

from services.ingest.domain.attribution import (
    Coverage,
    NamedSubscription,
    SubscriptionRef,
    attribute,
    check_named,
    ref_violation,
)
from services.ingest.domain.events import (
    MAX_IDEMPOTENCY_KEY_CHARS,
    CustomerRef,
    UNKNOWN_CUSTOMER,
    EventBatch,
    EventInput,
    Limits,
    PreparedBatch,
    ValueRule,
    batch_size_violation,
    prepare_events,
    resolvable_refs,
)
from services.ingest.domain.log import (
    MAX_WAIT_MILLIS,
    LogCursor,
    LogPage,
    clamp_max_entries,
    next_page,
)
from services.ingest.domain.outcomes import BatchOutcome, EventOutcome, EventStatus
from services.ingest.domain.usage import EPOCH, UsageInput, accept_usage, to_micros, usage_instant, validate_usage
from services.ingest.group_commit import GroupCommitter
from services.ingest.repository import IngestCounts, IngestStore, StoredEvent, StoredKeys, WriteConflict
from tally import metrics
from tally import wire
from tally.errors import AlreadyExists, InvalidInput, NotFound, Unavailable, Violation, Violations

log = structlog.get_logger()

CONFLICT_REASON = "IDEMPOTENCY_KEY_CONFLICT"
UNKNOWN_METER = "UNKNOWN_METER"
UNKNOWN_PRICE_POINT = "UNKNOWN_PRICE_POINT"
# Long polls re-check the log at least this often, for writers in other processes.
POLL_INTERVAL_SECONDS = 0.05
# Unary events are written in groups, this many at once (see group_commit.py). Measured on
# 2 cores: with more groups in flight each group is smaller and a call costs more CPU than
# the shorter wait saves (32 callers: 1 -> ~1,700/s, 2 -> ~1,300/s, 4 -> ~1,000/s).
GROUPS_IN_FLIGHT = 1
# A batch that loses a deadlock against a concurrent batch sharing keys is retried.
WRITE_ATTEMPTS = 3


class CatalogDirectory(Protocol):
    """What ingest needs from the catalog (customers and meters), answered from a cache."""

    async def resolve_customers(self, refs: set[CustomerRef]) -> dict[CustomerRef, str | None]:
        """Tally customer id per ref; None for a customer the catalog does not know."""

    def is_metered(self, event_type: str) -> bool:
        """True when at least one meter reads this event type."""

    def value_rules(self, event_type: str) -> tuple[ValueRule, ...]:
        """The properties that meters of this event type read as their (numeric) value."""

    async def meter_exists(self, key: str) -> bool: ...

    async def resolve_subscriptions(self, refs: set[SubscriptionRef]) -> dict[SubscriptionRef, NamedSubscription | None]:
        """Id and customer of each named subscription; None for one the catalog does not know."""

    def subscription_coverage(self, customer_id: str) -> Sequence[Coverage]:
        """The customer's subscriptions as stretches of time and the meters each charges."""

    def meter_keys_for_event_type(self, event_type: str) -> frozenset[str]:
        """The keys of the meters reading this event type."""

    @property
    def revision(self) -> int:
        """The catalog revision the directory reflects."""


def _single(_index: int) -> str:
    return "event"


def _batch_item(index: int) -> str:
    return f"events[{index}]"


def _retrieve(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()


def _check_batch_size(batch: EventBatch) -> None:
    too_many = batch_size_violation(len(batch))
    if too_many is not None:
        metrics.EVENTS_REJECTED.labels(too_many.reason).inc(len(batch))
        raise InvalidInput("batch too large", violations=[too_many])


def _check_key_text(problems: Violations, key: str) -> None:
    """An idempotency key to look up: NUL-free and no longer than any stored key can be
    (a caller's key, or a server-made one, which is shorter)."""
    wire.check_text(problems, "idempotency_key", key, max_chars=MAX_IDEMPOTENCY_KEY_CHARS)


def now_micros() -> int:
    return time.time_ns() // 1000


def _conflict_violation(prefix: str, key: str) -> Violation:
    return Violation(f"{prefix}.idempotency_key", f"{key!r} was already used for a different event", CONFLICT_REASON)


def _conflict_error(keys: list[str], violations: list[Violation]) -> AlreadyExists:
    shown = ", ".join(keys[:5]) + (" ..." if len(keys) > 5 else "")
    return AlreadyExists(
        f"idempotency key already used with a different payload: {shown}",
        violations=violations,
        reason=CONFLICT_REASON,
        metadata={"idempotency_key": keys[0], "conflicting_keys": str(len(keys))},
    )


class IngestService:
    """The ingest use cases over the store and the catalog directory."""

    def __init__(
        self,
        store: IngestStore,
        catalog: CatalogDirectory,
        limits: Limits,
        clock: Callable[[], int] = now_micros,
        decode_property: Callable[[bytes, str], Any] | None = None,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.limits = limits
        self.clock = clock
        # Reads a property from serialized properties (mapping.property_from_bytes), for
        # events whose decoded message is not at hand; None: meter values go unchecked.
        self._decode_property = decode_property
        # Set after every local commit, so long polls in this process wake at once.
        self._committed = asyncio.Event()
        self._group_commit = GroupCommitter(self._write_group, max_in_flight=GROUPS_IN_FLIGHT)

    def _notify_committed(self) -> None:
        self._committed.set()
        self._committed = asyncio.Event()

    # ------------------------------------------------------------------ events

    async def send_event(self, event: EventInput) -> EventOutcome:
        """Store one event; INVALID_ARGUMENT or ALREADY_EXISTS on failure.

        Concurrent calls are written together (group commit); each is answered after the
        commit that stored it.
        """
        prepared = await self._prepare(EventBatch.of([event]), prefix=_single)
        if prepared.rejected:
            problems = prepared.rejected[0]
            metrics.EVENTS_REJECTED.labels(problems[0].reason).inc()
            raise InvalidInput("invalid event; nothing was stored", violations=problems)
        outcome = await self._group_commit.submit(prepared)
        result = outcome.outcome(0)
        if result.status is EventStatus.REJECTED:
            metrics.EVENTS_REJECTED.labels(CONFLICT_REASON).inc()
            raise _conflict_error([result.idempotency_key], list(result.violations))
        self._count(outcome, prepared, "send")
        return result

    async def _write_group(self, merged: PreparedBatch) -> BatchOutcome:
        """Write single events sent concurrently as one batch (see GroupCommitter)."""
        unique = merged.first_of_each_key()
        stored = await self._store_events(unique, merged, atomic=False, prefix=_single)
        self._notify_committed()
        return self._outcomes(len(merged), merged, unique, stored, _single)

    async def _prepare(self, batch: EventBatch, *, prefix: Callable[[int], str]) -> PreparedBatch:
        refs = resolvable_refs(batch.customers)
        customers = await self.catalog.resolve_customers(refs) if refs else {}
        named_refs = {ref for ref in batch.named_subscriptions() if ref_violation(ref, "") is None}
        named = await self.catalog.resolve_subscriptions(named_refs) if named_refs else {}
        read = batch.read_property
        if read is None and self._decode_property is not None:
            decode, properties = self._decode_property, batch.properties
            read = lambda index, path: decode(properties[index], path)  # noqa: E731
        return prepare_events(
            batch,
            customers=customers,
            is_metered=self.catalog.is_metered,
            now_micros=self.clock(),
            limits=self.limits,
            prefix=prefix,
            named=named,
            coverage_of=self.catalog.subscription_coverage,
            meter_keys_of=self.catalog.meter_keys_for_event_type,
            value_rules=self.catalog.value_rules,
            read_property=read,
        )

    async def send_batch(self, batch: EventBatch, *, atomic: bool, source: str = "batch") -> BatchOutcome:
        """Store a batch: ATOMIC (all or nothing) or PARTIAL (a result per event)."""
        _check_batch_size(batch)
        prepared = await self._prepare(batch, prefix=_batch_item)
        return await self._send(batch, prepared, atomic=atomic, source=source, prefix=_batch_item)

    async def stream_batches(self, batches: AsyncIterator[EventBatch]) -> AsyncIterator[BatchOutcome]:
        """Store each batch of a stream in PARTIAL mode, in order, one outcome per batch.

        Pipelined: while one batch is being written, the next is read and validated, so the
        stream's CPU work overlaps its database round trips. Writes stay one at a time and in
        send order, each outcome is yielded after its commit, and at most two batches of the
        stream are held. A failure reading or checking a batch surfaces only after every
        batch before it has been answered.
        """
        iterator = aiter(batches)

        async def read_and_prepare() -> tuple[EventBatch, PreparedBatch] | None:
            try:
                batch = await anext(iterator)
            except StopAsyncIteration:
                return None
            _check_batch_size(batch)
            return batch, await self._prepare(batch, prefix=_batch_item)

        loop = asyncio.get_running_loop()
        ahead = loop.create_task(read_and_prepare())
        try:
            while True:
                ready = await ahead
                if ready is None:
                    return
                ahead = loop.create_task(read_and_prepare())
                batch, prepared = ready
                yield await self._send(batch, prepared, atomic=False, source="stream", prefix=_batch_item)
        finally:
            # The stream ended early (failure, cancellation): drop the batch read ahead, which
            # was never acknowledged, and retrieve its outcome so none is reported as lost.
            ahead.cancel()
            ahead.add_done_callback(_retrieve)

    async def _send(
        self, batch: EventBatch, prepared: PreparedBatch, *, atomic: bool, source: str, prefix: Callable[[int], str]
    ) -> BatchOutcome:
        if prepared.rejected and atomic:
            for problems in prepared.rejected.values():
                metrics.EVENTS_REJECTED.labels(problems[0].reason).inc()
            raise InvalidInput(
                f"{len(prepared.rejected)} of {len(batch)} events are invalid; nothing was stored",
                violations=[v for index in sorted(prepared.rejected) for v in prepared.rejected[index]],
            )
        unique = prepared.first_of_each_key()
        if atomic and unique is not prepared:
            # A key repeated with another payload inside an ATOMIC batch fails it whole.
            first = dict(zip(unique.keys, unique.payload_hashes))
            clashes = [
                (index, key)
                for index, key, digest in zip(prepared.indexes, prepared.keys, prepared.payload_hashes)
                if first[key] != digest
            ]
            if clashes:
                metrics.EVENTS_REJECTED.labels(CONFLICT_REASON).inc(len(clashes))
                raise _conflict_error(
                    [key for _, key in clashes], [_conflict_violation(prefix(index), key) for index, key in clashes]
                )
        stored = StoredKeys({}, {})
        if len(unique):
            stored = await self._store_events(unique, prepared, atomic=atomic, prefix=prefix)
            self._notify_committed()
        outcome = self._outcomes(len(batch), prepared, unique, stored, prefix)
        self._count(outcome, prepared, source)
        return outcome

    async def _store_events(
        self, unique: PreparedBatch, prepared: PreparedBatch, *, atomic: bool, prefix: Callable[[int], str]
    ) -> StoredKeys:
        """Insert in one transaction; in ATOMIC mode a conflicting key rolls it all back."""
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                # A single INSERT is atomic by itself; a multi-event ATOMIC batch needs a
                # transaction so that a conflict found after the insert can roll it back.
                in_transaction = atomic and len(unique) > 1
                async with self.store.connection(transaction=in_transaction) as repo:
                    stored = await repo.insert_events(unique, optimistic=not in_transaction)
                    if atomic and stored.held:
                        conflicts = [
                            (index, key)
                            for index, key, digest in zip(prepared.indexes, prepared.keys, prepared.payload_hashes)
                            if key in stored.held and stored.held[key][1] != digest
                        ]
                        if conflicts:
                            # Raised inside the transaction: the events stored with them roll back.
                            metrics.EVENTS_REJECTED.labels(CONFLICT_REASON).inc(len(conflicts))
                            raise _conflict_error(
                                [key for _, key in conflicts],
                                [_conflict_violation(prefix(index), key) for index, key in conflicts],
                            )
                    return stored
            except WriteConflict:
                if attempt == WRITE_ATTEMPTS:
                    raise Unavailable("too much contention on idempotency keys; retry", retry_after_seconds=0.1)
                log.info("event_write_retried", attempt=attempt)
        raise AssertionError("unreachable")

    @staticmethod
    def _outcomes(
        size: int, prepared: PreparedBatch, unique: PreparedBatch, stored: StoredKeys, prefix: Callable[[int], str]
    ) -> BatchOutcome:
        statuses = [EventStatus.REJECTED] * size
        event_ids = [""] * size
        keys = [""] * size
        subscriptions = [""] * size
        violations = {index: tuple(problems) for index, problems in prepared.rejected.items()}
        inserted, held = stored.inserted, stored.held
        # The digest each key was stored (or first sent) with in this batch.
        first_digest = dict(zip(unique.keys, unique.payload_hashes)) if unique is not prepared else None
        claimed: set[str] = set()
        accepted, duplicate = EventStatus.ACCEPTED, EventStatus.DUPLICATE
        columns = zip(prepared.indexes, prepared.keys, prepared.payload_hashes, prepared.subscription_ids)
        for index, key, digest, subscription_id in columns:
            keys[index] = key
            event_id = inserted.get(key)
            if event_id is not None:
                subscriptions[index] = subscription_id
                if first_digest is None:
                    statuses[index], event_ids[index] = accepted, event_id
                elif first_digest[key] != digest:
                    violations[index] = (_conflict_violation(prefix(index), key),)
                elif key in claimed:
                    statuses[index], event_ids[index] = duplicate, event_id
                else:
                    claimed.add(key)
                    statuses[index], event_ids[index] = accepted, event_id
                continue
            event_id, held_digest, held_subscription = held[key]
            if held_digest != digest:
                violations[index] = (_conflict_violation(prefix(index), key),)
            else:
                statuses[index], event_ids[index] = duplicate, event_id
                # A duplicate reports what was stored with the key.
                subscriptions[index] = held_subscription
        for index in violations:
            subscriptions[index] = ""
        return BatchOutcome(statuses, event_ids, keys, violations, subscriptions)

    @staticmethod
    def _count(outcome: BatchOutcome, prepared: PreparedBatch, source: str) -> None:
        accepted = outcome.count(EventStatus.ACCEPTED)
        duplicate = outcome.count(EventStatus.DUPLICATE)
        for problems in outcome.violations.values():
            metrics.EVENTS_REJECTED.labels(problems[0].reason).inc()
        if accepted:
            metrics.EVENTS_ACCEPTED.labels(source).inc(accepted)
            if not all(prepared.metered):
                statuses = outcome.statuses
                unmetered = sum(
                    1
                    for index, metered in zip(prepared.indexes, prepared.metered)
                    if not metered and statuses[index] is EventStatus.ACCEPTED
                )
                metrics.EVENTS_UNMETERED.inc(unmetered)
        if duplicate:
            metrics.EVENTS_DUPLICATE.labels(source).inc(duplicate)

    # ------------------------------------------------------------------ usage

    async def record_usage(self, usage: UsageInput) -> tuple[str, str, bool, str]:
        """Store a usage record: (usage record id, idempotency key, duplicate, subscription id)."""
        now = EPOCH + dt.timedelta(microseconds=self.clock())
        problems = validate_usage(usage, now=now, limits=self.limits)
        customer_id = None
        if not any(p.field.startswith("customer") for p in problems):
            customers = await self.catalog.resolve_customers({usage.customer})
            customer_id = customers.get(usage.customer)
            if customer_id is None:
                problems.append(Violation("customer", f"unknown customer {usage.customer.describe()}", UNKNOWN_CUSTOMER))
        meter_checkable = usage.meter_key.strip() and not any(p.field == "meter_key" for p in problems)
        meter_known = meter_checkable and await self.catalog.meter_exists(usage.meter_key)
        if meter_checkable and not meter_known:
            problems.append(Violation("meter_key", f"unknown meter {usage.meter_key!r}", UNKNOWN_METER))
        elif usage.price_point and not problems:
            declared = await self.catalog.price_points(
                customer_id, usage.meter_key, usage.usage_time or now, usage.price_point
            )
            if usage.price_point not in declared:
                known = ", ".join(sorted(declared)) or "none"
                problems.append(
                    Violation(
                        "price_point",
                        f"no usage charge on meter {usage.meter_key!r} in force for this customer declares price point "
                        f"{usage.price_point!r} (declared: {known})",
                        UNKNOWN_PRICE_POINT,
                    )
                )
        subscription_id = await self._usage_subscription(usage, customer_id, bool(meter_known), now, problems)
        if problems:
            metrics.EVENTS_REJECTED.labels(problems[0].reason).inc()
            raise InvalidInput("invalid usage record", violations=problems)
        accepted = accept_usage(usage, customer_id=customer_id, now=now, subscription_id=subscription_id)
        async with self.store.connection() as repo:
            stored = await repo.insert_usage(accepted)
        if stored.payload_hash != accepted.payload_hash:
            metrics.EVENTS_REJECTED.labels(CONFLICT_REASON).inc()
            raise _conflict_error(
                [accepted.idempotency_key],
                [Violation("idempotency_key", "already used for a different usage record", CONFLICT_REASON)],
            )
        self._notify_committed()
        (metrics.EVENTS_ACCEPTED if stored.inserted else metrics.EVENTS_DUPLICATE).labels("usage").inc()
        return stored.record_id, accepted.idempotency_key, not stored.inserted, stored.subscription_id

    async def _usage_subscription(
        self, usage: UsageInput, customer_id: str | None, meter_known: bool, now: dt.datetime, problems: list[Violation]
    ) -> str:
        """The subscription a usage record belongs to (named or by the rule); problems go to ``problems``."""
        if usage.subscription is not None:
            wrong = ref_violation(usage.subscription, "subscription")
            if wrong is None and customer_id is not None:
                named = await self.catalog.resolve_subscriptions({usage.subscription})
                subscription_id, wrong = check_named(usage.subscription, named.get(usage.subscription), customer_id, "subscription")
                if wrong is None:
                    return subscription_id
            if wrong is not None:
                problems.append(wrong)
            return ""
        if customer_id is None or not meter_known or problems:
            return ""
        subscription_id, ambiguous = attribute(
            self.catalog.subscription_coverage(customer_id),
            frozenset((usage.meter_key,)),
            to_micros(usage_instant(usage, now)),
            "subscription",
        )
        if ambiguous is not None:
            problems.append(ambiguous)
        return subscription_id

    # ------------------------------------------------------------------ void, get, stats

    async def void_event(self, idempotency_key: str, reason: str) -> tuple[str, bool, dt.datetime]:
        """Void an event: (event id, already voided, void time). Voiding twice changes nothing."""
        if not idempotency_key.strip():
            raise InvalidInput(
                "idempotency_key is required",
                violations=[Violation("idempotency_key", "is required", "IDEMPOTENCY_KEY_EMPTY")],
            )
        problems = Violations()
        _check_key_text(problems, idempotency_key)
        wire.check_text(problems, "reason", reason, max_chars=wire.MAX_MEMO_CHARS)
        problems.raise_if_any("invalid void")
        async with self.store.connection(transaction=True) as repo:
            result = await repo.void_event(idempotency_key, reason)
        if result is None:
            raise NotFound(f"no event with idempotency key {idempotency_key!r}", metadata={"idempotency_key": idempotency_key})
        event_id, already, void_time = result
        if not already:
            self._notify_committed()
            log.info("event_voided", event_id=event_id, idempotency_key=idempotency_key)
        return result

    async def get_event(self, idempotency_key: str) -> StoredEvent:
        problems = Violations()
        _check_key_text(problems, idempotency_key)
        problems.raise_if_any("invalid idempotency key")
        async with self.store.connection() as repo:
            stored = await repo.get_event(idempotency_key)
        if stored is None:
            raise NotFound(f"no event with idempotency key {idempotency_key!r}", metadata={"idempotency_key": idempotency_key})
        return stored

    async def ingest_stats(self) -> tuple[IngestCounts, int, int]:
        """Totals, unmetered events by type, the log head position and the catalog revision seen."""
        async with self.store.connection() as repo:
            counts = await repo.counts()
            head = await repo.head()
        return counts, head.position, self.catalog.revision

    # ------------------------------------------------------------------ log

    async def read_log(self, cursor: LogCursor, max_entries: int, wait_millis: int) -> LogPage:
        """The next entries after ``cursor``; waits up to ``wait_millis`` when there are none."""
        if wait_millis < 0:
            raise InvalidInput("wait_millis must not be negative", violations=[Violation("wait_millis", "must be >= 0")])
        limit = clamp_max_entries(max_entries)
        deadline = time.monotonic() + min(wait_millis, MAX_WAIT_MILLIS) / 1000
        while True:
            committed = self._committed
            page = await self._read_page(cursor, limit)
            remaining = deadline - time.monotonic()
            if page.entries or remaining <= 0:
                return page
            try:
                await asyncio.wait_for(committed.wait(), min(remaining, POLL_INTERVAL_SECONDS))
            except TimeoutError:
                pass

    async def _read_page(self, cursor: LogCursor, limit: int) -> LogPage:
        async with self.store.connection() as repo:
            horizon, watermark = await repo.log_horizon()
            entries = await repo.read_log(cursor.after, horizon, limit + 1)
            head = await repo.head()
        return next_page(entries, cursor=cursor, limit=limit, horizon=horizon, watermark=watermark, head=head)
