"""GetUsage, UsageSeries and GetMeterStatus through the real services (ingest -> meter)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from tally.channels import connect
from tests.harness import unique
from tests.meter.helpers import Stubs, value

UTC = timezone.utc
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
async def stubs(services):
    channels = [connect(services.address(s)) for s in ("catalog", "ingest", "meter")]
    yield Stubs(*channels)
    for channel in channels:
        await channel.close()


def recent(minutes_ago: float) -> datetime:
    base = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=2)
    return base - timedelta(minutes=minutes_ago)


class TestGetUsage:
    async def test_sum_of_events_is_exact_and_ignores_events_outside_the_period(self, stubs):
        event_type = unique("call")
        meter = await stubs.create_meter(event_type, "SUM", "minutes")
        customer = await stubs.create_customer()
        t0 = recent(60)
        await stubs.send(customer, event_type, [
            (unique("e"), t0, {"minutes": 1.4}),
            (unique("e"), t0 + timedelta(seconds=30), {"minutes": "2.25"}),
            (unique("e"), t0 + timedelta(minutes=5), {"minutes": 3}),
            (unique("e"), t0 + timedelta(hours=2), {"minutes": 100}),
        ])
        await stubs.wait_applied()
        reply = await stubs.usage(customer, meter, t0, t0 + timedelta(hours=1))
        assert value(reply) == Decimal("6.65")
        assert reply.customer_id == customer
