"""`tally events`: send one event, or import a CSV/NDJSON file over the streaming sender."""

from __future__ import annotations

import asyncio
import json
import re
import time
from decimal import Decimal
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from tally.cli.customers import customer_ref, parse_pairs, timestamp
from tally.cli.importing import ImportLine, detect_format, read_import_file
from tally.cli.output import MODE, console, err_console, print_error, print_json
from tally.cli.rpc import TIMEOUT, call, fail
from tally.client import AsyncEventSender, EventOutcome, SenderError, to_struct
from tally.config import service_address
from tally_gen.ingest.v1 import ingest_pb2

_BATCH_INDEX = re.compile(r"^events\[\d+\]\.?")

events_app = typer.Typer(help="Send usage events to ingest.", no_args_is_help=True)


@events_app.command("send")
def send(
    event_type: str = typer.Option(..., "--type", "-t", help="Event type, such as api_request"),
    customer: str = typer.Option(None, "--customer", "-c", help="The customer's external id"),
    customer_id: str = typer.Option(None, "--customer-id", help="Tally's customer id instead"),
    prop: list[str] = typer.Option([], "--property", "-p", help="key=value, repeatable"),
    properties_json: str = typer.Option(None, "--properties", help="Properties as a JSON object"),
    when: str = typer.Option(None, "--timestamp", help="When it happened, ISO 8601 (default: now)"),
    key: str = typer.Option(
        "", "--key", help="Idempotency key. Without one ingest generates a new key: each run is a new event"
    ),
    subscription: str = typer.Option(
        None, "--subscription", help="The subscription the usage belongs to (id; default: ingest attributes it)"
    ),
) -> None:
    """Send one event and print whether it was stored or was a duplicate.

    Without --key every run stores a new event: pass --key to make a retry count once.
    """
    properties: dict = {}
    if properties_json:
        try:
            properties = json.loads(properties_json, parse_float=Decimal)
        except json.JSONDecodeError as error:
            fail("invalid --properties", [("--properties", error.msg)])
        if not isinstance(properties, dict):
            fail("invalid --properties", [("--properties", "must be a JSON object")])
    properties.update(parse_pairs(prop, "--property"))
    event = ingest_pb2.Event(idempotency_key=key, event_type=event_type, customer=customer_ref(customer, customer_id))
    if properties:
        event.properties.CopyFrom(to_struct(properties))
    if when:
        event.timestamp.CopyFrom(timestamp(when, "--timestamp"))
    if subscription is not None:
        event.subscription.id = subscription
    reply = call("ingest", lambda stub: stub.SendEvent(ingest_pb2.SendEventRequest(event=event), timeout=TIMEOUT))
    if MODE.json:
        print_json({
            "event_id": reply.event_id,
            "idempotency_key": reply.idempotency_key,
            "duplicate": reply.duplicate,
            "subscription_id": reply.subscription_id,
        })
        return
    state = "duplicate (already stored)" if reply.duplicate else "stored"
    attributed = f"  subscription {reply.subscription_id}" if reply.subscription_id else ""
    console().print(f"{state}: {reply.event_id}  key {reply.idempotency_key}{attributed}", highlight=False)


class EventsPerSecond(ProgressColumn):
    """Acknowledged events per second since the start."""

    def render(self, task) -> Text:
        elapsed = task.elapsed or 0
        rate = task.completed / elapsed if elapsed > 0 else 0
        return Text(f"{rate:,.0f} events/s", style="progress.data.speed")


@events_app.command("import")
def import_file(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="CSV or NDJSON file"),
    file_format: str = typer.Option(None, "--format", help="csv or ndjson (default: from the file name)"),
    batch_size: int = typer.Option(500, "--batch-size", min=1, max=1000),
) -> None:
    """Import usage events from a file; re-importing the same file counts nothing twice.

    Columns (CSV) or keys (NDJSON): event_type, customer (external id) or customer_id,
    timestamp (ISO 8601), optional idempotency_key, optional properties (JSON object); any other
    CSV column is a property. Exit code 1 when any line was rejected.
    """
    chosen = detect_format(file, file_format)
    if chosen not in ("csv", "ndjson"):
        fail("invalid --format", [("--format", "must be csv or ndjson")])
    lines = list(read_import_file(file, chosen))
    rejected: list[tuple[int, str]] = [(line.line, "; ".join(line.problems)) for line in lines if line.event is None]
    to_send = [line for line in lines if line.event is not None]
    address = service_address("ingest")
    started = time.monotonic()
    try:
        stats, server_rejections = asyncio.run(_stream(to_send, address, batch_size, show_progress=not MODE.json))
    except SenderError as error:
        print_error(
            {
                "code": error.code.name if error.code else "UNKNOWN",
                "message": f"import stopped: cannot send to ingest at {address}: {error}",
                "reason": "",
                "violations": [],
            }
        )
        raise typer.Exit(1) from None
    rejected.extend(server_rejections)
    rejected.sort()
    elapsed = time.monotonic() - started
    summary = {
        "file": str(file),
        "lines": len(lines),
        "accepted": stats.accepted,
        "duplicate": stats.duplicate,
        "rejected": [{"line": line, "reason": reason} for line, reason in rejected],
        "seconds": round(elapsed, 3),
    }
    if MODE.json:
        print_json(summary)
    else:
        out = console()
        out.print(
            f"{file.name}: {len(lines)} lines, {stats.accepted} accepted, {stats.duplicate} duplicate "
            f"(already imported), {len(rejected)} rejected",
            highlight=False,
        )
        if rejected:
            table = Table(title="rejected lines")
            table.add_column("line", justify="right")
            table.add_column("reason")
            for line, reason in rejected:
                table.add_row(str(line), reason)
            out.print(table)
    if rejected:
        raise typer.Exit(1)


async def _stream(lines: list[ImportLine], address: str, batch_size: int, show_progress: bool):
    lines_by_key: dict[str, list[int]] = {}
    for line in lines:
        lines_by_key.setdefault(line.event.idempotency_key, []).append(line.line)
    rejections: list[tuple[int, str]] = []
    progress = Progress(
        TextColumn("importing"),
        BarColumn(),
        MofNCompleteColumn(),
        EventsPerSecond(),
        TimeElapsedColumn(),
        console=err_console(),
        disable=not show_progress,
    )
    task = progress.add_task("import", total=len(lines))

    def on_result(outcome: EventOutcome) -> None:
        progress.advance(task)
        if outcome.status == "rejected":
            numbers = lines_by_key.get(outcome.idempotency_key) or [0]
            line = numbers.pop(0) if len(numbers) > 1 else numbers[0]
            # Fields name the event's place in its batch (events[3].timestamp): keep the field.
            reason = "; ".join(
                f"{_BATCH_INDEX.sub('', field)}: {description}" for field, description in outcome.violations
            )
            rejections.append((line, reason or "rejected by ingest"))

    with progress:
        sender = AsyncEventSender(address, batch_size=batch_size, flush_interval=0.05, max_reconnects=5,
                                  on_result=on_result)
        async with sender:
            for line in lines:
                await sender.send_event(line.event)
    return sender.stats, rejections
