"""EventSender: the AsyncEventSender for synchronous code, on its own event-loop thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Mapping
from datetime import datetime
from typing import Any, TypeVar

from tally.client.sender import AsyncEventSender, EventOutcome, SenderStats
from tally_gen.ingest.v1 import ingest_pb2

T = TypeVar("T")


class EventSender:
    """Blocking facade: ``send`` returns once the event is buffered (waits while full).

    ``on_result`` callbacks run on the sender's own thread. Use it as a context manager, or
    call ``close()``; leaving the block flushes::

        with EventSender("localhost:50052") as sender:
            sender.send("api_request", customer="acct_1", properties={"tokens": 120})
    """

    def __init__(self, target: str | None = None, **options: Any) -> None:
        """Takes the keyword arguments of AsyncEventSender."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tally-event-sender", daemon=True)
        self._thread.start()
        self._closed = False

        async def create() -> AsyncEventSender:
            # grpc.aio channels belong to the loop that creates them: build it on ours.
            return AsyncEventSender(target, **options)

        self._sender = self._run(create())

    def __enter__(self) -> "EventSender":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def stats(self) -> SenderStats:
        return self._sender.stats

    @property
    def rejections(self) -> list[EventOutcome]:
        return list(self._sender.rejections)

    def send(
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
        """Buffer one event and return its idempotency key."""
        return self._run(
            self._sender.send(
                event_type,
                customer=customer,
                customer_id=customer_id,
                properties=properties,
                timestamp=timestamp,
                idempotency_key=idempotency_key,
                subscription=subscription,
                subscription_id=subscription_id,
            )
        )

    def send_event(self, event: ingest_pb2.Event) -> None:
        self._run(self._sender.send_event(event))

    def flush(self, timeout: float | None = None) -> None:
        """Block until every event sent so far is acknowledged."""
        self._run(self._sender.flush(), timeout)

    def close(self, timeout: float | None = None) -> None:
        """Flush, close the stream and stop the thread. Raises SenderError if events were lost."""
        if self._closed:
            return
        self._closed = True
        try:
            self._run(self._sender.close(), timeout)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def _run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)


