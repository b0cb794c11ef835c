"""Products and plans through real gRPC: pricing-model rules (each its own test), versioning."""

from __future__ import annotations

import grpc

from tally_gen.catalog.v1 import catalog_pb2 as pb
from tests.catalog.helpers import (
    create_meter,
    create_plan,
    dec,
    fixed_charge,
    per_unit,
    plan_spec,
    reason_of,
    rejected,
    usage_charge,
    violations_of,
)
from tests.harness import unique


def tiered(model, *tiers) -> pb.Price:
    return pb.Price(model=model, tiers=list(tiers))


def tier(up_to: str | None, unit_price: str | None = "0.10", flat_amount: str | None = None) -> pb.Tier:
    t = pb.Tier()
    if up_to is not None:
        t.up_to.CopyFrom(dec(up_to))
    if unit_price is not None:
        t.unit_price.CopyFrom(dec(unit_price))
    if flat_amount is not None:
        t.flat_amount.CopyFrom(dec(flat_amount))
    return t


GRADUATED = pb.PRICING_MODEL_GRADUATED
VOLUME = pb.PRICING_MODEL_VOLUME


class TestProducts:
    async def test_create_get_update_archive(self, stub):
        key = unique("prod")
        created = (
            await stub.CreateProduct(pb.CreateProductRequest(product=pb.Product(key=key, name="VoIP")))
        ).product
        got = (await stub.GetProduct(pb.GetProductRequest(key=key))).product
        updated = (
            await stub.UpdateProduct(
                pb.UpdateProductRequest(
                    product=pb.Product(key=key, description="Phone lines"), update_mask=["description"]
                )
            )
        ).product
        archived = (await stub.ArchiveProduct(pb.ArchiveProductRequest(key=key))).product
        assert got == created
        assert (updated.name, updated.description) == ("VoIP", "Phone lines")
        assert archived.archived

    async def test_a_duplicate_product_key_is_already_exists(self, stub):
        key = unique("prod")
        await stub.CreateProduct(pb.CreateProductRequest(product=pb.Product(key=key, name="A")))
        error = await rejected(
            stub.CreateProduct(pb.CreateProductRequest(product=pb.Product(key=key, name="B")))
        )
        assert error.code() == grpc.StatusCode.ALREADY_EXISTS

    async def test_a_plan_naming_a_missing_product_is_rejected(self, stub):
        found = await violations_of(
            stub.CreatePlan(pb.CreatePlanRequest(plan=plan_spec(product_key=unique("no"))))
        )
        assert "plan.product_key" in found


class TestPlanFields:
    async def test_an_unknown_currency_is_rejected(self, stub):
        found = await violations_of(stub.CreatePlan(pb.CreatePlanRequest(plan=plan_spec(currency="XYZ"))))
        assert found["plan.currency"] == "'XYZ' is not an ISO 4217 currency code"

    async def test_a_lower_case_currency_is_rejected(self, stub):
        assert "plan.currency" in await violations_of(
            stub.CreatePlan(pb.CreatePlanRequest(plan=plan_spec(currency="usd")))
        )

    async def test_a_missing_currency_is_rejected(self, stub):
        assert "plan.currency" in await violations_of(
            stub.CreatePlan(pb.CreatePlanRequest(plan=plan_spec(currency="")))
        )

    async def test_an_unspecified_interval_is_rejected(self, stub):
        found = await violations_of(
            stub.CreatePlan(pb.CreatePlanRequest(plan=plan_spec(interval=pb.BILLING_INTERVAL_UNSPECIFIED)))
        )
        assert "plan.interval" in found

    async def test_a_negative_interval_count_is_rejected(self, stub):
        found = await violations_of(stub.CreatePlan(pb.CreatePlanRequest(plan=plan_spec(interval_count=-2))))
        assert found["plan.interval_count"] == "must be at least 1"

    async def test_every_two_weeks_is_accepted(self, stub):
        plan = await create_plan(stub, interval=pb.BILLING_INTERVAL_WEEK, interval_count=2)
        assert (plan.latest_version.interval, plan.latest_version.interval_count) == (
            pb.BILLING_INTERVAL_WEEK,
            2,
        )

    async def test_a_plan_without_charges_is_rejected(self, stub):
        assert "plan.charges" in await violations_of(
            stub.CreatePlan(pb.CreatePlanRequest(plan=plan_spec(charges=[])))
        )

    async def test_charge_keys_must_be_unique_within_the_plan(self, stub):
        found = await violations_of(
            stub.CreatePlan(
                pb.CreatePlanRequest(
                    plan=plan_spec(charges=[fixed_charge(key="fee"), fixed_charge(key="fee")])
                )
            )
        )
        assert "used twice" in found["plan.charges[1].key"]

    async def test_a_charge_needs_fixed_or_usage(self, stub):
        found = await violations_of(
            stub.CreatePlan(pb.CreatePlanRequest(plan=plan_spec(charges=[pb.Charge(key="x")])))
        )
        assert "plan.charges[0].kind" in found

    async def test_a_duplicate_plan_key_is_already_exists(self, stub):
        plan = await create_plan(stub)
        error = await rejected(stub.CreatePlan(pb.CreatePlanRequest(plan=plan_spec(key=plan.key))))
        assert error.code() == grpc.StatusCode.ALREADY_EXISTS
        assert reason_of(error) == "PLAN_KEY_TAKEN"


