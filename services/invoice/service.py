"""Use cases of the invoice service: period close, lifecycle, preview, periods, PDF."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from services.invoice.clients import CatalogClient, IngestClient, MeterClient
from services.invoice.domain.billing import (
    PeriodContext,
    UsageQuery,
    adjustment_lines,
    billed_usage_span,
    price_period,
    unattributed_warnings,
    usage_queries,
)
from services.invoice.domain.advance import in_advance_fees, period_start_lines
from services.invoice.domain.invoices import (
    Invoice,
    InvoiceKind,
    InvoiceLine,
    InvoiceStatus,
    InvoiceWarning,
    LineKind,
    LineRecordsWindow,
    invoice_number,
    line_records_window,
    metered_line,
    number_sequence,
)
from services.invoice.domain.plans import Customer, PlanVersion, Subscription, UsageCharge
from services.invoice.domain.pricing import UsagePart
from services.invoice.pdf import render_invoice_pdf
from services.invoice.repository import BILLED, InvoiceRepository
from tally.db import transaction
from tally.domain.periods import Period, Schedule, period_containing, periods
from tally.quarantine import Quarantine
from tally.errors import DomainError, FailedPrecondition, InvalidInput, NotFound, Unavailable, Violation
from tally.metrics import INVOICES_CLOSED, INVOICES_FINALIZED
from tally.pagination import decode_page_token, encode_page_token, page_size

log = structlog.get_logger()
UTC = timezone.utc
MAX_GRACE_SECONDS = 72 * 3600
# How far past this service's clock a CloseDuePeriods as_of may be: callers' clocks drift a
# little; anything beyond is a typo that would invoice periods that have not ended yet.
AS_OF_CLOCK_SKEW = timedelta(seconds=60)
# Meters whose usage over a span is the sum of their usage over its parts.
ADDITIVE_AGGREGATIONS = frozenset({"SUM", "COUNT"})
# Invoice ids and numbers named in a request: bounded, NUL-free text.
MAX_REF_CHARS = 255


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class InvoiceSettings:
    """TALLY_INVOICE_* settings."""

    grace_seconds: int = 3600
    close_interval_seconds: float = 60.0
    adjustment_lookback_days: int = 35
    close_concurrency: int = 64
    seller_name: str = "Tally"
    seller_details: str = ""

    def __post_init__(self) -> None:
        problems = []
        if not 0 <= self.grace_seconds <= MAX_GRACE_SECONDS:
            problems.append(Violation("TALLY_INVOICE_GRACE_SECONDS", f"must be between 0 and {MAX_GRACE_SECONDS} (72 h)"))
        if self.close_interval_seconds < 0:
            problems.append(Violation("TALLY_INVOICE_CLOSE_INTERVAL_SECONDS", "must be >= 0 (0 disables the scheduler)"))
        if self.adjustment_lookback_days < 1:
            problems.append(Violation("TALLY_INVOICE_ADJUSTMENT_LOOKBACK_DAYS", "must be >= 1"))
        if self.close_concurrency < 1:
            problems.append(Violation("TALLY_INVOICE_CLOSE_CONCURRENCY", "must be >= 1"))
        if problems:
            raise InvalidInput("invalid invoice settings", violations=problems)

    @classmethod
    def from_env(cls) -> "InvoiceSettings":
        def env(name: str, default: str) -> str:
            return os.environ.get(name) or default

        try:
            return cls(
                grace_seconds=int(env("TALLY_INVOICE_GRACE_SECONDS", "3600")),
                close_interval_seconds=float(env("TALLY_INVOICE_CLOSE_INTERVAL_SECONDS", "60")),
                adjustment_lookback_days=int(env("TALLY_INVOICE_ADJUSTMENT_LOOKBACK_DAYS", "35")),
                close_concurrency=int(env("TALLY_INVOICE_CLOSE_CONCURRENCY", "64")),
                seller_name=env("TALLY_INVOICE_SELLER_NAME", "Tally"),
                seller_details=env("TALLY_INVOICE_SELLER_DETAILS", ""),
            )
        except ValueError as error:
            raise InvalidInput(f"invalid invoice settings: {error}") from None


class _PeriodTaken(Exception):
    """A period being inserted already had an invoice (a concurrent close won the race)."""


@dataclass
class CloseResult:
    created: list[str] = field(default_factory=list)
    finalized: int = 0
    waiting_for_usage: int = 0
    failed: int = 0
    # This run's failed subscriptions (tally.quarantine.QuarantinedRecord).
    quarantined: list = field(default_factory=list)


@dataclass
class _Account:
    """A subscription with what pricing it needs, fetched once per run."""

    subscription: Subscription
    customer: Customer
    versions: dict[str, PlanVersion]
    schedule: Schedule
    # The customer's other subscriptions (their versions are in ``versions``) and when each
    # stops charging; filled by _with_others before pricing.
    others: tuple[Subscription, ...] = ()
    others_end: dict[str, datetime | None] = field(default_factory=dict)
    # Periods whose PERIOD_START invoice was voided (their in-advance fee is not billed again).
    voided_period_starts: frozenset[datetime] = frozenset()

    def currency(self, period: Period) -> str:
        phase = self.subscription.phase_at(period.start) or self.subscription.phases[-1]
        return self.versions[phase.plan_version_id].currency or self.customer.currency


class InvoiceService:
    def __init__(
        self,
        engine: AsyncEngine,
        catalog: CatalogClient,
        meter: MeterClient,
        settings: InvoiceSettings,
        clock: Callable[[], datetime] = utcnow,
        *,
        ingest: IngestClient | None = None,
    ) -> None:
        self.engine = engine
        self.catalog = catalog
        self.meter = meter
        self.settings = settings
        self.clock = clock
        # Only the records behind an invoice line come from ingest (ListInvoiceLineRecords).
        self.ingest = ingest
        self._limit = asyncio.Semaphore(settings.close_concurrency)
        # Subscriptions whose close failed: counted, logged with their id, listed by
        # GetInvoiceStatus, retried on every run (and released once one succeeds).
        self.quarantine = Quarantine()

    def _close_failed(self, subscription_id: str, error: BaseException | str, result: CloseResult) -> None:
        result.failed += 1
        record = self.quarantine.add("invoice.close", "subscription", subscription_id, error)
        result.quarantined.append(record)

    # ------------------------------------------------------------------ period close

    async def close_due_periods(self, as_of: datetime | None = None, subscription_ids: Sequence[str] = ()) -> CloseResult:
        """A PERIOD_START invoice per opened period with in-advance fees (final at once), a
        PERIOD_END invoice per ended period; finalize drafts whose grace is over.

        Drafts are finalized only once the meter's watermark is past period end + grace, so
        no late-but-in-grace usage is missed. Safe to run concurrently: the unique
        (subscription_id, period_start, kind) constraint keeps one invoice of each kind per
        period, and finalization locks the draft row. ``as_of`` more than AS_OF_CLOCK_SKEW
        past the clock is refused; within it, it is read as now.
        """
        now = self.clock()
        if as_of is not None and as_of > now + AS_OF_CLOCK_SKEW:
            raise InvalidInput(
                "as_of is in the future",
                violations=[
                    Violation(
                        "as_of",
                        f"{as_of.isoformat()} is after now ({now.isoformat()}) by more than "
                        f"{int(AS_OF_CLOCK_SKEW.total_seconds())} s of allowed clock skew; periods close only once they have ended",
                        "AS_OF_IN_FUTURE",
                    )
                ],
            )
        as_of = min(as_of or now, now)
        watermark = await self.meter.applied_watermark()
        result = CloseResult()
        # Closing everything: a few ListCustomers pages beat one GetCustomer per subscription.
        customers: dict[str, Customer] = {} if subscription_ids else await self.catalog.all_customers()
        pages = [page async for page in self._subscription_pages(subscription_ids, result)]
        siblings: dict[str, list[Subscription]] | None = None
        if not subscription_ids:
            # Closing everything lists every subscription anyway: keep the lists by customer, so
            # that who bills unattributed usage is decided without a catalog call per subscription.
            siblings = {}
            for page in pages:
                for subscription in page:
                    siblings.setdefault(subscription.customer_id, []).append(subscription)
        await asyncio.gather(*(self._close_page(page, as_of, watermark, customers, result, siblings) for page in pages))
        async with self.engine.connect() as conn:
            draft_ids = await InvoiceRepository(conn).due_draft_ids(as_of, subscription_ids)
        await asyncio.gather(
            *(self._finalize_due_draft(i, as_of, watermark, customers, result, siblings) for i in draft_ids)
        )
        log.info(
            "periods_closed",
            as_of=as_of.isoformat(),
            created=len(result.created),
            finalized=result.finalized,
            waiting_for_usage=result.waiting_for_usage,
            failed=result.failed,
        )
        return result

    async def _subscription_pages(self, ids: Sequence[str], result: CloseResult) -> AsyncIterator[list[Subscription]]:
        if not ids:
            async for page in self.catalog.subscription_pages(
                on_bad=lambda subscription_id, error: self._close_failed(subscription_id, error, result)
            ):
                yield page
            return
        found = []
        for subscription_id in dict.fromkeys(ids):
            try:
                found.append(await self.catalog.subscription(subscription_id))
            except NotFound:
                raise NotFound(
                    f"subscription {subscription_id} not found", violations=[Violation("subscription_ids", subscription_id)]
                ) from None
        yield found

    async def _account(self, subscription: Subscription, customers: dict[str, Customer]) -> _Account:
        versions = {}
        for phase in subscription.phases:
            if phase.plan_version_id not in versions:
                versions[phase.plan_version_id] = await self.catalog.plan_version(phase.plan_version_id)
        customer = customers.get(subscription.customer_id)
        if customer is None:
            customer = customers[subscription.customer_id] = await self.catalog.customer(subscription.customer_id)
        first = versions[subscription.phases[0].plan_version_id]
        return _Account(subscription, customer, versions, subscription.schedule(first, customer.timezone))

    async def _with_others(
        self, account: _Account, siblings: dict[str, list[Subscription]] | None = None
    ) -> _Account:
        """The account with the customer's other subscriptions, which decide who bills the
        unattributed usage (docs/billing-attribution.md): from ``siblings`` (every subscription
        by customer, when the caller listed them all), else one catalog call."""
        subscription = account.subscription
        listed = (
            siblings[subscription.customer_id]
            if siblings is not None and subscription.customer_id in siblings
            else await self.catalog.customer_subscriptions(subscription.customer_id)
        )
        others = tuple(s for s in listed if s.id != subscription.id)
        versions = dict(account.versions)
        ends: dict[str, datetime | None] = {}
        for other in others:
            for phase in other.phases:
                if phase.plan_version_id not in versions:
                    versions[phase.plan_version_id] = await self.catalog.plan_version(phase.plan_version_id)
            first = versions[other.phases[0].plan_version_id]
            ends[other.id] = other.schedule(first, account.customer.timezone).end
        return replace(account, versions=versions, others=others, others_end=ends)

    async def _close_page(
        self,
        page: list[Subscription],
        as_of: datetime,
        watermark: datetime | None,
        customers: dict[str, Customer],
        result: CloseResult,
        siblings: dict[str, list[Subscription]] | None = None,
    ) -> None:
        ids = [s.id for s in page]
        since = as_of - timedelta(days=self.settings.adjustment_lookback_days)
        async with self.engine.connect() as conn:
            repo = InvoiceRepository(conn)
            invoiced = await repo.period_starts(ids)
            opened = await repo.period_starts(ids, InvoiceKind.PERIOD_START)
            voided = await repo.voided_period_starts(ids)

        async def due_of(subscription: Subscription) -> tuple[_Account, list[tuple[Period, InvoiceKind]]] | None:
            try:
                async with self._limit:
                    account = await self._account(subscription, customers)
                # Inside the try: a schedule that cannot be walked (a start at 9999-12-31
                # overflows) fails this subscription only.
                account.voided_period_starts = frozenset(voided[subscription.id])
                ended = invoiced[subscription.id]
                due: list[tuple[Period, InvoiceKind]] = []
                for period in periods(account.schedule, as_of + timedelta(microseconds=1)):
                    # A period that has opened bills its in-advance fees; one already closed at its
                    # end (before period-start invoices existed) is not billed in advance again.
                    if period.start not in opened[subscription.id] and period.start not in ended and _bills_in_advance(
                        account, period
                    ):
                        due.append((period, InvoiceKind.PERIOD_START))
                    if period.end <= as_of and period.start not in ended:
                        due.append((period, InvoiceKind.PERIOD_END))
            except Exception as error:  # noqa: BLE001 - one bad subscription must not stop the others
                log.warning("subscription_close_failed", subscription_id=subscription.id, error=str(error))
                self._close_failed(subscription.id, error, result)
                return None
            self.quarantine.release("invoice.close", "subscription", subscription.id)
            return (account, due) if due else None


        # Most runs of the scheduler find nothing due: only then is history loaded and usage read.
        due_accounts = [found for found in await asyncio.gather(*(due_of(s) for s in page)) if found]
        if not due_accounts:
            return

        async def with_others(
            account: _Account, due: list[tuple[Period, InvoiceKind]]
        ) -> tuple[_Account, list[tuple[Period, InvoiceKind]]] | None:
            try:
                async with self._limit:
                    return await self._with_others(account, siblings), due
            except Exception as error:  # noqa: BLE001 - one bad subscription must not stop the others
                result.failed += 1
                log.warning("subscription_close_failed", subscription_id=account.subscription.id, error=str(error))
                return None

        due_accounts = [found for found in await asyncio.gather(*(with_others(a, d) for a, d in due_accounts)) if found]
        if not due_accounts:
            return
        due_ids = [a.subscription.id for a, _ in due_accounts]
        async with self.engine.connect() as conn:
            repo = InvoiceRepository(conn)
            history = await repo.history(due_ids, since)
            # The invoices that may have billed a period's in-advance fees before PERIOD_START
            # invoices existed: the previous period's (whatever the lookback).
            previous = await repo.billed_ending_at(
                due_ids, [p.start for _, due in due_accounts for p, k in due if k is InvoiceKind.PERIOD_START]
            )
        due_accounts = [
            (account, [(p, k) for p, k in due if k is InvoiceKind.PERIOD_END or not _billed_before(previous[account.subscription.id], p)])
            for account, due in due_accounts
        ]

        usage = await self._prefetch_usage(due_accounts)

        async def close_one(account: _Account, due: list[tuple[Period, InvoiceKind]]) -> list[Invoice]:
            subscription = account.subscription
            async with self._limit:
                try:
                    drafts = []
                    has_draft = any(
                        i.status is InvoiceStatus.DRAFT and i.kind is InvoiceKind.PERIOD_END for i in history[subscription.id]
                    )
                    first_end = True
                    # A period's PERIOD_START invoice made in this run is what its PERIOD_END
                    # invoice (possibly made in this run too) corrects.
                    known = list(history[subscription.id])
                    for period, kind in due:
                        warnings: list = []
                        if kind is InvoiceKind.PERIOD_START:
                            lines = self._price_period_start(account, period)
                        else:
                            # Adjustments go on one invoice only: the earliest not yet finalized.
                            adjust = first_end and not has_draft
                            first_end = False
                            lines, warnings = await self._price(account, period, known, "", adjust, as_of, usage)
                        draft = self._new_draft(account, period, lines, warnings, kind)
                        drafts.append(draft)
                        if kind is InvoiceKind.PERIOD_START:
                            known.append(draft)
                    return drafts
                except DomainError as error:
                    log.warning("subscription_close_failed", subscription_id=subscription.id, error=str(error))
                    self._close_failed(subscription.id, error, result)
                    return []
                except Exception as error:  # noqa: BLE001 - one bad subscription must not stop the others
                    log.exception("subscription_close_crashed", subscription_id=subscription.id)
                    self._close_failed(subscription.id, error, result)
                    return []

        batches = await asyncio.gather(*(close_one(account, due) for account, due in due_accounts))
        drafts = [d for batch in batches for d in batch]
        if not drafts:
            return
        now = self.clock()
        # A period whose grace is already over, with the meter caught up, is finalized at once:
        # it was priced from fresh usage just now. A PERIOD_START invoice reads no usage: it
        # is final when made.
        ready = [
            d
            for d in drafts
            if d.kind is InvoiceKind.PERIOD_START
            or (watermark is not None and d.grace_end_time <= min(as_of, watermark))
        ]

        try:
            inserted, finalized = await self._insert_finalized(drafts, ready, now)
        except _PeriodTaken:
            # Another close inserted some of these periods first: insert what is left as
            # drafts, then number only what this close inserted (numbers stay gapless).
            async with transaction(self.engine) as conn:
                repo = InvoiceRepository(conn)
                inserted = await repo.insert_new(drafts)
                finalized = await self._finalize_all(repo, [d for d in ready if d.id in inserted], now)
        for draft in drafts:
            if draft.id in inserted:
                result.created.append(draft.id)
                INVOICES_CLOSED.labels(status="finalized" if draft.id in finalized else "draft").inc()
                log.debug("invoice_created", invoice_id=draft.id, subscription_id=draft.subscription_id,
                         period_start=draft.period_start.isoformat(), finalized=draft.id in finalized)
        result.finalized += len(finalized)

    async def _prefetch_usage(
        self, due_accounts: list[tuple[_Account, list[tuple[Period, InvoiceKind]]]]
    ) -> dict[tuple[str, UsageQuery], UsagePart]:
        """The usage every due period of a page needs, read with BatchGetUsage (a few calls, not one per query).

        If the batch fails (one unknown meter fails it whole), nothing is prefetched and each
        subscription reads its own usage, so one bad subscription does not stop the others.
        """
        wanted: dict[tuple[str, UsageQuery], None] = {}
        for account, due in due_accounts:
            try:
                queries = [
                    q
                    for period, kind in due
                    if kind is InvoiceKind.PERIOD_END
                    for q in usage_queries(self._period_context(account, period))
                ]
            except Exception:  # noqa: BLE001 - close_one reports this subscription's failure
                continue
            for query in queries:
                wanted[(account.subscription.customer_id, query)] = None
        keys = list(wanted)
        if not keys:
            return {}
        try:
            parts = await self.meter.usage_of_many(keys)
        except DomainError as error:
            log.warning("usage_prefetch_failed", queries=len(keys), error=str(error))
            return {}
        return dict(zip(keys, parts))

    async def _insert_finalized(
        self, drafts: list[Invoice], ready: list[Invoice], now: datetime
    ) -> tuple[set[str], set[str]]:
        """One transaction: reserve numbers, insert the ready invoices finalized and the rest as drafts.

        Raises _PeriodTaken (rolling back, numbers included) if any period already had an invoice.
        """
        sequence = number_sequence(now)
        ordered = sorted(ready, key=lambda d: (d.period_start, d.id))
        async with transaction(self.engine) as conn:
            repo = InvoiceRepository(conn)
            numbers = await repo.next_numbers(sequence, len(ordered))
            finals = {d.id: d.finalize(invoice_number(sequence, n), now) for d, n in zip(ordered, numbers)}
            rows = [finals.get(d.id, d) for d in drafts]
            inserted = await repo.insert_new(rows)
            if len(inserted) != len(rows):
                raise _PeriodTaken()
        INVOICES_FINALIZED.inc(len(finals))
        return inserted, set(finals)

    async def _finalize_all(self, repo: InvoiceRepository, drafts: list[Invoice], now: datetime) -> set[str]:
        """Number and finalize drafts inside the caller's transaction (ordered by period)."""
        if not drafts:
            return set()
        sequence = number_sequence(now)
        numbers = await repo.next_numbers(sequence, len(drafts))
        ordered = sorted(drafts, key=lambda d: (d.period_start, d.id))
        for draft, value in zip(ordered, numbers):
            await repo.replace_draft(draft.finalize(invoice_number(sequence, value), now))
            INVOICES_FINALIZED.inc()
        return {d.id for d in ordered}

    async def _finalize_due_draft(
        self,
        invoice_id: str,
        as_of: datetime,
        watermark: datetime | None,
        customers: dict[str, Customer],
        result: CloseResult,
        siblings: dict[str, list[Subscription]] | None = None,
    ) -> None:
        async with self._limit:
            async with self.engine.connect() as conn:
                draft = await InvoiceRepository(conn).get(invoice_id)
            if draft is None or draft.status is not InvoiceStatus.DRAFT:
                return
            if watermark is None or watermark < draft.grace_end_time:
                result.waiting_for_usage += 1
                log.info("finalize_waiting_for_usage", invoice_id=invoice_id,
                         grace_end=draft.grace_end_time.isoformat(), watermark=watermark and watermark.isoformat())
                return
            try:
                if await self._reprice_and_finalize(draft, as_of, customers, siblings):
                    result.finalized += 1
            except DomainError as error:
                result.failed += 1
                log.warning("invoice_finalize_failed", invoice_id=invoice_id, error=str(error))
            except Exception:  # noqa: BLE001 - one bad draft must not stop the others
                result.failed += 1
                log.exception("invoice_finalize_crashed", invoice_id=invoice_id)

    async def _reprice_and_finalize(
        self,
        draft: Invoice,
        as_of: datetime,
        customers: dict[str, Customer],
        siblings: dict[str, list[Subscription]] | None = None,
    ) -> bool:
        """Re-price a draft from fresh usage and finalize it; False if someone else did first."""
        subscription = await self.catalog.subscription(draft.subscription_id)
        account = await self._with_others(await self._account(subscription, customers), siblings)
        since = as_of - timedelta(days=self.settings.adjustment_lookback_days)
        async with self.engine.connect() as conn:
            repo = InvoiceRepository(conn)
            history = (await repo.history([subscription.id], since))[subscription.id]
            account.voided_period_starts = frozenset((await repo.voided_period_starts([subscription.id]))[subscription.id])
        earliest_draft = next(
            (i for i in history if i.status is InvoiceStatus.DRAFT and i.kind is InvoiceKind.PERIOD_END), None
        )
        adjust = earliest_draft is None or earliest_draft.id == draft.id
        period = self._period_of(account, draft)
        if draft.kind is InvoiceKind.PERIOD_START:
            lines, warnings = self._price_period_start(account, period), []
        else:
            lines, warnings = await self._price(account, period, history, draft.id, adjust, as_of)
        now = self.clock()
        async with transaction(self.engine) as conn:
            repo = InvoiceRepository(conn)
            current = await repo.get(draft.id, for_update=True)
            if current is None or current.status is not InvoiceStatus.DRAFT:
                return False
            repriced = replace(
                current,
                lines=tuple(lines),
                warnings=tuple(warnings),
                customer_name=account.customer.name,
                customer_email=account.customer.email,
                customer_external_id=account.customer.external_id,
            )
            await self._finalize_all(repo, [repriced], now)
        log.info("invoice_finalized", invoice_id=draft.id, subscription_id=draft.subscription_id)
        return True

    def _period_of(self, account: _Account, invoice: Invoice) -> Period:
        nominal = period_containing(account.schedule, invoice.period_start)
        return Period(
            invoice.period_start,
            invoice.period_end,
            nominal.full_start if nominal else invoice.period_start,
            nominal.full_end if nominal else invoice.period_end,
        )

    async def _price(
        self,
        account: _Account,
        period: Period,
        history: list[Invoice],
        exclude_id: str,
        with_adjustments: bool,
        as_of: datetime,
        usage: Mapping[tuple[str, UsageQuery], UsagePart] | None = None,
    ) -> tuple[list[InvoiceLine], list[InvoiceWarning]]:
        """The period's lines from fresh usage, plus adjustments for billed earlier periods,
        and the period's warnings.

        ``usage`` holds usage already read for the period (by customer id and query); what
        it lacks is read from the meter.
        """
        lines, warnings = await self._price_period(account, period, usage, history)
        if not with_adjustments:
            return lines, warnings
        others = [i for i in history if i.id != exclude_id]
        # Late usage is looked for on PERIOD_END invoices; in-advance fees are corrected by
        # their own period's PERIOD_END invoice (PRORATION lines), never by adjustments.
        billed = [
            _without_in_advance_fees(i, account)
            for i in others
            if i.status.value in BILLED and i.period_start < period.start and i.kind is InvoiceKind.PERIOD_END
        ]
        if not billed:
            return lines, warnings
        adjustments = [line for i in others for line in i.lines if line.kind is LineKind.ADJUSTMENT]
        if await self._usage_unchanged_since_billing(account, billed, adjustments):
            return lines, warnings
        for original in billed:
            earlier = [
                line
                for invoice in others
                for line in invoice.lines
                if line.kind is LineKind.ADJUSTMENT and line.adjusts_invoice_id == original.id
            ]
            fresh, _ = await self._price_period(account, self._period_of(account, original), None, history)
            lines.extend(adjustment_lines(original, fresh, earlier))
        return lines, warnings

    async def _usage_unchanged_since_billing(
        self, account: _Account, billed: list[Invoice], adjustments: list[InvoiceLine]
    ) -> bool:
        """True when one usage query per additive meter proves nothing billed has changed.

        Saves pricing every billed period again at each close. Anything it cannot prove (a
        cancellation that may re-prorate fees, gaps, non-additive meters) returns False, and
        every billed period is priced again.
        """
        subscription = account.subscription
        if subscription.cancel_at is not None or subscription.cancel_at_period_end:
            return False
        if account.others:
            # Who takes the unattributed usage may differ part by part: price every period again.
            return False
        span = billed_usage_span(billed, adjustments)
        if span is None:
            return False
        start, end, totals = span
        if any(start < phase.start < end for phase in subscription.phases):
            # A plan change inside the billed span (possibly backdated after billing) re-prices
            # fees and in-advance corrections, which usage totals cannot show.
            return False
        for meter_key in totals:
            if await self.catalog.meter_aggregation(meter_key) not in ADDITIVE_AGGREGATIONS:
                return False
        keys = list(totals)
        found = await asyncio.gather(
            *(
                self.meter.usage(subscription.customer_id, UsageQuery(key, start, end, (), subscription.id, True))
                for key in keys
            )
        )
        return all(part.total == totals[key] for key, part in zip(keys, found))

    def _period_context(self, account: _Account, period: Period, history: Sequence[Invoice] = ()) -> PeriodContext:
        return PeriodContext(
            subscription=account.subscription,
            schedule=account.schedule,
            period=period,
            versions=account.versions,
            currency=account.currency(period),
            billed_in_advance=_billed_in_advance(history, period),
            start_voided=period.start in account.voided_period_starts,
            others=account.others,
            others_end=account.others_end,
        )

    def _price_period_start(self, account: _Account, period: Period) -> list[InvoiceLine]:
        return period_start_lines(
            account.subscription, account.schedule, period, account.versions, account.currency(period)
        )

    async def _price_period(
        self,
        account: _Account,
        period: Period,
        usage: Mapping[tuple[str, UsageQuery], UsagePart] | None = None,
        history: Sequence[Invoice] = (),
    ) -> tuple[list[InvoiceLine], list[InvoiceWarning]]:
        context = self._period_context(account, period, history)
        customer_id = account.subscription.customer_id
        queries = usage_queries(context)
        known = usage or {}
        missing = [q for q in queries if (customer_id, q) not in known]
        fetched = dict(zip(missing, await asyncio.gather(*(self.meter.usage(customer_id, q) for q in missing))))
        found = {q: known[(customer_id, q)] if q not in fetched else fetched[q] for q in queries}
        return price_period(context, found), unattributed_warnings(context, found)

    def _new_draft(
        self,
        account: _Account,
        period: Period,
        lines: list[InvoiceLine],
        warnings: Sequence[InvoiceWarning] = (),
        kind: InvoiceKind = InvoiceKind.PERIOD_END,
    ) -> Invoice:
        invoice_id = f"inv_{uuid.uuid4().hex}"
        # A PERIOD_START invoice needs no usage, so no grace: it is due when the period opens.
        grace_end = period.start if kind is InvoiceKind.PERIOD_START else period.end + timedelta(seconds=self.settings.grace_seconds)
        return Invoice(
            id=invoice_id,
            customer_id=account.subscription.customer_id,
            subscription_id=account.subscription.id,
            currency=account.currency(period),
            period_start=period.start,
            period_end=period.end,
            lines=tuple(lines),
            warnings=tuple(warnings),
            status=InvoiceStatus.DRAFT,
            create_time=self.clock(),
            grace_end_time=grace_end,
            customer_name=account.customer.name,
            customer_email=account.customer.email,
            customer_external_id=account.customer.external_id,
            kind=kind,
        )

    # ------------------------------------------------------------------ lifecycle

    async def get_invoice(self, invoice_id: str = "", number: str = "") -> Invoice:
        if not invoice_id and not number:
            raise InvalidInput("id or number is required", violations=[Violation("ref", "set id or number", "REQUIRED")])
        async with self.engine.connect() as conn:
            repo = InvoiceRepository(conn)
            invoice = await (repo.get(invoice_id) if invoice_id else repo.get_by_number(number))
        if invoice is None:
            raise NotFound(f"invoice {invoice_id or number} not found", reason="INVOICE_NOT_FOUND")
        return invoice

    async def list_invoices(
        self,
        *,
        requested_page_size: int,
        page_token: str,
        customer_id: str = "",
        subscription_id: str = "",
        status: InvoiceStatus | None = None,
        customer_external_id: str = "",
        subscription_external_id: str = "",
        kind: InvoiceKind | None = None,
    ) -> tuple[list[Invoice], str]:
        """A page of invoices; a customer or subscription filter naming nothing is NOT_FOUND
        (resolved through the catalog's GetCustomer/GetSubscription), never an empty page."""
        limit = page_size(requested_page_size)
        filters = {"c": customer_id, "s": subscription_id, "st": status.value if status else ""}
        # External ids are kept apart in the token so an id and an external id never compare equal.
        if customer_external_id:
            filters["ce"] = customer_external_id
        if subscription_external_id:
            filters["se"] = subscription_external_id
        if kind is not None:
            filters["k"] = kind.value
        state = decode_page_token(page_token, kind="invoices")
        after = None
        if state is not None:
            if state.get("f") != filters:
                raise InvalidInput(
                    "page token was issued for other filters",
                    violations=[Violation("page_token", "filters changed since the token was issued", "INVALID_PAGE_TOKEN")],
                )
            after = (datetime.fromisoformat(state["t"]), state["i"])
        if customer_id or customer_external_id:
            customer_id = await self.catalog.resolve_customer_id(customer_id, customer_external_id)
        if subscription_id or subscription_external_id:
            subscription_id = await self.catalog.resolve_subscription_id(subscription_id, subscription_external_id)
        async with self.engine.connect() as conn:
            found = await InvoiceRepository(conn).list(
                limit=limit + 1, after=after, customer_id=customer_id, subscription_id=subscription_id, status=status,
                kind=kind,
            )
        token = ""
        if len(found) > limit:
            found = found[:limit]
            last = found[-1]
            token = encode_page_token({"f": filters, "t": last.create_time.isoformat(), "i": last.id}, kind="invoices")
        return found, token

    async def finalize_invoice(self, invoice_id: str) -> Invoice:
        """Finalize a draft now, before its grace period is over, from fresh usage."""
        draft = await self.get_invoice(_required_id(invoice_id))
        if draft.status is not InvoiceStatus.DRAFT:
            raise FailedPrecondition(
                f"cannot finalize a {draft.status.value} invoice; it must be DRAFT",
                reason="INVOICE_STATUS",
                metadata={"invoice_id": draft.id, "status": draft.status.value},
            )
        await self._reprice_and_finalize(draft, self.clock(), {})
        return await self.get_invoice(invoice_id)

    async def mark_invoice_paid(self, invoice_id: str) -> Invoice:
        return await self._transition(invoice_id, lambda invoice, now: invoice.mark_paid(now))

    async def void_invoice(self, invoice_id: str, reason: str) -> Invoice:
        return await self._transition(invoice_id, lambda invoice, now: invoice.void(now, reason))

    async def _transition(self, invoice_id: str, change: Callable[[Invoice, datetime], Invoice]) -> Invoice:
        _required_id(invoice_id)
        async with transaction(self.engine) as conn:
            repo = InvoiceRepository(conn)
            invoice = await repo.get(invoice_id, for_update=True)
            if invoice is None:
                raise NotFound(f"invoice {invoice_id} not found", reason="INVOICE_NOT_FOUND")
            changed = change(invoice, self.clock())
            await repo.update_status(changed)
        log.info("invoice_status_changed", invoice_id=invoice_id, status=changed.status.value)
        return changed

    # ------------------------------------------------------------------ preview and periods

    async def upcoming_invoice(
        self, subscription_id: str, as_of: datetime | None = None, *, subscription_external_id: str = ""
    ) -> Invoice:
        """The current period's invoice to date, with pending adjustments; nothing is stored."""
        as_of = as_of or self.clock()
        if subscription_external_id:
            subscription_id = await self.catalog.resolve_subscription_id("", subscription_external_id)
        if not subscription_id:
            raise InvalidInput("subscription_id is required", violations=[Violation("subscription_id", "required", "REQUIRED")])
        subscription = await self.catalog.subscription(subscription_id)
        account = await self._with_others(await self._account(subscription, {}))
        period = period_containing(account.schedule, as_of)
        if period is None:
            raise NotFound(
                f"subscription {subscription_id} has no billing period at {as_of.isoformat()}",
                reason="NO_CURRENT_PERIOD",
            )
        since = as_of - timedelta(days=self.settings.adjustment_lookback_days)
        async with self.engine.connect() as conn:
            repo = InvoiceRepository(conn)
            history = (await repo.history([subscription_id], since))[subscription_id]
            account.voided_period_starts = frozenset((await repo.voided_period_starts([subscription_id]))[subscription_id])
            opened = (await repo.period_starts([subscription_id], InvoiceKind.PERIOD_START))[subscription_id]
            previous = (await repo.billed_ending_at([subscription_id], [period.start]))[subscription_id]
        if period.start not in opened and _bills_in_advance(account, period) and not _billed_before(previous, period):
            # The next close makes this period's PERIOD_START invoice; preview against it, as
            # the period-end invoice will be priced.
            opening = self._new_draft(account, period, self._price_period_start(account, period), (), InvoiceKind.PERIOD_START)
            history = [*history, opening]
        has_draft = any(i.status is InvoiceStatus.DRAFT and i.kind is InvoiceKind.PERIOD_END for i in history)
        lines, warnings = await self._price(account, period, history, "", not has_draft, as_of)
        preview = self._new_draft(account, period, lines, warnings)
        return replace(preview, id="")

    async def list_billing_periods(
        self,
        subscription_id: str,
        until: datetime | None,
        requested_page_size: int,
        page_token: str,
        *,
        subscription_external_id: str = "",
    ) -> tuple[list[tuple[Period, tuple[str, str]]], str]:
        if subscription_external_id:
            subscription_id = await self.catalog.resolve_subscription_id("", subscription_external_id)
        if not subscription_id:
            raise InvalidInput("subscription_id is required", violations=[Violation("subscription_id", "required", "REQUIRED")])
        until = until or self.clock()
        limit = page_size(requested_page_size)
        state = decode_page_token(page_token, kind="billing_periods") or {"o": 0, "s": subscription_id}
        if state.get("s") != subscription_id:
            raise InvalidInput(
                "page token was issued for another subscription",
                violations=[Violation("page_token", "issued for another subscription", "INVALID_PAGE_TOKEN")],
            )
        offset = int(state["o"])
        subscription = await self.catalog.subscription(subscription_id)
        account = await self._account(subscription, {})
        page: list[Period] = []
        more = False
        for index, period in enumerate(periods(account.schedule, until)):
            if index < offset:
                continue
            if len(page) == limit:
                more = True
                break
            page.append(period)
        async with self.engine.connect() as conn:
            repo = InvoiceRepository(conn)
            invoiced = (await repo.period_starts([subscription_id]))[subscription_id]
            opened = (await repo.period_starts([subscription_id], InvoiceKind.PERIOD_START))[subscription_id]
        token = encode_page_token({"o": offset + limit, "s": subscription_id}, kind="billing_periods") if more else ""
        return [(p, (invoiced.get(p.start, ""), opened.get(p.start, ""))) for p in page], token

    async def list_line_records(
        self, *, invoice_id: str = "", number: str = "", line_id: str, requested_page_size: int, page_token: str
    ) -> tuple[list, str, LineRecordsWindow]:
        """A page of the usage records behind one metered line, read from ingest; and the window read.

        The page token wraps ingest's, bound to this invoice and line, so it cannot be replayed
        against another line's filters.
        """
        limit = page_size(requested_page_size)
        for field, value in (("invoice_id", invoice_id), ("invoice_number", number)):
            if "\x00" in value or len(value) > MAX_REF_CHARS:
                raise InvalidInput(
                    f"invalid {field}",
                    violations=[Violation(field, f"at most {MAX_REF_CHARS} characters, no NUL", "INVALID_REFERENCE")],
                )
        if not invoice_id and not number:
            raise InvalidInput(
                "the invoice is required", violations=[Violation("invoice", "set invoice_id or invoice_number", "REQUIRED")]
            )
        invoice = await self.get_invoice(invoice_id, number)
        line = metered_line(invoice, line_id)
        subscription = await self.catalog.subscription(invoice.subscription_id)
        account = await self._with_others(await self._account(subscription, {}))
        charge = _charge_of(account, line)
        # Whose records, by the rule pricing used (docs/billing-attribution.md): the
        # subscription's, plus the unattributed ones where no other subscription charges the meter.
        context = self._period_context(account, self._period_of(account, invoice))
        window = replace(
            line_records_window(
                line,
                tuple(dimension_price.match for dimension_price in charge.dimension_prices) if charge else (),
                tuple(point.key for point in charge.price_points) if charge else (),
            ),
            subscription_id=invoice.subscription_id,
            include_unattributed=not context.competitors(line.meter_key, line.period_start, line.period_end),
        )
        state = decode_page_token(page_token, kind="invoice_line_records")
        inner = ""
        if state is not None:
            if state.get("i") != invoice.id or state.get("l") != line_id or not isinstance(state.get("t"), str):
                raise InvalidInput(
                    "page token was issued for another invoice line",
                    violations=[Violation("page_token", "issued for another invoice line", "INVALID_PAGE_TOKEN")],
                )
            inner = state["t"]
        if self.ingest is None:
            raise Unavailable("this invoice service has no connection to ingest", reason="INGEST_NOT_CONFIGURED")
        records, next_inner = await self.ingest.usage_records(invoice.customer_id, window, limit, inner)
        token = ""
        if next_inner:
            token = encode_page_token({"i": invoice.id, "l": line_id, "t": next_inner}, kind="invoice_line_records")
        return records, token, window

    async def render_pdf(self, invoice_id: str) -> tuple[bytes, str]:
        invoice = await self.get_invoice(_required_id(invoice_id))
        pdf = render_invoice_pdf(invoice, seller_name=self.settings.seller_name, seller_details=self.settings.seller_details)
        return pdf, f"{invoice.number or invoice.id}.pdf"


