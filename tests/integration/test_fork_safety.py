"""Starting subprocesses from a process that is busy with gRPC must not crash the children.

grpcio's C core installs fork handlers by default; in a child made by subprocess (fork, then
exec) they restart grpc's poller, which crashed about 40% of such children here before they
could exec (400 spawns: 158 died; the test harness saw pg_ctl "die" with SIGSEGV). Importing
``tally`` turns the handlers off (tally/__init__.py). The check runs in a fresh interpreter so
that it imports ``tally`` exactly as a service, the CLI or the test harness does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from tests.harness import REPO

CHILD = textwrap.dedent(
    """
    import asyncio, os, subprocess

    import tally  # noqa: F401 - what every Tally process imports first
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    assert os.environ["GRPC_ENABLE_FORK_SUPPORT"] == "false"

    async def main():
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        stub = health_pb2_grpc.HealthStub(channel)
        done = asyncio.Event()

        async def calls():
            while not done.is_set():
                await stub.Check(health_pb2.HealthCheckRequest())

        callers = [asyncio.create_task(calls()) for _ in range(8)]
        # user= makes subprocess fork (not vfork), so fork handlers would run in the child.
        spawn = lambda: subprocess.call(["/bin/true"], user=os.getuid(), stderr=subprocess.DEVNULL)
        failed = sum([await asyncio.to_thread(spawn) != 0 for _ in range(150)])
        done.set()
        await asyncio.gather(*callers)
        await channel.close()
        await server.stop(None)
        print("failed", failed)

    asyncio.run(main())
    """
)


def test_children_started_while_grpc_is_busy_all_exec():
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    result = subprocess.run(
        [sys.executable, "-c", CHILD], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "failed 0", result.stdout + result.stderr[-2000:]
