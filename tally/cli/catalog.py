"""`tally catalog`: apply a declarative catalog file, and list what the catalog holds."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import typer
from rich.console import Console
from rich.table import Table

from tally.catalog_file import CatalogFileError, load_catalog_file
from tally.channels import connect
from tally.config import service_address
from tally.grpc_errors import field_violations
from tally_gen.catalog.v1 import catalog_pb2, catalog_pb2_grpc

catalog_app = typer.Typer(help="Products, meters and plans in the catalog service.", no_args_is_help=True)

AddressOption = typer.Option(None, "--address", help="host:port of the catalog (default: TALLY_CATALOG_ADDR)")


def _fail(error: grpc.aio.AioRpcError) -> None:
    console = Console(stderr=True)
    console.print(f"[red]{error.code().name}[/red]: {error.details()}")
    for field, description in field_violations(error):
        console.print(f"  {field}: {description}")
    raise typer.Exit(1)


async def _apply(address: str, request: catalog_pb2.ApplyCatalogRequest) -> catalog_pb2.ApplyCatalogResponse:
    async with connect(address) as channel:
        return await catalog_pb2_grpc.CatalogServiceStub(channel).ApplyCatalog(request, timeout=60)


@catalog_app.command()
def apply(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="Catalog YAML file"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Report what would change, change nothing"),
    address: str | None = AddressOption,
) -> None:
    """Create or update the file's products, meters and plans in one transaction (idempotent)."""
    try:
        request = load_catalog_file(file, dry_run=dry_run)
    except CatalogFileError as error:
        Console(stderr=True).print(f"[red]{file}[/red]: {error}")
        raise typer.Exit(2) from None
    try:
        reply = asyncio.run(_apply(address or service_address("catalog"), request))
    except grpc.aio.AioRpcError as error:
        _fail(error)
        return
    table = Table(title=f"{'dry run: ' if dry_run else ''}catalog revision {reply.revision}")
    for column in ("kind", "key", "action", "version"):
        table.add_column(column)
    for result in reply.results:
        action = catalog_pb2.ApplyAction.Name(result.action).removeprefix("APPLY_ACTION_")
        table.add_row(result.kind, result.key, action, str(result.version) if result.kind == "plan" else "")
    Console().print(table)


async def _list(address: str) -> tuple[list, list, list]:
    async with connect(address) as channel:
        stub = catalog_pb2_grpc.CatalogServiceStub(channel)
        products, meters, plans = [], [], []
        for call, request_type, field, out in (
            (stub.ListProducts, catalog_pb2.ListProductsRequest, "products", products),
            (stub.ListMeters, catalog_pb2.ListMetersRequest, "meters", meters),
            (stub.ListPlans, catalog_pb2.ListPlansRequest, "plans", plans),
        ):
            token = ""
            while True:
                reply = await call(request_type(page_size=200, page_token=token), timeout=30)
                out.extend(getattr(reply, field))
                token = reply.next_page_token
                if not token:
                    break
        return products, meters, plans


@catalog_app.command("list")
def list_catalog(address: str | None = AddressOption) -> None:
    """Print the catalog's products, meters and plans (latest versions)."""
    try:
        products, meters, plans = asyncio.run(_list(address or service_address("catalog")))
    except grpc.aio.AioRpcError as error:
        _fail(error)
        return
    console = Console()
    table = Table(title="products")
    for column in ("key", "name", "description"):
        table.add_column(column)
    for p in products:
        table.add_row(p.key, p.name, p.description)
    console.print(table)
    table = Table(title="meters")
    for column in ("key", "event_type", "aggregation", "value_property", "unit", "locked"):
        table.add_column(column)
    for m in meters:
        aggregation = catalog_pb2.Aggregation.Name(m.aggregation).removeprefix("AGGREGATION_")
        table.add_row(m.key, m.event_type, aggregation, m.value_property, m.unit, "yes" if m.locked else "")
    console.print(table)
    table = Table(title="plans")
    for column in ("key", "name", "version", "currency", "interval", "charges"):
        table.add_column(column)
    for p in plans:
        v = p.latest_version
        interval = catalog_pb2.BillingInterval.Name(v.interval).removeprefix("BILLING_INTERVAL_")
        table.add_row(p.key, p.name, str(v.version), v.currency, f"{v.interval_count} x {interval}",
                      ", ".join(c.key for c in v.charges))
    console.print(table)
