"""In-advance fees: the period-start invoice, and prorated corrections on plan change or cancellation.

Amounts are worked out by hand in each test (April 2026 has 30 days = 2,592,000 s).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal as D
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from services.invoice.domain.advance import in_advance_corrections, period_start_lines, round_fraction, whole_seconds
from services.invoice.domain.invoices import LineKind
from services.invoice.domain.plans import FeeTiming, FixedFee, Phase, PlanVersion, Subscription
from tally.domain.periods import Anchor, Interval, period_containing

UTC = timezone.utc


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def plan(vid: str, key: str, fee: str, *, prorate: bool = True, arrears: str | None = None) -> PlanVersion:
    charges = [FixedFee("platform", "Platform fee", D(fee), FeeTiming.IN_ADVANCE, prorate)]
    if arrears is not None:
        charges.append(FixedFee("support", "Support", D(arrears), FeeTiming.IN_ARREARS))
    return PlanVersion(vid, key, 1, key.title(), "USD", Interval.MONTH, 1, tuple(charges))


BASIC, PRO = plan("v_basic", "basic", "50.00"), plan("v_pro", "pro", "120.00")
VERSIONS = {"v_basic": BASIC, "v_pro": PRO}
APRIL = utc(2026, 4, 1)


def changed(at: datetime, first=BASIC, then=PRO, **kwargs) -> Subscription:
    phases = (
        Phase(first.id, first.plan_key, 1, APRIL, at),
        Phase(then.id, then.plan_key, 1, at),
    )
    return Subscription("sub_1", "cus_1", APRIL, Anchor.CALENDAR, phases, **kwargs)


def unchanged(**kwargs) -> Subscription:
    return Subscription("sub_1", "cus_1", APRIL, Anchor.CALENDAR, (Phase(BASIC.id, "basic", 1, APRIL),), **kwargs)


def april_of(subscription: Subscription):
    schedule = subscription.schedule(BASIC, "UTC")
    return schedule, period_containing(schedule, APRIL)


def billed_at_start(first=BASIC):
    """What the PERIOD_START invoice of April billed (the version in force on April 1)."""
    subscription = Subscription("sub_1", "cus_1", APRIL, Anchor.CALENDAR, (Phase(first.id, first.plan_key, 1, APRIL),))
    schedule, period = april_of(subscription)
    return period_start_lines(subscription, schedule, period, VERSIONS, "USD")


def corrections(subscription: Subscription, billed=None):
    _, period = april_of(subscription)
    lines = in_advance_corrections(subscription, period, VERSIONS, "USD", billed_at_start() if billed is None else billed)
    return [(line.description, line.amount, line.prorated_seconds, line.period_start, line.period_end) for line in lines]


class TestPeriodStartInvoice:
    def test_the_period_start_invoice_bills_the_in_advance_fee_of_the_version_in_force(self):
        (line,) = billed_at_start()
        assert (line.kind, line.amount, line.period_start, line.period_end) == (
            LineKind.FIXED_FEE, D("50.00"), APRIL, utc(2026, 5, 1)
        )

    def test_in_arrears_fees_are_not_billed_at_the_period_start(self):
        version = plan("v_basic", "basic", "50.00", arrears="9.00")
        subscription = Subscription("sub_1", "cus_1", APRIL, Anchor.CALENDAR, (Phase(version.id, "basic", 1, APRIL),))
        schedule, period = april_of(subscription)
        lines = period_start_lines(subscription, schedule, period, {version.id: version}, "USD")
        assert [line.charge_key for line in lines] == ["platform"]

    def test_a_backdated_mid_month_calendar_start_is_billed_by_local_days(self):
        # Started April 21: 10 of 30 days, 50.00 x 10/30 = 16.666... -> 16.67.
        subscription = Subscription("sub_1", "cus_1", utc(2026, 4, 21), Anchor.CALENDAR, (Phase(BASIC.id, "basic", 1, utc(2026, 4, 21)),))
        schedule = subscription.schedule(BASIC, "UTC")
        period = period_containing(schedule, utc(2026, 4, 21))
        (line,) = period_start_lines(subscription, schedule, period, VERSIONS, "USD")
        assert line.amount == D("16.67")


class TestProrationOnChange:
    def test_an_upgrade_credits_the_unused_old_fee_and_charges_the_new_one_for_the_rest(self):
        # Change at April 11 00:00: 20 days of 30 left. Basic 50.00 x 20/30 = 33.333... -> 33.33
        # credited; Pro 120.00 x 20/30 = 80.00 charged.
        change = utc(2026, 4, 11)
        assert corrections(changed(change)) == [
            ("Unused Platform fee (basic v1), credited", D("-33.33"), 1_728_000, change, utc(2026, 5, 1)),
            ("Platform fee (pro v1) for the rest of the period", D("80.00"), 1_728_000, change, utc(2026, 5, 1)),
        ]

    def test_a_downgrade_is_prorated_to_the_second(self):
        # Change at April 21 12:00: 9.5 days = 820,800 s left. Pro 120.00 x 9.5/30 = 38.00
        # credited; Basic 50.00 x 9.5/30 = 15.8333... -> 15.83 charged.
        change = utc(2026, 4, 21, 12)
        billed = billed_at_start(PRO)
        got = corrections(changed(change, first=PRO, then=BASIC), billed)
        assert [(amount, seconds) for _, amount, seconds, *_ in got] == [(D("-38.00"), 820_800), (D("15.83"), 820_800)]

    def test_a_change_on_the_periods_first_day(self):
        # Change at April 1 06:00: 2,570,400 s of 2,592,000 left (119/120 of the month).
        # Basic 50.00 x 119/120 = 49.5833... -> 49.58 credited; Pro 120.00 x 119/120 = 119.00.
        got = corrections(changed(utc(2026, 4, 1, 6)))
        assert [(amount, seconds) for _, amount, seconds, *_ in got] == [(D("-49.58"), 2_570_400), (D("119.00"), 2_570_400)]

    def test_a_change_at_the_period_start_needs_no_correction(self):
        # The period-start invoice already billed the new version: nothing to correct.
        subscription = Subscription("sub_1", "cus_1", APRIL, Anchor.CALENDAR, (Phase(PRO.id, "pro", 1, APRIL),))
        assert corrections(subscription, billed_at_start(PRO)) == []

    def test_a_change_on_the_periods_last_day(self):
        # Change at April 30 18:00: 6 h = 21,600 s left (1/120). Basic 50.00/120 = 0.41666... ->
        # 0.42 credited; Pro 120.00/120 = 1.00 charged.
        got = corrections(changed(utc(2026, 4, 30, 18)))
        assert [(amount, seconds) for _, amount, seconds, *_ in got] == [(D("-0.42"), 21_600), (D("1.00"), 21_600)]

    def test_changing_away_and_back_credits_only_the_time_away(self):
        # Basic, Pro from April 11 to April 21, Basic again: 10 days away. Basic 50.00 x 10/30 =
        # 16.666... -> 16.67 credited; Pro 120.00 x 10/30 = 40.00 charged; Basic's return was paid.
        phases = (
            Phase(BASIC.id, "basic", 1, APRIL, utc(2026, 4, 11)),
            Phase(PRO.id, "pro", 1, utc(2026, 4, 11), utc(2026, 4, 21)),
            Phase(BASIC.id, "basic", 1, utc(2026, 4, 21)),
        )
        got = corrections(Subscription("sub_1", "cus_1", APRIL, Anchor.CALENDAR, phases))
        assert [(amount, seconds) for _, amount, seconds, *_ in got] == [(D("-16.67"), 864_000), (D("40.00"), 864_000)]

    def test_no_change_means_no_correction(self):
        assert corrections(unchanged()) == []

    def test_a_new_fee_is_charged_even_when_nothing_was_billed_at_the_start(self):
        # A plan without in-advance fees had no period-start invoice: only the charge.
        free = PlanVersion("v_free", "free", 1, "Free", "USD", Interval.MONTH, 1, ())
        versions = {**VERSIONS, "v_free": free}
        subscription = changed(utc(2026, 4, 16), first=free)
        _, period = april_of(Subscription("sub_1", "cus_1", APRIL, Anchor.CALENDAR, (Phase("v_free", "free", 1, APRIL),)))
        lines = in_advance_corrections(subscription, period, versions, "USD", [])
        assert [(line.kind, line.amount) for line in lines] == [(LineKind.PRORATION, D("60.00"))]

    def test_a_fee_that_does_not_prorate_is_neither_credited_nor_charged_mid_period(self):
        flat_basic = plan("v_basic", "basic", "50.00", prorate=False)
        flat_pro = plan("v_pro", "pro", "120.00", prorate=False)
        versions = {"v_basic": flat_basic, "v_pro": flat_pro}
        subscription = changed(utc(2026, 4, 11), first=flat_basic, then=flat_pro)
        _, period = april_of(subscription)
        billed = period_start_lines(
            unchanged(), *april_of(unchanged()), versions, "USD"
        )
        assert in_advance_corrections(subscription, period, versions, "USD", billed) == []


class TestProrationOnCancellation:
    def test_a_mid_period_cancellation_credits_the_unused_part(self):
        # Canceled at April 16 00:00: 15 of 30 days unused: 50.00 x 15/30 = 25.00 credited.
        got = corrections(unchanged(cancel_at=utc(2026, 4, 16)))
        assert got == [("Unused Platform fee (basic v1), credited", D("-25.00"), 1_296_000, utc(2026, 4, 16), utc(2026, 5, 1))]

    def test_a_cancellation_at_period_end_credits_nothing(self):
        assert corrections(unchanged(cancel_at_period_end=True, canceled_time=utc(2026, 4, 10))) == []


class TestRounding:
    def test_the_exact_fraction_is_rounded_once_half_even(self):
        # 0.25 x 1/2 = 0.125 -> 0.12 (even); 0.045 x 1/3 = 0.015 exactly -> 0.02 (even), which a
        # rounded share (0.3333...) would have turned into 0.01.
        assert round_fraction(Fraction("0.25") * Fraction(1, 2), "USD") == D("0.12")
        assert round_fraction(Fraction("0.045") * Fraction(1, 3), "USD") == D("0.02")
        assert round_fraction(Fraction(1000, 3), "JPY") == D("333")
        assert round_fraction(Fraction("-0.125"), "USD") == D("-0.12")

    def test_seconds_are_whole_seconds_of_the_instants(self):
        assert whole_seconds(utc(2026, 4, 1, 0, 0, 0, 900_000), utc(2026, 4, 1, 0, 0, 2, 100_000)) == 2


class TestProrationProperties:
    @settings(max_examples=300, deadline=None)
    @given(
        st.integers(1, 2_592_000 - 1),
        st.decimals(min_value=0, max_value=10_000, places=2),
        st.decimals(min_value=0, max_value=10_000, places=2),
    )
    def test_what_is_paid_is_each_versions_share_to_within_a_cent_per_line(self, second, old_fee, new_fee):
        old = plan("v_basic", "basic", str(old_fee))
        new = plan("v_pro", "pro", str(new_fee))
        versions = {"v_basic": old, "v_pro": new}
        change = APRIL + timedelta(seconds=second)
        subscription = changed(change, first=old, then=new)
        schedule = subscription.schedule(old, "UTC")
        period = period_containing(schedule, APRIL)
        opening = Subscription("sub_1", "cus_1", APRIL, Anchor.CALENDAR, (Phase(old.id, "basic", 1, APRIL),))
        billed = period_start_lines(opening, opening.schedule(old, "UTC"), period, versions, "USD")
        lines = in_advance_corrections(subscription, period, versions, "USD", billed)
        credit = sum((line.amount for line in lines if line.plan_key == "basic"), D(0))
        charge = sum((line.amount for line in lines if line.plan_key == "pro"), D(0))
        left = Fraction(2_592_000 - second, 2_592_000)
        assert -old_fee <= credit <= 0 <= charge <= new_fee
        paid = old_fee + credit + charge
        exact = Fraction(old_fee) * (1 - left) + Fraction(new_fee) * left
        assert abs(Fraction(paid) - exact) <= Fraction(1, 100)
        assert all(line.prorated_seconds == 2_592_000 - second for line in lines)


class TestPlanChangedAtThePeriodStartAfterBilling:
    def test_a_change_backdated_to_the_period_start_credits_the_old_fee_and_charges_the_new_one_whole(self):
        # The PERIOD_START invoice billed basic; the change is then recorded as of April 1 00:00.
        subscription = Subscription("sub_1", "cus_1", APRIL, Anchor.CALENDAR, (
            Phase(BASIC.id, "basic", 1, APRIL, APRIL), Phase(PRO.id, "pro", 1, APRIL)))
        assert [amount for _, amount, *_ in corrections(subscription)] == [D("-50.00"), D("120.00")]

    def test_a_voided_period_start_invoice_is_not_billed_again(self):
        subscription = Subscription("sub_1", "cus_1", APRIL, Anchor.CALENDAR, (Phase(PRO.id, "pro", 1, APRIL),))
        _, period = april_of(subscription)
        assert in_advance_corrections(subscription, period, VERSIONS, "USD", [], start_voided=True) == []
        # Without a PERIOD_START invoice at all (the plan then had no in-advance fee), it is charged.
        assert [line.amount for line in in_advance_corrections(subscription, period, VERSIONS, "USD", [])] == [D("120.00")]


class TestPriceOverrides:
    def test_an_overridden_fee_is_billed_credited_and_charged_at_the_override(self):
        from services.invoice.domain.plans import PriceOverride

        # basic's 50.00 overridden to 40.00, pro's 120.00 to 90.00; change at April 11: 20 of 30
        # days left. Billed 40.00; credit 40.00 x 2/3 = 26.666... -> 26.67; charge 90.00 x 2/3 = 60.00.
        change = utc(2026, 4, 11)
        basic = Phase(BASIC.id, "basic", 1, APRIL, change, price_overrides=(PriceOverride("platform", amount=D("40.00")),))
        pro = Phase(PRO.id, "pro", 1, change, price_overrides=(PriceOverride("platform", amount=D("90.00")),))
        opening = Subscription("sub_1", "cus_1", APRIL, Anchor.CALENDAR, (replace(basic, end=None),))
        schedule, period = april_of(opening)
        billed = period_start_lines(opening, schedule, period, VERSIONS, "USD")
        assert [(line.amount, line.price_override) for line in billed] == [(D("40.00"), True)]
        subscription = Subscription("sub_1", "cus_1", APRIL, Anchor.CALENDAR, (basic, pro))
        lines = in_advance_corrections(subscription, period, VERSIONS, "USD", billed)
        assert [(line.plan_key, line.amount, line.price_override) for line in lines] == [
            ("basic", D("-26.67"), True), ("pro", D("60.00"), True),
        ]
