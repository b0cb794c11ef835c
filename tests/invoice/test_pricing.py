"""The pricing engine against DOMAIN.md's worked examples, plus property-based fuzzing."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal as D

from hypothesis import given, settings
from hypothesis import strategies as st

from services.invoice.domain.plans import (
    DimensionPrice,
    FeeTiming,
    FixedFee,
    Price,
    PricingModel,
    Tier,
    UsageCharge,
)
from services.invoice.domain.pricing import (
    UsagePart,
    price_fixed_fee,
    price_quantity,
    price_usage_charge,
    round_money,
)

UTC = timezone.utc
START, END = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
TIERS = (Tier(D(1000), D("0.10")), Tier(D(10000), D("0.08")), Tier(None, D("0.05")))
GRADUATED = Price(PricingModel.GRADUATED, tiers=TIERS)
VOLUME = Price(PricingModel.VOLUME, tiers=TIERS)


def charge(price: Price, **kwargs) -> UsageCharge:
    return UsageCharge(key="c", name="Charge", meter_key="m", price=price, **kwargs)


def price_charge(usage_charge: UsageCharge, usage: D, breakdown=(), currency="USD"):
    lines, _ = price_usage_charge(
        usage_charge,
        UsagePart(START, END, usage, tuple(breakdown)),
        currency=currency,
        included_available=usage_charge.included_units,
        plan_key="p",
        plan_version=1,
    )
    return lines


class TestDomainExamples:
    def test_voip_fee_and_361_minutes_cost_28_05(self):
        fee = price_fixed_fee(
            FixedFee("monthly", "Monthly fee", D("10.00")), currency="USD", start=START, end=END,
            proration=D(1), plan_key="voip", plan_version=1,
        )
        (minutes,) = price_charge(charge(Price(PricingModel.PER_UNIT, unit_price=D("0.05"))), D(361))
        assert (fee.amount, minutes.amount) == (D("10.00"), D("18.05"))
        assert fee.amount + minutes.amount == D("28.05")
        assert (minutes.quantity, minutes.unit_price) == (D(361), D("0.05"))

    def test_graduated_tiers_price_12500_units_at_945(self):
        (line,) = price_charge(charge(GRADUATED), D(12500))
        assert line.amount == D("945.00")
        assert [(t.tier, t.from_units, t.up_to, t.quantity, t.amount) for t in line.tiers] == [
            (1, D(1), D(1000), D(1000), D("100.00")),
            (2, D(1001), D(10000), D(9000), D("720.00")),
            (3, D(10001), None, D(2500), D("125.00")),
        ]

    def test_volume_tiers_price_12500_units_at_625(self):
        (line,) = price_charge(charge(VOLUME), D(12500))
        assert line.amount == D("625.00")
        assert line.unit_price == D("0.05")
        assert [(t.tier, t.quantity) for t in line.tiers] == [(3, D(12500))]

    def test_package_of_100_at_5_prices_250_units_as_three_packages(self):
        (line,) = price_charge(charge(Price(PricingModel.PACKAGE, package_size=D(100), package_price=D(5))), D(250))
        assert line.amount == D("15.00")
        assert line.tiers[0].quantity == D(3)

    def test_1000_included_units_leave_500_of_1500_billable_at_1_dollar(self):
        (line,) = price_charge(
            charge(Price(PricingModel.PER_UNIT, unit_price=D("0.002")), included_units=D(1000)), D(1500)
        )
        assert (line.amount, line.quantity, line.included_units, line.usage) == (D("1.00"), D(500), D(1000), D(1500))


class TestRounding:
    def test_each_line_is_rounded_once_half_even_to_the_minor_unit(self):
        # 0.125 and 0.135 are exact halves: banker's rounding goes to the even cent.
        assert round_money(D("0.125"), "USD") == D("0.12")
        assert round_money(D("0.135"), "USD") == D("0.14")

    def test_yen_has_no_minor_unit_and_dinar_has_three(self):
        assert round_money(D("100.5"), "JPY") == D("100")
        assert round_money(D("1.2345"), "BHD") == D("1.234")

    def test_token_prices_with_12_decimals_are_exact_until_the_final_rounding(self):
        (line,) = price_charge(charge(Price(PricingModel.PER_UNIT, unit_price=D("0.000002"))), D(1_234_567))
        assert line.amount == D("2.47")

    def test_tier_amounts_are_not_rounded_before_the_line(self):
        tiers = (Tier(D(1), D("0.004")), Tier(None, D("0.004")))
        (line,) = price_charge(charge(Price(PricingModel.GRADUATED, tiers=tiers)), D(2))
        # Rounding each tier first would give 0.00 + 0.00.
        assert line.amount == D("0.01")


class TestLimits:
    def test_a_minimum_raises_the_charge_and_keeps_the_original_amount(self):
        (line,) = price_charge(charge(Price(PricingModel.PER_UNIT, unit_price=D(1)), minimum_amount=D(50)), D(20))
        assert (line.amount, line.amount_before_limits) == (D("50.00"), D("20.00"))

    def test_a_maximum_caps_the_charge(self):
        (line,) = price_charge(charge(Price(PricingModel.PER_UNIT, unit_price=D(1)), maximum_amount=D(50)), D(70))
        assert (line.amount, line.amount_before_limits) == (D("50.00"), D("70.00"))

    def test_a_zero_usage_charge_still_yields_a_zero_line(self):
        (line,) = price_charge(charge(GRADUATED), D(0))
        assert line.amount == D("0.00")


class TestFlatAmounts:
    def test_graduated_flat_amounts_are_charged_once_per_reached_tier(self):
        tiers = (Tier(D(10), D(0), D(5)), Tier(None, D(1), D(2)))
        assert price_quantity(Price(PricingModel.GRADUATED, tiers=tiers), D(5)).amount == D(5)
        assert price_quantity(Price(PricingModel.GRADUATED, tiers=tiers), D(12)).amount == D(9)

    def test_volume_flat_amount_of_the_reached_tier_is_added(self):
        tiers = (Tier(D(10), D(1), D(5)), Tier(None, D("0.5"), D(20)))
        assert price_quantity(Price(PricingModel.VOLUME, tiers=tiers), D(20)).amount == D(30)


    def test_graduated_at_zero_usage_charges_the_first_tiers_flat_amount_by_default(self):
        tiers = (Tier(D(10), D(0), D("5.00")), Tier(None, D(1), D(2)))
        priced = price_quantity(Price(PricingModel.GRADUATED, tiers=tiers), D(0))
        assert priced.amount == D("5.00")
        assert [(t.tier, t.quantity, t.flat_amount) for t in priced.tiers] == [(1, D(0), D("5.00"))]

    def test_volume_at_zero_usage_charges_the_first_tiers_flat_amount_by_default(self):
        tiers = (Tier(D(10), D(1), D("7.50")), Tier(None, D("0.5"), D(20)))
        assert price_quantity(Price(PricingModel.VOLUME, tiers=tiers), D(0)).amount == D("7.50")

    def test_a_price_that_opts_out_charges_nothing_at_zero_usage(self):
        tiers = (Tier(D(10), D(0), D("5.00")), Tier(None, D(1), D(2)))
        for model in (PricingModel.GRADUATED, PricingModel.VOLUME):
            price = Price(model, tiers=tiers, charge_flat_amount_at_zero=False)
            assert price_quantity(price, D(0)).amount == D(0)
            assert price_quantity(price, D(0)).tiers == ()
            # Usage in the first tier still pays its flat amount.
            assert price_quantity(price, D(1)).amount == D("5.00")

    def test_usage_covered_by_included_units_is_billable_zero_and_pays_the_first_tiers_flat_amount(self):
        tiers = (Tier(D(100), D("0.10"), D("3.00")), Tier(None, D("0.05")))
        (line,) = price_charge(charge(Price(PricingModel.GRADUATED, tiers=tiers), included_units=D(50)), D(40))
        assert (line.quantity, line.included_units, line.amount) == (D(0), D(40), D("3.00"))


class TestDimensionPrices:
    def test_usage_is_priced_per_dimension_value_with_the_rest_at_the_default(self):
        usage_charge = charge(
            Price(PricingModel.PER_UNIT, unit_price=D("0.01")),
            dimension_prices=(
                DimensionPrice((("model", "large"),), Price(PricingModel.PER_UNIT, unit_price=D("0.10"))),
                DimensionPrice((("model", "small"),), Price(PricingModel.PER_UNIT, unit_price=D("0.02"))),
            ),
        )
        breakdown = [((("model", "large"),), D(100)), ((("model", "small"),), D(50)), ((("model", "tiny"),), D(30))]
        lines = price_charge(usage_charge, D(180), breakdown)
        assert [(line.dimensions, line.quantity, line.amount) for line in lines] == [
            ((("model", "large"),), D(100), D("10.00")),
            ((("model", "small"),), D(50), D("1.00")),
            ((), D(30), D("0.30")),
        ]

    def test_a_minimum_over_several_dimension_lines_adds_one_top_up_line(self):
        usage_charge = charge(
            Price(PricingModel.PER_UNIT, unit_price=D("0.01")),
            minimum_amount=D(5),
            dimension_prices=(DimensionPrice((("region", "eu"),), Price(PricingModel.PER_UNIT, unit_price=D("0.02"))),),
        )
        lines = price_charge(usage_charge, D(150), [((("region", "eu"),), D(100)), ((("region", "us"),), D(50))])
        assert [line.amount for line in lines] == [D("2.00"), D("0.50"), D("2.50")]
        assert sum(line.amount for line in lines) == D("5.00")


class TestFixedFees:
    def test_a_partial_period_fee_is_prorated_by_days(self):
        line = price_fixed_fee(
            FixedFee("base", "Base", D("31.00"), FeeTiming.IN_ARREARS), currency="USD",
            start=START, end=END, proration=D(17) / D(31), plan_key="p", plan_version=1,
        )
        assert line.amount == D("17.00")

    def test_a_fee_that_does_not_prorate_is_charged_in_full(self):
        line = price_fixed_fee(
            FixedFee("base", "Base", D("31.00"), prorate=False), currency="USD",
            start=START, end=END, proration=D(1) / D(2), plan_key="p", plan_version=1,
        )
        assert (line.amount, line.proration) == (D("31.00"), None)


decimals = st.decimals(min_value=0, max_value=10**9, places=4, allow_nan=False, allow_infinity=False)
prices = st.decimals(min_value=0, max_value=1000, places=6, allow_nan=False, allow_infinity=False)


@st.composite
def tier_lists(draw):
    bounds = sorted(set(draw(st.lists(st.integers(1, 10**6), min_size=0, max_size=4))))
    tiers = [Tier(D(b), draw(prices), draw(st.sampled_from([D(0), D(0), D(3)]))) for b in bounds]
    tiers.append(Tier(None, draw(prices)))
    return tuple(tiers)


class TestPricingProperties:
    @settings(max_examples=300, deadline=None)
    @given(tier_lists(), decimals, st.sampled_from(list(PricingModel)))
    def test_an_amount_is_never_negative(self, tiers, quantity, model):
        price = Price(model, unit_price=D("0.5"), package_size=D(7), package_price=D(3), tiers=tiers)
        assert price_quantity(price, quantity).amount >= 0
        # A negative quantity prices as 0 (which, tiered, pays the first tier's flat amount).
        assert price_quantity(price, -quantity) == price_quantity(price, D(0))
        zero_priced = Price(model, unit_price=D("0.5"), package_size=D(7), package_price=D(3), tiers=tiers,
                            charge_flat_amount_at_zero=False)
        assert price_quantity(zero_priced, -quantity).amount == 0

    @settings(max_examples=300, deadline=None)
    @given(tier_lists(), decimals, decimals)
    def test_graduated_is_monotone_in_quantity(self, tiers, a, b):
        low, high = sorted((a, b))
        price = Price(PricingModel.GRADUATED, tiers=tiers)
        assert price_quantity(price, low).amount <= price_quantity(price, high).amount

    @settings(max_examples=300, deadline=None)
    @given(tier_lists(), decimals)
    def test_graduated_tier_breakdown_adds_up_to_the_quantity_and_amount(self, tiers, quantity):
        priced = price_quantity(Price(PricingModel.GRADUATED, tiers=tiers), quantity)
        assert sum((t.quantity for t in priced.tiers), D(0)) == quantity
        assert sum((t.amount for t in priced.tiers), D(0)) == priced.amount

    @settings(max_examples=200, deadline=None)
    @given(decimals, prices, st.decimals(min_value=0, max_value=10**6, places=0))
    def test_included_units_never_make_a_charge_dearer(self, usage, unit_price, included):
        with_free = price_charge(charge(Price(PricingModel.PER_UNIT, unit_price=unit_price), included_units=included), usage)
        without = price_charge(charge(Price(PricingModel.PER_UNIT, unit_price=unit_price)), usage)
        assert with_free[0].amount <= without[0].amount
        assert with_free[0].quantity == max(usage - included, D(0))

    @settings(max_examples=200, deadline=None)
    @given(decimals, st.sampled_from(["USD", "JPY", "BHD"]))
    def test_a_line_amount_has_exactly_the_currency_minor_unit_places(self, usage, currency):
        (line,) = price_charge(charge(Price(PricingModel.PER_UNIT, unit_price=D("0.0001"))), usage, currency=currency)
        assert line.amount.as_tuple().exponent == -{"USD": 2, "JPY": 0, "BHD": 3}[currency]
