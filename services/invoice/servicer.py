"""gRPC entrypoint of the invoice service: decode, call one use case, encode."""

from __future__ import annotations

from services.invoice import mapping
from services.invoice.service import InvoiceService
from tally.quarantine import record_out
from tally_gen.invoice.v1 import invoice_pb2, invoice_pb2_grpc


class InvoiceServicer(invoice_pb2_grpc.InvoiceServiceServicer):
    def __init__(self, service: InvoiceService) -> None:
        self.service = service

    async def CloseDuePeriods(self, request, context):
        as_of = mapping.request_time(request, "as_of")
        result = await self.service.close_due_periods(as_of, list(request.subscription_ids))
        return invoice_pb2.CloseDuePeriodsResponse(
            invoices_created=len(result.created),
            invoices_finalized=result.finalized,
            waiting_for_usage=result.waiting_for_usage,
            invoice_ids=result.created,
            subscriptions_failed=result.failed,
            quarantined=[record_out(r) for r in result.quarantined[:1000]],
        )

    async def GetInvoiceStatus(self, request, context):
        quarantine = self.service.quarantine
        return invoice_pb2.GetInvoiceStatusResponse(
            quarantined=[record_out(r) for r in quarantine.records(1000)], quarantined_count=quarantine.count
        )

    async def GetInvoice(self, request, context):
        ref = request.WhichOneof("ref")
        invoice = await self.service.get_invoice(
            invoice_id=request.id if ref == "id" else "", number=request.number if ref == "number" else ""
        )
        return invoice_pb2.GetInvoiceResponse(invoice=mapping.invoice_to(invoice))

    async def ListInvoices(self, request, context):
        filters = mapping.list_filters_from(request)
        found, token = await self.service.list_invoices(
            requested_page_size=request.page_size,
            page_token=request.page_token,
            customer_id=filters.customer_id,
            customer_external_id=filters.customer_external_id,
            subscription_id=filters.subscription_id,
            subscription_external_id=filters.subscription_external_id,
            status=mapping.status_from(request.status),
            kind=mapping.invoice_kind_from(request.kind),
        )
        return invoice_pb2.ListInvoicesResponse(invoices=[mapping.invoice_to(i) for i in found], next_page_token=token)

    async def FinalizeInvoice(self, request, context):
        invoice = await self.service.finalize_invoice(request.id)
        return invoice_pb2.FinalizeInvoiceResponse(invoice=mapping.invoice_to(invoice))

    async def MarkInvoicePaid(self, request, context):
        invoice = await self.service.mark_invoice_paid(request.id)
        return invoice_pb2.MarkInvoicePaidResponse(invoice=mapping.invoice_to(invoice))

    async def VoidInvoice(self, request, context):
        invoice = await self.service.void_invoice(request.id, request.reason)
        return invoice_pb2.VoidInvoiceResponse(invoice=mapping.invoice_to(invoice))

    async def UpcomingInvoice(self, request, context):
        subscription_id, external_id = mapping.subscription_ref_from(request)
        invoice = await self.service.upcoming_invoice(
            subscription_id, mapping.request_time(request, "as_of"), subscription_external_id=external_id
        )
        return invoice_pb2.UpcomingInvoiceResponse(invoice=mapping.invoice_to(invoice))

    async def ListBillingPeriods(self, request, context):
        subscription_id, external_id = mapping.subscription_ref_from(request)
        found, token = await self.service.list_billing_periods(
            subscription_id,
            mapping.request_time(request, "until"),
            request.page_size,
            request.page_token,
            subscription_external_id=external_id,
        )
        return invoice_pb2.ListBillingPeriodsResponse(
            periods=[mapping.period_to(period, *invoice_ids) for period, invoice_ids in found], next_page_token=token
        )

    async def RenderInvoicePdf(self, request, context):
        pdf, filename = await self.service.render_pdf(request.id)
        return invoice_pb2.RenderInvoicePdfResponse(pdf=pdf, filename=filename)
