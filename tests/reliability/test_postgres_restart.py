"""Postgres restarts mid-load: the services reconnect by themselves, callers see UNAVAILABLE
(retryable) while it is down, and no acknowledged event is lost.

Postgres here is a private pgserver instance in a temporary directory, so restarting it
disturbs no other test.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import asyncpg
import grpc
import pytest

from tally.db import asyncpg_dsn
from tally_gen.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from tests.reliability.faults import (
    settled_usage,
    start_fault_cluster,
    stop_fault_cluster,
    stream_with_fault,
    usage_workload,
)

# Restarting Postgres takes ~20 s with the cluster: it runs under `make soak`, not `make test`.
pytestmark = [pytest.mark.e2e]


class PrivatePostgres:
    """A pgserver instance this module may stop and start at will (with pg_ctl, as pgserver does)."""

    def __init__(self, directory) -> None:
        import pgserver

        self.server = pgserver.get_server(directory, cleanup_mode="stop")
        self.uri = self.server.get_uri()
        self.socket_dir = parse_qs(urlparse(self.uri).query)["host"][0]

    def pg_ctl(self, *args: str) -> None:
        from pgserver._commands import pg_ctl

        pg_ctl(["-w", *args], pgdata=self.server.pgdata, user=self.server.system_user)

    def stop(self) -> None:
        """Fast shutdown (SIGINT to the postmaster; pg_ctl stop is unreliable here), then wait."""
        pid_file = Path(self.server.pgdata) / "postmaster.pid"
        if not pid_file.exists():
            return
        pid = int(pid_file.read_text().split()[0])
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        raise TimeoutError("postgres did not stop")

    def start(self) -> None:
        for attempt in range(5):
            try:
                self.pg_ctl("-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.server.log), "start")
                return
            except subprocess.CalledProcessError:
                if attempt == 4:
                    raise
                time.sleep(0.5)


@pytest.fixture(scope="module")
def private_postgres(tmp_path_factory):
    postgres = PrivatePostgres(tmp_path_factory.mktemp("pg") / "data")
    yield postgres
    postgres.stop()
    postgres.server.cleanup()


@pytest.fixture(scope="module")
async def cluster(private_postgres, tmp_path_factory):
    url = private_postgres.uri
    cluster, name, _ = await start_fault_cluster(url, tmp_path_factory.mktemp("pg-restart-logs"))
    yield cluster
    await stop_fault_cluster(cluster, url, name)


async def restart_postgres(postgres: PrivatePostgres, down_for: float, during_outage=None) -> None:
    await asyncio.to_thread(postgres.stop)
    if during_outage is not None:
        await during_outage()
    await asyncio.sleep(down_for)
    await asyncio.to_thread(postgres.start)


class TestPostgresRestart:
    @pytest.mark.parametrize("seed", [pytest.param(7, id="seed_7")])
    async def test_no_acknowledged_event_is_lost_when_postgres_restarts_mid_stream(self, cluster, private_postgres, seed):
        rng = random.Random(seed)
        workload = await usage_workload(cluster, rng, 1500)
        outage_codes: list[grpc.StatusCode] = []

        async def probe_during_outage() -> None:
            # A plain call with no retries while the database is down.
            try:
                conn = await asyncpg.connect(asyncpg_dsn(private_postgres.uri), timeout=2)
                await conn.close()
                outage_codes.append("postgres still up")
            except (OSError, asyncpg.PostgresError, asyncio.TimeoutError):
                pass
            async with grpc.aio.insecure_channel(cluster.address("ingest")) as channel:
                try:
                    await ingest_pb2_grpc.IngestServiceStub(channel).GetEvent(
                        ingest_pb2.GetEventRequest(idempotency_key=workload.events[0][0]), timeout=10
                    )
                    outage_codes.append(grpc.StatusCode.OK)
                except grpc.aio.AioRpcError as error:
                    outage_codes.append(error.code())

        figures = await stream_with_fault(
            cluster, workload, rng,
            lambda down_for: restart_postgres(private_postgres, down_for + 0.5, probe_during_outage),
            max_down=1.0,
        )
        total, count = await settled_usage(cluster, workload)
        context = f"seed {seed}: {figures}; outage answered {outage_codes}; rejections {workload.rejections[:2]}"
        assert outage_codes == [grpc.StatusCode.UNAVAILABLE], context
        assert set(workload.outcomes.values()) <= {"accepted", "duplicate"}, context
        assert len(workload.outcomes) == 1500, context
        assert count == 1500, context
        assert total == workload.expected_sum, context
