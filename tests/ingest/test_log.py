"""ReadLog: ordered, resumable, and never skipping a row that a transaction commits late."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import random

import grpc
import pytest

from services.ingest.domain.events import PreparedBatch
from services.ingest.domain.log import LogCursor
from services.ingest.repository import IngestRepository, IngestStore
from services.ingest.service import IngestService
from services.ingest.domain.events import Limits
from tally.db import create_pool
from tests.harness import unique
from tests.ingest.helpers import (
    event,
    expect_error,
    log_cursor_at_head,
    logged_keys,
    now,
    read_log_through_sentinel,
    violations,
)
from tally_gen.ingest.v1 import ingest_pb2

pytestmark = pytest.mark.timeout(120)


class TestReadLog:
    async def test_a_reader_resumes_from_its_cursor_without_gaps_or_repeats(self, ingest_stack):
        customer = await ingest_stack.customer()
        cursor = await log_cursor_at_head(ingest_stack.ingest)
        events = [event(customer, key=unique("l"), properties={"i": i}) for i in range(25)]
        await ingest_stack.ingest.SendEventBatch(ingest_pb2.SendEventBatchRequest(events=events))
        ours = {e.idempotency_key for e in events}
        mine = []
        pages_with_ours = 0
        while len(mine) < len(events):
            page = await ingest_stack.ingest.ReadLog(
                ingest_pb2.ReadLogRequest(cursor=cursor, max_entries=10, wait_millis=1000)
            )
            assert len(page.entries) <= 10
            # Rows of other tests held back by transactions elsewhere on the server may show up too.
            found = [e for e in page.entries if e.WhichOneof("entry") == "event" and e.event.idempotency_key in ours]
            pages_with_ours += bool(found)
            mine.extend(found)
            cursor = page.next_cursor
        assert pages_with_ours >= 3
        assert logged_keys(mine) == [e.idempotency_key for e in events]
        assert [e.event.properties["i"] for e in mine] == list(range(25))
        again = await read_log_through_sentinel(ingest_stack, cursor, customer)
        assert not set(logged_keys(again)) & ours

    async def test_the_response_reports_the_head_and_a_watermark_no_later_than_the_read(self, ingest_stack):
        customer = await ingest_stack.customer()
        message = event(customer, key=unique("h"))
        await ingest_stack.ingest.SendEvent(ingest_pb2.SendEventRequest(event=message))
        stored = await ingest_stack.ingest.GetEvent(ingest_pb2.GetEventRequest(idempotency_key=message.idempotency_key))
        cursor = await log_cursor_at_head(ingest_stack.ingest)
        page = await ingest_stack.ingest.ReadLog(ingest_pb2.ReadLogRequest(cursor=cursor))
        assert page.caught_up and page.head_position > 0
        assert page.head_ingest_time == stored.event.ingest_time
        # Open transactions anywhere on the server hold the watermark back, never forward.
        assert page.HasField("watermark")
        assert page.watermark.ToDatetime(dt.timezone.utc) <= now()

    @pytest.mark.parametrize("garbage", ["not-a-cursor", "AAAA", "eyJrIjoiaW5nZXN0X2xvZyJ9"])
    async def test_a_garbage_or_tampered_cursor_is_invalid_argument(self, ingest_stack, garbage):
        error = await expect_error(
            ingest_stack.ingest.ReadLog(ingest_pb2.ReadLogRequest(cursor=garbage)), grpc.StatusCode.INVALID_ARGUMENT
        )
        assert [f for f, _ in violations(error)] == ["cursor"]

    async def test_a_cursor_with_one_flipped_character_is_rejected(self, ingest_stack):
        cursor = await log_cursor_at_head(ingest_stack.ingest)
        flipped = cursor[:-3] + ("A" if cursor[-3] != "A" else "B") + cursor[-2:]
        await expect_error(
            ingest_stack.ingest.ReadLog(ingest_pb2.ReadLogRequest(cursor=flipped)), grpc.StatusCode.INVALID_ARGUMENT
        )

    async def test_a_long_poll_returns_once_an_entry_is_committed(self, ingest_stack):
        customer = await ingest_stack.customer()
        cursor = await log_cursor_at_head(ingest_stack.ingest)
        message = event(customer, key=unique("poll"))

        async def poll_until_seen() -> int:
            nonlocal cursor
            polls = 0
            while True:
                page = await ingest_stack.ingest.ReadLog(ingest_pb2.ReadLogRequest(cursor=cursor, wait_millis=20_000))
                polls += 1
                cursor = page.next_cursor
                if message.idempotency_key in logged_keys(page.entries):
                    return polls

        poller = asyncio.ensure_future(poll_until_seen())
        await asyncio.sleep(0.2)
        await ingest_stack.ingest.SendEvent(ingest_pb2.SendEventRequest(event=message))
        assert await asyncio.wait_for(poller, 15) >= 1

    async def test_a_long_poll_with_nothing_new_returns_caught_up_after_the_wait(self, ingest_stack):
        cursor = await log_cursor_at_head(ingest_stack.ingest)
        page = await ingest_stack.ingest.ReadLog(ingest_pb2.ReadLogRequest(cursor=cursor, wait_millis=100))
        assert page.caught_up and page.next_cursor

    async def test_a_negative_wait_is_invalid_argument(self, ingest_stack):
        error = await expect_error(
            ingest_stack.ingest.ReadLog(ingest_pb2.ReadLogRequest(wait_millis=-1)), grpc.StatusCode.INVALID_ARGUMENT
        )
        assert [f for f, _ in violations(error)] == ["wait_millis"]


class _NoCatalog:
    """The log reader needs no catalog; any call would be a bug in the test."""

    def __getattr__(self, name):
        raise AssertionError(f"catalog.{name} called by a log read")


class TestLogGaps:
    async def test_a_reader_sees_every_committed_row_exactly_once_and_no_rolled_back_row(self, database_url):
        """Writers hold their transactions open for random times, so commit order differs from
        position order; a concurrent reader must still see each committed row once."""
        marker = unique("gap")
        pool = await create_pool(database_url, application_name="tally-ingest-test", min_size=2, max_size=9)
        reader = IngestService(IngestStore(pool), _NoCatalog(), Limits())
        committed: list[str] = []
        rolled_back: list[str] = []
        writers_done = asyncio.Event()
        rng = random.Random(7)

        class RollBack(Exception):
            pass

        async def writer(number: int) -> None:
            for round_ in range(15):
                keys = [f"{marker}-{number}-{round_}-{i}" for i in range(rng.randint(1, 3))]
                rows = [
                    PreparedBatch(
                        indexes=[0],
                        keys=[key],
                        payload_hashes=[hashlib.sha256(key.encode()).digest()],
                        event_types=[marker],
                        customer_ids=["cus_gap"],
                        timestamps=[1_700_000_000_000_000],
                        properties=[b""],
                        metered=[True],
                        subscription_ids=[""],
                        rejected={},
                    )
                    for key in keys
                ]
                roll_back = rng.random() < 0.25
                try:
                    async with pool.acquire() as conn, conn.transaction():
                        await IngestRepository(conn).insert_events(rows[0])
                        # The transaction holds its xid and position while it sleeps.
                        await asyncio.sleep(rng.uniform(0, 0.06))
                        for row in rows[1:]:
                            await IngestRepository(conn).insert_events(row)
                            await asyncio.sleep(rng.uniform(0, 0.03))
                        if roll_back:
                            raise RollBack
                except RollBack:
                    rolled_back.extend(keys)
                else:
                    committed.extend(keys)

        seen: list[tuple[str, int]] = []
        late_commits = 0
        watermark_violations = []

        async def consume() -> None:
            nonlocal late_commits
            cursor = LogCursor()
            highest_position = 0
            watermarks = []
            while True:
                finished = writers_done.is_set()
                page = await reader.read_log(cursor, 5, 0)
                for entry in page.entries:
                    if getattr(entry.body, "event_type", None) != marker:
                        continue
                    seen.append((entry.body.idempotency_key, entry.at.position))
                    if entry.at.position < highest_position:
                        late_commits += 1
                    highest_position = max(highest_position, entry.at.position)
                    if watermarks and entry.ingest_time < max(watermarks):
                        watermark_violations.append(entry.body.idempotency_key)
                if page.next_cursor.watermark is not None:
                    watermarks.append(page.next_cursor.watermark)
                cursor = page.next_cursor
                if finished and page.caught_up:
                    return
                if not page.entries:
                    await asyncio.sleep(rng.uniform(0, 0.01))

        consumer = asyncio.create_task(consume())
        await asyncio.gather(*(writer(n) for n in range(8)))
        writers_done.set()
        await consumer
        await pool.close()

        keys_seen = [key for key, _ in seen]
        assert len(keys_seen) == len(set(keys_seen)), "a row was served twice"
        assert sorted(keys_seen) == sorted(committed)
        assert not set(keys_seen) & set(rolled_back)
        assert rolled_back, "the scenario must roll some transactions back"
        # The scenario really produced rows committed after higher positions were served, which a
        # reader resuming from a position alone would have skipped.
        assert late_commits > 0
        assert watermark_violations == []
