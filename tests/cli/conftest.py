"""CLI tests: typer's CliRunner invoking `tally` against the four services as real processes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import grpc
import pytest
from typer.testing import CliRunner

from tally.cli.main import app
from tally.config import SERVICES
from tally_gen.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from tally_gen.common.v1 import common_pb2
from tests.harness import unique


@dataclass(frozen=True)
class Cli:
    env: dict[str, str]

    def __call__(self, *args: str):
        # CLI commands run their own event loop (asyncio.run), so CLI tests are plain functions.
        return CliRunner().invoke(app, list(args), env=self.env, catch_exceptions=False)


@pytest.fixture
def cli(services) -> Cli:
    env = {f"TALLY_{service.upper()}_ADDR": services.address(service) for service in SERVICES}
    env["COLUMNS"] = "220"
    return Cli(env)


@dataclass(frozen=True)
class VoipPlan:
    """A meter on `call` events (SUM of minutes) and a plan pricing it at $0.05 plus $10."""

    meter_key: str
    event_type: str
    plan_key: str


@pytest.fixture
def voip_plan(services) -> VoipPlan:
    meter_key, event_type, plan_key = unique("call_minutes"), unique("call"), unique("voip")
    with grpc.insecure_channel(services.address("catalog")) as channel:
        catalog = catalog_pb2_grpc.CatalogServiceStub(channel)
        catalog.CreateMeter(
            catalog_pb2.CreateMeterRequest(
                meter=catalog_pb2.Meter(
                    key=meter_key,
                    name="Call minutes",
                    unit="minutes",
                    event_type=event_type,
                    aggregation=catalog_pb2.AGGREGATION_SUM,
                    value_property="minutes",
                )
            ),
            timeout=10,
        )
        catalog.CreatePlan(
            catalog_pb2.CreatePlanRequest(
                plan=catalog_pb2.PlanSpec(
                    key=plan_key,
                    name="VoIP monthly",
                    currency="USD",
                    interval=catalog_pb2.BILLING_INTERVAL_MONTH,
                    interval_count=1,
                    charges=[
                        catalog_pb2.Charge(
                            key="monthly_fee",
                            name="Monthly fee",
                            fixed=catalog_pb2.FixedFee(
                                amount=common_pb2.Decimal(value="10.00"), timing=catalog_pb2.FEE_TIMING_IN_ARREARS
                            ),
                        ),
                        catalog_pb2.Charge(
                            key="call_minutes",
                            name="Call minutes",
                            usage=catalog_pb2.UsageCharge(
                                meter_key=meter_key,
                                price=catalog_pb2.Price(
                                    model=catalog_pb2.PRICING_MODEL_PER_UNIT,
                                    unit_price=common_pb2.Decimal(value="0.05"),
                                ),
                            ),
                        ),
                    ],
                )
            ),
            timeout=10,
        )
    return VoipPlan(meter_key, event_type, plan_key)


@pytest.fixture
def make_customer(cli) -> Callable[..., dict]:
    """Create a customer through the CLI and return it as JSON data."""
    import json

    def create(**fields: str) -> dict:
        external_id = fields.pop("external_id", unique("acct"))
        args = ["--json", "customers", "create", "--external-id", external_id]
        for name, value in fields.items():
            args += [f"--{name.replace('_', '-')}", value]
        result = cli(*args)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    return create


@pytest.fixture(scope="session")
def invoice_scheduler_off(services) -> None:
    """The cluster's invoice process without its periodic close, so a test's draft stays a draft
    until the test finalizes it (as tests/invoice/conftest.py does for its stack)."""
    import asyncio

    if services.extra_env.get("TALLY_INVOICE_CLOSE_INTERVAL_SECONDS") != "0":
        services.extra_env["TALLY_INVOICE_CLOSE_INTERVAL_SECONDS"] = "0"
        services.terminate("invoice")
        services.start("invoice")
        asyncio.run(services.wait("invoice"))
