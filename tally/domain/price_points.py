"""How a usage record's price point travels from ingest to the invoice.

A usage charge may declare named alternative prices (catalog ``UsageCharge.price_points``,
Maxio's price points). ``RecordUsage`` names one in its own field ``price_point``; ingest
checks it against the plan version in force for the customer's subscriptions and stores it
among the record's dimensions under ``PRICE_POINT_DIMENSION``. The meter keeps that dimension
on the record's contribution whatever the meter's group-by (it is the one dimension a meter
does not declare), and answers ``group_by`` on it; the invoice asks for it on charges that
declare price points and prices each price point's usage with its price, on its own line.

The name holds a ':' so no meter group-by (a dot path of letters, digits, '_', '-', '$') and
no caller's dimension can be it: ingest refuses it in ``RecordUsage.dimensions``.
"""

from __future__ import annotations

PRICE_POINT_DIMENSION = "tally:price_point"
