"""`tally invoices`: run billing (close, upcoming, finalize, void, mark-paid) and read invoices
(list, show with the tier breakdown, the usage records behind a line, PDF)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import typer
from rich.table import Table

from tally.cli.output import (
    MODE,
    console,
    enum_label,
    fmt_decimal,
    fmt_quantity,
    fmt_time,
    print_json,
    print_table,
    to_dict,
)
from tally.cli.customers import EXTERNAL_ID_HELP, SUBSCRIPTION_ARG_HELP, customer_ref, subscription_ref, timestamp
from tally.cli.rpc import TIMEOUT, call, collect_pages, fail
from tally.cli.usage_records import records_table
from tally_gen.common.v1 import common_pb2
from tally_gen.invoice.v1 import invoice_pb2

invoices_app = typer.Typer(help="Invoices: run billing and read what it made.", no_args_is_help=True)

STATUSES = {
    "draft": invoice_pb2.INVOICE_STATUS_DRAFT,
    "finalized": invoice_pb2.INVOICE_STATUS_FINALIZED,
    "paid": invoice_pb2.INVOICE_STATUS_PAID,
    "void": invoice_pb2.INVOICE_STATUS_VOID,
}
REF_HELP = "Invoice id or number (INV-...)"


def invoice_request(ref: str) -> invoice_pb2.GetInvoiceRequest:
    """Numbers look like INV-2026-000001; anything else is an invoice id."""
    if ref.upper().startswith("INV-"):
        return invoice_pb2.GetInvoiceRequest(number=ref)
    return invoice_pb2.GetInvoiceRequest(id=ref)


async def invoice_id_of(stub, ref: str) -> str:
    """The invoice id for an id or a number (the lifecycle RPCs take ids)."""
    if ref.upper().startswith("INV-"):
        return (await stub.GetInvoice(invoice_request(ref), timeout=TIMEOUT)).invoice.id
    return ref


def _status(invoice) -> str:
    return enum_label(invoice_pb2.InvoiceStatus, invoice.status, "INVOICE_STATUS_")


def _kind(invoice) -> str:
    """period_start (in-advance fees when a period opens) or period_end."""
    return enum_label(invoice_pb2.InvoiceKind, invoice.kind, "INVOICE_KIND_") if invoice.kind else ""


def _customer(invoice) -> str:
    """Customers are shown by the caller's own external id (Tally's id only when there is none)."""
    return invoice.customer_external_id or invoice.customer_id


def _total(invoice) -> str:
    return f"{fmt_decimal(invoice.total)} {invoice.currency}"


def _time_option(text: str | None, option: str):
    return timestamp(text, option) if text else None


# ---------------------------------------------------------------- reading


@invoices_app.command("list")
def list_invoices(
    customer: str = typer.Option(None, "--customer", "-c", help="The customer's external id"),
    customer_id: str = typer.Option(None, "--customer-id", help="Tally's customer id instead"),
    subscription: str = typer.Option(None, "--subscription", help="The subscription's external id (your reference)"),
    subscription_id: str = typer.Option(None, "--subscription-id", help="Tally's subscription id instead"),
    status: str = typer.Option("", "--status", help="draft, finalized, paid or void"),
    limit: int = typer.Option(50, "--limit", min=1),
) -> None:
    """List invoices, newest first as the service orders them; an unknown customer or subscription is an error."""
    if status and status not in STATUSES:
        fail("invalid --status", [("--status", "must be draft, finalized, paid or void")])
    customer_filter = None
    if customer is not None or customer_id is not None:
        customer_filter = customer_ref(customer, customer_id)
    subscription_filter = None
    if subscription is not None or subscription_id is not None:
        if subscription is not None and subscription_id is not None:
            fail("name the subscription with one of --subscription (external id) or --subscription-id, not both")
        subscription_filter = (
            common_pb2.SubscriptionRef(external_id=subscription)
            if subscription is not None
            else common_pb2.SubscriptionRef(id=subscription_id)
        )

    async def fetch(stub):
        request = partial(
            invoice_pb2.ListInvoicesRequest,
            customer=customer_filter,
            subscription=subscription_filter,
            status=STATUSES.get(status, 0),
        )
        return await collect_pages(stub.ListInvoices, request, "invoices", limit)

    invoices = call("invoice", fetch)
    if MODE.json:
        print_json([to_dict(i) for i in invoices])
        return
    table = Table(title="invoices")
    table.add_column("number", no_wrap=True)
    table.add_column("customer", no_wrap=True)
    table.add_column("status")
    table.add_column("kind")
    table.add_column("period start", no_wrap=True)
    table.add_column("period end", no_wrap=True)
    table.add_column("total", justify="right", no_wrap=True)
    table.add_column("id", no_wrap=True)
    for i in invoices:
        table.add_row(
            i.number or "(draft)",
            _customer(i),
            _status(i),
            _kind(i),
            fmt_time(i.period.start),
            fmt_time(i.period.end),
            _total(i),
            i.id,
        )
    print_table(table)


def _print_invoice(invoice, heading: str) -> None:
    out = console()
    out.print(f"[bold]{heading}[/]  {_status(invoice)}", highlight=False)
    rows = [
        ("id", invoice.id or "(not stored)"),
        ("customer", f"{_customer(invoice)}  {invoice.customer_name}".rstrip()),
        ("customer id", invoice.customer_id),
        ("subscription", invoice.subscription_id),
        ("period", f"{fmt_time(invoice.period.start)} .. {fmt_time(invoice.period.end)}"),
        ("kind", _kind(invoice)),
    ]
    for label, value in rows:
        out.print(f"  {label:<13} {value}", highlight=False)
    lines = Table(title="lines", title_justify="left")
    lines.add_column("#", justify="right", no_wrap=True)
    lines.add_column("kind")
    lines.add_column("description")
    lines.add_column("period", no_wrap=True)
    lines.add_column("quantity", justify="right", no_wrap=True)
    lines.add_column("unit price", justify="right", no_wrap=True)
    lines.add_column("amount", justify="right", no_wrap=True)
    for position, line in enumerate(invoice.lines, start=1):
        lines.add_row(
            str(position),
            enum_label(invoice_pb2.LineKind, line.kind, "LINE_KIND_"),
            line.description,
            f"{fmt_time(line.period.start)} .. {fmt_time(line.period.end)}" if line.HasField("period") else "",
            fmt_quantity(line.quantity) if line.HasField("quantity") else "",
            line.unit_price.value,
            line.amount.value,
        )
    print_table(lines, out)
    for position, line in enumerate(invoice.lines, start=1):
        if line.tiers:
            print_table(_tier_table(position, line), out)
    out.print(f"  subtotal  {fmt_decimal(invoice.subtotal)} {invoice.currency}", highlight=False)
    out.print(f"  [bold]total     {_total(invoice)}[/]", highlight=False)


def _tier_table(position: int, line) -> Table:
    """How each tier of a tiered line contributed, so the line's amount can be checked by hand."""
    table = Table(title=f"tiers of line {position}: {line.description}", title_justify="left")
    for column in ("tier", "from", "up to", "quantity", "unit price", "flat amount", "amount"):
        table.add_column(column, justify="right", no_wrap=True)
    for tier in line.tiers:
        table.add_row(
            str(tier.tier),
            fmt_quantity(tier.from_units),
            fmt_quantity(tier.up_to) if tier.HasField("up_to") else "and above",
            fmt_quantity(tier.quantity),
            tier.unit_price.value,
            tier.flat_amount.value,
            tier.amount.value,
        )
    return table


