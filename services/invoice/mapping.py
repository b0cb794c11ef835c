"""Protobuf <-> domain conversion for the invoice service; the only place that converts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal

from google.protobuf import timestamp_pb2

from services.invoice.domain.billing import UsageQuery
from services.invoice.domain.invoices import (
    Invoice,
    InvoiceKind,
    InvoiceLine,
    InvoiceStatus,
    InvoiceWarning,
    LineKind,
    TierAmount,
    line_id,
)
from services.invoice.domain.plans import (
    Customer,
    DimensionPrice,
    FeeTiming,
    FixedFee,
    Phase,
    PlanVersion,
    Price,
    PriceOverride,
    PricePoint,
    PricingModel,
    Subscription,
    Tier,
    UsageCharge,
)
from services.invoice.domain.pricing import UsagePart
from tally import wire
from tally.catalog_cache import BILLING_INTERVALS
from tally.domain.periods import Anchor, Interval, Period
from tally.errors import InvalidInput, Violation
from tally_gen.catalog.v1 import catalog_pb2
from tally_gen.common.v1 import common_pb2
from tally_gen.invoice.v1 import invoice_pb2
from tally_gen.meter.v1 import meter_pb2

UTC = timezone.utc

# ------------------------------------------------------------------ scalars


def decimal_from(message: common_pb2.Decimal, default: Decimal | None = Decimal(0), field: str = "") -> Decimal | None:
    """A decimal another service wrote (catalog prices, meter usage): the grammar's syntax
    (tally.wire), unbounded, since a sum of bounded values may exceed one value's bounds."""
    if not message.value:
        return default
    try:
        return wire.parse_decimal_unbounded(message.value)
    except wire.DecimalError as error:
        raise InvalidInput(
            "not a decimal",
            violations=[Violation(field or "value", f"{error.description}, got {wire.shorten(message.value)}", error.reason)],
        ) from None


def decimal_to(value: Decimal | None) -> common_pb2.Decimal | None:
    return None if value is None else common_pb2.Decimal(value=wire.format_decimal(value))


def time_from(message: timestamp_pb2.Timestamp) -> datetime:
    return message.ToDatetime(tzinfo=UTC)


def optional_time_from(parent, name: str) -> datetime | None:
    return time_from(getattr(parent, name)) if parent.HasField(name) else None


def request_time(parent, name: str) -> datetime | None:
    """A request's optional Timestamp field, INVALID_ARGUMENT (naming it) outside tally.wire's range."""
    if not parent.HasField(name):
        return None
    stamp = getattr(parent, name)
    if not wire.seconds_in_range(stamp.seconds, stamp.nanos):
        raise InvalidInput(
            f"{name} is not a valid timestamp",
            violations=[Violation(name, wire.INSTANT_DESCRIPTION, "INVALID_TIMESTAMP")],
        )
    return time_from(stamp)


