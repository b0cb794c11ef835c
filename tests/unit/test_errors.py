"""Domain error categories map to gRPC codes with google.rpc details, in one place."""

from __future__ import annotations

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2

from tally.errors import AlreadyExists, InvalidInput, NotFound, Violation, Violations
from tally.grpc_errors import status_code_for, to_rpc_status


def details_of(status: grpc.Status) -> status_pb2.Status:
    raw = dict(status.trailing_metadata)["grpc-status-details-bin"]
    return status_pb2.Status.FromString(raw)


class TestErrorMapping:
    def test_invalid_input_becomes_invalid_argument_with_every_field_violation(self):
        error = InvalidInput("bad", violations=[Violation("events[0].timestamp", "too old"), Violation("x", "y")])
        status = to_rpc_status(error)
        assert status.code == grpc.StatusCode.INVALID_ARGUMENT
        rich = details_of(status)
        assert rich.code == code_pb2.INVALID_ARGUMENT
        bad = error_details_pb2.BadRequest()
        assert rich.details[0].Unpack(bad)
        assert [(v.field, v.description) for v in bad.field_violations] == [
            ("events[0].timestamp", "too old"),
            ("x", "y"),
        ]

    def test_every_error_carries_error_info_with_its_reason(self):
        status = to_rpc_status(AlreadyExists("dup", reason="IDEMPOTENCY_KEY_CONFLICT", metadata={"key": "k1"}))
        info = error_details_pb2.ErrorInfo()
        assert details_of(status).details[-1].Unpack(info)
        assert info.reason == "IDEMPOTENCY_KEY_CONFLICT"
        assert info.metadata["key"] == "k1"

    def test_not_found_maps_to_not_found(self):
        assert status_code_for(NotFound("nope")) == grpc.StatusCode.NOT_FOUND


class TestViolations:
    def test_collects_all_problems_before_raising(self):
        v = Violations()
        v.add("a", "first")
        v.nested("items[2]").items  # a nested collector is independent until merged
        inner = v.nested("items[2]")
        inner.add("b", "second")
        v.extend(inner)
        try:
            v.raise_if_any()
        except InvalidInput as error:
            assert [x.field for x in error.violations] == ["a", "items[2].b"]
        else:
            raise AssertionError("expected InvalidInput")
