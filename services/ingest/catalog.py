"""Customers and meters as ingest sees them: the shared catalog cache, plus GetMeter on a miss.

The cache (tally.catalog_cache) follows WatchCatalog, so lookups cost no RPC. A customer the
cache does not hold yet costs one GetCustomer (inside the cache); a meter it does not hold yet
costs one GetMeter here, so a meter created a moment ago is not reported unknown.
"""

from __future__ import annotations

import datetime as dt

import grpc

from services.ingest.domain.events import CustomerRef
from tally.catalog_cache import CatalogCache
from tally.channels import connect, connect_service
from tally.errors import Unavailable
from tally_gen.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from tally_gen.common.v1 import common_pb2


class CachedCatalog:
    """The CatalogDirectory of ingest: start() connects and loads the cache, stop() closes."""

    def __init__(self, address: str | None = None) -> None:
        # None: TALLY_CATALOG_ADDR (or the default catalog port).
        self._address = address
        self._channel: grpc.aio.Channel | None = None
        self.cache: CatalogCache | None = None
        self._stub: catalog_pb2_grpc.CatalogServiceStub | None = None

    async def start(self) -> None:
        self._channel = connect(self._address) if self._address else connect_service("catalog")
        self._stub = catalog_pb2_grpc.CatalogServiceStub(self._channel)
        self.cache = CatalogCache(self._channel)
        await self.cache.start()

    async def stop(self) -> None:
        if self.cache is not None:
            await self.cache.stop()
        if self._channel is not None:
            await self._channel.close()

    async def resolve_customers(self, refs: set[CustomerRef]) -> dict[CustomerRef, str | None]:
        resolved: dict[CustomerRef, str | None] = {}
        for ref in refs:
            if ref.id:
                customer = self.cache.customer_by_id(ref.id)
                proto_ref = common_pb2.CustomerRef(id=ref.id)
            elif ref.external_id:
                customer = self.cache.customer_by_external_id(ref.external_id)
                proto_ref = common_pb2.CustomerRef(external_id=ref.external_id)
            else:
                resolved[ref] = None
                continue
            if customer is None:
                customer = await self.cache.resolve_customer(proto_ref)
            resolved[ref] = customer.id if customer is not None else None
        return resolved

    def _declared_price_points(self, customer_id: str, meter_key: str, at: dt.datetime) -> set[str]:
        declared: set[str] = set()
        for sub in self.cache.subscriptions_for_customer(customer_id):
            for phase in sub.phases:
                if phase.start_time.ToDatetime(tzinfo=dt.timezone.utc) > at:
                    continue
                if phase.HasField("end_time") and phase.end_time.ToDatetime(tzinfo=dt.timezone.utc) <= at:
                    continue
                version = self.cache.plan_version(phase.plan_version_id)
                for charge in version.charges if version is not None else ():
                    if charge.WhichOneof("kind") == "usage" and charge.usage.meter_key == meter_key:
                        declared.update(p.key for p in charge.usage.price_points)
        return declared

    async def price_points(self, customer_id: str, meter_key: str, at: dt.datetime, wanted: str) -> set[str]:
        """Price point keys of the usage charges on ``meter_key`` in the plan versions in force at
        ``at`` for the customer's subscriptions. When ``wanted`` is not among them the cache first
        catches up with the catalog's current revision, so a subscription made a moment ago counts."""
        declared = self._declared_price_points(customer_id, meter_key, at)
        if wanted in declared:
            return declared
        try:
            reply = await self._stub.GetCatalogRevision(catalog_pb2.GetCatalogRevisionRequest(), timeout=5)
        except grpc.aio.AioRpcError as error:
            raise Unavailable(f"catalog unavailable: {error.code().name}", reason="CATALOG_UNAVAILABLE") from None
        if not await self.cache.wait_for_revision(reply.revision, timeout=5.0):
            raise Unavailable("catalog cache is behind the catalog", reason="CATALOG_UNAVAILABLE")
        return self._declared_price_points(customer_id, meter_key, at)

    def is_metered(self, event_type: str) -> bool:
        return bool(self.cache.meters_for_event_type(event_type))

    async def meter_exists(self, key: str) -> bool:
        meter = self.cache.meter_by_key(key)
        if meter is not None:
            return not meter.archived
        try:
            reply = await self._stub.GetMeter(catalog_pb2.GetMeterRequest(key=key), timeout=5)
        except grpc.aio.AioRpcError as error:
            if error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                return False
            raise Unavailable(f"catalog unavailable: {error.code().name}", reason="CATALOG_UNAVAILABLE") from None
        return not reply.meter.archived
