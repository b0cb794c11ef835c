"""Client channels to Tally services, with request-id propagation and retry policy."""

from __future__ import annotations

import json

import grpc

from tally.auth import ApiKeyClientInterceptor, service_api_key
from tally.config import service_address
from tally.interceptors import RequestIdClientInterceptor
from tally.tls import TlsConfig

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
                "initialBackoff": "0.2s",
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
        # Reconnect soon after a peer restarts (default 1 s, growing to 120 s), so retries
        # and restarted services find each other again within the retry budget.
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 5_000),
    ]


def connect(target: str, *, tls: TlsConfig | None = None, api_key: str | None = None) -> grpc.aio.Channel:
    """An aio channel to ``target`` (host:port) that propagates request ids.

    It uses TLS when TALLY_TLS_CA is set (mTLS with TALLY_TLS_CLIENT_CERT/KEY, defaulting to
    TALLY_TLS_CERT/KEY) and sends TALLY_SERVICE_API_KEY as its bearer key; ``tls`` and
    ``api_key`` override the environment.
    """
    tls = TlsConfig.from_env() if tls is None else tls
    api_key = service_api_key() if api_key is None else api_key
    interceptors: list = [RequestIdClientInterceptor()]
    if api_key:
        interceptors.append(ApiKeyClientInterceptor(api_key))
    options = [*channel_options(), *tls.channel_options()]
    credentials = tls.channel_credentials()
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)


def connect_service(service: str) -> grpc.aio.Channel:
    """A channel to one of the four services at its configured address."""
    return connect(service_address(service))
