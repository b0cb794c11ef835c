"""The fuzzer's own cluster: the four services as real processes on a database of their own.

A private database keeps the fuzzer's poison away from the other tests (and their meters
away from the canary). ``slow`` runs (the long fuzz) are collected only by ``make soak``.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from tally.config import SERVICES
from tally.migrations import upgrade
from tests.harness import ServiceProcesses, drop_database, recreate_database

# Small pools: the fuzz cluster shares the Postgres server (and its connection limit) with
# the rest of the suite; one caller at a time needs few connections.
FUZZ_ENV = {"TALLY_DB_POOL_SIZE": "3"}



def pytest_collection_modifyitems(config, items):
    if "slow" in (config.getoption("-m") or ""):
        return
    soak = [item for item in items if "slow" in item.keywords and "tests/fuzz" in str(item.fspath)]
    if soak:
        config.hook.pytest_deselected(items=soak)
        items[:] = [item for item in items if item not in soak]


@pytest.fixture(scope="module")
def fuzz_cluster(server_url: str, tmp_path_factory):
    name = f"tally_fuzz_{os.getpid()}"
    url = asyncio.run(recreate_database(server_url, name))
    for service in SERVICES:
        upgrade(service, url)
    cluster = ServiceProcesses(database_url=url, log_dir=tmp_path_factory.mktemp("fuzz-logs"), extra_env=FUZZ_ENV)
    try:
        asyncio.run(cluster.start_all())
        yield cluster
    finally:
        cluster.stop_all()
        asyncio.run(drop_database(server_url, name))


def pytest_terminal_summary(terminalreporter):
    from tests.fuzz.runner import RUNS

    for run in RUNS:
        stopped = "; STOPPED: metering or billing broke" if run["stopped"] else ""
        terminalreporter.write_line(
            f"fuzz {run['name']} (seed {run['seed']}): {run['cases']} cases ({run['hostile']} with poison fields) over "
            f"{run['rpcs_covered']}/{run['rpcs_total']} RPCs, {run['seconds']:.0f}s; canaries acknowledged "
            f"{run['canaries']} (+{run['canary_duplicates']} resends), counted exactly once at "
            f"{run['canary_checks_passed']}/{run['canary_checks']} checks{stopped}; "
            f"distinct findings {run['findings']}; codes {run['codes']}"
        )