class TestFixedFee:
    async def test_fixed_fees_in_advance_and_in_arrears_are_kept(self, stub):
        plan = await create_plan(
            stub,
            charges=[
                fixed_charge("10.00", pb.FEE_TIMING_IN_ADVANCE, key="adv"),
                fixed_charge("2.50", pb.FEE_TIMING_IN_ARREARS, key="arr"),
            ],
        )
        charges = plan.latest_version.charges
        assert [(c.key, c.fixed.amount.value, c.fixed.timing) for c in charges] == [
            ("adv", "10.00", pb.FEE_TIMING_IN_ADVANCE),
            ("arr", "2.50", pb.FEE_TIMING_IN_ARREARS),
        ]

    async def test_a_fixed_fee_needs_a_timing(self, stub):
        found = await violations_of(
            stub.CreatePlan(
                pb.CreatePlanRequest(plan=plan_spec(charges=[fixed_charge(timing=pb.FEE_TIMING_UNSPECIFIED)]))
            )
        )
        assert "plan.charges[0].fixed.timing" in found

    async def test_a_fixed_fee_amount_must_fit_the_currency_minor_unit(self, stub):
        usd = await violations_of(
            stub.CreatePlan(pb.CreatePlanRequest(plan=plan_spec(charges=[fixed_charge("10.001")])))
        )
        jpy = await violations_of(
            stub.CreatePlan(
                pb.CreatePlanRequest(plan=plan_spec(currency="JPY", charges=[fixed_charge("1000.5")]))
            )
        )
        assert "minor unit (2)" in usd["plan.charges[0].fixed.amount"]
        assert "minor unit (0)" in jpy["plan.charges[0].fixed.amount"]

    async def test_a_negative_or_non_numeric_amount_is_rejected(self, stub):
        negative = await violations_of(
            stub.CreatePlan(pb.CreatePlanRequest(plan=plan_spec(charges=[fixed_charge("-1")])))
        )
        garbage = await violations_of(
            stub.CreatePlan(pb.CreatePlanRequest(plan=plan_spec(charges=[fixed_charge("ten")])))
        )
        assert negative["plan.charges[0].fixed.amount"] == "must not be negative"
        assert "decimal number" in garbage["plan.charges[0].fixed.amount"]


