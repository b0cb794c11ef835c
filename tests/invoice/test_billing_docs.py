"""docs/billing.md's checked examples: the amounts are worked out by hand here, must equal the
page's tables, and the billing code must produce them."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from decimal import Decimal as D

from services.invoice.domain.advance import in_advance_corrections, period_start_lines
from services.invoice.domain.billing import PeriodContext, price_period, usage_queries
from services.invoice.domain.plans import (
    FeeTiming,
    FixedFee,
    Phase,
    PlanVersion,
    Price,
    PricingModel,
    Subscription,
    Tier,
)
from services.invoice.domain.pricing import UsagePart, price_quantity
from tally.domain.periods import Anchor, Interval, Schedule, period_containing, periods
from tests.harness import REPO

UTC = timezone.utc
DOC = REPO / "docs" / "billing.md"


def table(name: str) -> list[list[str]]:
    """The rows (cells stripped) of the checked table ``name``, header and rule excluded."""
    text = DOC.read_text()
    start = text.index(f"<!-- checked:{name} -->")
    body = text[start: text.index("<!-- /checked -->", start)]
    rows = [line for line in body.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


class TestPeriodsTable:
    # By hand: month ends from the anchor day, clamped; 10:30 Paris is 09:30Z in CET, 08:30Z in
    # CEST (from March 29); 02:30 New York on March 8 does not exist -> 02:30 EST = 07:30Z,
    # March 9 02:30 EDT = 06:30Z; calendar Paris midnights are 23:00Z (CET) and 22:00Z (CEST).
    EXPECTED = [
        ["anniversary", "month", "UTC", "2026-03-31T09:30Z", "2026-04-30T09:30Z, 2026-05-31T09:30Z, 2026-06-30T09:30Z"],
        ["anniversary", "month", "UTC", "2026-01-31T00:00Z", "2026-02-28T00:00Z, 2026-03-31T00:00Z, 2026-04-30T00:00Z"],
        ["anniversary", "month", "Europe/Paris", "2026-01-20T09:30Z", "2026-02-20T09:30Z, 2026-03-20T09:30Z, 2026-04-20T08:30Z"],
        ["anniversary", "day", "America/New_York", "2026-03-07T07:30Z", "2026-03-08T07:30Z, 2026-03-09T06:30Z"],
        ["calendar", "month", "UTC", "2026-01-15T00:00Z", "2026-02-01T00:00Z, 2026-03-01T00:00Z"],
        ["calendar", "month", "Europe/Paris", "2025-12-31T23:00Z", "2026-01-31T23:00Z, 2026-02-28T23:00Z, 2026-03-31T22:00Z"],
    ]

    def test_the_page_shows_the_hand_worked_boundaries(self):
        assert table("periods") == self.EXPECTED

    def test_the_schedule_gives_those_boundaries(self):
        for anchor, interval, zone, start, ends in self.EXPECTED:
            schedule = Schedule(instant(start), Interval(interval), 1, Anchor(anchor), zone)
            wanted = [instant(end) for end in ends.split(", ")]
            got = [p.end for p in periods(schedule, wanted[-1])][: len(wanted)]
            assert got == wanted, (anchor, interval, zone, start)


def in_advance(vid: str, key: str, fee: str) -> PlanVersion:
    return PlanVersion(vid, key, 1, key, "USD", Interval.MONTH, 1, (FixedFee("platform", "Platform fee", D(fee), FeeTiming.IN_ADVANCE),))


class TestProrationTable:
    # By hand, April 2026 = 2,592,000 s: 50 x 1,728,000/2,592,000 = 33.333.. -> 33.33, 120 x 2/3
    # = 80.00; 120 x 820,800/2,592,000 = 38.00, 50 x 0.31666.. = 15.8333.. -> 15.83; 119/120 of
    # 50 = 49.5833.. -> 49.58 and of 120 = 119.00; 1/120 of 50 = 0.41666.. -> 0.42, of 120 = 1.00;
    # half of 50 = 25.00.
    EXPECTED = [
        ["upgrade", "basic 50.00", "pro 120.00", "2026-04-11T00:00:00Z", "1,728,000", "-33.33", "80.00"],
        ["downgrade", "pro 120.00", "basic 50.00", "2026-04-21T12:00:00Z", "820,800", "-38.00", "15.83"],
        ["first day", "basic 50.00", "pro 120.00", "2026-04-01T06:00:00Z", "2,570,400", "-49.58", "119.00"],
        ["last day", "basic 50.00", "pro 120.00", "2026-04-30T18:00:00Z", "21,600", "-0.42", "1.00"],
        ["cancellation", "basic 50.00", "canceled", "2026-04-16T00:00:00Z", "1,296,000", "-25.00", ""],
    ]

    def test_the_page_shows_the_hand_worked_amounts(self):
        assert table("proration") == self.EXPECTED

    def test_the_billing_code_bills_them(self):
        april = utc(2026, 4, 1)
        for case, source, target, at, seconds, credit, charge in self.EXPECTED:
            old_key, old_fee = source.split()
            old = in_advance("v_old", old_key, old_fee)
            versions = {old.id: old}
            change = instant(at)
            if target == "canceled":
                subscription = Subscription("s", "c", april, Anchor.CALENDAR, (Phase(old.id, old_key, 1, april),), cancel_at=change)
            else:
                new_key, new_fee = target.split()
                new = versions["v_new"] = in_advance("v_new", new_key, new_fee)
                subscription = Subscription("s", "c", april, Anchor.CALENDAR, (
                    Phase(old.id, old_key, 1, april, change), Phase(new.id, new_key, 1, change)))
            opening = Subscription("s", "c", april, Anchor.CALENDAR, (Phase(old.id, old_key, 1, april),))
            opening_schedule = opening.schedule(old, "UTC")
            billed = period_start_lines(opening, opening_schedule, period_containing(opening_schedule, april), versions, "USD")
            assert [line.amount for line in billed] == [D(old_fee)]
            period = period_containing(subscription.schedule(old, "UTC"), april)
            lines = in_advance_corrections(subscription, period, versions, "USD", billed)
            wanted = [D(credit)] + ([D(charge)] if charge else [])
            assert [line.amount for line in lines] == wanted, case
            assert {line.prorated_seconds for line in lines} == {int(seconds.replace(",", ""))}, case


class TestInArrearsTable:
    # By hand: Jan 1-15 is 15 days (the 16th counts for the later part): 31.00 x 15/31 = 15.00;
    # Jan 16-31 is 16 days: 62.00 x 16/31 = 32.00.
    EXPECTED = [["v1 31.00, v2 62.00", "January 2026 (31 days)", "2026-01-16T12:00:00Z", "15 days: 15.00", "16 days: 32.00"]]

    def test_the_page_shows_the_hand_worked_amounts(self):
        assert table("in-arrears") == self.EXPECTED

    def test_the_billing_code_bills_them(self):
        january, change = utc(2026, 1, 1), instant(self.EXPECTED[0][2])
        versions = {
            vid: PlanVersion(vid, "p", n, "p", "USD", Interval.MONTH, 1, (FixedFee("fee", "Fee", D(amount)),))
            for vid, n, amount in (("v1", 1, "31.00"), ("v2", 2, "62.00"))
        }
        subscription = Subscription("s", "c", january, Anchor.CALENDAR, (Phase("v1", "p", 1, january, change), Phase("v2", "p", 2, change)))
        schedule = subscription.schedule(versions["v1"], "UTC")
        context = PeriodContext(subscription, schedule, period_containing(schedule, january), versions, "USD")
        usage = {q: UsagePart(q.start, q.end, D(0)) for q in usage_queries(context)}
        assert [line.amount for line in price_period(context, usage)] == [D("15.00"), D("32.00")]


class TestFlatAtZeroTable:
    GRADUATED = "1–100 at 0.10 + 5.00 flat; 101+ at 0.05"
    VOLUME = "1–10 at 1.00 + 7.50 flat; 11+ at 0.50 + 20.00 flat"
    # By hand: quantity 0 is in tier 1, which pays its flat amount unless opted out; 150 units
    # graduated = 100 x 0.10 + 5.00 + 50 x 0.05 = 17.50.
    EXPECTED = [
        ["GRADUATED", GRADUATED, "unset", "0", "5.00"],
        ["GRADUATED", GRADUATED, "false", "0", "0.00"],
        ["GRADUATED", GRADUATED, "unset", "150", "17.50"],
        ["VOLUME", VOLUME, "unset", "0", "7.50"],
        ["VOLUME", VOLUME, "false", "0", "0.00"],
    ]
    TIERS = {
        GRADUATED: (Tier(D(100), D("0.10"), D("5.00")), Tier(None, D("0.05"))),
        VOLUME: (Tier(D(10), D("1.00"), D("7.50")), Tier(None, D("0.50"), D("20.00"))),
    }

    def test_the_page_shows_the_hand_worked_amounts(self):
        assert table("flat-at-zero") == self.EXPECTED

    def test_the_pricing_code_charges_them(self):
        for model, tiers, option, quantity, amount in self.EXPECTED:
            price = Price(PricingModel[model], tiers=self.TIERS[tiers], charge_flat_amount_at_zero=option != "false")
            assert price_quantity(price, D(quantity)).amount == D(amount), (model, option, quantity)


def test_every_checked_table_of_the_page_is_tested():
    names = re.findall(r"<!-- checked:([\w-]+) -->", DOC.read_text())
    assert names == ["periods", "proration", "in-arrears", "flat-at-zero"]
