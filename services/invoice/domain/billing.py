"""Pricing a subscription's billing period into invoice lines, and adjustments for late usage.

A period is cut into parts by the subscription's phases (plan changes). Each part is priced
with the plan version in force over it:
- fixed fees IN_ARREARS: prorated by the part's share of the period's local days;
- usage charges: the meter's usage over the part; included units are a per-period allowance
  used up across the parts in order, each part offering its own version's allowance minus
  what earlier parts used;
- fixed fees IN_ADVANCE: billed by the period's own PERIOD_START invoice when it opens
  (domain/advance.py); the PERIOD_END invoice priced here carries only their corrections
  (PRORATION lines) for plan changes and cancellations during the period.

Usage is the subscription's own (docs/billing-attribution.md): what ingest attributed to it,
plus the customer's unattributed usage over a part where no other subscription of the
customer charges the same meter; where another one does, neither takes the unattributed
usage: it is billed by no one and shown as an invoice warning (never billed twice).

Pure: the service layer fetches the usage named by ``usage_queries`` and passes it in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

from services.invoice.domain.advance import in_advance_corrections
from services.invoice.domain.invoices import (
    UNATTRIBUTED_USAGE_NOT_BILLED,
    Invoice,
    InvoiceLine,
    InvoiceWarning,
    LineKind,
)
from services.invoice.domain.plans import FeeTiming, Phase, PlanVersion, Subscription, UsageCharge
from services.invoice.domain.pricing import UsagePart, price_fixed_fee, price_usage_charge
from tally import wire
from tally.domain.periods import Period, Schedule, proration


@dataclass(frozen=True)
class UsageQuery:
    """One meter query the period needs: usage of ``meter_key`` over [start, end).

    Whose usage: the subscription's (``subscription_id``), plus the customer's unattributed
    usage when ``unattributed``; with no subscription, ``unattributed`` reads the unattributed
    usage alone, and neither reads the customer's whole usage.
    """

    meter_key: str
    start: datetime
    end: datetime
    group_by: tuple[str, ...] = ()
    subscription_id: str = ""
    unattributed: bool = False


@dataclass(frozen=True)
class PeriodContext:
    """Everything pricing a period needs besides usage."""

    subscription: Subscription
    schedule: Schedule
    period: Period
    versions: Mapping[str, PlanVersion]
    currency: str
    # The in-advance fee lines billed for this period (its PERIOD_START invoice), non-void.
    billed_in_advance: tuple[InvoiceLine, ...] = ()
    # The period's PERIOD_START invoice was voided.
    start_voided: bool = False
    # The customer's other subscriptions (their plan versions are in ``versions`` too), and
    # when each stops charging (a cancellation), by id.
    others: tuple[Subscription, ...] = ()
    others_end: Mapping[str, datetime | None] | None = None

    def competitors(self, meter_key: str, start: datetime, end: datetime) -> tuple[str, ...]:
        """The other subscriptions whose plan charges ``meter_key`` somewhere in [start, end)."""
        found = []
        for other in self.others:
            stop = (self.others_end or {}).get(other.id)
            until = end if stop is None else min(end, stop)
            for phase, _, _ in other.phases_over(start, until) if start < until else ():
                version = self.versions.get(phase.plan_version_id)
                if version is not None and any(c.meter_key == meter_key for c in version.usage_charges):
                    found.append(other.id)
                    break
        return tuple(found)

    def usage_query(self, charge: UsageCharge, start: datetime, end: datetime) -> UsageQuery:
        """The query of a usage charge over a part: the subscription's usage, with the
        unattributed usage when no other subscription charges the meter over the part."""
        alone = not self.competitors(charge.meter_key, start, end)
        return UsageQuery(charge.meter_key, start, end, charge.group_by, self.subscription.id, alone)

    def version_of(self, phase: Phase) -> PlanVersion:
        """The phase's plan version with the phase's price overrides applied."""
        return self.versions[phase.plan_version_id].with_overrides(phase.price_overrides)

    def parts(self) -> list[tuple[PlanVersion, datetime, datetime]]:
        """(version, start, end) for each phase overlapping the period, in order."""
        return [
            (self.version_of(phase), start, end)
            for phase, start, end in self.subscription.phases_over(self.period.start, self.period.end)
        ]


def usage_queries(context: PeriodContext) -> list[UsageQuery]:
    """The meter queries needed to price the period (deduplicated, in a stable order)."""
    queries: list[UsageQuery] = []
    for version, start, end in context.parts():
        for charge in version.usage_charges:
            query = context.usage_query(charge, start, end)
            if query not in queries:
                queries.append(query)
            if not query.unattributed:
                # The unattributed usage no subscription takes, for the invoice's warning.
                left = UsageQuery(charge.meter_key, start, end, (), "", True)
                if left not in queries:
                    queries.append(left)
    return queries


def unattributed_warnings(context: PeriodContext, usage: Mapping[UsageQuery, UsagePart]) -> list[InvoiceWarning]:
    """A warning per part and meter whose unattributed usage no subscription could take."""
    warnings = []
    seen = set()
    for version, start, end in context.parts():
        for charge in version.usage_charges:
            competing = context.competitors(charge.meter_key, start, end)
            key = (charge.meter_key, start, end)
            if not competing or key in seen:
                continue
            seen.add(key)
            left = usage[UsageQuery(charge.meter_key, start, end, (), "", True)]
            if left.total:
                warnings.append(
                    InvoiceWarning(
                        code=UNATTRIBUTED_USAGE_NOT_BILLED,
                        description=(
                            f"{left.total} of {charge.meter_key} attributed to no subscription is not billed: "
                            f"{len(competing) + 1} subscriptions of the customer charge it over this period; "
                            "send events naming their subscription"
                        ),
                        meter_key=charge.meter_key,
                        period_start=start,
                        period_end=end,
                        quantity=left.total,
                        competing_subscription_ids=competing,
                    )
                )
    return warnings


def _without_flat_at_zero(charge: UsageCharge) -> UsageCharge:
    return replace(
        charge,
        price=replace(charge.price, charge_flat_amount_at_zero=False),
        dimension_prices=tuple(
            replace(dp, price=replace(dp.price, charge_flat_amount_at_zero=False)) for dp in charge.dimension_prices
        ),
    )


def _usage_for(
    context: PeriodContext, charge: UsageCharge, start: datetime, end: datetime, usage: Mapping[UsageQuery, UsagePart]
) -> UsagePart:
    return usage[context.usage_query(charge, start, end)]


def price_period(context: PeriodContext, usage: Mapping[UsageQuery, UsagePart]) -> list[InvoiceLine]:
    """Every fixed fee and usage line of the period's invoice (adjustments not included)."""
    lines: list[InvoiceLine] = []
    period = context.period
    included_used: dict[str, Decimal] = {}
    for version, start, end in context.parts():
        share = proration(context.schedule, period, start, end)
        for fee in version.fixed_fees:
            if fee.timing is FeeTiming.IN_ARREARS:
                lines.append(
                    price_fixed_fee(
                        fee,
                        currency=context.currency,
                        start=start,
                        end=end,
                        proration=share,
                        plan_key=version.plan_key,
                        plan_version=version.version,
                    )
                )
        for charge in version.usage_charges:
            if charge.key in included_used:
                # An earlier part priced this charge: a tier's flat amount at zero usage is
                # charged once per period, not once per plan-version part.
                charge = _without_flat_at_zero(charge)
            available = wire.EXACT.subtract(charge.included_units, included_used.get(charge.key, Decimal(0)))
            charge_lines, used = price_usage_charge(
                charge,
                _usage_for(context, charge, start, end, usage),
                currency=context.currency,
                included_available=available,
                plan_key=version.plan_key,
                plan_version=version.version,
            )
            included_used[charge.key] = wire.EXACT.add(included_used.get(charge.key, Decimal(0)), used)
            lines.extend(charge_lines)
    lines.extend(
        in_advance_corrections(
            context.subscription,
            period,
            context.versions,
            context.currency,
            context.billed_in_advance,
            context.start_voided,
        )
    )
    return lines


