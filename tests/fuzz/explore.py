"""Collect every distinct finding: fuzz runs over several seeds, each on a fresh cluster.

The test stops at the first input that breaks metering for everyone (after that the canary
fails whatever comes next); this explorer starts over on a fresh database with the next seed,
so one run lists many findings. It writes a grouped Markdown report.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python -m tests.fuzz.explore --seeds 1-6 --examples 290 --out findings.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
from pathlib import Path

import tally  # noqa: F401 - fork handlers off before grpc is imported
from tally.config import SERVICES
from tally.migrations import upgrade
from tests.fuzz.conftest import FUZZ_ENV
from tests.fuzz.engine import Finding
from tests.fuzz.runner import run_fuzz
from tests.harness import ServiceProcesses, drop_database, recreate_database


def run_seed(server_url: str, fuzz_seed: int, examples: int) -> tuple[dict, list[Finding]]:
    name = f"tally_fuzz_explore_{os.getpid()}_{fuzz_seed}"
    url = asyncio.run(recreate_database(server_url, name))
    for service in SERVICES:
        upgrade(service, url)
    cluster = ServiceProcesses(database_url=url, log_dir=Path(tempfile.mkdtemp(prefix="fuzz-explore-")), extra_env=FUZZ_ENV)
    try:
        asyncio.run(cluster.start_all())
        stats = run_fuzz(cluster, f"explore-{fuzz_seed}", examples, fuzz_seed)
    finally:
        cluster.stop_all()
        asyncio.run(drop_database(server_url, name))
    return {"seed": fuzz_seed, "cases": stats.cases}, stats.findings


def printable(text: str) -> str:
    """Control characters (NUL, ...) escaped, so the report stays a text file."""
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode() for c in text)


def report(findings: list[Finding], runs: list[dict], header: str) -> str:
    groups: dict[str, list[Finding]] = {}
    for finding in findings:
        title = "System: metering or billing stopped after a batch" if finding.kind == "system" else (
            f"{finding.rpc.split('/')[0]}: {finding.kind} {finding.code}"
        )
        groups.setdefault(title, []).append(finding)
    lines = [header, "", 'Runs: ' + ', '.join(f"seed {r['seed']} ({r['cases']} cases)" for r in runs), ""]
    for title in sorted(groups):
        lines.append(f"## {title}")
        lines.append("")
        for finding in groups[title]:
            lines.append(f"- **{finding.rpc}** `{finding.code}`: {printable(finding.message[:400])}")
            lines.append(f"  - request: `{printable(finding.request[:900])}`")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="1-4")
    parser.add_argument("--examples", type=int, default=290)
    parser.add_argument("--out", default="fuzz-findings.md")
    parser.add_argument("--header", default="# Fuzz findings")
    args = parser.parse_args()
    first, _, last = args.seeds.partition("-")
    seeds = range(int(first), int(last or first) + 1)
    server_url = os.environ["DATABASE_URL"]
    findings: list[Finding] = []
    seen: set = set()
    runs = []
    for fuzz_seed in seeds:
        run, found = run_seed(server_url, fuzz_seed, args.examples)
        runs.append(run)
        for finding in found:
            if finding.signature() not in seen:
                seen.add(finding.signature())
                findings.append(finding)
        Path(args.out).write_text(report(findings, runs, args.header))
        Path(args.out).with_suffix(".json").write_text(json.dumps([f.__dict__ for f in findings], indent=1))
        print(f"seed {fuzz_seed}: {run['cases']} cases, {len(found)} findings; {len(findings)} distinct so far", flush=True)


if __name__ == "__main__":
    main()
