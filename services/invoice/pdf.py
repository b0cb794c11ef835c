"""An invoice as a PDF (reportlab platypus): seller, customer, period, lines, totals."""

from __future__ import annotations

import io
from datetime import datetime
from decimal import Decimal

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle
from xml.sax.saxutils import escape

from services.invoice.domain.invoices import Invoice, InvoiceLine, InvoiceStatus, LineKind


def _day(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else ""


def _num(value: Decimal | None) -> str:
    """Plain notation with thousands separators, never scientific ("1E+3")."""
    if value is None:
        return ""
    return f"{value:,f}"


def _qty(value: Decimal | None) -> str:
    """A quantity without insignificant trailing zeros ("361.0" reads "361")."""
    if value is None:
        return ""
    if value == value.to_integral_value():
        return f"{value.to_integral_value():,f}"
    return f"{value.normalize():,f}"


def _line_rows(line: InvoiceLine, currency: str, style) -> list[list]:
    if line.kind is LineKind.FIXED_FEE:
        units = f"1 × {_num(line.unit_price)}"
        if line.proration is not None:
            units += f" × {line.proration:.6f} (prorated)"
    elif line.kind is LineKind.PRORATION:
        units = f"1 × {_num(line.unit_price)} × {line.prorated_seconds:,} s / {line.period_seconds:,} s"
    elif line.kind is LineKind.ADJUSTMENT:
        units = f"{_qty(line.usage)} units" if line.usage is not None else ""
    elif line.unit_price is not None and not line.tiers[1:]:
        units = f"{_qty(line.quantity)} × {_num(line.unit_price)}"
    else:
        units = f"{_qty(line.quantity)} units"
    description = escape(line.description)
    if line.included_units:
        description += f"<br/>usage {_qty(line.usage)}, included {_qty(line.included_units)}"
    if line.amount_before_limits is not None:
        description += f"<br/>before minimum/maximum: {_num(line.amount_before_limits)}"
    period = f"{line.period_start:%Y-%m-%d} – {line.period_end:%Y-%m-%d}"
    rows = [[Paragraph(description, style), period, units, f"{_num(line.amount)} {currency}"]]
    for tier in line.tiers:
        bound = f"{_qty(tier.from_units)}–{_qty(tier.up_to)}" if tier.up_to is not None else f"{_qty(tier.from_units)}+"
        flat = f" + {_num(tier.flat_amount)}" if tier.flat_amount else ""
        rows.append(
            [
                Paragraph(f"&nbsp;&nbsp;Tier {tier.tier} ({bound})", style),
                "",
                f"{_qty(tier.quantity)} × {_num(tier.unit_price)}{flat}",
                _num(tier.amount),
            ]
        )
    return rows


def render_invoice_pdf(invoice: Invoice, *, seller_name: str, seller_details: str = "") -> bytes:
    """The PDF bytes of ``invoice``."""
    buffer = io.BytesIO()
    title = f"Invoice {invoice.number}" if invoice.number else f"Draft invoice {invoice.id}"
    doc = SimpleDocTemplate(buffer, pagesize=A4, title=title, author=seller_name,
                            leftMargin=15 * mm, rightMargin=15 * mm, topMargin=15 * mm, bottomMargin=15 * mm)
    styles = getSampleStyleSheet()
    small = styles["BodyText"]
    story = [Paragraph(escape(title), styles["Title"])]
    if invoice.status is not InvoiceStatus.FINALIZED:
        story.append(Paragraph(f"Status: {invoice.status.value}", styles["Heading3"]))
    seller = f"<b>Seller</b><br/>{escape(seller_name)}"
    if seller_details:
        seller += "<br/>" + "<br/>".join(escape(part) for part in seller_details.split("\n"))
    customer = "<b>Customer</b><br/>" + "<br/>".join(
        escape(part)
        for part in (invoice.customer_name, invoice.customer_email, invoice.customer_external_id or invoice.customer_id)
        if part
    )
    story.append(Table([[Paragraph(seller, small), Paragraph(customer, small)]], colWidths=[90 * mm, 90 * mm]))
    story.append(Spacer(1, 4 * mm))
    facts = [
        f"Period: {_day(invoice.period_start)} – {_day(invoice.period_end)}",
        f"Currency: {invoice.currency}",
        f"Subscription: {invoice.subscription_id}",
    ]
    if invoice.finalize_time:
        facts.append(f"Issued: {_day(invoice.finalize_time)}")
    story.append(Paragraph("<br/>".join(escape(f) for f in facts), small))
    story.append(Spacer(1, 4 * mm))
    rows: list[list] = [["Description", "Period", "Units × price", "Amount"]]
    for line in invoice.lines:
        rows.extend(_line_rows(line, invoice.currency, small))
    rows.append(["", "", "Subtotal", f"{_num(invoice.subtotal)} {invoice.currency}"])
    rows.append(["", "", "Total", f"{_num(invoice.total)} {invoice.currency}"])
    table = Table(rows, colWidths=[70 * mm, 38 * mm, 42 * mm, 30 * mm], repeatRows=1)
    table.setStyle(
        TableStyle(
            [
                ("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"),
                ("LINEBELOW", (0, 0), (-1, 0), 0.5, colors.black),
                ("LINEABOVE", (0, -2), (-1, -2), 0.5, colors.black),
                ("FONTNAME", (2, -1), (-1, -1), "Helvetica-Bold"),
                ("ALIGN", (3, 0), (3, -1), "RIGHT"),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("FONTSIZE", (0, 0), (-1, -1), 8),
            ]
        )
    )
    story.append(table)
    if invoice.warnings:
        # Usage of the period this invoice did not bill (docs/billing-attribution.md).
        story.append(Spacer(1, 4 * mm))
        notes = [f"Not billed: {w.description} ({_day(w.period_start)} to {_day(w.period_end)})" for w in invoice.warnings]
        story.append(Paragraph("<br/>".join(escape(n) for n in notes), small))
    if invoice.content_hash:
        story.append(Spacer(1, 4 * mm))
        story.append(Paragraph(f"Content SHA-256: {invoice.content_hash}", styles["Code"]))
    doc.build(story)
    return buffer.getvalue()
