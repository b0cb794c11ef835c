"""gRPC entrypoint of the ingest service: decode, call one use case, encode."""

from __future__ import annotations

import collections
import contextlib

from services.ingest import mapping
from services.ingest.service import IngestService
from tally_gen.ingest.v1 import ingest_pb2, ingest_pb2_grpc


class IngestServicer(ingest_pb2_grpc.IngestServiceServicer):
    """Thin servicer over IngestService; DomainErrors become statuses in the shared interceptor."""

    def __init__(self, service: IngestService) -> None:
        self.service = service

    async def SendEvent(self, request, context):
        outcome = await self.service.send_event(mapping.event_from_proto(request.event))
        return mapping.send_event_to_proto(outcome)

    async def SendEventBatch(self, request, context):
        atomic = request.mode != ingest_pb2.BATCH_MODE_PARTIAL
        batch = await self.service.send_batch(mapping.events_from_proto(request.events), atomic=atomic)
        return mapping.batch_to_proto(batch)

    async def StreamEvents(self, request_iterator, context):
        # Backpressure: the service reads a batch ahead while it writes one, so at most two
        # batches per stream are held here; HTTP/2 flow control holds the sender.
        batch_ids: collections.deque[str] = collections.deque()

        async def batches():
            async for request in request_iterator:
                batch_ids.append(request.batch_id)
                yield mapping.events_from_proto(request.events)

        async with contextlib.aclosing(self.service.stream_batches(batches())) as outcomes:
            async for batch in outcomes:
                yield mapping.stream_ack_to_proto(batch_ids.popleft(), batch)

    async def RecordUsage(self, request, context):
        record_id, key, duplicate, subscription_id = await self.service.record_usage(mapping.usage_from_proto(request))
        return mapping.usage_recorded_to_proto(record_id, key, duplicate, subscription_id)

    async def VoidEvent(self, request, context):
        event_id, already_voided, void_time = await self.service.void_event(request.idempotency_key, request.reason)
        return mapping.void_to_proto(event_id, already_voided, void_time)

    async def GetEvent(self, request, context):
        stored = await self.service.get_event(request.idempotency_key)
        return ingest_pb2.GetEventResponse(event=mapping.stored_event_to_proto(stored))

    async def GetIngestStats(self, request, context):
        counts, head, revision = await self.service.ingest_stats()
        return mapping.stats_to_proto(counts, head, revision)

    async def ReadLog(self, request, context):
        cursor = mapping.cursor_from_proto(request.cursor)
        page = await self.service.read_log(cursor, request.max_entries, request.wait_millis)
        return mapping.log_page_to_proto(page)
