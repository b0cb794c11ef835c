"""What happened to each event of a send: accepted, duplicate or rejected."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

from tally.errors import Violation


class EventStatus(enum.Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


class EventOutcome(NamedTuple):
    index: int
    status: EventStatus
    event_id: str = ""
    idempotency_key: str = ""
    violations: tuple[Violation, ...] = ()
    # The subscription the event is attributed to ('' when unattributed or rejected).
    subscription_id: str = ""


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """One status, event id and key per sent event (columns), and the problems of the rejected."""

    statuses: list[EventStatus]
    event_ids: list[str]
    keys: list[str]
    violations: dict[int, tuple[Violation, ...]]
    subscription_ids: list[str] | None = None

    def __len__(self) -> int:
        return len(self.statuses)

    def count(self, status: EventStatus) -> int:
        return self.statuses.count(status)

    def outcome(self, index: int) -> EventOutcome:
        return EventOutcome(
            index,
            self.statuses[index],
            self.event_ids[index],
            self.keys[index],
            self.violations.get(index, ()),
            "" if self.subscription_ids is None else self.subscription_ids[index],
        )

    @property
    def outcomes(self) -> list[EventOutcome]:
        return [self.outcome(i) for i in range(len(self))]
