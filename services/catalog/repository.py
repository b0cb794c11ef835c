"""SQL of the catalog schema: rows <-> domain objects, and the change feed."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.catalog import tables as t
from services.catalog.domain.customers import Customer, CustomerSpec
from services.catalog.domain.meters import Meter, MeterFilter, MeterSpec
from services.catalog.domain.plans import (
    Charge,
    DimensionPrice,
    FixedFee,
    Plan,
    PlanContent,
    PlanVersion,
    Price,
    PricePoint,
    Product,
    ProductSpec,
    Tier,
    UsageCharge,
)

# Serialises catalog writers so that revisions become visible in commit order (a watcher
# reading "revision > n" can never see n+2 before n+1 commits). Catalog writes are rare.
CHANGE_LOCK_KEY = 0x7A11C47A
NOTIFY_CHANNEL = "tally_catalog_changes"


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


# ---------------------------------------------------------------- change feed


async def lock_changes(conn: AsyncConnection) -> None:
    """Take the catalog write lock for the rest of the transaction (first thing a writer does)."""
    await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CHANGE_LOCK_KEY})


async def record_change(conn: AsyncConnection, kind: str, entity_id: str) -> int:
    revision = await conn.scalar(
        t.changes.insert()
        .values(kind=kind, entity_id=entity_id, changed_at=func.now())
        .returning(t.changes.c.revision)
    )
    await conn.execute(
        text("SELECT pg_notify(:channel, :payload)"), {"channel": NOTIFY_CHANNEL, "payload": str(revision)}
    )
    return int(revision)


async def current_revision(conn: AsyncConnection) -> int:
    return int(await conn.scalar(select(func.coalesce(func.max(t.changes.c.revision), 0))))


async def changes_after(conn: AsyncConnection, revision: int, limit: int) -> list[tuple[int, str, str]]:
    """Up to ``limit`` (revision, kind, entity_id) rows after ``revision``, in revision order."""
    rows = await conn.execute(
        select(t.changes.c.revision, t.changes.c.kind, t.changes.c.entity_id)
        .where(t.changes.c.revision > revision)
        .order_by(t.changes.c.revision)
        .limit(limit)
    )
    return [(int(r.revision), r.kind, r.entity_id) for r in rows]


# ---------------------------------------------------------------- meters


def _meter(row: Any) -> Meter:
    return Meter(
        id=row.id,
        spec=MeterSpec(
            key=row.key,
            name=row.name,
            unit=row.unit,
            event_type=row.event_type,
            aggregation=row.aggregation,
            value_property=row.value_property,
            filters=tuple(MeterFilter(f["property"], f["operator"], tuple(f["values"])) for f in row.filters),
            group_by=tuple(row.group_by),
            description=row.description,
            allow_negative=row.allow_negative,
        ),
        archived=row.archived,
        locked=row.locked,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _meter_values(spec: MeterSpec) -> dict[str, Any]:
    return {
        "key": spec.key,
        "name": spec.name,
        "unit": spec.unit,
        "event_type": spec.event_type,
        "aggregation": spec.aggregation,
        "value_property": spec.value_property,
        "filters": [
            {"property": f.property, "operator": f.operator, "values": list(f.values)} for f in spec.filters
        ],
        "group_by": list(spec.group_by),
        "description": spec.description,
        "allow_negative": spec.allow_negative,
    }


async def insert_meter(conn: AsyncConnection, spec: MeterSpec) -> Meter | None:
    """The new meter, or None when the key is taken."""
    row = (
        await conn.execute(
            insert(t.meters)
            .values(
                id=new_id("mtr"),
                archived=False,
                locked=False,
                created_at=func.now(),
                updated_at=func.now(),
                **_meter_values(spec),
            )
            .on_conflict_do_nothing(index_elements=["key"])
            .returning(*t.meters.c)
        )
    ).first()
    return _meter(row) if row else None


async def update_meter(conn: AsyncConnection, key: str, spec: MeterSpec) -> Meter:
    row = (
        await conn.execute(
            update(t.meters)
            .where(t.meters.c.key == key)
            .values(updated_at=func.now(), **_meter_values(spec))
            .returning(*t.meters.c)
        )
    ).one()
    return _meter(row)


async def set_meter_flags(conn: AsyncConnection, key: str, **flags: bool) -> Meter:
    row = (
        await conn.execute(
            update(t.meters)
            .where(t.meters.c.key == key)
            .values(updated_at=func.now(), **flags)
            .returning(*t.meters.c)
        )
    ).one()
    return _meter(row)


async def get_meter(
    conn: AsyncConnection, *, id: str | None = None, key: str | None = None, for_update: bool = False
) -> Meter | None:
    query = select(t.meters).where(t.meters.c.id == id if id is not None else t.meters.c.key == key)
    if for_update:
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    return _meter(row) if row else None


async def meters_by_keys(conn: AsyncConnection, keys: Iterable[str]) -> dict[str, Meter]:
    keys = list(set(keys))
    if not keys:
        return {}
    rows = await conn.execute(select(t.meters).where(t.meters.c.key.in_(keys)))
    return {row.key: _meter(row) for row in rows}


async def meters_by_ids(conn: AsyncConnection, ids: Sequence[str]) -> list[Meter]:
    rows = await conn.execute(select(t.meters).where(t.meters.c.id.in_(ids)))
    return [_meter(r) for r in rows]


async def list_meters(
    conn: AsyncConnection, *, after_key: str | None, limit: int, event_type: str, include_archived: bool
) -> list[Meter]:
    query = select(t.meters).order_by(t.meters.c.key).limit(limit)
    if after_key is not None:
        query = query.where(t.meters.c.key > after_key)
    if event_type:
        query = query.where(t.meters.c.event_type == event_type)
    if not include_archived:
        query = query.where(t.meters.c.archived.is_(False))
    return [_meter(r) for r in await conn.execute(query)]


async def lock_meters_of_version(conn: AsyncConnection, plan_version_id: str) -> list[str]:
    """Mark the meters a plan version's usage charges read as locked; the ids newly locked."""
    rows = await conn.execute(
        update(t.meters)
        .where(
            t.meters.c.locked.is_(False),
            t.meters.c.key.in_(
                select(t.plan_version_meters.c.meter_key).where(
                    t.plan_version_meters.c.plan_version_id == plan_version_id
                )
            ),
        )
        .values(locked=True, updated_at=func.now())
        .returning(t.meters.c.id)
    )
    return [r.id for r in rows]


