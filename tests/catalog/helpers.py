"""Builders and assertions shared by the catalog tests."""

from __future__ import annotations

import grpc
import pytest

from tally.grpc_errors import error_info, field_violations
from tally_gen.catalog.v1 import catalog_pb2 as pb
from tally_gen.common.v1 import common_pb2
from tests.harness import unique


def dec(value: str) -> common_pb2.Decimal:
    return common_pb2.Decimal(value=value)


def meter(key: str | None = None, **fields) -> pb.Meter:
    values = {
        "key": key or unique("meter"),
        "name": "Call minutes",
        "unit": "minutes",
        "event_type": unique("call"),
        "aggregation": pb.AGGREGATION_SUM,
        "value_property": "minutes",
    }
    values.update(fields)
    return pb.Meter(**values)


def per_unit(price: str) -> pb.Price:
    return pb.Price(model=pb.PRICING_MODEL_PER_UNIT, unit_price=dec(price))


def fixed_charge(amount: str = "10.00", timing=pb.FEE_TIMING_IN_ARREARS, key: str = "fee") -> pb.Charge:
    return pb.Charge(key=key, name="Monthly fee", fixed=pb.FixedFee(amount=dec(amount), timing=timing))


def usage_charge(meter_key: str, price: pb.Price | None = None, key: str = "usage", **fields) -> pb.Charge:
    return pb.Charge(
        key=key,
        name="Usage",
        usage=pb.UsageCharge(meter_key=meter_key, price=price or per_unit("0.05"), **fields),
    )


def plan_spec(key: str | None = None, charges=None, **fields) -> pb.PlanSpec:
    values = {
        "key": key or unique("plan"),
        "name": "Plan",
        "currency": "USD",
        "interval": pb.BILLING_INTERVAL_MONTH,
        "interval_count": 1,
    }
    values.update(fields)
    return pb.PlanSpec(charges=charges if charges is not None else [fixed_charge()], **values)


async def rejected(call) -> grpc.aio.AioRpcError:
    """Await ``call`` and return the error it must fail with."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def violations_of(call) -> dict[str, str]:
    """Await a call that must fail with INVALID_ARGUMENT; its violations as {field: description}."""
    error = await rejected(call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    found = field_violations(error)
    assert found, "INVALID_ARGUMENT without field violations"
    return dict(found)


def reason_of(error: grpc.aio.AioRpcError) -> str:
    info = error_info(error)
    return info.reason if info else ""


async def create_meter(stub, **fields) -> pb.Meter:
    return (await stub.CreateMeter(pb.CreateMeterRequest(meter=meter(**fields)))).meter


async def create_plan(stub, **fields) -> pb.Plan:
    return (await stub.CreatePlan(pb.CreatePlanRequest(plan=plan_spec(**fields)))).plan


async def create_customer(stub, **fields) -> pb.Customer:
    values = {
        "external_id": unique("acct"), "name": "Acme", "email": "billing@acme.example", "timezone": "Europe/Paris"
    }
    values.update(fields)
    return (await stub.CreateCustomer(pb.CreateCustomerRequest(customer=pb.Customer(**values)))).customer
