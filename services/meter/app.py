"""Wires the meter service: pools, catalog cache, log applier, backfills, use cases, servicer."""

from __future__ import annotations

from services.meter.catalog import CachedCatalog
from services.meter.consumer import Backfills, LogApplier
from services.meter.service import AlertBook, BackfillService, UsageQueries
from services.meter.servicer import MeterServicer
from tally.catalog_cache import CatalogCache
from tally.channels import connect_service
from tally.config import Settings, env_int
from tally.db import create_pool
from tally.metrics import register_pool
from tally.server import ServiceApp
from tally_gen.meter.v1 import meter_pb2, meter_pb2_grpc

SERVICE_NAME = meter_pb2.DESCRIPTOR.services_by_name["MeterService"].full_name


class _LazyPool:
    """Holds the asyncpg pool created in on_start (pools need the running event loop)."""

    def __init__(self) -> None:
        self.pool = None

    def acquire(self):
        return self.pool.acquire()


def create_app(database_url: str, settings: Settings) -> ServiceApp:
    """The meter service. TALLY_METER_APPLY=0 serves queries only (no applier in this replica)."""
    pool = _LazyPool()
    catalog_channel = connect_service("catalog")
    ingest_channel = connect_service("ingest")
    cache = CatalogCache(catalog_channel)
    catalog = CachedCatalog(cache, catalog_channel)
    alerts = AlertBook(pool, catalog)
    applier = LogApplier(
        database_url,
        ingest_channel,
        catalog,
        alerts,
        batch_size=env_int("TALLY_METER_BATCH_SIZE", 5000),
        wait_millis=env_int("TALLY_METER_WAIT_MILLIS", 500),
        stall_seconds=env_int("TALLY_METER_STALL_SECONDS", 15),
    )
    backfills = Backfills(database_url, pool, ingest_channel, catalog)
    servicer = MeterServicer(
        UsageQueries(pool, catalog, applier.committed_position),
        alerts,
        BackfillService(pool, catalog, backfills),
        applier_health=applier.stall,
        cache_quarantine=cache.quarantine,
    )
    apply_enabled = env_int("TALLY_METER_APPLY", 1) != 0

    async def start() -> None:
        pool.pool = await create_pool(database_url, application_name="tally-meter", min_size=2, max_size=settings.db_pool_size)
        register_pool("meter", "hot_path", pool.pool)
        await cache.start()
        if apply_enabled:
            await applier.start()
            await backfills.resume_all()

    async def stop() -> None:
        await applier.stop()
        await backfills.stop()
        await cache.stop()
        await catalog_channel.close()
        await ingest_channel.close()
        if pool.pool is not None:
            await pool.pool.close()

    return ServiceApp(
        name="meter",
        database_url=database_url,
        service_names=[SERVICE_NAME],
        register=lambda server: meter_pb2_grpc.add_MeterServiceServicer_to_server(servicer, server),
        on_start=[start],
        on_stop=[stop],
    )