def _charge_of(account: _Account, line: InvoiceLine) -> UsageCharge | None:
    """The usage charge that priced the line, in the plan version that priced it.

    None when there is none to find (a minimum/maximum line, a phase no longer there): the
    line's records are then all of its meter's records in its window.
    """
    for phase in account.subscription.phases:
        if (phase.plan_key, phase.plan_version) != (line.plan_key, line.plan_version):
            continue
        version = account.versions.get(phase.plan_version_id)
        for charge in version.usage_charges if version is not None else ():
            if charge.key == line.charge_key:
                return charge
    return None


def _bills_in_advance(account: _Account, period: Period) -> bool:
    """Whether the version in force at the period's start has in-advance fees."""
    phase = account.subscription.phase_at(period.start)
    return phase is not None and bool(in_advance_fees(account.versions[phase.plan_version_id]))


def _billed_before(history: Sequence[Invoice], period: Period) -> bool:
    """Whether an invoice of an earlier period already billed this period's in-advance fees.

    Before PERIOD_START invoices existed, a period's invoice billed the next period's
    in-advance fees; such a period must not be billed in advance again.
    """
    return any(
        invoice.period_start < period.start
        and invoice.status.value in BILLED
        and any(line.kind is LineKind.FIXED_FEE and line.period_start == period.start for line in invoice.lines)
        for invoice in history
    )


