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


# The meter's applier holds a whole batch of decoded entries and contributions (thousands of
# small container objects) while it works; with Python's default gen0 threshold of 700 the
# collector keeps traversing and promoting them. Raising the thresholds (after gc.freeze() of
# what was loaded at start) cut the applier's CPU per entry by ~15-20% (200k entries, 2 cores,
# A/B x3). Ingest allocates few tracked objects per event and was not helped (stream CPU per
# event ~10% higher in A/B x2), so the other services keep Python's defaults.
DEFAULT_GC_THRESHOLDS = {"meter": "50000,20,100"}


def gc_thresholds(service: str) -> tuple[int, int, int] | None:
    """The service's cyclic-GC thresholds (gen0, gen1, gen2); None keeps Python's own.

    TALLY_<SERVICE>_GC_THRESHOLDS, else TALLY_GC_THRESHOLDS, else the default above: three
    comma-separated integers, or "python" for the interpreter's defaults.
    """
    shared = _env("TALLY_GC_THRESHOLDS", DEFAULT_GC_THRESHOLDS.get(service, "python"))
    text = _env(f"TALLY_{service.upper()}_GC_THRESHOLDS", shared)
    if text.strip().lower() == "python":
        return None
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or any(v < 0 for v in values):
        raise ValueError(f"GC thresholds must be three non-negative integers or 'python', got {text!r}")
    return values  # type: ignore[return-value]


def env_int(name: str, default: int) -> int:
    return int(_env(name, str(default)))


def env_str(name: str, default: str) -> str:
    return _env(name, default)
