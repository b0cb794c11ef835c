"""The declarative catalog: ApplyCatalog over gRPC, the YAML file, and `tally catalog apply`."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import grpc
import pytest

from tally.catalog_file import CatalogFileError, load_catalog_file, parse_catalog
from tally_gen.catalog.v1 import catalog_pb2 as pb
from tests.catalog.helpers import reason_of, rejected, violations_of
from tests.harness import REPO, unique

VOIP = REPO / "examples" / "voip.yaml"

UNCHANGED, CREATED, UPDATED, PUBLISHED = (
    pb.APPLY_ACTION_UNCHANGED,
    pb.APPLY_ACTION_CREATED,
    pb.APPLY_ACTION_UPDATED,
    pb.APPLY_ACTION_VERSION_PUBLISHED,
)


def catalog_yaml(
    suffix: str, *, unit_price: str = "0.05", aggregation: str = "SUM", meter_name: str = "Minutes"
) -> str:
    return f"""
products:
  - key: prod_{suffix}
    name: Product
meters:
  - key: minutes_{suffix}
    name: {meter_name}
    unit: minutes
    event_type: call_{suffix}
    aggregation: {aggregation}
    value_property: minutes
plans:
  - key: plan_{suffix}
    name: Plan
    product_key: prod_{suffix}
    currency: USD
    interval: MONTH
    charges:
      - key: fee
        fixed: {{amount: 10.00, timing: IN_ARREARS}}
      - key: minutes
        usage:
          meter_key: minutes_{suffix}
          price: {{model: PER_UNIT, unit_price: {unit_price}}}