class TestUsageCharges:
    async def create_with_price(self, stub, price, **fields):
        m = await create_meter(stub)
        return stub.CreatePlan(
            pb.CreatePlanRequest(plan=plan_spec(charges=[usage_charge(m.key, price, **fields)]))
        )

    async def test_a_usage_charge_on_a_missing_meter_is_rejected(self, stub):
        found = await violations_of(
            stub.CreatePlan(pb.CreatePlanRequest(plan=plan_spec(charges=[usage_charge(unique("ghost"))])))
        )
        assert "no meter with key" in found["plan.charges[0].usage.meter_key"]

    async def test_per_unit_keeps_twelve_decimal_places(self, stub):
        plan = (await (await self.create_with_price(stub, per_unit("0.000000000002")))).plan
        assert plan.latest_version.charges[0].usage.price.unit_price.value == "0.000000000002"

    async def test_per_unit_rejects_thirteen_decimal_places(self, stub):
        found = await violations_of(await self.create_with_price(stub, per_unit("0.0000000000001")))
        assert found["plan.charges[0].usage.price.unit_price"] == "must have at most 12 decimal places"

    async def test_per_unit_needs_a_unit_price(self, stub):
        found = await violations_of(
            await self.create_with_price(stub, pb.Price(model=pb.PRICING_MODEL_PER_UNIT))
        )
        assert found["plan.charges[0].usage.price.unit_price"] == "is required"

    async def test_per_unit_rejects_tiers(self, stub):
        price = per_unit("0.05")
        price.tiers.append(tier(None))
        found = await violations_of(await self.create_with_price(stub, price))
        assert found["plan.charges[0].usage.price.tiers"] == "are not used by PER_UNIT"

    async def test_an_unspecified_pricing_model_is_rejected(self, stub):
        found = await violations_of(await self.create_with_price(stub, pb.Price(unit_price=dec("1"))))
        assert "plan.charges[0].usage.price.model" in found

    async def test_an_unknown_pricing_model_is_rejected(self, stub):
        found = await violations_of(
            await self.create_with_price(stub, pb.Price(model=9, unit_price=dec("1")))
        )
        message = found["plan.charges[0].usage.price.model"]
        assert "unknown value" in message and "9" in message

    async def test_package_is_stored_with_size_and_price(self, stub):
        price = pb.Price(model=pb.PRICING_MODEL_PACKAGE, package_size=dec("100"), package_price=dec("5"))
        plan = (await (await self.create_with_price(stub, price))).plan
        stored = plan.latest_version.charges[0].usage.price
        assert (stored.package_size.value, stored.package_price.value) == ("100", "5")

    async def test_package_needs_a_positive_size(self, stub):
        price = pb.Price(model=pb.PRICING_MODEL_PACKAGE, package_size=dec("0"), package_price=dec("5"))
        found = await violations_of(await self.create_with_price(stub, price))
        assert found["plan.charges[0].usage.price.package_size"] == "must be greater than 0"

    async def test_package_needs_a_price(self, stub):
        price = pb.Price(model=pb.PRICING_MODEL_PACKAGE, package_size=dec("100"))
        found = await violations_of(await self.create_with_price(stub, price))
        assert found["plan.charges[0].usage.price.package_price"] == "is required"

    async def test_graduated_tiers_are_stored_in_order(self, stub):
        price = tiered(GRADUATED, tier("1000", "0.10"), tier("10000", "0.08"), tier(None, "0.05"))
        plan = (await (await self.create_with_price(stub, price))).plan
        tiers = plan.latest_version.charges[0].usage.price.tiers
        assert [(t.up_to.value if t.HasField("up_to") else None, t.unit_price.value) for t in tiers] == [
            ("1000", "0.10"),
            ("10000", "0.08"),
            (None, "0.05"),
        ]

    async def test_graduated_needs_tiers(self, stub):
        found = await violations_of(await self.create_with_price(stub, tiered(GRADUATED)))
        assert found["plan.charges[0].usage.price.tiers"] == "at least one tier is required"

    async def test_volume_needs_tiers(self, stub):
        found = await violations_of(await self.create_with_price(stub, tiered(VOLUME)))
        assert found["plan.charges[0].usage.price.tiers"] == "at least one tier is required"

    async def test_tiers_must_ascend(self, stub):
        price = tiered(GRADUATED, tier("1000"), tier("500"), tier(None))
        found = await violations_of(await self.create_with_price(stub, price))
        assert "greater than the previous" in found["plan.charges[0].usage.price.tiers[1].up_to"]

    async def test_equal_tier_bounds_are_not_contiguous_ranges(self, stub):
        price = tiered(VOLUME, tier("1000"), tier("1000"), tier(None))
        found = await violations_of(await self.create_with_price(stub, price))
        assert "plan.charges[0].usage.price.tiers[1].up_to" in found

    async def test_the_last_tier_must_be_open_ended(self, stub):
        price = tiered(GRADUATED, tier("1000"), tier("5000"))
        found = await violations_of(await self.create_with_price(stub, price))
        assert "open-ended" in found["plan.charges[0].usage.price.tiers[1].up_to"]

    async def test_only_the_last_tier_may_be_open_ended(self, stub):
        price = tiered(VOLUME, tier(None), tier("5000"), tier(None))
        found = await violations_of(await self.create_with_price(stub, price))
        assert found["plan.charges[0].usage.price.tiers[0].up_to"] == "only the last tier may be open-ended"

    async def test_a_tier_needs_a_price(self, stub):
        price = tiered(GRADUATED, tier("10", unit_price=None), tier(None))
        found = await violations_of(await self.create_with_price(stub, price))
        assert "plan.charges[0].usage.price.tiers[0].unit_price" in found

    async def test_a_tier_may_have_only_a_flat_amount(self, stub):
        price = tiered(VOLUME, tier("10", unit_price=None, flat_amount="20"), tier(None, "1"))
        plan = (await (await self.create_with_price(stub, price))).plan
        assert plan.latest_version.charges[0].usage.price.tiers[0].flat_amount.value == "20"

    async def test_every_tier_violation_is_reported(self, stub):
        price = tiered(GRADUATED, tier("100", "-1"), tier("50", "0.0000000000001"), tier(None), tier("9"))
        found = await violations_of(await self.create_with_price(stub, price))
        prefix = "plan.charges[0].usage.price.tiers"
        assert {
            f"{prefix}[0].unit_price",
            f"{prefix}[1].up_to",
            f"{prefix}[1].unit_price",
            f"{prefix}[2].up_to",
            f"{prefix}[3].up_to",
        } <= set(found)

    async def test_included_units_and_limits_are_kept(self, stub):
        plan = (
            await (
                await self.create_with_price(
                    stub,
                    per_unit("0.002"),
                    included_units=dec("1000"),
                    minimum_amount=dec("5.00"),
                    maximum_amount=dec("100.00"),
                )
            )
        ).plan
        usage = plan.latest_version.charges[0].usage
        assert (usage.included_units.value, usage.minimum_amount.value, usage.maximum_amount.value) == (
            "1000",
            "5.00",
            "100.00",
        )

    async def test_negative_included_units_are_rejected(self, stub):
        found = await violations_of(
            await self.create_with_price(stub, per_unit("1"), included_units=dec("-5"))
        )
        assert found["plan.charges[0].usage.included_units"] == "must not be negative"

    async def test_a_maximum_below_the_minimum_is_rejected(self, stub):
        found = await violations_of(
            await self.create_with_price(
                stub, per_unit("1"), minimum_amount=dec("50"), maximum_amount=dec("10")
            )
        )
        assert "at least minimum_amount" in found["plan.charges[0].usage.maximum_amount"]

    async def test_dimension_prices_on_group_by_dimensions_are_kept(self, stub):
        m = await create_meter(stub, group_by=["model"])
        large = pb.DimensionPrice(match={"model": "large"}, price=per_unit("0.00003"))
        plan = await create_plan(
            stub, charges=[usage_charge(m.key, per_unit("0.00001"), dimension_prices=[large])]
        )
        stored = plan.latest_version.charges[0].usage.dimension_prices[0]
        assert (dict(stored.match), stored.price.unit_price.value) == ({"model": "large"}, "0.00003")

    async def test_a_dimension_price_on_a_dimension_the_meter_does_not_group_by_is_rejected(self, stub):
        m = await create_meter(stub, group_by=["model"])
        bad = pb.DimensionPrice(match={"region": "eu"}, price=per_unit("1"))
        found = await violations_of(
            stub.CreatePlan(
                pb.CreatePlanRequest(plan=plan_spec(charges=[usage_charge(m.key, dimension_prices=[bad])]))
            )
        )
        assert (
            "does not group by 'region'" in found["plan.charges[0].usage.dimension_prices[0].match[region]"]
        )

    async def test_a_dimension_price_is_validated_like_a_price(self, stub):
        m = await create_meter(stub, group_by=["model"])
        bad = pb.DimensionPrice(match={"model": "large"}, price=pb.Price(model=pb.PRICING_MODEL_PER_UNIT))
        found = await violations_of(
            stub.CreatePlan(
                pb.CreatePlanRequest(plan=plan_spec(charges=[usage_charge(m.key, dimension_prices=[bad])]))
            )
        )
        assert found["plan.charges[0].usage.dimension_prices[0].price.unit_price"] == "is required"


