"""Proto <-> domain conversion for the catalog: the only module that knows both.

Decoding never rejects: an unparsable decimal becomes Decimal('NaN') and an unknown enum
number becomes "UNKNOWN_<n>", so the domain's validation reports every problem in one pass.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal

from google.protobuf.timestamp_pb2 import Timestamp

from services.catalog.domain.customers import Customer, CustomerSpec
from services.catalog.domain.meters import Meter, MeterFilter, MeterSpec
from services.catalog.domain.plans import (
    Charge,
    DimensionPrice,
    FixedFee,
    Plan,
    PlanContent,
    PlanSpec,
    PlanVersion,
    Price,
    PricePoint,
    Product,
    ProductSpec,
    Tier,
    UsageCharge,
)
from services.catalog.service import ApplyResult, CatalogChange
from services.catalog.subscriptions.domain import Phase, PriceOverride, Subscription, SubscriptionRef
from tally import wire
from tally.errors import InvalidInput, Violation
from tally_gen.catalog.v1 import catalog_pb2 as pb
from tally_gen.common.v1 import common_pb2

# ---------------------------------------------------------------- scalars


def enum_name(enum_type, number: int, prefix: str) -> str:
    """AGGREGATION_SUM -> "SUM"; 0 -> ""; a number the proto doesn't know -> "UNKNOWN_<n>"."""
    if number == 0:
        return ""
    try:
        return enum_type.Name(number).removeprefix(prefix)
    except ValueError:
        return f"UNKNOWN_{number}"


def enum_number(enum_type, name: str, prefix: str) -> int:
    return enum_type.Value(prefix + name) if name else 0


def decimal_in(message: common_pb2.Decimal, present: bool = True) -> Decimal | None:
    """The value in the grammar's syntax (tally.wire); NaN for any other string, so the
    domain reports it with the rest; the bounds are the domain's to check."""
    if not present or not message.value:
        return None
    try:
        return wire.parse_decimal_syntax(message.value)
    except wire.DecimalError:
        return Decimal("NaN")


def decimal_field(parent, name: str) -> Decimal | None:
    return decimal_in(getattr(parent, name), parent.HasField(name))


def decimal_out(value: Decimal | None) -> common_pb2.Decimal | None:
    return None if value is None else common_pb2.Decimal(value=wire.format_decimal(value))


def time_in(parent, name: str) -> datetime | None:
    if not parent.HasField(name):
        return None
    return getattr(parent, name).ToDatetime(tzinfo=UTC)


def time_out(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value.astimezone(UTC))
    return ts


def _set_time(message, name: str, value: datetime | None) -> None:
    if value is not None:
        getattr(message, name).CopyFrom(time_out(value))


def _set_decimal(message, name: str, value: Decimal | None) -> None:
    if value is not None:
        getattr(message, name).CopyFrom(decimal_out(value))


def mask_in(paths) -> tuple[str, ...]:
    """Update-mask paths in proto names; JSON-style camelCase ("valueProperty") is accepted too."""
    return tuple(re.sub(r"(?<!^)([A-Z])", r"_\1", path.strip()).lower() for path in paths)


# ---------------------------------------------------------------- meters


def meter_spec_in(m: pb.Meter) -> MeterSpec:
    return MeterSpec(
        key=m.key.strip(),
        name=m.name or m.key.strip(),
        unit=m.unit,
        event_type=m.event_type,
        aggregation=enum_name(pb.Aggregation, m.aggregation, "AGGREGATION_"),
        value_property=m.value_property,
        filters=tuple(
            MeterFilter(
                f.property, enum_name(pb.FilterOperator, f.operator, "FILTER_OPERATOR_"), tuple(f.values)
            )
            for f in m.filters
        ),
        group_by=tuple(m.group_by),
        description=m.description,
        allow_negative=m.allow_negative,
    )


