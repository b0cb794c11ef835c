"""Subscriptions: a customer on a plan version over time, as a list of phases."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

from services.catalog.domain.common import check_decimal
from services.catalog.domain.plans import PlanVersion, Price, check_money, validate_price
from tally import currency
from tally.errors import FailedPrecondition, InvalidInput, Violation, Violations

ANCHORS = frozenset({"CALENDAR", "ANNIVERSARY"})
MAX_EXTERNAL_ID_LENGTH = 256
# Longest id or external id a lookup accepts; longer ones cannot name anything.
MAX_REF_LENGTH = 256


def check_reference_text(violations: Violations, field: str, value: str) -> bool:
    """A caller's reference: at most 256 characters, no control characters (NUL included)."""
    if len(value) > MAX_REF_LENGTH:
        violations.add(field, f"must be at most {MAX_REF_LENGTH} characters", "TOO_LONG")
        return False
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        violations.add(
            field, "must not contain control characters (NUL, tab, newline...)", "CONTROL_CHARACTER"
        )
        return False
    return True


@dataclass(frozen=True)
class SubscriptionRef:
    """Names a subscription by Tally id or by the caller's external_id (exactly one is set)."""

    id: str = ""
    external_id: str = ""
    # The request field this came from, for violations ("subscription.external_id", "id").
    field: str = "id"

    def validate(self) -> None:
        v = Violations()
        if not self.id and not self.external_id:
            v.add(
                self.field,
                "name the subscription: set id or subscription.id / subscription.external_id",
                "REQUIRED",
            )
        else:
            check_reference_text(v, self.field, self.id or self.external_id)
        v.raise_if_any("invalid subscription reference")

    def __str__(self) -> str:
        return f"external_id {self.external_id!r}" if self.external_id else repr(self.id)


MAX_PRICE_OVERRIDES = 200
_USAGE_FIELDS = ("price", "included_units", "minimum_amount", "maximum_amount")


@dataclass(frozen=True)
class PriceOverride:
    """This subscription's replacement for parts of one charge of its phase's plan version.

    None keeps the plan's value. Usage charges take price (the default price; dimension
    prices and price points keep the plan's), included_units, minimum_amount and
    maximum_amount; fixed fees take amount.
    """

    charge_key: str
    price: Price | None = None
    included_units: Decimal | None = None
    minimum_amount: Decimal | None = None
    maximum_amount: Decimal | None = None
    amount: Decimal | None = None


def validate_price_overrides(
    overrides: tuple[PriceOverride, ...], version: PlanVersion, prefix: str = "price_overrides"
) -> Violations:
    """Every problem of ``overrides`` against the charges of ``version``, at once."""
    v = Violations()
    if len(overrides) > MAX_PRICE_OVERRIDES:
        v.add(prefix, f"at most {MAX_PRICE_OVERRIDES} price overrides", "TOO_MANY")
        return v
    charges = {c.key: c for c in version.content.charges}
    minor = (
        currency.minor_units(version.content.currency)
        if currency.is_known(version.content.currency)
        else None
    )
    seen: set[str] = set()
    for i, override in enumerate(overrides):
        ov = Violations(f"{prefix}[{i}]")
        charge = charges.get(override.charge_key)
        if not override.charge_key:
            ov.add("charge_key", "is required", "REQUIRED")
        elif charge is None:
            known = ", ".join(sorted(charges)) or "none"
            ov.add(
                "charge_key",
                f"plan {version.plan_key} v{version.version} has no charge {override.charge_key!r} "
                f"(its charges: {known})",
                "UNKNOWN_CHARGE",
            )
        elif override.charge_key in seen:
            ov.add("charge_key", f"charge {override.charge_key!r} is overridden twice", "DUPLICATE")
        seen.add(override.charge_key)
        given = [name for name in (*_USAGE_FIELDS, "amount") if getattr(override, name) is not None]
        if not given:
            ov.add(
                "charge_key", "an override must replace something: price, amount, included_units...", "EMPTY"
            )
        if charge is not None and charge.fixed is not None:
            for name in _USAGE_FIELDS:
                if getattr(override, name) is not None:
                    ov.add(
                        name, f"charge {charge.key!r} is a fixed fee: override its amount", "UNEXPECTED_FIELD"
                    )
            check_money(ov, "amount", override.amount, minor, required=False)
        if charge is not None and charge.usage is not None:
            if override.amount is not None:
                ov.add(
                    "amount",
                    f"charge {charge.key!r} is a usage charge: override its price",
                    "UNEXPECTED_FIELD",
                )
            if override.price is not None:
                validate_price(ov.nested("price"), override.price, into=ov)
            check_decimal(ov, "included_units", override.included_units)
            check_money(ov, "minimum_amount", override.minimum_amount, minor, required=False)
            check_money(ov, "maximum_amount", override.maximum_amount, minor, required=False)
            low = (
                override.minimum_amount
                if override.minimum_amount is not None
                else charge.usage.minimum_amount
            )
            high = (
                override.maximum_amount
                if override.maximum_amount is not None
                else charge.usage.maximum_amount
            )
            if low is not None and high is not None and low.is_finite() and high.is_finite() and low > high:
                field = "maximum_amount" if override.maximum_amount is not None else "minimum_amount"
                ov.add(field, f"minimum ({low}) would exceed maximum ({high})", "MAXIMUM_BELOW_MINIMUM")
        v.extend(ov)
    return v


