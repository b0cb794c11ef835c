"""A small in-test IngestService peer for the sender's failure cases (a fake peer, real gRPC)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import grpc

from tally.server import ServiceApp
from tally_gen.common.v1 import common_pb2
from tally_gen.ingest.v1 import ingest_pb2, ingest_pb2_grpc


@dataclass
class FakeIngest(ingest_pb2_grpc.IngestServiceServicer):
    """Stores events by key like ingest does; can break streams, hold acks or refuse streams."""

    stored: dict[str, ingest_pb2.Event] = field(default_factory=dict)
    batch_sizes: list[int] = field(default_factory=list)
    keys_received: list[str] = field(default_factory=list)
    # Batch numbers (1-based, over all streams) committed and then answered with UNAVAILABLE.
    break_after_commit: set[int] = field(default_factory=set)
    # While set and clear, batches wait before being committed.
    gate: asyncio.Event | None = None
    refuse_with: grpc.StatusCode | None = None
    streams_opened: int = 0
    # Invocation metadata of each stream opened.
    stream_metadata: list[dict[str, str]] = field(default_factory=list)

    async def StreamEvents(self, request_iterator, context):
        self.streams_opened += 1
        self.stream_metadata.append({k: v for k, v in context.invocation_metadata()})
        if self.refuse_with is not None:
            await context.abort(self.refuse_with, "streams are refused")
        async for request in request_iterator:
            if self.gate is not None:
                await self.gate.wait()
            self.batch_sizes.append(len(request.events))
            response = ingest_pb2.StreamEventsResponse(batch_id=request.batch_id)
            for index, event in enumerate(request.events):
                self.keys_received.append(event.idempotency_key)
                result = ingest_pb2.EventResult(index=index, idempotency_key=event.idempotency_key)
                if not event.event_type:
                    result.status = ingest_pb2.EVENT_STATUS_REJECTED
                    result.violations.append(
                        common_pb2.FieldViolation(field=f"events[{index}].event_type", description="is required")
                    )
                    response.rejected_count += 1
                elif event.idempotency_key in self.stored:
                    result.status = ingest_pb2.EVENT_STATUS_DUPLICATE
                    response.duplicate_count += 1
                else:
                    self.stored[event.idempotency_key] = event
                    result.status = ingest_pb2.EVENT_STATUS_ACCEPTED
                    result.event_id = f"evt_{len(self.stored)}"
                    response.accepted_count += 1
                response.results.append(result)
            if len(self.batch_sizes) in self.break_after_commit:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "connection lost after commit")
            yield response

    def app(self) -> ServiceApp:
        return ServiceApp(
            name="ingest",
            service_names=["tally.ingest.v1.IngestService"],
            register=lambda server: ingest_pb2_grpc.add_IngestServiceServicer_to_server(self, server),
        )
