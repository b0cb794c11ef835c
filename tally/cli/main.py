"""`tally`: run the services and operate them: customers, events, usage, invoices, alerts, status."""

from __future__ import annotations

import typer

from tally.cli.catalog import catalog_app
from tally.cli.customers import customers_app, subscriptions_app
from tally.cli.events import events_app
from tally.cli.invoices import invoices_app
from tally.cli.keys import keys_app
from tally.cli.output import MODE
from tally.cli.status import health, status
from tally.cli.usage import alerts_app, usage_app
from tally.cli.usage_records import usage_records_app
from tally.config import SERVICES

app = typer.Typer(help="Tally: usage metering and billing.", no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")
app.add_typer(customers_app, name="customers")
app.add_typer(subscriptions_app, name="subscriptions")
app.add_typer(events_app, name="events")
app.add_typer(usage_app, name="usage")
app.add_typer(usage_records_app, name="usage-records")
app.add_typer(invoices_app, name="invoices")
app.add_typer(alerts_app, name="alerts")
app.command()(status)
app.command()(health)
app.add_typer(keys_app, name="keys")


def tally_version() -> str:
    """The installed package's version (pyproject.toml)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tally")
    except PackageNotFoundError:
        return "unknown (not installed as a package)"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"tally {tally_version()}")
        raise typer.Exit()


@app.callback()
def options(
    json_output: bool = typer.Option(False, "--json", help="Print JSON for scripts instead of tables."),
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", callback=_print_version, is_eager=True
    ),
) -> None:
    """Service addresses come from TALLY_<SERVICE>_ADDR (default 127.0.0.1:5005N)."""
    MODE.json = json_output


@app.command()
def serve(service: str = typer.Argument(..., help=f"One of: {', '.join(SERVICES)}")) -> None:
    """Serve one service (uses DATABASE_URL, or the embedded Postgres)."""
    if service not in SERVICES:
        raise typer.BadParameter(f"unknown service {service!r}")
    from tally.runner import serve as serve_service

    serve_service(service)


@app.command()
def migrate() -> None:
    """Migrate every service's schema (uses DATABASE_URL, or the embedded Postgres)."""
    from tally.config import Settings
    from tally.embedded_pg import resolve_database_url
    from tally.runner import migrate as run_migrate

    settings = Settings.from_env()
    url, _pg = resolve_database_url(settings.database_url, settings.data_dir)
    run_migrate(database_url=url)


@app.command()
def run() -> None:
    """Start Postgres (embedded unless DATABASE_URL), migrate, and serve all four services."""
    from tally.runner import run_all

    raise typer.Exit(run_all())


def main() -> None:
    app()


if __name__ == "__main__":
    main()