def meter_out(meter: Meter) -> pb.Meter:
    s = meter.spec
    out = pb.Meter(
        id=meter.id,
        key=s.key,
        name=s.name,
        unit=s.unit,
        event_type=s.event_type,
        aggregation=enum_number(pb.Aggregation, s.aggregation, "AGGREGATION_"),
        value_property=s.value_property,
        filters=[
            pb.MeterFilter(
                property=f.property,
                operator=enum_number(pb.FilterOperator, f.operator, "FILTER_OPERATOR_"),
                values=list(f.values),
            )
            for f in s.filters
        ],
        group_by=list(s.group_by),
        description=s.description,
        allow_negative=s.allow_negative,
        archived=meter.archived,
        locked=meter.locked,
    )
    _set_time(out, "create_time", meter.created_at)
    _set_time(out, "update_time", meter.updated_at)
    return out


# ---------------------------------------------------------------- products and plans


def product_spec_in(p: pb.Product) -> ProductSpec:
    return ProductSpec(key=p.key.strip(), name=p.name or p.key.strip(), description=p.description)


def product_out(product: Product) -> pb.Product:
    out = pb.Product(
        id=product.id,
        key=product.spec.key,
        name=product.spec.name,
        description=product.spec.description,
        archived=product.archived,
    )
    _set_time(out, "create_time", product.created_at)
    return out


def price_in(p: pb.Price) -> Price:
    return Price(
        model=enum_name(pb.PricingModel, p.model, "PRICING_MODEL_"),
        unit_price=decimal_field(p, "unit_price"),
        package_size=decimal_field(p, "package_size"),
        package_price=decimal_field(p, "package_price"),
        tiers=tuple(
            Tier(decimal_field(t, "up_to"), decimal_field(t, "unit_price"), decimal_field(t, "flat_amount"))
            for t in p.tiers
        ),
        charge_flat_amount_at_zero=p.charge_flat_amount_at_zero if p.HasField("charge_flat_amount_at_zero") else None,
    )


def price_out(price: Price) -> pb.Price:
    out = pb.Price(model=enum_number(pb.PricingModel, price.model, "PRICING_MODEL_"))
    _set_decimal(out, "unit_price", price.unit_price)
    _set_decimal(out, "package_size", price.package_size)
    _set_decimal(out, "package_price", price.package_price)
    for tier in price.tiers:
        t = out.tiers.add()
        _set_decimal(t, "up_to", tier.up_to)
        _set_decimal(t, "unit_price", tier.unit_price)
        _set_decimal(t, "flat_amount", tier.flat_amount)
    if price.charge_flat_amount_at_zero is not None:
        out.charge_flat_amount_at_zero = price.charge_flat_amount_at_zero
    return out


def charge_in(c: pb.Charge) -> Charge:
    fixed = usage = None
    if c.HasField("fixed"):
        f = c.fixed
        fixed = FixedFee(
            amount=decimal_field(f, "amount"),
            timing=enum_name(pb.FeeTiming, f.timing, "FEE_TIMING_"),
            prorate=f.prorate if f.HasField("prorate") else None,
        )
    if c.HasField("usage"):
        u = c.usage
        usage = UsageCharge(
            meter_key=u.meter_key,
            price=price_in(u.price) if u.HasField("price") else None,
            included_units=decimal_field(u, "included_units"),
            minimum_amount=decimal_field(u, "minimum_amount"),
            maximum_amount=decimal_field(u, "maximum_amount"),
            dimension_prices=tuple(
                DimensionPrice(
                    match=tuple(sorted(d.match.items())),
                    price=price_in(d.price) if d.HasField("price") else None,
                )
                for d in u.dimension_prices
            ),
            price_points=tuple(
                PricePoint(
                    key=p.key.strip(),
                    name=p.name or p.key.strip(),
                    price=price_in(p.price) if p.HasField("price") else None,
                )
                for p in u.price_points
            ),
        )
    return Charge(key=c.key, name=c.name or c.key, fixed=fixed, usage=usage)


