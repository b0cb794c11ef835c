"""Everything is callable from grpcurl with JSON, through server reflection (no proto files).

grpcurl accepts camelCase or proto names on input and prints proto (snake_case) names.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path

from tests.harness import unique


def grpcurl() -> str:
    return shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")


async def call(address: str, method: str, body: dict) -> tuple[int, dict | str]:
    proc = await asyncio.create_subprocess_exec(
        grpcurl(),
        "-plaintext",
        "-format-error",
        "-d",
        json.dumps(body),
        address,
        f"tally.catalog.v1.CatalogService/{method}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    if proc.returncode:
        return proc.returncode, (out + err).decode()
    return 0, json.loads(out)


class TestGrpcurl:
    async def test_a_meter_plan_customer_and_subscription_can_be_created_with_json(self, catalog_server):
        address = f"127.0.0.1:{catalog_server[0].port}"
        meter_key, plan_key, external = unique("m"), unique("p"), unique("acct")
        code, meter = await call(
            address,
            "CreateMeter",
            {
                "meter": {
                    "key": meter_key,
                    "eventType": unique("call"),
                    "aggregation": "AGGREGATION_SUM",
                    "valueProperty": "minutes",
                }
            },
        )
        assert code == 0, meter
        code, plan = await call(
            address,
            "CreatePlan",
            {
                "plan": {
                    "key": plan_key,
                    "name": "VoIP",
                    "currency": "USD",
                    "interval": "BILLING_INTERVAL_MONTH",
                    "charges": [
                        {
                            "key": "fee",
                            "fixed": {"amount": {"value": "10.00"}, "timing": "FEE_TIMING_IN_ARREARS"},
                        },
                        {
                            "key": "minutes",
                            "usage": {
                                "meterKey": meter_key,
                                "price": {"model": "PRICING_MODEL_PER_UNIT", "unitPrice": {"value": "0.05"}},
                            },
                        },
                    ],
                }
            },
        )
        assert code == 0, plan
        code, customer = await call(
            address, "CreateCustomer", {"customer": {"externalId": external, "timezone": "UTC"}}
        )
        assert code == 0, customer
        code, sub = await call(
            address,
            "CreateSubscription",
            {"customer": {"externalId": external}, "planKey": plan_key, "startTime": "2026-01-01T00:00:00Z"},
        )
        assert code == 0, sub
        assert meter["meter"]["key"] == meter_key
        assert plan["plan"]["latest_version"]["charges"][1]["usage"]["price"]["unit_price"]["value"] == "0.05"
        assert sub["subscription"]["plan_key"] == plan_key
        assert sub["subscription"]["start_time"] == "2026-01-01T00:00:00Z"

    async def test_invalid_json_input_comes_back_with_field_violations(self, catalog_server):
        address = f"127.0.0.1:{catalog_server[0].port}"
        code, output = await call(
            address,
            "CreateMeter",
            {"meter": {"key": unique("m"), "eventType": "call", "aggregation": "AGGREGATION_SUM"}},
        )
        assert code != 0
        error = json.loads(output)
        (bad_request,) = [d for d in error["details"] if d["@type"].endswith("google.rpc.BadRequest")]
        assert error["code"] == 3  # INVALID_ARGUMENT
        assert [v["field"] for v in bad_request["field_violations"]] == ["meter.value_property"]
