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

import structlog

from tally.config import SERVICES, Settings, gc_thresholds, service_port
from tally.db import ensure_database
from tally.embedded_pg import resolve_database_url
from tally.logging import configure_logging
from tally.migrations import upgrade

log = structlog.get_logger()


def serve(service: str) -> None:
    """Serve one service until SIGTERM/SIGINT. Needs DATABASE_URL (make run sets it)."""
    settings = Settings.from_env()
    configure_logging(settings.log_format, settings.log_level)
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


def run_all() -> int:
    """make run: embedded Postgres (unless DATABASE_URL), migrate, serve all four, stop on Ctrl-C."""
    settings = Settings.from_env()
    configure_logging(settings.log_format, settings.log_level)
    database_url, pg_handle = resolve_database_url(settings.database_url, settings.data_dir)
    migrate(database_url=database_url)
    env = {**os.environ, "DATABASE_URL": database_url}
    # `make run` is the local development supervisor: without an explicit choice it runs
    # without API keys (each child logs auth_disabled). `tally serve` alone defaults to required.
    env.setdefault("TALLY_AUTH_MODE", "disabled")
    children: dict[str, subprocess.Popen] = {}
    stopping = False

    def stop_children(*_args) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop_children)
    signal.signal(signal.SIGTERM, stop_children)
    for service in SERVICES:
        children[service] = subprocess.Popen(
            [sys.executable, "-m", "tally.cli.main", "serve", service], env=env
        )
    print("", flush=True)
    print("Tally is starting. Services:", flush=True)
    for service in SERVICES:
        print(f"  {service:<8} {settings.bind_host}:{service_port(service)}", flush=True)
    print(f"  postgres {'embedded, ' + str(settings.data_dir / 'pg') if pg_handle else 'DATABASE_URL'}", flush=True)
    print("Press Ctrl-C to stop.", flush=True)
    exit_code = 0
    while not stopping:
        for service, proc in children.items():
            if proc.poll() is not None:
                log.error("service_exited", service=service, returncode=proc.returncode)
                stopping = True
                exit_code = 1
        time.sleep(0.2)
    for proc in children.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + settings.shutdown_grace_seconds + 5
    for service, proc in children.items():
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
