"""Invoices and their lines; lifecycle DRAFT -> FINALIZED -> PAID | VOID; content hash.

Pure: no grpc, no protobuf, no SQL.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal

from tally import wire
from tally.currency import MINOR_UNITS
from tally.errors import FailedPrecondition


class InvoiceStatus(enum.Enum):
    DRAFT = "DRAFT"
    FINALIZED = "FINALIZED"
    PAID = "PAID"
    VOID = "VOID"


class InvoiceKind(enum.Enum):
    """Which billing run of a period an invoice is (one invoice of each kind per period).

    PERIOD_START bills the in-advance fees of a period when it opens; PERIOD_END bills what
    the period used (usage, in-arrears fees), the in-advance corrections of plan changes and
    cancellations during it, and adjustments of earlier periods.
    """

    PERIOD_START = "PERIOD_START"
    PERIOD_END = "PERIOD_END"


class LineKind(enum.Enum):
    FIXED_FEE = "FIXED_FEE"
    USAGE = "USAGE"
    # Usage or a void that arrived after its period's invoice was finalized.
    ADJUSTMENT = "ADJUSTMENT"
    # An in-advance fee corrected by a plan change or cancellation during the period: a
    # credit (negative) for the unused part of a billed fee, or a charge for the part of a
    # new version's fee that was not billed at the period start.
    PRORATION = "PRORATION"


@dataclass(frozen=True)
class TierAmount:
    """How one tier contributed to a line."""

    tier: int
    from_units: Decimal
    up_to: Decimal | None
    quantity: Decimal
    unit_price: Decimal
    flat_amount: Decimal
    amount: Decimal


@dataclass(frozen=True)
class InvoiceLine:
    kind: LineKind
    description: str
    amount: Decimal
    period_start: datetime
    period_end: datetime
    charge_key: str = ""
    meter_key: str = ""
    dimensions: tuple[tuple[str, str], ...] = ()
    plan_key: str = ""
    plan_version: int = 0
    quantity: Decimal | None = None
    included_units: Decimal | None = None
    unit_price: Decimal | None = None
    tiers: tuple[TierAmount, ...] = ()
    proration: Decimal | None = None
    usage: Decimal | None = None
    amount_before_limits: Decimal | None = None
    adjusts_invoice_id: str = ""
    adjusts_period_start: datetime | None = None
    adjusts_period_end: datetime | None = None
    # Second-exact proration (PRORATION lines): seconds covered of the period's seconds.
    prorated_seconds: int | None = None
    period_seconds: int | None = None
    # The subscription's price override of this charge priced the line.
    price_override: bool = False
    # The price point (key) that priced this line's usage; "" otherwise.
    price_point: str = ""

    @property
    def match_key(self) -> str:
        """What identifies a priced line across re-pricings of the same period."""
        dims = ",".join(f"{k}={v}" for k, v in self.dimensions)
        return f"{self.kind.value}|{self.charge_key}|{dims}|{self.period_start.isoformat()}|{self.period_end.isoformat()}"


@dataclass(frozen=True)
class InvoiceWarning:
    """Usage of the invoice's period that it did not bill, and why (changes no amount)."""

    code: str
    description: str
    meter_key: str
    period_start: datetime
    period_end: datetime
    quantity: Decimal
    competing_subscription_ids: tuple[str, ...] = ()


UNATTRIBUTED_USAGE_NOT_BILLED = "UNATTRIBUTED_USAGE_NOT_BILLED"


