"""gRPC server bootstrap shared by the four services: health, reflection, graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tally.auth import KeyVerifier, auth_interceptor_from_env
from tally.channels import MAX_MESSAGE_BYTES
from tally.interceptors import ServerContextInterceptor
from tally.metrics import rpc_latency_recorder
from tally.tls import TlsConfig

log = structlog.get_logger()

Hook = Callable[[], Awaitable[None]]


@dataclass
class ServiceApp:
    """What a service contributes to the shared bootstrap."""

    name: str
    # Full proto service names, such as "tally.catalog.v1.CatalogService".
    service_names: Sequence[str]
    register: Callable[[grpc.aio.Server], None]
    on_start: list[Hook] = field(default_factory=list)
    on_stop: list[Hook] = field(default_factory=list)
    # Run when shutdown begins, before in-flight RPCs are drained: ends endless server streams
    # (such as WatchCatalog) so that draining does not wait out the whole grace period.
    on_drain: list[Hook] = field(default_factory=list)
    interceptors: list[grpc.aio.ServerInterceptor] = field(default_factory=list)
    # Where API keys are checked when TALLY_AUTH_MODE=required; None reads TALLY_AUTH_KEYS_FILE.
    key_verifier: KeyVerifier | None = None
    # The service's database: health answers NOT_SERVING while it cannot be reached.
    database_url: str | None = None


async def database_reachable(database_url: str, timeout: float) -> None:
    """Raise unless a fresh connection to the database answers SELECT 1 within ``timeout``."""
    import asyncpg

    from tally.db import asyncpg_dsn

    conn = await asyncio.wait_for(asyncpg.connect(asyncpg_dsn(database_url), timeout=timeout), timeout)
    try:
        await asyncio.wait_for(conn.fetchval("SELECT 1"), timeout)
    finally:
        await conn.close(timeout=timeout)


def _answered_errors() -> tuple[type[BaseException], ...]:
    import asyncpg

    return (asyncpg.exceptions.TooManyConnectionsError,)


_ANSWERED = _answered_errors()


class HealthProbe:
    """Sets the service's health from its database every ``interval`` seconds: NOT_SERVING while
    Postgres is unreachable (load balancers and `tally status` see the truth), SERVING again
    once it answers. Transitions are logged (health_changed)."""

    def __init__(self, app: "ServiceApp", health_servicer, interval: float) -> None:
        self._app = app
        self._health = health_servicer
        self._interval = interval
        self.serving = True
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=f"health-probe-{self._app.name}")

    async def stop(self) -> None:
        """Let a check in progress finish (it is bounded by its timeout) rather than cancel it
        mid-connect: cancelling a connection attempt at shutdown crashed the interpreter at exit
        now and then (a segfault after the tests passed)."""
        if self._task is None:
            return
        self._stopping.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), 10)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None

    async def check_once(self) -> bool:
        try:
            await database_reachable(self._app.database_url, timeout=max(1.0, min(5.0, self._interval * 2)))
            ok, reason = True, ""
        except asyncio.CancelledError:
            raise
        except _ANSWERED as error:
            # Postgres answered (out of connection slots, say): it is up, and the service's
            # own pool keeps the connections it has. Not a reason to leave the rotation.
            log.debug("health_probe_answered", service=self._app.name, error=type(error).__name__)
            ok, reason = True, ""
        except Exception as error:  # noqa: BLE001 - any failure to reach the database
            ok, reason = False, f"{type(error).__name__}: {error}"[:300]
        if ok != self.serving:
            self.serving = ok
            status = health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
            for name in ["", *self._app.service_names]:
                await self._health.set(name, status)
            if ok:
                log.info("health_changed", service=self._app.name, status="SERVING")
            else:
                log.error("health_changed", service=self._app.name, status="NOT_SERVING", reason=reason)
        return ok

    async def _run(self) -> None:
        while not self._stopping.is_set():
            await self.check_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval)


class RunningServer:
    """A started server; stop() drains in-flight RPCs and runs the stop hooks."""

    def __init__(self, app: ServiceApp, server: grpc.aio.Server, port: int, health_servicer,
                 probe: HealthProbe | None = None) -> None:
        self.app = app
        self.server = server
        self.port = port
        self.health = health_servicer
        self.probe = probe
        self._stopped = False

    async def stop(self, grace: float = 10.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        log.info("server_stopping", service=self.app.name, grace_seconds=grace)
        if self.probe is not None:
            await self.probe.stop()
        await self.health.enter_graceful_shutdown()
        for hook in self.app.on_drain:
            await hook()
        await self.server.stop(grace)
        for hook in reversed(self.app.on_stop):
            await hook()
        log.info("server_stopped", service=self.app.name)


MAX_PENDING_REQUESTS = 10_000


def server_options() -> list[tuple[str, object]]:
    """The core channel arguments every Tally server sets."""
    return [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.so_reuseport", 0),
        # Accept the 30 s keepalive pings our clients send on long-lived streams (WatchCatalog,
        # ReadLog long polls); the C-core default of one per 5 minutes answers them with
        # GOAWAY too_many_pings, which breaks those streams. The core's name for
        # GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS is this one (no "recv");
        # tests/integration/test_grpc_details.py checks every option name against the core.
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        # Calls that arrive faster than the server's event loop takes them wait in the core's
        # pending queue; past grpc.server.max_pending_requests (default 1,000) the core's
        # backlog protector rejects a random share of new calls and all of them at the hard
        # limit, before any handler runs, and the client sees CANCELLED. 2,000-call waves of
        # unary SendEvent lost ~8% that way (docs/operations.md has the figures); with room for
        # 10,000 pending calls none were. The hard limit still bounds the queue's memory.
        ("grpc.server.max_pending_requests", MAX_PENDING_REQUESTS),
        ("grpc.server.max_pending_requests_hard_limit", 2 * MAX_PENDING_REQUESTS),
    ]


async def start_server(app: ServiceApp, host: str, port: int, tls: TlsConfig | None = None) -> RunningServer:
    """Start ``app`` on host:port (port 0 picks a free one) with health and reflection.

    TLS and API-key checks follow the environment (tally.tls, tally.auth) unless ``tls`` is given.
    """
    tls = TlsConfig.from_env() if tls is None else tls
    auth = auth_interceptor_from_env(app.key_verifier)
    server = grpc.aio.server(
        interceptors=[
            ServerContextInterceptor(on_finish=rpc_latency_recorder(app.name)),
            *([auth] if auth is not None else []),
            *app.interceptors,
        ],
        options=server_options(),
    )
    app.register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*app.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    credentials = tls.server_credentials()
    if credentials is None:
        bound = server.add_insecure_port(f"{host}:{port}")
    else:
        bound = server.add_secure_port(f"{host}:{port}", credentials)
    if bound == 0:
        raise RuntimeError(f"could not bind {host}:{port}")
    for hook in app.on_start:
        await hook()
    await server.start()
    for name in ["", *app.service_names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    probe = None
    if app.database_url:
        from tally.config import setting

        probe = HealthProbe(app, health_servicer, setting("TALLY_HEALTH_PROBE_SECONDS"))
        probe.start()
    log.info("server_started", service=app.name, address=f"{host}:{bound}", tls=tls.server_enabled,
             mtls=tls.require_client_auth, auth=auth is not None)
    return RunningServer(app, server, bound, health_servicer, probe)


async def serve_forever(app: ServiceApp, host: str, port: int, grace: float) -> None:
    """Serve until SIGTERM or SIGINT, then drain in-flight RPCs for up to ``grace`` seconds."""
    running = await start_server(app, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Print the address on stdout for supervisors (make run) and humans.
    print(f"{app.name} listening on {host}:{running.port}", flush=True)
    await stop.wait()
    await running.stop(grace)
