"""Usage queries check their cost before allocating: a query that would read more rows than the
limit is refused with INVALID_ARGUMENT naming what to narrow, on real Postgres."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import pytest

from services.meter import repository as repo
from services.meter.domain.model import Aggregation
from services.meter.service import _bounded, apply_entries, compute_points
from tally.db import asyncpg_dsn
from tally.errors import InvalidInput
from tests.harness import unique
from tests.isolation.test_meter_applier import T0, event
from tests.meter.test_apply import MemoryCatalog


class TestRowBound:
    async def test_a_query_over_the_row_limit_is_refused_naming_the_field(self, database_url, monkeypatch):
        catalog = MemoryCatalog(unique("rows"))
        customer = unique("cus")
        entries = []
        for i in range(6):
            item = event(customer, "1", i)
            entries.append((i + 1, item._replace(properties={**item.properties, "region": f"r{i}"})))
        conn = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            await apply_entries(conn, entries, catalog)
            meter = catalog.meters[Aggregation.SUM]
            span = [(T0, T0 + timedelta(hours=1))]
            within = await compute_points(conn, meter, customer, span, ("region",), {})
            monkeypatch.setattr(repo, "MAX_QUERY_ROWS", 5)
            with pytest.raises(InvalidInput) as caught:
                async with _bounded("start"):
                    await compute_points(conn, meter, customer, span, ("region",), {})
        finally:
            await conn.close()
        assert len(within[0].breakdown) == 6
        (violation,) = caught.value.violations
        assert violation.field == "start" and violation.reason == "TOO_MANY_ROWS"
        assert "more than 5 rows" in violation.description
