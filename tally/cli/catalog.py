"""`tally catalog`: apply a declarative catalog file, and list what the catalog holds."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from tally.catalog_file import CatalogFileError, load_catalog_file
from tally.cli.output import MODE, console, enum_label, print_json, print_table, to_dict
from tally.cli.rpc import call, collect_pages, fail
from tally_gen.catalog.v1 import catalog_pb2

catalog_app = typer.Typer(help="Products, meters and plans in the catalog service.", no_args_is_help=True)

# Applying a large catalog is one transaction; give it more time than a lookup.
APPLY_TIMEOUT = 120.0


@catalog_app.command()
def apply(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="Catalog YAML file"),  # noqa: B008
    dry_run: bool = typer.Option(False, "--dry-run", help="Report what would change, change nothing"),
) -> None:
    """Create or update the file's products, meters and plans in one transaction (idempotent)."""
    try:
        request = load_catalog_file(file, dry_run=dry_run)
    except CatalogFileError as error:
        fail(f"{file}: {error}")
        return
    reply = call("catalog", lambda stub: stub.ApplyCatalog(request, timeout=APPLY_TIMEOUT))
    if MODE.json:
        print_json(to_dict(reply))
        return
    table = Table(title=f"{'dry run: ' if dry_run else ''}catalog revision {reply.revision}")
    for column in ("kind", "key", "action", "version"):
        table.add_column(column)
    for result in reply.results:
        action = catalog_pb2.ApplyAction.Name(result.action).removeprefix("APPLY_ACTION_")
        table.add_row(result.kind, result.key, action, str(result.version) if result.kind == "plan" else "")
    print_table(table)


@catalog_app.command("list")
def list_catalog() -> None:
    """Print the catalog's products, meters and plans (latest versions)."""

    async def fetch(stub):
        return (
            await collect_pages(stub.ListProducts, catalog_pb2.ListProductsRequest, "products"),
            await collect_pages(stub.ListMeters, catalog_pb2.ListMetersRequest, "meters"),
            await collect_pages(stub.ListPlans, catalog_pb2.ListPlansRequest, "plans"),
        )

    products, meters, plans = call("catalog", fetch)
    if MODE.json:
        print_json(
            {
                "products": [to_dict(p) for p in products],
                "meters": [to_dict(m) for m in meters],
                "plans": [to_dict(p) for p in plans],
            }
        )
        return
    out = console()
    table = Table(title="products")
    for column in ("key", "name", "description"):
        table.add_column(column)
    for p in products:
        table.add_row(p.key, p.name, p.description)
    print_table(table, out)
    table = Table(title="meters")
    for column in ("key", "event_type", "aggregation", "value_property", "unit", "locked"):
        table.add_column(column)
    for m in meters:
        aggregation = enum_label(catalog_pb2.Aggregation, m.aggregation, "AGGREGATION_")
        table.add_row(m.key, m.event_type, aggregation, m.value_property, m.unit, "yes" if m.locked else "")
    print_table(table, out)
    table = Table(title="plans")
    for column in ("key", "name", "version", "currency", "interval", "charges"):
        table.add_column(column)
    for p in plans:
        v = p.latest_version
        interval = enum_label(catalog_pb2.BillingInterval, v.interval, "BILLING_INTERVAL_")
        table.add_row(
            p.key,
            p.name,
            str(v.version),
            v.currency,
            f"every {v.interval_count} {interval}",
            ", ".join(c.key for c in v.charges),
        )
    print_table(table, out)
