"""Client channels to Tally services, with request-id propagation and retry policy."""

from __future__ import annotations

import json

import grpc

from tally.config import service_address
from tally.interceptors import RequestIdClientInterceptor

MAX_MESSAGE_BYTES = 16 * 1024 * 1024

# Retries for idempotent RPCs: UNAVAILABLE only, with exponential backoff. Every Tally
# write RPC is idempotent by key, so the policy applies to all methods of the services.
RETRY_SERVICE_CONFIG = {
    "methodConfig": [
        {
            "name": [
                {"service": "tally.catalog.v1.CatalogService"},
                {"service": "tally.ingest.v1.IngestService"},
                {"service": "tally.meter.v1.MeterService"},
                {"service": "tally.invoice.v1.InvoiceService"},
            ],
            "retryPolicy": {
                "maxAttempts": 5,
                "initialBackoff": "0.1s",
                "maxBackoff": "2s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ]
}


def channel_options() -> list[tuple[str, object]]:
    return [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.enable_retries", 1),
        ("grpc.service_config", json.dumps(RETRY_SERVICE_CONFIG)),
        ("grpc.keepalive_time_ms", 30_000),
    ]


def connect(target: str) -> grpc.aio.Channel:
    """An insecure aio channel to ``target`` (host:port) that propagates request ids."""
    return grpc.aio.insecure_channel(
        target, options=channel_options(), interceptors=[RequestIdClientInterceptor()]
    )


def connect_service(service: str) -> grpc.aio.Channel:
    """A channel to one of the four services at its configured address."""
    return connect(service_address(service))
