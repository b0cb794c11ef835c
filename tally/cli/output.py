"""Output for the CLI: rich tables for people, JSON for scripts (--json), readable errors."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from rich.console import Console

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
