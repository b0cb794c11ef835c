"""Run every benchmark module in order and assemble BENCHMARKS.md.

Each module bench/<name>.py has ``main(out: Path) -> None`` that measures, then writes a
Markdown section (its figures and its same-run baseline) to ``out``. Run one with
``python -m bench ingest``; ``make bench`` runs them all.
"""

from __future__ import annotations

import datetime as dt
import importlib
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
ORDER = ["ingest", "meter", "invoice"]


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores ({cpu}), {mem_gib:.0f} GiB RAM, Python {platform.python_version()}"


def main(argv: list[str]) -> int:
    names = argv or [n for n in ORDER if (ROOT / "bench" / f"{n}.py").exists()]
    RESULTS.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in names:
        print(f"== bench {name}", flush=True)
        # A fresh process per benchmark, so one's memory and threads don't skew the next.
        code = subprocess.call([sys.executable, "-c", f"import bench.{name} as b, pathlib; b.main(pathlib.Path({str(RESULTS / (name + '.md'))!r}))"], cwd=ROOT)
        if code != 0:
            failed.append(name)
        else:
            # Stamp the section: `python -m bench NAME` re-runs one benchmark, so sections of
            # BENCHMARKS.md may come from different runs.
            section = RESULTS / f"{name}.md"
            if section.exists():
                stamp = f"_Measured {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC._"
                section.write_text(section.read_text().rstrip() + "\n\n" + stamp + "\n")
    sections = [
        "# Benchmarks",
        "",
        f"Machine: {machine()}.  ",
        f"Assembled: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC (each section says when it was measured).  ",
        "Produced by `make bench` (or `python -m bench NAME` for one section); each section compares against a baseline measured in the same run.",
        "",
    ]
    for name in ORDER:
        path = RESULTS / f"{name}.md"
        if path.exists():
            sections += [path.read_text().rstrip(), ""]
    (ROOT / "BENCHMARKS.md").write_text("\n".join(sections) + "\n")
    if failed:
        print(f"benchmarks failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    importlib.invalidate_caches()
    raise SystemExit(main(sys.argv[1:]))
