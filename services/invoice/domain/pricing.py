"""The pricing engine: quantities and fees to invoice lines. Decimal throughout.

Rounding: every line is computed exactly, then rounded ONCE to the currency's minor unit
with ROUND_HALF_EVEN (banker's rounding), after the charge's minimum and maximum applied.
Tier amounts in a line's breakdown are exact (unrounded), so a customer can redo the sum.

Included units are taken off the usage before pricing; tiers then apply to the billable
remainder. Quantities below zero price as zero: a charge is never negative (credits come
only from adjustments).

Pure: no grpc, no protobuf, no SQL.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal, localcontext

from services.invoice.domain.invoices import InvoiceLine, LineKind, TierAmount
from services.invoice.domain.plans import DimensionPrice, FixedFee, Price, PricingModel, UsageCharge
from tally import wire
from tally.currency import minor_units
from tally.domain.price_points import PRICE_POINT_DIMENSION

ZERO = Decimal(0)
ROUNDING = ROUND_HALF_EVEN
# Sums and products of bounded decimals never round in it (tally.wire.EXACT); rounding to
# the minor unit happens once per line, in round_money.
EXACT = wire.EXACT
_add = EXACT.add


def round_money(amount: Decimal, currency: str) -> Decimal:
    """Round to the currency's minor unit (USD 2, JPY 0, BHD 3) with ROUND_HALF_EVEN."""
    return amount.quantize(Decimal(1).scaleb(-minor_units(currency)), rounding=ROUNDING, context=EXACT)


@dataclass(frozen=True)
class PricedQuantity:
    """Exact (unrounded) amount for a quantity, with the numbers that explain it."""

    amount: Decimal
    unit_price: Decimal | None
    tiers: tuple[TierAmount, ...]


def _from_units(lower: Decimal) -> Decimal:
    # Integer tiers read "1,001-10,000": the first unit after the previous bound.
    return lower + 1 if lower == lower.to_integral_value() else lower


def price_per_unit(unit_price: Decimal, quantity: Decimal) -> PricedQuantity:
    with localcontext(EXACT):
        return PricedQuantity(quantity * unit_price, unit_price, ())


def price_package(package_size: Decimal, package_price: Decimal, quantity: Decimal) -> PricedQuantity:
    """A price per block of ``package_size`` units; a partial block counts as a whole one."""
    with localcontext(EXACT):
        blocks = (quantity / package_size).to_integral_value(rounding=ROUND_CEILING) if quantity > 0 else ZERO
        amount = blocks * package_price
        tier = TierAmount(1, ZERO, package_size, blocks, package_price, ZERO, amount)
        return PricedQuantity(amount, package_price, (tier,) if blocks else ())


def price_graduated(tiers: Iterable, quantity: Decimal) -> PricedQuantity:
    """Each unit priced in the tier it falls into; a tier's flat amount once it is reached."""
    with localcontext(EXACT):
        lower = ZERO
        total = ZERO
        parts = []
        for number, tier in enumerate(tiers, start=1):
            upper = tier.up_to
            in_tier = (quantity if upper is None else min(quantity, upper)) - lower
            if in_tier <= 0:
                break
            amount = in_tier * tier.unit_price + tier.flat_amount
            parts.append(TierAmount(number, _from_units(lower), upper, in_tier, tier.unit_price, tier.flat_amount, amount))
            total += amount
            if upper is None:
                break
            lower = upper
        return PricedQuantity(total, None, tuple(parts))


def price_volume(tiers: Iterable, quantity: Decimal) -> PricedQuantity:
    """Every unit priced at the tier the total falls into (plus that tier's flat amount)."""
    with localcontext(EXACT):
        if quantity <= 0:
            return PricedQuantity(ZERO, None, ())
        lower = ZERO
        for number, tier in enumerate(tiers, start=1):
            if tier.up_to is None or quantity <= tier.up_to:
                amount = quantity * tier.unit_price + tier.flat_amount
                part = TierAmount(number, _from_units(lower), tier.up_to, quantity, tier.unit_price, tier.flat_amount, amount)
                return PricedQuantity(amount, tier.unit_price, (part,))
            lower = tier.up_to
        raise ValueError("volume tiers must end with an open-ended tier")


