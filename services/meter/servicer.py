"""gRPC entrypoint of the meter service: decode, call one use case, encode."""

from tally_gen.meter.v1 import meter_pb2_grpc


class MeterServicer(meter_pb2_grpc.MeterServiceServicer):
    """Thin servicer; RPCs not yet implemented answer UNIMPLEMENTED."""
