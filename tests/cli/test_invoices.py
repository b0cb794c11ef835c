"""`tally invoices list/show/pdf` against the real invoice service."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import grpc
import pytest

from tally_gen.invoice.v1 import invoice_pb2, invoice_pb2_grpc


def first_of_last_month() -> datetime:
    now = datetime.now(timezone.utc)
    year, month = (now.year, now.month - 1) if now.month > 1 else (now.year - 1, 12)
    return datetime(year, month, 1, tzinfo=timezone.utc)


@pytest.fixture
def closed_invoice(cli, services, make_customer, voip_plan) -> invoice_pb2.Invoice:
    """Last month's invoice of a new customer on the $10-a-month VoIP plan."""
    customer = make_customer(name="Invoice Test Co")
    created = cli("--json", "subscriptions", "create", "--customer", customer["external_id"],
                  "--plan", voip_plan.plan_key, "--start", first_of_last_month().isoformat())
    assert created.exit_code == 0, created.output
    subscription_id = json.loads(created.stdout)["id"]
    with grpc.insecure_channel(services.address("invoice")) as channel:
        stub = invoice_pb2_grpc.InvoiceServiceStub(channel)
        stub.CloseDuePeriods(invoice_pb2.CloseDuePeriodsRequest(subscription_ids=[subscription_id]), timeout=30)
        listed = stub.ListInvoices(invoice_pb2.ListInvoicesRequest(subscription_id=subscription_id), timeout=10)
        assert len(listed.invoices) == 1
        invoice = listed.invoices[0]
        if invoice.status == invoice_pb2.INVOICE_STATUS_DRAFT:  # within the grace hour of a month's start
            invoice = stub.FinalizeInvoice(invoice_pb2.FinalizeInvoiceRequest(id=invoice.id), timeout=30).invoice
    assert invoice.status == invoice_pb2.INVOICE_STATUS_FINALIZED
    return invoice


class TestInvoices:
    def test_list_by_subscription_shows_the_invoice_and_its_total(self, cli, closed_invoice):
        listed = cli("invoices", "list", "--subscription-id", closed_invoice.subscription_id)
        assert listed.exit_code == 0, listed.output
        assert closed_invoice.id in listed.stdout
        assert "10.00 USD" in listed.stdout

        as_json = json.loads(cli("--json", "invoices", "list", "--customer-id", closed_invoice.customer_id).stdout)
        assert [i["id"] for i in as_json] == [closed_invoice.id]

    def test_show_prints_lines_and_total_by_id_and_by_number(self, cli, closed_invoice):
        shown = cli("invoices", "show", closed_invoice.id)
        assert shown.exit_code == 0, shown.output
        assert "Monthly fee" in shown.stdout
        assert "total     10.00 USD" in shown.stdout
        assert closed_invoice.number.startswith("INV-")
        by_number = json.loads(cli("--json", "invoices", "show", closed_invoice.number).stdout)
        assert by_number["id"] == closed_invoice.id
        assert by_number["total"] == {"value": "10.00"}
        assert by_number["status"] == "INVOICE_STATUS_FINALIZED"

    def test_pdf_writes_a_pdf_file(self, cli, closed_invoice, tmp_path):
        target = tmp_path / "invoice.pdf"
        result = cli("invoices", "pdf", closed_invoice.id, "--output", str(target))
        assert result.exit_code == 0, result.output
        assert target.read_bytes().startswith(b"%PDF")
        assert f"wrote {target}" in result.stdout

    def test_an_unknown_invoice_is_a_readable_not_found(self, cli):
        result = cli("invoices", "show", "inv_does_not_exist")
        assert result.exit_code == 1
        assert result.stderr.startswith("error: invoice: not found: ")

    def test_an_unknown_status_filter_is_refused_before_any_call(self, cli):
        result = cli("invoices", "list", "--status", "lost")
        assert result.exit_code == 1
        assert "--status: must be draft, finalized, paid or void" in result.stderr
