"""Subscription use cases: one transaction each; every write also appends to the change feed."""

from __future__ import annotations

from datetime import datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from services.catalog import repository as repo
from services.catalog import shared
from services.catalog.domain.customers import Customer
from services.catalog.domain.plans import PlanVersion
from services.catalog.shared import Page, Transactions, after_cursor, find_customer, page_of
from services.catalog.subscriptions import repository as sub_repo
from services.catalog.subscriptions.domain import (
    ANCHORS,
    Phase,
    PriceOverride,
    Subscription,
    SubscriptionRef,
    check_reference_text,
    validate_price_overrides,
)
from tally import wire
from tally.errors import AlreadyExists, FailedPrecondition, NotFound, Violations
from tally.pagination import page_size

log = structlog.get_logger()


class SubscriptionService:
    """Create, read, list, cancel and re-plan subscriptions (a customer on plan versions over time)."""

    def __init__(self, transactions: Transactions) -> None:
        self._tx = transactions

    async def _version_for(self, conn: AsyncConnection, plan_key: str, version: int) -> PlanVersion:
        v = Violations()
        if not plan_key:
            v.add("plan_key", "is required", "REQUIRED")
        else:
            wire.check_text(v, "plan_key", plan_key, max_chars=wire.MAX_KEY_CHARS)
        if version < 0:
            v.add("plan_version", "must be 0 (latest) or a published version number", "NEGATIVE")
        v.raise_if_any("invalid plan reference")
        row = await repo.get_plan_row(conn, key=plan_key)
        if row is None:
            raise NotFound(f"no plan with key {plan_key!r}", reason="PLAN_NOT_FOUND")
        if row.archived:
            raise FailedPrecondition(f"plan {plan_key!r} is archived", reason="PLAN_ARCHIVED")
        found = await repo.get_version(conn, plan_key=plan_key, version=version)
        if found is None:
            raise NotFound(f"plan {plan_key!r} has no version {version}", reason="PLAN_VERSION_NOT_FOUND")
        return found

    async def _lock_meters(self, conn: AsyncConnection, plan_version_id: str) -> None:
        for meter_id in await repo.lock_meters_of_version(conn, plan_version_id):
            await repo.record_change(conn, "meter", meter_id)

    async def create(
        self,
        *,
        customer_id: str,
        customer_external_id: str,
        plan_key: str,
        plan_version: int,
        start_time: datetime | None,
        anchor: str,
        metadata: tuple[tuple[str, str], ...],
        external_id: str = "",
        price_overrides: tuple[PriceOverride, ...] = (),
    ) -> Subscription:
        anchor = anchor or "CALENDAR"
        v = Violations()
        if anchor not in ANCHORS:
            v.add("anchor", f"unknown value {anchor}: expected CALENDAR or ANNIVERSARY", "UNKNOWN_ENUM")
        check_reference_text(v, "external_id", external_id)
        wire.check_instant(v, "start_time", start_time)
        wire.check_string_map(v, "metadata", metadata)
        v.raise_if_any("invalid subscription")
        now = shared.now()
        async with self._tx.write() as conn:
            customer = await find_customer(conn, id=customer_id, external_id=customer_external_id or None)
            if customer.archived:
                raise FailedPrecondition(f"customer {customer.id} is archived", reason="CUSTOMER_ARCHIVED")
            version = await self._version_for(conn, plan_key, plan_version)
            self._check_currency(customer, version)
            validate_price_overrides(price_overrides, version).raise_if_any("invalid price overrides")
            start = start_time or now
            sub = Subscription(
                id=repo.new_id("sub"),
                customer_id=customer.id,
                start_time=start,
                anchor=anchor,
                cancel_at_period_end=False,
                cancel_at=None,
                canceled_time=None,
                phases=(Phase(version.id, version.plan_key, version.version, start, None, price_overrides),),
                metadata=metadata,
                created_at=now,
                external_id=external_id,
            )
            if not await sub_repo.insert_subscription(conn, sub):
                raise AlreadyExists(
                    f"a subscription with external_id {external_id!r} exists",
                    reason="SUBSCRIPTION_EXTERNAL_ID_TAKEN",
                    metadata={"external_id": external_id},
                )
            await self._lock_meters(conn, version.id)
            await repo.record_change(conn, "subscription", sub.id)
        log.info(
            "subscription_created",
            subscription_id=sub.id,
            customer_id=customer.id,
            plan_version_id=version.id,
            external_id=external_id or None,
        )
        return sub

    @staticmethod
    def _check_currency(customer: Customer, version: PlanVersion) -> None:
        if customer.spec.currency and customer.spec.currency != version.content.currency:
            raise FailedPrecondition(
                f"customer bills in {customer.spec.currency}, "
                f"plan {version.plan_key} in {version.content.currency}",
                reason="CURRENCY_MISMATCH",
            )

    async def _find(
        self, conn: AsyncConnection, ref: SubscriptionRef, *, for_update: bool = False
    ) -> Subscription:
        ref.validate()
        id = ref.id or await sub_repo.subscription_id_by_external_id(conn, ref.external_id)
        found = await sub_repo.subscriptions_by_ids(conn, [id], for_update=for_update) if id else []
        if not found:
            raise NotFound(
                f"no subscription {ref}",
                reason="SUBSCRIPTION_NOT_FOUND",
                metadata={"external_id": ref.external_id} if ref.external_id else {"id": ref.id},
            )
        return found[0]

    async def get(self, ref: SubscriptionRef | str) -> Subscription:
        if isinstance(ref, str):
            ref = SubscriptionRef(id=ref)
        async with self._tx.read() as conn:
            return await self._find(conn, ref)

    async def list(
        self,
        *,
        size: int,
        token: str,
        customer_id: str,
        plan_key: str,
        status: str,
        customer_external_id: str = "",
    ) -> Page:
        """A page of subscriptions; a filter naming no customer or plan is NOT_FOUND, not an empty page."""
        limit = page_size(size)
        async with self._tx.read() as conn:
            if customer_id or customer_external_id:
                v = Violations()
                check_reference_text(
                    v,
                    "customer_id" if customer_id else "customer.external_id",
                    customer_id or customer_external_id,
                )
                v.raise_if_any("invalid customer filter")
                customer = await find_customer(
                    conn, id=customer_id or None, external_id=customer_external_id or None
                )
                customer_id = customer.id
            if plan_key and await repo.get_plan_row(conn, key=plan_key) is None:
                raise NotFound(f"no plan with key {plan_key!r}", reason="PLAN_NOT_FOUND")
            ids = await sub_repo.list_subscription_ids(
                conn,
                after_id=after_cursor(token, "subscriptions"),
                limit=limit,
                customer_id=customer_id,
                plan_key=plan_key,
                status=status,
                now=shared.now(),
            )
            items = await sub_repo.subscriptions_by_ids(conn, ids)
        return page_of(items, limit, "subscriptions", lambda s: s.id)

    async def cancel(
        self, ref: SubscriptionRef | str, *, at_period_end: bool, at: datetime | None
    ) -> Subscription:
        if isinstance(ref, str):
            ref = SubscriptionRef(id=ref)
        v = Violations()
        wire.check_instant(v, "at", at)
        v.raise_if_any("invalid cancellation")
        now = shared.now()
        async with self._tx.write() as conn:
            before = await self._find(conn, ref, for_update=True)
            after = before.cancel(now=now, at_period_end=at_period_end, at=at)
            await sub_repo.save_subscription(conn, before, after)
            await repo.record_change(conn, "subscription", before.id)
        log.info(
            "subscription_canceled",
            subscription_id=before.id,
            at_period_end=at_period_end,
            cancel_at=at.isoformat() if at else None,
        )
        return after

    async def change_plan(
        self,
        ref: SubscriptionRef | str,
        *,
        plan_key: str,
        plan_version: int,
        effective_time: datetime | None,
        price_overrides: tuple[PriceOverride, ...] = (),
    ) -> Subscription:
        if isinstance(ref, str):
            ref = SubscriptionRef(id=ref)
        v = Violations()
        wire.check_instant(v, "effective_time", effective_time)
        v.raise_if_any("invalid plan change")
        now = shared.now()
        async with self._tx.write() as conn:
            before = await self._find(conn, ref, for_update=True)
            version = await self._version_for(conn, plan_key, plan_version)
            customer = await find_customer(conn, id=before.customer_id, external_id=None)
            self._check_currency(customer, version)
            validate_price_overrides(price_overrides, version).raise_if_any("invalid price overrides")
            phase = Phase(
                version.id, version.plan_key, version.version, effective_time or now, None, price_overrides
            )
            after = before.change_plan(phase, now=now)
            await sub_repo.save_subscription(conn, before, after)
            await self._lock_meters(conn, version.id)
            await repo.record_change(conn, "subscription", before.id)
        log.info(
            "subscription_plan_changed",
            subscription_id=before.id,
            plan_version_id=version.id,
            effective_time=phase.start_time.isoformat(),
        )
        return after

    # ------------------------------------------------------------ declarative catalog
