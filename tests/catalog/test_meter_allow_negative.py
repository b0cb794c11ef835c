"""Meter.allow_negative (create, update, YAML catalog; locked with the value) and ApplyCatalog's size bound."""

from __future__ import annotations

from google.protobuf import field_mask_pb2

from tally.catalog_file import parse_catalog
from tally.grpc_errors import field_violations
from tally_gen.catalog.v1 import catalog_pb2 as pb
from tests.catalog.helpers import (
    create_customer,
    create_meter,
    plan_spec,
    reason_of,
    rejected,
    usage_charge,
)
from tests.harness import unique


class TestAllowNegative:
    async def test_a_meter_refuses_negative_values_unless_it_says_so(self, stub):
        assert not (await create_meter(stub)).allow_negative
        assert (await create_meter(stub, allow_negative=True)).allow_negative

    async def test_an_update_can_allow_negatives_on_a_meter_no_subscription_uses(self, stub):
        created = await create_meter(stub)
        reply = await stub.UpdateMeter(
            pb.UpdateMeterRequest(
                meter=pb.Meter(key=created.key, allow_negative=True),
                update_mask=field_mask_pb2.FieldMask(paths=["allow_negative"]).paths,
            )
        )
        assert reply.meter.allow_negative
        got = await stub.GetMeter(pb.GetMeterRequest(key=created.key))
        assert got.meter.allow_negative

    async def test_allow_negative_is_locked_once_a_subscription_uses_the_meter(self, stub):
        created = await create_meter(stub)
        plan = (await stub.CreatePlan(pb.CreatePlanRequest(plan=plan_spec(charges=[usage_charge(created.key)])))).plan
        customer = await create_customer(stub, currency="USD")
        await stub.CreateSubscription(
            pb.CreateSubscriptionRequest(customer={"id": customer.id}, plan_key=plan.key)
        )
        error = await rejected(
            stub.UpdateMeter(pb.UpdateMeterRequest(meter=pb.Meter(key=created.key, allow_negative=True), update_mask=["allow_negative"]))
        )
        assert reason_of(error) == "METER_LOCKED"

    async def test_the_yaml_catalog_declares_it_and_a_second_apply_changes_nothing(self, stub):
        key = unique("credits")
        text = f"""
meters:
  - key: {key}
    name: Credits
    unit: credits
    event_type: {unique("credit")}
    aggregation: AGGREGATION_SUM
    value_property: amount
    allow_negative: true
"""
        first = await stub.ApplyCatalog(parse_catalog(text))
        assert [r.action for r in first.results] == [pb.APPLY_ACTION_CREATED]
        assert (await stub.GetMeter(pb.GetMeterRequest(key=key))).meter.allow_negative
        second = await stub.ApplyCatalog(parse_catalog(text))
        assert [r.action for r in second.results] == [pb.APPLY_ACTION_UNCHANGED]


class TestApplyCatalogSize:
    async def test_an_apply_with_more_meters_than_allowed_is_one_violation_and_nothing_is_stored(self, stub):
        keys = [unique("bulk") for _ in range(1001)]
        request = pb.ApplyCatalogRequest(
            meters=[pb.Meter(key=k, name="n", unit="u", event_type="t", aggregation=pb.AGGREGATION_COUNT) for k in keys]
        )
        error = await rejected(stub.ApplyCatalog(request))
        assert error.code().name == "INVALID_ARGUMENT"
        assert [f for f, _ in field_violations(error)] == ["meters"]
        missing = await rejected(stub.GetMeter(pb.GetMeterRequest(key=keys[0])))
        assert missing.code().name == "NOT_FOUND"
