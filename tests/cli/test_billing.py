"""Running billing from the CLI: `tally invoices close|upcoming|finalize|void|mark-paid`,
`tally subscriptions cancel|change-plan`, invoice tables and the tier breakdown, usage records."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import grpc
import pytest

from tally_gen.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from tally_gen.common.v1 import common_pb2
from tally_gen.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from tally_gen.meter.v1 import meter_pb2, meter_pb2_grpc
from tests.harness import unique

UTC = timezone.utc
TIERS = [
    catalog_pb2.Tier(up_to=common_pb2.Decimal(value="1000"), unit_price=common_pb2.Decimal(value="0.10")),
    catalog_pb2.Tier(up_to=common_pb2.Decimal(value="10000"), unit_price=common_pb2.Decimal(value="0.08")),
    catalog_pb2.Tier(unit_price=common_pb2.Decimal(value="0.05")),
]


def midnight_days_ago(days: int) -> datetime:
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days)


def iso(instant: datetime) -> str:
    return instant.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class DailyPlan:
    """A SUM meter on `minutes` and a daily plan: $2.00 a day in arrears plus graduated tiers."""

    meter_key: str
    event_type: str
    plan_key: str
    other_plan_key: str


@pytest.fixture
def daily_plan(services) -> DailyPlan:
    meter_key, event_type = unique("minutes"), unique("call")
    plan_key, other_plan_key = unique("tiered"), unique("flat")
    with grpc.insecure_channel(services.address("catalog")) as channel:
        catalog = catalog_pb2_grpc.CatalogServiceStub(channel)
        catalog.CreateMeter(catalog_pb2.CreateMeterRequest(meter=catalog_pb2.Meter(
            key=meter_key, name="Minutes", unit="minutes", event_type=event_type,
            aggregation=catalog_pb2.AGGREGATION_SUM, value_property="minutes", group_by=["region"])), timeout=10)
        for key, price in (
            (plan_key, catalog_pb2.Price(model=catalog_pb2.PRICING_MODEL_GRADUATED, tiers=TIERS)),
            (other_plan_key, catalog_pb2.Price(model=catalog_pb2.PRICING_MODEL_PER_UNIT,
                                               unit_price=common_pb2.Decimal(value="0.01"))),
        ):
            catalog.CreatePlan(catalog_pb2.CreatePlanRequest(plan=catalog_pb2.PlanSpec(
                key=key, name=key, currency="USD", interval=catalog_pb2.BILLING_INTERVAL_DAY, interval_count=1,
                charges=[
                    catalog_pb2.Charge(key="fee", name="Daily fee", fixed=catalog_pb2.FixedFee(
                        amount=common_pb2.Decimal(value="2.00"), timing=catalog_pb2.FEE_TIMING_IN_ARREARS)),
                    catalog_pb2.Charge(key="minutes", name="Minutes", usage=catalog_pb2.UsageCharge(
                        meter_key=meter_key, price=price)),
                ])), timeout=10)
    return DailyPlan(meter_key, event_type, plan_key, other_plan_key)


def wait_applied(services, timeout: float = 60.0) -> None:
    """Until the meter has applied everything ingest has committed so far."""
    with grpc.insecure_channel(services.address("ingest")) as ingest_channel, \
            grpc.insecure_channel(services.address("meter")) as meter_channel:
        head = ingest_pb2_grpc.IngestServiceStub(ingest_channel).GetIngestStats(
            ingest_pb2.GetIngestStatsRequest(), timeout=10).head_position
        meter = meter_pb2_grpc.MeterServiceStub(meter_channel)
        deadline = time.monotonic() + timeout
        while meter.GetMeterStatus(meter_pb2.GetMeterStatusRequest(), timeout=10).applied_position < head:
            assert time.monotonic() < deadline, "the meter did not catch up"
            time.sleep(0.05)


def send_minutes(services, customer_id: str, event_type: str, when: datetime, minutes) -> None:
    """One event; ``minutes`` as a JSON number, as most senders send it (a double on the wire)."""
    event = ingest_pb2.Event(idempotency_key=unique("e"), event_type=event_type,
                             customer=common_pb2.CustomerRef(id=customer_id))
    event.timestamp.FromDatetime(when)
    event.properties.update({"minutes": minutes, "region": "eu"})
    with grpc.insecure_channel(services.address("ingest")) as channel:
        ingest_pb2_grpc.IngestServiceStub(channel).SendEvent(ingest_pb2.SendEventRequest(event=event), timeout=10)


@pytest.fixture
def subscribed(cli, make_customer, daily_plan, invoice_scheduler_off):
    """A customer on the tiered daily plan since the day before yesterday, the subscription with
    the caller's reference ``<customer external id>-main``; returns (customer, subscription id, start)."""
    customer = make_customer(name="Tiered Co")
    start = midnight_days_ago(2)
    created = cli("--json", "subscriptions", "create", "--customer", customer["external_id"],
                  "--plan", daily_plan.plan_key, "--start", iso(start), "--external-id", f"{customer['external_id']}-main")
    assert created.exit_code == 0, created.output
    return customer, json.loads(created.stdout)["id"], start


