"""Per-subscription price overrides and per-charge price points in the catalog: validated
against the plan version's charges, stored per phase, visible on the subscription."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp

from tally_gen.catalog.v1 import catalog_pb2 as pb
from tally_gen.common.v1 import common_pb2
from tests.catalog.helpers import (
    create_customer,
    create_meter,
    create_plan,
    dec,
    fixed_charge,
    per_unit,
    plan_spec,
    usage_charge,
    violations_of,
)


def graduated(*tiers: tuple[str | None, str]) -> pb.Price:
    out = pb.Price(model=pb.PRICING_MODEL_GRADUATED)
    for up_to, unit_price in tiers:
        tier = out.tiers.add(unit_price=dec(unit_price))
        if up_to is not None:
            tier.up_to.CopyFrom(dec(up_to))
    return out


async def metered_plan(stub, **usage_fields) -> tuple[pb.Meter, pb.Plan]:
    meter = await create_meter(stub)
    plan = await create_plan(
        stub, charges=[fixed_charge("10.00"), usage_charge(meter.key, per_unit("0.05"), **usage_fields)]
    )
    return meter, plan


async def subscribe(stub, plan_key: str, overrides=(), **fields) -> pb.Subscription:
    customer = await create_customer(stub)
    request = pb.CreateSubscriptionRequest(
        customer=common_pb2.CustomerRef(id=customer.id),
        plan_key=plan_key,
        price_overrides=list(overrides),
        **fields,
    )
    return (await stub.CreateSubscription(request)).subscription


class TestPricePointsOnAPlan:
    async def test_price_points_are_published_with_the_charge(self, stub):
        points = [
            pb.PricePoint(key="premium", name="Premium route", price=per_unit("0.09")),
            pb.PricePoint(key="bulk", price=graduated(("1000", "0.02"), (None, "0.01"))),
        ]
        _, plan = await metered_plan(stub, price_points=points)
        usage = plan.latest_version.charges[1].usage
        assert [(p.key, p.name) for p in usage.price_points] == [
            ("premium", "Premium route"),
            ("bulk", "bulk"),
        ]
        assert usage.price_points[0].price.unit_price.value == "0.09"
        assert usage.price_points[1].price.tiers[0].up_to.value == "1000"

    async def test_applying_the_same_plan_with_price_points_again_is_unchanged(self, stub):
        meter = await create_meter(stub)
        spec = plan_spec(
            charges=[
                usage_charge(meter.key, price_points=[pb.PricePoint(key="premium", price=per_unit("0.090"))])
            ]
        )
        await stub.ApplyCatalog(pb.ApplyCatalogRequest(plans=[spec]))
        again = await stub.ApplyCatalog(pb.ApplyCatalogRequest(plans=[spec]))
        assert [r.action for r in again.results] == [pb.APPLY_ACTION_UNCHANGED]

    async def test_bad_price_points_are_field_violations(self, stub):
        meter = await create_meter(stub)
        points = [
            pb.PricePoint(key="premium", price=per_unit("0.09")),
            pb.PricePoint(key="premium", price=per_unit("0.10")),
            pb.PricePoint(key="no price"),
            pb.PricePoint(key="neg", price=per_unit("-1")),
            pb.PricePoint(key="nul", name="a\x00b", price=per_unit("1")),
            pb.PricePoint(key="long", name="x" * 257, price=per_unit("1")),
        ]
        found = await violations_of(
            stub.CreatePlan(
                pb.CreatePlanRequest(plan=plan_spec(charges=[usage_charge(meter.key, price_points=points)]))
            )
        )
        assert found.keys() >= {
            "plan.charges[0].usage.price_points[1].key",
            "plan.charges[0].usage.price_points[2].key",
            "plan.charges[0].usage.price_points[2].price",
            "plan.charges[0].usage.price_points[3].price.unit_price",
            "plan.charges[0].usage.price_points[4].name",
            "plan.charges[0].usage.price_points[5].name",
        }

    async def test_more_than_a_hundred_price_points_is_refused(self, stub):
        meter = await create_meter(stub)
        points = [pb.PricePoint(key=f"p{i}", price=per_unit("1")) for i in range(101)]
        found = await violations_of(
            stub.CreatePlan(
                pb.CreatePlanRequest(plan=plan_spec(charges=[usage_charge(meter.key, price_points=points)]))
            )
        )
        assert "plan.charges[0].usage.price_points" in found


class TestPriceOverridesOnCreate:
    async def test_overrides_are_stored_on_the_phase_and_shown_on_the_subscription(self, stub):
        _, plan = await metered_plan(stub)
        overrides = [
            pb.PriceOverride(charge_key="usage", price=per_unit("0.04"), included_units=dec("100")),
            pb.PriceOverride(charge_key="fee", amount=dec("8.50")),
        ]
        sub = await subscribe(stub, plan.key, overrides)
        fetched = (await stub.GetSubscription(pb.GetSubscriptionRequest(id=sub.id))).subscription
        for seen in (sub, fetched):
            assert [o.charge_key for o in seen.price_overrides] == ["usage", "fee"]
            assert seen.price_overrides[0].price.unit_price.value == "0.04"
            assert seen.price_overrides[0].included_units.value == "100"
            assert not seen.price_overrides[0].HasField("minimum_amount")
            assert seen.price_overrides[1].amount.value == "8.50"
            assert list(seen.phases[0].price_overrides) == list(seen.price_overrides)

    async def test_an_override_may_change_the_pricing_model(self, stub):
        _, plan = await metered_plan(stub)
        sub = await subscribe(
            stub,
            plan.key,
            [pb.PriceOverride(charge_key="usage", price=graduated(("10", "1"), (None, "0.5")))],
        )
        assert sub.price_overrides[0].price.model == pb.PRICING_MODEL_GRADUATED

    async def test_an_unknown_charge_key_is_a_field_violation_naming_the_item(self, stub):
        _, plan = await metered_plan(stub)
        found = await violations_of(
            subscribe(
                stub,
                plan.key,
                [
                    pb.PriceOverride(charge_key="usage", price=per_unit("0.04")),
                    pb.PriceOverride(charge_key="nope", price=per_unit("0.04")),
                ],
            )
        )
        assert list(found) == ["price_overrides[1].charge_key"]
        assert "nope" in found["price_overrides[1].charge_key"]

    async def test_every_bad_override_is_reported_at_once(self, stub):
        _, plan = await metered_plan(stub, maximum_amount=dec("50.00"))
        found = await violations_of(
            subscribe(
                stub,
                plan.key,
                [
                    pb.PriceOverride(charge_key="usage", price=pb.Price(model=pb.PRICING_MODEL_PER_UNIT)),
                    pb.PriceOverride(charge_key="usage", included_units=dec("1")),
                    pb.PriceOverride(charge_key="fee", price=per_unit("1"), amount=dec("1.005")),
                    pb.PriceOverride(charge_key=""),
                ],
            )
        )
        assert found.keys() >= {
            "price_overrides[0].price.unit_price",
            "price_overrides[1].charge_key",
            "price_overrides[2].price",
            "price_overrides[2].amount",
            "price_overrides[3].charge_key",
        }

    async def test_a_minimum_above_the_plans_maximum_is_refused(self, stub):
        _, plan = await metered_plan(stub, maximum_amount=dec("50.00"))
        found = await violations_of(
            subscribe(stub, plan.key, [pb.PriceOverride(charge_key="usage", minimum_amount=dec("60.00"))])
        )
        assert "price_overrides[0].minimum_amount" in found

    async def test_a_usage_charge_takes_no_amount_and_nothing_is_stored(self, stub):
        _, plan = await metered_plan(stub)
        customer = await create_customer(stub)
        found = await violations_of(
            stub.CreateSubscription(
                pb.CreateSubscriptionRequest(
                    customer=common_pb2.CustomerRef(id=customer.id),
                    plan_key=plan.key,
                    price_overrides=[pb.PriceOverride(charge_key="usage", amount=dec("3.00"))],
                )
            )
        )
        assert "price_overrides[0].amount" in found
        listed = await stub.ListSubscriptions(pb.ListSubscriptionsRequest(customer_id=customer.id))
        assert list(listed.subscriptions) == []

    async def test_more_than_two_hundred_overrides_is_refused(self, stub):
        _, plan = await metered_plan(stub)
        found = await violations_of(
            subscribe(stub, plan.key, [pb.PriceOverride(charge_key="fee", amount=dec("1"))] * 201)
        )
        assert "price_overrides" in found


class TestPriceOverridesOnPlanChange:
    async def test_a_plan_change_gives_the_new_phase_its_own_overrides(self, stub):
        _, plan_a = await metered_plan(stub)
        plan_b = await create_plan(stub, charges=[fixed_charge("20.00", key="base")])
        start = Timestamp()
        start.FromDatetime(datetime.now(UTC) - timedelta(days=2))
        sub = await subscribe(
            stub, plan_a.key, [pb.PriceOverride(charge_key="fee", amount=dec("9.00"))], start_time=start
        )
        changed = (
            await stub.ChangeSubscriptionPlan(
                pb.ChangeSubscriptionPlanRequest(
                    id=sub.id,
                    plan_key=plan_b.key,
                    price_overrides=[pb.PriceOverride(charge_key="base", amount=dec("15.00"))],
                )
            )
        ).subscription
        assert [o.amount.value for o in changed.phases[0].price_overrides] == ["9.00"]
        assert [o.amount.value for o in changed.phases[1].price_overrides] == ["15.00"]
        assert [o.charge_key for o in changed.price_overrides] == ["base"]

    async def test_overrides_are_checked_against_the_new_versions_charges(self, stub):
        _, plan_a = await metered_plan(stub)
        plan_b = await create_plan(stub, charges=[fixed_charge("20.00", key="base")])
        sub = await subscribe(stub, plan_a.key)
        found = await violations_of(
            stub.ChangeSubscriptionPlan(
                pb.ChangeSubscriptionPlanRequest(
                    id=sub.id,
                    plan_key=plan_b.key,
                    price_overrides=[pb.PriceOverride(charge_key="fee", amount=dec("9.00"))],
                )
            )
        )
        assert "price_overrides[0].charge_key" in found
        again = (await stub.GetSubscription(pb.GetSubscriptionRequest(id=sub.id))).subscription
        assert len(again.phases) == 1
