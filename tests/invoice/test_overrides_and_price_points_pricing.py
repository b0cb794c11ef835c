"""Pricing with a subscription's price overrides and with price points, by hand-worked amounts."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal as D

from services.invoice.domain.billing import PeriodContext, price_period, usage_queries
from services.invoice.domain.invoices import LineKind
from services.invoice.domain.plans import (
    DimensionPrice,
    FixedFee,
    Phase,
    PlanVersion,
    Price,
    PriceOverride,
    PricePoint,
    PricingModel,
    Subscription,
    Tier,
    UsageCharge,
)
from services.invoice.domain.pricing import UsagePart
from tally.domain.periods import Anchor, Interval, periods
from tally.domain.price_points import PRICE_POINT_DIMENSION

UTC = timezone.utc
JAN, FEB, MAR = (datetime(2026, m, 1, tzinfo=UTC) for m in (1, 2, 3))
PP = PRICE_POINT_DIMENSION


def per_unit(price: str) -> Price:
    return Price(PricingModel.PER_UNIT, unit_price=D(price))


def plan(*, points=(), dimension_prices=(), included="0", minimum=None) -> PlanVersion:
    return PlanVersion(
        id="v1",
        plan_key="voip",
        version=1,
        name="VoIP",
        currency="USD",
        interval=Interval.MONTH,
        interval_count=1,
        charges=(
            FixedFee("monthly", "Monthly fee", D("10.00")),
            UsageCharge(
                "minutes",
                "Minutes",
                "call_minutes",
                per_unit("0.05"),
                included_units=D(included),
                minimum_amount=None if minimum is None else D(minimum),
                dimension_prices=dimension_prices,
                price_points=points,
            ),
        ),
    )


def january(version: PlanVersion, overrides=()) -> PeriodContext:
    sub = Subscription(
        "sub_1", "cus_1", JAN, Anchor.CALENDAR, (Phase("v1", "voip", 1, JAN, None, tuple(overrides)),)
    )
    schedule = sub.schedule(version, "UTC")
    period = next(iter(periods(schedule, MAR)))
    return PeriodContext(sub, schedule, period, {"v1": version}, "USD")


def priced(context: PeriodContext, total: str, breakdown=()):
    usage = {q: UsagePart(q.start, q.end, D(total), tuple(breakdown)) for q in usage_queries(context)}
    return price_period(context, usage)


class TestPriceOverrides:
    def test_an_overridden_unit_price_and_fee_price_the_period_and_are_flagged(self):
        # 361 minutes at 0.04 = 14.44; fee overridden to 8.50; total 22.94 (plan would give 28.05).
        context = january(
            plan(),
            [
                PriceOverride("minutes", price=per_unit("0.04")),
                PriceOverride("monthly", amount=D("8.50")),
            ],
        )
        fee, minutes = priced(context, "361")
        assert (fee.amount, fee.unit_price, fee.price_override) == (D("8.50"), D("8.50"), True)
        assert (minutes.amount, minutes.unit_price, minutes.price_override) == (D("14.44"), D("0.04"), True)

    def test_an_override_of_included_units_and_minimum_only_keeps_the_plan_price(self):
        # 361 - 300 included = 61 billable at the plan's 0.05 = 3.05, raised to the 5.00 minimum.
        context = january(plan(), [PriceOverride("minutes", included_units=D(300), minimum_amount=D("5.00"))])
        fee, minutes = priced(context, "361")
        assert (fee.amount, fee.price_override) == (D("10.00"), False)
        assert (minutes.quantity, minutes.included_units, minutes.unit_price) == (D(61), D(300), D("0.05"))
        assert (minutes.amount, minutes.amount_before_limits, minutes.price_override) == (
            D("5.00"),
            D("3.05"),
            True,
        )

    def test_an_override_may_switch_to_graduated_tiers(self):
        # 1,500 units: 1,000 at 0.02 = 20.00 plus 500 at 0.01 = 5.00 -> 25.00.
        tiers = Price(PricingModel.GRADUATED, tiers=(Tier(D(1000), D("0.02")), Tier(None, D("0.01"))))
        _, minutes = priced(january(plan(), [PriceOverride("minutes", price=tiers)]), "1500")
        assert minutes.amount == D("25.00")
        assert [t.amount for t in minutes.tiers] == [D("20.00"), D("5.00")]

    def test_without_overrides_nothing_is_flagged(self):
        fee, minutes = priced(january(plan()), "361")
        assert (fee.amount, minutes.amount) == (D("10.00"), D("18.05"))
        assert not fee.price_override and not minutes.price_override


class TestPricePoints:
    POINTS = (
        PricePoint("premium", "Premium route", per_unit("0.09")),
        PricePoint("bulk", "Bulk", per_unit("0.01")),
    )

    def test_the_charge_asks_the_meter_for_the_price_point_dimension(self):
        (query,) = usage_queries(january(plan(points=self.POINTS)))
        assert query.group_by == (PP,)

    def test_usage_with_a_price_point_is_priced_by_it_on_its_own_line(self):
        # 500 minutes: 100 premium at 0.09 = 9.00, 300 bulk at 0.01 = 3.00, 100 plain at 0.05 = 5.00.
        breakdown = ((((PP, "premium"),), D(100)), (((PP, "bulk"),), D(300)), (((PP, ""),), D(100)))
        _, premium, bulk, plain = priced(january(plan(points=self.POINTS)), "500", breakdown)
        assert (premium.price_point, premium.usage, premium.amount) == ("premium", D(100), D("9.00"))
        assert premium.description == "Minutes (price point Premium route)"
        assert premium.dimensions == ((PP, "premium"),)
        assert (bulk.price_point, bulk.amount) == ("bulk", D("3.00"))
        assert (plain.price_point, plain.usage, plain.amount) == ("", D(100), D("5.00"))

    def test_included_units_go_to_dimension_prices_then_price_points_then_the_default(self):
        # 150 included: 100 premium billable 0 (uses 100), 50 of 300 bulk -> 250 at 0.01 = 2.50.
        breakdown = ((((PP, "premium"),), D(100)), (((PP, "bulk"),), D(300)))
        _, premium, bulk = priced(january(plan(points=self.POINTS, included="150")), "400", breakdown)
        assert (premium.included_units, premium.amount) == (D(100), D("0.00"))
        assert (bulk.included_units, bulk.quantity, bulk.amount) == (D(50), D(250), D("2.50"))

    def test_a_price_point_the_version_does_not_declare_is_priced_at_the_default(self):
        breakdown = ((((PP, "retired"),), D(20)),)
        _, minutes = priced(january(plan(points=self.POINTS)), "20", breakdown)
        assert (minutes.price_point, minutes.amount) == ("", D("1.00"))

    def test_a_price_point_wins_over_a_dimension_price(self):
        # 10 large-model minutes with the premium point: 0.09 each, not the large price 0.50.
        large = (DimensionPrice((("model", "large"),), per_unit("0.50")),)
        breakdown = ((((PP, "premium"), ("model", "large")), D(10)),)
        lines = priced(january(plan(points=self.POINTS, dimension_prices=large)), "10", breakdown)
        amounts = {
            (line.price_point, line.dimensions): line.amount for line in lines if line.kind is LineKind.USAGE
        }
        assert amounts == {("", (("model", "large"),)): D("0.00"), ("premium", ((PP, "premium"),)): D("0.90")}

    def test_an_override_of_the_default_price_leaves_price_points_alone(self):
        breakdown = ((((PP, "premium"),), D(100)), (((PP, ""),), D(100)))
        context = january(plan(points=self.POINTS), [PriceOverride("minutes", price=per_unit("0.02"))])
        _, premium, plain = priced(context, "200", breakdown)
        assert (premium.amount, plain.amount) == (D("9.00"), D("2.00"))
        assert premium.price_override and plain.price_override