@invoices_app.command("show")
def show(ref: str = typer.Argument(..., help=REF_HELP)) -> None:
    """Show an invoice: its lines, each tiered line's tier breakdown, and totals."""
    invoice = call("invoice", lambda stub: stub.GetInvoice(invoice_request(ref), timeout=TIMEOUT)).invoice
    if MODE.json:
        print_json(to_dict(invoice))
        return
    _print_invoice(invoice, f"invoice {invoice.number or '(draft)'}")


@invoices_app.command("line-records")
def line_records(
    ref: str = typer.Argument(..., help=REF_HELP),
    line: str = typer.Argument(..., help="The line's number (# in `invoices show`) or its id"),
    limit: int = typer.Option(200, "--limit", min=1, help="At most this many records"),
) -> None:
    """The usage records (RecordUsage) behind one usage line of an invoice, with their memos."""

    async def fetch(stub):
        invoice = (await stub.GetInvoice(invoice_request(ref), timeout=TIMEOUT)).invoice
        line_id = line
        if line.isdigit():
            if not 1 <= int(line) <= len(invoice.lines):
                fail("invalid line", [("line", f"the invoice has lines 1 to {len(invoice.lines)}")])
            line_id = invoice.lines[int(line) - 1].id
        found, token, period = [], "", None
        while len(found) < limit:
            reply = await stub.ListInvoiceLineRecords(
                invoice_pb2.ListInvoiceLineRecordsRequest(
                    invoice_id=invoice.id, line_id=line_id, page_size=min(200, limit - len(found)), page_token=token
                ),
                timeout=TIMEOUT,
            )
            found.extend(reply.usage_records)
            period = reply.period
            token = reply.next_page_token
            if not token:
                break
        return invoice, line_id, found, period, bool(token)

    invoice, line_id, records, period, more = call("invoice", fetch)
    if MODE.json:
        print_json({"invoice_id": invoice.id, "line_id": line_id, "period": to_dict(period),
                    "usage_records": [to_dict(r) for r in records], "more": more})
        return
    title = f"usage records behind line {line_id} ({fmt_time(period.start)} .. {fmt_time(period.end)})"
    print_table(records_table(records, title))
    if more:
        console().print(f"(first {len(records)}; raise --limit for more)", highlight=False)


