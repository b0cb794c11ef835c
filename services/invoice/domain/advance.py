"""In-advance fees: billed when a period opens, corrected to the second when the plan changes.

Rules (docs/billing.md has worked examples that tests run):

- **Period start.** When a period opens, its PERIOD_START invoice bills the in-advance fees of
  the plan version in force at the period's start, for the period as scheduled then (a
  partial first period of a calendar anchor, or a period already cut by a cancellation, is
  prorated by local days like every partial period).
- **Corrections at period end.** The period's PERIOD_END invoice compares what was billed in
  advance for the period with the plan versions actually in force over it:
  - a billed fee whose version stopped being in force during the period (plan change or
    cancellation) gets a **credit** line for the unused part: ``-fee × unused seconds /
    period seconds``;
  - a version that came into force during the period gets a **charge** line for each of its
    in-advance fees over the part it covers and that was not billed: ``fee × covered seconds
    / period seconds``.
  Seconds are whole seconds (instants truncated to the second) of the nominal period, so a
  change at 14:00:00 on the 10th of a 30-day month credits exactly 20 days 10 hours.
- **Rounding.** Each line is rounded once, to the currency's minor unit with ROUND_HALF_EVEN,
  from the exact fraction ``fee × seconds / period seconds`` (no intermediate rounding).
- **Fees that do not prorate** (``prorate: false``) are billed whole at the period start by
  the version in force then, and are neither credited nor charged on a change: a new
  version's non-prorating fee starts with the next period.

Pure: no grpc, no protobuf, no SQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from fractions import Fraction

from services.invoice.domain.invoices import InvoiceLine, LineKind
from services.invoice.domain.plans import FeeTiming, FixedFee, Phase, PlanVersion, Subscription
from services.invoice.domain.pricing import price_fixed_fee
from tally.currency import minor_units
from tally.domain.periods import Period, Schedule, proration


def whole_seconds(start: datetime, end: datetime) -> int:
    """Seconds from ``start`` to ``end``, both truncated to the second."""
    return int((end.replace(microsecond=0) - start.replace(microsecond=0)).total_seconds())


def round_fraction(value: Fraction, currency: str) -> Decimal:
    """An exact fraction rounded once to the currency's minor unit, ROUND_HALF_EVEN."""
    scale = 10 ** minor_units(currency)
    scaled = value * scale
    floor = scaled.numerator // scaled.denominator
    remainder = scaled - floor
    if remainder > Fraction(1, 2) or (remainder == Fraction(1, 2) and floor % 2 == 1):
        floor += 1
    return Decimal(floor).scaleb(-minor_units(currency)).quantize(Decimal(1).scaleb(-minor_units(currency)))


def in_advance_fees(version: PlanVersion) -> tuple[FixedFee, ...]:
    return tuple(fee for fee in version.fixed_fees if fee.timing is FeeTiming.IN_ADVANCE)


def version_of(versions: Mapping[str, PlanVersion], phase: Phase) -> PlanVersion:
    """The phase's plan version as the subscription pays it (its price overrides applied)."""
    return versions[phase.plan_version_id].with_overrides(phase.price_overrides)


def period_start_lines(
    subscription: Subscription,
    schedule: Schedule,
    period: Period,
    versions: Mapping[str, PlanVersion],
    currency: str,
) -> list[InvoiceLine]:
    """The PERIOD_START invoice's lines: the in-advance fees of the version in force at the start."""
    phase = subscription.phase_at(period.start)
    if phase is None:
        return []
    version = version_of(versions, phase)
    share = proration(schedule, period)
    return [
        price_fixed_fee(
            fee,
            currency=currency,
            start=period.start,
            end=period.end,
            proration=share,
            plan_key=version.plan_key,
            plan_version=version.version,
        )
        for fee in in_advance_fees(version)
    ]


def _subtract(ranges: list[tuple[datetime, datetime]], cut: tuple[datetime, datetime]) -> list[tuple[datetime, datetime]]:
    out = []
    for start, end in ranges:
        if cut[1] <= start or cut[0] >= end:
            out.append((start, end))
            continue
        if start < cut[0]:
            out.append((start, cut[0]))
        if cut[1] < end:
            out.append((cut[1], end))
    return out


