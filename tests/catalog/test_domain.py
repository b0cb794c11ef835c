"""Pure catalog domain and the shared currency table: fast, exhaustive where it fits."""

from __future__ import annotations

from decimal import Decimal
from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from services.catalog.domain.meters import MeterFilter, MeterSpec, validate_meter
from services.catalog.domain.plans import Price, Tier, validate_price
from tally import currency
from tally.errors import Violations


class TestCurrency:
    def test_minor_units_follow_iso_4217(self):
        assert (currency.minor_units("USD"), currency.minor_units("JPY"), currency.minor_units("BHD")) == (
            2,
            0,
            3,
        )
        assert (currency.minor_units("EUR"), currency.minor_units("KWD"), currency.minor_units("CLF")) == (
            2,
            3,
            4,
        )

    def test_unknown_and_lower_case_codes_are_not_known(self):
        assert currency.is_known("GBP")
        assert not currency.is_known("gbp")
        assert not currency.is_known("XYZ")
        assert not currency.is_known("")


def tiers_from(bounds: list[int]) -> tuple[Tier, ...]:
    return (*(Tier(Decimal(b), Decimal("0.01")) for b in bounds), Tier(None, Decimal("0.01")))


def price_violations(price: Price) -> list[str]:
    v = Violations("price")
    validate_price(Violations("price"), price, into=v)
    return [item.field for item in v.items]


class TestTierRules:
    @given(st.lists(st.integers(min_value=1, max_value=10**9), unique=True, max_size=8))
    def test_strictly_ascending_bounds_with_an_open_last_tier_are_valid(self, bounds):
        assert price_violations(Price("GRADUATED", tiers=tiers_from(sorted(bounds)))) == []

    @given(st.lists(st.integers(min_value=1, max_value=10**6), min_size=2, max_size=8))
    def test_bounds_that_do_not_strictly_ascend_are_reported(self, bounds):
        ascending = all(a < b for a, b in pairwise(bounds))
        found = price_violations(Price("VOLUME", tiers=tiers_from(bounds)))
        assert (found == []) == ascending


class TestMeterRules:
    @given(
        st.sampled_from(["EQ", "NEQ", "IN", "NOT_IN", "GT", "GTE", "LT", "LTE", "EXISTS", "NOT_EXISTS"]),
        st.integers(min_value=0, max_value=3),
    )
    def test_value_counts_per_operator(self, op, count):
        spec = MeterSpec(
            key="m",
            name="m",
            unit="",
            event_type="e",
            aggregation="COUNT",
            filters=(MeterFilter("p", op, tuple(str(i + 1) for i in range(count))),),
        )
        expected_ok = {
            "EQ": count == 1,
            "NEQ": count == 1,
            "IN": count >= 1,
            "NOT_IN": count >= 1,
            "GT": count == 1,
            "GTE": count == 1,
            "LT": count == 1,
            "LTE": count == 1,
            "EXISTS": count == 0,
            "NOT_EXISTS": count == 0,
        }[op]
        assert (not validate_meter(spec)) == expected_ok
