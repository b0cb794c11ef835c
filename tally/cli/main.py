"""`tally`: run the services and operate them: customers, events, usage, invoices, alerts, status."""

from __future__ import annotations

import typer

from tally.cli.catalog import catalog_app
from tally.cli.keys import keys_app
from tally.config import SERVICES

app = typer.Typer(help="Tally: usage metering and billing.", no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")
app.add_typer(keys_app, name="keys")


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
