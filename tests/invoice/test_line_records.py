"""The usage records behind an invoice line (ListInvoiceLineRecords), read from ingest."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal as D

import grpc
import pytest

from tally.grpc_errors import error_info, field_violations
from tally_gen.common.v1 import common_pb2
from tally_gen.ingest.v1 import ingest_pb2
from tally_gen.invoice.v1 import invoice_pb2 as ipb
from tests.harness import unique
from tests.invoice.helpers import midnight_days_ago, money, per_unit, ts

pytestmark = pytest.mark.e2e
GRACE = timedelta(hours=1)


async def record(stubs, customer_id: str, meter_key: str, quantity: str, when: datetime, **fields) -> str:
    key = unique("rec")
    await stubs.ingest.RecordUsage(
        ingest_pb2.RecordUsageRequest(
            idempotency_key=key,
            customer=common_pb2.CustomerRef(id=customer_id),
            meter_key=meter_key,
            quantity=common_pb2.Decimal(value=quantity),
            timestamp=ts(when),
            **fields,
        ),
        timeout=10,
    )
    return key


async def expect_error(call, code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        assert error.code() == code, f"{error.code()} {error.details()}"
        return error
    raise AssertionError(f"expected {code}, the call succeeded")


@pytest.fixture
async def billed_day(stubs):
    """A daily plan ($2 a day and $0.10 a unit) billed for the day before yesterday.

    Usage records: three in the billed day (4.5 + 10 + 0.25 units, one with a memo), one the day
    after (not behind the line), and an event of 100 units in the billed day (events are not
    usage records, so it is priced but not listed).
    """
    event_type, meter_key, plan_key = await stubs.meter_with_plan(per_unit("0.10"), fee="2.00")
    customer = await stubs.customer()
    day = midnight_days_ago(2)
    subscription = await stubs.subscribe(customer, plan_key, day)
    keys = [
        await record(stubs, customer, meter_key, "4.5", day + timedelta(hours=1), memo="switch export, morning"),
        await record(stubs, customer, meter_key, "10", day + timedelta(hours=2)),
        await record(stubs, customer, meter_key, "0.25", day + timedelta(hours=23, minutes=59)),
    ]
    await record(stubs, customer, meter_key, "7", day + timedelta(days=1))
    await stubs.send(customer, event_type, [(day + timedelta(hours=3), {"units": "100"})])
    await stubs.wait_applied()
    await stubs.close(day + timedelta(days=1) + GRACE, subscription)
    invoice = (await stubs.invoices_of(subscription))[0]
    return invoice, keys, meter_key, day


def line_of(invoice: ipb.Invoice, kind: int) -> ipb.InvoiceLine:
    (line,) = [line for line in invoice.lines if line.kind == kind]
    return line


class TestListInvoiceLineRecords:
    async def test_the_records_behind_a_usage_line_come_in_pages_with_their_memo(self, stubs, billed_day):
        invoice, keys, meter_key, day = billed_day
        usage_line = line_of(invoice, ipb.LINE_KIND_USAGE)
        # 4.5 + 10 + 0.25 recorded and 100 sent as an event: 114.75 units at $0.10 = $11.475 -> $11.48.
        assert money(usage_line.quantity) == D("114.75") and money(usage_line.amount) == D("11.48")
        pages, token = [], ""
        while True:
            reply = await stubs.invoice.ListInvoiceLineRecords(
                ipb.ListInvoiceLineRecordsRequest(invoice_id=invoice.id, line_id=usage_line.id, page_size=2, page_token=token),
                timeout=10,
            )
            pages.append(list(reply.usage_records))
            token = reply.next_page_token
            if not token:
                break
        assert [len(page) for page in pages] == [2, 1]
        found = [r for page in pages for r in page]
        assert [r.idempotency_key for r in found] == keys
        assert [r.quantity.value for r in found] == ["4.5", "10", "0.25"]
        assert found[0].memo == "switch export, morning"
        assert {r.meter_key for r in found} == {meter_key} and {r.customer_id for r in found} == {invoice.customer_id}
        assert reply.period.start.ToDatetime() == day.replace(tzinfo=None)
        assert reply.period.end.ToDatetime() == (day + timedelta(days=1)).replace(tzinfo=None)

    async def test_an_invoice_is_named_by_its_number_too(self, stubs, billed_day):
        invoice, keys, _, _ = billed_day
        if not invoice.number:
            invoice = (await stubs.invoice.FinalizeInvoice(ipb.FinalizeInvoiceRequest(id=invoice.id), timeout=30)).invoice
        usage_line = line_of(invoice, ipb.LINE_KIND_USAGE)
        reply = await stubs.invoice.ListInvoiceLineRecords(
            ipb.ListInvoiceLineRecordsRequest(invoice_number=invoice.number, line_id=usage_line.id), timeout=10
        )
        assert [r.idempotency_key for r in reply.usage_records] == keys

    async def test_a_fixed_fee_line_is_invalid_naming_the_line(self, stubs, billed_day):
        invoice, *_ = billed_day
        fee_line = line_of(invoice, ipb.LINE_KIND_FIXED_FEE)
        error = await expect_error(
            stubs.invoice.ListInvoiceLineRecords(
                ipb.ListInvoiceLineRecordsRequest(invoice_id=invoice.id, line_id=fee_line.id), timeout=10
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert [field for field, _ in field_violations(error)] == ["line_id"]

    async def test_an_unknown_line_or_invoice_is_not_found(self, stubs, billed_day):
        invoice, *_ = billed_day
        error = await expect_error(
            stubs.invoice.ListInvoiceLineRecords(
                ipb.ListInvoiceLineRecordsRequest(invoice_id=invoice.id, line_id=f"{invoice.id}-99"), timeout=10
            ),
            grpc.StatusCode.NOT_FOUND,
        )
        assert error_info(error).reason == "INVOICE_LINE_NOT_FOUND"
        await expect_error(
            stubs.invoice.ListInvoiceLineRecords(
                ipb.ListInvoiceLineRecordsRequest(invoice_number="INV-1999-000001", line_id="x-1"), timeout=10
            ),
            grpc.StatusCode.NOT_FOUND,
        )

    @pytest.mark.parametrize(
        ("fields", "field"),
        [
            ({"invoice_id": "inv\x00"}, "invoice_id"),
            ({"invoice_number": "INV-" + "9" * 300}, "invoice_number"),
            ({}, "invoice"),
        ],
    )
    async def test_a_missing_or_malformed_invoice_is_invalid(self, stubs, fields, field):
        error = await expect_error(
            stubs.invoice.ListInvoiceLineRecords(ipb.ListInvoiceLineRecordsRequest(line_id="x-1", **fields), timeout=10),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert [f for f, _ in field_violations(error)] == [field]

    @pytest.mark.parametrize("line_id", ["", "  ", "a\x00b", "x" * 256])
    async def test_a_missing_or_malformed_line_id_is_invalid(self, stubs, billed_day, line_id):
        invoice, *_ = billed_day
        error = await expect_error(
            stubs.invoice.ListInvoiceLineRecords(
                ipb.ListInvoiceLineRecordsRequest(invoice_id=invoice.id, line_id=line_id), timeout=10
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert [field for field, _ in field_violations(error)] == ["line_id"]

    async def test_a_page_token_of_another_line_or_a_bad_page_size_is_invalid(self, stubs, billed_day):
        invoice, *_ = billed_day
        usage_line = line_of(invoice, ipb.LINE_KIND_USAGE)
        first = await stubs.invoice.ListInvoiceLineRecords(
            ipb.ListInvoiceLineRecordsRequest(invoice_id=invoice.id, line_id=usage_line.id, page_size=1), timeout=10
        )
        assert first.next_page_token
        fee_line = line_of(invoice, ipb.LINE_KIND_FIXED_FEE)
        for request in (
            ipb.ListInvoiceLineRecordsRequest(invoice_id=invoice.id, line_id=fee_line.id, page_token=first.next_page_token),
            ipb.ListInvoiceLineRecordsRequest(invoice_id=invoice.id, line_id=usage_line.id, page_token="forged"),
            ipb.ListInvoiceLineRecordsRequest(invoice_id=invoice.id, line_id=usage_line.id, page_size=-1),
        ):
            error = await expect_error(stubs.invoice.ListInvoiceLineRecords(request, timeout=10), grpc.StatusCode.INVALID_ARGUMENT)
            assert len(field_violations(error)) == 1

    async def test_a_token_whose_inner_ingest_token_is_forged_is_invalid_not_unavailable(self, stubs, billed_day):
        from tally.pagination import encode_page_token

        invoice, *_ = billed_day
        usage_line = line_of(invoice, ipb.LINE_KIND_USAGE)
        forged = encode_page_token({"i": invoice.id, "l": usage_line.id, "t": "not-an-ingest-token"}, kind="invoice_line_records")
        error = await expect_error(
            stubs.invoice.ListInvoiceLineRecords(
                ipb.ListInvoiceLineRecordsRequest(invoice_id=invoice.id, line_id=usage_line.id, page_token=forged), timeout=10
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert [f for f, _ in field_violations(error)] == ["page_token"]


class TestLinesOfDimensionPrices:
    async def test_each_line_lists_only_the_records_its_price_took(self, stubs):
        from tally_gen.catalog.v1 import catalog_pb2 as cpb

        fields = {"dimension_prices": [
            cpb.DimensionPrice(match={"region": "eu"}, price=per_unit("0.10")),
            cpb.DimensionPrice(match={"tier": "gold"}, price=per_unit("0.05")),
        ]}
        _, meter_key, plan_key = await stubs.meter_with_plan(per_unit("0.01"), usage_fields=fields, group_by=["region", "tier"])
        customer = await stubs.customer()
        day = midnight_days_ago(2)
        subscription = await stubs.subscribe(customer, plan_key, day)
        eu_gold = await record(stubs, customer, meter_key, "10", day + timedelta(hours=1),
                               dimensions={"region": "eu", "tier": "gold"})  # first match wins: eu
        us_gold = await record(stubs, customer, meter_key, "20", day + timedelta(hours=2),
                               dimensions={"region": "us", "tier": "gold"})
        us = await record(stubs, customer, meter_key, "100", day + timedelta(hours=3), dimensions={"region": "us"})
        bare = await record(stubs, customer, meter_key, "5", day + timedelta(hours=4))
        await stubs.wait_applied()
        await stubs.close(day + timedelta(days=1) + GRACE, subscription)
        invoice = (await stubs.invoices_of(subscription))[0]
        # eu: 10 x 0.10 = 1.00; gold (not eu): 20 x 0.05 = 1.00; the rest: 105 x 0.01 = 1.05.
        by_dims = {tuple(sorted(line.dimensions.items())): line for line in invoice.lines}
        assert {dims: money(line.amount) for dims, line in by_dims.items()} == {
            (("region", "eu"),): D("1.00"), (("tier", "gold"),): D("1.00"), (): D("1.05"),
        }

        async def keys_behind(line: ipb.InvoiceLine) -> list[str]:
            reply = await stubs.invoice.ListInvoiceLineRecords(
                ipb.ListInvoiceLineRecordsRequest(invoice_id=invoice.id, line_id=line.id), timeout=10
            )
            return [r.idempotency_key for r in reply.usage_records]

        assert await keys_behind(by_dims[(("region", "eu"),)]) == [eu_gold]
        assert await keys_behind(by_dims[(("tier", "gold"),)]) == [us_gold]
        assert await keys_behind(by_dims[()]) == [us, bare]

    async def test_a_price_point_line_lists_its_records_and_the_default_line_the_rest(self, stubs):
        from tally_gen.catalog.v1 import catalog_pb2 as cpb

        points = {"price_points": [cpb.PricePoint(key="premium", name="Premium route", price=per_unit("0.09"))]}
        _, meter_key, plan_key = await stubs.meter_with_plan(per_unit("0.05"), usage_fields=points)
        customer = await stubs.customer()
        day = midnight_days_ago(2)
        subscription = await stubs.subscribe(customer, plan_key, day)
        premium = await record(stubs, customer, meter_key, "100", day + timedelta(hours=1), price_point="premium")
        plain = await record(stubs, customer, meter_key, "40", day + timedelta(hours=2))
        await stubs.wait_applied()
        await stubs.close(day + timedelta(days=1) + GRACE, subscription)
        invoice = (await stubs.invoices_of(subscription))[0]
        # premium: 100 x 0.09 = 9.00; the rest: 40 x 0.05 = 2.00.
        by_point = {line.price_point: line for line in invoice.lines}
        assert {key: money(line.amount) for key, line in by_point.items()} == {"premium": D("9.00"), "": D("2.00")}
        records = {}
        for key, line in by_point.items():
            reply = await stubs.invoice.ListInvoiceLineRecords(
                ipb.ListInvoiceLineRecordsRequest(invoice_id=invoice.id, line_id=line.id), timeout=10
            )
            records[key] = [r.idempotency_key for r in reply.usage_records]
        assert records == {"premium": [premium], "": [plain]}
        got = (await stubs.ingest.GetUsageRecord(ingest_pb2.GetUsageRecordRequest(idempotency_key=premium), timeout=10))
        assert (got.usage_record.price_point, dict(got.usage_record.dimensions)) == ("premium", {})


class TestLinesOfAttributedUsage:
    async def test_each_subscription_lists_its_own_records_and_the_sole_one_the_unattributed_too(self, stubs):
        _, meter_key, plan_key = await stubs.meter_with_plan(per_unit("0.10"))
        customer = await stubs.customer()
        day = midnight_days_ago(2)
        # Recorded before the customer had any subscription: unattributed.
        early = await record(stubs, customer, meter_key, "3", day + timedelta(hours=1))
        first = await stubs.subscribe(customer, plan_key, day)
        mine = await record(stubs, customer, meter_key, "5", day + timedelta(hours=2),
                            subscription=common_pb2.SubscriptionRef(id=first))
        await stubs.wait_applied()
        await stubs.close(day + timedelta(days=1) + GRACE, first)
        invoice = (await stubs.invoices_of(first))[0]
        usage_line = line_of(invoice, ipb.LINE_KIND_USAGE)
        # The sole subscription on the meter bills the unattributed 3 too: 8 x 0.10 = 0.80.
        assert money(usage_line.amount) == D("0.80")
        reply = await stubs.invoice.ListInvoiceLineRecords(
            ipb.ListInvoiceLineRecordsRequest(invoice_id=invoice.id, line_id=usage_line.id), timeout=10
        )
        assert [(r.idempotency_key, r.subscription_id) for r in reply.usage_records] == [(early, ""), (mine, first)]

    async def test_two_subscriptions_on_one_meter_each_list_only_their_own_records(self, stubs):
        _, meter_key, plan_key = await stubs.meter_with_plan(per_unit("0.10"))
        customer = await stubs.customer()
        day = midnight_days_ago(2)
        first = await stubs.subscribe(customer, plan_key, day)
        second = await stubs.subscribe(customer, plan_key, day)
        for_first = await record(stubs, customer, meter_key, "5", day + timedelta(hours=2),
                                 subscription=common_pb2.SubscriptionRef(id=first))
        for_second = await record(stubs, customer, meter_key, "7", day + timedelta(hours=3),
                                  subscription=common_pb2.SubscriptionRef(id=second))
        await stubs.wait_applied()
        await stubs.close(day + timedelta(days=1) + GRACE, first, second)
        listed = {}
        for subscription, amount in ((first, D("0.50")), (second, D("0.70"))):
            invoice = (await stubs.invoices_of(subscription))[0]
            usage_line = line_of(invoice, ipb.LINE_KIND_USAGE)
            assert money(usage_line.amount) == amount
            reply = await stubs.invoice.ListInvoiceLineRecords(
                ipb.ListInvoiceLineRecordsRequest(invoice_id=invoice.id, line_id=usage_line.id), timeout=10
            )
            listed[subscription] = [r.idempotency_key for r in reply.usage_records]
        assert listed == {first: [for_first], second: [for_second]}
