"""The in-service scheduler closes periods on its own."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from services.invoice.service import InvoiceSettings
from tally_gen.invoice.v1 import invoice_pb2 as ipb
from tests.harness import in_process
from tests.invoice.helpers import invoice_app, midnight_days_ago

pytestmark = pytest.mark.e2e


class TestScheduler:
    async def test_the_scheduler_creates_and_finalizes_invoices_for_ended_periods(
        self, stubs, services, database_url, settings
    ):
        _, _, plan_key = await stubs.meter_with_plan(fee="4.00")
        customer = await stubs.customer()
        start = midnight_days_ago(2)
        subscription = await stubs.subscribe(customer, plan_key, start)
        app = invoice_app(services, database_url, settings, InvoiceSettings(grace_seconds=0, close_interval_seconds=0.2))
        async with in_process(app):
            for _ in range(600):
                invoices = await stubs.invoices_of(subscription)
                if len(invoices) == 2 and all(i.status == ipb.INVOICE_STATUS_FINALIZED for i in invoices):
                    break
                await asyncio.sleep(0.1)
        assert [(i.period.start.ToDatetime(), i.status) for i in invoices] == [
            ((start + timedelta(days=n)).replace(tzinfo=None), ipb.INVOICE_STATUS_FINALIZED) for n in range(2)
        ]
