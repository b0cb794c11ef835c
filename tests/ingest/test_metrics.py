"""Ingest increments the shared Prometheus counters (the service runs in this process)."""

from __future__ import annotations

import pytest

from tests.harness import unique
from tests.ingest.helpers import event
from tally import metrics
from tally_gen.ingest.v1 import ingest_pb2

pytestmark = pytest.mark.timeout(60)


def value(counter, *labels) -> float:
    return (counter.labels(*labels) if labels else counter)._value.get()


class TestIngestMetrics:
    async def test_accepted_duplicate_rejected_and_unmetered_are_counted(self, ingest_stack):
        customer = await ingest_stack.customer()
        before = (
            value(metrics.EVENTS_ACCEPTED, "batch"),
            value(metrics.EVENTS_DUPLICATE, "batch"),
            value(metrics.EVENTS_REJECTED, "EVENT_TYPE_MISSING"),
            value(metrics.EVENTS_UNMETERED),
        )
        repeated = event(customer, key=unique("m"), event_type=unique("nometer"))
        batch = [repeated, repeated, event(customer, key=unique("m"), event_type="")]
        await ingest_stack.ingest.SendEventBatch(
            ingest_pb2.SendEventBatchRequest(events=batch, mode=ingest_pb2.BATCH_MODE_PARTIAL)
        )
        after = (
            value(metrics.EVENTS_ACCEPTED, "batch"),
            value(metrics.EVENTS_DUPLICATE, "batch"),
            value(metrics.EVENTS_REJECTED, "EVENT_TYPE_MISSING"),
            value(metrics.EVENTS_UNMETERED),
        )
        assert [a - b for a, b in zip(after, before)] == [1, 1, 1, 1]
