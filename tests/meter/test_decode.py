"""Decoding ReadLog pages: an event keeps exactly the properties its meters read, and matching
on the decoded event equals matching on the full one."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

from services.meter import mapping
from services.meter.domain.matching import event_contribution, meter_matches, property_roots
from services.meter.domain.model import Aggregation, FilterOperator, MeterDefinition, MeterFilter
from tally_gen.ingest.v1 import ingest_pb2

UTC = timezone.utc

CALLS = MeterDefinition(
    key="call_minutes",
    event_type="call",
    aggregation=Aggregation.SUM,
    value_property="usage.minutes",
    filters=(MeterFilter("tier", FilterOperator.IN, ("gold", "silver")), MeterFilter("test", FilterOperator.NOT_EXISTS)),
    group_by=("region", "usage.codec"),
)
COUNT_SMS = MeterDefinition(key="sms", event_type="sms", aggregation=Aggregation.COUNT)


def page(*events: tuple[str, str, dict]) -> list[ingest_pb2.LogEntry]:
    entries = []
    for position, (event_id, event_type, props) in enumerate(events, start=1):
        entry = ingest_pb2.LogEntry(position=position)
        entry.event.event_id = event_id
        entry.event.event_type = event_type
        entry.event.customer_id = "cust_1"
        entry.event.timestamp.FromDatetime(datetime(2026, 11, 1, 12, 30, 15, 250_000, tzinfo=UTC))
        entry.event.properties.update(props)
        entries.append(entry)
    return entries


def roots_of(event_type: str) -> frozenset[str]:
    return property_roots([m for m in (CALLS, COUNT_SMS) if m.event_type == event_type])


class TestDecode:
    def test_property_roots_cover_value_filters_and_group_by(self):
        assert property_roots([CALLS]) == {"usage", "tier", "test", "region"}
        assert property_roots([COUNT_SMS]) == frozenset()
        assert property_roots([]) == frozenset()

    def test_an_event_keeps_only_what_its_meters_read_with_nested_values_whole(self):
        props = {
            "usage": {"minutes": 2.5, "codec": "opus"},
            "tier": "gold",
            "region": "eu",
            "caller": "+44...",
            "notes": ["a", "b"],
        }
        [(position, decoded)] = mapping.log_items(page(("e1", "call", props)), roots_of)
        assert position == 1
        assert decoded.properties == {"usage": {"minutes": 2.5, "codec": "opus"}, "tier": "gold", "region": "eu"}
        assert decoded.timestamp == datetime(2026, 11, 1, 12, 30, 15, 250_000, tzinfo=UTC)
        assert (decoded.event_id, decoded.event_type, decoded.customer_id) == ("e1", "call", "cust_1")

    def test_an_event_of_a_type_no_meter_reads_keeps_no_properties(self):
        [(_, decoded)] = mapping.log_items(page(("s1", "sms", {"to": "+1"})), roots_of)
        assert decoded.properties == {}

    def test_matching_the_decoded_event_equals_matching_the_full_one(self):
        cases = [
            {"usage": {"minutes": 3, "codec": "g711"}, "tier": "silver", "region": "us", "extra": 1},
            {"usage": {"minutes": 3}, "tier": "bronze", "region": "us"},
            {"usage": {"minutes": 3}, "tier": "gold", "test": True},
            {"usage": {"minutes": "7.25"}, "tier": "gold"},
        ]
        entries = page(*((f"e{i}", "call", props) for i, props in enumerate(cases)))
        decoded = mapping.log_items(entries, roots_of)
        for entry, (_, item) in zip(entries, decoded):
            full = mapping.log_item(entry)
            assert meter_matches(CALLS, item) == meter_matches(CALLS, full)
            if meter_matches(CALLS, full):
                assert event_contribution(CALLS, item) == event_contribution(CALLS, full)
        assert [meter_matches(CALLS, item) for _, item in decoded] == [True, False, False, True]
        assert event_contribution(CALLS, decoded[3][1]).value == Decimal("7.25")
