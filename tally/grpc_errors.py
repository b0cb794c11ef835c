"""The one place that maps domain error categories to gRPC status codes with rich details."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from tally.errors import Category, DomainError

ERROR_DOMAIN = "tally.dev"

# The details travel base64-encoded in one trailer (grpc-status-details-bin) and clients
# refuse metadata over 8 KiB by default (RESOURCE_EXHAUSTED instead of the real error), so
# the details are bounded: the first violations up to a byte budget, each field, description
# and metadata value cut to a length, the count of the rest in the message and ErrorInfo.
MAX_VIOLATION_BYTES = 3000
MAX_FIELD_CHARS = 160
MAX_DESCRIPTION_CHARS = 300
MAX_MESSAGE_CHARS = 600
MAX_METADATA_VALUE_CHARS = 200
MAX_METADATA_ENTRIES = 16

CODES: dict[Category, tuple[grpc.StatusCode, int]] = {
    Category.INVALID: (grpc.StatusCode.INVALID_ARGUMENT, code_pb2.INVALID_ARGUMENT),
    Category.NOT_FOUND: (grpc.StatusCode.NOT_FOUND, code_pb2.NOT_FOUND),
    Category.ALREADY_EXISTS: (grpc.StatusCode.ALREADY_EXISTS, code_pb2.ALREADY_EXISTS),
    Category.PRECONDITION: (grpc.StatusCode.FAILED_PRECONDITION, code_pb2.FAILED_PRECONDITION),
    Category.UNAVAILABLE: (grpc.StatusCode.UNAVAILABLE, code_pb2.UNAVAILABLE),
    Category.EXHAUSTED: (grpc.StatusCode.RESOURCE_EXHAUSTED, code_pb2.RESOURCE_EXHAUSTED),
    Category.UNAUTHENTICATED: (grpc.StatusCode.UNAUTHENTICATED, code_pb2.UNAUTHENTICATED),
    Category.PERMISSION_DENIED: (grpc.StatusCode.PERMISSION_DENIED, code_pb2.PERMISSION_DENIED),
}


def _pack(message) -> any_pb2.Any:
    detail = any_pb2.Any()
    detail.Pack(message)
    return detail


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _bounded_violations(violations) -> list[error_details_pb2.BadRequest.FieldViolation]:
    """The first violations that fit MAX_VIOLATION_BYTES (always at least one)."""
    shown = []
    size = 0
    for v in violations:
        item = error_details_pb2.BadRequest.FieldViolation(
            field=_cut(v.field, MAX_FIELD_CHARS),
            description=_cut(v.description, MAX_DESCRIPTION_CHARS),
            reason=_cut(v.reason, 64),
        )
        size += item.ByteSize() + 4
        if shown and size > MAX_VIOLATION_BYTES:
            break
        shown.append(item)
    return shown


def to_rpc_status(error: DomainError) -> grpc.Status:
    """Build a grpc.Status carrying google.rpc BadRequest, ErrorInfo and RetryInfo details,
    bounded in size however many violations the error holds."""
    _, code = CODES[error.category]
    details = []
    message = _cut(error.message, MAX_MESSAGE_CHARS)
    metadata = {
        _cut(k, 64): _cut(v, MAX_METADATA_VALUE_CHARS)
        for k, v in list(error.metadata.items())[:MAX_METADATA_ENTRIES]
    }
    if error.violations:
        shown = _bounded_violations(error.violations)
        if len(shown) < len(error.violations):
            message = f"{message} (the first {len(shown)} of {len(error.violations)} problems are listed)"
            metadata["violations_total"] = str(len(error.violations))
        details.append(_pack(error_details_pb2.BadRequest(field_violations=shown)))
    details.append(
        _pack(
            error_details_pb2.ErrorInfo(
                reason=_cut(error.reason or error.category.name, 64),
                domain=ERROR_DOMAIN,
                metadata=metadata,
            )
        )
    )
    if error.retry_after_seconds is not None:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int(error.retry_after_seconds * 1000))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    status = status_pb2.Status(code=code, message=message, details=details)
    return rpc_status.to_status(status)


def status_code_for(error: DomainError) -> grpc.StatusCode:
    return CODES[error.category][0]


def field_violations(call_or_error) -> list[tuple[str, str]]:
    """Read back (field, description) pairs from a failed call; used by clients and tests."""
    status = rpc_status.from_call(call_or_error)
    if status is None:
        return []
    out = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out.extend((v.field, v.description) for v in bad.field_violations)
    return out


def error_info(call_or_error) -> error_details_pb2.ErrorInfo | None:
    status = rpc_status.from_call(call_or_error)
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None
