"""The shared runtime over real gRPC: request ids follow calls, domain errors become rich statuses."""

from __future__ import annotations

import grpc
import pytest

from tally.channels import connect
from tally.context import REQUEST_ID_HEADER
from tally.errors import InvalidInput, NotFound, Violation
from tally.grpc_errors import error_info, field_violations
from tally.server import ServiceApp
from tests.harness import in_process


def generic_app(name: str, handlers: dict) -> ServiceApp:
    def register(server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(f"test.{name}", handlers),)
        )

    return ServiceApp(name=name, service_names=[f"test.{name}"], register=register)


async def echo_request_id(request: bytes, context) -> bytes:
    return dict(context.invocation_metadata()).get(REQUEST_ID_HEADER, "").encode()


class TestRequestIdPropagation:
    async def test_request_id_is_passed_on_to_downstream_calls(self):
        downstream = generic_app("Down", {"Echo": grpc.unary_unary_rpc_method_handler(echo_request_id)})
        async with in_process(downstream) as (down_server, _):
            down_channel = connect(f"127.0.0.1:{down_server.port}")

            async def call_downstream(request: bytes, context) -> bytes:
                return await down_channel.unary_unary("/test.Down/Echo")(b"")

            upstream = generic_app("Up", {"Call": grpc.unary_unary_rpc_method_handler(call_downstream)})
            async with in_process(upstream) as (_, up_channel):
                seen = await up_channel.unary_unary("/test.Up/Call")(
                    b"", metadata=((REQUEST_ID_HEADER, "req-42"),)
                )
            await down_channel.close()
        assert seen == b"req-42"

    async def test_a_call_without_request_id_gets_a_fresh_one(self):
        app = generic_app("Solo", {"Echo": grpc.unary_unary_rpc_method_handler(echo_request_id)})
        async with in_process(app) as (_, channel):
            first = await channel.unary_unary("/test.Solo/Echo")(b"")
            second = await channel.unary_unary("/test.Solo/Echo")(b"")
        assert len(first) == 32 and len(second) == 32 and first != second


class TestDomainErrorMapping:
    async def test_invalid_input_reaches_the_caller_with_every_field_violation(self):
        async def reject(request: bytes, context) -> bytes:
            raise InvalidInput(
                "bad batch",
                violations=[Violation("events[1].timestamp", "too far in the future"), Violation("events[4].customer", "unknown")],
            )

        app = generic_app("Bad", {"Send": grpc.unary_unary_rpc_method_handler(reject)})
        async with in_process(app) as (_, channel):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary("/test.Bad/Send")(b"")
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(caught.value) == [
            ("events[1].timestamp", "too far in the future"),
            ("events[4].customer", "unknown"),
        ]

    async def test_errors_in_server_streams_are_mapped_too(self):
        async def stream_then_fail(request: bytes, context):
            yield b"one"
            raise NotFound("gone", reason="METER_NOT_FOUND", metadata={"meter_key": "m1"})

        app = generic_app("Str", {"Watch": grpc.unary_stream_rpc_method_handler(stream_then_fail)})
        async with in_process(app) as (_, channel):
            call = channel.unary_stream("/test.Str/Watch")(b"")
            received = []
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for item in call:
                    received.append(item)
        assert received == [b"one"]
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        info = error_info(caught.value)
        assert info.reason == "METER_NOT_FOUND" and info.metadata["meter_key"] == "m1"

    async def test_unexpected_exceptions_become_unknown_and_the_server_keeps_serving(self):
        async def crash(request: bytes, context) -> bytes:
            raise RuntimeError("boom")

        app = generic_app("Crash", {"Go": grpc.unary_unary_rpc_method_handler(crash), "Echo": grpc.unary_unary_rpc_method_handler(echo_request_id)})
        async with in_process(app) as (_, channel):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary("/test.Crash/Go")(b"")
            after = await channel.unary_unary("/test.Crash/Echo")(b"")
        assert caught.value.code() == grpc.StatusCode.UNKNOWN
        assert after


class TestLostDatabaseConnections:
    @pytest.mark.parametrize(
        "error",
        [
            pytest.param(lambda: __import__("asyncpg").exceptions.ConnectionDoesNotExistError("closed"), id="closed"),
            pytest.param(
                lambda: __import__("asyncpg").exceptions.InternalClientError(
                    "cannot switch to state 15; another operation (2) is in progress"
                ),
                id="poisoned-after-restart",
            ),
            pytest.param(
                lambda: __import__("sqlalchemy").exc.DBAPIError(
                    "SELECT 1", None, __import__("asyncpg").exceptions.TooManyConnectionsError("sorry, too many clients already")
                ),
                id="out-of-connection-slots",
            ),
        ],
    )
    async def test_a_lost_database_connection_answers_retryable_unavailable(self, error):
        async def fail(request: bytes, context) -> bytes:
            raise error()

        app = generic_app("Db", {"Go": grpc.unary_unary_rpc_method_handler(fail)})
        async with in_process(app) as (_, channel):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary("/test.Db/Go")(b"", wait_for_ready=False)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert error_info(caught.value).reason == "DATABASE_UNAVAILABLE"
