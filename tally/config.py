"""Configuration from the environment. Every setting has a documented TALLY_* variable."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

SERVICES = ("catalog", "ingest", "meter", "invoice")

DEFAULT_PORTS = {"catalog": 50051, "ingest": 50052, "meter": 50053, "invoice": 50054}


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def service_port(service: str) -> int:
    """The port a service listens on: TALLY_<SERVICE>_PORT."""
    return int(_env(f"TALLY_{service.upper()}_PORT", str(DEFAULT_PORTS[service])))


def service_address(service: str) -> str:
    """Where other services reach a service: TALLY_<SERVICE>_ADDR, else localhost and its port."""
    return _env(f"TALLY_{service.upper()}_ADDR", f"127.0.0.1:{service_port(service)}")


@dataclass(frozen=True)
class Settings:
    """Settings shared by all four services."""

    database_url: str | None
    data_dir: Path
    bind_host: str
    log_format: str
    log_level: str
    shutdown_grace_seconds: float
    db_pool_size: int

    @classmethod
    def from_env(cls) -> "Settings":
        return cls(
            database_url=os.environ.get("DATABASE_URL") or None,
            data_dir=Path(_env("TALLY_DATA_DIR", ".tally")),
            bind_host=_env("TALLY_BIND_HOST", "127.0.0.1"),
            log_format=_env("TALLY_LOG_FORMAT", "console"),
            log_level=_env("TALLY_LOG_LEVEL", "info"),
            shutdown_grace_seconds=float(_env("TALLY_SHUTDOWN_GRACE_SECONDS", "10")),
            db_pool_size=int(_env("TALLY_DB_POOL_SIZE", "10")),
        )


def env_int(name: str, default: int) -> int:
    return int(_env(name, str(default)))


def env_str(name: str, default: str) -> str:
    return _env(name, default)