def charge_out(charge: Charge) -> pb.Charge:
    out = pb.Charge(key=charge.key, name=charge.name)
    if charge.fixed is not None:
        f = charge.fixed
        out.fixed.timing = enum_number(pb.FeeTiming, f.timing, "FEE_TIMING_")
        _set_decimal(out.fixed, "amount", f.amount)
        if f.prorate is not None:
            out.fixed.prorate = f.prorate
    if charge.usage is not None:
        u = charge.usage
        out.usage.meter_key = u.meter_key
        if u.price is not None:
            out.usage.price.CopyFrom(price_out(u.price))
        _set_decimal(out.usage, "included_units", u.included_units)
        _set_decimal(out.usage, "minimum_amount", u.minimum_amount)
        _set_decimal(out.usage, "maximum_amount", u.maximum_amount)
        for d in u.dimension_prices:
            dp = out.usage.dimension_prices.add()
            dp.match.update(dict(d.match))
            if d.price is not None:
                dp.price.CopyFrom(price_out(d.price))
        for p in u.price_points:
            pp = out.usage.price_points.add(key=p.key, name=p.name)
            if p.price is not None:
                pp.price.CopyFrom(price_out(p.price))
    return out


def plan_spec_in(p: pb.PlanSpec) -> PlanSpec:
    return PlanSpec(
        key=p.key.strip(),
        content=PlanContent(
            name=p.name or p.key.strip(),
            description=p.description,
            product_key=p.product_key,
            currency=p.currency.strip(),
            interval=enum_name(pb.BillingInterval, p.interval, "BILLING_INTERVAL_"),
            # 0 is proto3's "unset": every 1 interval.
            interval_count=p.interval_count or 1,
            charges=tuple(charge_in(c) for c in p.charges),
        ),
    )


def plan_version_out(v: PlanVersion) -> pb.PlanVersion:
    c = v.content
    out = pb.PlanVersion(
        id=v.id,
        plan_id=v.plan_id,
        plan_key=v.plan_key,
        version=v.version,
        name=c.name,
        currency=c.currency,
        interval=enum_number(pb.BillingInterval, c.interval, "BILLING_INTERVAL_"),
        interval_count=c.interval_count,
        charges=[charge_out(ch) for ch in c.charges],
        product_key=c.product_key,
        description=c.description,
    )
    _set_time(out, "publish_time", v.published_at)
    return out


def plan_out(plan: Plan) -> pb.Plan:
    out = pb.Plan(
        id=plan.id,
        key=plan.key,
        name=plan.name,
        archived=plan.archived,
        latest_version=plan_version_out(plan.latest),
    )
    _set_time(out, "create_time", plan.created_at)
    return out


# ---------------------------------------------------------------- customers and subscriptions


def customer_spec_in(c: pb.Customer) -> CustomerSpec:
    return CustomerSpec(
        external_id=c.external_id.strip(),
        name=c.name,
        email=c.email.strip(),
        timezone=c.timezone.strip() or "UTC",
        currency=c.currency.strip(),
        metadata=tuple(sorted(c.metadata.items())),
    )


def customer_out(customer: Customer) -> pb.Customer:
    s = customer.spec
    out = pb.Customer(
        id=customer.id,
        external_id=s.external_id,
        name=s.name,
        email=s.email,
        timezone=s.timezone,
        currency=s.currency,
        metadata=dict(s.metadata),
        archived=customer.archived,
    )
    _set_time(out, "create_time", customer.created_at)
    _set_time(out, "update_time", customer.updated_at)
    return out


def customer_ref_in(ref: common_pb2.CustomerRef) -> tuple[str, str]:
    """(id, external_id), one of them empty."""
    which = ref.WhichOneof("ref")
    return (ref.id, "") if which == "id" else ("", ref.external_id if which == "external_id" else "")


