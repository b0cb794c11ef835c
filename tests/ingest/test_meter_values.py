"""Ingest refuses a meter value outside the grammar (services.ingest.domain.events)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.ingest import mapping
from services.ingest.domain.events import (
    INVALID_METER_VALUE,
    NEGATIVE_METER_VALUE,
    CustomerRef,
    Limits,
    ValueRule,
    _values_surely_usable,
    prepare_events,
    value_violations,
)
from tally_gen.common.v1 import common_pb2
from tally_gen.ingest.v1 import ingest_pb2

NOW = 1_780_000_000_000_000
MINUTES = (ValueRule("minutes", ("call_minutes",), False),)
CREDITS = (ValueRule("amount", ("credits",), True),)


def batch_of(*properties: dict):
    request = ingest_pb2.SendEventBatchRequest()
    for i, props in enumerate(properties):
        e = request.events.add(idempotency_key=f"k{i}", event_type="call", customer=common_pb2.CustomerRef(external_id="acct"))
        e.timestamp.FromMicroseconds(NOW - 1_000_000)
        e.properties.update(props)
    return mapping.events_from_proto(request.events)


def prepare(batch, rules=MINUTES, read=None):
    return prepare_events(
        batch,
        customers={CustomerRef("", "acct"): "cus_1"},
        is_metered=lambda _type: True,
        now_micros=NOW,
        limits=Limits(),
        prefix=lambda i: f"events[{i}]",
        value_rules=lambda _type: rules,
        read_property=read or batch.read_property,
    )


class TestMeterValuesAtIngest:
    @pytest.mark.parametrize("bad", ["1_000", "  12 ", "12\xa0", "\u0661\u0662", "+7", "many", "9" * 40, "1e999999", 1e308, True])
    def test_a_value_outside_the_grammar_rejects_the_event_naming_the_property(self, bad):
        prepared = prepare(batch_of({"minutes": "3"}, {"minutes": bad}))
        assert prepared.indexes == [0]
        [problem] = prepared.rejected[1]
        assert (problem.field, problem.reason) == ("events[1].properties.minutes", INVALID_METER_VALUE)
        assert "call_minutes" in problem.description

    def test_an_absent_or_null_value_is_accepted(self):
        prepared = prepare(batch_of({"region": "eu"}, {"minutes": None}))
        assert prepared.indexes == [0, 1] and not prepared.rejected

    def test_a_negative_value_is_rejected_unless_every_meter_reading_it_allows_negatives(self):
        assert prepare(batch_of({"minutes": "-5"})).rejected[0][0].reason == NEGATIVE_METER_VALUE
        assert prepare(batch_of({"minutes": -0.5})).rejected[0][0].reason == NEGATIVE_METER_VALUE
        assert not prepare(batch_of({"amount": "-5"}), rules=CREDITS).rejected

    def test_a_nested_value_path_is_read(self):
        rules = (ValueRule("usage.seconds", ("m",), False),)
        prepared = prepare(batch_of({"usage": {"seconds": "x"}}, {"usage": {"seconds": 4.5}}, {"usage": "flat"}), rules=rules)
        assert list(prepared.rejected) == [0] and prepared.indexes == [1, 2]

    def test_serialized_properties_are_read_the_same_as_the_decoded_request(self):
        batch = batch_of({"minutes": "1_000"}, {"minutes": "2.5"})
        from_bytes = prepare(batch, read=lambda i, path: mapping.property_from_bytes(batch.properties[i], path))
        assert from_bytes.rejected.keys() == prepare(batch).rejected.keys() == {0}

    @settings(max_examples=400, deadline=None)
    @given(
        raw=st.one_of(
            st.floats(allow_nan=True, allow_infinity=True),
            st.text(alphabet="0123456789.-+eE _", max_size=45),
            st.decimals(allow_nan=False, allow_infinity=False).map(str),
        ),
        allow_negative=st.booleans(),
    )
    def test_the_cheap_test_never_clears_a_value_the_exact_check_refuses(self, raw, allow_negative):
        rules = (ValueRule("v", ("m",), allow_negative),)
        exact = value_violations(rules, lambda _path: raw, "e")
        if _values_surely_usable(rules, lambda _index, _path: raw, 0):
            assert exact == []
        if not exact and isinstance(raw, str):
            assert Decimal(raw).is_finite()
