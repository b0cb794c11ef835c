"""API keys, scopes, and the server interceptor that checks them on every RPC.

A key looks like ``tly_<key id>.<secret>``. The key id is public (it names the key in logs,
lists and rate limits); the secret is 256 random bits, shown once at creation and stored only
as its SHA-256 (a fast hash is enough for a high-entropy secret: there is nothing to guess).
Callers send ``authorization: Bearer <key>``.

Configuration:

- ``TALLY_AUTH_MODE``: ``required`` (default) or ``disabled`` (development only: every call is
  let through; ``make run`` and the tests set it explicitly).
- ``TALLY_AUTH_KEYS_FILE``: the key store file written by ``tally keys`` (hashes only). It is
  re-read when it changes, so a revocation takes effect without restarts.
- ``TALLY_AUTH_PROTECT_HEALTH``: ``true`` to require a valid key (any scope) for health and
  reflection too; by default they stay open for load balancers and grpcurl.
- ``TALLY_SERVICE_API_KEY``: the key this process sends on its own outgoing calls.
- ``TALLY_RATE_LIMIT_PER_SECOND`` / ``TALLY_RATE_LIMIT_BURST``: a token bucket per key id;
  0 (default) turns it off.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import hashlib
import hmac
import inspect
import json
import os
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import grpc
import structlog

from tally.errors import PermissionDenied, ResourceExhausted, Unauthenticated
from tally.ratelimit import KeyedRateLimiter

log = structlog.get_logger()

EVENTS_WRITE = "events:write"
CATALOG_WRITE = "catalog:write"
INVOICES_WRITE = "invoices:write"
READ = "read"
# The services' own feeds, which carry every customer's records at once: ingest's raw log
# (ReadLog, followed by the meter) and the catalog's change feed (WatchCatalog, followed by
# ingest's and the meter's catalog caches). Only service keys get it; ``read`` does not.
INTERNAL = "internal"
SCOPES = (EVENTS_WRITE, CATALOG_WRITE, INVOICES_WRITE, READ, INTERNAL)
INTERNAL_METHODS = frozenset(
    {
        "/tally.ingest.v1.IngestService/ReadLog",
        "/tally.catalog.v1.CatalogService/WatchCatalog",
    }
)

# A required scope meaning "any valid key": used for health/reflection when they are protected.
AUTHENTICATED = "authenticated"

KEY_PREFIX = "tly_"
AUTHORIZATION_HEADER = "authorization"

OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

# The scope that writes need on each service. Thresholds and backfills on the meter service
# configure metering, so they go with the catalog.
WRITE_SCOPE_BY_SERVICE = {
    "tally.catalog.v1.CatalogService": CATALOG_WRITE,
    "tally.ingest.v1.IngestService": EVENTS_WRITE,
    "tally.meter.v1.MeterService": CATALOG_WRITE,
    "tally.invoice.v1.InvoiceService": INVOICES_WRITE,
}
# RPC names that only read (INTERNAL_METHODS excepted).
READ_METHOD_PREFIXES = ("Get", "List", "Watch", "Read", "Upcoming", "Render", "UsageSeries")


@dataclass(frozen=True)
class Principal:
    """Who is calling: a verified key."""

    key_id: str
    name: str
    scopes: frozenset[str]


current_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "current_principal", default=None
)


# ---- keys -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiKeyRecord:
    """What the store keeps about a key: never the secret, only its hash."""

    key_id: str
    name: str
    scopes: tuple[str, ...]
    secret_sha256: str
    created_at: str
    revoked_at: str | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def principal(self) -> Principal:
        return Principal(key_id=self.key_id, name=self.name, scopes=frozenset(self.scopes))


@dataclass(frozen=True)
class IssuedKey:
    """A new key: ``plaintext`` is shown to the operator once and then forgotten."""

    record: ApiKeyRecord
    plaintext: str


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def issue_key(name: str, scopes: Iterable[str], now: dt.datetime | None = None) -> IssuedKey:
    """Generate a key id and a 256-bit secret; the record holds only the secret's hash."""
    scopes = tuple(sorted(set(scopes)))
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise ValueError(f"scopes must be a non-empty subset of {', '.join(SCOPES)}; got {list(scopes)}")
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    created = (now or dt.datetime.now(dt.timezone.utc)).isoformat()
    record = ApiKeyRecord(key_id, name, scopes, hash_secret(secret), created)
    return IssuedKey(record, f"{KEY_PREFIX}{key_id}.{secret}")


