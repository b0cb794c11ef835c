"""Transport limits on the real server bootstrap: message sizes, deadlines, graceful shutdown,
and the shipped client retry policy."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys

import asyncpg
import grpc
import pytest
import sqlalchemy.exc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tally.channels import MAX_MESSAGE_BYTES, RETRY_SERVICE_CONFIG, connect
from tally.grpc_errors import error_info
from tally.server import ServiceApp, start_server
from tests.harness import REPO, free_port, in_process, wait_serving
from tests.reliability.probe import Probe, method, probe_app

INGEST = "tally.ingest.v1.IngestService"


async def health_status(channel: grpc.aio.Channel) -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return reply.status


def read_until(proc: subprocess.Popen, marker: str) -> None:
    """Read the process's output (logs interleave) until a line equal to ``marker``."""
    for line in proc.stdout:
        if line.strip() == marker:
            return
    raise AssertionError(f"process ended before printing {marker!r}")


class TestMaxMessageSize:
    async def test_a_request_over_the_limit_gets_resource_exhausted_and_the_server_stays_healthy(self):
        probe = Probe()
        async with in_process(probe_app(probe)) as (running, channel):
            # A raw channel whose own send limit is higher, so the server's limit is what trips.
            big = grpc.aio.insecure_channel(
                f"127.0.0.1:{running.port}", options=[("grpc.max_send_message_length", 2 * MAX_MESSAGE_BYTES)]
            )
            try:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await big.unary_unary(method("Size"))(b"x" * (MAX_MESSAGE_BYTES + 1), timeout=30)
            finally:
                await big.close()
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert probe.calls["Size"] == 0
            assert await health_status(channel) == health_pb2.HealthCheckResponse.SERVING
            assert await channel.unary_unary(method("Size"))(b"abc", timeout=5) == b"3"

    async def test_a_request_just_under_the_limit_is_accepted(self):
        probe = Probe()
        async with in_process(probe_app(probe)) as (_running, channel):
            payload = b"y" * (MAX_MESSAGE_BYTES - 1024)
            assert await channel.unary_unary(method("Size"))(payload, timeout=30) == str(len(payload)).encode()

    async def test_the_shipped_client_refuses_to_send_an_oversized_request(self):
        probe = Probe()
        async with in_process(probe_app(probe)) as (_running, channel):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary(method("Size"))(b"z" * (MAX_MESSAGE_BYTES + 1), timeout=30)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert probe.calls["Size"] == 0


class TestDeadlines:
    async def test_a_call_with_a_short_deadline_gets_deadline_exceeded(self):
        probe = Probe()
        async with in_process(probe_app(probe)) as (_running, channel):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary(method("Slow"))(b"5", timeout=0.2)
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert probe.calls["Slow"] == 1
            assert not probe.slow_finished.is_set()

    async def test_looping_server_work_stops_once_the_deadline_has_passed(self):
        probe = Probe()
        async with in_process(probe_app(probe)) as (_running, channel):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary(method("Spin"))(b"", timeout=0.3)
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            await asyncio.wait_for(probe.spin_stopped.wait(), timeout=5)
            iterations = probe.spin_iterations
            await asyncio.sleep(0.1)
            assert iterations > 0
            assert probe.spin_iterations == iterations


