"""StreamEvents: per-batch acknowledgements after commit, and resuming after a broken stream."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from tests.harness import unique
from tests.ingest.helpers import event, log_cursor_at_head, logged_keys, read_log_through_sentinel
from tally.channels import connect
from tally_gen.ingest.v1 import ingest_pb2, ingest_pb2_grpc

pytestmark = pytest.mark.timeout(60)


def batches_for(customer, count: int, size: int) -> list[ingest_pb2.StreamEventsRequest]:
    return [
        ingest_pb2.StreamEventsRequest(
            batch_id=f"b{n}", events=[event(customer, key=unique(f"s{n}"), properties={"i": i}) for i in range(size)]
        )
        for n in range(count)
    ]


class TestStreamEvents:
    async def test_each_batch_is_acknowledged_with_a_result_per_event(self, ingest_stack):
        customer = await ingest_stack.customer()
        batches = batches_for(customer, 3, 50)
        batches[1].events[7].event_type = ""
        acks = [ack async for ack in ingest_stack.ingest.StreamEvents(iter(batches))]
        assert [a.batch_id for a in acks] == ["b0", "b1", "b2"]
        assert [(a.accepted_count, a.rejected_count) for a in acks] == [(50, 0), (49, 1), (50, 0)]
        rejected = acks[1].results[7]
        assert rejected.status == ingest_pb2.EVENT_STATUS_REJECTED
        assert rejected.violations[0].field == "events[7].event_type"
        stored = await ingest_stack.ingest.GetEvent(
            ingest_pb2.GetEventRequest(idempotency_key=batches[2].events[49].idempotency_key)
        )
        assert stored.event.event_id == acks[2].results[49].event_id

    async def test_acknowledged_events_are_committed_before_the_ack_arrives(self, ingest_stack):
        customer = await ingest_stack.customer()
        batches = batches_for(customer, 1, 10)
        call = ingest_stack.ingest.StreamEvents()
        await call.write(batches[0])
        ack = await call.read()
        # Another connection sees them at once: the ack came after the commit.
        with_other_connection = ingest_pb2_grpc.IngestServiceStub(connect(ingest_stack.address))
        for sent in batches[0].events:
            got = await with_other_connection.GetEvent(ingest_pb2.GetEventRequest(idempotency_key=sent.idempotency_key))
            assert got.event.event_id in {r.event_id for r in ack.results}
        await call.done_writing()
        assert await call.read() == grpc.aio.EOF

    async def test_a_sender_resuming_after_a_broken_stream_gets_every_event_counted_once(self, ingest_stack):
        customer = await ingest_stack.customer()
        cursor = await log_cursor_at_head(ingest_stack.ingest)
        batches = batches_for(customer, 6, 100)
        acknowledged: set[str] = set()

        # First stream: write four batches, read one ack, then the connection breaks.
        channel = connect(ingest_stack.address)
        call = ingest_pb2_grpc.IngestServiceStub(channel).StreamEvents()
        for batch in batches[:4]:
            await call.write(batch)
        first_ack = await call.read()
        acknowledged.add(first_ack.batch_id)
        call.cancel()
        await channel.close()
        # Some written-but-unacknowledged batches may have been committed anyway.
        await asyncio.sleep(0.2)

        # The sender resends every unacknowledged batch, with the same keys, then the rest.
        resend = [b for b in batches if b.batch_id not in acknowledged]
        acks = [ack async for ack in ingest_stack.ingest.StreamEvents(iter(resend))]
        assert [a.batch_id for a in acks] == [b.batch_id for b in resend]
        assert all(a.rejected_count == 0 for a in acks)
        assert sum(a.accepted_count + a.duplicate_count for a in acks) == 500

        keys = logged_keys(await read_log_through_sentinel(ingest_stack, cursor, customer))
        sent = [e.idempotency_key for b in batches for e in b.events]
        assert sorted(k for k in keys if k in set(sent)) == sorted(sent)

    async def test_a_batch_of_more_than_1000_events_ends_the_stream_with_invalid_argument(self, ingest_stack):
        customer = await ingest_stack.customer()
        too_big = batches_for(customer, 1, 1001)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in ingest_stack.ingest.StreamEvents(iter(too_big)):
                pass
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    async def test_batches_before_a_too_large_one_are_acknowledged_and_stored_before_the_stream_fails(
        self, ingest_stack
    ):
        customer = await ingest_stack.customer()
        batches = batches_for(customer, 3, 20)
        batches[2] = batches_for(customer, 1, 1001)[0]
        acks = []
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for ack in ingest_stack.ingest.StreamEvents(iter(batches)):
                acks.append(ack)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [(a.batch_id, a.accepted_count) for a in acks] == [("b0", 20), ("b1", 20)]
        for sent in batches[1].events:
            got = await ingest_stack.ingest.GetEvent(ingest_pb2.GetEventRequest(idempotency_key=sent.idempotency_key))
            assert got.event.idempotency_key == sent.idempotency_key

    async def test_the_log_holds_a_streams_batches_in_send_order(self, ingest_stack):
        customer = await ingest_stack.customer()
        cursor = await log_cursor_at_head(ingest_stack.ingest)
        batches = batches_for(customer, 8, 30)
        acks = [ack async for ack in ingest_stack.ingest.StreamEvents(iter(batches))]
        assert [a.batch_id for a in acks] == [b.batch_id for b in batches]
        sent = [e.idempotency_key for b in batches for e in b.events]
        keys = logged_keys(await read_log_through_sentinel(ingest_stack, cursor, customer))
        assert [k for k in keys if k in set(sent)] == sent