def price_first_tier_at_zero(tiers: tuple) -> PricedQuantity:
    """A billable quantity of 0 under tiers: it lies in the first tier, which pays its flat amount."""
    first = tiers[0] if tiers else None
    if first is None or not first.flat_amount:
        return PricedQuantity(ZERO, None, ())
    part = TierAmount(1, ZERO, first.up_to, ZERO, first.unit_price, first.flat_amount, first.flat_amount)
    return PricedQuantity(first.flat_amount, None, (part,))


def price_quantity(price: Price, quantity: Decimal) -> PricedQuantity:
    """The exact amount of ``quantity`` units under ``price`` (negative quantities price as 0).

    GRADUATED and VOLUME at quantity 0 charge the first tier's flat amount unless the price
    opts out (``charge_flat_amount_at_zero``), as Stripe and OpenMeter do.
    """
    quantity = max(quantity, ZERO)
    if quantity == 0 and price.model in (PricingModel.GRADUATED, PricingModel.VOLUME):
        return price_first_tier_at_zero(price.tiers) if price.charge_flat_amount_at_zero else PricedQuantity(ZERO, None, ())
    match price.model:
        case PricingModel.PER_UNIT:
            return price_per_unit(price.unit_price, quantity)
        case PricingModel.PACKAGE:
            return price_package(price.package_size, price.package_price, quantity)
        case PricingModel.GRADUATED:
            return price_graduated(price.tiers, quantity)
        case PricingModel.VOLUME:
            return price_volume(price.tiers, quantity)
    raise ValueError(f"unknown pricing model {price.model}")


def apply_limits(amount: Decimal, minimum: Decimal | None, maximum: Decimal | None) -> Decimal:
    """The charge's floor and cap for the period."""
    if minimum is not None and amount < minimum:
        amount = minimum
    if maximum is not None and amount > maximum:
        amount = maximum
    return amount


@dataclass(frozen=True)
class UsagePart:
    """A meter's usage over one part of a period, with its per-dimension breakdown."""

    start: datetime
    end: datetime
    total: Decimal
    # (dimensions as sorted pairs, value); empty when the charge has no dimension prices.
    breakdown: tuple[tuple[tuple[tuple[str, str], ...], Decimal], ...] = ()


@dataclass(frozen=True)
class UsageGroup:
    """Usage priced by one price: a dimension price's matches, or the rest at the default."""

    dimensions: tuple[tuple[str, str], ...]
    price: Price
    usage: Decimal
    # The price point (key) whose price this is; "" for dimension prices and the default.
    price_point: str = ""


def group_usage(charge: UsageCharge, usage: UsagePart) -> list[UsageGroup]:
    """Split usage: rows recorded with one of the charge's price points go to that price point;
    the others to the first dimension price they match; the rest to the default price.

    A price point the charge does not declare (recorded under another plan version) is priced
    like usage without one. Groups come in this order: dimension prices as declared, price
    points as declared (only those with usage), then the default.
    """
    if not charge.dimension_prices and not charge.price_points:
        return [UsageGroup((), charge.price, usage.total)]
    sums: dict[int, Decimal] = {}
    point_sums: dict[str, Decimal] = {}
    matched = ZERO
    for dims, value in usage.breakdown:
        as_dict = dict(dims)
        point = charge.price_point(as_dict.get(PRICE_POINT_DIMENSION, ""))
        if point is not None:
            point_sums[point.key] = _add(point_sums.get(point.key, ZERO), value)
            matched = _add(matched, value)
            continue
        for index, dimension_price in enumerate(charge.dimension_prices):
            if dimension_price.matches(as_dict):
                sums[index] = _add(sums.get(index, ZERO), value)
                matched = _add(matched, value)
                break
    groups = [
        UsageGroup(tuple(sorted(dp.match)), dp.price, sums.get(index, ZERO))
        for index, dp in enumerate(charge.dimension_prices)
    ]
    groups.extend(
        UsageGroup(((PRICE_POINT_DIMENSION, p.key),), p.price, point_sums[p.key], price_point=p.key)
        for p in charge.price_points
        if p.key in point_sums
    )
    groups.append(UsageGroup((), charge.price, EXACT.subtract(usage.total, matched)))
    return groups


def _describe_dims(dimensions: tuple[tuple[str, str], ...]) -> str:
    return "" if not dimensions else " (" + ", ".join(f"{k}={v}" for k, v in dimensions) + ")"


def _describe_group(charge: UsageCharge, group: UsageGroup) -> str:
    point = charge.price_point(group.price_point)
    if point is not None:
        return f"{charge.name or charge.key} (price point {point.name or point.key})"
    return f"{charge.name or charge.key}{_describe_dims(group.dimensions)}"


