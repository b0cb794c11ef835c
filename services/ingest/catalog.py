"""Customers and meters as ingest sees them: the shared catalog cache, plus GetMeter on a miss.

The cache (tally.catalog_cache) follows WatchCatalog, so lookups cost no RPC. A customer the
cache does not hold yet costs one GetCustomer (inside the cache); a meter it does not hold yet
costs one GetMeter here, so a meter created a moment ago is not reported unknown.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
import datetime as dt

import grpc

from services.ingest.domain.attribution import Coverage, NamedSubscription, SubscriptionRef
from services.ingest.domain.events import CustomerRef, ValueRule
from services.ingest.domain.usage import MeterInfo
from tally.catalog_cache import CatalogCache, subscription_schedule
from tally.channels import connect, connect_service
from tally.domain.periods import period_containing
from tally.errors import Unavailable
from tally_gen.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from tally_gen.common.v1 import common_pb2


_NOT_NUMERIC = frozenset(
    {catalog_pb2.AGGREGATION_UNSPECIFIED, catalog_pb2.AGGREGATION_COUNT, catalog_pb2.AGGREGATION_COUNT_UNIQUE}
)


def _micros(ts) -> int:
    return ts.seconds * 1_000_000 + ts.nanos // 1000


class CachedCatalog:
    """The CatalogDirectory of ingest: start() connects and loads the cache, stop() closes."""

    def __init__(self, address: str | None = None) -> None:
        # None: TALLY_CATALOG_ADDR (or the default catalog port).
        self._address = address
        self._channel: grpc.aio.Channel | None = None
        self.cache: CatalogCache | None = None
        self._stub: catalog_pb2_grpc.CatalogServiceStub | None = None
        # Meters charged per plan version (published versions never change).
        self._charged: dict[str, frozenset[str]] = {}
        # Coverage per customer, valid for one catalog revision.
        self._coverage: dict[str, tuple[Coverage, ...]] = {}
        self._coverage_revision = -1

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

    def value_rules(self, event_type: str) -> tuple[ValueRule, ...]:
        """The properties that the meters of ``event_type`` read as numbers (not COUNT,
        which reads none, nor COUNT_UNIQUE, which reads any value as text)."""
        by_path: dict[str, list[catalog_pb2.Meter]] = {}
        for meter in self.cache.meters_for_event_type(event_type):
            if meter.value_property and meter.aggregation not in _NOT_NUMERIC:
                by_path.setdefault(meter.value_property, []).append(meter)
        return tuple(
            ValueRule(path, tuple(m.key for m in meters), all(m.allow_negative for m in meters))
            for path, meters in sorted(by_path.items())
        )

    @property
    def revision(self) -> int:
        return self.cache.revision if self.cache is not None else 0

    def meter_keys_for_event_type(self, event_type: str) -> frozenset[str]:
        return frozenset(meter.key for meter in self.cache.meters_for_event_type(event_type))

    async def resolve_subscriptions(self, refs: set[SubscriptionRef]) -> dict[SubscriptionRef, NamedSubscription | None]:
        """From the cache; a subscription it does not hold yet costs one GetSubscription (per batch)."""
        resolved: dict[SubscriptionRef, NamedSubscription | None] = {}
        for ref in refs:
            if ref.id:
                sub = self.cache.subscription(ref.id)
                proto_ref = common_pb2.SubscriptionRef(id=ref.id)
            else:
                sub = self.cache.subscription_by_external_id(ref.external_id)
                proto_ref = common_pb2.SubscriptionRef(external_id=ref.external_id)
            if sub is None:
                sub = await self._fetch_subscription(catalog_pb2.GetSubscriptionRequest(subscription=proto_ref))
            resolved[ref] = NamedSubscription(sub.id, sub.customer_id) if sub is not None else None
        return resolved

    async def _fetch_subscription(self, request) -> catalog_pb2.Subscription | None:
        try:
            reply = await self._stub.GetSubscription(request, timeout=5)
        except grpc.aio.AioRpcError as error:
            if error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                return None
            raise Unavailable(f"catalog unavailable: {error.code().name}", reason="CATALOG_UNAVAILABLE") from None
        return reply.subscription

    def subscription_coverage(self, customer_id: str) -> Sequence[Coverage]:
        """The customer's subscriptions as (id, start, end, meters charged) stretches, one per phase.

        Computed once per customer and catalog revision: the hot path asks once per batch.
        """
        revision = self.cache.revision
        if revision != self._coverage_revision:
            self._coverage.clear()
            self._coverage_revision = revision
        found = self._coverage.get(customer_id)
        if found is None:
            found = self._coverage[customer_id] = tuple(
                stretch for sub in self.cache.subscriptions_for_customer(customer_id) for stretch in self._stretches(sub)
            )
        return found

    def _charged_meters(self, version_id: str) -> frozenset[str]:
        charged = self._charged.get(version_id)
        if charged is None:
            version = self.cache.plan_version(version_id)
            if version is None:
                return frozenset()
            charged = self._charged[version_id] = frozenset(
                c.usage.meter_key for c in version.charges if c.WhichOneof("kind") == "usage"
            )
        return charged

    def _stretches(self, sub: catalog_pb2.Subscription) -> list[Coverage]:
        ends = self._end_micros(sub)
        phases = list(sub.phases) or [
            catalog_pb2.SubscriptionPhase(plan_version_id=sub.plan_version_id, start_time=sub.start_time)
        ]
        stretches = []
        for phase in phases:
            start = _micros(phase.start_time)
            end = _micros(phase.end_time) if phase.HasField("end_time") else None
            if ends is not None:
                end = ends if end is None else min(end, ends)
            if end is not None and end <= start:
                continue
            stretches.append(Coverage(sub.id, start, end, self._charged_meters(phase.plan_version_id)))
        return stretches

    def _end_micros(self, sub: catalog_pb2.Subscription) -> int | None:
        """When the subscription stops charging: its cancel instant, or the end of the period in
        force when it was canceled at period end (as the invoice's schedule computes it)."""
        if sub.HasField("cancel_at"):
            return _micros(sub.cancel_at)
        if not sub.cancel_at_period_end:
            return None
        first = sub.phases[0].plan_version_id if sub.phases else sub.plan_version_id
        version = self.cache.plan_version(first)
        customer = self.cache.customer_by_id(sub.customer_id)
        schedule = None if version is None else subscription_schedule(sub, version, customer.timezone if customer else "")
        if schedule is None:
            return None
        start = schedule.start
        canceled: datetime = sub.canceled_time.ToDatetime(tzinfo=timezone.utc) if sub.HasField("canceled_time") else start
        in_force = period_containing(schedule, canceled)
        return None if in_force is None else _micros_of(in_force.end)

    async def meter(self, key: str) -> MeterInfo | None:
        meter = self.cache.meter_by_key(key)
        if meter is None:
            try:
                meter = (await self._stub.GetMeter(catalog_pb2.GetMeterRequest(key=key), timeout=5)).meter
            except grpc.aio.AioRpcError as error:
                if error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                    return None
                raise Unavailable(f"catalog unavailable: {error.code().name}", reason="CATALOG_UNAVAILABLE") from None
        return MeterInfo(tuple(meter.group_by), meter.archived)


def _micros_of(instant: datetime) -> int:
    delta = instant - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
