"""gRPC entrypoint of the invoice service: decode, call one use case, encode."""

from tally_gen.invoice.v1 import invoice_pb2_grpc


class InvoiceServicer(invoice_pb2_grpc.InvoiceServiceServicer):
    """Thin servicer; RPCs not yet implemented answer UNIMPLEMENTED."""
