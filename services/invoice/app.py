"""Wires the invoice service: engine, use cases, servicer."""

from __future__ import annotations

from services.invoice.servicer import InvoiceServicer
from tally.config import Settings
from tally.db import create_engine
from tally.server import ServiceApp
from tally_gen.invoice.v1 import invoice_pb2, invoice_pb2_grpc

SERVICE_NAME = invoice_pb2.DESCRIPTOR.services_by_name["InvoiceService"].full_name


def create_app(database_url: str, settings: Settings) -> ServiceApp:
    engine = create_engine(database_url, application_name="tally-invoice", pool_size=settings.db_pool_size)
    servicer = InvoiceServicer()
    return ServiceApp(
        name="invoice",
        service_names=[SERVICE_NAME],
        register=lambda server: invoice_pb2_grpc.add_InvoiceServiceServicer_to_server(servicer, server),
        on_stop=[engine.dispose],
    )