@invoices_app.command("pdf")
def pdf(
    ref: str = typer.Argument(..., help=REF_HELP),
    output: Path = typer.Option(None, "--output", "-o", help="Where to write it (default: the server's file name)"),
) -> None:
    """Download an invoice as PDF."""

    async def render(stub):
        invoice_id = await invoice_id_of(stub, ref)
        return await stub.RenderInvoicePdf(invoice_pb2.RenderInvoicePdfRequest(id=invoice_id), timeout=TIMEOUT)

    reply = call("invoice", render)
    path = output or Path(reply.filename or f"{ref}.pdf")
    path.write_bytes(reply.pdf)
    if MODE.json:
        print_json({"path": str(path), "bytes": len(reply.pdf)})
    else:
        console().print(f"wrote {path} ({len(reply.pdf):,} bytes)", highlight=False)


# ---------------------------------------------------------------- running billing


@invoices_app.command("close")
def close(
    as_of: str = typer.Option(None, "--as-of", help="ISO 8601 instant (default: now)"),
    subscription_id: list[str] = typer.Option([], "--subscription-id", "-s", help="Only this subscription id, repeatable"),
) -> None:
    """Close due periods: one invoice per ended period, and finalize drafts whose grace is over."""
    request = invoice_pb2.CloseDuePeriodsRequest(subscription_ids=subscription_id)
    when = _time_option(as_of, "--as-of")
    if when is not None:
        request.as_of.CopyFrom(when)
    reply = call("invoice", lambda stub: stub.CloseDuePeriods(request, timeout=max(TIMEOUT, 300)))
    if MODE.json:
        print_json(
            {
                "invoices_created": reply.invoices_created,
                "invoices_finalized": reply.invoices_finalized,
                "waiting_for_usage": reply.waiting_for_usage,
                "subscriptions_failed": reply.subscriptions_failed,
                "invoice_ids": list(reply.invoice_ids),
            }
        )
        return
    out = console()
    out.print(
        f"{reply.invoices_created} invoices created, {reply.invoices_finalized} finalized, "
        f"{reply.waiting_for_usage} waiting for usage, {reply.subscriptions_failed} subscriptions failed",
        highlight=False,
    )
    for invoice_id in reply.invoice_ids:
        out.print(f"  created {invoice_id}", highlight=False)
    if reply.subscriptions_failed:
        out.print("  failed subscriptions are retried on the next close (see the invoice service's log)", highlight=False)


@invoices_app.command("upcoming")
def upcoming(
    subscription_id: str = typer.Argument(None, help=SUBSCRIPTION_ARG_HELP),
    external_id: str = typer.Option(None, "--external-id", help=EXTERNAL_ID_HELP),
    as_of: str = typer.Option(None, "--as-of", help="ISO 8601 instant (default: now)"),
) -> None:
    """Preview the current period's invoice to date (nothing is stored)."""
    request = invoice_pb2.UpcomingInvoiceRequest(subscription=subscription_ref(subscription_id, external_id))
    when = _time_option(as_of, "--as-of")
    if when is not None:
        request.as_of.CopyFrom(when)
    invoice = call("invoice", lambda stub: stub.UpcomingInvoice(request, timeout=TIMEOUT)).invoice
    if MODE.json:
        print_json(to_dict(invoice))
        return
    _print_invoice(invoice, "upcoming invoice (preview, not stored)")


def _transition(ref: str, change) -> None:
    async def run(stub):
        return await change(stub, await invoice_id_of(stub, ref))

    invoice = call("invoice", run).invoice
    if MODE.json:
        print_json(to_dict(invoice))
        return
    number = invoice.number or "(draft)"
    console().print(f"{_status(invoice)}: invoice {number}  {invoice.id}  total {_total(invoice)}", highlight=False)


@invoices_app.command("finalize")
def finalize(ref: str = typer.Argument(..., help=REF_HELP)) -> None:
    """Finalize a draft now, from fresh usage, before its grace period is over; it gets its number."""
    _transition(ref, lambda stub, invoice_id: stub.FinalizeInvoice(
        invoice_pb2.FinalizeInvoiceRequest(id=invoice_id), timeout=TIMEOUT))


@invoices_app.command("void")
def void(
    ref: str = typer.Argument(..., help=REF_HELP),
    reason: str = typer.Option(..., "--reason", help="Why, kept on the invoice"),
) -> None:
    """Void a finalized invoice (the record and its number are kept)."""
    _transition(ref, lambda stub, invoice_id: stub.VoidInvoice(
        invoice_pb2.VoidInvoiceRequest(id=invoice_id, reason=reason), timeout=TIMEOUT))


@invoices_app.command("mark-paid")
def mark_paid(ref: str = typer.Argument(..., help=REF_HELP)) -> None:
    """Mark a finalized invoice paid."""
    _transition(ref, lambda stub, invoice_id: stub.MarkInvoicePaid(
        invoice_pb2.MarkInvoicePaidRequest(id=invoice_id), timeout=TIMEOUT))
