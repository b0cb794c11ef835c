"""Builders and log readers shared by the ingest tests."""

from __future__ import annotations

import datetime as dt
import uuid

import grpc
from google.protobuf import timestamp_pb2

from tally.grpc_errors import error_info, field_violations
from tally_gen.common.v1 import common_pb2
from tally_gen.ingest.v1 import ingest_pb2


def ts(instant: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(instant)
    return stamp


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def event(
    customer,
    *,
    key: str = "",
    event_type: str = "api_request",
    timestamp: dt.datetime | None = None,
    properties: dict | None = None,
    by_external_id: bool = True,
) -> ingest_pb2.Event:
    ref = (
        common_pb2.CustomerRef(external_id=customer.external_id)
        if by_external_id
        else common_pb2.CustomerRef(id=customer.id)
    )
    message = ingest_pb2.Event(idempotency_key=key, event_type=event_type, customer=ref)
    if timestamp is not None:
        message.timestamp.CopyFrom(ts(timestamp))
    if properties is not None:
        message.properties.update(properties)
    return message


async def expect_error(call, code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        assert error.code() == code, f"{error.code()} {error.details()}"
        return error
    raise AssertionError(f"expected {code}, the call succeeded")


def violations(error) -> list[tuple[str, str]]:
    return field_violations(error)


def reason(error) -> str:
    info = error_info(error)
    return info.reason if info else ""


async def log_cursor_at_head(ingest) -> str:
    """A cursor after everything committed so far."""
    cursor = ""
    while True:
        page = await ingest.ReadLog(ingest_pb2.ReadLogRequest(cursor=cursor, max_entries=10_000))
        cursor = page.next_cursor
        if page.caught_up:
            return cursor


def entry_key(entry: ingest_pb2.LogEntry) -> str:
    kind = entry.WhichOneof("entry")
    return getattr(entry, kind).idempotency_key


async def read_log_after(ingest, cursor: str, until_keys: set[str], *, max_entries: int = 1000) -> list[ingest_pb2.LogEntry]:
    """Entries after ``cursor`` until every key in ``until_keys`` has shown up.

    A reader only gets rows below the oldest open transaction on the server, so a committed
    row may show up a little later than its commit; "caught up" alone proves nothing.
    """
    entries = []
    missing = set(until_keys)
    while missing:
        page = await ingest.ReadLog(ingest_pb2.ReadLogRequest(cursor=cursor, max_entries=max_entries, wait_millis=1000))
        entries.extend(page.entries)
        missing -= {entry_key(e) for e in page.entries}
        cursor = page.next_cursor
    return entries


async def read_log_through_sentinel(stack, cursor: str, customer) -> list[ingest_pb2.LogEntry]:
    """Every entry committed before now: sends one more event and reads until it shows up.

    The sentinel's transaction id is above every transaction that finished before it, so once
    it is served, so is everything committed earlier.
    """
    sentinel = event(customer, key=f"sentinel-{uuid.uuid4().hex}", event_type="sentinel")
    await stack.ingest.SendEvent(ingest_pb2.SendEventRequest(event=sentinel))
    entries = await read_log_after(stack.ingest, cursor, {sentinel.idempotency_key})
    return [e for e in entries if entry_key(e) != sentinel.idempotency_key]


def logged_keys(entries, kind: str = "event") -> list[str]:
    return [getattr(e, kind).idempotency_key for e in entries if e.WhichOneof("entry") == kind]
