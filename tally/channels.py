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


class _UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, inner) -> None:
        self._inner = inner

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        return await self._inner.intercept_unary_unary(continuation, client_call_details, request)


class _UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, inner) -> None:
        self._inner = inner

    async def intercept_unary_stream(self, continuation, client_call_details, request):
        return await self._inner.intercept_unary_stream(continuation, client_call_details, request)


class _StreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, inner) -> None:
        self._inner = inner

    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return await self._inner.intercept_stream_unary(continuation, client_call_details, request_iterator)


class _StreamStream(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, inner) -> None:
        self._inner = inner

    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return await self._inner.intercept_stream_stream(continuation, client_call_details, request_iterator)


def client_interceptors(api_key: str | None = None) -> list:
    """Request-id propagation and the bearer key, for all four kinds of call.

    grpc.aio files an interceptor object under the first call kind it implements only, so an
    object implementing all four would touch unary-unary calls alone (streams would go out
    without request id or key). Each kind gets its own adapter instead.
    """
    wanted = [RequestIdClientInterceptor()]
    if api_key:
        wanted.append(ApiKeyClientInterceptor(api_key))
    return [kind(inner) for kind in (_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream) for inner in wanted]


def connect(
    target: str,
    *,
    tls: TlsConfig | None = None,
    api_key: str | None = None,
    options: list[tuple[str, object]] | None = None,
) -> grpc.aio.Channel:
    """An aio channel to ``target`` (host:port) that propagates request ids.

    It uses TLS when TALLY_TLS_CA is set (mTLS with TALLY_TLS_CLIENT_CERT/KEY, defaulting to
    TALLY_TLS_CERT/KEY) and sends TALLY_SERVICE_API_KEY as its bearer key; ``tls`` and
    ``api_key`` override the environment, ``options`` replaces channel_options().
    """
    tls = TlsConfig.from_env() if tls is None else tls
    api_key = service_api_key() if api_key is None else api_key
    interceptors = client_interceptors(api_key)
    options = [*(channel_options() if options is None else options), *tls.channel_options()]
    credentials = tls.channel_credentials()
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)


def connect_service(service: str) -> grpc.aio.Channel:
    """A channel to one of the four services at its configured address."""
    return connect(service_address(service))