def adjustment_key(line: InvoiceLine) -> str:
    """What identifies the billed item a line or an adjustment refers to."""
    dims = ",".join(f"{k}={v}" for k, v in line.dimensions)
    # The plan version too: a PRORATION credit of the old version and the charge of the new
    # one cover the same fee key and range, and are adjusted as two items.
    plan = f"{line.plan_key}@{line.plan_version}"
    return f"{line.charge_key}|{dims}|{line.period_start.isoformat()}|{line.period_end.isoformat()}|{plan}"


def adjustment_lines(
    original: Invoice,
    fresh: list[InvoiceLine],
    earlier_adjustments: list[InvoiceLine],
) -> list[InvoiceLine]:
    """Lines correcting a finalized invoice: fresh pricing minus what was billed and adjusted.

    Args:
        original: the finalized invoice of the period.
        fresh: the period priced again from the meter's current usage.
        earlier_adjustments: adjustment lines for ``original`` already on other (non-void)
            invoices, so each difference is adjusted exactly once.
    """
    billed: dict[str, tuple[Decimal, Decimal, InvoiceLine]] = {}

    def add(line: InvoiceLine, sign: int, table: dict) -> None:
        key = adjustment_key(line)
        amount, quantity, first = table.get(key, (Decimal(0), Decimal(0), line))
        plus, times = wire.EXACT.add, wire.EXACT.multiply
        table[key] = (
            plus(amount, times(sign, line.amount)),
            plus(quantity, times(sign, line.usage or Decimal(0))),
            first,
        )

    for line in original.lines:
        if line.kind is not LineKind.ADJUSTMENT:
            add(line, 1, billed)
    for line in earlier_adjustments:
        add(line, 1, billed)
    now: dict[str, tuple[Decimal, Decimal, InvoiceLine]] = {}
    for line in fresh:
        add(line, 1, now)
    adjustments = []
    for key in list(billed) + [k for k in now if k not in billed]:
        fresh_amount, fresh_usage, fresh_line = now.get(key, (Decimal(0), Decimal(0), None))
        billed_amount, billed_usage, billed_line = billed.get(key, (Decimal(0), Decimal(0), None))
        difference = wire.EXACT.subtract(fresh_amount, billed_amount)
        if difference == 0:
            continue
        template = fresh_line or billed_line
        usage_change = wire.EXACT.subtract(fresh_usage, billed_usage)
        what = "late usage" if usage_change > 0 else "usage corrected" if usage_change < 0 else "re-priced"
        adjustments.append(
            InvoiceLine(
                kind=LineKind.ADJUSTMENT,
                description=f"Adjustment to {original.number or original.id}: {template.description}, {what}",
                amount=difference,
                period_start=template.period_start,
                period_end=template.period_end,
                charge_key=template.charge_key,
                meter_key=template.meter_key,
                dimensions=template.dimensions,
                plan_key=template.plan_key,
                plan_version=template.plan_version,
                quantity=usage_change if template.kind is LineKind.USAGE else None,
                usage=usage_change,
                adjusts_invoice_id=original.id,
                adjusts_period_start=original.period_start,
                adjusts_period_end=original.period_end,
            )
        )
    return adjustments


