"""Output for the CLI: rich tables for people, JSON for scripts (--json), readable errors."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from rich.cells import cell_len
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from tally.grpc_errors import error_info, field_violations


@dataclass
class OutputMode:
    json: bool = False


MODE = OutputMode()


def console() -> Console:
    # Built per call: CliRunner swaps sys.stdout between invocations.
    return Console(file=sys.stdout, soft_wrap=True)


def err_console() -> Console:
    return Console(file=sys.stderr, soft_wrap=True)


# Widest a table may grow to, beyond the terminal, rather than cut a value.
MAX_TABLE_WIDTH = 10_000


def print_table(table: Table, out: Console | None = None) -> None:
    """Print ``table`` with no value ever cut short, whatever the terminal width.

    Columns made with ``no_wrap=True`` (ids, invoice numbers, external ids, instants, amounts)
    keep each value whole on one line; every other column wraps (folds) instead of ending in
    an ellipsis. When even that does not fit the terminal, the table is printed wider than
    the terminal (it overflows; the terminal or a pager wraps or scrolls it).
    """
    out = out or console()
    for column in table.columns:
        if column.no_wrap:
            widest = max((cell_len(str(cell)) for cell in column.cells), default=0)
            column.min_width = max(column.min_width or 0, widest, cell_len(str(column.header)))
        else:
            column.overflow = "fold"
    needed = Measurement.get(out, out.options.update(max_width=MAX_TABLE_WIDTH), table).minimum
    if needed > out.width:
        out = Console(file=out.file, width=needed, soft_wrap=True)
    out.print(table)


def fmt_quantity(decimal) -> str:
    """A quantity exactly as the service gave it, in plain notation: "11262.0" -> "11262", "0.25" -> "0.25".

    An integral value loses only a fraction of zeros (a JSON number 11262 arrives as the float
    11262.0); any other value keeps every digit it came with ("14.750" stays "14.750").
    """
    text = fmt_decimal(decimal)
    try:
        value = Decimal(text)
    except InvalidOperation:
        return text
    if not value.is_finite():
        return text
    if value == value.to_integral_value():
        return format(value.to_integral_value(), "f")
    return format(value, "f")


def to_dict(message: Message) -> dict[str, Any]:
    """A proto message as JSON-ready data, with proto field names and enum names."""
    return MessageToDict(message, preserving_proto_field_name=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def fmt_time(timestamp) -> str:
    """A Timestamp as ISO 8601 UTC, or "" when unset."""
    if timestamp is None or (timestamp.seconds == 0 and timestamp.nanos == 0):
        return ""
    return timestamp.ToDatetime(tzinfo=timezone.utc).isoformat().replace("+00:00", "Z")


def fmt_decimal(decimal) -> str:
    return decimal.value if decimal is not None and decimal.value else "0"


def enum_label(enum_type, value: int, prefix: str) -> str:
    """BILLING_ANCHOR_CALENDAR -> calendar."""
    return enum_type.Name(value).removeprefix(prefix).lower()


def parse_time(text: str) -> datetime:
    """ISO 8601 instant or date; a value without an offset is read as UTC."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


_CODE_WORDS = {
    grpc.StatusCode.INVALID_ARGUMENT: "invalid request",
    grpc.StatusCode.NOT_FOUND: "not found",
    grpc.StatusCode.ALREADY_EXISTS: "already exists",
    grpc.StatusCode.FAILED_PRECONDITION: "not possible now",
    grpc.StatusCode.PERMISSION_DENIED: "permission denied",
    grpc.StatusCode.UNAUTHENTICATED: "not authenticated (set TALLY_SERVICE_API_KEY)",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "rate limited",
    grpc.StatusCode.DEADLINE_EXCEEDED: "timed out",
    grpc.StatusCode.UNIMPLEMENTED: "not implemented by this server",
}


def describe_rpc_error(error: grpc.aio.AioRpcError, service: str, address: str) -> dict[str, Any]:
    """What went wrong, as data: code, message, reason and field violations."""
    code = error.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        message = (
            f"cannot reach {service} at {address} ({error.details()}); is it running? "
            f"Set TALLY_{service.upper()}_ADDR to its host:port."
        )
    else:
        message = f"{service}: {_CODE_WORDS.get(code, code.name.lower())}: {error.details()}"
    info = error_info(error)
    return {
        "code": code.name,
        "message": message,
        "reason": info.reason if info is not None else "",
        "violations": [{"field": f, "description": d} for f, d in field_violations(error)],
    }


def print_error(description: dict[str, Any]) -> None:
    """Readable lines on stderr, or a JSON object on stdout with --json."""
    if MODE.json:
        print_json({"error": description})
        return
    out = err_console()
    out.print(f"[bold red]error[/]: {description['message']}", highlight=False)
    for violation in description.get("violations", []):
        out.print(f"  - {violation['field']}: {violation['description']}", highlight=False)
    reason = description.get("reason")
    if reason and reason != description.get("code"):
        out.print(f"  reason: {reason}", highlight=False)
    if description.get("request_id"):
        out.print(f"  request id: {description['request_id']} (in the services' logs)", highlight=False)
