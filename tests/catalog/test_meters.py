"""Meters through real gRPC: validation (every rule), CRUD, pagination and the edit lock."""

from __future__ import annotations

import grpc

from tally_gen.catalog.v1 import catalog_pb2 as pb
from tally_gen.common.v1 import common_pb2
from tests.catalog.helpers import (
    create_customer,
    create_meter,
    create_plan,
    meter,
    plan_spec,
    reason_of,
    rejected,
    usage_charge,
    violations_of,
)
from tests.harness import unique


def create(stub, **fields):
    return stub.CreateMeter(pb.CreateMeterRequest(meter=meter(**fields)))


def flt(prop="destination", op=pb.FILTER_OPERATOR_EQ, values=("US",)) -> pb.MeterFilter:
    return pb.MeterFilter(property=prop, operator=op, values=list(values))


class TestCreateMeterValidation:
    async def test_a_valid_meter_is_created_with_its_fields(self, stub):
        key = unique("meter")
        event_type = unique("call")
        created = (
            await create(stub, key=key, event_type=event_type, filters=[flt()], group_by=["region"])
        ).meter
        assert created.id.startswith("mtr_")
        assert (created.key, created.event_type, created.aggregation) == (key, event_type, pb.AGGREGATION_SUM)
        assert [(f.property, f.operator, list(f.values)) for f in created.filters] == [
            ("destination", pb.FILTER_OPERATOR_EQ, ["US"])
        ]
        assert list(created.group_by) == ["region"]
        assert not created.locked and not created.archived

    async def test_a_duplicate_key_is_already_exists(self, stub):
        key = unique("meter")
        await create(stub, key=key)
        error = await rejected(create(stub, key=key))
        assert error.code() == grpc.StatusCode.ALREADY_EXISTS
        assert reason_of(error) == "METER_KEY_TAKEN"

    async def test_a_key_with_spaces_is_rejected(self, stub):
        assert "meter.key" in await violations_of(create(stub, key="call minutes"))

    async def test_event_type_is_required(self, stub):
        assert "meter.event_type" in await violations_of(create(stub, event_type=""))

    async def test_an_unspecified_aggregation_is_rejected(self, stub):
        found = await violations_of(create(stub, aggregation=pb.AGGREGATION_UNSPECIFIED))
        assert "required" in found["meter.aggregation"]

    async def test_an_unknown_aggregation_number_is_rejected(self, stub):
        found = await violations_of(create(stub, aggregation=42))
        message = found["meter.aggregation"]
        assert "unknown value" in message and "42" in message

    async def test_sum_without_value_property_is_rejected(self, stub):
        found = await violations_of(create(stub, aggregation=pb.AGGREGATION_SUM, value_property=""))
        assert found["meter.value_property"] == "is required for SUM"

    async def test_every_aggregation_but_count_needs_a_value_property(self, stub):
        for aggregation in ("MAX", "MIN", "COUNT_UNIQUE", "LATEST", "AVG", "WEIGHTED_SUM"):
            number = pb.Aggregation.Value(f"AGGREGATION_{aggregation}")
            found = await violations_of(create(stub, aggregation=number, value_property=""))
            assert found["meter.value_property"] == f"is required for {aggregation}"

    async def test_count_needs_no_value_property(self, stub):
        created = (await create(stub, aggregation=pb.AGGREGATION_COUNT, value_property="")).meter
        assert created.aggregation == pb.AGGREGATION_COUNT

    async def test_count_with_a_value_property_is_rejected(self, stub):
        assert "meter.value_property" in await violations_of(
            create(stub, aggregation=pb.AGGREGATION_COUNT, value_property="minutes")
        )

    async def test_a_dot_path_value_property_is_accepted(self, stub):
        created = (await create(stub, value_property="usage.duration")).meter
        assert created.value_property == "usage.duration"

    async def test_value_property_path_syntax_is_checked(self, stub):
        for bad in ("usage..duration", ".usage", "usage.", "usage duration"):
            found = await violations_of(create(stub, value_property=bad))
            assert "not a property path" in found["meter.value_property"], bad

    async def test_filter_property_path_syntax_is_checked(self, stub):
        found = await violations_of(create(stub, filters=[flt(prop="a..b")]))
        assert "meter.filters[0].property" in found

    async def test_an_unspecified_filter_operator_is_rejected(self, stub):
        found = await violations_of(create(stub, filters=[flt(op=pb.FILTER_OPERATOR_UNSPECIFIED)]))
        assert "meter.filters[0].operator" in found

    async def test_an_unknown_filter_operator_is_rejected(self, stub):
        found = await violations_of(create(stub, filters=[flt(op=77)]))
        message = found["meter.filters[0].operator"]
        assert "unknown value" in message and "77" in message

    async def test_eq_takes_exactly_one_value(self, stub):
        found = await violations_of(
            create(stub, filters=[flt(op=pb.FILTER_OPERATOR_EQ, values=["US", "CA"])])
        )
        assert found["meter.filters[0].values"] == "EQ takes exactly one value, got 2"

    async def test_neq_takes_exactly_one_value(self, stub):
        found = await violations_of(create(stub, filters=[flt(op=pb.FILTER_OPERATOR_NEQ, values=[])]))
        assert found["meter.filters[0].values"] == "NEQ takes exactly one value, got 0"

    async def test_in_needs_at_least_one_value(self, stub):
        found = await violations_of(create(stub, filters=[flt(op=pb.FILTER_OPERATOR_IN, values=[])]))
        assert found["meter.filters[0].values"] == "IN needs at least one value"

    async def test_not_in_needs_at_least_one_value(self, stub):
        found = await violations_of(create(stub, filters=[flt(op=pb.FILTER_OPERATOR_NOT_IN, values=[])]))
        assert found["meter.filters[0].values"] == "NOT_IN needs at least one value"

    async def test_in_with_several_values_is_accepted(self, stub):
        created = (
            await create(stub, filters=[flt(op=pb.FILTER_OPERATOR_IN, values=["US", "CA", "MX"])])
        ).meter
        assert list(created.filters[0].values) == ["US", "CA", "MX"]

    async def test_exists_takes_no_values(self, stub):
        found = await violations_of(create(stub, filters=[flt(op=pb.FILTER_OPERATOR_EXISTS, values=["x"])]))
        assert found["meter.filters[0].values"] == "EXISTS takes no values, got 1"

    async def test_not_exists_takes_no_values(self, stub):
        found = await violations_of(
            create(stub, filters=[flt(op=pb.FILTER_OPERATOR_NOT_EXISTS, values=["x"])])
        )
        assert found["meter.filters[0].values"] == "NOT_EXISTS takes no values, got 1"

    async def test_gt_needs_one_decimal_value(self, stub):
        found = await violations_of(
            create(stub, filters=[flt(prop="duration", op=pb.FILTER_OPERATOR_GT, values=["sixty"])])
        )
        assert "'sixty' is not a decimal" in found["meter.filters[0].values[0]"]

    async def test_numeric_operators_take_exactly_one_value(self, stub):
        for op in ("GT", "GTE", "LT", "LTE"):
            number = pb.FilterOperator.Value(f"FILTER_OPERATOR_{op}")
            found = await violations_of(
                create(stub, filters=[flt(prop="duration", op=number, values=["1", "2"])])
            )
            assert found["meter.filters[0].values"] == f"{op} takes exactly one decimal value, got 2"

    async def test_numeric_operators_accept_a_decimal(self, stub):
        created = (
            await create(stub, filters=[flt(prop="duration", op=pb.FILTER_OPERATOR_GTE, values=["60.5"])])
        ).meter
        assert created.filters[0].operator == pb.FILTER_OPERATOR_GTE

    async def test_more_than_five_group_by_paths_are_rejected(self, stub):
        found = await violations_of(create(stub, group_by=["a", "b", "c", "d", "e", "f"]))
        assert found["meter.group_by"] == "has 6 paths; at most 5 are allowed"

    async def test_five_group_by_paths_are_accepted(self, stub):
        created = (await create(stub, group_by=["a", "b", "c", "d.e", "f"])).meter
        assert len(created.group_by) == 5

    async def test_group_by_path_syntax_and_duplicates_are_checked(self, stub):
        found = await violations_of(create(stub, group_by=["region", "bad path", "region"]))
        assert "meter.group_by[1]" in found and "meter.group_by[2]" in found

    async def test_every_problem_is_reported_at_once(self, stub):
        found = await violations_of(
            create(
                stub,
                key="bad key",
                event_type="",
                aggregation=pb.AGGREGATION_AVG,
                value_property="",
                filters=[
                    flt(op=pb.FILTER_OPERATOR_EXISTS, values=["x"]),
                    flt(op=pb.FILTER_OPERATOR_IN, values=[]),
                ],
                group_by=["a", "b", "c", "d", "e", "f"],
            )
        )
        assert set(found) == {
            "meter.key",
            "meter.event_type",
            "meter.value_property",
            "meter.filters[0].values",
            "meter.filters[1].values",
            "meter.group_by",
        }


