"""The batching, retrying event sender against a real gRPC peer (a small fake IngestService)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from decimal import Decimal

import grpc
import pytest

from tally.client import AsyncEventSender, EventOutcome, EventSender, SenderClosed, SenderError, build_event
from tally.server import start_server
from tests.client.fake_ingest import FakeIngest
from tests.harness import free_port, in_process


async def eventually(predicate, timeout: float = 10.0) -> None:
    async def poll():
        while not predicate():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


class TestBuildEvent:
    def test_a_missing_key_is_replaced_by_a_fresh_uuid(self):
        first = build_event("api_request", customer="acct_1")
        second = build_event("api_request", customer="acct_1")
        assert len(first.idempotency_key) == 32
        assert first.idempotency_key != second.idempotency_key

    def test_a_given_key_and_timestamp_are_kept(self):
        when = datetime(2026, 1, 15, 14, 15, 32, tzinfo=timezone.utc)
        event = build_event("api_request", customer="acct_1", timestamp=when, idempotency_key="evt_9f1")
        assert event.idempotency_key == "evt_9f1"
        assert event.timestamp.ToDatetime(tzinfo=timezone.utc) == when
        assert event.customer.external_id == "acct_1"

    def test_decimal_properties_travel_as_exact_strings(self):
        event = build_event("tokens", customer_id="cus_1", properties={"tokens": Decimal("12.345"), "n": 3})
        assert event.properties["tokens"] == "12.345"
        assert event.customer.id == "cus_1"

    def test_a_naive_timestamp_is_refused(self):
        with pytest.raises(ValueError, match="timezone-aware"):
            build_event("x", customer="a", timestamp=datetime(2026, 1, 1))

    def test_a_subscription_may_be_named_by_reference_or_id_but_not_both(self):
        assert build_event("api_request", customer="acct_1", subscription="team-plan").subscription.external_id == "team-plan"
        assert build_event("api_request", customer="acct_1", subscription_id="sub_1").subscription.id == "sub_1"
        assert not build_event("api_request", customer="acct_1").HasField("subscription")
        with pytest.raises(ValueError):
            build_event("api_request", customer="acct_1", subscription="team-plan", subscription_id="sub_1")

    def test_the_customer_must_be_named_exactly_once(self):
        with pytest.raises(ValueError):
            build_event("x")
        with pytest.raises(ValueError):
            build_event("x", customer="a", customer_id="b")


class TestBatching:
    async def test_a_flush_sends_full_batches_then_the_remainder(self):
        fake = FakeIngest()
        async with in_process(fake.app()) as (_server, channel):
            sender = AsyncEventSender(channel=channel, batch_size=10, flush_interval=60)
            keys = [await sender.send("api_request", customer="acct_1") for _ in range(25)]
            await asyncio.wait_for(sender.flush(), 10)
            assert fake.batch_sizes == [10, 10, 5]
            assert set(fake.stored) == set(keys)
            assert sender.stats.accepted == 25
            assert sender.outstanding == 0
            await sender.close()

    async def test_a_partial_batch_is_sent_when_the_flush_interval_passes(self):
        fake = FakeIngest()
        async with in_process(fake.app()) as (_server, channel):
            async with AsyncEventSender(channel=channel, batch_size=100, flush_interval=0.05) as sender:
                for _ in range(3):
                    await sender.send("api_request", customer="acct_1")
                await eventually(lambda: len(fake.stored) == 3)
                assert fake.batch_sizes == [3]

    async def test_closing_flushes_what_is_buffered(self):
        fake = FakeIngest()
        async with in_process(fake.app()) as (_server, channel):
            async with AsyncEventSender(channel=channel, batch_size=100, flush_interval=60) as sender:
                await sender.send("api_request", customer="acct_1", idempotency_key="k1")
                await sender.send("api_request", customer="acct_1", idempotency_key="k2")
            assert sorted(fake.stored) == ["k1", "k2"]
            with pytest.raises(SenderClosed):
                await sender.send("api_request", customer="acct_1")


class TestChannel:
    async def test_a_sender_given_an_address_sends_its_key_and_a_request_id_on_the_stream(self):
        fake = FakeIngest()
        async with in_process(fake.app()) as (server, _channel):
            async with AsyncEventSender(f"127.0.0.1:{server.port}", api_key="tly_abc.secret", flush_interval=60) as sender:
                await sender.send("api_request", customer="acct_1")
        assert fake.stream_metadata, "no stream was opened"
        metadata = fake.stream_metadata[0]
        assert metadata.get("authorization") == "Bearer tly_abc.secret"
        assert len(metadata.get("x-request-id", "")) == 32


class TestRetries:
    async def test_batches_unacknowledged_when_the_stream_breaks_are_resent_with_the_same_keys(self):
        fake = FakeIngest(break_after_commit={2, 4})
        async with in_process(fake.app()) as (_server, channel):
            async with AsyncEventSender(
                channel=channel, batch_size=5, flush_interval=60, initial_backoff=0.01
            ) as sender:
                keys = [await sender.send("api_request", customer="acct_1") for _ in range(20)]
            assert set(fake.stored) == set(keys)
            assert len(fake.stored) == 20
            # The two batches committed without acknowledgement came again, as duplicates.
            assert len(fake.keys_received) == 30
            assert sender.stats.reconnects == 2
            # Each event is acknowledged once: the resent batches as duplicates.
            assert sender.stats.accepted == 10
            assert sender.stats.duplicate == 10

    async def test_events_sent_before_ingest_is_up_arrive_once_it_starts(self):
        fake = FakeIngest()
        port = free_port()
        sender = AsyncEventSender(f"127.0.0.1:{port}", batch_size=10, flush_interval=0.01, initial_backoff=0.05)
        keys = [await sender.send("api_request", customer="acct_1") for _ in range(3)]
        await eventually(lambda: sender.stats.reconnects >= 1)
        running = await start_server(fake.app(), "127.0.0.1", port)
        try:
            await asyncio.wait_for(sender.close(), 20)
        finally:
            await running.stop(grace=1)
        assert set(fake.stored) == set(keys)
        assert sender.stats.accepted == 3

    async def test_a_non_retryable_status_fails_flush_and_close_with_its_code(self):
        fake = FakeIngest(refuse_with=grpc.StatusCode.PERMISSION_DENIED)
        async with in_process(fake.app()) as (_server, channel):
            sender = AsyncEventSender(channel=channel, batch_size=10, flush_interval=0.01)
            await sender.send("api_request", customer="acct_1")
            with pytest.raises(SenderError) as failed:
                await asyncio.wait_for(sender.flush(), 10)
            assert failed.value.code == grpc.StatusCode.PERMISSION_DENIED
            with pytest.raises(SenderError):
                await sender.close()
            assert fake.streams_opened == 1

    async def test_the_sender_gives_up_after_max_reconnects(self):
        sender = AsyncEventSender(
            f"127.0.0.1:{free_port()}", flush_interval=0.01, initial_backoff=0.01, max_reconnects=2
        )
        await sender.send("api_request", customer="acct_1")
        with pytest.raises(SenderError) as failed:
            await asyncio.wait_for(sender.close(), 20)
        assert failed.value.code == grpc.StatusCode.UNAVAILABLE
        assert sender.stats.reconnects == 2


class TestBackpressure:
    async def test_send_waits_while_the_buffer_is_full_and_resumes_after_acknowledgements(self):
        fake = FakeIngest(gate=asyncio.Event())
        async with in_process(fake.app()) as (_server, channel):
            async with AsyncEventSender(channel=channel, batch_size=5, max_buffered=10, flush_interval=0.01) as sender:
                for _ in range(10):
                    await sender.send("api_request", customer="acct_1")
                eleventh = asyncio.create_task(sender.send("api_request", customer="acct_1"))
                await asyncio.sleep(0.2)
                assert not eleventh.done()
                assert sender.outstanding == 10
                fake.gate.set()
                await asyncio.wait_for(eleventh, 10)
            assert len(fake.stored) == 11


class TestRejections:
    async def test_rejected_events_are_reported_with_their_key_and_violations(self):
        fake = FakeIngest()
        outcomes: list[EventOutcome] = []
        async with in_process(fake.app()) as (_server, channel):
            async with AsyncEventSender(channel=channel, flush_interval=0.01, on_result=outcomes.append) as sender:
                await sender.send("api_request", customer="acct_1", idempotency_key="good")
                await sender.send("", customer="acct_1", idempotency_key="bad")
        assert [(o.idempotency_key, o.status) for o in outcomes] == [("good", "accepted"), ("bad", "rejected")]
        assert sender.rejections == [
            EventOutcome("bad", "rejected", "", (("events[1].event_type", "is required"),))
        ]
        assert sender.stats.rejected == 1


class TestSyncSender:
    async def test_the_sync_sender_sends_from_plain_threads_and_flushes_on_exit(self):
        fake = FakeIngest()
        async with in_process(fake.app()) as (server, _channel):

            def send_from_a_thread() -> list[str]:
                with EventSender(f"127.0.0.1:{server.port}", batch_size=4, flush_interval=60) as sender:
                    keys = [sender.send("api_request", customer="acct_1", properties={"n": i}) for i in range(6)]
                    sender.flush()
                    assert sender.stats.accepted == 6
                    keys.append(sender.send("api_request", customer="acct_1"))
                return keys

            keys = await asyncio.to_thread(send_from_a_thread)
        assert set(fake.stored) == set(keys)
        assert fake.batch_sizes == [4, 2, 1]
