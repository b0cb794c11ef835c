"""gRPC entrypoint of the ingest service: decode, call one use case, encode."""

from tally_gen.ingest.v1 import ingest_pb2_grpc


class IngestServicer(ingest_pb2_grpc.IngestServiceServicer):
    """Thin servicer; RPCs not yet implemented answer UNIMPLEMENTED."""