class TestGetAndListMeters:
    async def test_get_by_id_and_by_key_return_the_same_meter(self, stub):
        created = await create_meter(stub)
        by_id = (await stub.GetMeter(pb.GetMeterRequest(id=created.id))).meter
        by_key = (await stub.GetMeter(pb.GetMeterRequest(key=created.key))).meter
        assert by_id == by_key == created

    async def test_get_of_a_missing_meter_is_not_found(self, stub):
        error = await rejected(stub.GetMeter(pb.GetMeterRequest(key=unique("nope"))))
        assert error.code() == grpc.StatusCode.NOT_FOUND

    async def test_list_filters_by_event_type_and_pages_through_all(self, stub):
        event_type = unique("evt")
        keys = sorted([(await create_meter(stub, event_type=event_type)).key for _ in range(5)])
        seen, token, pages = [], "", 0
        while True:
            reply = await stub.ListMeters(
                pb.ListMetersRequest(event_type=event_type, page_size=2, page_token=token)
            )
            seen += [m.key for m in reply.meters]
            pages += 1
            token = reply.next_page_token
            if not token:
                break
        assert seen == keys
        assert pages == 3

    async def test_archived_meters_are_listed_only_on_request(self, stub):
        event_type = unique("evt")
        kept = await create_meter(stub, event_type=event_type)
        gone = await create_meter(stub, event_type=event_type)
        await stub.ArchiveMeter(pb.ArchiveMeterRequest(key=gone.key))
        default = await stub.ListMeters(pb.ListMetersRequest(event_type=event_type))
        everything = await stub.ListMeters(pb.ListMetersRequest(event_type=event_type, include_archived=True))
        assert [m.key for m in default.meters] == [kept.key]
        assert {m.key for m in everything.meters} == {kept.key, gone.key}

    async def test_a_tampered_page_token_is_invalid_argument(self, stub):
        found = await violations_of(stub.ListMeters(pb.ListMetersRequest(page_token="bm9wZQ")))
        assert "page_token" in found


