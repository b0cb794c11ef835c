"""`tally invoices`: list, show and download the PDF."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import typer
from rich.table import Table

from tally.cli.output import MODE, console, enum_label, fmt_decimal, fmt_time, print_json, to_dict
from tally.cli.rpc import TIMEOUT, call, collect_pages, fail
from tally_gen.invoice.v1 import invoice_pb2

invoices_app = typer.Typer(help="Invoices from the invoice service.", no_args_is_help=True)

STATUSES = {
    "draft": invoice_pb2.INVOICE_STATUS_DRAFT,
    "finalized": invoice_pb2.INVOICE_STATUS_FINALIZED,
    "paid": invoice_pb2.INVOICE_STATUS_PAID,
    "void": invoice_pb2.INVOICE_STATUS_VOID,
}


def invoice_request(ref: str) -> invoice_pb2.GetInvoiceRequest:
    """Numbers look like INV-2026-000001; anything else is an invoice id."""
    if ref.upper().startswith("INV-"):
        return invoice_pb2.GetInvoiceRequest(number=ref)
    return invoice_pb2.GetInvoiceRequest(id=ref)


def _status(invoice) -> str:
    return enum_label(invoice_pb2.InvoiceStatus, invoice.status, "INVOICE_STATUS_")


@invoices_app.command("list")
def list_invoices(
    customer_id: str = typer.Option("", "--customer-id"),
    subscription_id: str = typer.Option("", "--subscription-id"),
    status: str = typer.Option("", "--status", help="draft, finalized, paid or void"),
    limit: int = typer.Option(50, "--limit"),
) -> None:
    """List invoices, newest first as the service orders them."""
    if status and status not in STATUSES:
        fail("invalid --status", [("--status", "must be draft, finalized, paid or void")])

    async def fetch(stub):
        request = partial(
            invoice_pb2.ListInvoicesRequest,
            customer_id=customer_id,
            subscription_id=subscription_id,
            status=STATUSES.get(status, 0),
        )
        return await collect_pages(stub.ListInvoices, request, "invoices", limit)

    invoices = call("invoice", fetch)
    if MODE.json:
        print_json([to_dict(i) for i in invoices])
        return
    table = Table(title="invoices")
    for column in ("id", "number", "customer", "status", "period start", "period end", "total"):
        table.add_column(column, justify="right" if column == "total" else "left")
    for i in invoices:
        table.add_row(
            i.id, i.number, i.customer_id, _status(i), fmt_time(i.period.start), fmt_time(i.period.end),
            f"{fmt_decimal(i.total)} {i.currency}",
        )
    console().print(table)


@invoices_app.command("show")
def show(ref: str = typer.Argument(..., help="Invoice id or number (INV-...)")) -> None:
    """Show an invoice with its lines and totals."""
    invoice = call("invoice", lambda stub: stub.GetInvoice(invoice_request(ref), timeout=TIMEOUT)).invoice
    if MODE.json:
        print_json(to_dict(invoice))
        return
    out = console()
    out.print(f"[bold]invoice {invoice.number or '(draft)'}[/]  {invoice.id}  {_status(invoice)}", highlight=False)
    out.print(f"  customer      {invoice.customer_id} {invoice.customer_name}", highlight=False)
    out.print(f"  subscription  {invoice.subscription_id}", highlight=False)
    out.print(f"  period        {fmt_time(invoice.period.start)} .. {fmt_time(invoice.period.end)}", highlight=False)
    table = Table()
    for column in ("kind", "description", "quantity", "unit price", "amount"):
        table.add_column(column, justify="right" if column in ("quantity", "unit price", "amount") else "left")
    for line in invoice.lines:
        table.add_row(
            enum_label(invoice_pb2.LineKind, line.kind, "LINE_KIND_"),
            line.description,
            line.quantity.value,
            line.unit_price.value,
            line.amount.value,
        )
    out.print(table)
    out.print(f"  subtotal  {fmt_decimal(invoice.subtotal)} {invoice.currency}", highlight=False)
    out.print(f"  [bold]total     {fmt_decimal(invoice.total)} {invoice.currency}[/]", highlight=False)


@invoices_app.command("pdf")
def pdf(
    ref: str = typer.Argument(..., help="Invoice id or number (INV-...)"),
    output: Path = typer.Option(None, "--output", "-o", help="Where to write it (default: the server's file name)"),
) -> None:
    """Download an invoice as PDF."""

    async def render(stub):
        invoice_id = ref
        if ref.upper().startswith("INV-"):
            invoice_id = (await stub.GetInvoice(invoice_request(ref), timeout=TIMEOUT)).invoice.id
        return await stub.RenderInvoicePdf(invoice_pb2.RenderInvoicePdfRequest(id=invoice_id), timeout=TIMEOUT)

    reply = call("invoice", render)
    path = output or Path(reply.filename or f"{ref}.pdf")
    path.write_bytes(reply.pdf)
    if MODE.json:
        print_json({"path": str(path), "bytes": len(reply.pdf)})
    else:
        console().print(f"wrote {path} ({len(reply.pdf):,} bytes)", highlight=False)
