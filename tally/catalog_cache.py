"""A client-side copy of the catalog for hot paths (ingest, meter): no RPC per lookup.

It loads everything with WatchCatalog(after_revision=0), then follows the same stream, so a
change made in the catalog reaches the cache within about a second. When the catalog is
unavailable it keeps serving what it has and reconnects with backoff from its last revision.
Lookups return the generated protobuf messages (tally_gen.catalog.v1.catalog_pb2).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import timezone

import grpc
import structlog

from tally.domain.periods import Anchor, Interval, Schedule
from tally.errors import Unavailable
from tally.quarantine import Quarantine
from tally_gen.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from tally_gen.common.v1 import common_pb2

log = structlog.get_logger()

Customer = catalog_pb2.Customer
Meter = catalog_pb2.Meter
PlanVersion = catalog_pb2.PlanVersion
Subscription = catalog_pb2.Subscription
Product = catalog_pb2.Product
Plan = catalog_pb2.Plan

BILLING_INTERVALS = {
    catalog_pb2.BILLING_INTERVAL_DAY: Interval.DAY,
    catalog_pb2.BILLING_INTERVAL_WEEK: Interval.WEEK,
    catalog_pb2.BILLING_INTERVAL_MONTH: Interval.MONTH,
    catalog_pb2.BILLING_INTERVAL_QUARTER: Interval.QUARTER,
    catalog_pb2.BILLING_INTERVAL_YEAR: Interval.YEAR,
}


def subscription_schedule(sub: Subscription, version: PlanVersion, time_zone: str) -> Schedule | None:
    """The billing schedule of a subscription on a plan version (None for an unknown interval),
    as the invoice service computes it, for the services that only hold a catalog copy."""
    interval = BILLING_INTERVALS.get(version.interval)
    if interval is None:
        return None
    return Schedule(
        start=sub.start_time.ToDatetime(tzinfo=timezone.utc),
        interval=interval,
        count=version.interval_count or 1,
        anchor=Anchor.ANNIVERSARY if sub.anchor == catalog_pb2.BILLING_ANCHOR_ANNIVERSARY else Anchor.CALENDAR,
        timezone=time_zone or "UTC",
        end=sub.cancel_at.ToDatetime(tzinfo=timezone.utc) if sub.HasField("cancel_at") else None,
    )


class CatalogCache:
    """Meters, customers, plan versions and subscriptions, kept current by WatchCatalog."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        start_timeout: float = 30.0,
        max_backoff: float = 5.0,
    ) -> None:
        self._stub = catalog_pb2_grpc.CatalogServiceStub(channel)
        self._start_timeout = start_timeout
        self._max_backoff = max_backoff
        self._revision = 0
        self._changed = asyncio.Condition()
        self._task: asyncio.Task | None = None
        self._customers: dict[str, Customer] = {}
        self._customer_ids_by_external: dict[str, str] = {}
        self._meters: dict[str, Meter] = {}  # by key
        self._meter_keys_by_event_type: dict[str, set[str]] = {}
        self._plan_versions: dict[str, PlanVersion] = {}
        self._plans: dict[str, Plan] = {}  # by key
        self._products: dict[str, Product] = {}  # by key
        self._subscriptions: dict[str, Subscription] = {}
        self._subscription_ids_by_customer: dict[str, set[str]] = {}
        self._subscription_ids_by_external: dict[str, str] = {}
        # Changes this cache could not apply, and changes the catalog could not encode: both
        # are skipped (the revision still advances), counted, logged and shown in status.
        self.quarantine = Quarantine()

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Load the whole catalog, then follow changes in the background.

        Raises tally.errors.Unavailable when the catalog cannot be loaded within start_timeout.
        """
        deadline = time.monotonic() + self._start_timeout
        target = await self._initial_revision(deadline)
        self._task = asyncio.create_task(self._follow(), name="catalog-cache-follow")
        if not await self.wait_for_revision(target, max(0.0, deadline - time.monotonic())):
            await self.stop()
            raise Unavailable(
                f"catalog cache could not load revision {target} within {self._start_timeout}s",
                reason="CATALOG_UNAVAILABLE",
            )
        log.info(
            "catalog_cache_loaded",
            revision=self._revision,
            meters=len(self._meters),
            customers=len(self._customers),
            subscriptions=len(self._subscriptions),
        )

    async def _initial_revision(self, deadline: float) -> int:
        backoff = 0.1
        while True:
            try:
                remaining = deadline - time.monotonic()
                reply = await self._stub.GetCatalogRevision(
                    catalog_pb2.GetCatalogRevisionRequest(), timeout=max(0.1, min(5.0, remaining))
                )
                return reply.revision
            except grpc.aio.AioRpcError as error:
                if time.monotonic() + backoff >= deadline:
                    raise Unavailable(
                        f"catalog unavailable: {error.code().name} {error.details()}",
                        reason="CATALOG_UNAVAILABLE",
                    ) from None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _follow(self) -> None:
        backoff = 0.1
        while True:
            call = self._stub.WatchCatalog(catalog_pb2.WatchCatalogRequest(after_revision=self._revision))
            try:
                async for change in call:
                    await self._apply(change)
                    backoff = 0.1
                log.warning("catalog_watch_ended", revision=self._revision)
            except asyncio.CancelledError:
                call.cancel()
                raise
            except grpc.aio.AioRpcError as error:
                log.warning(
                    "catalog_watch_failed",
                    code=error.code().name,
                    revision=self._revision,
                    retry_in_seconds=backoff,
                )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff)

    # ------------------------------------------------------------ applying changes

    async def _apply(self, change: catalog_pb2.WatchCatalogResponse) -> None:
        """Apply one change; a change that cannot be applied is skipped and quarantined, so
        the cache never stops following the feed (and never holds up its users) for one row."""
        try:
            if change.HasField("quarantined"):
                q = change.quarantined
                self.quarantine.add("catalog_cache", q.kind or "unknown", q.id, f"the catalog could not encode it: {q.reason}")
            else:
                self._apply_entity(change)
        except Exception as error:  # noqa: BLE001 - skip this change, keep following the feed
            kind = change.WhichOneof("entity") or "unknown"
            entity = getattr(change, kind, None) if kind != "unknown" else None
            self.quarantine.add("catalog_cache", kind, str(getattr(entity, "id", "") or getattr(entity, "key", "")), error)
        async with self._changed:
            self._revision = max(self._revision, change.revision)
            self._changed.notify_all()

    def _apply_entity(self, change: catalog_pb2.WatchCatalogResponse) -> None:
        kind = change.WhichOneof("entity")
        if kind == "meter":
            self._put_meter(change.meter)
        elif kind == "customer":
            self._put_customer(change.customer)
        elif kind == "plan_version":
            self._plan_versions[change.plan_version.id] = change.plan_version
        elif kind == "subscription":
            self._put_subscription(change.subscription)
        elif kind == "product":
            self._products[change.product.key] = change.product
        elif kind == "plan":
            self._plans[change.plan.key] = change.plan
            latest = change.plan.latest_version
            if latest.id:
                self._plan_versions[latest.id] = latest

    def _put_meter(self, meter: Meter) -> None:
        old = self._meters.get(meter.key)
        if old is not None:
            self._meter_keys_by_event_type.get(old.event_type, set()).discard(meter.key)
        self._meters[meter.key] = meter
        self._meter_keys_by_event_type.setdefault(meter.event_type, set()).add(meter.key)

    def _put_customer(self, customer: Customer) -> None:
        old = self._customers.get(customer.id)
        if old is not None and old.external_id and old.external_id != customer.external_id:
            self._customer_ids_by_external.pop(old.external_id, None)
        self._customers[customer.id] = customer
        if customer.external_id:
            self._customer_ids_by_external[customer.external_id] = customer.id

    def _put_subscription(self, sub: Subscription) -> None:
        old = self._subscriptions.get(sub.id)
        if old is not None and old.external_id and old.external_id != sub.external_id:
            self._subscription_ids_by_external.pop(old.external_id, None)
        self._subscriptions[sub.id] = sub
        if sub.external_id:
            self._subscription_ids_by_external[sub.external_id] = sub.id
        self._subscription_ids_by_customer.setdefault(sub.customer_id, set()).add(sub.id)

    # ------------------------------------------------------------ lookups

    @property
    def revision(self) -> int:
        """The latest catalog revision this cache reflects."""
        return self._revision

    def customer_by_id(self, customer_id: str) -> Customer | None:
        return self._customers.get(customer_id)

    def customer_by_external_id(self, external_id: str) -> Customer | None:
        customer_id = self._customer_ids_by_external.get(external_id)
        return self._customers.get(customer_id) if customer_id else None

    async def resolve_customer(self, ref: common_pb2.CustomerRef) -> Customer | None:
        """The customer ``ref`` names: from the cache, else one GetCustomer call (then cached)."""
        which = ref.WhichOneof("ref")
        if which == "id":
            found = self.customer_by_id(ref.id)
        elif which == "external_id":
            found = self.customer_by_external_id(ref.external_id)
        else:
            return None
        if found is not None:
            return found
        try:
            reply = await self._stub.GetCustomer(catalog_pb2.GetCustomerRequest(customer=ref), timeout=5)
        except grpc.aio.AioRpcError as error:
            if error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                return None
            raise Unavailable(
                f"catalog unavailable: {error.code().name}", reason="CATALOG_UNAVAILABLE"
            ) from None
        # A change the watch delivers later replaces this copy; the revision is not advanced.
        if reply.customer.id not in self._customers:
            self._put_customer(reply.customer)
        return self._customers[reply.customer.id]

    def meters_for_event_type(self, event_type: str) -> list[Meter]:
        """Non-archived meters reading ``event_type``, ordered by key."""
        keys = sorted(self._meter_keys_by_event_type.get(event_type, ()))
        return [self._meters[k] for k in keys if not self._meters[k].archived]

    def meter_by_key(self, key: str) -> Meter | None:
        return self._meters.get(key)

    def all_meters(self) -> list[Meter]:
        """Every meter, archived ones included, ordered by key."""
        return [self._meters[k] for k in sorted(self._meters)]

    def plan_version(self, plan_version_id: str) -> PlanVersion | None:
        return self._plan_versions.get(plan_version_id)

    def plan(self, plan_key: str) -> Plan | None:
        return self._plans.get(plan_key)

    def product(self, product_key: str) -> Product | None:
        return self._products.get(product_key)

    def subscription(self, subscription_id: str) -> Subscription | None:
        return self._subscriptions.get(subscription_id)

    def subscription_by_external_id(self, external_id: str) -> Subscription | None:
        """The subscription whose caller's reference is ``external_id`` (None for "" or unknown)."""
        subscription_id = self._subscription_ids_by_external.get(external_id) if external_id else None
        return self._subscriptions.get(subscription_id) if subscription_id else None

    def subscription_by_ref(self, ref: common_pb2.SubscriptionRef) -> Subscription | None:
        """The subscription ``ref`` names (by id or external_id), from the cache only."""
        which = ref.WhichOneof("ref")
        if which == "id":
            return self.subscription(ref.id)
        if which == "external_id":
            return self.subscription_by_external_id(ref.external_id)
        return None

    def subscriptions_for_customer(self, customer_id: str) -> list[Subscription]:
        """Every subscription of the customer (any status), oldest start first."""
        subs = [self._subscriptions[i] for i in self._subscription_ids_by_customer.get(customer_id, ())]
        return sorted(subs, key=lambda s: (s.start_time.seconds, s.start_time.nanos, s.id))

    async def wait_for_revision(self, revision: int, timeout: float) -> bool:
        """True once the cache reflects ``revision`` (or later); False after ``timeout`` seconds."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: self._revision >= revision), timeout)
            except TimeoutError:
                return False
        return True