class TestUpdateMeter:
    async def test_update_mask_changes_only_named_fields(self, stub):
        created = await create_meter(stub, unit="minutes")
        update = pb.Meter(key=created.key, name="Renamed", unit="ignored")
        updated = (await stub.UpdateMeter(pb.UpdateMeterRequest(meter=update, update_mask=["name"]))).meter
        assert (updated.name, updated.unit, updated.aggregation) == ("Renamed", "minutes", pb.AGGREGATION_SUM)

    async def test_json_style_mask_names_are_accepted(self, stub):
        created = await create_meter(stub)
        update = pb.Meter(key=created.key, value_property="usage.seconds")
        updated = (
            await stub.UpdateMeter(pb.UpdateMeterRequest(meter=update, update_mask=["valueProperty"]))
        ).meter
        assert updated.value_property == "usage.seconds"

    async def test_the_key_cannot_be_named_in_the_mask(self, stub):
        created = await create_meter(stub)
        found = await violations_of(
            stub.UpdateMeter(pb.UpdateMeterRequest(meter=pb.Meter(key=created.key), update_mask=["key"]))
        )
        assert "update_mask.[0]" in found

    async def test_an_update_is_validated_like_a_create(self, stub):
        created = await create_meter(stub)
        found = await violations_of(
            stub.UpdateMeter(
                pb.UpdateMeterRequest(
                    meter=pb.Meter(key=created.key, value_property=""), update_mask=["value_property"]
                )
            )
        )
        assert found["meter.value_property"] == "is required for SUM"

    async def test_updating_a_missing_meter_is_not_found(self, stub):
        error = await rejected(stub.UpdateMeter(pb.UpdateMeterRequest(meter=meter(), update_mask=["name"])))
        assert error.code() == grpc.StatusCode.NOT_FOUND


