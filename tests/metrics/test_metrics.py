"""Prometheus metrics: the /metrics endpoint of a real service process, RPC latency, pool gauges."""

from __future__ import annotations

import asyncio
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from tally.client import AsyncEventSender
from tally.db import create_engine, create_pool
from tally.metrics import DEFAULT_METRICS_PORTS, metrics_port, register_pool, start_metrics_server
from tally_gen.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from tests.harness import ServiceProcesses, free_port, unique


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page, keyed by (name, sorted labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def rpc_count(samples, service: str, method: str) -> float:
    return sum(
        value
        for (name, labels), value in samples.items()
        if name == "tally_rpc_duration_seconds_count"
        and dict(labels).get("service") == service
        and dict(labels).get("method") == method
    )


class TestMetricsEndpoint:
    async def test_a_running_service_serves_an_rpc_latency_histogram_for_a_method_just_called(
        self, database_url, tmp_path
    ):
        port = free_port()
        cluster = ServiceProcesses(
            database_url=database_url,
            log_dir=tmp_path,
            extra_env={"TALLY_CATALOG_METRICS_PORT": str(port)},
        )
        await cluster.start_all(services=("catalog",))
        try:
            async with grpc.aio.insecure_channel(cluster.address("catalog")) as channel:
                catalog = catalog_pb2_grpc.CatalogServiceStub(channel)
                health = health_pb2_grpc.HealthStub(channel)
                await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
                with pytest.raises(grpc.aio.AioRpcError) as missing:
                    await catalog.GetMeter(catalog_pb2.GetMeterRequest(key=unique("no_such_meter")), timeout=5)
            samples = await asyncio.to_thread(scrape, port)
        finally:
            cluster.stop_all()
        get_meter = "/tally.catalog.v1.CatalogService/GetMeter"
        assert rpc_count(samples, "catalog", get_meter) == 1
        assert rpc_count(samples, "catalog", "/grpc.health.v1.Health/Check") >= 1
        codes = {
            dict(labels)["code"]
            for (name, labels), _ in samples.items()
            if name == "tally_rpc_duration_seconds_count" and dict(labels).get("method") == get_meter
        }
        assert codes == {missing.value.code().name}
        buckets = [
            value
            for (name, labels), value in samples.items()
            if name == "tally_rpc_duration_seconds_bucket" and dict(labels).get("method") == get_meter
        ]
        assert len(buckets) == 15  # 14 bounds and +Inf
        assert max(buckets) == 1

    async def test_ingest_counts_streamed_events_and_reports_its_pool(self, database_url, tmp_path):
        port = free_port()
        cluster = ServiceProcesses(
            database_url=database_url,
            log_dir=tmp_path,
            extra_env={"TALLY_INGEST_METRICS_PORT": str(port), "TALLY_CATALOG_METRICS_PORT": "0"},
        )
        await cluster.start_all(services=("catalog", "ingest"))
        try:
            before = await asyncio.to_thread(scrape, port)
            external_id = unique("acct")
            async with grpc.aio.insecure_channel(cluster.address("catalog")) as channel:
                await catalog_pb2_grpc.CatalogServiceStub(channel).CreateCustomer(
                    catalog_pb2.CreateCustomerRequest(customer=catalog_pb2.Customer(external_id=external_id)), timeout=10
                )
            async with AsyncEventSender(cluster.address("ingest"), batch_size=10) as sender:
                for _ in range(25):
                    await sender.send("api_request", customer=external_id)
                await sender.send("api_request", customer=unique("nobody"))
            after = await asyncio.to_thread(scrape, port)
        finally:
            cluster.stop_all()
        accepted = ("tally_events_accepted_total", (("source", "stream"),))
        assert after[accepted] - before.get(accepted, 0) == 25
        rejected = [v for (name, labels), v in after.items() if name == "tally_events_rejected_total"
                    and dict(labels).get("reason") == "UNKNOWN_CUSTOMER"]
        assert rejected == [1]
        assert rpc_count(after, "ingest", "/tally.ingest.v1.IngestService/StreamEvents") == 1
        assert after[("tally_db_pool_connections", (("pool", "hot_path"), ("service", "ingest")))] >= 1

    def test_a_taken_metrics_port_is_reported_and_does_not_stop_the_service(self):
        port = free_port()
        assert start_metrics_server(port) == port
        assert start_metrics_server(port) is None

    def test_port_zero_disables_the_endpoint(self):
        assert start_metrics_server(0) is None


class TestMetricsPorts:
    def test_defaults_are_9151_to_9154_in_service_order(self, monkeypatch):
        for service in DEFAULT_METRICS_PORTS:
            monkeypatch.delenv(f"TALLY_{service.upper()}_METRICS_PORT", raising=False)
        assert {s: metrics_port(s) for s in DEFAULT_METRICS_PORTS} == {
            "catalog": 9151,
            "ingest": 9152,
            "meter": 9153,
            "invoice": 9154,
        }

    def test_the_environment_overrides_a_port(self, monkeypatch):
        monkeypatch.setenv("TALLY_METER_METRICS_PORT", "0")
        assert metrics_port("meter") == 0


def gauge(name: str, service: str, pool: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"service": service, "pool": pool})


class TestRegisterPool:
    async def test_engine_pool_gauges_follow_checked_out_connections(self, database_url):
        engine = create_engine(database_url, application_name="tally-metrics-test", pool_size=3)
        pool_name = unique("orm")
        register_pool("catalog", pool_name, engine)
        try:
            async with engine.connect():
                assert gauge("tally_db_pool_connections_in_use", "catalog", pool_name) == 1
                assert gauge("tally_db_pool_connections", "catalog", pool_name) == 1
            assert gauge("tally_db_pool_connections_in_use", "catalog", pool_name) == 0
            assert gauge("tally_db_pool_connections", "catalog", pool_name) == 1
            assert gauge("tally_db_pool_connections_max", "catalog", pool_name) == 6
        finally:
            await engine.dispose()

    async def test_asyncpg_pool_gauges_follow_acquired_connections(self, database_url):
        pool = await create_pool(database_url, application_name="tally-metrics-test", min_size=2, max_size=4)
        pool_name = unique("hot")
        register_pool("ingest", pool_name, pool)
        try:
            async with pool.acquire():
                assert gauge("tally_db_pool_connections_in_use", "ingest", pool_name) == 1
                assert gauge("tally_db_pool_connections", "ingest", pool_name) == 2
            assert gauge("tally_db_pool_connections_in_use", "ingest", pool_name) == 0
            assert gauge("tally_db_pool_connections_max", "ingest", pool_name) == 4
        finally:
            await pool.close()

    def test_an_object_without_a_pool_is_refused(self):
        with pytest.raises(TypeError):
            register_pool("meter", unique("bad"), object())
