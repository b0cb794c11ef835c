"""gRPC entrypoint of the catalog service: decode, call one use case, encode."""

from tally_gen.catalog.v1 import catalog_pb2_grpc


class CatalogServicer(catalog_pb2_grpc.CatalogServiceServicer):
    """Thin servicer; RPCs not yet implemented answer UNIMPLEMENTED."""