class TestMeterEditLock:
    async def subscribe_to_plan_on(self, stub, meter_key: str) -> None:
        plan = await create_plan(stub, charges=[usage_charge(meter_key)])
        customer = await create_customer(stub, currency="USD")
        await stub.CreateSubscription(
            pb.CreateSubscriptionRequest(customer=common_pb2.CustomerRef(id=customer.id), plan_key=plan.key)
        )

    async def test_a_meter_on_a_plan_without_subscriptions_stays_editable(self, stub):
        created = await create_meter(stub)
        await create_plan(stub, charges=[usage_charge(created.key)])
        update = pb.Meter(key=created.key, aggregation=pb.AGGREGATION_MAX)
        updated = (
            await stub.UpdateMeter(pb.UpdateMeterRequest(meter=update, update_mask=["aggregation"]))
        ).meter
        assert updated.aggregation == pb.AGGREGATION_MAX and not updated.locked

    async def test_a_subscription_locks_the_meters_of_its_plan_version(self, stub):
        created = await create_meter(stub)
        await self.subscribe_to_plan_on(stub, created.key)
        assert (await stub.GetMeter(pb.GetMeterRequest(key=created.key))).meter.locked

    async def test_changing_aggregation_filters_or_value_property_of_a_locked_meter_fails(self, stub):
        created = await create_meter(stub)
        await self.subscribe_to_plan_on(stub, created.key)
        for field, value in (
            ("aggregation", pb.Meter(key=created.key, aggregation=pb.AGGREGATION_MAX)),
            ("value_property", pb.Meter(key=created.key, value_property="seconds")),
            ("filters", pb.Meter(key=created.key, filters=[flt()])),
        ):
            error = await rejected(stub.UpdateMeter(pb.UpdateMeterRequest(meter=value, update_mask=[field])))
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, field
            assert reason_of(error) == "METER_LOCKED"
        unchanged = (await stub.GetMeter(pb.GetMeterRequest(key=created.key))).meter
        assert (unchanged.aggregation, unchanged.value_property, list(unchanged.filters)) == (
            pb.AGGREGATION_SUM,
            "minutes",
            [],
        )

    async def test_a_locked_meter_can_still_be_renamed_and_archived(self, stub):
        created = await create_meter(stub)
        await self.subscribe_to_plan_on(stub, created.key)
        renamed = (
            await stub.UpdateMeter(
                pb.UpdateMeterRequest(
                    meter=pb.Meter(key=created.key, name="Minutes (old)"), update_mask=["name"]
                )
            )
        ).meter
        archived = (await stub.ArchiveMeter(pb.ArchiveMeterRequest(key=created.key))).meter
        assert renamed.name == "Minutes (old)"
        assert archived.archived and archived.locked

    async def test_a_plan_cannot_charge_on_an_archived_meter(self, stub):
        created = await create_meter(stub)
        await stub.ArchiveMeter(pb.ArchiveMeterRequest(key=created.key))
        found = await violations_of(
            stub.CreatePlan(pb.CreatePlanRequest(plan=plan_spec(charges=[usage_charge(created.key)])))
        )
        assert "archived" in found["plan.charges[0].usage.meter_key"]
