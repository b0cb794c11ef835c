"""Which subscription a piece of usage belongs to (docs/billing-attribution.md).

An event or usage record may name its subscription; it must then be one of its customer's.
When it names none, it belongs to the customer's one subscription whose plan version in force
at the usage's instant charges a meter the usage feeds. Several such subscriptions: the
sender must name one (refused). None: the usage is kept unattributed (counted for the
customer; an invoice takes it only as docs/billing-attribution.md says).

Pure. Instants are integer microseconds since the epoch, as on the events hot path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from tally.errors import Violation

SUBSCRIPTION_NOT_FOUND = "SUBSCRIPTION_NOT_FOUND"
SUBSCRIPTION_OF_ANOTHER_CUSTOMER = "SUBSCRIPTION_OF_ANOTHER_CUSTOMER"
SUBSCRIPTION_AMBIGUOUS = "SUBSCRIPTION_AMBIGUOUS"
MAX_SUBSCRIPTION_REF_CHARS = 256
# Shown in an ambiguity violation, at most this many candidate ids.
_SHOWN_CANDIDATES = 5


class SubscriptionRef(NamedTuple):
    """A subscription named by Tally id or by the caller's external id."""

    id: str = ""
    external_id: str = ""

    def describe(self) -> str:
        return f"id {self.id!r}" if self.id else f"external_id {self.external_id!r}"

    def canonical(self) -> str:
        """How the reference enters an event's payload hash (a retry names it the same way)."""
        return f"id:{self.id}" if self.id else f"external_id:{self.external_id}"


class NamedSubscription(NamedTuple):
    """What a named subscription resolved to."""

    id: str
    customer_id: str


class Coverage(NamedTuple):
    """One stretch of a subscription: the meters its plan version charges over [start, end)."""

    subscription_id: str
    start: int
    # None: open-ended.
    end: int | None
    meter_keys: frozenset[str]


def ref_violation(ref: SubscriptionRef, field: str) -> Violation | None:
    """A malformed reference (both or neither set is decided by the mapping)."""
    value = ref.id or ref.external_id
    if not value.strip():
        return Violation(field, "must name a subscription by id or external_id", "SUBSCRIPTION_REF_EMPTY")
    if "\x00" in value:
        return Violation(field, "must not contain NUL characters", "INVALID_CHARACTER")
    if len(value) > MAX_SUBSCRIPTION_REF_CHARS:
        return Violation(field, f"must be at most {MAX_SUBSCRIPTION_REF_CHARS} characters", "SUBSCRIPTION_REF_TOO_LONG")
    return None


def check_named(
    ref: SubscriptionRef, found: NamedSubscription | None, customer_id: str, field: str
) -> tuple[str, Violation | None]:
    """The named subscription's id, or the violation that refuses the usage."""
    if found is None:
        return "", Violation(field, f"unknown subscription {ref.describe()}", SUBSCRIPTION_NOT_FOUND)
    if found.customer_id != customer_id:
        return "", Violation(
            field, f"subscription {ref.describe()} belongs to another customer", SUBSCRIPTION_OF_ANOTHER_CUSTOMER
        )
    return found.id, None


def relevant_stretches(coverage: Sequence[Coverage], meter_keys: frozenset[str]) -> tuple[tuple[str, int, int | None], ...]:
    """(subscription id, start, end) of the stretches charging one of ``meter_keys``."""
    return tuple((c.subscription_id, c.start, c.end) for c in coverage if not c.meter_keys.isdisjoint(meter_keys))


def pick(stretches: Sequence[tuple[str, int, int | None]], at: int) -> tuple[str, list[str]]:
    """(the one subscription whose stretch holds ``at`` or '', every candidate when several do)."""
    found = ""
    several: list[str] = []
    for subscription_id, start, end in stretches:
        if start <= at and (end is None or at < end) and subscription_id != found:
            if found:
                several = several or [found]
                if subscription_id not in several:
                    several.append(subscription_id)
            else:
                found = subscription_id
    return ("", several) if several else (found, several)


def ambiguity(candidates_found: Sequence[str], field: str) -> Violation:
    """The violation refusing unnamed usage that several subscriptions charge."""
    shown = ", ".join(candidates_found[:_SHOWN_CANDIDATES]) + (" ..." if len(candidates_found) > _SHOWN_CANDIDATES else "")
    return Violation(
        field,
        f"{len(candidates_found)} subscriptions of the customer charge this usage at its time ({shown}); name one",
        SUBSCRIPTION_AMBIGUOUS,
    )


def attribute(coverage: Sequence[Coverage], meter_keys: frozenset[str], at: int, field: str) -> tuple[str, Violation | None]:
    """The subscription of unnamed usage ('' when none), or the violation when several qualify."""
    subscription_id, several = pick(relevant_stretches(coverage, meter_keys), at)
    return (subscription_id, None) if not several else ("", ambiguity(several, field))
