"""Honest health and supervision: health follows the database (NOT_SERVING while Postgres cannot
be reached, SERVING again after), and `tally run`'s supervisor restarts a crashed service with
backoff instead of stopping everything."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tally.runner import Supervisor
from tally.server import ServiceApp, start_server


class Forwarder:
    """A TCP forwarder to Postgres (over TCP, or its Unix socket as the embedded server
    listens) that the test can cut and restore."""

    def __init__(self, database_url: str) -> None:
        parts = urlsplit(database_url)
        query = dict(parse_qsl(parts.query))
        port = parts.port or int(query.get("port", "5432"))
        socket_dir = query.get("host", "") if not parts.hostname else ""
        self._socket = f"{socket_dir}/.s.PGSQL.{port}" if socket_dir.startswith("/") else None
        self._target = (parts.hostname or "127.0.0.1", port)
        self._server: asyncio.base_events.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._link, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        self._server.close()
        await self._server.wait_closed()
        for writer in list(self._links):
            writer.close()

    async def _link(self, reader, writer) -> None:
        if self._socket is not None:
            up_reader, up_writer = await asyncio.open_unix_connection(self._socket)
        else:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        self._links.update({writer, up_writer})

        async def pipe(src, dst):
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def url(self, database_url: str) -> str:
        """``database_url`` pointed at this forwarder over TCP."""
        parts = urlsplit(database_url)
        user = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k not in ("host", "port")])
        return urlunsplit((parts.scheme, f"{user}127.0.0.1:{self.port}", parts.path, query, parts.fragment))


async def status_of(channel) -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return reply.status


async def eventually(channel, wanted: int, timeout: float = 15) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await status_of(channel) == wanted:
            return True
        await asyncio.sleep(0.1)
    return False


class TestHealthFollowsTheDatabase:
    async def test_not_serving_while_postgres_is_unreachable_and_serving_again_after(self, database_url, monkeypatch):
        monkeypatch.setenv("TALLY_HEALTH_PROBE_SECONDS", "0.2")
        forwarder = Forwarder(database_url)
        await forwarder.open()
        proxied = forwarder.url(database_url)
        app = ServiceApp(name="probe", service_names=["test.Probe"], register=lambda s: None, database_url=proxied)
        running = await start_server(app, "127.0.0.1", 0)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
        try:
            serving_at_first = await eventually(channel, health_pb2.HealthCheckResponse.SERVING)
            await forwarder.cut()
            down = await eventually(channel, health_pb2.HealthCheckResponse.NOT_SERVING)
            named = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="test.Probe"), timeout=5
            )
            await forwarder.open()  # same port again
            back = await eventually(channel, health_pb2.HealthCheckResponse.SERVING)
        finally:
            await channel.close()
            await running.stop(grace=0.5)
            with contextlib.suppress(Exception):
                await forwarder.cut()
        assert serving_at_first and down and back
        assert named.status == health_pb2.HealthCheckResponse.NOT_SERVING


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def crashing(code: str = "import sys; sys.exit(3)") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code])


class TestSupervisor:
    def test_a_crashed_service_is_restarted_with_doubling_backoff_and_the_others_keep_running(self):
        clock = FakeClock()
        started: list[str] = []
        survivors: list[subprocess.Popen] = []

        def start(service: str) -> subprocess.Popen:
            started.append(service)
            if service == "meter":
                proc = crashing()
            else:
                proc = crashing("import time; time.sleep(30)")
                survivors.append(proc)
            proc.wait(timeout=10) if service == "meter" else None
            return proc

        supervisor = Supervisor(start, first_backoff=0.5, max_backoff=4, clock=clock)
        try:
            for service in ("catalog", "meter"):
                supervisor.launch(service)
            delays = []
            for _ in range(5):
                supervisor.check()  # notices the exit
                delays.append(supervisor.backoff["meter"])
                clock.now = supervisor.restart_at["meter"]
                supervisor.check()  # restarts it
            assert delays == [0.5, 1, 2, 4, 4]
            assert started.count("meter") == 6 and started.count("catalog") == 1
            assert supervisor.restarts["meter"] == 5
            assert all(p.poll() is None for p in survivors)
        finally:
            for proc in survivors:
                proc.kill()
                proc.wait()

    def test_a_service_that_stayed_up_a_minute_restarts_after_the_first_backoff_again(self):
        clock = FakeClock()

        def start(service: str) -> subprocess.Popen:
            proc = crashing()
            proc.wait(timeout=10)
            return proc

        supervisor = Supervisor(start, first_backoff=0.5, max_backoff=30, clock=clock)
        supervisor.launch("ingest")
        supervisor.backoff["ingest"] = 16
        clock.now += 61
        supervisor.check()
        assert supervisor.backoff["ingest"] == 0.5
