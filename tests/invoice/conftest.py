"""Invoice test stack: catalog, ingest and meter as real processes, the invoice service in-process.

The invoice service runs in this process (scheduler off, default 1 h grace) so tests can
reach its use cases; it talks to the other three over gRPC exactly as in production.
"""

from __future__ import annotations

import pytest

from services.invoice.service import InvoiceSettings
from tally.channels import connect
from tests.harness import in_process
from tests.invoice.helpers import Stubs, invoice_app


@pytest.fixture(scope="session")
async def invoice_stack(services, database_url, settings):
    # The invoice process of the shared cluster must not close our subscriptions on its own
    # schedule in the middle of a test: restart it with the scheduler off.
    if services.extra_env.get("TALLY_INVOICE_CLOSE_INTERVAL_SECONDS") != "0":
        services.extra_env["TALLY_INVOICE_CLOSE_INTERVAL_SECONDS"] = "0"
        services.terminate("invoice")
        services.start("invoice")
        await services.wait("invoice")
    app = invoice_app(services, database_url, settings, InvoiceSettings(close_interval_seconds=0))
    channels = [connect(services.address(s)) for s in ("catalog", "ingest", "meter")]
    async with in_process(app) as (_running, invoice_channel):
        yield app.service, Stubs(*channels, invoice_channel)
    for channel in channels:
        await channel.close()


@pytest.fixture(scope="session")
def stubs(invoice_stack) -> Stubs:
    return invoice_stack[1]


@pytest.fixture(scope="session")
def invoice_service(invoice_stack):
    return invoice_stack[0]