def parse_key(presented: str) -> tuple[str, str] | None:
    """Split ``tly_<id>.<secret>`` into (id, secret), or None when it isn't shaped like a key."""
    if not presented.startswith(KEY_PREFIX) or len(presented) > 256:
        return None
    key_id, dot, secret = presented[len(KEY_PREFIX):].partition(".")
    if not dot or not key_id or not secret or not key_id.isalnum():
        return None
    return key_id, secret


def verify_record(record: ApiKeyRecord | None, secret: str) -> Principal | None:
    """The principal when ``secret`` matches an unrevoked record; compared in constant time."""
    if record is None:
        # Hash anyway, so an unknown id costs what a wrong secret costs.
        hmac.compare_digest(hash_secret(secret), "0" * 64)
        return None
    matches = hmac.compare_digest(hash_secret(secret), record.secret_sha256)
    if not matches or record.revoked:
        return None
    return record.principal()


class KeyVerifier(Protocol):
    """Where keys are checked: a file store here, the catalog service's key table later."""

    async def verify(self, key_id: str, secret: str) -> Principal | None: ...


class KeyFile:
    """The key store as a JSON file of hashed records, written atomically by ``tally keys``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> dict[str, ApiKeyRecord]:
        if not self.path.exists():
            return {}
        data = json.loads(self.path.read_text())
        records = {}
        for item in data.get("keys", []):
            record = ApiKeyRecord(**{**item, "scopes": tuple(item["scopes"])})
            records[record.key_id] = record
        return records

    def save(self, records: Mapping[str, ApiKeyRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"keys": [{**asdict(r), "scopes": list(r.scopes)} for r in records.values()]}
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)

    def create(self, name: str, scopes: Iterable[str]) -> IssuedKey:
        issued = issue_key(name, scopes)
        records = self.load()
        records[issued.record.key_id] = issued.record
        self.save(records)
        return issued

    def revoke(self, key_id: str, now: dt.datetime | None = None) -> ApiKeyRecord | None:
        records = self.load()
        record = records.get(key_id)
        if record is None:
            return None
        if not record.revoked:
            at = (now or dt.datetime.now(dt.timezone.utc)).isoformat()
            record = records[key_id] = replace(record, revoked_at=at)
            self.save(records)
        return record


class FileKeyVerifier:
    """Verifies against a KeyFile, re-reading it whenever it changes on disk."""

    def __init__(self, path: str | Path) -> None:
        self._file = KeyFile(path)
        self._stamp: tuple[int, int] | None = None
        self._records: dict[str, ApiKeyRecord] = {}

    def _refresh(self) -> None:
        try:
            stat = self._file.path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp:
            self._records = self._file.load() if stamp else {}
            self._stamp = stamp

    async def verify(self, key_id: str, secret: str) -> Principal | None:
        self._refresh()
        return verify_record(self._records.get(key_id), secret)


class StaticKeyVerifier:
    """A fixed set of records, for tests and embedding."""

    def __init__(self, records: Iterable[ApiKeyRecord]) -> None:
        self._records = {r.key_id: r for r in records}

    async def verify(self, key_id: str, secret: str) -> Principal | None:
        return verify_record(self._records.get(key_id), secret)


# ---- which scope each RPC needs ----------------------------------------------------------


def scope_table(service_full_name: str, method_names: Iterable[str], write_scope: str) -> dict[str, str]:
    """``/pkg.Service/Method`` -> scope: the services' feeds need ``internal``, read-only names
    need ``read``, the rest ``write_scope``."""
    table = {}
    for name in method_names:
        method = f"/{service_full_name}/{name}"
        if method in INTERNAL_METHODS:
            table[method] = INTERNAL
        else:
            table[method] = READ if name.startswith(READ_METHOD_PREFIXES) else write_scope
    return table


def tally_scope_table() -> dict[str, str]:
    """The scope of every RPC of the four services, from their generated descriptors."""
    from tally_gen.catalog.v1 import catalog_pb2
    from tally_gen.ingest.v1 import ingest_pb2
    from tally_gen.invoice.v1 import invoice_pb2
    from tally_gen.meter.v1 import meter_pb2

    table: dict[str, str] = {}
    for module in (catalog_pb2, ingest_pb2, meter_pb2, invoice_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            write_scope = WRITE_SCOPE_BY_SERVICE.get(service.full_name)
            if write_scope is None:
                continue  # not in the table, so denied: a new service must be given a scope
            table.update(scope_table(service.full_name, [m.name for m in service.methods], write_scope))
    return table


# ---- configuration -----------------------------------------------------------------------


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class AuthConfig:
    """The TALLY_AUTH_* and TALLY_RATE_LIMIT_* settings."""

    mode: str = "required"
    keys_file: str | None = None
    protect_health: bool = False
    rate_per_second: float = 0.0
    burst: float = 0.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "AuthConfig":
        env = os.environ if env is None else env
        mode = (env.get("TALLY_AUTH_MODE") or "required").strip().lower()
        if mode not in ("required", "disabled"):
            raise ValueError(f"TALLY_AUTH_MODE must be 'required' or 'disabled', not {mode!r}")
        rate = float(env.get("TALLY_RATE_LIMIT_PER_SECOND") or 0)
        burst = float(env.get("TALLY_RATE_LIMIT_BURST") or 0) or max(1.0, rate)
        return cls(
            mode=mode,
            keys_file=env.get("TALLY_AUTH_KEYS_FILE") or None,
            protect_health=_truthy(env.get("TALLY_AUTH_PROTECT_HEALTH")),
            rate_per_second=rate,
            burst=burst,
        )

    @property
    def enabled(self) -> bool:
        return self.mode == "required"

    def limiter(self) -> KeyedRateLimiter | None:
        return KeyedRateLimiter(self.rate_per_second, self.burst) if self.rate_per_second > 0 else None


def auth_interceptor_from_env(
    verifier: KeyVerifier | None = None, env: Mapping[str, str] | None = None
) -> "AuthInterceptor | None":
    """The interceptor the settings ask for; None in development mode.

    Raises ValueError when keys are required but there is nowhere to check them, so a
    misconfigured production service refuses to start instead of serving openly.
    """
    config = AuthConfig.from_env(env)
    if not config.enabled:
        log.warning("auth_disabled", hint="TALLY_AUTH_MODE=disabled: every caller is trusted")
        return None
    if verifier is None:
        if not config.keys_file:
            raise ValueError("TALLY_AUTH_MODE=required needs TALLY_AUTH_KEYS_FILE (or TALLY_AUTH_MODE=disabled)")
        verifier = FileKeyVerifier(config.keys_file)
    env_map = os.environ if env is None else env
    if not env_map.get("TALLY_PAGE_TOKEN_SECRET"):
        raise ValueError(
            "TALLY_AUTH_MODE=required needs TALLY_PAGE_TOKEN_SECRET: page tokens signed with the built-in "
            "key could be forged by anyone"
        )
    return AuthInterceptor(
        verifier, tally_scope_table(), protect_health=config.protect_health, limiter=config.limiter()
    )


# ---- the interceptors --------------------------------------------------------------------


def bearer_key(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    for key, value in metadata or ():
        if key == AUTHORIZATION_HEADER:
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            scheme, _, token = text.strip().partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return None


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks the caller's key, its scope for the RPC, and its rate limit, before the handler.

    The check runs inside the handler that the shared ServerContextInterceptor wraps, so the
    Unauthenticated / PermissionDenied / ResourceExhausted errors it raises reach the client
    as UNAUTHENTICATED / PERMISSION_DENIED / RESOURCE_EXHAUSTED (with RetryInfo), and the
    request id is already bound for the log line.
    """

    def __init__(
        self,
        verifier: KeyVerifier,
        scopes: Mapping[str, str],
        *,
        protect_health: bool = False,
        limiter: KeyedRateLimiter | None = None,
    ) -> None:
        self._verifier = verifier
        self._scopes = dict(scopes)
        self._protect_health = protect_health
        self._limiter = limiter

    def required_scope(self, method: str) -> str | None:
        """The scope ``method`` needs; None when it is open to anyone."""
        if method.startswith(OPEN_PREFIXES):
            return AUTHENTICATED if self._protect_health else None
        # Fail closed: an RPC missing from the table needs a scope no key can have.
        return self._scopes.get(method, f"unmapped:{method}")

    async def authorize(self, method: str, metadata) -> Principal:
        required = self.required_scope(method)
        presented = bearer_key(metadata)
        if presented is None:
            raise Unauthenticated(
                "missing API key: send 'authorization: Bearer <key>'", reason="API_KEY_MISSING"
            )
        parsed = parse_key(presented)
        if parsed is None:
            raise Unauthenticated("malformed API key", reason="API_KEY_MALFORMED")
        key_id, secret = parsed
        principal = await self._verifier.verify(key_id, secret)
        if principal is None:
            log.info("api_key_rejected", key_id=key_id)
            raise Unauthenticated("unknown or revoked API key", reason="API_KEY_INVALID", metadata={"key_id": key_id})
        if required != AUTHENTICATED and required not in principal.scopes:
            log.info("api_key_scope_missing", key_id=key_id, required_scope=required)
            raise PermissionDenied(
                f"API key {key_id} lacks scope {required!r}",
                reason="SCOPE_MISSING",
                metadata={"key_id": key_id, "required_scope": required},
            )
        if self._limiter is not None:
            wait = self._limiter.try_acquire(key_id)
            if wait > 0:
                raise ResourceExhausted(
                    f"rate limit exceeded for API key {key_id}",
                    reason="RATE_LIMITED",
                    metadata={"key_id": key_id},
                    retry_after_seconds=max(wait, 0.001),
                )
        return principal

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or self.required_scope(method) is None:
            return handler
        metadata = tuple(handler_call_details.invocation_metadata or ())

        async def check() -> None:
            current_principal.set(await self.authorize(method, metadata))

        return _guarded(handler, check)