def subscription_ref_in(request) -> SubscriptionRef:
    """The subscription a Get/Cancel/Change request names: ``subscription`` (a SubscriptionRef)
    or the older ``id`` field; setting both is INVALID_ARGUMENT."""
    has_ref = request.HasField("subscription")
    if has_ref and request.id:
        raise InvalidInput(
            "name the subscription once",
            violations=[
                Violation("subscription", "set either id or subscription, not both", "CONFLICTING_FIELDS")
            ],
        )
    if not has_ref:
        return SubscriptionRef(id=request.id, field="id")
    which = request.subscription.WhichOneof("ref")
    if which == "external_id":
        return SubscriptionRef(external_id=request.subscription.external_id, field="subscription.external_id")
    return SubscriptionRef(id=request.subscription.id, field="subscription.id" if which else "subscription")


def price_override_in(o: pb.PriceOverride) -> PriceOverride:
    return PriceOverride(
        charge_key=o.charge_key.strip(),
        price=price_in(o.price) if o.HasField("price") else None,
        included_units=decimal_field(o, "included_units"),
        minimum_amount=decimal_field(o, "minimum_amount"),
        maximum_amount=decimal_field(o, "maximum_amount"),
        amount=decimal_field(o, "amount"),
    )


def price_override_out(o: PriceOverride) -> pb.PriceOverride:
    out = pb.PriceOverride(charge_key=o.charge_key)
    if o.price is not None:
        out.price.CopyFrom(price_out(o.price))
    for name in ("included_units", "minimum_amount", "maximum_amount", "amount"):
        _set_decimal(out, name, getattr(o, name))
    return out


def subscription_out(sub: Subscription, now: datetime | None = None) -> pb.Subscription:
    now = now or datetime.now(UTC)
    current = sub.current_phase
    out = pb.Subscription(
        id=sub.id,
        customer_id=sub.customer_id,
        plan_version_id=current.plan_version_id,
        plan_key=current.plan_key,
        plan_version=current.plan_version,
        anchor=enum_number(pb.BillingAnchor, sub.anchor, "BILLING_ANCHOR_"),
        status=enum_number(pb.SubscriptionStatus, sub.status(now), "SUBSCRIPTION_STATUS_"),
        cancel_at_period_end=sub.cancel_at_period_end,
        metadata=dict(sub.metadata),
        external_id=sub.external_id,
    )
    _set_time(out, "start_time", sub.start_time)
    _set_time(out, "cancel_at", sub.cancel_at)
    _set_time(out, "canceled_time", sub.canceled_time)
    _set_time(out, "create_time", sub.created_at)
    for phase in sub.phases:
        out.phases.append(phase_out(phase))
    out.price_overrides.extend(price_override_out(o) for o in current.price_overrides)
    return out


def phase_out(phase: Phase) -> pb.SubscriptionPhase:
    out = pb.SubscriptionPhase(
        plan_version_id=phase.plan_version_id, plan_key=phase.plan_key, plan_version=phase.plan_version
    )
    _set_time(out, "start_time", phase.start_time)
    _set_time(out, "end_time", phase.end_time)
    out.price_overrides.extend(price_override_out(o) for o in phase.price_overrides)
    return out


def status_in(number: int) -> str:
    return enum_name(pb.SubscriptionStatus, number, "SUBSCRIPTION_STATUS_")


# ---------------------------------------------------------------- declarative catalog and feed


def apply_result_out(result: ApplyResult) -> pb.ApplyResult:
    return pb.ApplyResult(
        kind=result.kind,
        key=result.key,
        action=enum_number(pb.ApplyAction, result.action, "APPLY_ACTION_"),
        version=result.version,
    )


_ENTITY_OUT = {
    "meter": ("meter", meter_out),
    "customer": ("customer", customer_out),
    "plan_version": ("plan_version", plan_version_out),
    "subscription": ("subscription", subscription_out),
    "product": ("product", product_out),
    "plan": ("plan", plan_out),
}


def change_out(change: CatalogChange) -> pb.WatchCatalogResponse:
    out = pb.WatchCatalogResponse(revision=change.revision)
    if change.entity is not None:
        field, encode = _ENTITY_OUT[change.kind]
        getattr(out, field).CopyFrom(encode(change.entity))
    return out
