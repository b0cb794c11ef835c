"""Prometheus metrics shared by the services (prometheus-client). One registry per process."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RPC_LATENCY = Histogram(
    "tally_rpc_duration_seconds",
    "gRPC server handling time by method and status code.",
    ["service", "method", "code"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
EVENTS_ACCEPTED = Counter("tally_events_accepted_total", "Events stored by ingest.", ["source"])
EVENTS_DUPLICATE = Counter("tally_events_duplicate_total", "Events acknowledged as duplicates.", ["source"])
EVENTS_REJECTED = Counter("tally_events_rejected_total", "Events rejected, by reason.", ["reason"])
EVENTS_UNMETERED = Counter("tally_events_unmetered_total", "Stored events whose type no meter reads.")
METER_LAG_ENTRIES = Gauge("tally_meter_lag_entries", "Log entries committed but not yet applied by the meter.")
METER_LAG_SECONDS = Gauge("tally_meter_lag_seconds", "Seconds between the newest log entry and the applied one.")
METER_APPLIED_POSITION = Gauge("tally_meter_applied_position", "Last ingest log position applied by the meter.")
ALERTS_FIRED = Counter("tally_alerts_fired_total", "Threshold alerts recorded.", ["meter_key"])
INVOICES_CLOSED = Counter("tally_invoices_closed_total", "Invoices created by period close.", ["status"])
INVOICES_FINALIZED = Counter("tally_invoices_finalized_total", "Invoices finalized.")
DB_POOL_IN_USE = Gauge("tally_db_pool_connections_in_use", "Database connections checked out.", ["service", "pool"])
DB_POOL_SIZE = Gauge("tally_db_pool_connections", "Database connections open.", ["service", "pool"])


def start_metrics_server(port: int, host: str = "127.0.0.1") -> None:
    """Serve /metrics on host:port (port 0 disables)."""
    if port:
        start_http_server(port, addr=host)