class TestGracefulShutdown:
    async def test_an_in_flight_unary_call_completes_while_the_server_stops(self):
        probe = Probe()
        running = await start_server(probe_app(probe), "127.0.0.1", 0)
        channel = connect(f"127.0.0.1:{running.port}")
        try:
            call = asyncio.ensure_future(channel.unary_unary(method("Slow"))(b"0.5", timeout=10))
            await asyncio.wait_for(probe.slow_started.wait(), timeout=5)
            await running.stop(grace=5)
            assert await call == b"done"
        finally:
            await channel.close()

    async def test_a_server_that_has_stopped_refuses_new_calls(self):
        probe = Probe()
        running = await start_server(probe_app(probe), "127.0.0.1", 0)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
        try:
            assert await channel.unary_unary(method("Echo"))(b"hi", timeout=5) == b"hi"
            await running.stop(grace=1)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary(method("Echo"))(b"hi", timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert probe.calls["Echo"] == 1
        finally:
            await channel.close()

    async def test_an_open_stream_keeps_acknowledging_during_the_grace_period(self):
        probe = Probe()
        running = await start_server(probe_app(probe), "127.0.0.1", 0)
        channel = connect(f"127.0.0.1:{running.port}")
        try:
            stream = channel.stream_stream(method("Chat"))(timeout=10)
            await stream.write(b"first")
            assert await stream.read() == b"ack:first"
            stopping = asyncio.ensure_future(running.stop(grace=5))
            await asyncio.sleep(0.1)
            await stream.write(b"second")
            assert await stream.read() == b"ack:second"
            await stream.done_writing()
            assert await stream.read() == grpc.aio.EOF
            assert await stream.code() == grpc.StatusCode.OK
            await stopping
            assert probe.chat_received == [b"first", b"second"]
        finally:
            await channel.close()

    async def test_sigterm_lets_an_in_flight_call_finish_before_the_process_exits(self):
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.reliability.probe_server", str(port)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            await wait_serving(f"127.0.0.1:{port}", timeout=30)
            channel = connect(f"127.0.0.1:{port}")
            call = asyncio.ensure_future(channel.unary_unary(method("Slow"))(b"1.0", timeout=20))
            await asyncio.wait_for(asyncio.to_thread(read_until, proc, "slow_started"), timeout=20)
            proc.send_signal(signal.SIGTERM)
            assert await call == b"done"
            await channel.close()
            rest, _ = await asyncio.to_thread(proc.communicate, timeout=20)
            assert proc.returncode == 0
            markers = [line for line in rest.split() if line in ("slow_finished", "exited_cleanly")]
            assert markers == ["slow_finished", "exited_cleanly"]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


class TestClientRetries:
    def test_the_shipped_policy_retries_only_unavailable_with_backoff_on_every_service(self):
        (config,) = RETRY_SERVICE_CONFIG["methodConfig"]
        assert {n["service"] for n in config["name"]} == {
            "tally.catalog.v1.CatalogService",
            INGEST,
            "tally.meter.v1.MeterService",
            "tally.invoice.v1.InvoiceService",
        }
        assert config["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
        assert config["retryPolicy"]["maxAttempts"] == 5
        json.dumps(RETRY_SERVICE_CONFIG)  # must be valid JSON for grpc.service_config

    async def test_a_briefly_unavailable_service_answers_without_the_caller_retrying(self):
        probe = Probe(unavailable_first=2)
        async with in_process(probe_app(probe, service=INGEST)) as (_running, channel):
            reply = await channel.unary_unary(method("Flaky", INGEST))(b"", timeout=10)
        assert reply == b"ok after 3"
        assert probe.calls["Flaky"] == 3

    async def test_without_the_shipped_policy_the_first_unavailable_reaches_the_caller(self):
        probe = Probe(unavailable_first=2)
        async with in_process(probe_app(probe, service=INGEST)) as (running, _channel):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as bare:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await bare.unary_unary(method("Flaky", INGEST))(b"", timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert error_info(caught.value).reason == "PROBE_WARMING_UP"
        assert probe.calls["Flaky"] == 1

    async def test_retries_give_up_after_the_policys_attempts_with_unavailable(self):
        probe = Probe(unavailable_first=100)
        async with in_process(probe_app(probe, service=INGEST)) as (_running, channel):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary(method("Flaky", INGEST))(b"", timeout=20)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert probe.calls["Flaky"] == 5

    async def test_a_server_started_after_the_first_attempt_failed_answers_the_same_call(self):
        # A plain TCP listener takes the first attempt's connection and drops it, so the
        # first attempt fails for certain; then the real server takes over the port.
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        probe = Probe()
        channel = connect(f"127.0.0.1:{port}")
        running = None
        try:
            call = asyncio.ensure_future(channel.unary_unary(method("Flaky", INGEST))(b"", timeout=20))
            loop = asyncio.get_running_loop()
            conn, _ = await asyncio.wait_for(loop.sock_accept(listener), timeout=10)
            conn.close()
            listener.close()
            running = await start_server(probe_app(probe, service=INGEST), "127.0.0.1", port)
            assert await call == b"ok after 1"
            assert probe.calls["Flaky"] == 1
        finally:
            await channel.close()
            if running is not None:
                await running.stop(grace=1)


def failing_app(error: Exception):
    async def fail(request: bytes, context) -> bytes:
        raise error

    def register(server: grpc.aio.Server) -> None:
        handlers = {"Fail": grpc.unary_unary_rpc_method_handler(fail)}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("tally.test.v1.Probe", handlers),))

    return ServiceApp(name="probe", service_names=["tally.test.v1.Probe"], register=register)


def wrapped_like_sqlalchemy(cause: Exception) -> Exception:
    try:
        try:
            raise cause
        except Exception as inner:  # noqa: BLE001
            raise sqlalchemy.exc.DBAPIError("SELECT 1", None, inner) from inner
    except sqlalchemy.exc.DBAPIError as outer:
        return outer


class TestDatabaseOutage:
    @pytest.mark.parametrize(
        "make_error",
        [
            lambda: ConnectionRefusedError(111, "Connection refused"),
            lambda: asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
            lambda: asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
            lambda: wrapped_like_sqlalchemy(asyncpg.exceptions.AdminShutdownError("terminating connection")),
        ],
        ids=["refused", "starting_up", "connection_lost", "admin_shutdown_via_sqlalchemy"],
    )
    async def test_a_lost_database_connection_answers_unavailable_with_a_retry_delay(self, make_error):
        async with in_process(failing_app(make_error())) as (_running, channel):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary(method("Fail"))(b"", timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert error_info(caught.value).reason == "DATABASE_UNAVAILABLE"

    async def test_any_other_failure_is_not_disguised_as_unavailable(self):
        async with in_process(failing_app(ValueError("a bug"))) as (_running, channel):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary(method("Fail"))(b"", timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNKNOWN


class TestDatabaseOutageIsNotGuessed:
    async def test_a_missing_file_outside_the_driver_is_not_called_a_database_outage(self):
        async with in_process(failing_app(FileNotFoundError(2, "No such file or directory", "invoice-template.ttf"))) as (
            _running,
            channel,
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary(method("Fail"))(b"", timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNKNOWN
