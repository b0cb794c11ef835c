"""`tally keys`: create, list and revoke API keys in the key store the services read.

The store is the file named by TALLY_AUTH_KEYS_FILE (default: <TALLY_DATA_DIR>/api-keys.json).
It holds SHA-256 hashes only; a key's secret is printed once, by `create`, and never again.
Services re-read the file when it changes, so a revocation applies without a restart.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from tally.auth import SCOPES, KeyFile
from tally.config import Settings

keys_app = typer.Typer(help="API keys: create (shown once), list, revoke.", no_args_is_help=True)

FileOption = typer.Option(
    None, "--file", help="Key store file (default: TALLY_AUTH_KEYS_FILE, else <TALLY_DATA_DIR>/api-keys.json)"
)


def _store(file: Path | None) -> KeyFile:
    if file is not None:
        return KeyFile(file)
    configured = os.environ.get("TALLY_AUTH_KEYS_FILE")
    return KeyFile(configured if configured else Settings.from_env().data_dir / "api-keys.json")


@keys_app.command()
def create(
    name: str = typer.Option(..., "--name", help="Who or what uses the key, e.g. meter-service"),
    scope: list[str] = typer.Option(..., "--scope", help=f"Repeat for each scope: {', '.join(SCOPES)}"),
    file: Path | None = FileOption,
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts"),
) -> None:
    """Create a key and print it once: store it now, it cannot be shown again."""
    try:
        issued = _store(file).create(name, scope)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--scope") from None
    record = issued.record
    if as_json:
        typer.echo(json.dumps({"key_id": record.key_id, "name": record.name, "scopes": list(record.scopes),
                               "api_key": issued.plaintext}))
        return
    console = Console(soft_wrap=True)
    console.print(f"Created key [bold]{record.key_id}[/bold] ({record.name}) with scopes {', '.join(record.scopes)}.")
    console.print("This is the only time the key is shown. Send it as 'authorization: Bearer <key>':")
    typer.echo(issued.plaintext)


@keys_app.command("list")
def list_keys(
    file: Path | None = FileOption,
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts"),
) -> None:
    """List keys: id, name, scopes, created, revoked (never secrets)."""
    records = sorted(_store(file).load().values(), key=lambda r: r.created_at)
    if as_json:
        typer.echo(json.dumps([
            {"key_id": r.key_id, "name": r.name, "scopes": list(r.scopes), "created_at": r.created_at,
             "revoked_at": r.revoked_at}
            for r in records
        ], indent=2))
        return
    table = Table("key id", "name", "scopes", "created", "revoked")
    for r in records:
        table.add_row(r.key_id, r.name, ", ".join(r.scopes), r.created_at, r.revoked_at or "")
    Console(soft_wrap=True).print(table)


@keys_app.command()
def revoke(
    key_id: str = typer.Argument(..., help="The key id shown by create and list"),
    file: Path | None = FileOption,
) -> None:
    """Revoke a key; services refuse it from their next call on."""
    record = _store(file).revoke(key_id)
    if record is None:
        typer.echo(f"no key {key_id!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {record.key_id} ({record.name}) at {record.revoked_at}")
