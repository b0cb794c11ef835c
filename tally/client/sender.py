"""A batching, retrying event sender over IngestService.StreamEvents.

Events are buffered and flushed in batches by size or by time. Each batch is written on one
bidirectional stream and kept until its acknowledgement arrives (ingest acknowledges after
commit). When the stream breaks, a new one is opened and every unacknowledged batch is written
again, in order, with the same idempotency keys, so ingest counts each event once. The buffer is
bounded: ``send`` waits while ``max_buffered`` events are unacknowledged (backpressure).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import grpc
from google.protobuf import struct_pb2, timestamp_pb2

from tally.channels import MAX_MESSAGE_BYTES, connect
from tally.config import service_address
from tally_gen.common.v1 import common_pb2
from tally_gen.ingest.v1 import ingest_pb2, ingest_pb2_grpc

# Codes after which the same batches are sent again on a new stream. Every batch carries its
# idempotency keys, so a batch committed just before the break is acknowledged as duplicates.
RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})

_STATUS_NAMES = {
    ingest_pb2.EVENT_STATUS_ACCEPTED: "accepted",
    ingest_pb2.EVENT_STATUS_DUPLICATE: "duplicate",
    ingest_pb2.EVENT_STATUS_REJECTED: "rejected",
}


class SenderError(Exception):
    """The sender gave up: a non-retryable status, or too many failed reconnects."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


class SenderClosed(SenderError):
    """send() after close()."""


@dataclass(frozen=True)
class EventOutcome:
    """What ingest said about one event."""

    idempotency_key: str
    # "accepted", "duplicate" or "rejected".
    status: str
    event_id: str = ""
    # (field, description) pairs for rejected events.
    violations: tuple[tuple[str, str], ...] = ()


@dataclass
class SenderStats:
    """Counters since the sender started. A batch resent after a broken stream that had in
    fact been committed comes back as duplicates."""

    accepted: int = 0
    duplicate: int = 0
    rejected: int = 0
    batches_acknowledged: int = 0
    reconnects: int = 0


def build_event(
    event_type: str,
    *,
    customer: str | None = None,
    customer_id: str | None = None,
    properties: Mapping[str, Any] | None = None,
    timestamp: datetime | None = None,
    idempotency_key: str | None = None,
    subscription: str | None = None,
    subscription_id: str | None = None,
) -> ingest_pb2.Event:
    """An ingest Event with a key and a timestamp fixed now, so every resend is identical.

    Args:
        customer: the customer's external id (your own account id).
        customer_id: Tally's customer id, instead of ``customer``.
        properties: JSON-like values; Decimal values travel as exact decimal strings.
        timestamp: when it happened (timezone-aware); defaults to now, in UTC.
        idempotency_key: defaults to a fresh uuid4.
        subscription: the subscription's external id (your own reference), when the usage
            belongs to one of several subscriptions of the customer (docs/billing-attribution.md).
        subscription_id: Tally's subscription id, instead of ``subscription``.
    """
    if (customer is None) == (customer_id is None):
        raise ValueError("name the customer by exactly one of customer (external id) or customer_id")
    if subscription is not None and subscription_id is not None:
        raise ValueError("name the subscription by at most one of subscription (external id) or subscription_id")
    if timestamp is None:
        timestamp = datetime.now(timezone.utc)
    elif timestamp.tzinfo is None:
        raise ValueError("timestamp must be timezone-aware")
    ref = common_pb2.CustomerRef(external_id=customer) if customer is not None else common_pb2.CustomerRef(
        id=customer_id
    )
    when = timestamp_pb2.Timestamp()
    when.FromDatetime(timestamp.astimezone(timezone.utc))
    event = ingest_pb2.Event(
        idempotency_key=idempotency_key or uuid.uuid4().hex,
        event_type=event_type,
        customer=ref,
        timestamp=when,
    )
    if properties:
        event.properties.CopyFrom(to_struct(properties))
    if subscription is not None:
        event.subscription.external_id = subscription
    elif subscription_id is not None:
        event.subscription.id = subscription_id
    return event


