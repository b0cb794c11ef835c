"""The client example in README.md runs as written against the real services."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys

import grpc
import pytest

from tally.channels import connect
from tally_gen.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from tests.harness import REPO

pytestmark = pytest.mark.e2e

# The README holds the example users copy.
CLIENT_DOC = REPO / "README.md"


def example_code() -> str:
    text = CLIENT_DOC.read_text()
    section = text[text.index("<!-- client-example:start -->") : text.index("<!-- client-example:end -->")]
    [code] = re.findall(r"^```python\n(.*?)^```$", section, flags=re.S | re.M)
    return code


class TestClientExample:
    async def test_the_documented_example_sends_1001_events(self, services, tmp_path):
        async with connect(services.address("catalog")) as channel:
            try:
                await catalog_pb2_grpc.CatalogServiceStub(channel).CreateCustomer(
                    catalog_pb2.CreateCustomerRequest(customer=catalog_pb2.Customer(external_id="acct_67890")),
                    timeout=10,
                )
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.ALREADY_EXISTS
        script = tmp_path / "example.py"
        script.write_text(example_code())
        env = {**os.environ, "TALLY_INGEST_ADDR": services.address("ingest"), "PYTHONPATH": str(REPO)}
        result = await asyncio.to_thread(
            subprocess.run, [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120
        )
        assert result.returncode == 0, result.stderr
        stats_line, accepted_line = result.stdout.strip().splitlines()
        assert "accepted=1000" in stats_line and "rejected=0" in stats_line
        assert accepted_line == "1"
