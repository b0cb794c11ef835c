"""Wires the meter service: engine, use cases, servicer."""

from __future__ import annotations

from services.meter.servicer import MeterServicer
from tally.config import Settings
from tally.db import create_engine
from tally.server import ServiceApp
from tally_gen.meter.v1 import meter_pb2, meter_pb2_grpc

SERVICE_NAME = meter_pb2.DESCRIPTOR.services_by_name["MeterService"].full_name


def create_app(database_url: str, settings: Settings) -> ServiceApp:
    engine = create_engine(database_url, application_name="tally-meter", pool_size=settings.db_pool_size)
    servicer = MeterServicer()
    return ServiceApp(
        name="meter",
        service_names=[SERVICE_NAME],
        register=lambda server: meter_pb2_grpc.add_MeterServiceServicer_to_server(servicer, server),
        on_stop=[engine.dispose],
    )
