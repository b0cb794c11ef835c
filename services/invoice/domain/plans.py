"""What the invoice service knows of the catalog: plan versions, customers, subscriptions.

These are read-only snapshots of catalog entities (fetched over gRPC and converted in
mapping.py). Pure: no grpc, no protobuf, no SQL.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal

from tally.domain.periods import Anchor, Interval, Schedule, period_containing
from tally.domain.price_points import PRICE_POINT_DIMENSION


class PricingModel(enum.Enum):
    PER_UNIT = "per_unit"
    PACKAGE = "package"
    GRADUATED = "graduated"
    VOLUME = "volume"


class FeeTiming(enum.Enum):
    IN_ADVANCE = "in_advance"
    IN_ARREARS = "in_arrears"


@dataclass(frozen=True)
class Tier:
    """A tier covering units up to ``up_to`` (inclusive); None on the last, open-ended tier."""

    up_to: Decimal | None
    unit_price: Decimal = Decimal(0)
    flat_amount: Decimal = Decimal(0)


@dataclass(frozen=True)
class Price:
    model: PricingModel
    unit_price: Decimal = Decimal(0)
    package_size: Decimal = Decimal(0)
    package_price: Decimal = Decimal(0)
    tiers: tuple[Tier, ...] = ()
    # GRADUATED/VOLUME: a billable quantity of 0 lies in the first tier and pays its flat amount.
    charge_flat_amount_at_zero: bool = True


@dataclass(frozen=True)
class DimensionPrice:
    """A price for usage whose dimensions include every pair of ``match``."""

    match: tuple[tuple[str, str], ...]
    price: Price

    def matches(self, dimensions: dict[str, str]) -> bool:
        return all(dimensions.get(key) == value for key, value in self.match)


@dataclass(frozen=True)
class PricePoint:
    """A named alternative price of a usage charge; usage recorded with it is priced by it."""

    key: str
    name: str
    price: Price


@dataclass(frozen=True)
class PriceOverride:
    """A subscription phase's replacement for parts of one charge; None keeps the plan's value."""

    charge_key: str
    price: Price | None = None
    included_units: Decimal | None = None
    minimum_amount: Decimal | None = None
    maximum_amount: Decimal | None = None
    amount: Decimal | None = None


@dataclass(frozen=True)
class FixedFee:
    key: str
    name: str
    amount: Decimal
    timing: FeeTiming = FeeTiming.IN_ARREARS
    prorate: bool = True
    # True when a subscription's price override replaced the plan's amount.
    overridden: bool = False

    def with_override(self, override: PriceOverride) -> FixedFee:
        amount = override.amount if override.amount is not None else self.amount
        return replace(self, amount=amount, overridden=True)


@dataclass(frozen=True)
class UsageCharge:
    key: str
    name: str
    meter_key: str
    price: Price
    included_units: Decimal = Decimal(0)
    minimum_amount: Decimal | None = None
    maximum_amount: Decimal | None = None
    dimension_prices: tuple[DimensionPrice, ...] = ()
    price_points: tuple[PricePoint, ...] = ()
    # True when a subscription's price override replaced part of the plan's pricing.
    overridden: bool = False

    @property
    def group_by(self) -> tuple[str, ...]:
        """The meter dimensions the dimension prices (and price points) need, in a stable order."""
        keys: list[str] = []
        for dimension_price in self.dimension_prices:
            for key, _ in dimension_price.match:
                if key not in keys:
                    keys.append(key)
        if self.price_points:
            keys.append(PRICE_POINT_DIMENSION)
        return tuple(keys)

    def price_point(self, key: str) -> PricePoint | None:
        return next((p for p in self.price_points if p.key == key), None) if key else None

    def with_override(self, override: PriceOverride) -> UsageCharge:
        """The charge as this subscription prices it: each field the override sets replaces the plan's."""
        return replace(
            self,
            price=override.price if override.price is not None else self.price,
            included_units=override.included_units if override.included_units is not None else self.included_units,
            minimum_amount=override.minimum_amount if override.minimum_amount is not None else self.minimum_amount,
            maximum_amount=override.maximum_amount if override.maximum_amount is not None else self.maximum_amount,
            overridden=True,
        )


Charge = FixedFee | UsageCharge


@dataclass(frozen=True)
class PlanVersion:
    id: str
    plan_key: str
    version: int
    name: str
    currency: str
    interval: Interval
    interval_count: int
    charges: tuple[Charge, ...] = ()

    @property
    def fixed_fees(self) -> tuple[FixedFee, ...]:
        return tuple(c for c in self.charges if isinstance(c, FixedFee))

    @property
    def usage_charges(self) -> tuple[UsageCharge, ...]:
        return tuple(c for c in self.charges if isinstance(c, UsageCharge))

    def with_overrides(self, overrides: tuple[PriceOverride, ...]) -> PlanVersion:
        """This version's charges as a subscription with ``overrides`` pays them."""
        if not overrides:
            return self
        by_key = {o.charge_key: o for o in overrides}
        charges = tuple(c.with_override(by_key[c.key]) if c.key in by_key else c for c in self.charges)
        return replace(self, charges=charges)


@dataclass(frozen=True)
class Customer:
    id: str
    external_id: str = ""
    name: str = ""
    email: str = ""
    timezone: str = "UTC"
    currency: str = ""


@dataclass(frozen=True)
class Phase:
    """The plan version in force over [start, end); end None while open."""

    plan_version_id: str
    plan_key: str
    plan_version: int
    start: datetime
    end: datetime | None = None
    price_overrides: tuple[PriceOverride, ...] = ()


@dataclass(frozen=True)
class Subscription:
    id: str
    customer_id: str
    start: datetime
    anchor: Anchor
    phases: tuple[Phase, ...]
    cancel_at: datetime | None = None
    cancel_at_period_end: bool = False
    canceled_time: datetime | None = None
    metadata: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    def schedule(self, first_version: PlanVersion, timezone: str) -> Schedule:
        """The billing schedule: the first plan version's cycle, on the customer's calendar.

        Plan changes keep the billing cycle the subscription started with, so history never
        re-partitions. A cancellation at period end ends the period in force at cancel time.
        """
        base = Schedule(self.start, first_version.interval, first_version.interval_count, self.anchor, timezone)
        end = self.cancel_at
        if end is None and self.cancel_at_period_end:
            in_force = period_containing(base, self.canceled_time or self.start)
            end = in_force.end if in_force else None
        if end is None:
            return base
        return Schedule(self.start, base.interval, base.count, base.anchor, timezone, max(end, self.start))

    def phases_over(self, start: datetime, end: datetime) -> list[tuple[Phase, datetime, datetime]]:
        """The phases in force during [start, end), each with the sub-range it covers."""
        parts = []
        for phase in self.phases:
            part_start = max(start, phase.start)
            part_end = min(end, phase.end) if phase.end is not None else end
            if part_start < part_end:
                parts.append((phase, part_start, part_end))
        return parts

    def phase_at(self, instant: datetime) -> Phase | None:
        for phase in self.phases:
            if phase.start <= instant and (phase.end is None or instant < phase.end):
                return phase
        return None
