"""tally.wire: the one grammar of decimals, instants and text, and bounded error details."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction

import pytest
from google.rpc import error_details_pb2, status_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from tally import wire
from tally.errors import InvalidInput, Violation, Violations
from tally.grpc_errors import to_rpc_status

UTC = timezone.utc

# Python's Decimal() reads every one of these as a number; the grammar reads none of them.
LENIENT = [
    "1_000",
    "  12 ",
    "12\xa0",
    "\u0661\u0662",  # Arabic-Indic digits
    "\uff11\uff12",  # full-width digits
    "+7",
    ".5",
    "5.",
    "NaN",
    "-Infinity",
    "inf",
    "1e",
    "1e+",
    "0x10",
    "",
    "1,5",
    "12\n",
]


def bounded_decimals():
    """Decimals inside the grammar's bounds: <= 38 significant digits, < 10^38, <= 18 places."""
    return st.builds(
        lambda coefficient, places, negative: Decimal((1 if negative else 0, tuple(int(d) for d in str(coefficient)), -places)),
        st.integers(0, 10**20 - 1),
        st.integers(0, wire.MAX_SCALE),
        st.booleans(),
    )


class TestDecimalGrammar:
    @pytest.mark.parametrize("text", LENIENT)
    def test_a_string_pythons_decimal_might_accept_is_not_a_decimal_of_the_grammar(self, text):
        with pytest.raises(wire.DecimalError) as refused:
            wire.parse_decimal(text)
        assert refused.value.reason == "INVALID_DECIMAL"

    @pytest.mark.parametrize(
        "text, reason",
        [
            ("9" * 40, "DECIMAL_OUT_OF_RANGE"),
            ("1e38", "DECIMAL_OUT_OF_RANGE"),
            ("1e999999", "DECIMAL_OUT_OF_RANGE"),
            ("0.0000000000000000001", "DECIMAL_TOO_PRECISE"),
            ("1." + "1" * 38, "DECIMAL_TOO_PRECISE"),
            ("1" * 101, "INVALID_DECIMAL"),
        ],
    )
    def test_a_value_outside_what_storage_holds_exactly_is_refused(self, text, reason):
        with pytest.raises(wire.DecimalError) as refused:
            wire.parse_decimal(text)
        assert refused.value.reason == reason

    @pytest.mark.parametrize(
        "text, value",
        [
            ("9" * 38, Decimal("9" * 38)),
            ("-12.5", Decimal("-12.5")),
            ("1.5e3", Decimal(1500)),
            ("1E-18", Decimal("0.000000000000000001")),
            ("0.000000000000000001", Decimal("1e-18")),
            ("007", Decimal(7)),
            ("12345678901234567890.123456789012345678", Decimal("12345678901234567890.123456789012345678")),
        ],
    )
    def test_a_value_inside_the_bounds_is_read_exactly(self, text, value):
        assert wire.parse_decimal(text) == value

    def test_trailing_zeros_past_the_scale_are_dropped_without_changing_the_value(self):
        value = wire.parse_decimal("1.5" + "0" * 30)
        assert value == Decimal("1.5")
        assert -value.as_tuple().exponent <= wire.MAX_SCALE

    @settings(max_examples=300, deadline=None)
    @given(value=bounded_decimals())
    def test_every_bounded_value_round_trips_through_plain_and_exponent_notation(self, value):
        assert wire.parse_decimal(wire.format_decimal(value)) == value
        assert wire.parse_decimal(str(value)) == value

    @settings(max_examples=300, deadline=None)
    @given(text=st.text(max_size=12))
    def test_whatever_the_grammar_reads_python_reads_as_the_same_number(self, text):
        try:
            value = wire.parse_decimal(text)
        except wire.DecimalError:
            return
        assert text.isascii() and text.strip() == text and "_" not in text and not text.startswith("+")
        assert value == Decimal(text)

    @settings(max_examples=200, deadline=None)
    @given(values=st.lists(bounded_decimals(), min_size=1, max_size=50))
    def test_sums_and_products_of_bounded_values_never_round(self, values):
        total = Decimal(0)
        for value in values:
            total = wire.EXACT.add(total, value)
        assert Fraction(total) == sum(Fraction(v) for v in values)
        product = wire.EXACT.multiply(total, values[0])
        assert Fraction(product) == Fraction(total) * Fraction(values[0])

    def test_the_sum_that_came_out_as_790_is_exact(self):
        parts = [wire.parse_decimal(t) for t in ("12345678901234567890123456789", "1", "0.000001")]
        total = Decimal(0)
        for part in parts:
            total = wire.EXACT.add(total, part)
        assert wire.format_decimal(total) == "12345678901234567890123456790.000001"

    def test_check_decimal_names_the_field_and_can_refuse_negatives(self):
        v = Violations("plan")
        assert wire.check_decimal(v, "price", "1e999999") is None
        assert wire.check_decimal(v, "fee", "-1", allow_negative=False) is None
        assert wire.check_decimal(v, "absent", "") is None
        assert [(x.field, x.reason) for x in v.items] == [("plan.price", "DECIMAL_OUT_OF_RANGE"), ("plan.fee", "NEGATIVE")]

    def test_decimal_or_raise_is_invalid_argument_naming_the_field(self):
        with pytest.raises(InvalidInput) as refused:
            wire.decimal_or_raise("1e999999", "threshold.absolute_units")
        assert refused.value.violations[0].field == "threshold.absolute_units"


