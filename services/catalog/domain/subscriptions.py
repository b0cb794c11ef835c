"""Subscriptions: a customer on a plan version over time, as a list of phases."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from tally.errors import FailedPrecondition, InvalidInput, Violation

ANCHORS = frozenset({"CALENDAR", "ANNIVERSARY"})


@dataclass(frozen=True)
class Phase:
    plan_version_id: str
    plan_key: str
    plan_version: int
    start_time: datetime
    # None on the current, open phase.
    end_time: datetime | None = None


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
