"""Pricing whole periods: plan changes, proration, in-advance fees, adjustments, content hash."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.invoice.domain.advance import period_start_lines
from services.invoice.domain.billing import (
    PeriodContext,
    adjustment_lines,
    billed_usage_span,
    price_period,
    usage_queries,
)
from services.invoice.domain.invoices import Invoice, InvoiceStatus, LineKind, content_hash, invoice_number
from services.invoice.domain.plans import (
    FeeTiming,
    FixedFee,
    Phase,
    PlanVersion,
    Price,
    PricingModel,
    Subscription,
    Tier,
    UsageCharge,
)
from services.invoice.domain.pricing import UsagePart
from tally.domain.periods import Anchor, Interval, periods
from tally.errors import FailedPrecondition

UTC = timezone.utc


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def version(vid: str, number: int, fee: str, unit_price: str, *, timing=FeeTiming.IN_ARREARS, included="0") -> PlanVersion:
    return PlanVersion(
        id=vid, plan_key="voip", version=number, name="VoIP", currency="USD",
        interval=Interval.MONTH, interval_count=1,
        charges=(
            FixedFee("monthly", "Monthly fee", D(fee), timing),
            UsageCharge("minutes", "Minutes", "call_minutes", Price(PricingModel.PER_UNIT, unit_price=D(unit_price)), included_units=D(included)),
        ),
    )


def subscription(start: datetime, phases: tuple[Phase, ...], anchor=Anchor.CALENDAR, **kwargs) -> Subscription:
    return Subscription(id="sub_1", customer_id="cus_1", start=start, anchor=anchor, phases=phases, **kwargs)


def context_for(sub: Subscription, versions: dict, index: int = 0) -> PeriodContext:
    first = versions[sub.phases[0].plan_version_id]
    schedule = sub.schedule(first, "UTC")
    period = list(periods(schedule, utc(2100, 1, 1)) if schedule.end else _take(schedule, index + 1))[index]
    return PeriodContext(sub, schedule, period, versions, "USD")


def _take(schedule, n):
    out = []
    for p in periods(schedule, utc(2100, 1, 1)):
        out.append(p)
        if len(out) == n:
            return out
    return out


def usage_of(context: PeriodContext, values: dict[tuple[datetime, datetime], D]):
    return {q: UsagePart(q.start, q.end, values[(q.start, q.end)]) for q in usage_queries(context)}


class TestPricePeriod:
    def test_the_voip_period_has_a_fee_line_and_a_usage_line_totalling_28_05(self):
        v1 = version("v1", 1, "10.00", "0.05")
        sub = subscription(utc(2026, 1, 1), (Phase("v1", "voip", 1, utc(2026, 1, 1)),))
        context = context_for(sub, {"v1": v1})
        lines = price_period(context, usage_of(context, {(utc(2026, 1, 1), utc(2026, 2, 1)): D(361)}))
        assert [(line.kind, line.amount) for line in lines] == [(LineKind.FIXED_FEE, D("10.00")), (LineKind.USAGE, D("18.05"))]

    def test_a_mid_period_plan_change_prices_each_part_with_its_own_version(self):
        v1, v2 = version("v1", 1, "31.00", "0.10"), version("v2", 2, "62.00", "0.20")
        change = utc(2026, 1, 11)
        sub = subscription(
            utc(2026, 1, 1),
            (Phase("v1", "voip", 1, utc(2026, 1, 1), change), Phase("v2", "voip", 2, change)),
        )
        context = context_for(sub, {"v1": v1, "v2": v2})
        assert [(q.start, q.end) for q in usage_queries(context)] == [(utc(2026, 1, 1), change), (change, utc(2026, 2, 1))]
        lines = price_period(context, usage_of(context, {(utc(2026, 1, 1), change): D(100), (change, utc(2026, 2, 1)): D(50)}))
        got = [(line.kind, line.plan_version, line.amount) for line in lines]
        # 10 of 31 days at $31 and 21 of 31 days at $62; usage 100 x 0.10 and 50 x 0.20.
        assert got == [
            (LineKind.FIXED_FEE, 1, D("10.00")),
            (LineKind.USAGE, 1, D("10.00")),
            (LineKind.FIXED_FEE, 2, D("42.00")),
            (LineKind.USAGE, 2, D("10.00")),
        ]

    def test_included_units_are_one_allowance_across_a_plan_change(self):
        v1 = version("v1", 1, "0", "1", included="100")
        v2 = version("v2", 2, "0", "1", included="100")
        change = utc(2026, 1, 16)
        sub = subscription(utc(2026, 1, 1), (Phase("v1", "voip", 1, utc(2026, 1, 1), change), Phase("v2", "voip", 2, change)))
        context = context_for(sub, {"v1": v1, "v2": v2})
        lines = price_period(context, usage_of(context, {(utc(2026, 1, 1), change): D(60), (change, utc(2026, 2, 1)): D(70)}))
        usage_lines = [line for line in lines if line.kind is LineKind.USAGE]
        assert [(line.included_units, line.quantity) for line in usage_lines] == [(D(60), D(0)), (D(40), D(30))]

    def test_a_first_tiers_flat_amount_at_zero_usage_is_charged_once_across_a_plan_change(self):
        tiered = Price(PricingModel.GRADUATED, tiers=(Tier(D(100), D("0.10"), D("5.00")), Tier(None, D("0.05"))))
        v1 = replace(version("v1", 1, "0", "1"), charges=(UsageCharge("minutes", "Minutes", "call_minutes", tiered),))
        v2 = replace(v1, id="v2", version=2)
        change = utc(2026, 1, 16)
        sub = subscription(utc(2026, 1, 1), (Phase("v1", "voip", 1, utc(2026, 1, 1), change), Phase("v2", "voip", 2, change)))
        context = context_for(sub, {"v1": v1, "v2": v2})
        lines = price_period(context, usage_of(context, {(utc(2026, 1, 1), change): D(0), (change, utc(2026, 2, 1)): D(0)}))
        # Quantity 0 lies in tier 1 (5.00 flat), once for the period: 5.00 + 0.00.
        assert [line.amount for line in lines] == [D("5.00"), D("0.00")]

    def test_a_backdated_mid_month_start_prorates_the_first_fee(self):
        v1 = version("v1", 1, "31.00", "0.05")
        sub = subscription(utc(2026, 1, 15), (Phase("v1", "voip", 1, utc(2026, 1, 15)),))
        context = context_for(sub, {"v1": v1})
        lines = price_period(context, usage_of(context, {(utc(2026, 1, 15), utc(2026, 2, 1)): D(0)}))
        assert lines[0].amount == D("17.00")
        assert lines[0].proration == D(17) / D(31)

    def test_a_month_end_anniversary_bills_february_to_the_28th(self):
        v1 = version("v1", 1, "10.00", "1")
        sub = subscription(utc(2026, 1, 31), (Phase("v1", "voip", 1, utc(2026, 1, 31)),), anchor=Anchor.ANNIVERSARY)
        context = context_for(sub, {"v1": v1}, index=1)
        assert (context.period.start, context.period.end) == (utc(2026, 2, 28), utc(2026, 3, 31))
        lines = price_period(context, usage_of(context, {(utc(2026, 2, 28), utc(2026, 3, 31)): D(3)}))
        assert [line.amount for line in lines] == [D("10.00"), D("3.00")]

    def test_in_advance_fees_billed_at_the_period_start_are_not_on_the_period_end_invoice(self):
        v1 = version("v1", 1, "10.00", "0.05", timing=FeeTiming.IN_ADVANCE)
        sub = subscription(utc(2026, 1, 1), (Phase("v1", "voip", 1, utc(2026, 1, 1)),))
        context = context_for(sub, {"v1": v1})
        billed = period_start_lines(sub, context.schedule, context.period, {"v1": v1}, "USD")
        assert [(line.kind, line.amount) for line in billed] == [(LineKind.FIXED_FEE, D("10.00"))]
        context = replace(context, billed_in_advance=tuple(billed))
        lines = price_period(context, usage_of(context, {(utc(2026, 1, 1), utc(2026, 2, 1)): D(0)}))
        assert [line.kind for line in lines] == [LineKind.USAGE]


def invoice_with(lines, **kwargs) -> Invoice:
    return Invoice(
        id="inv_1", customer_id="cus_1", subscription_id="sub_1", currency="USD",
        period_start=utc(2026, 1, 1), period_end=utc(2026, 2, 1), lines=tuple(lines), **kwargs,
    )


class TestAdjustments:
    def setup_method(self):
        self.v1 = version("v1", 1, "10.00", "0.05")
        self.sub = subscription(utc(2026, 1, 1), (Phase("v1", "voip", 1, utc(2026, 1, 1)),))
        self.context = context_for(self.sub, {"v1": self.v1})

    def priced(self, minutes: int):
        return price_period(self.context, usage_of(self.context, {(utc(2026, 1, 1), utc(2026, 2, 1)): D(minutes)}))

    def test_late_usage_becomes_one_adjustment_referring_to_the_original(self):
        original = invoice_with(self.priced(361), status=InvoiceStatus.FINALIZED, number="INV-2026-000001")
        (adjustment,) = adjustment_lines(original, self.priced(400), [])
        assert adjustment.kind is LineKind.ADJUSTMENT
        assert (adjustment.amount, adjustment.usage) == (D("1.95"), D(39))
        assert adjustment.adjusts_invoice_id == "inv_1"
        assert (adjustment.adjusts_period_start, adjustment.adjusts_period_end) == (utc(2026, 1, 1), utc(2026, 2, 1))

    def test_a_difference_already_adjusted_is_not_adjusted_again(self):
        original = invoice_with(self.priced(361), status=InvoiceStatus.FINALIZED)
        first = adjustment_lines(original, self.priced(400), [])
        assert adjustment_lines(original, self.priced(400), first) == []
        (second,) = adjustment_lines(original, self.priced(410), first)
        assert second.amount == D("0.50")

    def test_a_voided_event_gives_a_negative_adjustment(self):
        original = invoice_with(self.priced(361), status=InvoiceStatus.FINALIZED)
        (credit,) = adjustment_lines(original, self.priced(341), [])
        assert credit.amount == D("-1.00")


class TestLifecycle:
    def test_finalizing_sets_the_number_and_a_hash_of_the_content(self):
        draft = invoice_with([])
        final = draft.finalize(invoice_number("INV-2026", 1), utc(2026, 2, 1, 1))
        assert (final.status, final.number) == (InvoiceStatus.FINALIZED, "INV-2026-000001")
        assert final.content_hash == content_hash(final)
        assert len(final.content_hash) == 64

    def test_the_hash_changes_when_any_billed_amount_changes(self):
        v1 = version("v1", 1, "10.00", "0.05")
        sub = subscription(utc(2026, 1, 1), (Phase("v1", "voip", 1, utc(2026, 1, 1)),))
        context = context_for(sub, {"v1": v1})
        lines = price_period(context, usage_of(context, {(utc(2026, 1, 1), utc(2026, 2, 1)): D(361)}))
        final = invoice_with(lines).finalize("INV-2026-000001", utc(2026, 2, 1))
        tampered = replace(final, lines=(replace(lines[0], amount=D("10.01")), lines[1]))
        assert content_hash(tampered) != final.content_hash
        # Paying is not a content change.
        assert content_hash(final.mark_paid(utc(2026, 2, 3))) == final.content_hash

    def test_paid_and_void_are_reachable_only_from_finalized(self):
        draft = invoice_with([])
        with pytest.raises(FailedPrecondition):
            draft.mark_paid(utc(2026, 2, 1))
        with pytest.raises(FailedPrecondition):
            draft.void(utc(2026, 2, 1), "wrong")
        paid = draft.finalize("INV-2026-000002", utc(2026, 2, 1)).mark_paid(utc(2026, 2, 2))
        with pytest.raises(FailedPrecondition):
            paid.void(utc(2026, 2, 3), "too late")
        voided = draft.finalize("INV-2026-000003", utc(2026, 2, 1)).void(utc(2026, 2, 2), "duplicate")
        assert (voided.status, voided.void_reason) == (InvoiceStatus.VOID, "duplicate")

    def test_a_zero_amount_invoice_totals_zero(self):
        assert invoice_with([]).total == D(0)


class TestAdjustmentProperties:
    @settings(max_examples=100, deadline=None)
    @given(st.integers(0, 10_000), st.lists(st.integers(0, 10_000), min_size=1, max_size=6))
    def test_billed_plus_every_adjustment_always_equals_the_latest_pricing(self, billed_minutes, later_minutes):
        v1 = version("v1", 1, "10.00", "0.05")
        sub = subscription(utc(2026, 1, 1), (Phase("v1", "voip", 1, utc(2026, 1, 1)),))
        context = context_for(sub, {"v1": v1})

        def priced(minutes):
            return price_period(context, usage_of(context, {(utc(2026, 1, 1), utc(2026, 2, 1)): D(minutes)}))

        original = invoice_with(priced(billed_minutes), status=InvoiceStatus.FINALIZED)
        made = []
        for minutes in later_minutes:
            made.extend(adjustment_lines(original, priced(minutes), made))
        latest = sum((line.amount for line in priced(later_minutes[-1])), D(0))
        assert original.total + sum((a.amount for a in made), D(0)) == latest
        assert all(a.amount != 0 for a in made)


class TestBilledUsageSpan:
    def invoice(self, invoice_id: str, day: int, minutes: int) -> Invoice:
        v1 = version("v1", 1, "10.00", "0.05")
        sub = subscription(utc(2026, 1, 1), (Phase("v1", "voip", 1, utc(2026, 1, 1)),))
        context = context_for(sub, {"v1": v1}, index=day)
        lines = price_period(context, usage_of(context, {(context.period.start, context.period.end): D(minutes)}))
        return replace(invoice_with(lines, status=InvoiceStatus.FINALIZED), id=invoice_id,
                       period_start=context.period.start, period_end=context.period.end)

    def test_contiguous_invoices_give_one_span_with_the_billed_usage_and_adjustments(self):
        first, second = self.invoice("a", 0, 100), self.invoice("b", 1, 50)
        (late,) = adjustment_lines(first, self.invoice("a", 0, 130).lines, [])
        start, end, totals = billed_usage_span([second, first], [late])
        assert (start, end) == (utc(2026, 1, 1), utc(2026, 3, 1))
        assert totals == {"call_minutes": D(180)}

    def test_a_gap_between_billed_periods_gives_no_span(self):
        assert billed_usage_span([self.invoice("a", 0, 1), self.invoice("c", 2, 1)], []) is None