def _guarded(handler: grpc.RpcMethodHandler, check: Callable[[], Awaitable[None]]) -> grpc.RpcMethodHandler:
    """The same handler, with ``check`` awaited before any request is read or reply sent."""
    if handler.unary_unary:
        inner = handler.unary_unary

        async def unary_unary(request, context):
            await check()
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary_unary, handler.request_deserializer, handler.response_serializer
        )
    if handler.unary_stream:
        inner_us = handler.unary_stream

        if not inspect.isasyncgenfunction(inner_us):
            # context.write() handlers, such as grpc.health.v1 Health/Watch.
            async def unary_stream_writer(request, context):
                await check()
                return await inner_us(request, context)

            return grpc.unary_stream_rpc_method_handler(
                unary_stream_writer, handler.request_deserializer, handler.response_serializer
            )

        async def unary_stream(request, context):
            await check()
            async for item in inner_us(request, context):
                yield item

        return grpc.unary_stream_rpc_method_handler(
            unary_stream, handler.request_deserializer, handler.response_serializer
        )
    if handler.stream_unary:
        inner_su = handler.stream_unary

        async def stream_unary(request_iterator, context):
            await check()
            return await inner_su(request_iterator, context)

        return grpc.stream_unary_rpc_method_handler(
            stream_unary, handler.request_deserializer, handler.response_serializer
        )
    inner_ss = handler.stream_stream

    if not inspect.isasyncgenfunction(inner_ss):

        async def stream_stream_writer(request_iterator, context):
            await check()
            return await inner_ss(request_iterator, context)

        return grpc.stream_stream_rpc_method_handler(
            stream_stream_writer, handler.request_deserializer, handler.response_serializer
        )

    async def stream_stream(request_iterator, context):
        await check()
        async for item in inner_ss(request_iterator, context):
            yield item

    return grpc.stream_stream_rpc_method_handler(
        stream_stream, handler.request_deserializer, handler.response_serializer
    )