class TestPlanVersioning:
    async def test_create_publishes_version_one(self, stub):
        plan = await create_plan(stub)
        assert plan.latest_version.version == 1
        assert plan.latest_version.plan_key == plan.key

    async def test_publishing_adds_a_version_and_leaves_the_old_one_unchanged(self, stub):
        plan = await create_plan(stub, charges=[fixed_charge("10.00")])
        v1 = plan.latest_version
        v2 = (
            await stub.PublishPlanVersion(
                pb.PublishPlanVersionRequest(plan=plan_spec(key=plan.key, charges=[fixed_charge("12.00")]))
            )
        ).version
        old = (await stub.GetPlanVersion(pb.GetPlanVersionRequest(id=v1.id))).version
        latest = (
            await stub.GetPlanVersion(pb.GetPlanVersionRequest(key=pb.PlanVersionKey(plan_key=plan.key)))
        ).version
        assert v2.version == 2 and v2.id != v1.id
        assert old == v1
        assert old.charges[0].fixed.amount.value == "10.00"
        assert latest.id == v2.id and latest.charges[0].fixed.amount.value == "12.00"
        assert (await stub.GetPlan(pb.GetPlanRequest(key=plan.key))).plan.latest_version.version == 2

    async def test_a_version_is_found_by_plan_key_and_number(self, stub):
        plan = await create_plan(stub)
        await stub.PublishPlanVersion(pb.PublishPlanVersionRequest(plan=plan_spec(key=plan.key)))
        v1 = await stub.GetPlanVersion(
            pb.GetPlanVersionRequest(key=pb.PlanVersionKey(plan_key=plan.key, version=1))
        )
        assert v1.version.id == plan.latest_version.id

    async def test_list_plan_versions_pages_in_order(self, stub):
        plan = await create_plan(stub)
        for _ in range(2):
            await stub.PublishPlanVersion(pb.PublishPlanVersionRequest(plan=plan_spec(key=plan.key)))
        first = await stub.ListPlanVersions(pb.ListPlanVersionsRequest(plan_key=plan.key, page_size=2))
        second = await stub.ListPlanVersions(
            pb.ListPlanVersionsRequest(plan_key=plan.key, page_size=2, page_token=first.next_page_token)
        )
        assert [v.version for v in first.versions] == [1, 2]
        assert [v.version for v in second.versions] == [3]
        assert second.next_page_token == ""

    async def test_publishing_to_a_missing_plan_is_not_found(self, stub):
        error = await rejected(stub.PublishPlanVersion(pb.PublishPlanVersionRequest(plan=plan_spec())))
        assert error.code() == grpc.StatusCode.NOT_FOUND

    async def test_an_invalid_new_version_is_rejected_and_publishes_nothing(self, stub):
        plan = await create_plan(stub)
        await violations_of(
            stub.PublishPlanVersion(
                pb.PublishPlanVersionRequest(plan=plan_spec(key=plan.key, currency="NOPE"))
            )
        )
        assert (await stub.GetPlan(pb.GetPlanRequest(key=plan.key))).plan.latest_version.version == 1

    async def test_an_archived_plan_accepts_no_new_version(self, stub):
        plan = await create_plan(stub)
        archived = (await stub.ArchivePlan(pb.ArchivePlanRequest(key=plan.key))).plan
        error = await rejected(
            stub.PublishPlanVersion(pb.PublishPlanVersionRequest(plan=plan_spec(key=plan.key)))
        )
        assert archived.archived
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION

    async def test_archived_plans_are_listed_only_on_request(self, stub):
        plan = await create_plan(stub)
        await stub.ArchivePlan(pb.ArchivePlanRequest(key=plan.key))
        listed, everything, token = set(), set(), ""
        while True:
            page = await stub.ListPlans(pb.ListPlansRequest(page_size=100, page_token=token))
            listed |= {p.key for p in page.plans}
            if not (token := page.next_page_token):
                break
        while True:
            page = await stub.ListPlans(
                pb.ListPlansRequest(page_size=100, page_token=token, include_archived=True)
            )
            everything |= {p.key for p in page.plans}
            if not (token := page.next_page_token):
                break
        assert plan.key not in listed
        assert plan.key in everything
