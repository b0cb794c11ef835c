"""Usage records are readable (GetUsageRecord, ListUsageRecords) and carry only declared dimensions."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest

from services.ingest.domain.usage import dimension_violations
from tally.grpc_errors import error_info
from tally_gen.common.v1 import common_pb2
from tally_gen.ingest.v1 import ingest_pb2
from tests.harness import unique
from tests.ingest.helpers import expect_error, now, ts, violations

pytestmark = pytest.mark.timeout(60)
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND


def record(customer, meter_key: str, quantity: str = "1", **fields) -> ingest_pb2.RecordUsageRequest:
    return ingest_pb2.RecordUsageRequest(
        idempotency_key=fields.pop("key", unique("u")),
        customer=common_pb2.CustomerRef(external_id=customer.external_id),
        meter_key=meter_key,
        quantity=common_pb2.Decimal(value=quantity),
        **fields,
    )


def hour(n: int) -> dt.datetime:
    """n hours after a fixed instant two days ago (whole seconds, so values compare exactly)."""
    base = now().replace(minute=0, second=0, microsecond=0) - dt.timedelta(days=2)
    return base + dt.timedelta(hours=n)


@pytest.fixture
async def regional(ingest_stack):
    """A customer and a meter that declares the dimensions region and model."""
    customer = await ingest_stack.customer()
    meter = await ingest_stack.meter(unique("tokens"), group_by=("region", "model"))
    return customer, meter


async def get_by_key(ingest_stack, key: str) -> ingest_pb2.UsageRecord:
    reply = await ingest_stack.ingest.GetUsageRecord(ingest_pb2.GetUsageRecordRequest(idempotency_key=key))
    return reply.usage_record


async def list_all(ingest_stack, request: ingest_pb2.ListUsageRecordsRequest) -> list[ingest_pb2.UsageRecord]:
    found, token = [], ""
    for _ in range(100):
        request.page_token = token
        reply = await ingest_stack.ingest.ListUsageRecords(request)
        found.extend(reply.usage_records)
        token = reply.next_page_token
        if not token:
            return found
    raise AssertionError("pages never ended")


class TestUndeclaredDimensions:
    async def test_a_dimension_the_meter_does_not_declare_is_refused_naming_it(self, ingest_stack, regional):
        customer, meter = regional
        request = record(customer, meter.key, timestamp=ts(hour(1)), dimensions={"bogus": "x"})
        error = await expect_error(ingest_stack.ingest.RecordUsage(request), INVALID)
        assert violations(error) == [
            ("dimensions.bogus", f"meter {meter.key!r} does not declare dimension 'bogus' (its dimensions: model, region)")
        ]
        await expect_error(get_by_key(ingest_stack, request.idempotency_key), NOT_FOUND)

    async def test_a_meter_without_dimensions_refuses_every_dimension(self, ingest_stack):
        customer = await ingest_stack.customer()
        meter = await ingest_stack.meter(unique("calls"))
        request = record(customer, meter.key, dimensions={"region": "eu"})
        error = await expect_error(ingest_stack.ingest.RecordUsage(request), INVALID)
        assert violations(error) == [("dimensions.region", f"meter {meter.key!r} does not declare dimension 'region' (its dimensions: none)")]

    async def test_each_undeclared_dimension_is_named_with_the_other_problems(self, ingest_stack, regional):
        customer, meter = regional
        request = record(customer, meter.key, "-1", dimensions={"zeta": "1", "bogus": "x", "region": "eu"})
        error = await expect_error(ingest_stack.ingest.RecordUsage(request), INVALID)
        assert [field for field, _ in violations(error)] == ["quantity", "dimensions.bogus", "dimensions.zeta"]
        assert error_info(error) is None or error_info(error).reason != "UNKNOWN"

    async def test_declared_dimensions_are_stored_and_an_omitted_one_is_fine(self, ingest_stack, regional):
        customer, meter = regional
        request = record(customer, meter.key, timestamp=ts(hour(1)), dimensions={"region": "eu"})
        await ingest_stack.ingest.RecordUsage(request)
        assert dict((await get_by_key(ingest_stack, request.idempotency_key)).dimensions) == {"region": "eu"}

    def test_a_reserved_dimension_is_refused_as_reserved_even_when_the_meter_is_unknown(self):
        [reserved] = dimension_violations(["tally:price_point"], ["region"], meter_key="m")
        assert (reserved.field, reserved.reason) == ("dimensions.tally:price_point", "RESERVED_DIMENSION")
        [unknown_meter] = dimension_violations(["tally:price_point", "bogus"], None, meter_key="nometer")
        assert unknown_meter.reason == "RESERVED_DIMENSION"
        [undeclared] = dimension_violations(["price_point"], ["region"], meter_key="m", reserved=())
        assert (undeclared.field, undeclared.reason) == ("dimensions.price_point", "DIMENSION_UNDECLARED")


class TestGetUsageRecord:
    async def test_a_range_record_reads_back_with_memo_quantity_range_customer_meter_and_dimensions(
        self, ingest_stack, regional
    ):
        customer, meter = regional
        request = record(
            customer,
            meter.key,
            "10.50",
            memo="22 minutes on the 15th, from the switch export",
            range=common_pb2.TimeRange(start=ts(hour(0)), end=ts(hour(24))),
            dimensions={"region": "eu", "model": "large"},
        )
        recorded = await ingest_stack.ingest.RecordUsage(request)
        got = await get_by_key(ingest_stack, request.idempotency_key)
        assert got.usage_record_id == recorded.usage_record_id
        assert got.idempotency_key == request.idempotency_key
        assert got.quantity.value == "10.50"
        assert got.memo == "22 minutes on the 15th, from the switch export"
        assert got.customer_id == customer.id and got.meter_key == meter.key
        assert got.timestamp.ToDatetime(dt.timezone.utc) == hour(0)
        assert got.range.start.ToDatetime(dt.timezone.utc) == hour(0)
        assert got.range.end.ToDatetime(dt.timezone.utc) == hour(24)
        assert dict(got.dimensions) == {"region": "eu", "model": "large"}
        assert abs(got.ingest_time.ToDatetime(dt.timezone.utc) - now()) < dt.timedelta(minutes=1)

    async def test_a_record_reads_back_by_its_id(self, ingest_stack, regional):
        customer, meter = regional
        request = record(customer, meter.key, "0.000000000001", timestamp=ts(hour(3)))
        recorded = await ingest_stack.ingest.RecordUsage(request)
        reply = await ingest_stack.ingest.GetUsageRecord(
            ingest_pb2.GetUsageRecordRequest(usage_record_id=recorded.usage_record_id)
        )
        got = reply.usage_record
        assert got.idempotency_key == request.idempotency_key and got.quantity.value == "0.000000000001"
        assert got.timestamp.ToDatetime(dt.timezone.utc) == hour(3)
        assert not got.HasField("range") and got.memo == ""

    async def test_a_record_sent_without_a_key_reads_back_by_the_key_it_was_given(self, ingest_stack, regional):
        customer, meter = regional
        recorded = await ingest_stack.ingest.RecordUsage(record(customer, meter.key, "7", key="", timestamp=ts(hour(5))))
        got = await get_by_key(ingest_stack, recorded.idempotency_key)
        assert got.usage_record_id == recorded.usage_record_id and got.quantity.value == "7"

    async def test_an_unknown_key_or_id_is_not_found(self, ingest_stack):
        error = await expect_error(get_by_key(ingest_stack, unique("nothing")), NOT_FOUND)
        assert error_info(error).reason == "USAGE_RECORD_NOT_FOUND"
        await expect_error(
            ingest_stack.ingest.GetUsageRecord(
                ingest_pb2.GetUsageRecordRequest(usage_record_id="00000000-0000-4000-8000-000000000000")
            ),
            NOT_FOUND,
        )

    @pytest.mark.parametrize(
        ("request_fields", "field"),
        [
            ({}, "idempotency_key"),
            ({"idempotency_key": "   "}, "idempotency_key"),
            ({"idempotency_key": "k\x00ey"}, "idempotency_key"),
            ({"idempotency_key": "k" * 256}, "idempotency_key"),
            ({"usage_record_id": "not-a-uuid"}, "usage_record_id"),
            ({"usage_record_id": "1; DROP TABLE ingest.usage_records"}, "usage_record_id"),
        ],
    )
    async def test_a_bad_reference_is_invalid_naming_the_field(self, ingest_stack, request_fields, field):
        error = await expect_error(ingest_stack.ingest.GetUsageRecord(ingest_pb2.GetUsageRecordRequest(**request_fields)), INVALID)
        assert [f for f, _ in violations(error)] == [field]

    async def test_get_event_on_a_usage_record_key_is_not_found_and_names_the_usage_record(self, ingest_stack, regional):
        customer, meter = regional
        request = record(customer, meter.key, "3", memo="written, then read")
        recorded = await ingest_stack.ingest.RecordUsage(request)
        error = await expect_error(
            ingest_stack.ingest.GetEvent(ingest_pb2.GetEventRequest(idempotency_key=request.idempotency_key)), NOT_FOUND
        )
        info = error_info(error)
        assert info.reason == "USAGE_RECORD_KEY"
        assert info.metadata["usage_record_id"] == recorded.usage_record_id
        assert "GetUsageRecord" in error.details()


class TestListUsageRecords:
    async def test_records_come_by_instant_in_pages_of_the_requested_size(self, ingest_stack, regional):
        customer, meter = regional
        keys = []
        # Sent out of order; two share an instant (ordered by id then).
        for n in (4, 1, 3, 1, 2):
            request = record(customer, meter.key, f"{n}.0", timestamp=ts(hour(n)))
            await ingest_stack.ingest.RecordUsage(request)
            keys.append(request.idempotency_key)
        pages = []
        token = ""
        while True:
            reply = await ingest_stack.ingest.ListUsageRecords(
                ingest_pb2.ListUsageRecordsRequest(
                    customer=common_pb2.CustomerRef(external_id=customer.external_id), page_size=2, page_token=token
                )
            )
            pages.append(list(reply.usage_records))
            token = reply.next_page_token
            if not token:
                break
        assert [len(page) for page in pages] == [2, 2, 1]
        found = [r for page in pages for r in page]
        assert sorted(r.idempotency_key for r in found) == sorted(keys)
        assert [r.timestamp.ToDatetime(dt.timezone.utc) for r in found] == [hour(n) for n in (1, 1, 2, 3, 4)]
        assert [r.quantity.value for r in found][2:] == ["2.0", "3.0", "4.0"]
        tied = [r.usage_record_id for r in found[:2]]
        assert tied == sorted(tied)

    async def test_meter_range_and_dimension_filters_narrow_the_list(self, ingest_stack, regional):
        customer, meter = regional
        other_meter = await ingest_stack.meter(unique("other"), group_by=("region",))
        wanted = []
        for n, region, meter_key in [
            (0, "eu", meter.key),  # at the range start: in
            (5, "eu", meter.key),
            (5, "us", meter.key),  # other region: out
            (6, "eu", other_meter.key),  # other meter: out
            (10, "eu", meter.key),  # at the range end: out
        ]:
            request = record(customer, meter_key, "1", timestamp=ts(hour(n)), dimensions={"region": region})
            await ingest_stack.ingest.RecordUsage(request)
            if meter_key == meter.key and region == "eu" and n < 10:
                wanted.append(request.idempotency_key)
        found = await list_all(
            ingest_stack,
            ingest_pb2.ListUsageRecordsRequest(
                customer=common_pb2.CustomerRef(id=customer.id),
                meter_key=meter.key,
                range=common_pb2.TimeRange(start=ts(hour(0)), end=ts(hour(10))),
                dimensions={"region": "eu"},
                page_size=1,
            ),
        )
        assert [r.idempotency_key for r in found] == wanted
        everything = await list_all(
            ingest_stack, ingest_pb2.ListUsageRecordsRequest(customer=common_pb2.CustomerRef(id=customer.id))
        )
        assert len(everything) == 5

    async def test_a_missing_dimension_counts_as_empty_and_matches_can_be_excluded(self, ingest_stack, regional):
        customer, meter = regional
        keys = {}
        for name, dims in [
            ("eu_large", {"region": "eu", "model": "large"}),
            ("eu_small", {"region": "eu", "model": "small"}),
            ("us_large", {"region": "us", "model": "large"}),
            ("no_region", {"model": "large"}),
            ("empty_region", {"region": "", "model": "small"}),
        ]:
            request = record(customer, meter.key, timestamp=ts(hour(1)), dimensions=dims)
            await ingest_stack.ingest.RecordUsage(request)
            keys[request.idempotency_key] = name
        ref = common_pb2.CustomerRef(id=customer.id)

        async def names(**fields) -> set[str]:
            found = await list_all(ingest_stack, ingest_pb2.ListUsageRecordsRequest(customer=ref, meter_key=meter.key, **fields))
            return {keys[r.idempotency_key] for r in found}

        assert await names(dimensions={"region": ""}) == {"no_region", "empty_region"}
        assert await names(dimensions={"region": "eu"}) == {"eu_large", "eu_small"}
        # As an invoice line at the default price asks: neither region=eu nor model=large.
        rest = [ingest_pb2.DimensionMatch(dimensions={"region": "eu"}), ingest_pb2.DimensionMatch(dimensions={"model": "large"})]
        assert await names(exclude_dimensions=rest) == {"empty_region"}
        # As the line of a second dimension price asks: model=large, but not what region=eu took.
        assert await names(dimensions={"model": "large"}, exclude_dimensions=rest[:1]) == {"us_large", "no_region"}

    async def test_a_customer_without_records_gets_an_empty_page(self, ingest_stack, regional):
        _, meter = regional
        customer = await ingest_stack.customer()
        reply = await ingest_stack.ingest.ListUsageRecords(
            ingest_pb2.ListUsageRecordsRequest(customer=common_pb2.CustomerRef(id=customer.id), meter_key=meter.key)
        )
        assert list(reply.usage_records) == [] and reply.next_page_token == ""

    async def test_a_page_token_is_refused_with_other_filters(self, ingest_stack, regional):
        customer, meter = regional
        for n in (1, 2):
            await ingest_stack.ingest.RecordUsage(record(customer, meter.key, timestamp=ts(hour(n))))
        ref = common_pb2.CustomerRef(id=customer.id)
        first = await ingest_stack.ingest.ListUsageRecords(ingest_pb2.ListUsageRecordsRequest(customer=ref, page_size=1))
        assert first.next_page_token
        error = await expect_error(
            ingest_stack.ingest.ListUsageRecords(
                ingest_pb2.ListUsageRecordsRequest(
                    customer=ref, meter_key=meter.key, page_size=1, page_token=first.next_page_token
                )
            ),
            INVALID,
        )
        assert [f for f, _ in violations(error)] == ["page_token"]
        error = await expect_error(
            ingest_stack.ingest.ListUsageRecords(
                ingest_pb2.ListUsageRecordsRequest(customer=ref, page_token=first.next_page_token[:-2] + "xx")
            ),
            INVALID,
        )
        assert [f for f, _ in violations(error)] == ["page_token"]

    async def test_an_unknown_customer_or_meter_is_not_found_not_an_empty_page(self, ingest_stack, regional):
        customer, _ = regional
        error = await expect_error(
            ingest_stack.ingest.ListUsageRecords(
                ingest_pb2.ListUsageRecordsRequest(customer=common_pb2.CustomerRef(external_id=unique("ghost")))
            ),
            NOT_FOUND,
        )
        assert error_info(error).reason == "CUSTOMER_NOT_FOUND"
        error = await expect_error(
            ingest_stack.ingest.ListUsageRecords(
                ingest_pb2.ListUsageRecordsRequest(
                    customer=common_pb2.CustomerRef(id=customer.id), meter_key=unique("nometer")
                )
            ),
            NOT_FOUND,
        )
        assert error_info(error).reason == "METER_NOT_FOUND"

    @pytest.mark.parametrize(
        ("request_fields", "fields"),
        [
            ({}, ["customer"]),
            ({"customer": common_pb2.CustomerRef(external_id="a\x00b")}, ["customer"]),
            ({"customer": common_pb2.CustomerRef(external_id="x" * 256)}, ["customer"]),
            ({"meter_key": "m\x00"}, ["meter_key"]),
            ({"meter_key": "m" * 256}, ["meter_key"]),
            ({"page_size": -1}, ["page_size"]),
            ({"dimensions": {f"d{i}": "v" for i in range(17)}}, ["dimensions"]),
            ({"dimensions": {"region": "v" * 8193}}, ["dimensions.region"]),
            ({"dimensions": {"region": "e\x00u"}}, ["dimensions.region"]),
            ({"dimensions": {"n" * 256: "v"}}, ["dimensions"]),
            ({"dimensions": {"": "v"}}, ["dimensions"]),
            ({"page_token": "not a token"}, ["page_token"]),
            ({"exclude_dimensions": [{}]}, ["exclude_dimensions[0].dimensions"]),
            ({"exclude_dimensions": [{"region": "eu"}] * 17}, ["exclude_dimensions"]),
            ({"exclude_dimensions": [{f"d{i}": "v" for i in range(17)}]}, ["exclude_dimensions[0].dimensions"]),
            ({"exclude_dimensions": [{"region": "eu"}, {"": "x"}]}, ["exclude_dimensions[1].dimensions"]),
        ],
    )
    async def test_a_bad_request_is_invalid_naming_the_field(self, ingest_stack, regional, request_fields, fields):
        customer, _ = regional
        request = ingest_pb2.ListUsageRecordsRequest(customer=common_pb2.CustomerRef(id=customer.id))
        if "customer" in request_fields or not request_fields:
            request.ClearField("customer")
        for name, value in request_fields.items():
            if name == "customer":
                request.customer.CopyFrom(value)
            elif name == "dimensions":
                request.dimensions.update(value)
            elif name == "exclude_dimensions":
                request.exclude_dimensions.extend(ingest_pb2.DimensionMatch(dimensions=match) for match in value)
            else:
                setattr(request, name, value)
        error = await expect_error(ingest_stack.ingest.ListUsageRecords(request), INVALID)
        assert [f for f, _ in violations(error)] == fields

    async def test_an_empty_or_reversed_range_is_invalid(self, ingest_stack, regional):
        customer, _ = regional
        for start, end in ((hour(2), hour(2)), (hour(3), hour(2))):
            error = await expect_error(
                ingest_stack.ingest.ListUsageRecords(
                    ingest_pb2.ListUsageRecordsRequest(
                        customer=common_pb2.CustomerRef(id=customer.id),
                        range=common_pb2.TimeRange(start=ts(start), end=ts(end)),
                    )
                ),
                INVALID,
            )
            assert [f for f, _ in violations(error)] == ["range.end"]

    @pytest.mark.parametrize("state", [{"t": 10**30, "i": "00000000-0000-4000-8000-000000000000"}, {"t": 0, "i": "x'; --"}])
    async def test_a_forged_token_with_the_right_filters_is_still_invalid(self, ingest_stack, regional, state):
        from services.ingest.domain.events import CustomerRef
        from services.ingest.domain.usage import UsageRecordQuery
        from tally.pagination import encode_page_token

        customer, _ = regional
        fingerprint = UsageRecordQuery(CustomerRef(id=customer.id)).fingerprint()
        token = encode_page_token({"f": fingerprint, **state}, kind="usage_records")
        error = await expect_error(
            ingest_stack.ingest.ListUsageRecords(
                ingest_pb2.ListUsageRecordsRequest(customer=common_pb2.CustomerRef(id=customer.id), page_token=token)
            ),
            INVALID,
        )
        assert [f for f, _ in violations(error)] == ["page_token"]


class TestListUsageRecordsBySubscription:
    async def test_records_are_listed_by_whose_they_are(self, ingest_stack):
        from tests.ingest.test_send import subscribed_customer

        customer, subscription_id, meter_key = await subscribed_customer(ingest_stack, unique("t"))
        # Before the subscription started (an hour ago): unattributed; after: attributed to it.
        before = record(customer, meter_key, "2", timestamp=ts(now() - dt.timedelta(hours=3)))
        after = record(customer, meter_key, "3", timestamp=ts(now() - dt.timedelta(minutes=5)))
        for request in (before, after):
            await ingest_stack.ingest.RecordUsage(request)
        got = await get_by_key(ingest_stack, after.idempotency_key)
        assert got.subscription_id == subscription_id
        ref = common_pb2.CustomerRef(id=customer.id)

        async def keys(**fields) -> list[str]:
            found = await list_all(ingest_stack, ingest_pb2.ListUsageRecordsRequest(customer=ref, **fields))
            return [r.idempotency_key for r in found]

        by_id = common_pb2.SubscriptionRef(id=subscription_id)
        assert await keys() == [before.idempotency_key, after.idempotency_key]
        assert await keys(subscription=by_id) == [after.idempotency_key]
        assert await keys(subscription=by_id, include_unattributed=True) == [before.idempotency_key, after.idempotency_key]
        assert await keys(only_unattributed=True) == [before.idempotency_key]

    async def test_an_unknown_or_foreign_subscription_is_not_found_and_contradictions_invalid(self, ingest_stack):
        from tests.ingest.test_send import subscribed_customer

        customer, subscription_id, _ = await subscribed_customer(ingest_stack, unique("t"))
        stranger = await ingest_stack.customer()
        for who, sub in ((customer, unique("nosub")), (stranger, subscription_id)):
            await expect_error(
                ingest_stack.ingest.ListUsageRecords(ingest_pb2.ListUsageRecordsRequest(
                    customer=common_pb2.CustomerRef(id=who.id), subscription=common_pb2.SubscriptionRef(id=sub))),
                NOT_FOUND,
            )
        ref = common_pb2.CustomerRef(id=customer.id)
        for fields, field in (
            ({"subscription": common_pb2.SubscriptionRef(id=subscription_id), "only_unattributed": True}, "only_unattributed"),
            ({"include_unattributed": True}, "include_unattributed"),
            ({"subscription": common_pb2.SubscriptionRef(external_id="x\x00")}, "subscription"),
        ):
            error = await expect_error(
                ingest_stack.ingest.ListUsageRecords(ingest_pb2.ListUsageRecordsRequest(customer=ref, **fields)), INVALID
            )
            assert [f for f, _ in violations(error)] == [field]
