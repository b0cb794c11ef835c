"""Wires the ingest service: engine, use cases, servicer."""

from __future__ import annotations

from services.ingest.servicer import IngestServicer
from tally.config import Settings
from tally.db import create_engine
from tally.server import ServiceApp
from tally_gen.ingest.v1 import ingest_pb2, ingest_pb2_grpc

SERVICE_NAME = ingest_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name


def create_app(database_url: str, settings: Settings) -> ServiceApp:
    engine = create_engine(database_url, application_name="tally-ingest", pool_size=settings.db_pool_size)
    servicer = IngestServicer()
    return ServiceApp(
        name="ingest",
        service_names=[SERVICE_NAME],
        register=lambda server: ingest_pb2_grpc.add_IngestServiceServicer_to_server(servicer, server),
        on_stop=[engine.dispose],
    )
