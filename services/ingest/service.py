"""Ingest use cases: send events, record usage, void, look up, count, and read the log.

Every write is acknowledged only after the transaction that deduplicates and stores it has
committed. The dedup check *is* the write (INSERT ... ON CONFLICT DO NOTHING), so a failed
write can never leave a key marked as seen.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import structlog

from services.ingest.domain.events import (
    AcceptedEvent,
    CustomerRef,
    UNKNOWN_CUSTOMER,
    EventInput,
    Limits,
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
from services.ingest.domain.usage import EPOCH, UsageInput, accept_usage, validate_usage
from services.ingest.repository import IngestCounts, IngestStore, StoredEvent, StoredKey, WriteConflict
from tally import metrics
from tally.errors import AlreadyExists, InvalidInput, NotFound, Unavailable, Violation

log = structlog.get_logger()

CONFLICT_REASON = "IDEMPOTENCY_KEY_CONFLICT"
UNKNOWN_METER = "UNKNOWN_METER"
# Long polls re-check the log at least this often, for writers in other processes.
POLL_INTERVAL_SECONDS = 0.05
# A batch that loses a deadlock against a concurrent batch sharing keys is retried.
WRITE_ATTEMPTS = 3


class CatalogDirectory(Protocol):
    """What ingest needs from the catalog (customers and meters), answered from a cache."""

    async def resolve_customers(self, refs: set[CustomerRef]) -> dict[CustomerRef, str | None]:
        """Tally customer id per ref; None for a customer the catalog does not know."""

    def is_metered(self, event_type: str) -> bool:
        """True when at least one meter reads this event type."""

    async def meter_exists(self, key: str) -> bool: ...


def now_micros() -> int:
    return time.time_ns() // 1000


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
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.limits = limits
        self.clock = clock
        # Set after every local commit, so long polls in this process wake at once.
        self._committed = asyncio.Event()

    def _notify_committed(self) -> None:
        self._committed.set()
        self._committed = asyncio.Event()

    # ------------------------------------------------------------------ events

    async def send_event(self, event: EventInput) -> EventOutcome:
        """Store one event; INVALID_ARGUMENT or ALREADY_EXISTS on failure."""
        outcome = await self._send([event], atomic=True, source="send", prefix=lambda _: "event")
        return outcome.outcomes[0]

    async def send_batch(self, events: Sequence[EventInput], *, atomic: bool, source: str = "batch") -> BatchOutcome:
        """Store a batch: ATOMIC (all or nothing) or PARTIAL (a result per event)."""
        too_many = batch_size_violation(len(events))
        if too_many is not None:
            metrics.EVENTS_REJECTED.labels(too_many.reason).inc(len(events))
            raise InvalidInput("batch too large", violations=[too_many])
        return await self._send(events, atomic=atomic, source=source, prefix=lambda i: f"events[{i}]")

    async def _send(
        self, events: Sequence[EventInput], *, atomic: bool, source: str, prefix: Callable[[int], str]
    ) -> BatchOutcome:
        refs = resolvable_refs(events)
        customers = await self.catalog.resolve_customers(refs) if refs else {}
        accepted, rejected = prepare_events(
            events,
            customers=customers,
            is_metered=self.catalog.is_metered,
            now_micros=self.clock(),
            limits=self.limits,
            prefix=prefix,
        )
        if rejected and atomic:
            for problems in rejected.values():
                metrics.EVENTS_REJECTED.labels(problems[0].reason).inc()
            raise InvalidInput(
                f"{len(rejected)} of {len(events)} events are invalid; nothing was stored",
                violations=[v for index in sorted(rejected) for v in rejected[index]],
            )
        first_by_key: dict[str, AcceptedEvent] = {}
        unique: list[AcceptedEvent] = []
        for event in accepted:
            if event.idempotency_key not in first_by_key:
                first_by_key[event.idempotency_key] = event
                unique.append(event)
        stored = {}
        if unique:
            stored = await self._store_events(unique, accepted, atomic=atomic, prefix=prefix)
            self._notify_committed()
        return self._outcomes(events, rejected, accepted, stored, source, prefix)

    async def _store_events(
        self, unique: list[AcceptedEvent], accepted: list[AcceptedEvent], *, atomic: bool, prefix: Callable[[int], str]
    ) -> dict[str, StoredKey]:
        """Insert in one transaction; in ATOMIC mode a conflicting key rolls it all back."""
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                async with self.store.connection(transaction=atomic) as repo:
                    stored = await repo.insert_events(unique)
                    conflicts = [e for e in accepted if stored[e.idempotency_key].payload_hash != e.payload_hash]
                    if conflicts and atomic:
                        # Raised inside the transaction: the events stored with them roll back.
                        metrics.EVENTS_REJECTED.labels(CONFLICT_REASON).inc(len(conflicts))
                        raise _conflict_error(
                            [e.idempotency_key for e in conflicts],
                            [
                                Violation(
                                    f"{prefix(e.index)}.idempotency_key",
                                    f"{e.idempotency_key!r} was already used for a different event",
                                    CONFLICT_REASON,
                                )
                                for e in conflicts
                            ],
                        )
                    return stored
            except WriteConflict:
                if attempt == WRITE_ATTEMPTS:
                    raise Unavailable("too much contention on idempotency keys; retry", retry_after_seconds=0.1)
                log.info("event_write_retried", attempt=attempt)
        raise AssertionError("unreachable")

    def _outcomes(
        self,
        events: Sequence[EventInput],
        rejected: dict[int, list[Violation]],
        accepted: list[AcceptedEvent],
        stored: dict[str, StoredKey],
        source: str,
        prefix: Callable[[int], str],
    ) -> BatchOutcome:
        outcomes: list[EventOutcome] = []
        by_index = {e.index: e for e in accepted}
        counted_as_new: set[str] = set()
        for index in range(len(events)):
            if index in rejected:
                outcomes.append(EventOutcome(index, EventStatus.REJECTED, violations=tuple(rejected[index])))
                continue
            event = by_index[index]
            key = event.idempotency_key
            held = stored[key]
            if held.payload_hash != event.payload_hash:
                problem = Violation(
                    f"{prefix(index)}.idempotency_key", f"{key!r} was already used for a different event", CONFLICT_REASON
                )
                outcomes.append(EventOutcome(index, EventStatus.REJECTED, "", key, (problem,)))
            elif held.inserted and key not in counted_as_new:
                counted_as_new.add(key)
                outcomes.append(EventOutcome(index, EventStatus.ACCEPTED, held.record_id, key))
            else:
                outcomes.append(EventOutcome(index, EventStatus.DUPLICATE, held.record_id, key))
        self._count(outcomes, by_index, source)
        return BatchOutcome(outcomes)

    @staticmethod
    def _count(outcomes: list[EventOutcome], by_index: dict[int, AcceptedEvent], source: str) -> None:
        accepted = duplicate = unmetered = 0
        for outcome in outcomes:
            if outcome.status is EventStatus.ACCEPTED:
                accepted += 1
                unmetered += not by_index[outcome.index].metered
            elif outcome.status is EventStatus.DUPLICATE:
                duplicate += 1
            else:
                metrics.EVENTS_REJECTED.labels(outcome.violations[0].reason).inc()
        if accepted:
            metrics.EVENTS_ACCEPTED.labels(source).inc(accepted)
        if duplicate:
            metrics.EVENTS_DUPLICATE.labels(source).inc(duplicate)
        if unmetered:
            metrics.EVENTS_UNMETERED.inc(unmetered)

    # ------------------------------------------------------------------ usage

    async def record_usage(self, usage: UsageInput) -> tuple[str, str, bool]:
        """Store a usage record: (usage record id, idempotency key, duplicate)."""
        now = EPOCH + dt.timedelta(microseconds=self.clock())
        problems = validate_usage(usage, now=now, limits=self.limits)
        if not any(p.field == "customer" for p in problems):
            customers = await self.catalog.resolve_customers({usage.customer})
            if customers.get(usage.customer) is None:
                problems.append(Violation("customer", f"unknown customer {usage.customer.describe()}", UNKNOWN_CUSTOMER))
        if usage.meter_key.strip() and not await self.catalog.meter_exists(usage.meter_key):
            problems.append(Violation("meter_key", f"unknown meter {usage.meter_key!r}", UNKNOWN_METER))
        if problems:
            metrics.EVENTS_REJECTED.labels(problems[0].reason).inc()
            raise InvalidInput("invalid usage record", violations=problems)
        accepted = accept_usage(usage, customer_id=customers[usage.customer], now=now)
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
        return stored.record_id, accepted.idempotency_key, not stored.inserted

    # ------------------------------------------------------------------ void, get, stats

    async def void_event(self, idempotency_key: str, reason: str) -> tuple[str, bool, dt.datetime]:
        """Void an event: (event id, already voided, void time). Voiding twice changes nothing."""
        if not idempotency_key.strip():
            raise InvalidInput(
                "idempotency_key is required",
                violations=[Violation("idempotency_key", "is required", "IDEMPOTENCY_KEY_EMPTY")],
            )
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
        async with self.store.connection() as repo:
            stored = await repo.get_event(idempotency_key)
        if stored is None:
            raise NotFound(f"no event with idempotency key {idempotency_key!r}", metadata={"idempotency_key": idempotency_key})
        return stored

    async def ingest_stats(self) -> tuple[IngestCounts, int]:
        """Totals, unmetered events by type, and the log head position."""
        async with self.store.connection() as repo:
            counts = await repo.counts()
            head = await repo.head()
        return counts, head.position

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
            # Order matters: clock, then open transactions, then the horizon (see README).
            started = await repo.clock()
            oldest_open = await repo.oldest_open_transaction()
            horizon = await repo.horizon()
            entries = await repo.read_log(cursor.after, horizon, limit + 1)
            head = await repo.head()
        watermark = started if oldest_open is None else min(started, oldest_open)
        page = next_page(entries, cursor=cursor, limit=limit, horizon=horizon, watermark=watermark)
        return dataclasses.replace(page, head=head)
