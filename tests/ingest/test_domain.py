"""Pure ingest rules: validation, byte-level property bounds, digests, log paging, group merging."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import time
import uuid

import pytest
from google.protobuf import struct_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from services.ingest import mapping
from services.ingest.domain.attribution import Coverage, NamedSubscription, SubscriptionRef
from services.ingest.domain.events import (
    MAX_PROPERTIES_DEPTH,
    CustomerRef,
    EventBatch,
    EventInput,
    Limits,
    PropertiesShape,
    content_digest,
    generated_key,
    prepare_events,
    validate_event,
)
from services.ingest.domain.log import (
    LogCursor,
    LogEntry,
    LoggedEvent,
    LogHead,
    LogPosition,
    clamp_max_entries,
    next_page,
)
from services.ingest.domain.usage import UsageInput, accept_usage, validate_usage
from services.ingest.group_commit import merge
from tally.errors import InvalidInput

NOW = 1_800_000_000_000_000
LIMITS = Limits()
ALICE = CustomerRef("", "acct_alice")


def event(**fields) -> EventInput:
    values = dict(
        idempotency_key="k1",
        event_type="api_request",
        customer=ALICE,
        timestamp_micros=NOW,
        properties=b"",
        shape=PropertiesShape(0, 0),
    )
    values.update(fields)
    return EventInput(**values)


def prepare(*events: EventInput, customers=None):
    return prepare_events(
        EventBatch.of(list(events)),
        customers=customers if customers is not None else {ALICE: "cus_alice"},
        is_metered=lambda event_type: event_type != "orphan",
        now_micros=NOW,
        limits=LIMITS,
        prefix=lambda i: f"events[{i}]",
    )


class TestValidateEvent:
    def test_a_valid_event_has_no_problems(self):
        assert validate_event(event(), now_micros=NOW, limits=LIMITS, prefix="event") == []

    def test_the_late_window_is_configurable(self):
        old = event(timestamp_micros=NOW - 3 * 86_400_000_000)
        assert validate_event(old, now_micros=NOW, limits=Limits(late_event_window_days=2), prefix="e")[0].reason == (
            "TIMESTAMP_TOO_OLD"
        )
        assert validate_event(old, now_micros=NOW, limits=Limits(late_event_window_days=4), prefix="e") == []

    def test_exactly_five_minutes_ahead_is_accepted_and_one_microsecond_more_is_not(self):
        edge = NOW + 5 * 60 * 1_000_000
        assert validate_event(event(timestamp_micros=edge), now_micros=NOW, limits=LIMITS, prefix="e") == []
        [problem] = validate_event(event(timestamp_micros=edge + 1), now_micros=NOW, limits=LIMITS, prefix="e")
        assert problem.reason == "TIMESTAMP_IN_FUTURE"

    def test_nul_characters_are_rejected_because_postgres_text_cannot_hold_them(self):
        problems = validate_event(event(idempotency_key="a\x00b", event_type="x\x00"), now_micros=NOW, limits=LIMITS, prefix="e")
        assert {p.field for p in problems} == {"e.idempotency_key", "e.event_type"}


class TestPrepareEvents:
    def test_valid_events_are_accepted_with_their_resolved_customer(self):
        prepared = prepare(event(), event(idempotency_key="k2", event_type="orphan"))
        assert prepared.keys == ["k1", "k2"]
        assert prepared.customer_ids == ["cus_alice", "cus_alice"]
        assert prepared.metered == [True, False]
        assert prepared.rejected == {}

    def test_an_unknown_customer_is_a_violation_naming_the_event(self):
        prepared = prepare(event(), customers={ALICE: None})
        [problem] = prepared.rejected[0]
        assert (problem.field, problem.reason) == ("events[0].customer", "UNKNOWN_CUSTOMER")
        assert "acct_alice" in problem.description

    def test_a_missing_key_is_generated_anew_for_every_event_even_with_the_same_content(self):
        first = prepare(event(idempotency_key=""), event(idempotency_key=""))
        again = prepare(event(idempotency_key=""))
        keys = [*first.keys, *again.keys]
        assert len(set(keys)) == 3
        for key in keys:
            parsed = uuid.UUID(key)
            assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)

    def test_generated_keys_are_time_ordered_uuid7s(self):
        before = time.time_ns() // 1_000_000
        key = uuid.UUID(generated_key())
        after = time.time_ns() // 1_000_000
        assert before <= key.int >> 80 <= after

    def test_the_payload_hash_is_the_content_digest(self):
        sent = event(properties=b"\x0a\x03abc")
        assert prepare(sent).payload_hashes == [content_digest(sent, "cus_alice")]

    def test_a_missing_timestamp_defaults_to_now_but_the_hash_uses_the_event_as_sent(self):
        prepared = prepare(event(timestamp_micros=None))
        assert prepared.timestamps == [NOW]
        assert prepared.payload_hashes != prepare(event(timestamp_micros=NOW)).payload_hashes

    def test_every_problem_of_every_bad_event_is_reported(self):
        prepared = prepare(event(), event(event_type="", timestamp_micros=NOW + 10**12), event(idempotency_key="k" * 300))
        assert prepared.keys == ["k1"]
        assert sorted(p.field for p in prepared.rejected[1]) == ["events[1].event_type", "events[1].timestamp"]
        assert [p.reason for p in prepared.rejected[2]] == ["IDEMPOTENCY_KEY_TOO_LONG"]

    def test_repeats_of_a_key_keep_the_first_occurrence(self):
        prepared = prepare(event(), event(idempotency_key="k2"), event(properties=b"\x0a\x00"))
        unique = prepared.first_of_each_key()
        assert unique.keys == ["k1", "k2"] and unique.indexes == [0, 1]


def nested(depth: int) -> dict:
    document: dict = {"leaf": 1}
    for _ in range(depth - 1):
        document = {"d": document}
    return document


def shape_of(document) -> PropertiesShape:
    struct = struct_pb2.Struct()
    struct.update(document)
    return mapping._properties(struct)[1]


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=25,
)


def walk(value, depth: int = 1) -> tuple[int, bool]:
    """(depth, has a non-finite number) of a JSON-like value, counting each dict and list as a level."""
    if isinstance(value, float):
        return depth - 1, not math.isfinite(value)
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
    if children is None:
        return depth - 1, False
    deepest, bad = depth, False
    for child in children:
        d, b = walk(child, depth + 1)
        deepest, bad = max(deepest, d), bad or b
    return deepest, bad


class TestPropertiesShape:
    def test_eight_levels_pass_and_nine_fail(self):
        assert shape_of(nested(8)).depth <= MAX_PROPERTIES_DEPTH
        assert shape_of(nested(9)).depth == 9

    def test_nan_is_found_at_its_path(self):
        assert shape_of({"a": {"b": [1, float("nan")]}}).non_finite_paths == ("a.b[1]",)

    @settings(max_examples=300, deadline=None)
    @given(st.dictionaries(st.text(max_size=4), json_values, max_size=4))
    def test_the_byte_level_bounds_never_hide_a_violation(self, document):
        depth, non_finite = walk(document)
        shape = shape_of(document)
        assert (shape.depth > MAX_PROPERTIES_DEPTH) == (depth > MAX_PROPERTIES_DEPTH)
        assert bool(shape.non_finite_paths) == non_finite


class TestValidateUsage:
    now = dt.datetime(2026, 11, 22, 12, tzinfo=dt.timezone.utc)

    def usage(self, **fields) -> UsageInput:
        values = dict(
            idempotency_key="u1", customer=ALICE, meter_key="minutes", quantity="22.5", memo="",
            timestamp=None, range_start=None, range_end=None,
        )
        values.update(fields)
        return UsageInput(**values)

    @pytest.mark.parametrize("quantity", ["-0.01", "abc", "", "NaN", "Infinity", "1e"])
    def test_a_bad_quantity_is_rejected(self, quantity):
        problems = validate_usage(self.usage(quantity=quantity), now=self.now, limits=LIMITS)
        assert [p.field for p in problems] == ["quantity"]

    def test_quantities_keep_every_decimal_and_equal_forms_hash_alike(self):
        tokens = accept_usage(self.usage(quantity="0.000000000002"), customer_id="c", now=self.now)
        assert str(tokens.quantity) == "2E-12"
        ten = accept_usage(self.usage(quantity="10"), customer_id="c", now=self.now)
        assert ten.payload_hash == accept_usage(self.usage(quantity="10.00"), customer_id="c", now=self.now).payload_hash

    def test_a_range_is_attributed_to_its_start(self):
        start = self.now - dt.timedelta(days=1)
        usage = self.usage(range_start=start, range_end=self.now)
        assert validate_usage(usage, now=self.now, limits=LIMITS) == []
        assert accept_usage(usage, customer_id="c", now=self.now).usage_time == start

    def test_an_empty_or_inverted_range_is_rejected(self):
        for end in (self.now - dt.timedelta(days=1), self.now - dt.timedelta(days=2)):
            usage = self.usage(range_start=self.now - dt.timedelta(days=1), range_end=end)
            assert [p.field for p in validate_usage(usage, now=self.now, limits=LIMITS)] == ["range.end"]


def entry(xid: int, position: int) -> LogEntry:
    at = 1_767_225_600_000_000
    return LogEntry(LogPosition(xid, position), at, LoggedEvent("e", "k", "t", "c", at, b""))


class TestNextPage:
    mark = dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc)

    def test_a_full_page_resumes_after_its_last_entry_and_keeps_the_old_watermark(self):
        entries = [entry(10, 5), entry(10, 7), entry(12, 6)]
        page = next_page(entries, cursor=LogCursor(), limit=2, horizon=20, watermark=self.mark)
        assert page.next_cursor.after == LogPosition(10, 7)
        assert not page.caught_up and page.next_cursor.watermark is None

    def test_a_caught_up_page_resumes_at_the_horizon_with_the_new_watermark(self):
        page = next_page([entry(10, 5)], cursor=LogCursor(), limit=5, horizon=20, watermark=self.mark)
        assert page.caught_up
        assert page.next_cursor == LogCursor(LogPosition(20, 0), self.mark)

    def test_a_page_is_not_caught_up_while_a_committed_entry_lies_above_the_horizon(self):
        # The head (read after the candidates) committed in a transaction at or above the
        # horizon: everything below the horizon was served, but the reader is not caught up.
        for head_xid in (20, 25):
            head = LogHead(position=99, xid=head_xid)
            page = next_page([entry(10, 5)], cursor=LogCursor(), limit=5, horizon=20, watermark=self.mark, head=head)
            assert not page.caught_up
            assert page.next_cursor == LogCursor(LogPosition(20, 0), self.mark)
            assert page.head == head

    def test_a_page_is_caught_up_when_the_head_lies_below_the_horizon(self):
        head = LogHead(position=5, xid=10)
        assert next_page([entry(10, 5)], cursor=LogCursor(), limit=5, horizon=20, watermark=self.mark, head=head).caught_up
        # An empty log is caught up at once.
        assert next_page([], cursor=LogCursor(), limit=5, horizon=20, watermark=self.mark, head=LogHead()).caught_up

    def test_the_watermark_never_moves_back(self):
        later = self.mark + dt.timedelta(seconds=5)
        page = next_page([], cursor=LogCursor(LogPosition(20, 0), later), limit=5, horizon=20, watermark=self.mark)
        assert page.next_cursor.watermark == later

    def test_entries_sort_by_transaction_then_position(self):
        assert sorted([entry(12, 1), entry(10, 9), entry(10, 3)]) == [entry(10, 3), entry(10, 9), entry(12, 1)]

    def test_instants_convert_from_microseconds_exactly(self):
        assert entry(1, 1).ingest_time == dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
        assert entry(1, 1).body.timestamp == dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)

    def test_max_entries_defaults_and_caps(self):
        assert (clamp_max_entries(0), clamp_max_entries(50), clamp_max_entries(10**6)) == (1000, 50, 10_000)

    def test_negative_max_entries_is_invalid(self):
        with pytest.raises(InvalidInput) as caught:
            clamp_max_entries(-1)
        assert [v.field for v in caught.value.violations] == ["max_entries"]


class TestGroupMerge:
    def test_merged_groups_keep_order_and_offset_indexes(self):
        one = prepare(event())
        two = prepare(event(idempotency_key="k2"))
        merged = merge([one, two])
        assert merged.keys == ["k1", "k2"] and merged.indexes == [0, 1]


HOUR = 3_600_000_000


def attributed(*events: EventInput, coverage=(), named=None, meters=frozenset({"calls"})):
    return prepare_events(
        EventBatch.of(list(events)),
        customers={ALICE: "cus_alice", BOB: "cus_bob"},
        is_metered=lambda event_type: True,
        now_micros=NOW,
        limits=LIMITS,
        prefix=lambda i: f"events[{i}]",
        named=named or {},
        coverage_of=lambda customer_id: coverage if customer_id == "cus_alice" else (),
        meter_keys_of=lambda event_type: meters,
    )


BOB = CustomerRef("", "acct_bob")


class TestAttribution:
    def test_the_one_subscription_charging_a_meter_of_the_event_at_its_time_takes_it(self):
        coverage = (
            Coverage("sub_old", NOW - 10 * HOUR, NOW - HOUR, frozenset({"calls"})),
            Coverage("sub_new", NOW - HOUR, None, frozenset({"calls"})),
            Coverage("sub_other_meter", NOW - 10 * HOUR, None, frozenset({"minutes"})),
        )
        prepared = attributed(event(timestamp_micros=NOW - 2 * HOUR), event(idempotency_key="k2"), coverage=coverage)
        assert prepared.subscription_ids == ["sub_old", "sub_new"] and prepared.rejected == {}

    def test_no_candidate_leaves_the_event_unattributed(self):
        coverage = (Coverage("sub_later", NOW + HOUR, None, frozenset({"calls"})),)
        prepared = attributed(event(), coverage=coverage)
        assert prepared.subscription_ids == [""] and prepared.rejected == {}

    def test_two_candidates_refuse_the_event_naming_both(self):
        coverage = (
            Coverage("sub_a", NOW - HOUR, None, frozenset({"calls"})),
            Coverage("sub_b", NOW - HOUR, NOW + HOUR, frozenset({"calls", "minutes"})),
        )
        prepared = attributed(event(), coverage=coverage)
        [problem] = prepared.rejected[0]
        assert (problem.field, problem.reason) == ("events[0].subscription", "SUBSCRIPTION_AMBIGUOUS")
        assert "sub_a" in problem.description and "sub_b" in problem.description

    def test_a_named_subscription_must_exist_and_be_the_customers(self):
        mine, theirs, gone = SubscriptionRef(id="sub_a"), SubscriptionRef(id="sub_b"), SubscriptionRef(id="sub_x")
        named = {mine: NamedSubscription("sub_a", "cus_alice"), theirs: NamedSubscription("sub_b", "cus_bob"), gone: None}
        prepared = attributed(
            event(subscription=mine),
            event(idempotency_key="k2", subscription=theirs),
            event(idempotency_key="k3", subscription=gone),
            event(idempotency_key="k4", subscription=SubscriptionRef()),
            named=named,
        )
        assert prepared.subscription_ids == ["sub_a"]
        reasons = {index: [p.reason for p in problems] for index, problems in prepared.rejected.items()}
        assert reasons == {
            1: ["SUBSCRIPTION_OF_ANOTHER_CUSTOMER"],
            2: ["SUBSCRIPTION_NOT_FOUND"],
            3: ["SUBSCRIPTION_REF_EMPTY"],
        }

    def test_a_named_subscription_is_part_of_the_payload_hash_and_an_unnamed_event_hashes_as_before(self):
        plain = event()
        named = event(subscription=SubscriptionRef(id="sub_a"))
        assert content_digest(plain, "cus_alice") == hashlib.sha256(
            f"api_request\x00cus_alice\x00{NOW}\x00".encode()
        ).digest()
        assert content_digest(named, "cus_alice") != content_digest(plain, "cus_alice")
        prepared = attributed(named, named={SubscriptionRef(id="sub_a"): NamedSubscription("sub_a", "cus_alice")})
        assert prepared.payload_hashes == [content_digest(named, "cus_alice")]