def close(cli, subscription_id: str, as_of: datetime) -> dict:
    result = cli("--json", "invoices", "close", "--subscription-id", subscription_id, "--as-of", iso(as_of))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


class TestCloseAndTheInvoiceLifecycle:
    def test_close_within_grace_makes_a_draft_that_finalize_numbers_and_mark_paid_settles(self, cli, subscribed):
        customer, subscription_id, start = subscribed
        # Half an hour after the first day ended: inside the 1 h grace, so the invoice is a draft.
        closed = cli("invoices", "close", "--subscription-id", subscription_id,
                     "--as-of", iso(start + timedelta(days=1, minutes=30)))
        assert closed.exit_code == 0, closed.output
        assert closed.stdout.startswith("1 invoices created, 0 finalized")
        [invoice_id] = [line.split()[-1] for line in closed.stdout.splitlines() if line.strip().startswith("created ")]

        finalized = cli("invoices", "finalize", invoice_id)
        assert finalized.exit_code == 0, finalized.output
        assert finalized.stdout.startswith("finalized: invoice INV-")
        assert "total 2.00 USD" in finalized.stdout
        number = finalized.stdout.split()[2]

        paid = cli("--json", "invoices", "mark-paid", number)
        assert paid.exit_code == 0, paid.output
        assert json.loads(paid.stdout)["status"] == "INVOICE_STATUS_PAID"

        again = cli("invoices", "finalize", invoice_id)
        assert again.exit_code == 1
        assert "not possible now" in again.stderr and "must be DRAFT" in again.stderr

    def test_void_needs_a_reason_and_keeps_the_record(self, cli, subscribed):
        _, subscription_id, start = subscribed
        report = close(cli, subscription_id, start + timedelta(days=1, hours=2))
        assert (report["invoices_created"], report["invoices_finalized"]) == (1, 1)
        [invoice_id] = report["invoice_ids"]
        refused = cli("invoices", "void", invoice_id)
        assert refused.exit_code != 0 and "--reason" in refused.output
        voided = cli("--json", "invoices", "void", invoice_id, "--reason", "duplicate account")
        assert voided.exit_code == 0, voided.output
        data = json.loads(voided.stdout)
        assert (data["status"], data["void_reason"]) == ("INVOICE_STATUS_VOID", "duplicate account")
        assert data["number"].startswith("INV-")

    def test_closing_twice_creates_nothing_more(self, cli, subscribed):
        _, subscription_id, start = subscribed
        as_of = start + timedelta(days=1, hours=2)
        assert close(cli, subscription_id, as_of)["invoices_created"] == 1
        assert close(cli, subscription_id, as_of)["invoices_created"] == 0

    def test_an_unknown_invoice_to_finalize_is_a_readable_not_found(self, cli):
        result = cli("invoices", "finalize", "INV-1999-999999")
        assert result.exit_code == 1
        assert result.stderr.startswith("error: invoice: not found")


