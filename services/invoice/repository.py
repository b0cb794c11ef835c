"""SQL of the invoice schema (SQLAlchemy Core over an AsyncConnection per use case)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.invoice.domain.invoices import (
    Invoice,
    InvoiceKind,
    InvoiceLine,
    InvoiceStatus,
    InvoiceWarning,
    LineKind,
    TierAmount,
)
from services.invoice.tables import invoices, number_counters


def _d(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _t(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _s(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _i(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def line_to_json(line: InvoiceLine) -> dict:
    return {
        "kind": line.kind.value,
        "description": line.description,
        "amount": str(line.amount),
        "period_start": _i(line.period_start),
        "period_end": _i(line.period_end),
        "charge_key": line.charge_key,
        "meter_key": line.meter_key,
        "dimensions": [list(pair) for pair in line.dimensions],
        "plan_key": line.plan_key,
        "plan_version": line.plan_version,
        "quantity": _s(line.quantity),
        "included_units": _s(line.included_units),
        "unit_price": _s(line.unit_price),
        "tiers": [
            [t.tier, str(t.from_units), _s(t.up_to), str(t.quantity), str(t.unit_price), str(t.flat_amount), str(t.amount)]
            for t in line.tiers
        ],
        "proration": _s(line.proration),
        "usage": _s(line.usage),
        "amount_before_limits": _s(line.amount_before_limits),
        "adjusts_invoice_id": line.adjusts_invoice_id,
        "adjusts_period_start": _i(line.adjusts_period_start),
        "adjusts_period_end": _i(line.adjusts_period_end),
        "prorated_seconds": line.prorated_seconds,
        "period_seconds": line.period_seconds,
        **({"price_override": True} if line.price_override else {}),
        **({"price_point": line.price_point} if line.price_point else {}),
    }


def line_from_json(data: dict) -> InvoiceLine:
    return InvoiceLine(
        kind=LineKind(data["kind"]),
        description=data["description"],
        amount=Decimal(data["amount"]),
        period_start=_t(data["period_start"]),
        period_end=_t(data["period_end"]),
        charge_key=data["charge_key"],
        meter_key=data["meter_key"],
        dimensions=tuple((k, v) for k, v in data["dimensions"]),
        plan_key=data["plan_key"],
        plan_version=data["plan_version"],
        quantity=_d(data["quantity"]),
        included_units=_d(data["included_units"]),
        unit_price=_d(data["unit_price"]),
        tiers=tuple(
            TierAmount(t[0], Decimal(t[1]), _d(t[2]), Decimal(t[3]), Decimal(t[4]), Decimal(t[5]), Decimal(t[6]))
            for t in data["tiers"]
        ),
        proration=_d(data["proration"]),
        usage=_d(data["usage"]),
        amount_before_limits=_d(data["amount_before_limits"]),
        adjusts_invoice_id=data["adjusts_invoice_id"],
        adjusts_period_start=_t(data["adjusts_period_start"]),
        adjusts_period_end=_t(data["adjusts_period_end"]),
        prorated_seconds=data.get("prorated_seconds"),
        period_seconds=data.get("period_seconds"),
        price_override=data.get("price_override", False),
        price_point=data.get("price_point", ""),
    )


def _row(invoice: Invoice) -> dict:
    return {
        "id": invoice.id,
        "number": invoice.number or None,
        "customer_id": invoice.customer_id,
        "subscription_id": invoice.subscription_id,
        "status": invoice.status.value,
        "currency": invoice.currency,
        "period_start": invoice.period_start,
        "period_end": invoice.period_end,
        "lines": [line_to_json(line) for line in invoice.lines],
        "subtotal": invoice.subtotal,
        "total": invoice.total,
        "content_hash": invoice.content_hash,
        "create_time": invoice.create_time,
        "grace_end_time": invoice.grace_end_time,
        "finalize_time": invoice.finalize_time,
        "paid_time": invoice.paid_time,
        "void_time": invoice.void_time,
        "void_reason": invoice.void_reason,
        "customer_name": invoice.customer_name,
        "customer_email": invoice.customer_email,
        "customer_external_id": invoice.customer_external_id,
        "kind": invoice.kind.value,
        "warnings": [warning_to_json(w) for w in invoice.warnings],
    }


def warning_to_json(warning: InvoiceWarning) -> dict:
    return {
        "code": warning.code,
        "description": warning.description,
        "meter_key": warning.meter_key,
        "period_start": warning.period_start.isoformat(),
        "period_end": warning.period_end.isoformat(),
        "quantity": str(warning.quantity),
        "competing_subscription_ids": list(warning.competing_subscription_ids),
    }


def warning_from_json(data: dict) -> InvoiceWarning:
    return InvoiceWarning(
        code=data["code"],
        description=data["description"],
        meter_key=data["meter_key"],
        period_start=datetime.fromisoformat(data["period_start"]),
        period_end=datetime.fromisoformat(data["period_end"]),
        quantity=Decimal(data["quantity"]),
        competing_subscription_ids=tuple(data["competing_subscription_ids"]),
    )


def invoice_from_row(row) -> Invoice:
    return Invoice(
        id=row.id,
        number=row.number or "",
        customer_id=row.customer_id,
        subscription_id=row.subscription_id,
        status=InvoiceStatus(row.status),
        currency=row.currency,
        period_start=row.period_start,
        period_end=row.period_end,
        lines=tuple(line_from_json(line) for line in row.lines),
        content_hash=row.content_hash,
        create_time=row.create_time,
        grace_end_time=row.grace_end_time,
        finalize_time=row.finalize_time,
        paid_time=row.paid_time,
        void_time=row.void_time,
        void_reason=row.void_reason,
        customer_name=row.customer_name,
        customer_email=row.customer_email,
        customer_external_id=row.customer_external_id,
        kind=InvoiceKind(row.kind),
        warnings=tuple(warning_from_json(w) for w in row.warnings),
    )


BILLED = (InvoiceStatus.FINALIZED.value, InvoiceStatus.PAID.value)


class InvoiceRepository:
    """Reads and writes invoices inside the caller's transaction."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def insert_new(self, batch: Sequence[Invoice]) -> set[str]:
        """Insert invoices whose subscription period has none yet; the ids actually inserted."""
        if not batch:
            return set()
        # executemany with RETURNING: SQLAlchemy batches it into multi-row INSERTs
        # ("insertmanyvalues") from one cached compiled statement.
        statement = (
            insert(invoices)
            .on_conflict_do_nothing(constraint="invoices_one_per_subscription_period")
            .returning(invoices.c.id)
        )
        result = await self.conn.execute(statement, [_row(invoice) for invoice in batch])
        return set(result.scalars())

    async def get(self, invoice_id: str, *, for_update: bool = False) -> Invoice | None:
        statement = select(invoices).where(invoices.c.id == invoice_id)
        if for_update:
            statement = statement.with_for_update()
        row = (await self.conn.execute(statement)).first()
        return invoice_from_row(row) if row else None

    async def get_by_number(self, number: str) -> Invoice | None:
        row = (await self.conn.execute(select(invoices).where(invoices.c.number == number))).first()
        return invoice_from_row(row) if row else None

    async def period_starts(
        self, subscription_ids: Iterable[str], kind: InvoiceKind = InvoiceKind.PERIOD_END
    ) -> dict[str, dict[datetime, str]]:
        """For each subscription, its period starts invoiced by ``kind`` and their invoice ids."""
        ids = list(subscription_ids)
        found: dict[str, dict[datetime, str]] = {sid: {} for sid in ids}
        if not ids:
            return found
        statement = select(invoices.c.subscription_id, invoices.c.period_start, invoices.c.id).where(
            invoices.c.subscription_id.in_(ids), invoices.c.kind == kind.value
        )
        for row in await self.conn.execute(statement):
            found[row.subscription_id][row.period_start] = row.id
        return found

    async def history(self, subscription_ids: Iterable[str], since: datetime) -> dict[str, list[Invoice]]:
        """Non-void invoices of the subscriptions whose period ended after ``since``, oldest first.

        That is what adjustments need: the billed invoices they may correct, and the
        adjustments already made for them.
        """
        ids = list(subscription_ids)
        found: dict[str, list[Invoice]] = {sid: [] for sid in ids}
        if not ids:
            return found
        statement = (
            select(invoices)
            .where(
                invoices.c.subscription_id.in_(ids),
                invoices.c.status != InvoiceStatus.VOID.value,
                or_(invoices.c.period_end > since, invoices.c.status == InvoiceStatus.DRAFT.value),
            )
            .order_by(invoices.c.period_start)
        )
        for row in await self.conn.execute(statement):
            found[row.subscription_id].append(invoice_from_row(row))
        return found

    async def voided_period_starts(self, subscription_ids: Iterable[str]) -> dict[str, set[datetime]]:
        """For each subscription, the period starts whose PERIOD_START invoice was voided."""
        ids = list(subscription_ids)
        found: dict[str, set[datetime]] = {sid: set() for sid in ids}
        if not ids:
            return found
        statement = select(invoices.c.subscription_id, invoices.c.period_start).where(
            invoices.c.subscription_id.in_(ids),
            invoices.c.kind == InvoiceKind.PERIOD_START.value,
            invoices.c.status == InvoiceStatus.VOID.value,
        )
        for row in await self.conn.execute(statement):
            found[row.subscription_id].add(row.period_start)
        return found

    async def billed_ending_at(self, subscription_ids: Iterable[str], instants: Iterable[datetime]) -> dict[str, list[Invoice]]:
        """Billed PERIOD_END invoices of the subscriptions whose period ends at one of ``instants``."""
        ids, ends = list(subscription_ids), list(set(instants))
        found: dict[str, list[Invoice]] = {sid: [] for sid in ids}
        if not ids or not ends:
            return found
        statement = select(invoices).where(
            invoices.c.subscription_id.in_(ids),
            invoices.c.period_end.in_(ends),
            invoices.c.kind == InvoiceKind.PERIOD_END.value,
            invoices.c.status.in_(BILLED),
        )
        for row in await self.conn.execute(statement):
            found[row.subscription_id].append(invoice_from_row(row))
        return found

    async def due_draft_ids(self, as_of: datetime, subscription_ids: Sequence[str] | None = None) -> list[str]:
        statement = (
            select(invoices.c.id)
            .where(invoices.c.status == InvoiceStatus.DRAFT.value, invoices.c.grace_end_time <= as_of)
            .order_by(invoices.c.period_start, invoices.c.id)
        )
        if subscription_ids:
            statement = statement.where(invoices.c.subscription_id.in_(list(subscription_ids)))
        return list((await self.conn.execute(statement)).scalars())

    async def replace_draft(self, invoice: Invoice) -> None:
        """Write a re-priced draft or its finalization (the trigger refuses non-drafts)."""
        row = _row(invoice)
        row.pop("id")
        await self.conn.execute(
            update(invoices)
            .where(invoices.c.id == invoice.id, invoices.c.status == InvoiceStatus.DRAFT.value)
            .values(**row)
        )

    async def update_status(self, invoice: Invoice) -> None:
        await self.conn.execute(
            update(invoices)
            .where(invoices.c.id == invoice.id)
            .values(
                status=invoice.status.value,
                paid_time=invoice.paid_time,
                void_time=invoice.void_time,
                void_reason=invoice.void_reason,
            )
        )

    async def next_numbers(self, sequence: str, count: int) -> list[int]:
        """Reserve ``count`` consecutive numbers of ``sequence``; gapless when the caller commits.

        The counter row is locked until the transaction ends, so concurrent finalizations
        serialize on it and a rollback returns the numbers.
        """
        if count <= 0:
            return []
        statement = (
            insert(number_counters)
            .values(sequence=sequence, last_value=count)
            .on_conflict_do_update(
                index_elements=[number_counters.c.sequence],
                set_={"last_value": number_counters.c.last_value + count},
            )
            .returning(number_counters.c.last_value)
        )
        last = (await self.conn.execute(statement)).scalar_one()
        return list(range(last - count + 1, last + 1))

    async def list(
        self,
        *,
        limit: int,
        after: tuple[datetime, str] | None,
        customer_id: str = "",
        subscription_id: str = "",
        status: InvoiceStatus | None = None,
        kind: InvoiceKind | None = None,
    ) -> list[Invoice]:
        statement = select(invoices).order_by(invoices.c.create_time, invoices.c.id).limit(limit)
        if kind is not None:
            statement = statement.where(invoices.c.kind == kind.value)
        if customer_id:
            statement = statement.where(invoices.c.customer_id == customer_id)
        if subscription_id:
            statement = statement.where(invoices.c.subscription_id == subscription_id)
        if status is not None:
            statement = statement.where(invoices.c.status == status.value)
        if after is not None:
            created, last_id = after
            statement = statement.where(
                or_(invoices.c.create_time > created, and_(invoices.c.create_time == created, invoices.c.id > last_id))
            )
        return [invoice_from_row(row) for row in await self.conn.execute(statement)]

    async def count(self) -> int:
        return (await self.conn.execute(select(func.count()).select_from(invoices))).scalar_one()
