"""Process entry points: serve one service, migrate schemas, and supervise all four (make run)."""

from __future__ import annotations

import asyncio
import gc
import importlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import structlog

from tally.config import SERVICES, ConfigError, Settings, gc_thresholds, service_port, setting, validate_environment
from tally.db import ensure_database
from tally.embedded_pg import resolve_database_url
from tally.logging import configure_logging
from tally.migrations import upgrade

log = structlog.get_logger()


def checked_settings() -> Settings:
    """Validate every TALLY_* variable and the combinations that must hold, then read the
    settings; on any problem, print them all (variable, value, expected form) and exit 2."""
    try:
        warnings = validate_environment()
        settings = Settings.from_env()
    except ConfigError as error:
        print(f"tally: {error}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    configure_logging(settings.log_format, settings.log_level)
    for warning in warnings:
        log.warning("config_unknown_variable", problem=warning)
    return settings


def serve(service: str) -> None:
    """Serve one service until SIGTERM/SIGINT. Needs DATABASE_URL (make run sets it)."""
    settings = checked_settings()
    database_url, _pg = resolve_database_url(settings.database_url, settings.data_dir)
    module = importlib.import_module(f"services.{service}.app")
    tune_gc(gc_thresholds(service))

    async def main() -> None:
        from tally.metrics import metrics_port, start_metrics_server
        from tally.server import serve_forever

        start_metrics_server(metrics_port(service), settings.bind_host)

        app = module.create_app(database_url, settings)
        await serve_forever(app, settings.bind_host, service_port(service), settings.shutdown_grace_seconds)

    asyncio.run(main())


def tune_gc(thresholds: tuple[int, int, int] | None) -> None:
    """Move everything loaded so far out of the collector's reach and apply the thresholds."""
    if thresholds is None:
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)


def migrate(services: list[str] | None = None, database_url: str | None = None) -> str:
    """Migrate each service's own schema; returns the database URL used."""
    settings = Settings.from_env()
    url = database_url or settings.database_url
    if url is None:
        raise RuntimeError("migrate needs DATABASE_URL")
    asyncio.run(ensure_database(url))
    for service in services or SERVICES:
        upgrade(service, url)
        log.info("schema_migrated", service=service)
    return url


class Supervisor:
    """Keeps child services running: a child that exits is restarted after a backoff that
    doubles on each quick crash (0.5 s up to TALLY_RESTART_MAX_BACKOFF_SECONDS) and resets once
    it has stayed up for a minute; each restart is logged (service_exited, service_restarting).
    The other services and Postgres are left alone."""

    STABLE_SECONDS = 60.0

    def __init__(self, start: Callable[[str], subprocess.Popen], *, first_backoff: float = 0.5,
                 max_backoff: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._start = start
        self._first = first_backoff
        self._max = max_backoff
        self._clock = clock
        self.children: dict[str, subprocess.Popen] = {}
        self.started_at: dict[str, float] = {}
        self.backoff: dict[str, float] = {}
        self.restart_at: dict[str, float] = {}
        self.restarts: dict[str, int] = {}

    def launch(self, service: str) -> None:
        self.children[service] = self._start(service)
        self.started_at[service] = self._clock()
        self.restart_at.pop(service, None)

    def check(self) -> None:
        """Notice exited children and restart those whose backoff is over."""
        now = self._clock()
        for service, proc in list(self.children.items()):
            if service in self.restart_at:
                if now >= self.restart_at[service]:
                    self.restarts[service] = self.restarts.get(service, 0) + 1
                    log.warning("service_restarting", service=service, restarts=self.restarts[service])
                    self.launch(service)
                continue
            if proc.poll() is None:
                continue
            uptime = now - self.started_at[service]
            if uptime >= self.STABLE_SECONDS:
                self.backoff[service] = self._first
            else:
                self.backoff[service] = min(self._max, self.backoff.get(service, self._first / 2) * 2)
            delay = self.backoff[service]
            self.restart_at[service] = now + delay
            log.error("service_exited", service=service, returncode=proc.returncode,
                      uptime_seconds=round(uptime, 1), restart_in_seconds=delay)

    def running(self) -> list[subprocess.Popen]:
        return [p for s, p in self.children.items() if s not in self.restart_at and p.poll() is None]


def run_all() -> int:
    """make run: embedded Postgres (unless DATABASE_URL), migrate, serve all four, stop on Ctrl-C.

    A service that crashes is restarted with backoff (Supervisor); the others keep serving.
    """
    # `make run` is the local development supervisor: without an explicit choice it runs
    # without API keys (each child logs auth_disabled). `tally serve` alone defaults to required.
    os.environ.setdefault("TALLY_AUTH_MODE", "disabled")
    settings = checked_settings()
    database_url, pg_handle = resolve_database_url(settings.database_url, settings.data_dir)
    migrate(database_url=database_url)
    env = {**os.environ, "DATABASE_URL": database_url}
    stopping = False

    def stop_children(*_args) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop_children)
    signal.signal(signal.SIGTERM, stop_children)
    supervisor = Supervisor(
        lambda service: subprocess.Popen([sys.executable, "-m", "tally.cli.main", "serve", service], env=env),
        max_backoff=setting("TALLY_RESTART_MAX_BACKOFF_SECONDS"),
    )
    for service in SERVICES:
        supervisor.launch(service)
    print("", flush=True)
    print("Tally is starting. Services:", flush=True)
    for service in SERVICES:
        print(f"  {service:<8} {settings.bind_host}:{service_port(service)}", flush=True)
    print(f"  postgres {'embedded, ' + str(settings.data_dir / 'pg') if pg_handle else 'DATABASE_URL'}", flush=True)
    print("Press Ctrl-C to stop.", flush=True)
    exit_code = 0
    while not stopping:
        supervisor.check()
        time.sleep(0.2)
    for proc in supervisor.children.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + settings.shutdown_grace_seconds + 5
    for service, proc in supervisor.children.items():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("service_killed", service=service)
            proc.kill()
            proc.wait()
    log.info("all_stopped")
    if pg_handle is not None:
        pg_handle.cleanup()
    return exit_code
