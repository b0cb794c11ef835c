"""A small test servicer on the real server bootstrap: slow, looping, flaky and streaming RPCs.

It speaks raw bytes (no generated code), so transport behaviour can be tested without
depending on any one service's business logic.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import grpc

from tally.errors import Unavailable
from tally.server import ServiceApp

SERVICE = "tally.test.v1.Probe"


def method(name: str, service: str = SERVICE) -> str:
    return f"/{service}/{name}"


class Probe:
    """Handlers that record what happened to them, for the tests to assert on."""

    def __init__(self, unavailable_first: int = 0) -> None:
        self.calls: Counter[str] = Counter()
        self.slow_started = asyncio.Event()
        self.slow_finished = asyncio.Event()
        self.spin_stopped = asyncio.Event()
        self.spin_iterations = 0
        self.unavailable_left = unavailable_first
        self.chat_received: list[bytes] = []

    async def echo(self, request: bytes, context) -> bytes:
        self.calls["Echo"] += 1
        return request

    async def size(self, request: bytes, context) -> bytes:
        self.calls["Size"] += 1
        return str(len(request)).encode()

    async def slow(self, request: bytes, context) -> bytes:
        """Sleeps for the number of seconds in the request, then answers."""
        self.calls["Slow"] += 1
        self.slow_started.set()
        await asyncio.sleep(float(request.decode() or "0.5"))
        self.slow_finished.set()
        return b"done"

    async def spin(self, request: bytes, context) -> bytes:
        """Loops in small steps while the caller's deadline leaves time, as long work should."""
        self.calls["Spin"] += 1
        try:
            while True:
                remaining = context.time_remaining()
                if remaining is not None and remaining <= 0:
                    # Out of time: stop working and say so, whichever deadline fires first.
                    await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed while working")
                self.spin_iterations += 1
                await asyncio.sleep(0.01)
        finally:
            self.spin_stopped.set()

    async def flaky(self, request: bytes, context) -> bytes:
        """UNAVAILABLE for the first ``unavailable_first`` calls, then an answer."""
        self.calls["Flaky"] += 1
        if self.unavailable_left > 0:
            self.unavailable_left -= 1
            raise Unavailable("briefly unavailable", reason="PROBE_WARMING_UP")
        return f"ok after {self.calls['Flaky']}".encode()

    async def chat(self, request_iterator, context):
        """Acknowledges each message of a bidirectional stream."""
        self.calls["Chat"] += 1
        async for message in request_iterator:
            self.chat_received.append(message)
            yield b"ack:" + message

    def handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        return {
            "Echo": grpc.unary_unary_rpc_method_handler(self.echo),
            "Size": grpc.unary_unary_rpc_method_handler(self.size),
            "Slow": grpc.unary_unary_rpc_method_handler(self.slow),
            "Spin": grpc.unary_unary_rpc_method_handler(self.spin),
            "Flaky": grpc.unary_unary_rpc_method_handler(self.flaky),
            "Chat": grpc.stream_stream_rpc_method_handler(self.chat),
        }


def probe_app(probe: Probe, service: str = SERVICE, interceptors=None) -> ServiceApp:
    """The probe served under ``service`` (a real Tally service name picks up its retry policy)."""

    def register(server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, probe.handlers()),))

    return ServiceApp(name="probe", service_names=[service], register=register, interceptors=list(interceptors or []))
