"""Invoice PDFs, read back with pypdf."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal as D

import pytest
from pypdf import PdfReader

from services.invoice.domain.invoices import (
    UNATTRIBUTED_USAGE_NOT_BILLED,
    Invoice,
    InvoiceLine,
    InvoiceWarning,
    LineKind,
    TierAmount,
    canonical_content,
    content_hash,
)
from services.invoice.pdf import render_invoice_pdf
from tally_gen.invoice.v1 import invoice_pb2 as ipb
from tests.invoice.helpers import TIERS, midnight_days_ago
from tally_gen.catalog.v1 import catalog_pb2 as cpb

UTC = timezone.utc
START, END = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)


def text_of(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


def voip_invoice() -> Invoice:
    fee = InvoiceLine(LineKind.FIXED_FEE, "Monthly fee (in arrears)", D("10.00"), START, END, charge_key="monthly_fee",
                      quantity=D(1), unit_price=D("10.00"))
    minutes = InvoiceLine(LineKind.USAGE, "Call minutes", D("18.05"), START, END, charge_key="call_minutes",
                          quantity=D(361), unit_price=D("0.05"), usage=D(361))
    graduated = InvoiceLine(
        LineKind.USAGE, "API calls", D("945.00"), START, END, charge_key="api", quantity=D(12500), usage=D(12500),
        tiers=(
            TierAmount(1, D(1), D(1000), D(1000), D("0.10"), D(0), D("100.00")),
            TierAmount(2, D(1001), D(10000), D(9000), D("0.08"), D(0), D("720.00")),
            TierAmount(3, D(10001), None, D(2500), D("0.05"), D(0), D("125.00")),
        ),
    )
    return Invoice(
        id="inv_1", number="INV-2026-000042", customer_id="cus_1", subscription_id="sub_1", currency="USD",
        period_start=START, period_end=END, lines=(fee, minutes, graduated), customer_name="Ada Lovelace",
        customer_email="ada@example.com", customer_external_id="acct_67890",
        finalize_time=END + timedelta(hours=1), content_hash="ab" * 32,
    )


class TestRenderInvoicePdf:
    def test_the_pdf_shows_seller_customer_period_lines_tiers_and_totals(self):
        text = text_of(render_invoice_pdf(voip_invoice(), seller_name="Tally Telecom Ltd", seller_details="1 Main St"))
        for expected in (
            "Invoice INV-2026-000042", "Tally Telecom Ltd", "1 Main St", "Ada Lovelace", "ada@example.com",
            "acct_67890", "2026-01-01 00:00 UTC", "2026-02-01 00:00 UTC", "Monthly fee", "10.00 USD",
            "361 × 0.05", "18.05 USD", "Tier 1", "1,000 × 0.10", "Tier 3", "2,500 × 0.05", "125.00",
            "Subtotal", "973.05 USD", "Total", "Currency: USD",
        ):
            assert expected in text, expected

    def test_a_proration_line_shows_the_fee_and_the_seconds_it_covers(self):
        credit = InvoiceLine(LineKind.PRORATION, "Unused Platform fee (basic v1), credited", D("-33.33"), START, END,
                             charge_key="platform", quantity=D(1), unit_price=D("50.00"), proration=D(2) / D(3),
                             prorated_seconds=1_728_000, period_seconds=2_592_000)
        invoice = Invoice(id="inv_p", customer_id="c", subscription_id="s", currency="USD", period_start=START,
                          period_end=END, lines=(credit,))
        text = text_of(render_invoice_pdf(invoice, seller_name="Tally", seller_details=""))
        for expected in ("Unused Platform fee", "1 × 50.00 × 1,728,000 s / 2,592,000 s", "-33.33 USD"):
            assert expected in text, expected

    def test_a_draft_says_it_is_a_draft(self):
        draft = Invoice(id="inv_d", customer_id="c", subscription_id="s", currency="JPY", period_start=START,
                        period_end=END, lines=())
        text = text_of(render_invoice_pdf(draft, seller_name="Tally"))
        assert "Draft invoice inv_d" in text and "Status: DRAFT" in text and "0 JPY" in text

    def test_unbilled_unattributed_usage_is_listed_and_hashed(self):
        warning = InvoiceWarning(
            UNATTRIBUTED_USAGE_NOT_BILLED, "8 of calls attributed to no subscription is not billed", "calls",
            START, END, D(8), ("sub_2",),
        )
        invoice = replace(voip_invoice(), warnings=(warning,))
        text = text_of(render_invoice_pdf(invoice, seller_name="Tally"))
        assert "Not billed: 8 of calls attributed to no subscription is not billed" in text
        assert content_hash(invoice) != content_hash(voip_invoice())
        assert "warnings" not in canonical_content(voip_invoice()).decode()


@pytest.mark.e2e
class TestRenderInvoicePdfRpc:
    async def test_the_rpc_returns_a_pdf_of_a_closed_invoice(self, stubs):
        event_type, meter_key, plan_key = await stubs.meter_with_plan(
            cpb.Price(model=cpb.PRICING_MODEL_GRADUATED, tiers=TIERS), fee="10.00"
        )
        customer = await stubs.customer()
        start = midnight_days_ago(3)
        subscription = await stubs.subscribe(customer, plan_key, start)
        await stubs.send(customer, event_type, [(start + timedelta(hours=1), {"units": 12500})])
        await stubs.wait_applied()
        await stubs.close(start + timedelta(days=1, hours=1), subscription)
        (invoice,) = await stubs.invoices_of(subscription)
        reply = await stubs.invoice.RenderInvoicePdf(ipb.RenderInvoicePdfRequest(id=invoice.id), timeout=30)
        assert reply.filename == f"{invoice.number}.pdf"
        text = text_of(reply.pdf)
        for expected in (invoice.number, "Ada Lovelace", "Tier 2", "9,000 × 0.08", "955.00 USD"):
            assert expected in text, expected
