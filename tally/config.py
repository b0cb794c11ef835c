"""Configuration from the environment: one typed table of every TALLY_* variable.

Each variable has a kind (integer, port, number, boolean, choice, text), a default and the form
it expects. ``validate_environment()`` runs at start (``tally serve``, ``tally run``) and
refuses to start on any bad value, naming the variable, the value and the expected form,
all problems at once; an unknown ``TALLY_*`` name is reported as a warning (a typo would
otherwise silently keep the default). ``setting(name)`` reads one value, parsed the same way.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SERVICES = ("catalog", "ingest", "meter", "invoice")

DEFAULT_PORTS = {"catalog": 50051, "ingest": 50052, "meter": 50053, "invoice": 50054}
DEFAULT_METRICS_PORTS = {"catalog": 9151, "ingest": 9152, "meter": 9153, "invoice": 9154}

LOG_FORMATS = ("console", "json")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
MIN_PAGE_TOKEN_SECRET = 16


class ConfigError(ValueError):
    """Bad settings: every problem as (variable, what is wrong), in one message."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        lines = "\n".join(f"  {name}: {problem}" for name, problem in problems)
        super().__init__(f"invalid configuration ({len(problems)} problem{'s' if len(problems) != 1 else ''}):\n{lines}")


def _show(value: str) -> str:
    return repr(value if len(value) <= 60 else value[:57] + "...")


@dataclass(frozen=True)
class Var:
    """One TALLY_* variable: how to parse it and what it expects."""

    name: str
    kind: str  # int, port, number, bool, choice, text, gc
    default: str
    form: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    secret: bool = False

    def parse(self, text: str) -> Any:
        """The value of ``text``; ConfigError naming the variable and the expected form."""
        shown = "<hidden>" if self.secret else _show(text)
        problem = f"got {shown}; expected {self.form}"
        raw = text.strip()
        if self.kind in ("int", "port"):
            if not raw.isascii() or not raw.lstrip("-").isdigit():
                raise ConfigError([(self.name, problem)])
            value: Any = int(raw)
        elif self.kind == "number":
            try:
                value = float(raw) if raw.isascii() else math.nan
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                raise ConfigError([(self.name, problem)])
        elif self.kind == "bool":
            lowered = raw.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("", "0", "false", "no", "off"):
                return False
            raise ConfigError([(self.name, problem)])
        elif self.kind == "choice":
            if raw.lower() not in self.choices:
                raise ConfigError([(self.name, problem)])
            return raw.lower()
        elif self.kind == "gc":
            if raw.lower() == "python":
                return None
            parts = raw.split(",")
            if len(parts) != 3 or not all(p.strip().isascii() and p.strip().isdigit() for p in parts):
                raise ConfigError([(self.name, problem)])
            return tuple(int(p) for p in parts)
        else:
            if "\x00" in text:
                raise ConfigError([(self.name, "must not contain NUL")])
            return text
        if (self.minimum is not None and value < self.minimum) or (self.maximum is not None and value > self.maximum):
            raise ConfigError([(self.name, problem)])
        return value


