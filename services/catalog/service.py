"""Catalog use cases: one transaction each; writers also append to the change feed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.catalog import repository as repo
from services.catalog.domain.customers import (
    Customer,
    CustomerSpec,
    apply_customer_update,
    validate_customer,
)
from services.catalog.domain.meters import LOCKED_FIELDS, Meter, MeterSpec, apply_meter_update, validate_meter
from services.catalog.domain.plans import (
    Plan,
    PlanSpec,
    PlanVersion,
    Product,
    ProductSpec,
    looks_like_key,
    validate_plan,
    validate_product,
)
from services.catalog.notifier import ChangeNotifier
from services.catalog.shared import Page, Transactions, find_customer
from services.catalog.shared import after_cursor as _after
from services.catalog.shared import now as _now
from services.catalog.shared import page_of as _page
from services.catalog.subscriptions import repository as sub_repo
from services.catalog.subscriptions.service import SubscriptionService
from tally import wire
from tally.errors import AlreadyExists, FailedPrecondition, InvalidInput, NotFound, Violation, Violations
from tally.pagination import page_size

log = structlog.get_logger()

# Watchers re-read the change feed at least this often, even without a notification.
WATCH_POLL_SECONDS = 0.5
WATCH_BATCH = 1000


@dataclass(frozen=True)
class ApplyResult:
    kind: str
    key: str
    action: str  # UNCHANGED, CREATED, UPDATED, VERSION_PUBLISHED
    version: int = 0


@dataclass(frozen=True)
class CatalogChange:
    revision: int
    kind: str  # meter, customer, plan_version, subscription, product, plan
    # None only if the entity cannot be loaded; the revision is still reported.
    entity: Any | None


class _DryRun(Exception):
    pass


class CatalogService:
    """Meters, products, plans, customers, ApplyCatalog and the change feed; subscriptions are
    ``self.subscriptions`` (services/catalog/subscriptions/)."""

    def __init__(self, engine: AsyncEngine, notifier: ChangeNotifier | None = None) -> None:
        self._engine = engine
        self._notifier = notifier
        self._tx = Transactions(engine)
        self.subscriptions = SubscriptionService(self._tx)

    def _write(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A write transaction holding the change-feed lock from its first statement."""
        return self._tx.write()

    def _read(self) -> AbstractAsyncContextManager[AsyncConnection]:
        return self._tx.read()

    # ------------------------------------------------------------ meters

    async def create_meter(self, spec: MeterSpec) -> Meter:
        validate_meter(spec).raise_if_any("invalid meter")
        async with self._write() as conn:
            meter = await repo.insert_meter(conn, spec)
            if meter is None:
                raise AlreadyExists(
                    f"a meter with key {spec.key!r} exists",
                    reason="METER_KEY_TAKEN",
                    metadata={"key": spec.key},
                )
            await repo.record_change(conn, "meter", meter.id)
        log.info("meter_created", meter_key=spec.key, event_type=spec.event_type)
        return meter

    async def get_meter(self, *, id: str | None = None, key: str | None = None) -> Meter:
        async with self._read() as conn:
            meter = await repo.get_meter(conn, id=id, key=key)
        if meter is None:
            raise NotFound(f"no meter {id or key!r}", reason="METER_NOT_FOUND")
        return meter

    async def list_meters(self, *, size: int, token: str, event_type: str, include_archived: bool) -> Page:
        limit = page_size(size)
        async with self._read() as conn:
            items = await repo.list_meters(
                conn,
                after_key=_after(token, "meters"),
                limit=limit,
                event_type=event_type,
                include_archived=include_archived,
            )
        return _page(items, limit, "meters", lambda m: m.key)

    async def update_meter(self, update: MeterSpec, mask: tuple[str, ...]) -> Meter:
        async with self._write() as conn:
            meter, changed = await self._update_meter(conn, update, mask)
        if changed:
            log.info("meter_updated", meter_key=update.key, fields=list(changed))
        return meter

    async def _update_meter(
        self, conn: AsyncConnection, update: MeterSpec, mask: tuple[str, ...]
    ) -> tuple[Meter, tuple[str, ...]]:
        current = await repo.get_meter(conn, key=update.key, for_update=True)
        if current is None:
            raise NotFound(f"no meter with key {update.key!r}", reason="METER_NOT_FOUND")
        change = apply_meter_update(current.spec, update, mask)
        validate_meter(change.spec).raise_if_any("invalid meter")
        locked_changes = [f for f in change.changed_fields if f in LOCKED_FIELDS]
        if current.locked and locked_changes:
            raise FailedPrecondition(
                f"meter {update.key!r} is used by a subscription: {', '.join(locked_changes)} cannot change; "
                "archive it and create a new meter",
                violations=[
                    Violation(f"meter.{f}", "locked: a subscription's plan uses this meter", "METER_LOCKED")
                    for f in locked_changes
                ],
                reason="METER_LOCKED",
                metadata={"key": update.key},
            )
        if not change.changed_fields:
            return current, ()
        meter = await repo.update_meter(conn, update.key, change.spec)
        await repo.record_change(conn, "meter", meter.id)
        return meter, change.changed_fields

    async def archive_meter(self, key: str) -> Meter:
        async with self._write() as conn:
            meter = await repo.get_meter(conn, key=key, for_update=True)
            if meter is None:
                raise NotFound(f"no meter with key {key!r}", reason="METER_NOT_FOUND")
            if not meter.archived:
                meter = await repo.set_meter_flags(conn, key, archived=True)
                await repo.record_change(conn, "meter", meter.id)
        log.info("meter_archived", meter_key=key)
        return meter

    # ------------------------------------------------------------ products

    async def create_product(self, spec: ProductSpec) -> Product:
        validate_product(spec).raise_if_any("invalid product")
        async with self._write() as conn:
            product = await self._create_product(conn, spec)
        return product

    async def _create_product(self, conn: AsyncConnection, spec: ProductSpec) -> Product:
        product = await repo.insert_product(conn, spec)
        if product is None:
            raise AlreadyExists(
                f"a product with key {spec.key!r} exists",
                reason="PRODUCT_KEY_TAKEN",
                metadata={"key": spec.key},
            )
        await repo.record_change(conn, "product", product.id)
        return product

    async def get_product(self, *, id: str | None = None, key: str | None = None) -> Product:
        async with self._read() as conn:
            product = await repo.get_product(conn, id=id, key=key)
        if product is None:
            raise NotFound(f"no product {id or key!r}", reason="PRODUCT_NOT_FOUND")
        return product

    async def list_products(self, *, size: int, token: str, include_archived: bool) -> Page:
        limit = page_size(size)
        async with self._read() as conn:
            items = await repo.list_products(
                conn, after_key=_after(token, "products"), limit=limit, include_archived=include_archived
            )
        return _page(items, limit, "products", lambda p: p.spec.key)

    async def update_product(self, update: ProductSpec, mask: tuple[str, ...]) -> Product:
        allowed = ("name", "description")
        v = Violations("update_mask")
        for i, name in enumerate(mask):
            if name not in allowed:
                v.add(
                    f"[{i}]",
                    f"{name!r} cannot be updated; mutable fields: name, description",
                    "IMMUTABLE_FIELD",
                )
        v.raise_if_any("invalid update mask")
        async with self._write() as conn:
            current = await repo.get_product(conn, key=update.key, for_update=True)
            if current is None:
                raise NotFound(f"no product with key {update.key!r}", reason="PRODUCT_NOT_FOUND")
            spec = replace(current.spec, **{f: getattr(update, f) for f in (mask or allowed)})
            validate_product(spec).raise_if_any("invalid product")
            if spec == current.spec:
                return current
            product = await repo.update_product(conn, update.key, spec=spec)
            await repo.record_change(conn, "product", product.id)
        return product

    async def archive_product(self, key: str) -> Product:
        async with self._write() as conn:
            product = await repo.get_product(conn, key=key, for_update=True)
            if product is None:
                raise NotFound(f"no product with key {key!r}", reason="PRODUCT_NOT_FOUND")
            if not product.archived:
                product = await repo.update_product(conn, key, archived=True)
                await repo.record_change(conn, "product", product.id)
        return product

    # ------------------------------------------------------------ plans

    async def _check_plan(
        self,
        conn: AsyncConnection,
        spec: PlanSpec,
        prefix: str = "plan",
        pending_meters: dict[str, Meter] | None = None,
        pending_products: set[str] | None = None,
    ) -> Violations:
        # Only keys of the catalog's syntax are looked up (bounded, NUL-free); validate_plan
        # reports the others, and a plan with too many charges before any lookup.
        charges = spec.content.charges[: wire.MAX_CHARGES + 1]
        meters = await repo.meters_by_keys(
            conn, [c.usage.meter_key for c in charges if c.usage is not None and looks_like_key(c.usage.meter_key)]
        )
        meters.update(pending_meters or {})
        product_key = spec.content.product_key
        product_exists = looks_like_key(product_key) and (
            product_key in (pending_products or set())
            or await repo.get_product(conn, key=product_key) is not None
        )
        return validate_plan(spec, meters, product_exists, prefix=prefix)

    async def create_plan(self, spec: PlanSpec) -> Plan:
        async with self._write() as conn:
            (await self._check_plan(conn, spec)).raise_if_any("invalid plan")
            version = await self._create_plan(conn, spec)
        log.info("plan_created", plan_key=spec.key, plan_version_id=version.id)
        return await self.get_plan(key=spec.key)

    async def _create_plan(self, conn: AsyncConnection, spec: PlanSpec) -> PlanVersion:
        plan_id = await repo.insert_plan(conn, spec.key, spec.content.name)
        if plan_id is None:
            raise AlreadyExists(
                f"a plan with key {spec.key!r} exists; publish a new version instead",
                reason="PLAN_KEY_TAKEN",
                metadata={"key": spec.key},
            )
        version = await repo.publish_version(conn, plan_id, spec.key, spec.content)
        await repo.record_change(conn, "plan_version", version.id)
        await repo.record_change(conn, "plan", plan_id)
        return version

    async def publish_plan_version(self, spec: PlanSpec) -> PlanVersion:
        async with self._write() as conn:
            (await self._check_plan(conn, spec)).raise_if_any("invalid plan")
            version = await self._publish(conn, spec)
        log.info("plan_version_published", plan_key=spec.key, version=version.version)
        return version

    async def _publish(self, conn: AsyncConnection, spec: PlanSpec) -> PlanVersion:
        row = await repo.get_plan_row(conn, key=spec.key, for_update=True)
        if row is None:
            raise NotFound(f"no plan with key {spec.key!r}", reason="PLAN_NOT_FOUND")
        if row.archived:
            raise FailedPrecondition(f"plan {spec.key!r} is archived", reason="PLAN_ARCHIVED")
        version = await repo.publish_version(conn, row.id, spec.key, spec.content)
        await repo.record_change(conn, "plan_version", version.id)
        await repo.record_change(conn, "plan", row.id)
        return version

    async def get_plan(self, *, id: str | None = None, key: str | None = None) -> Plan:
        async with self._read() as conn:
            condition = (
                repo.plan_ids_condition([id]) if id is not None else repo.plan_key_condition(key or "")
            )
            plans = await repo.plans_with_latest(conn, condition)
        if not plans:
            raise NotFound(f"no plan {id or key!r}", reason="PLAN_NOT_FOUND")
        return plans[0]

    async def list_plans(self, *, size: int, token: str, include_archived: bool) -> Page:
        limit = page_size(size)
        async with self._read() as conn:
            items = await repo.plans_with_latest(
                conn, repo.plan_list_condition(_after(token, "plans"), include_archived), limit=limit
            )
        return _page(items, limit, "plans", lambda p: p.key)

    async def get_plan_version(
        self, *, id: str | None = None, plan_key: str = "", version: int = 0
    ) -> PlanVersion:
        async with self._read() as conn:
            found = await repo.get_version(conn, id=id, plan_key=plan_key, version=version)
        if found is None:
            what = id or f"{plan_key} v{version or 'latest'}"
            raise NotFound(f"no plan version {what!r}", reason="PLAN_VERSION_NOT_FOUND")
        return found

    async def list_plan_versions(self, plan_key: str, *, size: int, token: str) -> Page:
        limit = page_size(size)
        async with self._read() as conn:
            if await repo.get_plan_row(conn, key=plan_key) is None:
                raise NotFound(f"no plan with key {plan_key!r}", reason="PLAN_NOT_FOUND")
            items = await repo.list_versions(
                conn, plan_key, after_version=_after(token, "plan_versions") or 0, limit=limit
            )
        return _page(items, limit, "plan_versions", lambda v: v.version)

    async def archive_plan(self, key: str) -> Plan:
        async with self._write() as conn:
            row = await repo.get_plan_row(conn, key=key, for_update=True)
            if row is None:
                raise NotFound(f"no plan with key {key!r}", reason="PLAN_NOT_FOUND")
            if not row.archived:
                await repo.set_plan_archived(conn, row.id)
                await repo.record_change(conn, "plan", row.id)
        return await self.get_plan(key=key)

    # ------------------------------------------------------------ customers

    async def create_customer(self, spec: CustomerSpec) -> Customer:
        validate_customer(spec).raise_if_any("invalid customer")
        async with self._write() as conn:
            customer = await repo.insert_customer(conn, spec)
            if customer is None:
                raise AlreadyExists(
                    f"a customer with external_id {spec.external_id!r} exists",
                    reason="EXTERNAL_ID_TAKEN",
                    metadata={"external_id": spec.external_id},
                )
            await repo.record_change(conn, "customer", customer.id)
        log.info("customer_created", customer_id=customer.id)
        return customer

    async def get_customer(self, *, id: str | None = None, external_id: str | None = None) -> Customer:
        async with self._read() as conn:
            customer = await self._find_customer(conn, id=id, external_id=external_id)
        return customer

    async def _find_customer(
        self, conn: AsyncConnection, *, id: str | None, external_id: str | None, for_update: bool = False
    ) -> Customer:
        return await find_customer(conn, id=id, external_id=external_id, for_update=for_update)

    async def list_customers(self, *, size: int, token: str, include_archived: bool, query: str) -> Page:
        limit = page_size(size)
        async with self._read() as conn:
            items = await repo.list_customers(
                conn,
                after_id=_after(token, "customers"),
                limit=limit,
                include_archived=include_archived,
                query_text=query,
            )
        return _page(items, limit, "customers", lambda c: c.id)

    async def update_customer(self, id: str, update: CustomerSpec, mask: tuple[str, ...]) -> Customer:
        async with self._write() as conn:
            current = await self._find_customer(conn, id=id, external_id=None, for_update=True)
            spec = apply_customer_update(current.spec, update, mask)
            validate_customer(spec).raise_if_any("invalid customer")
            if spec == current.spec:
                return current
            if (
                spec.external_id
                and spec.external_id != current.spec.external_id
                and await repo.external_id_taken(conn, spec.external_id, other_than=id)
            ):
                raise AlreadyExists(
                    f"a customer with external_id {spec.external_id!r} exists",
                    reason="EXTERNAL_ID_TAKEN",
                    metadata={"external_id": spec.external_id},
                )
            customer = await repo.update_customer(conn, id, spec=spec)
            await repo.record_change(conn, "customer", id)
        return customer

    async def archive_customer(self, id: str) -> Customer:
        async with self._write() as conn:
            customer = await self._find_customer(conn, id=id, external_id=None, for_update=True)
            if not customer.archived:
                customer = await repo.update_customer(conn, id, archived=True)
                await repo.record_change(conn, "customer", id)
        return customer

    # ------------------------------------------------------------ declarative catalog

    async def apply_catalog(
        self, products: list[ProductSpec], meters: list[MeterSpec], plans: list[PlanSpec], *, dry_run: bool
    ) -> tuple[list[ApplyResult], int]:
        """Create or update everything in one transaction; a second apply reports all UNCHANGED."""
        v = Violations()
        counted = [
            wire.check_count(v, name, len(items), max_items=wire.MAX_CATALOG_ENTRIES)
            for name, items in (("products", products), ("meters", meters), ("plans", plans))
        ]
        if not all(counted):
            v.raise_if_any("catalog too large")
        for i, spec in enumerate(products):
            v.extend(validate_product(spec, prefix=f"products[{i}]"))
        for i, spec in enumerate(meters):
            v.extend(validate_meter(spec, prefix=f"meters[{i}]"))
        for name, keys in (
            ("products", [p.key for p in products]),
            ("meters", [m.key for m in meters]),
            ("plans", [p.key for p in plans]),
        ):
            for i, key in enumerate(keys):
                if key and key in keys[:i]:
                    v.add(f"{name}[{i}].key", f"{key!r} appears twice in the file", "DUPLICATE")
        results: list[ApplyResult] = []
        try:
            async with self._write() as conn:
                stand_ins = {
                    m.key: Meter(
                        id="", spec=m, archived=False, locked=False, created_at=_now(), updated_at=_now()
                    )
                    for m in meters
                }
                for i, spec in enumerate(plans):
                    v.extend(
                        await self._check_plan(
                            conn,
                            spec,
                            prefix=f"plans[{i}]",
                            pending_meters=stand_ins,
                            pending_products={p.key for p in products},
                        )
                    )
                v.raise_if_any("invalid catalog")
                for spec in products:
                    results.append(await self._apply_product(conn, spec))
                for spec in meters:
                    results.append(await self._apply_meter(conn, spec))
                for spec in plans:
                    results.append(await self._apply_plan(conn, spec))
                revision = await repo.current_revision(conn)
                if dry_run:
                    raise _DryRun()
        except _DryRun:
            pass
        changed = sum(r.action != "UNCHANGED" for r in results)
        log.info("catalog_applied", dry_run=dry_run, changed=changed, unchanged=len(results) - changed)
        return results, revision

    async def _apply_product(self, conn: AsyncConnection, spec: ProductSpec) -> ApplyResult:
        current = await repo.get_product(conn, key=spec.key, for_update=True)
        if current is None:
            await self._create_product(conn, spec)
            return ApplyResult("product", spec.key, "CREATED")
        if current.spec == spec and not current.archived:
            return ApplyResult("product", spec.key, "UNCHANGED")
        product = await repo.update_product(conn, spec.key, spec=spec, archived=False)
        await repo.record_change(conn, "product", product.id)
        return ApplyResult("product", spec.key, "UPDATED")

    async def _apply_meter(self, conn: AsyncConnection, spec: MeterSpec) -> ApplyResult:
        current = await repo.get_meter(conn, key=spec.key)
        if current is None:
            meter = await repo.insert_meter(conn, spec)
            assert meter is not None  # the key was free under the catalog write lock
            await repo.record_change(conn, "meter", meter.id)
            return ApplyResult("meter", spec.key, "CREATED")
        _, changed = await self._update_meter(conn, spec, ())
        return ApplyResult("meter", spec.key, "UPDATED" if changed else "UNCHANGED")

    async def _apply_plan(self, conn: AsyncConnection, spec: PlanSpec) -> ApplyResult:
        row = await repo.get_plan_row(conn, key=spec.key)
        if row is None:
            version = await self._create_plan(conn, spec)
            return ApplyResult("plan", spec.key, "CREATED", version.version)
        latest = await repo.get_version(conn, plan_key=spec.key)
        assert latest is not None
        if latest.content == spec.content:
            return ApplyResult("plan", spec.key, "UNCHANGED", latest.version)
        version = await self._publish(conn, spec)
        return ApplyResult("plan", spec.key, "VERSION_PUBLISHED", version.version)

    # ------------------------------------------------------------ change feed

    async def current_revision(self) -> int:
        async with self._read() as conn:
            return await repo.current_revision(conn)

    async def watch(self, after_revision: int) -> AsyncIterator[CatalogChange]:
        """Every change after ``after_revision`` (each entity in its current state), then live ones."""
        if after_revision < 0:
            raise InvalidInput(
                "negative revision", violations=[Violation("after_revision", "must be >= 0", "NEGATIVE")]
            )
        last = after_revision
        while True:
            ticket = self._notifier.ticket() if self._notifier else None
            async with self._read() as conn:
                rows = await repo.changes_after(conn, last, WATCH_BATCH)
                # Entities are sent in their current state, so within a batch only the last
                # change of each entity matters; the batch's last revision is always kept.
                latest = {(kind, entity_id): revision for revision, kind, entity_id in rows}
                entities = await self._load(conn, list(latest)) if latest else {}
            for (kind, entity_id), revision in sorted(latest.items(), key=lambda item: item[1]):
                yield CatalogChange(revision, kind, entities.get((kind, entity_id)))
            if rows:
                last = rows[-1][0]
            if self._notifier is not None and self._notifier.draining:
                return
            if len(rows) == WATCH_BATCH:
                continue
            if ticket is None:
                await asyncio.sleep(WATCH_POLL_SECONDS)
            else:
                try:
                    await asyncio.wait_for(ticket.wait(), WATCH_POLL_SECONDS)
                except TimeoutError:
                    pass

    async def _load(self, conn: AsyncConnection, refs: list[tuple[str, str]]) -> dict[tuple[str, str], Any]:
        ids: dict[str, list[str]] = {}
        for kind, entity_id in refs:
            ids.setdefault(kind, []).append(entity_id)
        loaded: dict[tuple[str, str], Any] = {}
        loaders = {
            "meter": repo.meters_by_ids,
            "product": repo.products_by_ids,
            "customer": repo.customers_by_ids,
            "plan_version": repo.versions_by_ids,
            "subscription": sub_repo.subscriptions_by_ids,
        }
        for kind, kind_ids in ids.items():
            if kind == "plan":
                items = await repo.plans_with_latest(conn, repo.plan_ids_condition(kind_ids))
            else:
                items = await loaders[kind](conn, kind_ids)
            for item in items:
                loaded[(kind, item.id)] = item
        return loaded
