"""SQL of subscriptions and their phases (tables catalog.subscriptions, subscription_phases)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.catalog import tables as t
from services.catalog.repository import decimal_from_json, decimal_json, price_from_json, price_json
from services.catalog.subscriptions.domain import Phase, PriceOverride, Subscription

_OVERRIDE_DECIMALS = ("included_units", "minimum_amount", "maximum_amount", "amount")


def _override_json(o: PriceOverride) -> dict:
    return {
        "charge_key": o.charge_key,
        "price": price_json(o.price),
        **{name: decimal_json(getattr(o, name)) for name in _OVERRIDE_DECIMALS},
    }


def _override(data: dict) -> PriceOverride:
    return PriceOverride(
        charge_key=data["charge_key"],
        price=price_from_json(data["price"]),
        **{name: decimal_from_json(data[name]) for name in _OVERRIDE_DECIMALS},
    )


async def insert_subscription(conn: AsyncConnection, sub: Subscription) -> bool:
    """Insert ``sub`` and its phases; False (nothing written) when its external_id is taken."""
    inserted = await conn.scalar(
        insert(t.subscriptions)
        .values(
            id=sub.id,
            customer_id=sub.customer_id,
            start_time=sub.start_time,
            anchor=sub.anchor,
            cancel_at_period_end=sub.cancel_at_period_end,
            cancel_at=sub.cancel_at,
            canceled_time=sub.canceled_time,
            metadata=dict(sub.metadata),
            created_at=sub.created_at,
            updated_at=func.now(),
            external_id=sub.external_id or None,
        )
        .on_conflict_do_nothing(index_elements=["external_id"])
        .returning(t.subscriptions.c.id)
    )
    if inserted is None:
        return False
    await _insert_phases(conn, sub.id, sub.phases, start_seq=0)
    return True


async def _insert_phases(conn: AsyncConnection, sub_id: str, phases: Sequence[Phase], start_seq: int) -> None:
    if phases:
        await conn.execute(
            t.subscription_phases.insert(),
            [
                {
                    "subscription_id": sub_id,
                    "seq": start_seq + i,
                    "plan_version_id": p.plan_version_id,
                    "start_time": p.start_time,
                    "end_time": p.end_time,
                    "price_overrides": [_override_json(o) for o in p.price_overrides],
                }
                for i, p in enumerate(phases)
            ],
        )


async def save_subscription(conn: AsyncConnection, before: Subscription, after: Subscription) -> None:
    """Persist cancellation fields and phase changes (phases are only closed and appended)."""
    await conn.execute(
        update(t.subscriptions)
        .where(t.subscriptions.c.id == after.id)
        .values(
            cancel_at_period_end=after.cancel_at_period_end,
            cancel_at=after.cancel_at,
            canceled_time=after.canceled_time,
            updated_at=func.now(),
        )
    )
    for seq, (old, new) in enumerate(zip(before.phases, after.phases)):
        if old != new:
            await conn.execute(
                update(t.subscription_phases)
                .where(
                    t.subscription_phases.c.subscription_id == after.id, t.subscription_phases.c.seq == seq
                )
                .values(end_time=new.end_time)
            )
    await _insert_phases(conn, after.id, after.phases[len(before.phases) :], start_seq=len(before.phases))


async def subscriptions_by_ids(
    conn: AsyncConnection, ids: Sequence[str], *, for_update: bool = False
) -> list[Subscription]:
    if not ids:
        return []
    query = select(t.subscriptions).where(t.subscriptions.c.id.in_(ids))
    if for_update:
        query = query.with_for_update()
    rows = list(await conn.execute(query))
    phase_rows = await conn.execute(
        select(t.subscription_phases, t.plan_versions.c.version, t.plans.c.key.label("plan_key"))
        .join(t.plan_versions, t.plan_versions.c.id == t.subscription_phases.c.plan_version_id)
        .join(t.plans, t.plans.c.id == t.plan_versions.c.plan_id)
        .where(t.subscription_phases.c.subscription_id.in_([r.id for r in rows]))
        .order_by(t.subscription_phases.c.subscription_id, t.subscription_phases.c.seq)
    )
    phases: dict[str, list[Phase]] = {}
    for p in phase_rows:
        phases.setdefault(p.subscription_id, []).append(
            Phase(
                plan_version_id=p.plan_version_id,
                plan_key=p.plan_key,
                plan_version=p.version,
                start_time=p.start_time,
                end_time=p.end_time,
                price_overrides=tuple(_override(o) for o in p.price_overrides),
            )
        )
    by_id = {
        r.id: Subscription(
            id=r.id,
            customer_id=r.customer_id,
            start_time=r.start_time,
            anchor=r.anchor,
            cancel_at_period_end=r.cancel_at_period_end,
            cancel_at=r.cancel_at,
            canceled_time=r.canceled_time,
            phases=tuple(phases.get(r.id, ())),
            metadata=tuple(sorted(r.metadata.items())),
            created_at=r.created_at,
            external_id=r.external_id or "",
        )
        for r in rows
    }
    return [by_id[i] for i in ids if i in by_id]


async def subscription_id_by_external_id(conn: AsyncConnection, external_id: str) -> str | None:
    return await conn.scalar(select(t.subscriptions.c.id).where(t.subscriptions.c.external_id == external_id))


async def list_subscription_ids(
    conn: AsyncConnection,
    *,
    after_id: str | None,
    limit: int,
    customer_id: str,
    plan_key: str,
    status: str,
    now: datetime,
) -> list[str]:
    s = t.subscriptions.c
    query = select(s.id).order_by(s.id).limit(limit)
    if after_id is not None:
        query = query.where(s.id > after_id)
    if customer_id:
        query = query.where(s.customer_id == customer_id)
    if plan_key:
        # The plan in force now: the subscription's open (last) phase.
        current = (
            select(t.subscription_phases.c.subscription_id)
            .join(t.plan_versions, t.plan_versions.c.id == t.subscription_phases.c.plan_version_id)
            .join(t.plans, t.plans.c.id == t.plan_versions.c.plan_id)
            .where(t.plans.c.key == plan_key, t.subscription_phases.c.end_time.is_(None))
        )
        query = query.where(s.id.in_(current))
    if status == "ENDED":
        query = query.where(s.cancel_at <= now)
    elif status == "CANCELED":
        query = query.where(
            or_(s.cancel_at > now, and_(s.cancel_at.is_(None), s.cancel_at_period_end.is_(True)))
        )
    elif status == "ACTIVE":
        query = query.where(s.cancel_at.is_(None), s.cancel_at_period_end.is_(False))
    return [r.id for r in await conn.execute(query)]
