"""`tally customers` and `tally subscriptions` against the real catalog."""

from __future__ import annotations

import json
import re

from tests.harness import unique


class TestCreateCustomer:
    def test_a_created_customer_comes_back_from_show_by_external_id(self, cli, make_customer):
        created = make_customer(name="Acme Corp", email="billing@acme.test", timezone="Europe/Paris", currency="EUR")
        shown = cli("--json", "customers", "show", created["external_id"])
        assert shown.exit_code == 0, shown.output
        data = json.loads(shown.stdout)
        assert data["id"] == created["id"]
        assert (data["name"], data["email"], data["timezone"], data["currency"]) == (
            "Acme Corp",
            "billing@acme.test",
            "Europe/Paris",
            "EUR",
        )

    def test_show_by_id_prints_readable_details(self, cli, make_customer):
        created = make_customer(name="Globex", metadata="tier=gold")
        shown = cli("customers", "show", "--id", created["id"])
        assert shown.exit_code == 0, shown.output
        assert "Globex" in shown.stdout
        assert created["external_id"] in shown.stdout
        assert "metadata.tier" in shown.stdout and "gold" in shown.stdout

    def test_a_taken_external_id_is_a_readable_error_with_exit_code_1(self, cli, services, make_customer):
        created = make_customer()
        again = cli("customers", "create", "--external-id", created["external_id"])
        assert again.exit_code == 1
        assert "error: catalog: already exists" in again.stderr
        assert created["external_id"] in again.stderr
        assert "  reason: EXTERNAL_ID_TAKEN" in again.stderr
        request_id = re.search(r"^  request id: ([0-9a-f]{32}) ", again.stderr, flags=re.M).group(1)
        # The same id is on the catalog's log line for the rejected call.
        assert request_id in services.log_tail("catalog", lines=500)
        assert again.stdout == ""

    def test_invalid_fields_are_listed_one_per_line(self, cli):
        result = cli("customers", "create", "--external-id", unique("acct"), "--timezone", "Mars/Olympus", "--currency", "XXXX")
        assert result.exit_code == 1
        assert "error: catalog: invalid request" in result.stderr
        violation_lines = [line for line in result.stderr.splitlines() if line.startswith("  - ")]
        assert any("timezone" in line for line in violation_lines), result.stderr
        assert any("currency" in line for line in violation_lines), result.stderr

    def test_json_errors_carry_code_and_field_violations(self, cli):
        result = cli("--json", "customers", "create", "--external-id", unique("acct"), "--timezone", "Mars/Olympus")
        assert result.exit_code == 1
        error = json.loads(result.stdout)["error"]
        assert error["code"] == "INVALID_ARGUMENT"
        assert [v["field"] for v in error["violations"] if "timezone" in v["field"]]


class TestListCustomers:
    def test_a_query_finds_the_customer_in_the_table(self, cli, make_customer):
        marker = unique("findme")
        created = make_customer(name=f"Initech {marker}")
        listed = cli("customers", "list", "--query", marker)
        assert listed.exit_code == 0, listed.output
        assert created["id"] in listed.stdout
        assert created["external_id"] in listed.stdout

    def test_json_lists_only_matching_customers(self, cli, make_customer):
        marker = unique("only")
        first = make_customer(name=f"{marker} one")
        second = make_customer(name=f"{marker} two")
        make_customer(name="someone else")
        listed = json.loads(cli("--json", "customers", "list", "--query", marker).stdout)
        assert sorted(c["id"] for c in listed) == sorted([first["id"], second["id"]])


class TestSubscriptions:
    def test_create_list_and_show_a_subscription(self, cli, make_customer, voip_plan):
        customer = make_customer()
        created = cli(
            "--json", "subscriptions", "create", "--customer", customer["external_id"], "--plan", voip_plan.plan_key,
            "--start", "2026-01-01T00:00:00Z",
        )
        assert created.exit_code == 0, created.output
        subscription = json.loads(created.stdout)
        assert subscription["customer_id"] == customer["id"]
        assert subscription["plan_key"] == voip_plan.plan_key
        assert subscription["start_time"] == "2026-01-01T00:00:00Z"

        listed = json.loads(cli("--json", "subscriptions", "list", "--customer-id", customer["id"]).stdout)
        assert [s["id"] for s in listed] == [subscription["id"]]

        shown = cli("subscriptions", "show", subscription["id"])
        assert shown.exit_code == 0, shown.output
        assert f"{voip_plan.plan_key} v1" in shown.stdout
        assert "active" in shown.stdout
        assert "2026-01-01T00:00:00Z" in shown.stdout

    def test_an_unknown_plan_is_reported_readably(self, cli, make_customer):
        customer = make_customer()
        result = cli("subscriptions", "create", "--customer", customer["external_id"], "--plan", unique("no_plan"))
        assert result.exit_code == 1
        assert result.stderr.startswith("error: catalog: ")

    def test_naming_no_customer_is_refused_before_any_call(self, cli):
        result = cli("subscriptions", "create", "--plan", "whatever")
        assert result.exit_code == 1
        assert "exactly one of --customer" in result.stderr