def _proration_line(
    fee: FixedFee,
    version: PlanVersion,
    ranges: list[tuple[datetime, datetime]],
    period_seconds: int,
    currency: str,
    *,
    credit: bool,
) -> InvoiceLine | None:
    seconds = sum(whole_seconds(start, end) for start, end in ranges)
    if seconds <= 0 or period_seconds <= 0:
        return None
    exact = Fraction(fee.amount) * Fraction(seconds, period_seconds)
    amount = round_fraction(exact, currency)
    name = fee.name or fee.key
    label = f"{version.plan_key} v{version.version}"
    description = f"Unused {name} ({label}), credited" if credit else f"{name} ({label}) for the rest of the period"
    return InvoiceLine(
        kind=LineKind.PRORATION,
        description=description,
        amount=-amount if credit else amount,
        period_start=ranges[0][0],
        period_end=ranges[-1][1],
        charge_key=fee.key,
        plan_key=version.plan_key,
        plan_version=version.version,
        quantity=Decimal(1),
        unit_price=fee.amount,
        proration=Decimal(seconds) / Decimal(period_seconds),
        prorated_seconds=seconds,
        period_seconds=period_seconds,
        price_override=fee.overridden,
    )


def in_advance_corrections(
    subscription: Subscription,
    period: Period,
    versions: Mapping[str, PlanVersion],
    currency: str,
    billed: Iterable[InvoiceLine],
    start_voided: bool = False,
) -> list[InvoiceLine]:
    """PRORATION lines for the PERIOD_END invoice: credits for unused billed fees, charges for new ones.

    Args:
        subscription: with its final phases.
        period: the period as it is now (cut by a cancellation if any); full_start/full_end
            are the nominal bounds the seconds are counted over.
        versions: plan versions by id.
        currency: the invoice's currency.
        billed: the in-advance fee lines already billed for this period (its PERIOD_START
            invoice, or a legacy invoice of the period before), non-void.
        start_voided: the period's PERIOD_START invoice was voided: the operator cancelled
            that bill, so the version in force at the period start is not billed again here.
    """
    full_start = period.full_start or period.start
    full_end = period.full_end or period.end
    period_seconds = whole_seconds(full_start, full_end)
    parts = subscription.phases_over(period.start, period.end)
    by_label = {(v.plan_key, v.version): v for v in versions.values()}
    by_label.update({(p.plan_key, p.plan_version): version_of(versions, p) for p in subscription.phases})
    lines: list[InvoiceLine] = []
    # What was billed, per (version, fee): the ranges it paid for.
    billed_ranges: dict[tuple[str, int, str], list[tuple[datetime, datetime]]] = {}
    billed_amount: dict[tuple[str, int, str], Decimal] = {}
    for line in billed:
        key = (line.plan_key, line.plan_version, line.charge_key)
        billed_ranges.setdefault(key, []).append((line.period_start, line.period_end))
        if line.unit_price is not None:
            billed_amount[key] = line.unit_price
    for (plan_key, plan_version, fee_key), ranges in billed_ranges.items():
        version = by_label.get((plan_key, plan_version))
        fee = next((f for f in in_advance_fees(version) if f.key == fee_key), None) if version else None
        if fee is None or not fee.prorate:
            continue
        # The credit is of the fee as it was billed (a price override included).
        fee = replace(fee, amount=billed_amount.get((plan_key, plan_version, fee_key), fee.amount))
        unused = sorted(ranges)
        for phase, start, end in parts:
            if (phase.plan_key, phase.plan_version) == (plan_key, plan_version):
                unused = _subtract(unused, (start, end))
        line = _proration_line(fee, version, unused, period_seconds, currency, credit=True)
        if line is not None:
            lines.append(line)
    for phase, start, end in parts:
        if start <= period.start and start_voided:
            # A void is the operator's decision about that bill: not re-billed here.
            continue
        version = version_of(versions, phase)
        for fee in in_advance_fees(version):
            if not fee.prorate:
                continue
            uncovered = [(start, end)]
            for paid in billed_ranges.get((version.plan_key, version.version, fee.key), []):
                uncovered = _subtract(uncovered, paid)
            line = _proration_line(fee, version, uncovered, period_seconds, currency, credit=False)
            if line is not None:
                lines.append(line)
    return lines