def _with_authorization(client_call_details, api_key: str):
    metadata = list(client_call_details.metadata or [])
    if any(k == AUTHORIZATION_HEADER for k, _ in metadata):
        return client_call_details
    metadata.append((AUTHORIZATION_HEADER, f"Bearer {api_key}"))
    return grpc.aio.ClientCallDetails(
        client_call_details.method,
        client_call_details.timeout,
        metadata,
        client_call_details.credentials,
        client_call_details.wait_for_ready,
    )


class ApiKeyClientInterceptor(
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
    grpc.aio.StreamUnaryClientInterceptor,
    grpc.aio.StreamStreamClientInterceptor,
):
    """Sends ``authorization: Bearer <key>`` on every call that doesn't carry its own."""

    def __init__(self, api_key: str) -> None:
        self._api_key = api_key

    async def intercept_unary_unary(self, continuation, client_call_details, request) -> Any:
        return await continuation(_with_authorization(client_call_details, self._api_key), request)

    async def intercept_unary_stream(self, continuation, client_call_details, request) -> Any:
        return await continuation(_with_authorization(client_call_details, self._api_key), request)

    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator) -> Any:
        return await continuation(_with_authorization(client_call_details, self._api_key), request_iterator)

    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator) -> Any:
        return await continuation(_with_authorization(client_call_details, self._api_key), request_iterator)


def service_api_key(env: Mapping[str, str] | None = None) -> str | None:
    """The key this process presents on outgoing calls: TALLY_SERVICE_API_KEY."""
    env = os.environ if env is None else env
    return env.get("TALLY_SERVICE_API_KEY") or None


__all__ = [
    "ApiKeyClientInterceptor",
    "ApiKeyRecord",
    "AuthConfig",
    "AuthInterceptor",
    "FileKeyVerifier",
    "IssuedKey",
    "KeyFile",
    "KeyVerifier",
    "Principal",
    "StaticKeyVerifier",
    "auth_interceptor_from_env",
    "current_principal",
    "issue_key",
    "parse_key",
    "service_api_key",
    "tally_scope_table",
]