@dataclass(frozen=True)
class Phase:
    plan_version_id: str
    plan_key: str
    plan_version: int
    start_time: datetime
    # None on the current, open phase.
    end_time: datetime | None = None
    price_overrides: tuple[PriceOverride, ...] = ()


@dataclass(frozen=True)
class Subscription:
    id: str
    customer_id: str
    start_time: datetime
    anchor: str
    cancel_at_period_end: bool
    cancel_at: datetime | None
    canceled_time: datetime | None
    phases: tuple[Phase, ...]
    metadata: tuple[tuple[str, str], ...]
    created_at: datetime
    # The caller's own unique reference; "" when none was given.
    external_id: str = ""

    @property
    def current_phase(self) -> Phase:
        return self.phases[-1]

    def status(self, now: datetime) -> str:
        """ENDED once the cancel instant has passed; CANCELED while a cancellation is pending."""
        if self.cancel_at is not None and self.cancel_at <= now:
            return "ENDED"
        if self.cancel_at is not None or self.cancel_at_period_end:
            return "CANCELED"
        return "ACTIVE"

    def cancel(self, *, now: datetime, at_period_end: bool, at: datetime | None) -> Subscription:
        """Schedule the end at the period end (the invoice engine knows where that is) or at ``at``."""
        if self.status(now) == "ENDED":
            raise FailedPrecondition("the subscription has already ended", reason="SUBSCRIPTION_ENDED")
        if at is not None:
            if at < self.start_time:
                raise InvalidInput(
                    "cancel instant before the subscription start",
                    violations=[
                        Violation("at", "must not be before the subscription's start_time", "BEFORE_START")
                    ],
                )
            return replace(self, cancel_at=at, cancel_at_period_end=False, canceled_time=now)
        if not at_period_end:
            raise InvalidInput(
                "say when to cancel",
                violations=[Violation("when", "set at_period_end=true or an instant in at", "REQUIRED")],
            )
        return replace(self, cancel_at=None, cancel_at_period_end=True, canceled_time=now)

    def change_plan(self, phase: Phase, *, now: datetime) -> Subscription:
        """Close the open phase at ``phase.start_time`` and open ``phase``; history is kept."""
        if self.status(now) == "ENDED":
            raise FailedPrecondition("the subscription has ended", reason="SUBSCRIPTION_ENDED")
        current = self.current_phase
        if phase.start_time <= current.start_time:
            raise FailedPrecondition(
                "a plan change must take effect after the current phase started",
                violations=[
                    Violation(
                        "effective_time",
                        f"must be after the current phase's start ({current.start_time.isoformat()})",
                        "BEFORE_CURRENT_PHASE",
                    )
                ],
                reason="EFFECTIVE_TIME_TOO_EARLY",
            )
        if self.cancel_at is not None and phase.start_time >= self.cancel_at:
            raise FailedPrecondition(
                "the subscription ends before the change would take effect", reason="AFTER_CANCELLATION"
            )
        closed = replace(current, end_time=phase.start_time)
        return replace(self, phases=(*self.phases[:-1], closed, phase))