# ---------------------------------------------------------------- products


def _product(row: Any) -> Product:
    return Product(
        id=row.id,
        spec=ProductSpec(key=row.key, name=row.name, description=row.description),
        archived=row.archived,
        created_at=row.created_at,
    )


async def insert_product(conn: AsyncConnection, spec: ProductSpec) -> Product | None:
    row = (
        await conn.execute(
            insert(t.products)
            .values(
                id=new_id("prd"),
                key=spec.key,
                name=spec.name,
                description=spec.description,
                archived=False,
                created_at=func.now(),
                updated_at=func.now(),
            )
            .on_conflict_do_nothing(index_elements=["key"])
            .returning(*t.products.c)
        )
    ).first()
    return _product(row) if row else None


async def get_product(
    conn: AsyncConnection, *, id: str | None = None, key: str | None = None, for_update: bool = False
) -> Product | None:
    query = select(t.products).where(t.products.c.id == id if id is not None else t.products.c.key == key)
    if for_update:
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    return _product(row) if row else None


async def update_product(
    conn: AsyncConnection, key: str, *, spec: ProductSpec | None = None, archived: bool | None = None
) -> Product:
    values: dict[str, Any] = {"updated_at": func.now()}
    if spec is not None:
        values.update(name=spec.name, description=spec.description)
    if archived is not None:
        values["archived"] = archived
    row = (
        await conn.execute(
            update(t.products).where(t.products.c.key == key).values(**values).returning(*t.products.c)
        )
    ).one()
    return _product(row)


async def products_by_ids(conn: AsyncConnection, ids: Sequence[str]) -> list[Product]:
    return [_product(r) for r in await conn.execute(select(t.products).where(t.products.c.id.in_(ids)))]