class TestJsonNumbers:
    @pytest.mark.parametrize("value", [1e308, 1e38, 1e-19, float("nan"), float("inf"), True, None, {}, [], "1_000", "+7"])
    def test_a_property_value_outside_the_grammar_or_bounds_is_not_a_meter_value(self, value):
        assert wire.json_number(value) is None

    @pytest.mark.parametrize("value, expected", [(0.1, "0.1"), (1e37, "1E+37"), (12, "12"), ("-3.25", "-3.25")])
    def test_a_json_number_is_read_by_its_shortest_repr(self, value, expected):
        assert wire.json_number(value) == Decimal(expected)

    def test_filters_read_any_finite_number_of_the_grammar(self):
        assert wire.json_number_unbounded(1e308) == Decimal("1e308")
        assert wire.json_number_unbounded("1_000") is None


class TestInstants:
    @pytest.mark.parametrize(
        "instant",
        [datetime(1, 1, 1, tzinfo=UTC), datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC),
         datetime(2200, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC)],
    )
    def test_an_instant_outside_1970_to_2200_is_a_violation_naming_the_field(self, instant):
        v = Violations()
        assert not wire.check_instant(v, "start_time", instant)
        assert [(x.field, x.reason) for x in v.items] == [("start_time", "INSTANT_OUT_OF_RANGE")]

    def test_the_ends_of_the_range_are_as_documented(self):
        assert wire.instant_in_range(wire.MIN_INSTANT)
        assert wire.instant_in_range(wire.MAX_INSTANT - timedelta(microseconds=1))
        assert wire.MAX_SECONDS == int(wire.MAX_INSTANT.timestamp())
        assert wire.seconds_in_range(wire.MAX_SECONDS - 1, 999_999_999)
        assert not wire.seconds_in_range(wire.MAX_SECONDS)

    def test_the_longest_period_after_the_last_instant_stays_far_inside_datetime(self):
        # A period of MAX_INTERVAL_COUNT years starting just before MAX_INSTANT, plus one more
        # interval and any time zone offset, is still a valid datetime and Postgres timestamptz.
        latest = wire.MAX_INSTANT.replace(year=wire.MAX_INSTANT.year + wire.MAX_INTERVAL_COUNT + 1) + timedelta(days=2)
        assert latest.year < 9999


class TestText:
    def test_nul_and_length_are_violations_naming_the_field(self):
        v = Violations("meter")
        assert not wire.check_text(v, "name", "a\x00b", max_chars=10)
        assert not wire.check_text(v, "description", "x" * 11, max_chars=10)
        assert wire.check_text(v, "unit", "minutes", max_chars=10)
        assert [(x.field, x.reason) for x in v.items] == [("meter.name", "INVALID_CHARACTER"), ("meter.description", "TOO_LONG")]

    def test_a_map_with_too_many_entries_is_one_violation_not_one_per_entry(self):
        v = Violations("customer")
        assert not wire.check_string_map(v, "metadata", [(str(i), "v") for i in range(10_000)])
        assert [(x.field, x.reason) for x in v.items] == [("customer.metadata", "TOO_MANY")]

    def test_a_long_bad_value_is_quoted_shortened(self):
        assert len(wire.shorten("x" * 1_000_000)) < 100


class TestBoundedErrorDetails:
    def test_ten_thousand_violations_give_a_small_status_that_names_the_first_problems(self):
        error = InvalidInput(
            "invalid meter",
            violations=[Violation(f"meter.group_by[{i}]", "x" * 500, "INVALID_PROPERTY_PATH") for i in range(10_000)],
            metadata={"key": "k" * 10_000},
        )
        status = to_rpc_status(error)
        details = dict(status.trailing_metadata)["grpc-status-details-bin"]
        assert len(details) < 4 * 1024  # base64 in the trailer stays well under gRPC's 8 KiB default
        parsed = status_pb2.Status.FromString(details)
        bad = error_details_pb2.BadRequest()
        parsed.details[0].Unpack(bad)
        assert bad.field_violations[0].field == "meter.group_by[0]"
        assert 1 <= len(bad.field_violations) < 10_000
        assert "of 10000 problems" in parsed.message
        info = error_details_pb2.ErrorInfo()
        parsed.details[1].Unpack(info)
        assert info.metadata["violations_total"] == "10000"