def billed_usage_span(originals: list[Invoice], adjustments: list[InvoiceLine]) -> tuple[datetime, datetime, dict[str, Decimal]] | None:
    """The contiguous span billed invoices cover, and the usage billed per meter over it.

    For additive meters (SUM, COUNT) one usage query over the span equal to this total proves
    nothing changed since billing, so the periods need not be priced again one by one. None
    when the invoices do not tile one span or a meter is billed by two lines of one part (the
    caller then checks every period).
    """
    if not originals:
        return None
    ordered = sorted(originals, key=lambda i: i.period_start)
    for before, after in zip(ordered, ordered[1:]):
        if before.period_end != after.period_start:
            return None
    totals: dict[str, Decimal] = {}
    seen: set[tuple[str, str, datetime]] = set()
    for invoice in ordered:
        for line in invoice.lines:
            if line.kind is not LineKind.USAGE or not line.meter_key or line.usage is None:
                continue
            # Two charges reading one meter over one part would count its usage twice.
            if any(m == line.meter_key and start == line.period_start and c != line.charge_key for m, c, start in seen):
                return None
            seen.add((line.meter_key, line.charge_key, line.period_start))
            totals[line.meter_key] = wire.EXACT.add(totals.get(line.meter_key, Decimal(0)), line.usage)
    ids = {i.id for i in ordered}
    for line in adjustments:
        if line.adjusts_invoice_id in ids and line.meter_key and line.usage is not None and line.kind is LineKind.ADJUSTMENT:
            totals[line.meter_key] = wire.EXACT.add(totals.get(line.meter_key, Decimal(0)), line.usage)
    return ordered[0].period_start, ordered[-1].period_end, totals