class TestShowAndList:
    def test_show_prints_the_tier_breakdown_and_quantities_as_given(self, cli, services, subscribed, daily_plan):
        customer, subscription_id, start = subscribed
        # 11,262 minutes as a JSON number: 1,000 at $0.10 + 9,000 at $0.08 + 1,262 at $0.05
        # = 100.00 + 720.00 + 63.10 = $883.10, plus the $2.00 daily fee = $885.10.
        send_minutes(services, customer["id"], daily_plan.event_type, start + timedelta(hours=3), 11262)
        wait_applied(services)
        [invoice_id] = close(cli, subscription_id, start + timedelta(days=1, hours=2))["invoice_ids"]
        shown = cli("invoices", "show", invoice_id)
        assert shown.exit_code == 0, shown.output
        out = shown.stdout
        assert "11262" in out and "11262.0" not in out
        assert "tiers of line 2: Minutes" in out
        tier_section = out[out.index("tiers of line 2"):]
        tier_rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in tier_section.splitlines()
                     if line.startswith("│")]
        # Tier amounts are exact, not rounded: compared as numbers (63.10 may come as 63.100).
        assert [row[:4] for row in tier_rows] == [
            ["1", "1", "1000", "1000"], ["2", "1001", "10000", "9000"], ["3", "10001", "and above", "1262"]
        ]
        assert [[Decimal(cell) for cell in row[4:]] for row in tier_rows] == [
            [Decimal("0.10"), 0, Decimal("100.00")], [Decimal("0.08"), 0, Decimal("720.00")], [Decimal("0.05"), 0, Decimal("63.10")]
        ]
        assert "total     885.10 USD" in out
        assert customer["external_id"] in out

    def test_list_by_customer_external_id_shows_whole_numbers_and_external_ids_in_a_narrow_terminal(
        self, cli, subscribed
    ):
        customer, subscription_id, start = subscribed
        [invoice_id] = close(cli, subscription_id, start + timedelta(days=1, hours=2))["invoice_ids"]
        number = json.loads(cli("--json", "invoices", "show", invoice_id).stdout)["number"]
        for columns in ("40", "80", "220"):
            narrow = type(cli)({**cli.env, "COLUMNS": columns})
            listed = narrow("invoices", "list", "--customer", customer["external_id"])
            assert listed.exit_code == 0, listed.output
            assert number in listed.stdout, (columns, listed.stdout)
            assert customer["external_id"] in listed.stdout, (columns, listed.stdout)
            assert invoice_id in listed.stdout, (columns, listed.stdout)
            assert "…" not in listed.stdout
            assert customer["id"] not in listed.stdout

    def test_list_by_an_unknown_customer_external_id_is_not_found(self, cli):
        result = cli("invoices", "list", "--customer", unique("nobody"))
        assert result.exit_code == 1
        assert result.stderr.startswith("error: invoice: not found")

    def test_upcoming_previews_todays_usage_without_storing_it(self, cli, services, subscribed, daily_plan):
        customer, subscription_id, _ = subscribed
        send_minutes(services, customer["id"], daily_plan.event_type, datetime.now(UTC) - timedelta(seconds=5), 2.5)
        wait_applied(services)
        preview = cli("invoices", "upcoming", subscription_id)
        assert preview.exit_code == 0, preview.output
        assert preview.stdout.startswith("upcoming invoice (preview, not stored)")
        assert "2.5" in preview.stdout and "0.25" in preview.stdout  # 2.5 minutes at $0.10
        assert "total     2.25 USD" in preview.stdout
        listed = json.loads(cli("--json", "invoices", "list", "--subscription-id", subscription_id).stdout)
        assert listed == []


class TestSubscriptionChanges:
    def test_cancel_at_period_end_is_shown_on_the_subscription(self, cli, subscribed):
        _, subscription_id, _ = subscribed
        result = cli("subscriptions", "cancel", subscription_id, "--at-period-end")
        assert result.exit_code == 0, result.output
        assert "cancels   at period end" in result.stdout

    def test_cancel_needs_exactly_one_of_now_at_period_end_or_at(self, cli, subscribed):
        _, subscription_id, _ = subscribed
        for args in ([], ["--now", "--at-period-end"]):
            result = cli("subscriptions", "cancel", subscription_id, *args)
            assert result.exit_code == 1
            assert "give exactly one" in result.stderr

    def test_cancel_now_ends_the_subscription(self, cli, subscribed):
        _, subscription_id, _ = subscribed
        result = cli("--json", "subscriptions", "cancel", subscription_id, "--now")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["status"] in ("SUBSCRIPTION_STATUS_CANCELED", "SUBSCRIPTION_STATUS_ENDED")

    def test_change_plan_adds_a_phase(self, cli, subscribed, daily_plan):
        _, subscription_id, _ = subscribed
        result = cli("subscriptions", "change-plan", subscription_id, "--plan", daily_plan.other_plan_key)
        assert result.exit_code == 0, result.output
        assert f"{daily_plan.plan_key} v1" in result.stdout and f"{daily_plan.other_plan_key} v1" in result.stdout

    def test_an_unknown_subscription_is_a_readable_not_found(self, cli, daily_plan):
        result = cli("subscriptions", "change-plan", unique("sub"), "--plan", daily_plan.other_plan_key)
        assert result.exit_code == 1
        assert "error: catalog: not found" in result.stderr


