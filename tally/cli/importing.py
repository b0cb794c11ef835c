"""Reading usage files (CSV, TSV or NDJSON) into ingest events, line by line, for `events import`.

Re-importing a file must count nothing twice. A line without its own idempotency_key gets one
derived from its content and from how many identical lines came before it, so the same file
(or the same file with lines appended or inserted) yields the same keys for the same lines.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from tally.cli.output import parse_time
from tally.client import build_event
from tally_gen.ingest.v1 import ingest_pb2

KNOWN_COLUMNS = ("idempotency_key", "event_type", "customer", "customer_id", "timestamp", "properties")
# File formats and the cell delimiter of the delimited ones.
DELIMITERS = {"csv": ",", "tsv": "\t"}
FORMATS = (*DELIMITERS, "ndjson")


@dataclass(frozen=True)
class ImportLine:
    """One data line of the file: an event to send, or why it cannot be sent."""

    line: int
    event: ingest_pb2.Event | None = None
    problems: tuple[str, ...] = ()


def detect_format(path: Path, explicit: str | None) -> str:
    """The explicit --format, else from the file name: .csv, .tsv (tab-separated), anything else NDJSON."""
    if explicit:
        return explicit
    suffix = path.suffix.lower().lstrip(".")
    return suffix if suffix in DELIMITERS else "ndjson"


def read_import_file(path: Path, file_format: str) -> Iterator[ImportLine]:
    """Every data line of ``path`` (1-based file line numbers), in order."""
    occurrences: Counter[str] = Counter()
    if file_format in DELIMITERS:
        records = _delimited_records(path, DELIMITERS[file_format])
    else:
        records = _ndjson_records(path)
    for line, record, problem in records:
        if problem is not None:
            yield ImportLine(line, problems=(problem,))
            continue
        yield _to_event(line, record, occurrences)


def _delimited_records(path: Path, delimiter: str) -> Iterator[tuple[int, dict[str, Any], str | None]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        for row in reader:
            if None in row:
                yield reader.line_num, {}, f"{len(row[None])} more cells than header columns"
                continue
            yield reader.line_num, {k: v for k, v in row.items() if v not in (None, "")}, None


def _ndjson_records(path: Path) -> Iterator[tuple[int, dict[str, Any], str | None]]:
    with path.open(encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                record = json.loads(text, parse_float=Decimal)
            except json.JSONDecodeError as error:
                yield number, {}, f"not valid JSON: {error.msg} at column {error.colno}"
                continue
            if not isinstance(record, dict):
                yield number, {}, "a line must be a JSON object"
                continue
            yield number, record, None


def derived_key(record: dict[str, Any], occurrence: int) -> str:
    """A stable key from a line's content and its occurrence among identical lines."""
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(f"{canonical}\x1f{occurrence}".encode()).hexdigest()
    return f"imp_{digest[:40]}"


def _to_event(line: int, record: dict[str, Any], occurrences: Counter[str]) -> ImportLine:
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)
    occurrence = occurrences[canonical]
    occurrences[canonical] += 1
    problems: list[str] = []
    event_type = record.get("event_type")
    if not isinstance(event_type, str) or not event_type:
        problems.append("event_type: is required")
    customer, customer_id = record.get("customer"), record.get("customer_id")
    if (customer is None) == (customer_id is None):
        problems.append("customer: give exactly one of customer (external id) or customer_id")
    timestamp = None
    raw_time = record.get("timestamp")
    if raw_time is None:
        problems.append("timestamp: is required, so that a re-import sends the same event")
    else:
        try:
            timestamp = parse_time(str(raw_time))
        except ValueError:
            problems.append(f"timestamp: {raw_time!r} is not an ISO 8601 time")
    properties = _properties(record, problems)
    key = record.get("idempotency_key")
    if key is not None and (not isinstance(key, str) or not key):
        problems.append("idempotency_key: must be a non-empty string")
    if problems:
        return ImportLine(line, problems=tuple(problems))
    event = build_event(
        event_type,
        customer=str(customer) if customer is not None else None,
        customer_id=str(customer_id) if customer_id is not None else None,
        properties=properties,
        timestamp=timestamp,
        idempotency_key=key or derived_key(record, occurrence),
    )
    return ImportLine(line, event=event)


def _properties(record: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    given = record.get("properties")
    if isinstance(given, str):  # a CSV cell holding a JSON object
        try:
            given = json.loads(given, parse_float=Decimal)
        except json.JSONDecodeError:
            problems.append("properties: not a JSON object")
            given = None
    if given is not None and not isinstance(given, dict):
        problems.append("properties: must be a JSON object")
    elif given:
        properties.update(given)
    # Any other column is a property (CSV cells are strings; ingest reads decimals from them).
    for column, value in record.items():
        if column not in KNOWN_COLUMNS:
            properties[column] = value
    return _exact(properties)


def _exact(value: Any) -> Any:
    """Decimals stay exact: non-integers travel as strings, never through float."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**53:
        return str(value)
    if isinstance(value, dict):
        return {k: _exact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_exact(v) for v in value]
    return value
