"""Issue 13 items 4, 8, 9, 10 against all four services as real processes.

The same tests as tests/invoice/test_in_advance_close.py (where the invoice service runs in the
test process), here with the invoice service as its own process, migrated like production.
"""

from __future__ import annotations

import pytest

from tally.channels import connect
from tests.invoice.helpers import Stubs
from tests.invoice.test_in_advance_close import (  # noqa: F401 - collected here too
    TestAnniversaryTimeOfDay,
    TestAsOfInTheFuture,
    TestBackdatedChangeAfterBilling,
    TestInAdvanceFeesAtPeriodStart,
    TestInvoiceKindRequests,
    TestProrationThroughTheServices,
    TestTierFlatAmountAtZero,
    TestVoidAndPreview,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
async def stubs(services):
    # Closes in these tests are explicit; the process's own scheduler must not race them.
    if services.extra_env.get("TALLY_INVOICE_CLOSE_INTERVAL_SECONDS") != "0":
        services.extra_env["TALLY_INVOICE_CLOSE_INTERVAL_SECONDS"] = "0"
        services.terminate("invoice")
        services.start("invoice")
        await services.wait("invoice")
    channels = [connect(services.address(s)) for s in ("catalog", "ingest", "meter", "invoice")]
    yield Stubs(*channels)
    for channel in channels:
        await channel.close()
