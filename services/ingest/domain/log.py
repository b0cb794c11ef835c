"""The ingest log as the meter reads it: entries in (xid, position) order and a cursor.

Why (xid, position): positions come from a sequence when a row is written, not when its
transaction commits, so a reader that resumes after position 102 would miss a 101 committed
later. Instead every row records its transaction id, and a reader only serves rows of
transactions below the snapshot's xmin, i.e. transactions that have all finished. Any row that
becomes visible later belongs to a transaction at or above that xmin, hence sorts after
everything already served.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import NamedTuple

from tally.errors import InvalidInput, Violation

DEFAULT_MAX_ENTRIES = 1000
MAX_ENTRIES = 10_000
MAX_WAIT_MILLIS = 60_000


EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def from_micros(micros: int) -> dt.datetime:
    return EPOCH + dt.timedelta(microseconds=micros)


# Log entries are NamedTuples with instants as integer microseconds: a page holds up to 10,000
# of them and the meter reads the log as fast as ingest writes it.
class LogPosition(NamedTuple):
    """Where an entry sorts: its transaction id, then its position."""

    xid: int
    position: int


START = LogPosition(0, 0)


@dataclass(frozen=True, slots=True)
class LogCursor:
    """Everything up to ``after`` has been served; ``watermark`` is the last one reported."""

    after: LogPosition = START
    watermark: dt.datetime | None = None


class LoggedEvent(NamedTuple):
    event_id: str
    idempotency_key: str
    event_type: str
    customer_id: str
    timestamp_micros: int
    # Serialized properties Struct, as stored.
    properties: bytes
    # '' when unattributed.
    subscription_id: str = ""

    @property
    def timestamp(self) -> dt.datetime:
        return from_micros(self.timestamp_micros)


@dataclass(frozen=True, slots=True)
class LoggedUsage:
    usage_record_id: str
    idempotency_key: str
    customer_id: str
    meter_key: str
    quantity: Decimal
    memo: str
    timestamp: dt.datetime
    range_start: dt.datetime | None
    range_end: dt.datetime | None
    dimensions: dict[str, str]
    subscription_id: str = ""


class LoggedVoid(NamedTuple):
    reason: str
    event: LoggedEvent


class LogEntry(NamedTuple):
    at: LogPosition
    ingest_micros: int
    body: LoggedEvent | LoggedUsage | LoggedVoid

    @property
    def ingest_time(self) -> dt.datetime:
        return from_micros(self.ingest_micros)


@dataclass(frozen=True, slots=True)
class LogHead:
    """The newest committed entry (position 0 when the log is empty) and its transaction id."""

    position: int = 0
    ingest_time: dt.datetime | None = None
    xid: int = 0


@dataclass(frozen=True, slots=True)
class LogPage:
    entries: list[LogEntry]
    next_cursor: LogCursor
    caught_up: bool
    head: LogHead


def clamp_max_entries(requested: int) -> int:
    """0 means the default; larger than the maximum is capped; negative is invalid."""
    if requested < 0:
        raise InvalidInput("max_entries must not be negative", violations=[Violation("max_entries", "must be >= 0")])
    if requested == 0:
        return DEFAULT_MAX_ENTRIES
    return min(requested, MAX_ENTRIES)


def next_page(
    entries: list[LogEntry],
    *,
    cursor: LogCursor,
    limit: int,
    horizon: int,
    watermark: dt.datetime,
    head: LogHead = LogHead(),
) -> LogPage:
    """Cut a merged, ordered candidate list (up to limit + 1 entries) into the page to serve.

    ``horizon`` is the snapshot xmin the candidates were read below; ``watermark`` the instant
    before which every entry ingested was visible below that horizon; ``head`` the newest
    committed entry, read after the candidates.

    The page is caught up only when no committed entry lies beyond its cursor: everything
    below the horizon is served, and the head lies below it too. An entry that committed
    above the horizon (its transaction began after an older writer still running, or it
    committed while the page was read) keeps the reader reading.
    """
    truncated = len(entries) > limit
    served = entries[:limit]
    if truncated:
        # The previous watermark stays true: more entries lie beyond, in unknown ingest order.
        return LogPage(served, LogCursor(served[-1].at, cursor.watermark), False, head)
    # Everything below the horizon is served: resume at the horizon itself.
    after = max(LogPosition(horizon, 0), cursor.after)
    mark = watermark if cursor.watermark is None else max(watermark, cursor.watermark)
    caught_up = head.position == 0 or LogPosition(head.xid, head.position) < after
    return LogPage(served, LogCursor(after, mark), caught_up, head)
