"""Usage thresholds and when they fire: once per crossing per period."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal

from tally.domain.periods import Anchor, Interval, Period, Schedule, period_containing
from tally import wire
from tally.errors import Violations

UTC = timezone.utc
_FALLBACK_START = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class NewThreshold:
    """Input of CreateThreshold: scoped to a plan or a customer, absolute or percent of included."""

    meter_key: str
    plan_key: str | None
    customer_id: str | None
    absolute_units: Decimal | None
    percent_of_included: Decimal | None
    name: str = ""

    def validate(self, known_meter: bool) -> None:
        problems = Violations("threshold")
        wire.check_text(problems, "name", self.name, max_chars=wire.MAX_NAME_CHARS)
        wire.check_text(problems, "plan_key", self.plan_key or "", max_chars=wire.MAX_KEY_CHARS)
        wire.check_text(problems, "customer_id", self.customer_id or "", max_chars=wire.MAX_ID_CHARS)
        if not self.meter_key:
            problems.add("meter_key", "is required", "REQUIRED")
        elif not wire.check_text(problems, "meter_key", self.meter_key, max_chars=wire.MAX_KEY_CHARS):
            pass
        elif not known_meter:
            problems.add("meter_key", f"no meter with key {self.meter_key!r}", "UNKNOWN_METER")
        if not self.plan_key and not self.customer_id:
            problems.add("scope", "set plan_key or customer_id", "REQUIRED")
        if self.absolute_units is None and self.percent_of_included is None:
            problems.add("level", "set absolute_units or percent_of_included", "REQUIRED")
        if self.absolute_units is not None and not (self.absolute_units.is_finite() and self.absolute_units > 0):
            problems.add("absolute_units", "must be a number > 0", "INVALID_LEVEL")
        if self.percent_of_included is not None and not (
            self.percent_of_included.is_finite() and self.percent_of_included > 0
        ):
            problems.add("percent_of_included", "must be a number > 0", "INVALID_LEVEL")
        problems.raise_if_any("invalid threshold")


@dataclass(frozen=True)
class Threshold:
    id: str
    meter_key: str
    plan_key: str | None
    customer_id: str | None
    absolute_units: Decimal | None
    percent_of_included: Decimal | None
    name: str
    create_time: datetime

    def applies_to(self, customer_id: str, plan_key: str | None) -> bool:
        if self.customer_id is not None:
            return self.customer_id == customer_id
        return plan_key is not None and self.plan_key == plan_key

    def units(self, included_units: Decimal | None) -> Decimal | None:
        """The level in units; a percent threshold needs the plan's included units (else None)."""
        if self.absolute_units is not None:
            return self.absolute_units
        if included_units is None or included_units <= 0 or self.percent_of_included is None:
            return None
        return wire.EXACT.scaleb(wire.EXACT.multiply(included_units, self.percent_of_included), -2)


@dataclass(frozen=True)
class Alert:
    id: str
    sequence: int
    threshold_id: str
    customer_id: str
    meter_key: str
    period_start: datetime
    period_end: datetime
    threshold_units: Decimal
    usage: Decimal
    fire_time: datetime


def crossed(usage: Decimal, level: Decimal) -> bool:
    """A level is crossed once usage reaches it."""
    return usage >= level


def calendar_month(instant: datetime, time_zone: str) -> Period:
    """The calendar month holding ``instant`` in ``time_zone``: the period of a customer with no subscription."""
    schedule = Schedule(start=_FALLBACK_START, interval=Interval.MONTH, anchor=Anchor.CALENDAR, timezone=time_zone)
    period = period_containing(schedule, instant)
    assert period is not None  # every instant after 1970 is in some month
    return period


def alert_period(schedule: Schedule | None, instant: datetime, time_zone: str) -> Period:
    """The period an alert belongs to: the subscription's billing period, else the calendar month."""
    if schedule is not None:
        period = period_containing(schedule, instant)
        if period is not None:
            return period
    return calendar_month(instant, time_zone)