def _vars() -> dict[str, Var]:
    out: list[Var] = [
        Var("TALLY_DATA_DIR", "text", ".tally", "a directory path"),
        Var("TALLY_BIND_HOST", "text", "127.0.0.1", "a host name or IP address to listen on"),
        Var("TALLY_LOG_FORMAT", "choice", "console", "one of: " + ", ".join(LOG_FORMATS), choices=LOG_FORMATS),
        Var("TALLY_LOG_LEVEL", "choice", "info", "one of: " + ", ".join(LOG_LEVELS), choices=LOG_LEVELS),
        Var("TALLY_SHUTDOWN_GRACE_SECONDS", "number", "10", "a number of seconds from 0 to 3600, such as 10 or 2.5",
            minimum=0, maximum=3600),
        Var("TALLY_DB_POOL_SIZE", "int", "10", "an integer from 1 to 1000", minimum=1, maximum=1000),
        Var("TALLY_INGEST_DB_POOL_SIZE", "int", "", "an integer from 1 to 1000", minimum=1, maximum=1000),
        Var("TALLY_GC_THRESHOLDS", "gc", "", "three non-negative integers gen0,gen1,gen2 (such as 50000,20,100) or 'python'"),
        Var("TALLY_PAGE_TOKEN_SECRET", "text", "", f"a secret of at least {MIN_PAGE_TOKEN_SECRET} characters", secret=True),
        Var("TALLY_INGEST_LATE_EVENT_WINDOW_DAYS", "int", "35", "an integer number of days from 1 to 3650",
            minimum=1, maximum=3650),
        Var("TALLY_METER_BATCH_SIZE", "int", "5000", "an integer from 1 to 10000", minimum=1, maximum=10_000),
        Var("TALLY_METER_WAIT_MILLIS", "int", "500", "an integer number of milliseconds from 0 to 60000",
            minimum=0, maximum=60_000),
        Var("TALLY_METER_APPLY", "int", "1", "0 (query-only replica) or 1", minimum=0, maximum=1),
        Var("TALLY_METER_STALL_SECONDS", "int", "15", "an integer number of seconds from 1 to 86400",
            minimum=1, maximum=86_400),
        Var("TALLY_HEALTH_PROBE_SECONDS", "number", "2", "a number of seconds from 0.1 to 300", minimum=0.1, maximum=300),
        Var("TALLY_RESTART_MAX_BACKOFF_SECONDS", "number", "30", "a number of seconds from 0.1 to 3600",
            minimum=0.1, maximum=3600),
        Var("TALLY_INVOICE_GRACE_SECONDS", "int", "3600", "an integer number of seconds from 0 to 259200 (72 h)",
            minimum=0, maximum=259_200),
        Var("TALLY_INVOICE_CLOSE_INTERVAL_SECONDS", "number", "60", "a number of seconds >= 0 (0 disables the scheduler)",
            minimum=0, maximum=86_400),
        Var("TALLY_INVOICE_CLOSE_CONCURRENCY", "int", "64", "an integer from 1 to 1000", minimum=1, maximum=1000),
        Var("TALLY_INVOICE_ADJUSTMENT_LOOKBACK_DAYS", "int", "35", "an integer number of days from 1 to 3650",
            minimum=1, maximum=3650),
        Var("TALLY_INVOICE_SELLER_NAME", "text", "Tally", "text"),
        Var("TALLY_INVOICE_SELLER_DETAILS", "text", "", "text"),
        Var("TALLY_AUTH_MODE", "choice", "required", "'required' or 'disabled'", choices=("required", "disabled")),
        Var("TALLY_AUTH_KEYS_FILE", "text", "", "a file path (the key store written by `tally keys`)"),
        Var("TALLY_AUTH_PROTECT_HEALTH", "bool", "false", "true or false"),
        Var("TALLY_SERVICE_API_KEY", "text", "", "an API key tly_<id>.<secret>", secret=True),
        Var("TALLY_RATE_LIMIT_PER_SECOND", "number", "0", "a number of calls per second >= 0 (0 turns it off)",
            minimum=0, maximum=1e9),
        Var("TALLY_RATE_LIMIT_BURST", "number", "0", "a number of calls >= 0", minimum=0, maximum=1e9),
        Var("TALLY_TLS_CERT", "text", "", "a PEM file path"),
        Var("TALLY_TLS_KEY", "text", "", "a PEM file path"),
        Var("TALLY_TLS_CA", "text", "", "a PEM file path"),
        Var("TALLY_TLS_CLIENT_AUTH", "choice", "none", "'none' or 'require'", choices=("none", "require")),
        Var("TALLY_TLS_CLIENT_CERT", "text", "", "a PEM file path"),
        Var("TALLY_TLS_CLIENT_KEY", "text", "", "a PEM file path"),
        Var("TALLY_TLS_SERVER_NAME", "text", "", "a host name"),
    ]
    for service in SERVICES:
        upper = service.upper()
        out += [
            Var(f"TALLY_{upper}_PORT", "port", str(DEFAULT_PORTS[service]), "a TCP port from 0 to 65535",
                minimum=0, maximum=65_535),
            Var(f"TALLY_{upper}_ADDR", "text", "", "host:port"),
            Var(f"TALLY_{upper}_METRICS_PORT", "port", str(DEFAULT_METRICS_PORTS[service]),
                "a TCP port from 0 to 65535 (0 disables /metrics)", minimum=0, maximum=65_535),
            Var(f"TALLY_{upper}_GC_THRESHOLDS", "gc", "",
                "three non-negative integers gen0,gen1,gen2 (such as 50000,20,100) or 'python'"),
        ]
    return {v.name: v for v in out}


