"""`tally usage-records`: read back usage records (RecordUsage) with their memos, as stored."""

from __future__ import annotations

from functools import partial

import typer
from rich.table import Table

from tally.cli.output import MODE, console, fmt_time, print_json, print_table, to_dict
from tally.cli.rpc import TIMEOUT, call, collect_pages, fail
from tally_gen.common.v1 import common_pb2
from tally_gen.ingest.v1 import ingest_pb2

usage_records_app = typer.Typer(help="Usage records (pre-aggregated usage) as ingest stored them.", no_args_is_help=True)


def _dimensions(record) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(record.dimensions.items()))


def _when(record) -> str:
    if record.HasField("range"):
        return f"{fmt_time(record.range.start)} .. {fmt_time(record.range.end)}"
    return fmt_time(record.timestamp)


def records_table(records, title: str) -> Table:
    """Usage records, one row each: quantities exactly as recorded ("10.50" stays "10.50")."""
    table = Table(title=title, title_justify="left")
    table.add_column("key", no_wrap=True)
    table.add_column("when", no_wrap=True)
    table.add_column("meter", no_wrap=True)
    table.add_column("quantity", justify="right", no_wrap=True)
    table.add_column("dimensions")
    table.add_column("price point")
    table.add_column("memo")
    for record in records:
        table.add_row(
            record.idempotency_key,
            _when(record),
            record.meter_key,
            record.quantity.value,
            _dimensions(record),
            record.price_point,
            record.memo,
        )
    return table


@usage_records_app.command("show")
def show(
    key: str = typer.Argument(None, help="The idempotency key it was recorded with"),
    record_id: str = typer.Option(None, "--id", help="The usage_record_id RecordUsage returned, instead"),
) -> None:
    """Show one usage record: quantity as recorded, memo, time range, customer, meter, dimensions."""
    if (key is None) == (record_id is None):
        fail("name the usage record with exactly one of KEY or --id")
    request = (
        ingest_pb2.GetUsageRecordRequest(usage_record_id=record_id)
        if record_id is not None
        else ingest_pb2.GetUsageRecordRequest(idempotency_key=key)
    )
    record = call("ingest", lambda stub: stub.GetUsageRecord(request, timeout=TIMEOUT)).usage_record
    if MODE.json:
        print_json(to_dict(record))
        return
    out = console()
    out.print(f"[bold]usage record[/] {record.idempotency_key}", highlight=False)
    rows = [
        ("id", record.usage_record_id),
        ("customer id", record.customer_id),
        ("meter", record.meter_key),
        ("quantity", record.quantity.value),
        ("counts at", fmt_time(record.timestamp)),
        ("range", f"{fmt_time(record.range.start)} .. {fmt_time(record.range.end)}" if record.HasField("range") else ""),
        ("dimensions", _dimensions(record)),
        ("price point", record.price_point),
        ("subscription", record.subscription_id or "(unattributed)"),
        ("memo", record.memo),
        ("stored", fmt_time(record.ingest_time)),
    ]
    for label, value in rows:
        out.print(f"  {label:<12} {value}", highlight=False)


@usage_records_app.command("list")
def list_records(
    customer: str = typer.Option(None, "--customer", "-c", help="The customer's external id"),
    customer_id: str = typer.Option(None, "--customer-id", help="Tally's customer id instead"),
    meter: str = typer.Option("", "--meter", help="Only this meter's records"),
    start: str = typer.Option(None, "--from", help="ISO 8601; records counting at or after it"),
    end: str = typer.Option(None, "--to", help="ISO 8601; records counting before it"),
    dimension: list[str] = typer.Option([], "--dimension", "-d", help="name=value, repeatable"),
    subscription: str = typer.Option(None, "--subscription", help="Only those of this subscription (its external id)"),
    subscription_id: str = typer.Option(None, "--subscription-id", help="Only those of this subscription (its id)"),
    unattributed: bool = typer.Option(False, "--unattributed", help="Only the unattributed ones (or, with a "
                                      "subscription, those too)"),
    limit: int = typer.Option(50, "--limit", min=1),
) -> None:
    """List a customer's usage records, oldest first."""
    from tally.cli.customers import customer_ref, parse_pairs, timestamp

    ref: common_pb2.CustomerRef = customer_ref(customer, customer_id)
    time_range = common_pb2.TimeRange()
    if start:
        time_range.start.CopyFrom(timestamp(start, "--from"))
    if end:
        time_range.end.CopyFrom(timestamp(end, "--to"))
    if subscription is not None and subscription_id is not None:
        fail("name the subscription with one of --subscription (external id) or --subscription-id, not both")
    sub_ref = None
    if subscription is not None or subscription_id is not None:
        sub_ref = (
            common_pb2.SubscriptionRef(external_id=subscription)
            if subscription is not None
            else common_pb2.SubscriptionRef(id=subscription_id)
        )
    request = partial(
        ingest_pb2.ListUsageRecordsRequest,
        customer=ref,
        subscription=sub_ref,
        include_unattributed=unattributed and sub_ref is not None,
        only_unattributed=unattributed and sub_ref is None,
        meter_key=meter,
        range=time_range if (start or end) else None,
        dimensions=parse_pairs(dimension, "--dimension"),
    )
    records = call("ingest", lambda stub: collect_pages(stub.ListUsageRecords, request, "usage_records", limit))
    if MODE.json:
        print_json([to_dict(r) for r in records])
        return
    print_table(records_table(records, f"usage records of {customer or customer_id}"))
