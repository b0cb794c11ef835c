"""Wires the catalog service: engine, change notifier, use cases, servicer."""

from __future__ import annotations

from services.catalog.notifier import ChangeNotifier
from services.catalog.service import CatalogService
from services.catalog.servicer import CatalogServicer
from tally.config import Settings
from tally.db import create_engine
from tally.metrics import register_pool
from tally.server import ServiceApp
from tally_gen.catalog.v1 import catalog_pb2, catalog_pb2_grpc

SERVICE_NAME = catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"].full_name


def create_app(database_url: str, settings: Settings) -> ServiceApp:
    engine = create_engine(database_url, application_name="tally-catalog", pool_size=settings.db_pool_size)
    register_pool("catalog", "orm", engine)
    notifier = ChangeNotifier(database_url)
    servicer = CatalogServicer(CatalogService(engine, notifier))
    return ServiceApp(
        name="catalog",
        database_url=database_url,
        service_names=[SERVICE_NAME],
        register=lambda server: catalog_pb2_grpc.add_CatalogServiceServicer_to_server(servicer, server),
        on_start=[notifier.start],
        on_drain=[notifier.drain],
        on_stop=[notifier.stop, engine.dispose],
    )
