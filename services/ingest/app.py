"""Wires the ingest service: asyncpg pool, catalog cache, use cases, servicer."""

from __future__ import annotations

from services.ingest import mapping
from services.ingest.catalog import CachedCatalog
from services.ingest.domain.events import Limits
from services.ingest.repository import IngestStore
from services.ingest.service import IngestService
from services.ingest.servicer import IngestServicer
from tally import metrics
from tally.config import Settings, env_int
from tally.db import create_pool
from tally.server import ServiceApp
from tally_gen.ingest.v1 import ingest_pb2, ingest_pb2_grpc

SERVICE_NAME = ingest_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name


def limits_from_env() -> Limits:
    """TALLY_INGEST_LATE_EVENT_WINDOW_DAYS: how old an event's timestamp may be (default 35)."""
    return Limits(late_event_window_days=env_int("TALLY_INGEST_LATE_EVENT_WINDOW_DAYS", 35))


def create_app(
    database_url: str, settings: Settings, *, catalog_address: str | None = None, limits: Limits | None = None
) -> ServiceApp:
    """The ingest app; ``catalog_address`` overrides TALLY_CATALOG_ADDR (tests)."""
    store = IngestStore()
    catalog = CachedCatalog(catalog_address)
    service = IngestService(
        store, catalog, limits or limits_from_env(), decode_property=mapping.property_from_bytes
    )
    servicer = IngestServicer(service)

    async def open_pool() -> None:
        pool_size = env_int("TALLY_INGEST_DB_POOL_SIZE", settings.db_pool_size)
        # asyncpg's reset on release stays on: it costs a round-trip per use case, but it also
        # retires a connection left unusable by an interrupted operation (a cancelled call,
        # a Postgres restart) instead of lending it out again.
        store.pool = await create_pool(database_url, application_name="tally-ingest", min_size=1, max_size=pool_size)
        metrics.register_pool("ingest", "hot_path", store.pool)

    async def close_pool() -> None:
        if store.pool is not None:
            await store.pool.close()

    return ServiceApp(
        name="ingest",
        database_url=database_url,
        service_names=[SERVICE_NAME],
        register=lambda server: ingest_pb2_grpc.add_IngestServiceServicer_to_server(servicer, server),
        on_start=[open_pool, catalog.start],
        on_stop=[close_pool, catalog.stop],
    )
