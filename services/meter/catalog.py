"""The meter's view of the catalog, over the shared CatalogCache (tally.catalog_cache)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import grpc

from services.meter import mapping
from services.meter.domain.model import MeterDefinition
from services.meter.service import BillingContext
from tally.catalog_cache import CatalogCache, subscription_schedule
from tally.domain.periods import Schedule
from tally import wire
from tally.errors import Unavailable
from tally_gen.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from tally_gen.common.v1 import common_pb2



class CachedCatalog:
    """Implements services.meter.service.CatalogView from the catalog cache."""

    def __init__(self, cache: CatalogCache, channel: grpc.aio.Channel, sync_timeout: float = 10.0) -> None:
        self._cache = cache
        self._stub = catalog_pb2_grpc.CatalogServiceStub(channel)
        self._sync_timeout = sync_timeout
        # Converted meters, reused while the cache holds the same message object.
        self._definitions: dict[str, tuple[catalog_pb2.Meter, MeterDefinition | None]] = {}

    async def sync(self) -> None:
        """Wait until the cache reflects every catalog change committed before now.

        Called before applying a batch, so an event read after its meter was created is
        matched by that meter (no event is unmetered because the cache lagged).
        """
        try:
            reply = await self._stub.GetCatalogRevision(catalog_pb2.GetCatalogRevisionRequest(), timeout=5)
        except grpc.aio.AioRpcError as error:
            raise Unavailable(f"catalog unavailable: {error.code().name}", reason="CATALOG_UNAVAILABLE") from None
        if not await self._cache.wait_for_revision(reply.revision, self._sync_timeout):
            raise Unavailable("catalog cache is behind", reason="CATALOG_CACHE_BEHIND")

    def _definition(self, meter: catalog_pb2.Meter | None) -> MeterDefinition | None:
        if meter is None:
            return None
        cached = self._definitions.get(meter.key)
        if cached is not None and cached[0] is meter:
            return cached[1]
        definition = mapping.meter_from_catalog(meter)
        self._definitions[meter.key] = (meter, definition)
        return definition

    def meters_for_event_type(self, event_type: str) -> list[MeterDefinition]:
        found = (self._definition(m) for m in self._cache.meters_for_event_type(event_type))
        return [d for d in found if d is not None]

    def meter(self, key: str) -> MeterDefinition | None:
        return self._definition(self._cache.meter_by_key(key))

    def customer_known(self, customer_id: str) -> bool:
        return self._cache.customer_by_id(customer_id) is not None

    def customer_time_zone(self, customer_id: str) -> str:
        customer = self._cache.customer_by_id(customer_id)
        return (customer.timezone if customer is not None else "") or "UTC"

    async def resolve_customer_id(self, customer_id: str, external_id: str) -> str | None:
        if customer_id:
            # Usage of an id the catalog does not know is still kept, and can be queried.
            return customer_id
        found = await self._cache.resolve_customer(common_pb2.CustomerRef(external_id=external_id))
        return found.id if found is not None else None

    async def resolve_subscription(self, subscription_id: str, external_id: str) -> tuple[str, str] | None:
        ref = common_pb2.SubscriptionRef(id=subscription_id) if subscription_id else common_pb2.SubscriptionRef(
            external_id=external_id
        )
        found = self._cache.subscription_by_ref(ref)
        if found is None:
            # Created a moment ago: wait for the cache to reflect the catalog of now.
            await self.sync()
            found = self._cache.subscription_by_ref(ref)
        return (found.id, found.customer_id) if found is not None else None

    def billing(self, customer_id: str, instant: datetime, meter_key: str) -> BillingContext:
        for sub in reversed(self._cache.subscriptions_for_customer(customer_id)):
            phase = _phase_at(sub, instant)
            if phase is None:
                continue
            version = self._cache.plan_version(phase.plan_version_id)
            if version is None:
                return BillingContext(phase.plan_key, None, None)
            return BillingContext(phase.plan_key, self._schedule(sub, version, customer_id), _included(version, meter_key))
        return BillingContext(None, None, None)

    def _schedule(self, sub: catalog_pb2.Subscription, version: catalog_pb2.PlanVersion, customer_id: str) -> Schedule | None:
        return subscription_schedule(sub, version, self.customer_time_zone(customer_id))


def _phase_at(sub: catalog_pb2.Subscription, instant: datetime) -> catalog_pb2.SubscriptionPhase | None:
    for phase in sub.phases:
        starts = mapping.to_datetime(phase.start_time)
        ends = mapping.to_datetime(phase.end_time) if phase.HasField("end_time") else None
        if starts <= instant and (ends is None or instant < ends):
            return phase
    if not sub.phases and sub.plan_version_id and mapping.to_datetime(sub.start_time) <= instant:
        return catalog_pb2.SubscriptionPhase(plan_version_id=sub.plan_version_id, plan_key=sub.plan_key)
    return None


def _included(version: catalog_pb2.PlanVersion, meter_key: str) -> Decimal | None:
    for charge in version.charges:
        if charge.WhichOneof("kind") == "usage" and charge.usage.meter_key == meter_key:
            try:
                return wire.parse_decimal_unbounded(charge.usage.included_units.value or "0")
            except wire.DecimalError:
                return None
    return None