def _billed_in_advance(history: Sequence[Invoice], period: Period) -> tuple[InvoiceLine, ...]:
    """The in-advance fee lines billed for ``period``: its PERIOD_START invoice's, or (legacy)
    those an earlier period's invoice billed for it. Void invoices billed nothing."""
    found: list[InvoiceLine] = []
    for invoice in history:
        if invoice.status is InvoiceStatus.VOID:
            continue
        if invoice.kind is InvoiceKind.PERIOD_START and invoice.period_start == period.start:
            found.extend(line for line in invoice.lines if line.kind is LineKind.FIXED_FEE)
        elif invoice.kind is InvoiceKind.PERIOD_END and invoice.period_start < period.start and invoice.status.value in BILLED:
            found.extend(
                line for line in invoice.lines if line.kind is LineKind.FIXED_FEE and line.period_start == period.start
            )
    return tuple(found)


def _without_in_advance_fees(invoice: Invoice, account: _Account) -> Invoice:
    """A PERIOD_END invoice without in-advance fee lines (only invoices made before
    PERIOD_START invoices existed have any), so late-usage checks compare like with like."""
    advance = {
        (v.plan_key, v.version, fee.key) for v in account.versions.values() for fee in in_advance_fees(v)
    }
    lines = tuple(
        line
        for line in invoice.lines
        if not (line.kind is LineKind.FIXED_FEE and (line.plan_key, line.plan_version, line.charge_key) in advance)
    )
    return invoice if len(lines) == len(invoice.lines) else replace(invoice, lines=lines)


def _required_id(invoice_id: str) -> str:
    if not invoice_id:
        raise InvalidInput("id is required", violations=[Violation("id", "required", "REQUIRED")])
    return invoice_id


async def run_scheduler(service: InvoiceService, interval: float, stop: asyncio.Event) -> None:
    """Call close_due_periods every ``interval`` seconds until ``stop`` is set."""
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval)
            return
        except asyncio.TimeoutError:
            pass
        try:
            await service.close_due_periods()
        except DomainError as error:
            log.warning("scheduled_close_failed", error=str(error))
        except Exception:  # noqa: BLE001 - the scheduler must outlive any one failed run
            log.exception("scheduled_close_crashed")