VARIABLES: dict[str, Var] = _vars()


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def setting(name: str, env: Mapping[str, str] | None = None) -> Any:
    """The parsed value of a known TALLY_* variable (its default when unset or empty)."""
    var = VARIABLES[name]
    env = os.environ if env is None else env
    text = env.get(name)
    if text is None or text == "":
        text = var.default
    if text == "" and var.kind not in ("text", "choice", "bool"):
        return None
    return var.parse(text)


def validate_environment(env: Mapping[str, str] | None = None) -> list[str]:
    """Check every TALLY_* variable that is set, and the combinations that must hold.

    Raises ConfigError with every problem; returns warnings (unknown TALLY_* names).
    """
    env = os.environ if env is None else env
    problems: list[tuple[str, str]] = []
    warnings: list[str] = []
    for name, text in sorted(env.items()):
        if not name.startswith("TALLY_"):
            continue
        var = VARIABLES.get(name)
        if var is None:
            warnings.append(f"{name} is not a Tally setting (misspelt?); it is ignored")
            continue
        if text == "":
            continue
        try:
            var.parse(text)
        except ConfigError as error:
            problems.extend(error.problems)
    database_url = env.get("DATABASE_URL") or ""
    if database_url and not database_url.split("://", 1)[0].split("+", 1)[0] in ("postgres", "postgresql"):
        problems.append(("DATABASE_URL", "expected a postgresql://user:pass@host:port/db URL"))
    auth_mode = (env.get("TALLY_AUTH_MODE") or "required").strip().lower()
    secret = env.get("TALLY_PAGE_TOKEN_SECRET") or ""
    if auth_mode == "required" and not secret:
        problems.append((
            "TALLY_PAGE_TOKEN_SECRET",
            "must be set when TALLY_AUTH_MODE=required (page tokens signed with the built-in key could be forged); "
            f"expected a secret of at least {MIN_PAGE_TOKEN_SECRET} characters",
        ))
    elif secret and len(secret) < MIN_PAGE_TOKEN_SECRET:
        problems.append(("TALLY_PAGE_TOKEN_SECRET", f"expected a secret of at least {MIN_PAGE_TOKEN_SECRET} characters"))
    if problems:
        raise ConfigError(problems)
    return warnings


def service_port(service: str) -> int:
    """The port a service listens on: TALLY_<SERVICE>_PORT."""
    return setting(f"TALLY_{service.upper()}_PORT")


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
            data_dir=Path(setting("TALLY_DATA_DIR")),
            bind_host=setting("TALLY_BIND_HOST"),
            log_format=setting("TALLY_LOG_FORMAT"),
            log_level=setting("TALLY_LOG_LEVEL"),
            shutdown_grace_seconds=setting("TALLY_SHUTDOWN_GRACE_SECONDS"),
            db_pool_size=setting("TALLY_DB_POOL_SIZE"),
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
    own = f"TALLY_{service.upper()}_GC_THRESHOLDS"
    for name in (own, "TALLY_GC_THRESHOLDS"):
        if os.environ.get(name):
            return setting(name)
    return VARIABLES[own].parse(DEFAULT_GC_THRESHOLDS.get(service, "python"))


def env_int(name: str, default: int) -> int:
    """An integer setting: a known variable is parsed (and bounded) by its entry in VARIABLES."""
    var = VARIABLES.get(name)
    text = _env(name, str(default))
    if var is not None:
        return var.parse(text)
    try:
        return int(text)
    except ValueError:
        raise ConfigError([(name, f"got {_show(text)}; expected an integer")]) from None


def env_str(name: str, default: str) -> str:
    return _env(name, default)
