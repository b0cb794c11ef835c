"""What the invoice service knows of the catalog: plan versions, customers, subscriptions.

These are read-only snapshots of catalog entities (fetched over gRPC and converted in
mapping.py). Pure: no grpc, no protobuf, no SQL.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from tally.domain.periods import Anchor, Interval, Schedule, period_containing


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
class FixedFee:
    key: str
    name: str
    amount: Decimal
    timing: FeeTiming = FeeTiming.IN_ARREARS
    prorate: bool = True


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

    @property
    def group_by(self) -> tuple[str, ...]:
        """The meter dimensions the dimension prices need, in a stable order."""
        keys: list[str] = []
        for dimension_price in self.dimension_prices:
            for key, _ in dimension_price.match:
                if key not in keys:
                    keys.append(key)
        return tuple(keys)


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