class TestSubscriptionsByTheirReference:
    def test_show_cancel_change_upcoming_and_list_take_the_callers_reference(self, cli, subscribed, daily_plan):
        customer, subscription_id, start = subscribed
        reference = f"{customer['external_id']}-main"
        shown = cli("--json", "subscriptions", "show", "--external-id", reference)
        assert shown.exit_code == 0, shown.output
        assert json.loads(shown.stdout)["id"] == subscription_id
        listed = cli("subscriptions", "list", "--customer", customer["external_id"])
        assert listed.exit_code == 0, listed.output
        assert reference in listed.stdout and subscription_id in listed.stdout
        close(cli, subscription_id, start + timedelta(days=1, hours=2))
        invoices = json.loads(cli("--json", "invoices", "list", "--subscription", reference).stdout)
        assert [i["subscription_id"] for i in invoices] == [subscription_id]
        preview = cli("--json", "invoices", "upcoming", "--external-id", reference)
        assert preview.exit_code == 0, preview.output
        assert json.loads(preview.stdout)["subscription_id"] == subscription_id
        changed = cli("subscriptions", "change-plan", "--external-id", reference, "--plan", daily_plan.other_plan_key)
        assert changed.exit_code == 0, changed.output
        assert f"{daily_plan.other_plan_key} v1" in changed.stdout
        canceled = cli("subscriptions", "cancel", "--external-id", reference, "--at-period-end")
        assert canceled.exit_code == 0, canceled.output
        assert "cancels   at period end" in canceled.stdout

    def test_both_or_neither_of_id_and_reference_is_refused_before_any_call(self, cli):
        for args in (["subscriptions", "show"], ["subscriptions", "show", "sub_x", "--external-id", "ref"],
                     ["invoices", "upcoming"]):
            result = cli(*args)
            assert result.exit_code == 1, (args, result.output)
            assert "exactly one of SUBSCRIPTION" in result.stderr

    def test_an_unknown_reference_is_a_readable_not_found(self, cli):
        result = cli("invoices", "list", "--subscription", unique("nosuchref"))
        assert result.exit_code == 1
        assert result.stderr.startswith("error: invoice: not found")


class TestUsageRecords:
    def test_a_recorded_usage_shows_with_its_memo_and_exact_quantity(self, cli, services, make_customer, daily_plan):
        customer = make_customer()
        key = unique("rec")
        start = midnight_days_ago(1)
        request = ingest_pb2.RecordUsageRequest(
            idempotency_key=key, customer=common_pb2.CustomerRef(external_id=customer["external_id"]),
            meter_key=daily_plan.meter_key, quantity=common_pb2.Decimal(value="22.50"),
            memo="22.5 minutes from the switch export", dimensions={"region": "eu"})
        request.range.start.FromDatetime(start)
        request.range.end.FromDatetime(start + timedelta(days=1))
        with grpc.insecure_channel(services.address("ingest")) as channel:
            ingest_pb2_grpc.IngestServiceStub(channel).RecordUsage(request, timeout=10)
        shown = cli("usage-records", "show", key)
        assert shown.exit_code == 0, shown.output
        assert "22.50" in shown.stdout and "22.5 minutes from the switch export" in shown.stdout
        assert f"{iso(start)} .. {iso(start + timedelta(days=1))}" in shown.stdout
        assert "region=eu" in shown.stdout and customer["id"] in shown.stdout
        assert "(unattributed)" in shown.stdout  # the customer has no subscription
        listed = json.loads(cli("--json", "usage-records", "list", "--customer", customer["external_id"],
                                "--meter", daily_plan.meter_key).stdout)
        assert [(r["idempotency_key"], r["quantity"]["value"]) for r in listed] == [(key, "22.50")]
        only = json.loads(cli("--json", "usage-records", "list", "--customer", customer["external_id"],
                              "--unattributed").stdout)
        assert [r["idempotency_key"] for r in only] == [key]

    def test_an_unknown_key_is_a_readable_not_found(self, cli):
        result = cli("usage-records", "show", unique("none"))
        assert result.exit_code == 1
        assert result.stderr.startswith("error: ingest: not found")


class TestVersion:
    def test_version_prints_the_package_version(self, cli):
        from importlib.metadata import version

        result = cli("--version")
        assert result.exit_code == 0
        assert result.stdout == f"tally {version('tally')}\n"
