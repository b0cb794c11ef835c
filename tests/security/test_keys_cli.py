"""`tally keys create/list/revoke` against the key store the services read."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from tally.auth import FileKeyVerifier, parse_key
from tally.cli.main import app

runner = CliRunner()


def run(*args: str):
    result = runner.invoke(app, list(args))
    return result


class TestKeysCommand:
    async def test_create_prints_a_working_key_once_and_list_never_shows_it(self, tmp_path):
        store = tmp_path / "keys.json"
        created = run("keys", "create", "--name", "meter-service", "--scope", "read", "--file", str(store), "--json")
        assert created.exit_code == 0, created.output
        issued = json.loads(created.output)
        key_id, secret = parse_key(issued["api_key"])
        assert key_id == issued["key_id"] and issued["scopes"] == ["read"]
        principal = await FileKeyVerifier(store).verify(key_id, secret)
        assert principal.name == "meter-service"

        listed = run("keys", "list", "--file", str(store), "--json")
        assert listed.exit_code == 0, listed.output
        assert [(k["key_id"], k["revoked_at"]) for k in json.loads(listed.output)] == [(key_id, None)]
        assert secret not in listed.output
        assert secret not in store.read_text()

    async def test_revoke_makes_the_key_fail_verification(self, tmp_path):
        store = tmp_path / "keys.json"
        issued = json.loads(run("keys", "create", "--name", "ci", "--scope", "events:write", "--file", str(store), "--json").output)
        revoked = run("keys", "revoke", issued["key_id"], "--file", str(store))
        assert revoked.exit_code == 0, revoked.output
        assert await FileKeyVerifier(store).verify(*parse_key(issued["api_key"])) is None
        listed = json.loads(run("keys", "list", "--file", str(store), "--json").output)
        assert listed[0]["revoked_at"] is not None

    def test_unknown_scopes_and_unknown_keys_are_errors(self, tmp_path):
        store = tmp_path / "keys.json"
        bad_scope = run("keys", "create", "--name", "x", "--scope", "admin", "--file", str(store))
        assert bad_scope.exit_code == 2
        assert not store.exists()
        unknown = run("keys", "revoke", "0123456789abcdef", "--file", str(store))
        assert unknown.exit_code == 1

    def test_the_store_defaults_to_the_configured_file(self, tmp_path, monkeypatch):
        store = tmp_path / "configured.json"
        monkeypatch.setenv("TALLY_AUTH_KEYS_FILE", str(store))
        assert run("keys", "create", "--name", "x", "--scope", "read").exit_code == 0
        assert len(json.loads(store.read_text())["keys"]) == 1
