"""Group commit for unary SendEvent: concurrent single events share one INSERT and one commit.

Each caller still gets its answer only after the commit that stored its event, so nothing
changes for durability or deduplication; what changes is that 32 concurrent callers cost one
round-trip and one WAL flush instead of 32. While one group is being written, new events
queue up and form the next group, so a lone caller waits for no timer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from services.ingest.domain.events import PreparedBatch
from services.ingest.domain.outcomes import BatchOutcome

# Writes a merged group and answers with one outcome per event of the group.
WriteGroup = Callable[[PreparedBatch], Awaitable[BatchOutcome]]

MAX_GROUP_EVENTS = 1000
# Most event-loop iterations a group waits for arrivals before it is written (see _gather_arrivals).
ARRIVAL_YIELDS = 4


def merge(batches: list[PreparedBatch]) -> PreparedBatch:
    """One batch holding every event of ``batches`` in order (batch i, event j -> offset + j)."""
    columns: list[list] = [[] for _ in range(9)]
    offset = 0
    for batch in batches:
        columns[0].extend(offset + index for index in batch.indexes)
        for target, column in zip(
            columns[1:],
            (batch.keys, batch.payload_hashes, batch.event_types, batch.customer_ids, batch.timestamps,
             batch.properties, batch.metered, batch.subscription_ids),
        ):
            target.extend(column)
        offset += len(batch.keys)
    return PreparedBatch(*columns, rejected={})


class GroupCommitter:
    """Queues prepared single-event batches and writes whatever has queued as one group.

    Up to ``max_in_flight`` groups are written at once (each on its own connection): a
    caller arriving while every writer is busy joins the next group.
    """

    def __init__(self, write: WriteGroup, max_in_flight: int = 1) -> None:
        self._write = write
        self._max_in_flight = max_in_flight
        self._queue: list[tuple[PreparedBatch, asyncio.Future]] = []
        self._in_flight = 0

    async def submit(self, batch: PreparedBatch) -> BatchOutcome:
        """The outcome of ``batch`` (validated, no rejections) once its group has committed."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append((batch, future))
        if self._in_flight < self._max_in_flight:
            self._in_flight += 1
            loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                await self._gather_arrivals()
                group, self._queue = self._queue[:MAX_GROUP_EVENTS], self._queue[MAX_GROUP_EVENTS:]
                await self._write_group(group)
        finally:
            self._in_flight -= 1

    async def _gather_arrivals(self) -> None:
        """Let callers whose requests are already in hand join the group before it is written.

        A request takes a few event-loop iterations from arriving to being queued here, so
        this yields twice, then on while the queue keeps growing (ARRIVAL_YIELDS at most;
        microseconds, no timer). Bigger groups cost less CPU per event, and CPU bounds unary
        throughput (32 callers, 2 cores: ~1,700 -> ~2,050 events/s against one yield).
        """
        await asyncio.sleep(0)
        for _ in range(ARRIVAL_YIELDS - 1):
            queued = len(self._queue)
            await asyncio.sleep(0)
            if len(self._queue) == queued:
                return

    async def _write_group(self, group: list[tuple[PreparedBatch, asyncio.Future]]) -> None:
        try:
            outcome = await self._write(merge([batch for batch, _ in group]))
        except BaseException as error:  # noqa: BLE001 - every caller of the group gets the failure
            for _, future in group:
                if not future.done():
                    future.set_exception(error)
            if isinstance(error, asyncio.CancelledError):
                raise
            return
        offset = 0
        for batch, future in group:
            size = len(batch.keys)
            if not future.done():
                future.set_result(
                    BatchOutcome(
                        outcome.statuses[offset : offset + size],
                        outcome.event_ids[offset : offset + size],
                        outcome.keys[offset : offset + size],
                        {i - offset: v for i, v in outcome.violations.items() if offset <= i < offset + size},
                        None if outcome.subscription_ids is None else outcome.subscription_ids[offset : offset + size],
                    )
                )
            offset += size