@dataclass(frozen=True)
class Invoice:
    id: str
    customer_id: str
    subscription_id: str
    currency: str
    period_start: datetime
    period_end: datetime
    lines: tuple[InvoiceLine, ...]
    status: InvoiceStatus = InvoiceStatus.DRAFT
    number: str = ""
    content_hash: str = ""
    create_time: datetime | None = None
    grace_end_time: datetime | None = None
    finalize_time: datetime | None = None
    paid_time: datetime | None = None
    void_time: datetime | None = None
    void_reason: str = ""
    customer_name: str = ""
    customer_email: str = ""
    customer_external_id: str = ""
    kind: InvoiceKind = InvoiceKind.PERIOD_END
    warnings: tuple[InvoiceWarning, ...] = ()
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def subtotal(self) -> Decimal:
        total = Decimal(0)
        for line in self.lines:
            total = wire.EXACT.add(total, line.amount)
        # Line amounts are already rounded; this only gives "0.00" rather than "0".
        places = MINOR_UNITS.get(self.currency, 2)
        return total.quantize(Decimal(1).scaleb(-places), context=wire.EXACT)

    @property
    def total(self) -> Decimal:
        # No taxes or discounts yet: the total is the subtotal.
        return self.subtotal

    @property
    def is_finalized(self) -> bool:
        return self.status in (InvoiceStatus.FINALIZED, InvoiceStatus.PAID, InvoiceStatus.VOID)

    def finalize(self, number: str, at: datetime) -> "Invoice":
        """DRAFT -> FINALIZED with its human number and content hash."""
        self._require(InvoiceStatus.DRAFT, "finalize")
        finalized = replace(self, status=InvoiceStatus.FINALIZED, number=number, finalize_time=at, content_hash="")
        # The hash covers the finalized content itself, so it is set on the new object before
        # anyone else can see it (a second replace() would copy every field again).
        object.__setattr__(finalized, "content_hash", content_hash(finalized))
        return finalized

    def mark_paid(self, at: datetime) -> "Invoice":
        self._require(InvoiceStatus.FINALIZED, "mark paid")
        return replace(self, status=InvoiceStatus.PAID, paid_time=at)

    def void(self, at: datetime, reason: str) -> "Invoice":
        self._require(InvoiceStatus.FINALIZED, "void")
        return replace(self, status=InvoiceStatus.VOID, void_time=at, void_reason=reason)

    def _require(self, status: InvoiceStatus, action: str) -> None:
        if self.status is not status:
            raise FailedPrecondition(
                f"cannot {action} a {self.status.value} invoice; it must be {status.value}",
                reason="INVOICE_STATUS",
                metadata={"invoice_id": self.id, "status": self.status.value},
            )


def invoice_number(sequence: str, value: int) -> str:
    """The human number: ``INV-2026-000001`` (sequence "INV-2026", counter 1)."""
    return f"{sequence}-{value:06d}"


def number_sequence(finalize_time: datetime) -> str:
    """Numbers are gapless per calendar year (UTC) of finalization."""
    return f"INV-{finalize_time.year}"


def _decimal(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _instant(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def canonical_line(line: InvoiceLine) -> dict:
    return {
        "kind": line.kind.value,
        "description": line.description,
        "charge_key": line.charge_key,
        "meter_key": line.meter_key,
        "dimensions": [list(pair) for pair in line.dimensions],
        "period": [_instant(line.period_start), _instant(line.period_end)],
        "plan": [line.plan_key, line.plan_version],
        "quantity": _decimal(line.quantity),
        "included_units": _decimal(line.included_units),
        "unit_price": _decimal(line.unit_price),
        "tiers": [
            [t.tier, str(t.from_units), _decimal(t.up_to), str(t.quantity), str(t.unit_price), str(t.flat_amount), str(t.amount)]
            for t in line.tiers
        ],
        "proration": _decimal(line.proration),
        "usage": _decimal(line.usage),
        "amount_before_limits": _decimal(line.amount_before_limits),
        "amount": str(line.amount),
        "adjusts": [line.adjusts_invoice_id, _instant(line.adjusts_period_start), _instant(line.adjusts_period_end)],
        # Only when set, so the content (and hash) of lines without them is what it always was.
        **({"price_override": True} if line.price_override else {}),
        **({"price_point": line.price_point} if line.price_point else {}),
        **({"prorated_seconds": [line.prorated_seconds, line.period_seconds]} if line.prorated_seconds is not None else {}),
    }


def canonical_content(invoice: Invoice) -> bytes:
    """The invoice's billed content as canonical JSON (sorted keys, no whitespace).

    Status, paid and void times are not content: they may change after finalization.
    """
    body = {
        "id": invoice.id,
        "number": invoice.number,
        "customer": [invoice.customer_id, invoice.customer_name, invoice.customer_email, invoice.customer_external_id],
        "subscription_id": invoice.subscription_id,
        "currency": invoice.currency,
        "period": [_instant(invoice.period_start), _instant(invoice.period_end)],
        "finalize_time": _instant(invoice.finalize_time),
        "lines": [canonical_line(line) for line in invoice.lines],
        "subtotal": str(invoice.subtotal),
        "total": str(invoice.total),
    }
    if invoice.kind is not InvoiceKind.PERIOD_END:
        # Only for the newer kind, so hashes of invoices finalized before kinds existed still hold.
        body["kind"] = invoice.kind.value
    if invoice.warnings:
        # Only when there are some: an invoice without warnings hashes as it always did.
        body["warnings"] = [canonical_warning(w) for w in invoice.warnings]
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def canonical_warning(warning: InvoiceWarning) -> dict:
    return {
        "code": warning.code,
        "description": warning.description,
        "meter_key": warning.meter_key,
        "period": [_instant(warning.period_start), _instant(warning.period_end)],
        "quantity": str(warning.quantity),
        "competing_subscription_ids": list(warning.competing_subscription_ids),
    }


def content_hash(invoice: Invoice) -> str:
    """SHA-256 (hex) of the canonical content."""
    return hashlib.sha256(canonical_content(invoice)).hexdigest()