def price_usage_charge(
    charge: UsageCharge,
    usage: UsagePart,
    *,
    currency: str,
    included_available: Decimal,
    plan_key: str,
    plan_version: int,
    unit_label: str = "units",
) -> tuple[list[InvoiceLine], Decimal]:
    """Lines for one usage charge over one part of a period.

    Included units are used up by the groups in order (dimension prices as declared, then
    the default price). The minimum and maximum apply to the charge's total: with one line
    they change that line (``amount_before_limits`` keeps the original); with several a
    separate line carries the difference.

    Returns:
        The lines, and the included units used.
    """
    remaining_included = max(included_available, ZERO)
    priced_groups = []
    groups = group_usage(charge, usage)
    for group in groups:
        if (
            (charge.dimension_prices or charge.price_points)
            and group.usage == 0
            and group.dimensions == ()
            and len(groups) > 1
        ):
            # Nothing fell to the default price: no empty "other usage" line.
            continue
        used_included = min(remaining_included, max(group.usage, ZERO))
        remaining_included = EXACT.subtract(remaining_included, used_included)
        billable = max(EXACT.subtract(group.usage, used_included), ZERO)
        priced_groups.append((group, used_included, billable, price_quantity(group.price, billable)))
    used = EXACT.subtract(max(included_available, ZERO), remaining_included)
    exact_total = ZERO
    for *_, priced in priced_groups:
        exact_total = _add(exact_total, priced.amount)
    limited_total = apply_limits(exact_total, charge.minimum_amount, charge.maximum_amount)
    single = len(priced_groups) == 1
    lines = []
    for group, used_included, billable, priced in priced_groups:
        if single:
            amount = round_money(limited_total, currency)
            before = round_money(exact_total, currency) if limited_total != exact_total else None
        else:
            amount, before = round_money(priced.amount, currency), None
        lines.append(
            InvoiceLine(
                kind=LineKind.USAGE,
                description=_describe_group(charge, group),
                amount=amount,
                period_start=usage.start,
                period_end=usage.end,
                charge_key=charge.key,
                meter_key=charge.meter_key,
                dimensions=group.dimensions,
                plan_key=plan_key,
                plan_version=plan_version,
                quantity=billable,
                included_units=used_included,
                unit_price=priced.unit_price,
                tiers=priced.tiers,
                usage=group.usage,
                amount_before_limits=before,
                price_override=charge.overridden,
                price_point=group.price_point,
            )
        )
    difference = limited_total - exact_total
    if not single and difference != 0:
        label = "minimum" if difference > 0 else "maximum"
        lines.append(
            InvoiceLine(
                kind=LineKind.USAGE,
                description=f"{charge.name or charge.key}: {label} for the period",
                amount=round_money(difference, currency),
                period_start=usage.start,
                period_end=usage.end,
                charge_key=f"{charge.key}#{label}",
                meter_key=charge.meter_key,
                plan_key=plan_key,
                plan_version=plan_version,
                amount_before_limits=round_money(exact_total, currency),
                price_override=charge.overridden,
            )
        )
    return lines, used


def price_fixed_fee(
    fee: FixedFee,
    *,
    currency: str,
    start: datetime,
    end: datetime,
    proration: Decimal,
    plan_key: str,
    plan_version: int,
) -> InvoiceLine:
    """A fixed fee for [start, end), prorated by ``proration`` (share of days) when the fee allows."""
    share = proration if fee.prorate else Decimal(1)
    with localcontext(EXACT):
        exact = fee.amount * share
    timing = "in advance" if fee.timing.value == "in_advance" else "in arrears"
    return InvoiceLine(
        kind=LineKind.FIXED_FEE,
        description=f"{fee.name or fee.key} ({timing})",
        amount=round_money(exact, currency),
        period_start=start,
        period_end=end,
        charge_key=fee.key,
        plan_key=plan_key,
        plan_version=plan_version,
        quantity=Decimal(1),
        unit_price=fee.amount,
        proration=share if share != 1 else None,
        price_override=fee.overridden,
    )


__all__ = [
    "DimensionPrice",
    "PricedQuantity",
    "UsageGroup",
    "UsagePart",
    "apply_limits",
    "group_usage",
    "price_fixed_fee",
    "price_graduated",
    "price_package",
    "price_per_unit",
    "price_quantity",
    "price_usage_charge",
    "price_volume",
    "round_money",
]
