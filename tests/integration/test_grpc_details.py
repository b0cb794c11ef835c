"""gRPC details the services depend on: the standard Health/Watch through our interceptors, and
channel/server option names that the gRPC core actually knows."""

from __future__ import annotations

import ast
import asyncio
import re
from functools import cache
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tally.auth import StaticKeyVerifier, issue_key
from tally.server import ServiceApp, server_options, start_server
from tests.harness import REPO


def empty_app(name: str = "Probe", **fields) -> ServiceApp:
    return ServiceApp(name=name, service_names=[], register=lambda server: None, **fields)


async def watch_two_statuses(channel, service: str = "") -> list[int]:
    """Open Health/Watch and read the first status; the caller changes it to get the second."""
    stub = health_pb2_grpc.HealthStub(channel)
    call = stub.Watch(health_pb2.HealthCheckRequest(service=service))
    return call


class TestHealthWatch:
    async def test_health_watch_streams_status_changes_through_the_server_interceptors(self):
        running = await start_server(empty_app(), "127.0.0.1", 0)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
        try:
            call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
            first = await asyncio.wait_for(call.read(), 5)
            await running.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
            second = await asyncio.wait_for(call.read(), 5)
            call.cancel()
        finally:
            await channel.close()
            await running.stop(grace=0.5)
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING

    async def test_health_watch_works_when_health_needs_a_key(self, monkeypatch):
        issued = issue_key("probe", ["read"])
        monkeypatch.setenv("TALLY_AUTH_MODE", "required")
        monkeypatch.setenv("TALLY_AUTH_PROTECT_HEALTH", "true")
        monkeypatch.setenv("TALLY_PAGE_TOKEN_SECRET", "x" * 32)
        app = empty_app(key_verifier=StaticKeyVerifier([issued.record]))
        running = await start_server(app, "127.0.0.1", 0)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
        try:
            stub = health_pb2_grpc.HealthStub(channel)
            call = stub.Watch(
                health_pb2.HealthCheckRequest(), metadata=(("authorization", f"Bearer {issued.plaintext}"),)
            )
            first = await asyncio.wait_for(call.read(), 5)
            call.cancel()
            anonymous = stub.Watch(health_pb2.HealthCheckRequest())
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await asyncio.wait_for(anonymous.read(), 5)
        finally:
            await channel.close()
            await running.stop(grace=0.5)
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


@cache
def core_option_names() -> frozenset[str]:
    """Every ``grpc.*`` channel-argument name compiled into the installed gRPC core."""
    import grpc._cython as cython

    library = next(Path(cython.__file__).parent.glob("cygrpc*.so"))
    return frozenset(m.decode() for m in re.findall(rb"grpc\.[a-z0-9_.]+", library.read_bytes()))


def option_names_in_source() -> dict[str, list[str]]:
    """Every ("grpc.<name>", value) pair literal in tally/ and services/: name -> places."""
    found: dict[str, list[str]] = {}
    for path in [*REPO.joinpath("tally").rglob("*.py"), *REPO.joinpath("services").rglob("*.py")]:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Tuple)
                and len(node.elts) == 2
                and isinstance(node.elts[0], ast.Constant)
                and isinstance(node.elts[0].value, str)
                and node.elts[0].value.startswith("grpc.")
            ):
                found.setdefault(node.elts[0].value, []).append(f"{path.relative_to(REPO)}:{node.lineno}")
    return found


class TestOptionNames:
    def test_the_core_name_list_is_real(self):
        names = core_option_names()
        assert "grpc.keepalive_time_ms" in names and "grpc.max_receive_message_length" in names
        assert "grpc.http2.min_recv_ping_interval_without_data_ms" not in names

    def test_every_option_name_we_set_is_known_to_the_grpc_core(self):
        found = option_names_in_source()
        assert "grpc.http2.min_ping_interval_without_data_ms" in found  # the scan sees server.py
        unknown = {name: places for name, places in found.items() if name not in core_option_names()}
        assert unknown == {}

    def test_the_server_accepts_keepalive_pings_every_ten_seconds(self):
        options = dict(server_options())
        assert options["grpc.http2.min_ping_interval_without_data_ms"] <= 10_000
        assert options["grpc.keepalive_permit_without_calls"] == 1

    def test_bursts_of_calls_wait_in_the_core_instead_of_being_cancelled_before_a_handler(self):
        options = dict(server_options())
        # The core's default (1,000 pending) cancelled ~8% of 2,000-call waves (docs/operations.md).
        assert options["grpc.server.max_pending_requests"] >= 10_000
        assert options["grpc.server.max_pending_requests_hard_limit"] > options["grpc.server.max_pending_requests"]

    async def test_a_client_pinging_every_second_keeps_an_idle_stream_without_goaway(self):
        """With the old (unknown) option name the server answered pings closer than 5 minutes
        apart with GOAWAY too_many_pings; now pings 1 s apart over an idle Watch are fine."""
        running = await start_server(empty_app(), "127.0.0.1", 0)
        # min_ping_interval on the server is 10 s: ping at 10 s, a few times, with no data.
        channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{running.port}",
            options=[
                ("grpc.keepalive_time_ms", 10_000),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.max_pings_without_data", 0),
            ],
        )
        try:
            call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
            await asyncio.wait_for(call.read(), 5)
            await asyncio.sleep(32)  # three keepalive pings with no data in between
            await running.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
            after = await asyncio.wait_for(call.read(), 5)
            call.cancel()
        finally:
            await channel.close()
            await running.stop(grace=0.5)
        assert after.status == health_pb2.HealthCheckResponse.NOT_SERVING