def time_to(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


def range_to(start: datetime | None, end: datetime | None) -> common_pb2.TimeRange | None:
    if start is None or end is None:
        return None
    return common_pb2.TimeRange(start=time_to(start), end=time_to(end))


# ------------------------------------------------------------------ list filters

# Longest id or external id a filter accepts (the catalog's own bound on external ids).
MAX_REF_CHARS = 256


@dataclass(frozen=True)
class ListFilters:
    customer_id: str = ""
    customer_external_id: str = ""
    subscription_id: str = ""
    subscription_external_id: str = ""


def _ref_value(problems: list[Violation], field: str, value: str) -> str:
    if len(value) > MAX_REF_CHARS:
        problems.append(Violation(field, f"must be at most {MAX_REF_CHARS} characters", "TOO_LONG"))
    elif any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        problems.append(Violation(field, "must not contain control characters", "CONTROL_CHARACTER"))
    return value


def list_filters_from(request: invoice_pb2.ListInvoicesRequest) -> ListFilters:
    """The customer and subscription a ListInvoices names, by the old id fields or by ref; both at
    once, an empty ref, or an unusable value is INVALID_ARGUMENT (every problem at once)."""
    problems: list[Violation] = []
    found: dict[str, str] = {}
    for old, new, prefix in (("customer_id", "customer", "customer"), ("subscription_id", "subscription", "subscription")):
        legacy = getattr(request, old)
        if request.HasField(new):
            ref = getattr(request, new)
            which = ref.WhichOneof("ref")
            if legacy:
                problems.append(Violation(new, f"set either {old} or {new}, not both", "CONFLICTING_FIELDS"))
            elif which is None or not getattr(ref, which):
                problems.append(Violation(new, f"set {new}.id or {new}.external_id", "REQUIRED"))
            else:
                key = f"{prefix}_id" if which == "id" else f"{prefix}_external_id"
                found[key] = _ref_value(problems, f"{new}.{which}", getattr(ref, which))
        elif legacy:
            found[f"{prefix}_id"] = _ref_value(problems, old, legacy)
    if problems:
        raise InvalidInput("invalid invoice filters", violations=problems)
    return ListFilters(**found)


def subscription_ref_from(request) -> tuple[str, str]:
    """(subscription id, external id), one of them set, from ``subscription_id`` or the
    ``subscription`` ref (UpcomingInvoice, ListBillingPeriods); INVALID_ARGUMENT otherwise."""
    problems: list[Violation] = []
    if request.HasField("subscription"):
        which = request.subscription.WhichOneof("ref")
        if request.subscription_id:
            problems.append(Violation("subscription", "set either subscription_id or subscription, not both", "CONFLICTING_FIELDS"))
        elif which is None or not getattr(request.subscription, which):
            problems.append(Violation("subscription", "set subscription.id or subscription.external_id", "REQUIRED"))
        else:
            value = _ref_value(problems, f"subscription.{which}", getattr(request.subscription, which))
            if not problems:
                return (value, "") if which == "id" else ("", value)
    elif not request.subscription_id:
        problems.append(Violation("subscription_id", "required: set subscription_id or subscription", "REQUIRED"))
    else:
        _ref_value(problems, "subscription_id", request.subscription_id)
    if problems:
        raise InvalidInput("name the subscription", violations=problems)
    return request.subscription_id, ""


# ------------------------------------------------------------------ catalog -> domain

_MODELS = {
    catalog_pb2.PRICING_MODEL_PER_UNIT: PricingModel.PER_UNIT,
    catalog_pb2.PRICING_MODEL_PACKAGE: PricingModel.PACKAGE,
    catalog_pb2.PRICING_MODEL_GRADUATED: PricingModel.GRADUATED,
    catalog_pb2.PRICING_MODEL_VOLUME: PricingModel.VOLUME,
}


def price_from(message: catalog_pb2.Price) -> Price:
    return Price(
        model=_MODELS.get(message.model, PricingModel.PER_UNIT),
        unit_price=decimal_from(message.unit_price),
        package_size=decimal_from(message.package_size, Decimal(1)),
        package_price=decimal_from(message.package_price),
        tiers=tuple(
            Tier(
                up_to=decimal_from(tier.up_to, None) if tier.HasField("up_to") else None,
                unit_price=decimal_from(tier.unit_price),
                flat_amount=decimal_from(tier.flat_amount),
            )
            for tier in message.tiers
        ),
        charge_flat_amount_at_zero=(
            message.charge_flat_amount_at_zero if message.HasField("charge_flat_amount_at_zero") else True
        ),
    )


def charge_from(message: catalog_pb2.Charge) -> FixedFee | UsageCharge:
    if message.WhichOneof("kind") == "fixed":
        fee = message.fixed
        return FixedFee(
            key=message.key,
            name=message.name,
            amount=decimal_from(fee.amount),
            timing=FeeTiming.IN_ADVANCE if fee.timing == catalog_pb2.FEE_TIMING_IN_ADVANCE else FeeTiming.IN_ARREARS,
            prorate=fee.prorate if fee.HasField("prorate") else True,
        )
    usage = message.usage
    return UsageCharge(
        key=message.key,
        name=message.name,
        meter_key=usage.meter_key,
        price=price_from(usage.price),
        included_units=decimal_from(usage.included_units),
        minimum_amount=decimal_from(usage.minimum_amount, None),
        maximum_amount=decimal_from(usage.maximum_amount, None),
        dimension_prices=tuple(
            DimensionPrice(tuple(sorted(dp.match.items())), price_from(dp.price)) for dp in usage.dimension_prices
        ),
        price_points=tuple(PricePoint(p.key, p.name, price_from(p.price)) for p in usage.price_points),
    )


def price_override_from(message: catalog_pb2.PriceOverride) -> PriceOverride:
    return PriceOverride(
        charge_key=message.charge_key,
        price=price_from(message.price) if message.HasField("price") else None,
        included_units=decimal_from(message.included_units, None) if message.HasField("included_units") else None,
        minimum_amount=decimal_from(message.minimum_amount, None) if message.HasField("minimum_amount") else None,
        maximum_amount=decimal_from(message.maximum_amount, None) if message.HasField("maximum_amount") else None,
        amount=decimal_from(message.amount, None) if message.HasField("amount") else None,
    )


def plan_version_from(message: catalog_pb2.PlanVersion) -> PlanVersion:
    return PlanVersion(
        id=message.id,
        plan_key=message.plan_key,
        version=message.version,
        name=message.name,
        currency=message.currency,
        interval=BILLING_INTERVALS.get(message.interval, Interval.MONTH),
        interval_count=message.interval_count or 1,
        charges=tuple(charge_from(charge) for charge in message.charges if charge.WhichOneof("kind")),
    )


def customer_from(message: catalog_pb2.Customer) -> Customer:
    return Customer(
        id=message.id,
        external_id=message.external_id,
        name=message.name,
        email=message.email,
        timezone=message.timezone or "UTC",
        currency=message.currency,
    )


def subscription_from(message: catalog_pb2.Subscription) -> Subscription:
    phases = tuple(
        Phase(
            plan_version_id=phase.plan_version_id,
            plan_key=phase.plan_key,
            plan_version=phase.plan_version,
            start=time_from(phase.start_time),
            end=optional_time_from(phase, "end_time"),
            price_overrides=tuple(price_override_from(o) for o in phase.price_overrides),
        )
        for phase in message.phases
    )
    start = time_from(message.start_time)
    if not phases:
        phases = (Phase(message.plan_version_id, message.plan_key, message.plan_version, start),)
    return Subscription(
        id=message.id,
        customer_id=message.customer_id,
        start=start,
        anchor=Anchor.ANNIVERSARY if message.anchor == catalog_pb2.BILLING_ANCHOR_ANNIVERSARY else Anchor.CALENDAR,
        phases=phases,
        cancel_at=optional_time_from(message, "cancel_at"),
        cancel_at_period_end=message.cancel_at_period_end,
        canceled_time=optional_time_from(message, "canceled_time"),
        metadata=dict(message.metadata),
    )


# ------------------------------------------------------------------ meter <-> domain


def usage_request(customer_id: str, query: UsageQuery) -> meter_pb2.GetUsageRequest:
    request = meter_pb2.GetUsageRequest(
        customer=common_pb2.CustomerRef(id=customer_id),
        meter_key=query.meter_key,
        start=time_to(query.start),
        end=time_to(query.end),
        group_by=list(query.group_by),
    )
    if query.subscription_id:
        request.subscription.id = query.subscription_id
        request.include_unattributed = query.unattributed
    elif query.unattributed:
        request.only_unattributed = True
    return request


def batch_usage_request(queries: Sequence[tuple[str, UsageQuery]]) -> meter_pb2.BatchGetUsageRequest:
    return meter_pb2.BatchGetUsageRequest(queries=[usage_request(customer_id, q) for customer_id, q in queries])


def usage_from(query: UsageQuery, message: meter_pb2.GetUsageResponse) -> UsagePart:
    return UsagePart(
        start=query.start,
        end=query.end,
        total=decimal_from(message.value),
        breakdown=tuple(
            (tuple(sorted(row.dimensions.items())), decimal_from(row.value)) for row in message.breakdown
        ),
    )


# ------------------------------------------------------------------ invoice domain -> proto

_STATUS_TO = {
    InvoiceStatus.DRAFT: invoice_pb2.INVOICE_STATUS_DRAFT,
    InvoiceStatus.FINALIZED: invoice_pb2.INVOICE_STATUS_FINALIZED,
    InvoiceStatus.PAID: invoice_pb2.INVOICE_STATUS_PAID,
    InvoiceStatus.VOID: invoice_pb2.INVOICE_STATUS_VOID,
}
_STATUS_FROM = {value: key for key, value in _STATUS_TO.items()}
_KIND_TO = {
    LineKind.FIXED_FEE: invoice_pb2.LINE_KIND_FIXED_FEE,
    LineKind.USAGE: invoice_pb2.LINE_KIND_USAGE,
    LineKind.ADJUSTMENT: invoice_pb2.LINE_KIND_ADJUSTMENT,
    LineKind.PRORATION: invoice_pb2.LINE_KIND_PRORATION,
}
_INVOICE_KIND_TO = {
    InvoiceKind.PERIOD_START: invoice_pb2.INVOICE_KIND_PERIOD_START,
    InvoiceKind.PERIOD_END: invoice_pb2.INVOICE_KIND_PERIOD_END,
}
_INVOICE_KIND_FROM = {value: key for key, value in _INVOICE_KIND_TO.items()}


def invoice_kind_from(value: int, field: str = "kind") -> InvoiceKind | None:
    """None for UNSPECIFIED (no filter); INVALID_ARGUMENT for a number the enum does not have."""
    if value == invoice_pb2.INVOICE_KIND_UNSPECIFIED:
        return None
    if value not in _INVOICE_KIND_FROM:
        raise InvalidInput(
            "unknown invoice kind", violations=[Violation(field, f"unknown InvoiceKind {value}", "UNKNOWN_ENUM")]
        )
    return _INVOICE_KIND_FROM[value]


def status_from(value: int, field: str = "status") -> InvoiceStatus | None:
    """None for UNSPECIFIED (no filter); INVALID_ARGUMENT for a number the enum does not have."""
    if value == invoice_pb2.INVOICE_STATUS_UNSPECIFIED:
        return None
    if value not in _STATUS_FROM:
        raise InvalidInput(
            "unknown invoice status", violations=[Violation(field, f"unknown InvoiceStatus {value}", "UNKNOWN_ENUM")]
        )
    return _STATUS_FROM[value]


def tier_to(tier: TierAmount) -> invoice_pb2.TierBreakdown:
    return invoice_pb2.TierBreakdown(
        tier=tier.tier,
        from_units=decimal_to(tier.from_units),
        up_to=decimal_to(tier.up_to),
        quantity=decimal_to(tier.quantity),
        unit_price=decimal_to(tier.unit_price),
        flat_amount=decimal_to(tier.flat_amount),
        amount=decimal_to(tier.amount),
    )


def line_to(line: InvoiceLine, line_id: str) -> invoice_pb2.InvoiceLine:
    return invoice_pb2.InvoiceLine(
        id=line_id,
        kind=_KIND_TO[line.kind],
        description=line.description,
        charge_key=line.charge_key,
        meter_key=line.meter_key,
        dimensions=dict(line.dimensions),
        period=range_to(line.period_start, line.period_end),
        plan_key=line.plan_key,
        plan_version=line.plan_version,
        quantity=decimal_to(line.quantity),
        included_units=decimal_to(line.included_units),
        unit_price=decimal_to(line.unit_price),
        tiers=[tier_to(tier) for tier in line.tiers],
        proration=decimal_to(line.proration),
        amount=decimal_to(line.amount),
        adjusts_invoice_id=line.adjusts_invoice_id,
        adjusts_period=range_to(line.adjusts_period_start, line.adjusts_period_end),
        usage=decimal_to(line.usage),
        amount_before_limits=decimal_to(line.amount_before_limits),
        prorated_seconds=line.prorated_seconds or 0,
        period_seconds=line.period_seconds or 0,
        price_override=line.price_override,
        price_point=line.price_point,
    )


def invoice_to(invoice: Invoice) -> invoice_pb2.Invoice:
    return invoice_pb2.Invoice(
        id=invoice.id,
        number=invoice.number,
        customer_id=invoice.customer_id,
        subscription_id=invoice.subscription_id,
        status=_STATUS_TO[invoice.status],
        currency=invoice.currency,
        period=range_to(invoice.period_start, invoice.period_end),
        # Lines are identified by their position in the (immutable once finalized) invoice.
        lines=[line_to(line, line_id(invoice.id, n)) for n, line in enumerate(invoice.lines, start=1)],
        subtotal=decimal_to(invoice.subtotal),
        total=decimal_to(invoice.total),
        content_hash=invoice.content_hash,
        create_time=time_to(invoice.create_time),
        grace_end_time=time_to(invoice.grace_end_time),
        finalize_time=time_to(invoice.finalize_time),
        paid_time=time_to(invoice.paid_time),
        void_time=time_to(invoice.void_time),
        void_reason=invoice.void_reason,
        customer_name=invoice.customer_name,
        customer_email=invoice.customer_email,
        customer_external_id=invoice.customer_external_id,
        kind=_INVOICE_KIND_TO[invoice.kind],
        warnings=[warning_to(w) for w in invoice.warnings],
    )


def warning_to(warning: InvoiceWarning) -> invoice_pb2.InvoiceWarning:
    return invoice_pb2.InvoiceWarning(
        code=warning.code,
        description=warning.description,
        meter_key=warning.meter_key,
        period=range_to(warning.period_start, warning.period_end),
        quantity=decimal_to(warning.quantity),
        competing_subscription_ids=list(warning.competing_subscription_ids),
    )


def period_to(period: Period, invoice_id: str = "", period_start_invoice_id: str = "") -> invoice_pb2.BillingPeriod:
    return invoice_pb2.BillingPeriod(
        period=range_to(period.start, period.end), invoice_id=invoice_id, period_start_invoice_id=period_start_invoice_id
    )