def to_struct(properties: Mapping[str, Any]) -> struct_pb2.Struct:
    """A Struct from JSON-like values, with Decimal as exact strings (never float)."""
    struct = struct_pb2.Struct()
    struct.update(_jsonable(dict(properties)))
    return struct


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _stream_channel(target: str, api_key: str | None) -> grpc.aio.Channel:
    """A channel like tally.channels.connect (TLS, API key and request ids on every call kind),
    except that the channel's own retry policy is off: the sender retries whole streams itself,
    resending unacknowledged batches. Reconnects start fast to match the sender's backoff."""
    return connect(
        target,
        api_key=api_key,
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.enable_retries", 0),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 5000),
            ("grpc.keepalive_time_ms", 30_000),
        ],
    )


@dataclass
class _Batch:
    request: ingest_pb2.StreamEventsRequest
    first_seq: int


@dataclass
class _Buffered:
    seq: int
    event: ingest_pb2.Event


@dataclass
class _Options:
    batch_size: int
    flush_interval: float
    max_buffered: int
    initial_backoff: float
    max_backoff: float
    max_reconnects: int
    metadata: tuple[tuple[str, str], ...] = field(default_factory=tuple)


class AsyncEventSender:
    """Buffers events and streams them to ingest in acknowledged batches.

    Use it as an async context manager; leaving the block flushes and closes::

        async with AsyncEventSender("localhost:50052") as sender:
            await sender.send("api_request", customer="acct_1", properties={"tokens": 120})
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        channel: grpc.aio.Channel | None = None,
        batch_size: int = 500,
        flush_interval: float = 0.2,
        max_buffered: int = 10_000,
        initial_backoff: float = 0.1,
        max_backoff: float = 5.0,
        max_reconnects: int = 20,
        metadata: Mapping[str, str] | None = None,
        api_key: str | None = None,
        on_result: Callable[[EventOutcome], None] | None = None,
    ) -> None:
        """
        Args:
            target: host:port of ingest; defaults to TALLY_INGEST_ADDR.
            api_key: the bearer key to present; defaults to TALLY_SERVICE_API_KEY.
            channel: an existing channel to use instead (not closed by the sender).
            batch_size: events per batch (ingest accepts up to 1,000).
            flush_interval: seconds an event may wait in the buffer before its batch is sent.
            max_buffered: unacknowledged events at most; send() waits beyond that.
            max_reconnects: consecutive failed streams (no acknowledgement in between)
                before the sender gives up with SenderError.
            on_result: called on the event loop with every event's outcome.
        """
        if not 1 <= batch_size <= 1000:
            raise ValueError("batch_size must be between 1 and 1000")
        if max_buffered < batch_size:
            raise ValueError("max_buffered must be at least batch_size")
        self._options = _Options(
            batch_size=batch_size,
            flush_interval=flush_interval,
            max_buffered=max_buffered,
            initial_backoff=initial_backoff,
            max_backoff=max_backoff,
            max_reconnects=max_reconnects,
            metadata=tuple((metadata or {}).items()),
        )
        self._owns_channel = channel is None
        self._channel = channel if channel is not None else _stream_channel(
            target or service_address("ingest"), api_key
        )
        self._stub = ingest_pb2_grpc.IngestServiceStub(self._channel)
        self._on_result = on_result
        self.stats = SenderStats()
        self.rejections: list[EventOutcome] = []

        self._buffer: list[_Buffered] = []
        self._buffer_started = 0.0
        self._next_seq = 0
        self._unacked: OrderedDict[str, _Batch] = OrderedDict()
        self._outbox: asyncio.Queue[_Batch | None] = asyncio.Queue()
        self._wake_cutter = asyncio.Event()
        self._work_ready = asyncio.Event()
        self._changed = asyncio.Condition()
        self._flush_through = -1
        self._closing = False
        self._cutting_done = False
        self._error: SenderError | None = None
        self._tasks: list[asyncio.Task] = []

    async def __aenter__(self) -> "AsyncEventSender":
        self._start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    @property
    def outstanding(self) -> int:
        """Events sent to the sender and not yet acknowledged by ingest."""
        return len(self._buffer) + sum(len(b.request.events) for b in self._unacked.values())

    async def send(
        self,
        event_type: str,
        *,
        customer: str | None = None,
        customer_id: str | None = None,
        properties: Mapping[str, Any] | None = None,
        timestamp: datetime | None = None,
        idempotency_key: str | None = None,
        subscription: str | None = None,
        subscription_id: str | None = None,
    ) -> str:
        """Buffer one event and return its idempotency key; waits while the buffer is full."""
        event = build_event(
            event_type,
            customer=customer,
            customer_id=customer_id,
            properties=properties,
            timestamp=timestamp,
            idempotency_key=idempotency_key,
            subscription=subscription,
            subscription_id=subscription_id,
        )
        await self.send_event(event)
        return event.idempotency_key

    async def send_event(self, event: ingest_pb2.Event) -> None:
        """Buffer a prepared Event (it must carry its idempotency key)."""
        if not event.idempotency_key:
            raise ValueError("event.idempotency_key is required so that resends count once")
        self._raise_if_failed()
        if self._closing:
            raise SenderClosed("the sender is closed")
        self._start()
        async with self._changed:
            await self._changed.wait_for(
                lambda: self._error is not None or self.outstanding < self._options.max_buffered
            )
        self._raise_if_failed()
        if not self._buffer:
            self._buffer_started = time.monotonic()
            self._wake_cutter.set()
        self._buffer.append(_Buffered(self._next_seq, event))
        self._next_seq += 1
        if len(self._buffer) >= self._options.batch_size:
            self._wake_cutter.set()

    async def flush(self) -> None:
        """Wait until every event sent so far is acknowledged by ingest."""
        self._raise_if_failed()
        if not self._tasks:
            return
        target = self._next_seq - 1
        self._flush_through = max(self._flush_through, target)
        self._wake_cutter.set()
        async with self._changed:
            await self._changed.wait_for(lambda: self._error is not None or self._lowest_outstanding() > target)
        self._raise_if_failed()

    async def close(self) -> None:
        """Flush everything, end the stream and release the channel. Raises if events were lost."""
        if not self._closing:
            self._closing = True
            self._wake_cutter.set()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._owns_channel:
                await self._channel.close()
        self._raise_if_failed()

    # ------------------------------------------------------------------ internals

    def _start(self) -> None:
        if not self._tasks and not self._closing:
            self._tasks = [
                asyncio.create_task(self._cut_batches(), name="tally-sender-cut"),
                asyncio.create_task(self._run_streams(), name="tally-sender-stream"),
            ]

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _lowest_outstanding(self) -> float:
        lowest = float("inf")
        if self._buffer:
            lowest = self._buffer[0].seq
        for batch in self._unacked.values():
            lowest = min(lowest, batch.first_seq)
        return lowest

    async def _cut_batches(self) -> None:
        """Move buffered events into batches: when full, when old enough, or on flush/close."""
        options = self._options
        while self._error is None:
            self._wake_cutter.clear()
            if self._buffer:
                due = (
                    len(self._buffer) >= options.batch_size
                    or self._closing
                    or self._buffer[0].seq <= self._flush_through
                    or time.monotonic() - self._buffer_started >= options.flush_interval
                )
                if due:
                    self._emit_batch()
                    continue
            elif self._closing:
                break
            timeout = (
                max(0.0, self._buffer_started + options.flush_interval - time.monotonic())
                if self._buffer
                else None
            )
            try:
                await asyncio.wait_for(self._wake_cutter.wait(), timeout)
            except TimeoutError:
                pass
        self._cutting_done = True
        self._outbox.put_nowait(None)
        self._work_ready.set()

    def _emit_batch(self) -> None:
        taken = self._buffer[: self._options.batch_size]
        del self._buffer[: len(taken)]
        self._buffer_started = time.monotonic()
        request = ingest_pb2.StreamEventsRequest(batch_id=uuid.uuid4().hex, events=[b.event for b in taken])
        batch = _Batch(request, taken[0].seq)
        self._unacked[request.batch_id] = batch
        self._outbox.put_nowait(batch)
        self._work_ready.set()

    async def _run_streams(self) -> None:
        """Keep a stream open while there is work; reopen it after a retryable failure."""
        failures = 0
        backoff = self._options.initial_backoff
        while True:
            # Open a stream only when there is something to send: an idle sender holds no
            # stream, so an ingest restart while idle costs no reconnect attempts.
            while not self._unacked and not self._cutting_done:
                self._work_ready.clear()
                await self._work_ready.wait()
            if self._cutting_done and not self._unacked:
                return
            acked_before = self.stats.batches_acknowledged
            try:
                code, details, write_failed = await self._stream_session()
            except Exception as error:  # noqa: BLE001 - a bug must not leave waiters hanging
                await self._fail(SenderError(f"event sender failed: {error!r}"))
                return
            if self._cutting_done and not self._unacked:
                return
            if self.stats.batches_acknowledged > acked_before:
                failures, backoff = 0, self._options.initial_backoff
            # A write racing the end of a broken stream fails locally as INTERNAL ("Internal
            # error from Core") before the server's status is read: that is a broken stream too.
            broken_write = write_failed and code == grpc.StatusCode.INTERNAL
            if code != grpc.StatusCode.OK and code not in RETRYABLE_CODES and not broken_write:
                await self._fail(SenderError(f"ingest refused the event stream: {code.name}: {details}", code))
                return
            failures += 1
            if failures > self._options.max_reconnects:
                await self._fail(
                    SenderError(f"gave up after {failures - 1} reconnects: {code.name}: {details}", code)
                )
                return
            self.stats.reconnects += 1
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, self._options.max_backoff)

    async def _stream_session(self) -> tuple[grpc.StatusCode, str, bool]:
        """One stream: resend what is unacknowledged, then stream new batches until done."""
        call = self._stub.StreamEvents(metadata=self._options.metadata or None)
        # Every unacknowledged batch is written below, in order; queued copies would repeat them.
        while not self._outbox.empty():
            self._outbox.get_nowait()
        resend = list(self._unacked.values())
        writer = asyncio.create_task(self._write_batches(call, resend))
        reader = asyncio.create_task(self._read_acks(call))
        try:
            done, _ = await asyncio.wait({writer, reader}, return_when=asyncio.FIRST_COMPLETED)
            if writer in done and not writer.cancelled() and writer.exception() is None:
                await asyncio.wait({reader})
        finally:
            for task in (writer, reader):
                if not task.done():
                    task.cancel()
            await asyncio.gather(writer, reader, return_exceptions=True)
        for task in (writer, reader):
            error = None if task.cancelled() else task.exception()
            if error is not None and not isinstance(error, (grpc.aio.AioRpcError, asyncio.InvalidStateError)):
                call.cancel()
                raise error
        if not call.done():
            call.cancel()
        write_failed = not writer.cancelled() and writer.exception() is not None
        return await call.code(), await call.details(), write_failed

    async def _write_batches(self, call, resend: list[_Batch]) -> None:
        for batch in resend:
            await call.write(batch.request)
        while True:
            if self._cutting_done and self._outbox.empty():
                await call.done_writing()
                return
            batch = await self._outbox.get()
            if batch is not None and batch.request.batch_id in self._unacked:
                await call.write(batch.request)

    async def _read_acks(self, call) -> None:
        while True:
            response = await call.read()
            if response is grpc.aio.EOF:
                return
            await self._acknowledge(response)

    async def _acknowledge(self, response: ingest_pb2.StreamEventsResponse) -> None:
        batch = self._unacked.pop(response.batch_id, None)
        if batch is None:
            return  # an acknowledgement of a batch already acknowledged on an earlier stream
        events = batch.request.events
        for result in response.results:
            status = _STATUS_NAMES.get(result.status, "rejected")
            key = result.idempotency_key or (
                events[result.index].idempotency_key if 0 <= result.index < len(events) else ""
            )
            outcome = EventOutcome(
                idempotency_key=key,
                status=status,
                event_id=result.event_id,
                violations=tuple((v.field, v.description) for v in result.violations),
            )
            if status == "accepted":
                self.stats.accepted += 1
            elif status == "duplicate":
                self.stats.duplicate += 1
            else:
                self.stats.rejected += 1
                self.rejections.append(outcome)
            if self._on_result is not None:
                self._on_result(outcome)
        self.stats.batches_acknowledged += 1
        async with self._changed:
            self._changed.notify_all()

    async def _fail(self, error: SenderError) -> None:
        self._error = error
        self._wake_cutter.set()
        async with self._changed:
            self._changed.notify_all()
