"""Failure isolation: a record one component cannot process is set aside, not everyone's outage.

A ``Quarantine`` remembers each record (component, kind, id) that failed, with its reason, when
it was first and last met and how often; logs ``record_quarantined`` with the id the first time
(and ``record_quarantine_repeated`` at debug after that); counts it in /metrics
(``tally_quarantined_records_total`` and the ``tally_quarantined_records_current`` gauge); and lists
the most recent for the services' status RPCs. The caller skips the record and goes on.

This registry lives in the process: records that are retried each time they are read (a
catalog row, a subscription at close) are found again after a restart. The meter's applier,
which must skip a log entry exactly once, also stores its quarantined entries in its schema,
in the transaction that moves its cursor (services/meter).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import datetime, timezone

import structlog
from prometheus_client import Counter, Gauge

log = structlog.get_logger()

QUARANTINED_TOTAL = Counter(
    "tally_quarantined_records_total",
    "Records set aside because a component could not process them (first sight of each).",
    ["component", "kind"],
)
QUARANTINED_NOW = Gauge(
    "tally_quarantined_records_current",
    "Records currently set aside by this process, by component.",
    ["component"],
)

MAX_REASON = 500


def describe(error: BaseException) -> str:
    """The reason recorded for ``error``: its type and message, bounded and NUL-free."""
    text = f"{type(error).__name__}: {error}".replace("\x00", "")
    return text[:MAX_REASON]


@dataclass(frozen=True)
class QuarantinedRecord:
    component: str
    kind: str
    id: str
    reason: str
    first_seen: datetime
    last_seen: datetime
    occurrences: int = 1
    position: int = 0


class Quarantine:
    """The records this process has set aside, bounded to the ``keep`` most recent."""

    def __init__(self, keep: int = 1000) -> None:
        self._keep = keep
        self._records: OrderedDict[tuple[str, str, str], QuarantinedRecord] = OrderedDict()
        self._count = 0

    def add(self, component: str, kind: str, record_id: str, error: BaseException | str, *, position: int = 0) -> QuarantinedRecord:
        reason = error if isinstance(error, str) else describe(error)
        key = (component, kind, record_id)
        now = datetime.now(timezone.utc)
        old = self._records.pop(key, None)
        if old is None:
            record = QuarantinedRecord(component, kind, record_id, reason[:MAX_REASON], now, now, 1, position)
            self._count += 1
            QUARANTINED_TOTAL.labels(component, kind).inc()
            log.warning("record_quarantined", component=component, kind=kind, record_id=record_id, reason=reason,
                        position=position or None)
        else:
            record = replace(old, reason=reason[:MAX_REASON], last_seen=now, occurrences=old.occurrences + 1)
            log.debug("record_quarantine_repeated", component=component, kind=kind, record_id=record_id)
        self._records[key] = record
        while len(self._records) > self._keep:
            self._records.popitem(last=False)
        self._publish(component)
        return record

    def release(self, component: str, kind: str, record_id: str) -> None:
        """The record was processed after all (fixed by hand, say): no longer set aside."""
        if self._records.pop((component, kind, record_id), None) is not None:
            log.info("record_released", component=component, kind=kind, record_id=record_id)
            self._publish(component)

    def _publish(self, component: str) -> None:
        QUARANTINED_NOW.labels(component).set(sum(1 for c, _, _ in self._records if c == component))

    def contains(self, component: str, kind: str, record_id: str) -> bool:
        return (component, kind, record_id) in self._records

    @property
    def count(self) -> int:
        """Distinct records set aside since the process started."""
        return self._count

    def records(self, limit: int = 1000) -> list[QuarantinedRecord]:
        """The most recently met first."""
        return list(reversed(self._records.values()))[:limit]


def record_out(record: QuarantinedRecord):
    """As tally.common.v1.QuarantinedRecord."""
    from tally_gen.common.v1 import common_pb2

    out = common_pb2.QuarantinedRecord(
        component=record.component,
        kind=record.kind,
        id=record.id,
        reason=record.reason,
        occurrences=record.occurrences,
        position=record.position,
    )
    out.first_seen.FromDatetime(record.first_seen)
    out.last_seen.FromDatetime(record.last_seen)
    return out
