"""A usage record's price point (reserved dimension) is kept on its contribution."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal as D

from services.meter.domain.matching import IncomingUsage, usage_contribution
from services.meter.domain.model import Aggregation, MeterDefinition
from tally.domain.price_points import PRICE_POINT_DIMENSION

WHEN = datetime(2026, 1, 1, tzinfo=timezone.utc)


def record(dimensions: dict[str, str]) -> IncomingUsage:
    return IncomingUsage("rec_1", "cus_1", "m", D(5), WHEN, dimensions)


class TestUsageContribution:
    def test_the_price_point_is_kept_beside_the_meters_own_dimensions(self):
        meter = MeterDefinition("m", "call", Aggregation.SUM, "units", (), ("region",))
        contribution = usage_contribution(meter, record({"region": "eu", PRICE_POINT_DIMENSION: "premium"}))
        assert contribution.dimensions == (("region", "eu"), (PRICE_POINT_DIMENSION, "premium"))
        assert contribution.value == D(5)

    def test_a_meter_without_group_by_still_keeps_the_price_point(self):
        meter = MeterDefinition("m", "call", Aggregation.COUNT)
        contribution = usage_contribution(meter, record({PRICE_POINT_DIMENSION: "bulk"}))
        assert contribution.dimensions == ((PRICE_POINT_DIMENSION, "bulk"),)
        assert contribution.count == D(5)

    def test_a_record_without_a_price_point_has_only_the_meters_dimensions(self):
        meter = MeterDefinition("m", "call", Aggregation.SUM, "units", (), ("region",))
        assert usage_contribution(meter, record({"region": "us"})).dimensions == (("region", "us"),)

    def test_other_undeclared_dimensions_are_still_dropped(self):
        meter = MeterDefinition("m", "call", Aggregation.SUM, "units")
        assert usage_contribution(meter, record({"bogus": "x"})).dimensions == ()