"""


def actions(reply: pb.ApplyCatalogResponse) -> dict[tuple[str, str], tuple[int, int]]:
    return {(r.kind, r.key): (r.action, r.version) for r in reply.results}


class TestCatalogFile:
    def test_decimals_keep_their_exact_text(self):
        request = parse_catalog(catalog_yaml("x", unit_price="0.000002"))
        assert request.plans[0].charges[1].usage.price.unit_price.value == "0.000002"
        assert request.plans[0].charges[0].fixed.amount.value == "10.00"

    def test_enums_may_drop_their_prefix(self):
        request = parse_catalog(catalog_yaml("x"))
        assert request.meters[0].aggregation == pb.AGGREGATION_SUM
        assert request.plans[0].interval == pb.BILLING_INTERVAL_MONTH

    def test_an_unknown_field_is_an_error_naming_it(self):
        with pytest.raises(CatalogFileError, match="colour"):
            parse_catalog("meters:\n  - key: m\n    colour: red\n")

    def test_an_unknown_top_level_key_is_an_error(self):
        with pytest.raises(CatalogFileError, match="customers"):
            parse_catalog("customers: []\n")

    def test_the_voip_example_is_ten_dollars_a_month_and_five_cents_a_minute(self):
        request = load_catalog_file(VOIP)
        (meter,) = request.meters
        (plan,) = request.plans
        fee, minutes = plan.charges
        assert (meter.key, meter.event_type, meter.aggregation, meter.value_property) == (
            "call_minutes",
            "call",
            pb.AGGREGATION_SUM,
            "minutes",
        )
        assert (plan.key, plan.currency, plan.interval) == ("voip_monthly", "USD", pb.BILLING_INTERVAL_MONTH)
        assert (fee.fixed.amount.value, fee.fixed.timing) == ("10.00", pb.FEE_TIMING_IN_ARREARS)
        assert (minutes.usage.meter_key, minutes.usage.price.unit_price.value) == ("call_minutes", "0.05")


class TestApplyCatalog:
    async def test_a_first_apply_creates_and_a_second_changes_nothing(self, stub):
        suffix = unique("c")
        first = await stub.ApplyCatalog(parse_catalog(catalog_yaml(suffix)))
        revision = (await stub.GetCatalogRevision(pb.GetCatalogRevisionRequest())).revision
        second = await stub.ApplyCatalog(parse_catalog(catalog_yaml(suffix)))
        assert actions(first) == {
            ("product", f"prod_{suffix}"): (CREATED, 0),
            ("meter", f"minutes_{suffix}"): (CREATED, 0),
            ("plan", f"plan_{suffix}"): (CREATED, 1),
        }
        assert actions(second) == {
            ("product", f"prod_{suffix}"): (UNCHANGED, 0),
            ("meter", f"minutes_{suffix}"): (UNCHANGED, 0),
            ("plan", f"plan_{suffix}"): (UNCHANGED, 1),
        }
        assert second.revision == revision
        assert (await stub.GetCatalogRevision(pb.GetCatalogRevisionRequest())).revision == revision

    async def test_a_changed_plan_publishes_a_new_version(self, stub):
        suffix = unique("c")
        await stub.ApplyCatalog(parse_catalog(catalog_yaml(suffix)))
        reply = await stub.ApplyCatalog(parse_catalog(catalog_yaml(suffix, unit_price="0.04")))
        latest = (await stub.GetPlan(pb.GetPlanRequest(key=f"plan_{suffix}"))).plan.latest_version
        assert actions(reply)[("plan", f"plan_{suffix}")] == (PUBLISHED, 2)
        assert latest.charges[1].usage.price.unit_price.value == "0.04"

    async def test_the_same_price_written_differently_is_unchanged(self, stub):
        suffix = unique("c")
        await stub.ApplyCatalog(parse_catalog(catalog_yaml(suffix, unit_price="0.05")))
        reply = await stub.ApplyCatalog(parse_catalog(catalog_yaml(suffix, unit_price="0.050")))
        assert actions(reply)[("plan", f"plan_{suffix}")] == (UNCHANGED, 1)

    async def test_a_renamed_meter_is_updated(self, stub):
        suffix = unique("c")
        await stub.ApplyCatalog(parse_catalog(catalog_yaml(suffix)))
        reply = await stub.ApplyCatalog(parse_catalog(catalog_yaml(suffix, meter_name="Call minutes")))
        assert actions(reply)[("meter", f"minutes_{suffix}")] == (UPDATED, 0)

    async def test_a_dry_run_reports_changes_and_changes_nothing(self, stub):
        suffix = unique("c")
        reply = await stub.ApplyCatalog(parse_catalog(catalog_yaml(suffix), dry_run=True))
        error = await rejected(stub.GetPlan(pb.GetPlanRequest(key=f"plan_{suffix}")))
        assert actions(reply)[("plan", f"plan_{suffix}")][0] == CREATED
        assert error.code() == grpc.StatusCode.NOT_FOUND

    async def test_a_locked_meter_change_fails_the_whole_apply(self, stub):
        from tally_gen.common.v1 import common_pb2

        suffix = unique("c")
        await stub.ApplyCatalog(parse_catalog(catalog_yaml(suffix)))
        customer = (
            await stub.CreateCustomer(pb.CreateCustomerRequest(customer=pb.Customer(name="x")))
        ).customer
        await stub.CreateSubscription(
            pb.CreateSubscriptionRequest(
                customer=common_pb2.CustomerRef(id=customer.id), plan_key=f"plan_{suffix}"
            )
        )
        error = await rejected(
            stub.ApplyCatalog(parse_catalog(catalog_yaml(suffix, aggregation="MAX", unit_price="0.07")))
        )
        meter = (await stub.GetMeter(pb.GetMeterRequest(key=f"minutes_{suffix}"))).meter
        plan = (await stub.GetPlan(pb.GetPlanRequest(key=f"plan_{suffix}"))).plan
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and reason_of(error) == "METER_LOCKED"
        assert meter.aggregation == pb.AGGREGATION_SUM
        assert plan.latest_version.version == 1

    async def test_invalid_entries_are_all_reported_with_their_position(self, stub):
        suffix = unique("c")
        request = parse_catalog(catalog_yaml(suffix))
        request.meters[0].aggregation = pb.AGGREGATION_UNSPECIFIED
        request.plans[0].currency = "DOLLARS"
        found = await violations_of(stub.ApplyCatalog(request))
        assert {"meters[0].aggregation", "plans[0].currency"} <= set(found)
        error = await rejected(stub.GetMeter(pb.GetMeterRequest(key=f"minutes_{suffix}")))
        assert error.code() == grpc.StatusCode.NOT_FOUND


async def run_cli(address: str, *args: str, json_output: bool = False) -> tuple[int, str, str]:
    env = {**os.environ, "TALLY_CATALOG_ADDR": address, "COLUMNS": "200"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tally.cli.main",
        *(["--json"] if json_output else []),
        "catalog",
        *args,
        env=env,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


class TestCatalogCommand:
    async def test_tally_catalog_apply_twice_reports_created_then_unchanged(
        self, catalog_server, tmp_path: Path
    ):
        address = f"127.0.0.1:{catalog_server[0].port}"
        suffix = unique("cli")
        path = tmp_path / "catalog.yaml"
        path.write_text(catalog_yaml(suffix))
        code1, out1, err1 = await run_cli(address, "apply", str(path))
        code2, out2, err2 = await run_cli(address, "apply", str(path))
        assert (code1, code2) == (0, 0), err1 + err2
        assert f"plan_{suffix}" in out1 and "CREATED" in out1 and "UNCHANGED" not in out1
        assert "UNCHANGED" in out2 and "CREATED" not in out2

    async def test_json_output_lists_each_result_with_its_action(self, catalog_server, tmp_path: Path):
        address = f"127.0.0.1:{catalog_server[0].port}"
        suffix = unique("cli")
        path = tmp_path / "catalog.yaml"
        path.write_text(catalog_yaml(suffix))
        code, out, err = await run_cli(address, "apply", str(path), json_output=True)
        assert code == 0, err
        results = {(r["kind"], r["key"]): r["action"] for r in json.loads(out)["results"]}
        assert results == {
            ("product", f"prod_{suffix}"): "APPLY_ACTION_CREATED",
            ("meter", f"minutes_{suffix}"): "APPLY_ACTION_CREATED",
            ("plan", f"plan_{suffix}"): "APPLY_ACTION_CREATED",
        }

    async def test_tally_catalog_list_shows_applied_plans(self, catalog_server, tmp_path: Path):
        address = f"127.0.0.1:{catalog_server[0].port}"
        suffix = unique("cli")
        path = tmp_path / "catalog.yaml"
        path.write_text(catalog_yaml(suffix))
        await run_cli(address, "apply", str(path))
        code, out, err = await run_cli(address, "list")
        assert code == 0, err
        assert f"plan_{suffix}" in out and f"minutes_{suffix}" in out

    async def test_an_invalid_file_is_reported_with_its_violations(self, catalog_server, tmp_path: Path):
        address = f"127.0.0.1:{catalog_server[0].port}"
        path = tmp_path / "bad.yaml"
        path.write_text(catalog_yaml(unique("cli")).replace("currency: USD", "currency: NOPE"))
        code, _, err = await run_cli(address, "apply", str(path))
        assert code == 1
        assert "invalid request" in err and "plans[0].currency" in err

    async def test_the_voip_example_applies_and_reapplies_unchanged(self, catalog_server):
        address = f"127.0.0.1:{catalog_server[0].port}"
        await run_cli(address, "apply", str(VOIP))
        code, out, err = await run_cli(address, "apply", str(VOIP))
        assert code == 0, err
        assert "voip_monthly" in out and "call_minutes" in out
        assert "CREATED" not in out and "VERSION_PUBLISHED" not in out
