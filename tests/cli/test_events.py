"""`tally events send` and `tally events import` against the real ingest service."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import grpc

from tally.cli.importing import derived_key
from tally_gen.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from tests.harness import unique


def stored_event(services, key: str) -> ingest_pb2.StoredEvent:
    with grpc.insecure_channel(services.address("ingest")) as channel:
        reply = ingest_pb2_grpc.IngestServiceStub(channel).GetEvent(
            ingest_pb2.GetEventRequest(idempotency_key=key), timeout=10
        )
    return reply.event


def recent(minutes: int) -> str:
    return (datetime.now(timezone.utc) - timedelta(minutes=minutes)).replace(microsecond=0).isoformat()


class TestSendEvent:
    def test_an_event_is_stored_and_a_resend_is_a_duplicate(self, cli, services, make_customer, voip_plan):
        customer = make_customer()
        key = unique("evt")
        args = ["events", "send", "--type", voip_plan.event_type, "--customer", customer["external_id"],
                "-p", "minutes=12.5", "--key", key]
        first = cli("--json", *args)
        assert first.exit_code == 0, first.output
        sent = json.loads(first.stdout)
        assert sent["idempotency_key"] == key and sent["duplicate"] is False
        again = cli(*args)
        assert again.exit_code == 0, again.output
        assert again.stdout.startswith("duplicate (already stored)")
        stored = stored_event(services, key)
        assert stored.customer_id == customer["id"]
        assert stored.properties["minutes"] == "12.5"

    def test_sending_the_same_event_twice_without_a_key_stores_two_events(self, cli, services, make_customer, voip_plan):
        customer = make_customer()
        args = ["--json", "events", "send", "--type", voip_plan.event_type, "--customer", customer["external_id"],
                "-p", "minutes=3"]
        first, again = cli(*args), cli(*args)
        assert first.exit_code == 0 and again.exit_code == 0, (first.output, again.output)
        one, two = json.loads(first.stdout), json.loads(again.stdout)
        assert one["duplicate"] is False and two["duplicate"] is False
        assert one["event_id"] != two["event_id"] and one["idempotency_key"] != two["idempotency_key"]
        for sent in (one, two):
            assert stored_event(services, sent["idempotency_key"]).event_id == sent["event_id"]
        plain = cli(*args[1:])
        assert plain.stdout.startswith("stored: "), plain.output

    def test_an_unknown_customer_is_a_readable_error_naming_the_field(self, cli, voip_plan):
        result = cli("events", "send", "--type", voip_plan.event_type, "--customer", unique("nobody"))
        assert result.exit_code == 1
        assert "error: ingest: invalid request" in result.stderr
        assert "  - event.customer: unknown customer" in result.stderr

    def test_properties_json_keeps_decimals_exact(self, cli, services, make_customer, voip_plan):
        customer = make_customer()
        key = unique("evt")
        result = cli("events", "send", "--type", voip_plan.event_type, "--customer-id", customer["id"],
                     "--properties", '{"minutes": 0.100000000000000005, "region": "eu"}', "--key", key)
        assert result.exit_code == 0, result.output
        # As a float this would be 0.1; 18 places is the most a meter value may have.
        assert stored_event(services, key).properties["minutes"] == "0.100000000000000005"


class TestImportFile:
    def test_a_csv_import_reports_rejected_lines_and_a_reimport_counts_nothing_twice(
        self, cli, make_customer, voip_plan, tmp_path
    ):
        customer = make_customer()
        ext = customer["external_id"]
        path = tmp_path / "usage.csv"
        path.write_text(
            "event_type,customer,timestamp,minutes,region\n"
            f"{voip_plan.event_type},{ext},{recent(30)},12,eu\n"
            f"{voip_plan.event_type},{ext},{recent(20)},7.25,us\n"
            f"{voip_plan.event_type},,{recent(10)},3,eu\n"
            f"{voip_plan.event_type},{unique('nobody')},{recent(10)},3,eu\n"
            f"{voip_plan.event_type},{ext},{recent(20)},7.25,us\n"
            f"{voip_plan.event_type},{ext},not-a-time,1,eu\n"
        )
        first = cli("--json", "events", "import", str(path))
        assert first.exit_code == 1, first.output
        report = json.loads(first.stdout)
        # Lines 3 and 6 are identical events that happened twice: both count.
        assert (report["lines"], report["accepted"], report["duplicate"]) == (6, 3, 0)
        assert [r["line"] for r in report["rejected"]] == [4, 5, 7]
        reasons = {r["line"]: r["reason"] for r in report["rejected"]}
        assert "customer" in reasons[4]
        assert reasons[5].startswith("customer: unknown customer")
        assert "timestamp" in reasons[7]

        again = json.loads(cli("--json", "events", "import", str(path)).stdout)
        assert (again["accepted"], again["duplicate"]) == (0, 3)

    def test_an_ndjson_import_prints_a_summary_and_a_table_of_rejected_lines(
        self, cli, services, make_customer, voip_plan, tmp_path
    ):
        customer = make_customer()
        lines = [
            {"event_type": voip_plan.event_type, "customer_id": customer["id"], "timestamp": recent(5),
             "properties": {"minutes": 2.5}},
            {"event_type": voip_plan.event_type, "customer_id": customer["id"], "timestamp": recent(4),
             "properties": {"minutes": 4}, "idempotency_key": unique("own")},
        ]
        path = tmp_path / "usage.ndjson"
        path.write_text(json.dumps(lines[0]) + "\n" + json.dumps(lines[1]) + "\n{not json\n")
        result = cli("events", "import", str(path))
        assert result.exit_code == 1
        assert "3 lines, 2 accepted, 0 duplicate (already imported), 1 rejected" in result.stdout
        assert "not valid JSON" in result.stdout
        derived = derived_key(json.loads(json.dumps(lines[0]), parse_float=Decimal), 0)
        assert stored_event(services, derived).properties["minutes"] == "2.5"
        assert stored_event(services, lines[1]["idempotency_key"]).properties["minutes"] == 4

    def test_a_clean_file_imports_with_exit_code_0(self, cli, make_customer, voip_plan, tmp_path):
        customer = make_customer()
        path = tmp_path / "usage.csv"
        rows = [f"{voip_plan.event_type},{customer['external_id']},{recent(50 - i)},{i}" for i in range(40)]
        path.write_text("event_type,customer,timestamp,minutes\n" + "\n".join(rows) + "\n")
        result = cli("--json", "events", "import", "--batch-size", "7", str(path))
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["accepted"] == 40

    def test_an_unreachable_ingest_stops_the_import_with_a_readable_error(self, cli, voip_plan, tmp_path):
        from tests.harness import free_port

        path = tmp_path / "usage.csv"
        path.write_text(f"event_type,customer,timestamp,minutes\n{voip_plan.event_type},a,{recent(1)},1\n")
        env = {**cli.env, "TALLY_INGEST_ADDR": f"127.0.0.1:{free_port()}"}
        result = type(cli)(env)("events", "import", str(path))
        assert result.exit_code == 1
        assert "import stopped: cannot send to ingest" in result.stderr
