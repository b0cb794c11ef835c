"""`tally usage show`, `tally alerts watch`, `tally status` and `tally health` against real services."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import grpc

from tally_gen.common.v1 import common_pb2
from tally_gen.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from tally_gen.meter.v1 import meter_pb2, meter_pb2_grpc
from tests.harness import free_port

UTC = timezone.utc


def wait_metered(services, timeout: float = 30.0) -> None:
    """Wait until the meter has applied everything ingest has committed so far."""
    with grpc.insecure_channel(services.address("ingest")) as ingest_channel, grpc.insecure_channel(
        services.address("meter")
    ) as meter_channel:
        head = ingest_pb2_grpc.IngestServiceStub(ingest_channel).GetIngestStats(
            ingest_pb2.GetIngestStatsRequest(), timeout=10
        ).head_position
        meter = meter_pb2_grpc.MeterServiceStub(meter_channel)
        deadline = time.monotonic() + timeout
        while True:
            status = meter.GetMeterStatus(meter_pb2.GetMeterStatusRequest(), timeout=10)
            if status.applied_position >= head and status.events_behind == 0:
                return
            assert time.monotonic() < deadline, f"meter not caught up with {head}: {status}"
            time.sleep(0.05)


def import_rows(cli, tmp_path, rows: list[tuple[str, str, datetime, str]]) -> None:
    path = tmp_path / "rows.csv"
    path.write_text(
        "event_type,customer,timestamp,minutes\n"
        + "".join(f"{t},{c},{when.isoformat()},{minutes}\n" for t, c, when, minutes in rows)
    )
    result = cli("--json", "events", "import", str(path))
    assert result.exit_code == 0, result.output


class TestUsageShow:
    def test_the_total_and_daily_points_follow_the_events(self, cli, services, make_customer, voip_plan, tmp_path):
        customer = make_customer()["external_id"]
        day = (datetime.now(UTC) - timedelta(days=3)).replace(hour=0, minute=0, second=0, microsecond=0)
        t = voip_plan.event_type
        import_rows(cli, tmp_path, [
            (t, customer, day + timedelta(hours=1), "10"),
            (t, customer, day + timedelta(hours=5), "2.5"),
            (t, customer, day + timedelta(days=1, hours=3), "0.05"),
            (t, customer, day + timedelta(days=2, hours=23), "40"),
        ])
        wait_metered(services)
        start, end = day.isoformat(), (day + timedelta(days=3)).isoformat()
        result = cli("--json", "usage", "show", "--meter", voip_plan.meter_key, "--customer", customer,
                     "--from", start, "--to", end)
        assert result.exit_code == 0, result.output
        usage = json.loads(result.stdout)
        assert usage["total"] == "52.55"
        points = [(p["start"][:10], p["value"]) for p in usage["points"]]
        assert [v for _, v in points] == ["12.5", "0.05", "40"]
        assert points[0][0] == day.date().isoformat()

    def test_the_table_draws_a_bar_per_period_scaled_to_the_largest(
        self, cli, services, make_customer, voip_plan, tmp_path
    ):
        customer = make_customer()["external_id"]
        day = (datetime.now(UTC) - timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0)
        t = voip_plan.event_type
        import_rows(cli, tmp_path, [(t, customer, day + timedelta(hours=2), "20"),
                                    (t, customer, day + timedelta(days=1, hours=2), "10")])
        wait_metered(services)
        result = cli("usage", "show", "--meter", voip_plan.meter_key, "--customer", customer,
                     "--from", day.isoformat(), "--to", (day + timedelta(days=2)).isoformat())
        assert result.exit_code == 0, result.output
        assert "30" in result.stdout.splitlines()[0]
        rows = [line for line in result.stdout.splitlines() if line.startswith("│ 20")]
        assert [row.split("│")[1].strip() for row in rows] == [
            day.date().isoformat(), (day + timedelta(days=1)).date().isoformat()
        ]
        assert rows[0].count("█") == 40
        assert rows[1].count("█") == 20

    def test_an_unknown_meter_is_a_readable_error(self, cli, make_customer):
        customer = make_customer()["external_id"]
        result = cli("usage", "show", "--meter", "no_such_meter_xyz", "--customer", customer)
        assert result.exit_code == 1
        assert result.stderr.startswith("error: meter: ")


class TestAlertsWatch:
    def test_an_alert_fired_by_imported_usage_is_printed_as_json(
        self, cli, services, make_customer, voip_plan, tmp_path
    ):
        customer = make_customer()
        with grpc.insecure_channel(services.address("meter")) as channel:
            threshold = meter_pb2_grpc.MeterServiceStub(channel).CreateThreshold(
                meter_pb2.CreateThresholdRequest(
                    threshold=meter_pb2.Threshold(
                        meter_key=voip_plan.meter_key,
                        customer_id=customer["id"],
                        absolute_units=common_pb2.Decimal(value="10"),
                    )
                ),
                timeout=10,
            ).threshold
        now = datetime.now(UTC) - timedelta(minutes=1)
        import_rows(cli, tmp_path, [(voip_plan.event_type, customer["external_id"], now, "25")])
        result = cli("--json", "alerts", "watch", "--customer-id", customer["id"], "--count", "1")
        assert result.exit_code == 0, result.output
        alert = json.loads(result.stdout.splitlines()[0])
        assert alert["threshold_id"] == threshold.id
        assert alert["customer_id"] == customer["id"]
        assert alert["threshold_units"] == {"value": "10"}
        assert alert["usage"] == {"value": "25"}


class TestStatus:
    def test_all_services_serve_and_lag_and_unmetered_counts_are_shown(self, cli, services):
        result = cli("--json", "status")
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["healthy"] is True
        assert {name: s["health"] for name, s in report["services"].items()} == {
            "catalog": "SERVING", "ingest": "SERVING", "meter": "SERVING", "invoice": "SERVING"
        }
        assert report["meter"]["events_behind"] >= 0
        assert report["meter"]["applier_stalled"] is False
        assert report["meter"]["quarantined_entries"] == 0
        assert report["ingest"]["unmetered_total"] >= 0
        assert set(report["quarantine"]) == {"catalog", "invoice"}
        assert all(item["quarantined_count"] >= 0 for item in report["quarantine"].values())
        human = cli("status")
        assert "meter lag:" in human.stdout
        assert "unmetered" in human.stdout
        assert "log entries quarantined" in human.stdout
        assert "catalog: " in human.stdout and "records quarantined" in human.stdout

    def test_a_stalled_applier_and_quarantined_records_are_shown_and_exit_1(self, cli, services, monkeypatch):
        from tally.cli import status as status_module

        real = status_module.gather_status

        async def with_trouble() -> dict:
            report = await real()
            report["meter"].update(applier_stalled=True, stall_reason="write failed: disk full", quarantined_entries=2)
            report["quarantine"]["invoice"] = {
                "quarantined_count": 1,
                "quarantined": [{"kind": "subscription", "id": "sub_poison", "reason": "OverflowError", "occurrences": 3}],
            }
            return report

        monkeypatch.setattr(status_module, "gather_status", with_trouble)
        human = cli("status")
        assert human.exit_code == 1
        assert "meter applier STALLED" in human.stdout and "disk full" in human.stdout
        assert "2 log entries quarantined" in human.stdout
        assert "invoice: 1 records quarantined" in human.stdout
        assert "subscription sub_poison: OverflowError" in human.stdout

    def test_an_unreachable_service_makes_status_exit_1(self, cli):
        env = {**cli.env, "TALLY_INVOICE_ADDR": f"127.0.0.1:{free_port()}"}
        result = type(cli)(env)("--json", "status")
        assert result.exit_code == 1
        report = json.loads(result.stdout)
        assert report["services"]["invoice"]["health"] == "UNREACHABLE"
        assert report["services"]["catalog"]["health"] == "SERVING"


class TestHealth:
    def test_a_serving_service_exits_0(self, cli, services):
        result = cli("health", "ingest", "--address", services.address("ingest"))
        assert result.exit_code == 0
        assert result.stdout.strip() == "ingest: SERVING"

    def test_nothing_listening_exits_1(self, cli):
        result = cli("health", "catalog", "--address", f"127.0.0.1:{free_port()}")
        assert result.exit_code == 1
        assert "UNREACHABLE" in result.stdout