async def list_products(
    conn: AsyncConnection, *, after_key: str | None, limit: int, include_archived: bool
) -> list[Product]:
    query = select(t.products).order_by(t.products.c.key).limit(limit)
    if after_key is not None:
        query = query.where(t.products.c.key > after_key)
    if not include_archived:
        query = query.where(t.products.c.archived.is_(False))
    return [_product(r) for r in await conn.execute(query)]


# ---------------------------------------------------------------- plans


def _dec(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _str(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


def _price_json(price: Price | None) -> dict | None:
    if price is None:
        return None
    return {
        "model": price.model,
        "unit_price": _str(price.unit_price),
        "package_size": _str(price.package_size),
        "package_price": _str(price.package_price),
        "tiers": [
            {"up_to": _str(x.up_to), "unit_price": _str(x.unit_price), "flat_amount": _str(x.flat_amount)}
            for x in price.tiers
        ],
        "charge_flat_amount_at_zero": price.charge_flat_amount_at_zero,
    }


def _price(data: dict | None) -> Price | None:
    if data is None:
        return None
    return Price(
        model=data["model"],
        unit_price=_dec(data["unit_price"]),
        package_size=_dec(data["package_size"]),
        package_price=_dec(data["package_price"]),
        tiers=tuple(
            Tier(_dec(x["up_to"]), _dec(x["unit_price"]), _dec(x["flat_amount"])) for x in data["tiers"]
        ),
        # Absent from versions stored before the option existed: the default.
        charge_flat_amount_at_zero=data.get("charge_flat_amount_at_zero"),
    )


# Price overrides (services/catalog/subscriptions/repository.py) store prices the same way.
price_json = _price_json
price_from_json = _price
decimal_json = _str
decimal_from_json = _dec


def charges_json(charges: Sequence[Charge]) -> list[dict]:
    out = []
    for c in charges:
        item: dict[str, Any] = {"key": c.key, "name": c.name}
        if c.fixed is not None:
            item["fixed"] = {
                "amount": _str(c.fixed.amount),
                "timing": c.fixed.timing,
                "prorate": c.fixed.prorate,
            }
        if c.usage is not None:
            u = c.usage
            item["usage"] = {
                "meter_key": u.meter_key,
                "price": _price_json(u.price),
                "included_units": _str(u.included_units),
                "minimum_amount": _str(u.minimum_amount),
                "maximum_amount": _str(u.maximum_amount),
                "dimension_prices": [
                    {"match": [list(pair) for pair in d.match], "price": _price_json(d.price)}
                    for d in u.dimension_prices
                ],
            }
            if u.price_points:
                item["usage"]["price_points"] = [
                    {"key": p.key, "name": p.name, "price": _price_json(p.price)} for p in u.price_points
                ]
        out.append(item)
    return out


def charges_from_json(data: list[dict]) -> tuple[Charge, ...]:
    out = []
    for item in data:
        fixed = usage = None
        if "fixed" in item:
            f = item["fixed"]
            fixed = FixedFee(amount=_dec(f["amount"]), timing=f["timing"], prorate=f["prorate"])
        if "usage" in item:
            u = item["usage"]
            usage = UsageCharge(
                meter_key=u["meter_key"],
                price=_price(u["price"]),
                included_units=_dec(u["included_units"]),
                minimum_amount=_dec(u["minimum_amount"]),
                maximum_amount=_dec(u["maximum_amount"]),
                dimension_prices=tuple(
                    DimensionPrice(match=tuple(tuple(p) for p in d["match"]), price=_price(d["price"]))
                    for d in u["dimension_prices"]
                ),
                price_points=tuple(
                    PricePoint(key=p["key"], name=p["name"], price=_price(p["price"]))
                    for p in u.get("price_points", ())
                ),
            )
        out.append(Charge(key=item["key"], name=item["name"], fixed=fixed, usage=usage))
    return tuple(out)


def _version(row: Any, plan_key: str) -> PlanVersion:
    return PlanVersion(
        id=row.id,
        plan_id=row.plan_id,
        plan_key=plan_key,
        version=row.version,
        content=PlanContent(
            name=row.name,
            description=row.description,
            product_key=row.product_key,
            currency=row.currency,
            interval=row.interval,
            interval_count=row.interval_count,
            charges=charges_from_json(row.charges),
        ),
        published_at=row.published_at,
    )


_VERSION_COLUMNS = (*t.plan_versions.c, t.plans.c.key.label("plan_key"))


async def insert_plan(conn: AsyncConnection, key: str, name: str) -> str | None:
    """The new plan's id (no version yet), or None when the key is taken."""
    return await conn.scalar(
        insert(t.plans)
        .values(
            id=new_id("pln"),
            key=key,
            name=name,
            archived=False,
            latest_version=0,
            created_at=func.now(),
            updated_at=func.now(),
        )
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(t.plans.c.id)
    )


async def publish_version(
    conn: AsyncConnection, plan_id: str, plan_key: str, content: PlanContent
) -> PlanVersion:
    """Insert the next version of a plan (the caller holds the plan row lock)."""
    number = await conn.scalar(
        update(t.plans)
        .where(t.plans.c.id == plan_id)
        .values(latest_version=t.plans.c.latest_version + 1, name=content.name, updated_at=func.now())
        .returning(t.plans.c.latest_version)
    )
    version_id = new_id("plv")
    row = (
        await conn.execute(
            t.plan_versions.insert()
            .values(
                id=version_id,
                plan_id=plan_id,
                version=number,
                name=content.name,
                description=content.description,
                product_key=content.product_key,
                currency=content.currency,
                interval=content.interval,
                interval_count=content.interval_count,
                charges=charges_json(content.charges),
                published_at=func.now(),
            )
            .returning(*t.plan_versions.c)
        )
    ).one()
    keys = content.meter_keys()
    if keys:
        await conn.execute(
            t.plan_version_meters.insert(), [{"plan_version_id": version_id, "meter_key": k} for k in keys]
        )
    return _version(row, plan_key)


async def get_plan_row(
    conn: AsyncConnection, *, id: str | None = None, key: str | None = None, for_update: bool = False
) -> Any | None:
    query = select(t.plans).where(t.plans.c.id == id if id is not None else t.plans.c.key == key)
    if for_update:
        query = query.with_for_update()
    return (await conn.execute(query)).first()


async def set_plan_archived(conn: AsyncConnection, plan_id: str) -> None:
    await conn.execute(
        update(t.plans).where(t.plans.c.id == plan_id).values(archived=True, updated_at=func.now())
    )


async def get_version(
    conn: AsyncConnection, *, id: str | None = None, plan_key: str | None = None, version: int = 0
) -> PlanVersion | None:
    query = select(*_VERSION_COLUMNS).join(t.plans, t.plans.c.id == t.plan_versions.c.plan_id)
    if id is not None:
        query = query.where(t.plan_versions.c.id == id)
    elif version:
        query = query.where(t.plans.c.key == plan_key, t.plan_versions.c.version == version)
    else:
        query = query.where(t.plans.c.key == plan_key, t.plan_versions.c.version == t.plans.c.latest_version)
    row = (await conn.execute(query)).first()
    return _version(row, row.plan_key) if row else None


async def versions_by_ids(conn: AsyncConnection, ids: Sequence[str]) -> list[PlanVersion]:
    query = select(*_VERSION_COLUMNS).join(t.plans, t.plans.c.id == t.plan_versions.c.plan_id)
    return [_version(r, r.plan_key) for r in await conn.execute(query.where(t.plan_versions.c.id.in_(ids)))]


async def list_versions(
    conn: AsyncConnection, plan_key: str, *, after_version: int, limit: int
) -> list[PlanVersion]:
    query = (
        select(*_VERSION_COLUMNS)
        .join(t.plans, t.plans.c.id == t.plan_versions.c.plan_id)
        .where(t.plans.c.key == plan_key, t.plan_versions.c.version > after_version)
        .order_by(t.plan_versions.c.version)
        .limit(limit)
    )
    return [_version(r, r.plan_key) for r in await conn.execute(query)]


async def plans_with_latest(conn: AsyncConnection, condition, *, limit: int | None = None) -> list[Plan]:
    query = (
        select(
            t.plans.c.id.label("p_id"),
            t.plans.c.key.label("p_key"),
            t.plans.c.name.label("p_name"),
            t.plans.c.archived.label("p_archived"),
            t.plans.c.created_at.label("p_created_at"),
            *t.plan_versions.c,
        )
        .join(
            t.plan_versions,
            and_(
                t.plan_versions.c.plan_id == t.plans.c.id,
                t.plan_versions.c.version == t.plans.c.latest_version,
            ),
        )
        .where(condition)
        .order_by(t.plans.c.key)
    )
    if limit is not None:
        query = query.limit(limit)
    return [
        Plan(
            id=r.p_id,
            key=r.p_key,
            name=r.p_name,
            archived=r.p_archived,
            latest=_version(r, r.p_key),
            created_at=r.p_created_at,
        )
        for r in await conn.execute(query)
    ]


def plan_list_condition(after_key: str | None, include_archived: bool):
    conditions = []
    if after_key is not None:
        conditions.append(t.plans.c.key > after_key)
    if not include_archived:
        conditions.append(t.plans.c.archived.is_(False))
    return and_(True, *conditions)


def plan_ids_condition(ids: Sequence[str]):
    return t.plans.c.id.in_(ids)


def plan_key_condition(key: str):
    return t.plans.c.key == key


# ---------------------------------------------------------------- customers


def _customer(row: Any) -> Customer:
    return Customer(
        id=row.id,
        spec=CustomerSpec(
            external_id=row.external_id or "",
            name=row.name,
            email=row.email,
            timezone=row.timezone,
            currency=row.currency,
            metadata=tuple(sorted(row.metadata.items())),
        ),
        archived=row.archived,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _customer_values(spec: CustomerSpec) -> dict[str, Any]:
    return {
        "external_id": spec.external_id or None,
        "name": spec.name,
        "email": spec.email,
        "timezone": spec.timezone,
        "currency": spec.currency,
        "metadata": dict(spec.metadata),
    }


async def insert_customer(conn: AsyncConnection, spec: CustomerSpec) -> Customer | None:
    """The new customer, or None when the external id is taken."""
    row = (
        await conn.execute(
            insert(t.customers)
            .values(
                id=new_id("cus"),
                archived=False,
                created_at=func.now(),
                updated_at=func.now(),
                **_customer_values(spec),
            )
            .on_conflict_do_nothing(index_elements=["external_id"])
            .returning(*t.customers.c)
        )
    ).first()
    return _customer(row) if row else None


async def get_customer(
    conn: AsyncConnection, *, id: str | None = None, external_id: str | None = None, for_update: bool = False
) -> Customer | None:
    query = select(t.customers).where(
        t.customers.c.id == id if id is not None else t.customers.c.external_id == external_id
    )
    if for_update:
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    return _customer(row) if row else None


async def external_id_taken(conn: AsyncConnection, external_id: str, other_than: str) -> bool:
    found = await conn.scalar(
        select(t.customers.c.id).where(
            t.customers.c.external_id == external_id, t.customers.c.id != other_than
        )
    )
    return found is not None


async def update_customer(
    conn: AsyncConnection, id: str, *, spec: CustomerSpec | None = None, archived: bool | None = None
) -> Customer:
    values: dict[str, Any] = {"updated_at": func.now()}
    if spec is not None:
        values.update(_customer_values(spec))
    if archived is not None:
        values["archived"] = archived
    row = (
        await conn.execute(
            update(t.customers).where(t.customers.c.id == id).values(**values).returning(*t.customers.c)
        )
    ).one()
    return _customer(row)


async def customers_by_ids(conn: AsyncConnection, ids: Sequence[str]) -> list[Customer]:
    return [_customer(r) for r in await conn.execute(select(t.customers).where(t.customers.c.id.in_(ids)))]


async def list_customers(
    conn: AsyncConnection, *, after_id: str | None, limit: int, include_archived: bool, query_text: str
) -> list[Customer]:
    query = select(t.customers).order_by(t.customers.c.id).limit(limit)
    if after_id is not None:
        query = query.where(t.customers.c.id > after_id)
    if not include_archived:
        query = query.where(t.customers.c.archived.is_(False))
    if query_text:
        pattern = "%" + query_text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(
            or_(
                t.customers.c.name.ilike(pattern),
                t.customers.c.email.ilike(pattern),
                t.customers.c.external_id.ilike(pattern),
            )
        )
    return [_customer(r) for r in await conn.execute(query)]
