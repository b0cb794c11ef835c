"""Test harness: a fresh migrated database, services in-process or as real processes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tally.config import SERVICES, Settings
from tally.db import asyncpg_dsn, with_database
from tally.server import RunningServer, ServiceApp, start_server

REPO = Path(__file__).resolve().parent.parent

# Tests run in the explicit development mode (no API keys) unless a test configures auth
# itself; the default, TALLY_AUTH_MODE=required, would refuse to start without a key store.
os.environ.setdefault("TALLY_AUTH_MODE", "disabled")


def unique(prefix: str = "t") -> str:
    """A unique key, so tests sharing one database never collide."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def recreate_database(server_url: str, name: str) -> str:
    admin = await asyncpg.connect(asyncpg_dsn(with_database(server_url, "postgres")))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return with_database(server_url, name)


async def drop_database(server_url: str, name: str) -> None:
    admin = await asyncpg.connect(asyncpg_dsn(with_database(server_url, "postgres")))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@asynccontextmanager
async def in_process(app: ServiceApp) -> AsyncIterator[tuple[RunningServer, grpc.aio.Channel]]:
    """Serve ``app`` on a free port in this process and yield it with a channel to it."""
    from tally.channels import connect

    running = await start_server(app, "127.0.0.1", 0)
    channel = connect(f"127.0.0.1:{running.port}")
    try:
        yield running, channel
    finally:
        await channel.close()
        await running.stop(grace=1)


async def wait_serving(address: str, timeout: float = 30.0) -> None:
    """Wait until grpc.health.v1 answers SERVING at ``address``."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            async with grpc.aio.insecure_channel(address) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
        except grpc.aio.AioRpcError as error:
            last = error
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{address} not serving after {timeout}s: {last}")


@dataclass
class ServiceProcesses:
    """The four services as real OS processes sharing one database."""

    database_url: str
    log_dir: Path
    ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)
    # Variables for one service only, such as its own TALLY_SERVICE_API_KEY.
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)

    def address(self, service: str) -> str:
        return f"127.0.0.1:{self.ports[service]}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
        env.update(
            DATABASE_URL=self.database_url,
            TALLY_LOG_FORMAT="json",
            TALLY_LOG_LEVEL="info",
            TALLY_SHUTDOWN_GRACE_SECONDS="5",
            TALLY_AUTH_MODE="disabled",
        )
        for service, port in self.ports.items():
            env[f"TALLY_{service.upper()}_PORT"] = str(port)
            env[f"TALLY_{service.upper()}_ADDR"] = f"127.0.0.1:{port}"
            # Test clusters run side by side: no fixed metrics ports unless a test asks for one.
            env[f"TALLY_{service.upper()}_METRICS_PORT"] = "0"
        env.update(self.extra_env)
        return env

    def start(self, service: str) -> subprocess.Popen:
        self.ports.setdefault(service, free_port())
        log = open(self.log_dir / f"{service}.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [sys.executable, "-m", "tally.cli.main", "serve", service],
            env={**self.env(), **self.service_env.get(service, {})},
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs[service] = proc
        return proc

    async def start_all(self, services=SERVICES) -> None:
        for service in services:
            self.ports.setdefault(service, free_port())
        for service in services:
            self.start(service)
        await asyncio.gather(*(self.wait(service) for service in services))

    async def wait(self, service: str, timeout: float = 60.0) -> None:
        proc = self.procs[service]
        try:
            await wait_serving(self.address(service), timeout)
        except TimeoutError:
            raise RuntimeError(f"{service} did not start (exit {proc.poll()}): {self.log_tail(service)}") from None

    def kill(self, service: str) -> None:
        """SIGKILL: no chance to clean up."""
        proc = self.procs[service]
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def terminate(self, service: str, timeout: float = 20.0) -> int:
        proc = self.procs[service]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()

    def stop_all(self) -> None:
        for service in list(self.procs):
            self.terminate(service)

    def log_tail(self, service: str, lines: int = 40) -> str:
        path = self.log_dir / f"{service}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def settings() -> Settings:
    return Settings.from_env()
