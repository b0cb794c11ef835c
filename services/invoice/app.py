"""Wires the invoice service: engine, catalog and meter clients, use cases, servicer, scheduler."""

from __future__ import annotations

import asyncio

from services.invoice.clients import CatalogClient, MeterClient
from services.invoice.service import InvoiceService, InvoiceSettings, run_scheduler
from services.invoice.servicer import InvoiceServicer
from tally.channels import connect_service
from tally.config import Settings
from tally.db import create_engine
from tally.metrics import register_pool
from tally.server import ServiceApp
from tally_gen.invoice.v1 import invoice_pb2, invoice_pb2_grpc

SERVICE_NAME = invoice_pb2.DESCRIPTOR.services_by_name["InvoiceService"].full_name


def create_app(database_url: str, settings: Settings, invoice_settings: InvoiceSettings | None = None) -> ServiceApp:
    """The invoice service. The catalog and meter are reached at TALLY_CATALOG_ADDR and TALLY_METER_ADDR."""
    invoice_settings = invoice_settings or InvoiceSettings.from_env()
    engine = create_engine(database_url, application_name="tally-invoice", pool_size=settings.db_pool_size)
    register_pool("invoice", "orm", engine)
    catalog_channel = connect_service("catalog")
    meter_channel = connect_service("meter")
    service = InvoiceService(engine, CatalogClient(catalog_channel), MeterClient(meter_channel), invoice_settings)
    servicer = InvoiceServicer(service)
    stop = asyncio.Event()
    tasks: list[asyncio.Task] = []

    async def start_scheduler() -> None:
        if invoice_settings.close_interval_seconds > 0:
            tasks.append(asyncio.create_task(run_scheduler(service, invoice_settings.close_interval_seconds, stop)))

    async def stop_scheduler() -> None:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def close_channels() -> None:
        await catalog_channel.close()
        await meter_channel.close()

    app = ServiceApp(
        name="invoice",
        database_url=database_url,
        service_names=[SERVICE_NAME],
        register=lambda server: invoice_pb2_grpc.add_InvoiceServiceServicer_to_server(servicer, server),
        on_start=[start_scheduler],
        on_stop=[engine.dispose, close_channels, stop_scheduler],
    )
    app.service = service  # type: ignore[attr-defined] - for tests and benchmarks
    return app
