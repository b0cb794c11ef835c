"""What happened to each event of a send: accepted, duplicate or rejected."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import NamedTuple

from tally.errors import Violation


class EventStatus(enum.Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


class EventOutcome(NamedTuple):
    """One per event of a send (a NamedTuple: built once per event on the hot path)."""

    index: int
    status: EventStatus
    event_id: str = ""
    idempotency_key: str = ""
    violations: tuple[Violation, ...] = ()


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    outcomes: list[EventOutcome] = field(default_factory=list)

    def count(self, status: EventStatus) -> int:
        return sum(1 for o in self.outcomes if o.status is status)
