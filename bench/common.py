"""What every benchmark module shares: environment knobs, CPU readings, a fresh database."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from tally.config import SERVICES
from tally.embedded_pg import resolve_database_url
from tally.migrations import upgrade
from tests.harness import REPO, drop_database, recreate_database

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value else default


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (fields 14 and 15 of /proc/<pid>/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0  # the process ended meanwhile (a Postgres backend, say)
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def postgres_cpu_seconds() -> float:
    """User + system CPU time so far of every postgres process: backends come and go."""
    return sum(cpu_seconds(int(p.name)) for p in Path("/proc").iterdir() if p.name.isdigit() and _is_postgres(p))


def _is_postgres(proc: Path) -> bool:
    try:
        return (proc / "comm").read_text().strip() == "postgres"
    except OSError:
        return False


def run_on_fresh_database(
    kind: str, measure: Callable[[str, Path], Awaitable[dict]], report: Callable[[dict], str], out: Path
) -> None:
    """Measure on a database of its own (DATABASE_URL's server, else the embedded Postgres),
    migrated for every service; write the report section to ``out``; drop the database."""
    server_url, handle = resolve_database_url(os.environ.get("DATABASE_URL"), REPO / ".tally")
    name = f"tally_bench_{kind}_{os.getpid()}"
    try:
        database_url = asyncio.run(recreate_database(server_url, name))
        for service in SERVICES:
            upgrade(service, database_url)
        with tempfile.TemporaryDirectory(prefix=f"tally-bench-{kind}-") as log_dir:
            results = asyncio.run(measure(database_url, Path(log_dir)))
        section = report(results)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(section)
        print(section, flush=True)
    finally:
        asyncio.run(drop_database(server_url, name))
        if handle is not None:
            handle.cleanup()
