"""`tally usage show` (table and terminal chart) and `tally alerts watch`."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer
from rich.table import Table

from tally.cli.customers import customer_ref, timestamp
from tally.cli.output import MODE, console, fmt_decimal, fmt_quantity, fmt_time, print_json, print_table, to_dict
from tally.cli.rpc import TIMEOUT, call, fail
from tally_gen.meter.v1 import meter_pb2

usage_app = typer.Typer(help="Usage from the meter service.", no_args_is_help=True)
alerts_app = typer.Typer(help="Threshold alerts from the meter service.", no_args_is_help=True)

GRANULARITIES = {
    "hour": (meter_pb2.GRANULARITY_HOUR, "%Y-%m-%d %H:%M"),
    "day": (meter_pb2.GRANULARITY_DAY, "%Y-%m-%d"),
    "month": (meter_pb2.GRANULARITY_MONTH, "%Y-%m"),
}
CHART_WIDTH = 40


def bar(value: Decimal, largest: Decimal, width: int = CHART_WIDTH) -> str:
    """A horizontal bar of ``width`` cells at most, in eighths of a cell, for value/largest."""
    if largest <= 0 or value <= 0:
        return ""
    eighths = int((value / largest * width * 8).to_integral_value())
    full, rest = divmod(eighths, 8)
    partial = " ▏▎▍▌▋▊▉"[rest] if rest else ""
    return ("█" * full + partial).rstrip() or "▏"


@usage_app.command("show")
def show(
    meter: str = typer.Option(..., "--meter", help="Meter key"),
    customer: str = typer.Option(None, "--customer", "-c", help="The customer's external id"),
    customer_id: str = typer.Option(None, "--customer-id", help="Tally's customer id instead"),
    start: str = typer.Option(None, "--from", help="ISO 8601 start (default: 30 days before --to)"),
    end: str = typer.Option(None, "--to", help="ISO 8601 end, exclusive (default: now)"),
    granularity: str = typer.Option("day", "--granularity", "-g", help="hour, day or month"),
    time_zone: str = typer.Option("UTC", "--timezone", help="IANA zone of the chart's calendar"),
) -> None:
    """A customer's usage of a meter: the total, and a table with a chart over time."""
    if granularity not in GRANULARITIES:
        fail("invalid --granularity", [("--granularity", "must be hour, day or month")])
    try:
        zone = ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        fail("invalid --timezone", [("--timezone", f"{time_zone!r} is not an IANA time zone")])
    ref = customer_ref(customer, customer_id)
    end_ts = timestamp(end, "--to") if end else timestamp(datetime.now(timezone.utc).isoformat(), "--to")
    if start:
        start_ts = timestamp(start, "--from")
    else:
        start_ts = timestamp((end_ts.ToDatetime(tzinfo=timezone.utc) - timedelta(days=30)).isoformat(), "--from")
    level, label_format = GRANULARITIES[granularity]

    async def fetch(stub):
        total = await stub.GetUsage(
            meter_pb2.GetUsageRequest(customer=ref, meter_key=meter, start=start_ts, end=end_ts), timeout=TIMEOUT
        )
        series = await stub.UsageSeries(
            meter_pb2.UsageSeriesRequest(
                customer=ref, meter_key=meter, start=start_ts, end=end_ts, granularity=level, time_zone=time_zone
            ),
            timeout=TIMEOUT,
        )
        return total, series

    total, series = call("meter", fetch)
    if MODE.json:
        print_json(
            {
                "meter_key": total.meter_key,
                "customer_id": total.customer_id,
                "start": fmt_time(total.start),
                "end": fmt_time(total.end),
                "total": fmt_decimal(total.value),
                "granularity": granularity,
                "time_zone": time_zone,
                "points": [
                    {"start": fmt_time(p.start), "end": fmt_time(p.end), "value": fmt_decimal(p.value)}
                    for p in series.points
                ],
            }
        )
        return
    values = [Decimal(fmt_decimal(p.value)) for p in series.points]
    largest = max(values, default=Decimal(0))
    table = Table(
        title=f"{meter} for {total.customer_id}: {fmt_quantity(total.value)} from {fmt_time(total.start)} "
        f"to {fmt_time(total.end)}",
        title_justify="left",
    )
    table.add_column(f"{granularity} ({time_zone})")
    table.add_column("usage", justify="right")
    table.add_column("", min_width=CHART_WIDTH, no_wrap=True)
    for point, value in zip(series.points, values, strict=True):
        label = point.start.ToDatetime(tzinfo=timezone.utc).astimezone(zone).strftime(label_format)
        table.add_row(label, fmt_quantity(point.value), f"[cyan]{bar(value, largest)}[/]")
    print_table(table)


@alerts_app.command("watch")
def watch(
    customer_id: str = typer.Option("", "--customer-id", help="Only this customer's alerts"),
    after: str = typer.Option("", "--after", help="Resume after this alert cursor (default: from the first)"),
    count: int = typer.Option(0, "--count", help="Stop after this many alerts (default: watch until Ctrl-C)"),
) -> None:
    """Print alerts as thresholds are crossed: past ones first, then live. One JSON line each with --json."""

    async def follow(stub):
        seen = 0
        stream = stub.WatchAlerts(meter_pb2.WatchAlertsRequest(after_cursor=after, customer_id=customer_id))
        try:
            async for reply in stream:
                _print_alert(reply.alert)
                seen += 1
                if count and seen >= count:
                    break
        finally:
            stream.cancel()
        return seen

    try:
        call("meter", follow)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def _print_alert(alert) -> None:
    if MODE.json:
        sys.stdout.write(json.dumps(to_dict(alert), separators=(",", ":")) + "\n")
        sys.stdout.flush()
        return
    console().print(
        f"{fmt_time(alert.fire_time)}  {alert.customer_id}  {alert.meter_key} crossed "
        f"{fmt_decimal(alert.threshold_units)} (usage {fmt_decimal(alert.usage)}, period "
        f"{fmt_time(alert.period.start)} .. {fmt_time(alert.period.end)})  cursor {alert.cursor}",
        highlight=False,
    )


