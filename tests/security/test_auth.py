"""API keys: format, hashed storage, revocation, scopes per RPC, the interceptor, and keys on
outgoing calls."""

from __future__ import annotations

import asyncio
import os
import stat

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from tally.auth import (
    CATALOG_WRITE,
    EVENTS_WRITE,
    INVOICES_WRITE,
    INTERNAL,
    INTERNAL_METHODS,
    READ,
    AuthConfig,
    AuthInterceptor,
    FileKeyVerifier,
    KeyFile,
    StaticKeyVerifier,
    auth_interceptor_from_env,
    current_principal,
    hash_secret,
    issue_key,
    parse_key,
    tally_scope_table,
)
from tally.channels import connect
from tally.grpc_errors import error_info
from tally.ratelimit import KeyedRateLimiter
from tally.server import ServiceApp, start_server
from tally_gen.catalog.v1 import catalog_pb2
from tally_gen.ingest.v1 import ingest_pb2
from tally_gen.invoice.v1 import invoice_pb2
from tally_gen.meter.v1 import meter_pb2
from tests.harness import in_process
from tests.reliability.probe import Probe, method, probe_app

PROBE_SCOPES = {method("Echo"): READ, method("Flaky"): EVENTS_WRITE, method("Chat"): EVENTS_WRITE}


def bearer(key: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {key}"),)


async def rejection(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


class TestIssueKey:
    def test_a_key_carries_its_public_id_and_a_secret_that_the_record_only_hashes(self):
        issued = issue_key("ci", [EVENTS_WRITE])
        key_id, secret = parse_key(issued.plaintext)
        assert issued.plaintext.startswith("tly_")
        assert key_id == issued.record.key_id
        assert len(secret) >= 43  # 256 bits, url-safe base64
        assert issued.record.secret_sha256 == hash_secret(secret)
        assert secret not in repr(issued.record)

    def test_two_keys_never_share_an_id_or_a_secret(self):
        first, second = issue_key("a", [READ]), issue_key("a", [READ])
        assert first.record.key_id != second.record.key_id
        assert parse_key(first.plaintext)[1] != parse_key(second.plaintext)[1]

    @pytest.mark.parametrize("scopes", [[], ["admin"], [READ, "events:delete"]])
    def test_scopes_must_be_known_and_not_empty(self, scopes):
        with pytest.raises(ValueError, match="scopes"):
            issue_key("bad", scopes)

    @pytest.mark.parametrize(
        "presented",
        ["", "tly_", "tly_abc", "tly_.secret", "tly_abc.", "sk_abc.secret", "tly_ab-c.secret", "tly_a." + "x" * 300],
    )
    def test_strings_not_shaped_like_a_key_do_not_parse(self, presented):
        assert parse_key(presented) is None


class TestKeyFile:
    async def test_the_store_keeps_hashes_only_and_is_readable_by_its_owner_only(self, tmp_path):
        store = KeyFile(tmp_path / "keys.json")
        issued = store.create("ingest-writer", [EVENTS_WRITE])
        text = store.path.read_text()
        assert parse_key(issued.plaintext)[1] not in text
        assert issued.record.secret_sha256 in text
        assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
        assert store.load()[issued.record.key_id].scopes == (EVENTS_WRITE,)

    async def test_a_verifier_accepts_the_right_secret_and_rejects_a_wrong_one(self, tmp_path):
        store = KeyFile(tmp_path / "keys.json")
        issued = store.create("reader", [READ])
        verifier = FileKeyVerifier(store.path)
        key_id, secret = parse_key(issued.plaintext)
        principal = await verifier.verify(key_id, secret)
        assert (principal.key_id, principal.name, principal.scopes) == (key_id, "reader", frozenset({READ}))
        assert await verifier.verify(key_id, secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
        assert await verifier.verify("0000000000000000", secret) is None

    async def test_a_revoked_key_stops_working_without_a_restart(self, tmp_path):
        store = KeyFile(tmp_path / "keys.json")
        keep, drop = store.create("keep", [READ]), store.create("drop", [READ])
        verifier = FileKeyVerifier(store.path)
        assert await verifier.verify(*parse_key(drop.plaintext)) is not None
        revoked = store.revoke(drop.record.key_id)
        assert revoked.revoked_at is not None
        assert await verifier.verify(*parse_key(drop.plaintext)) is None
        assert await verifier.verify(*parse_key(keep.plaintext)) is not None

    def test_revoking_an_unknown_key_reports_it(self, tmp_path):
        assert KeyFile(tmp_path / "keys.json").revoke("feedfacecafebeef") is None


class TestScopeTable:
    def test_writes_need_their_services_scope_and_reads_need_read(self):
        table = tally_scope_table()
        assert table["/tally.ingest.v1.IngestService/SendEventBatch"] == EVENTS_WRITE
        assert table["/tally.ingest.v1.IngestService/StreamEvents"] == EVENTS_WRITE
        assert table["/tally.ingest.v1.IngestService/VoidEvent"] == EVENTS_WRITE
        assert table["/tally.catalog.v1.CatalogService/CreateSubscription"] == CATALOG_WRITE
        assert table["/tally.catalog.v1.CatalogService/ApplyCatalog"] == CATALOG_WRITE
        assert table["/tally.meter.v1.MeterService/GetUsage"] == READ
        assert table["/tally.meter.v1.MeterService/CreateThreshold"] == CATALOG_WRITE
        assert table["/tally.invoice.v1.InvoiceService/CloseDuePeriods"] == INVOICES_WRITE
        assert table["/tally.invoice.v1.InvoiceService/FinalizeInvoice"] == INVOICES_WRITE
        assert table["/tally.invoice.v1.InvoiceService/ListInvoices"] == READ

    def test_the_services_feeds_need_the_internal_scope_that_read_keys_lack(self):
        table = tally_scope_table()
        assert table["/tally.ingest.v1.IngestService/ReadLog"] == INTERNAL
        assert table["/tally.catalog.v1.CatalogService/WatchCatalog"] == INTERNAL
        assert {m for m, scope in table.items() if scope == INTERNAL} == set(INTERNAL_METHODS)

    def test_every_rpc_of_the_four_services_has_a_scope(self):
        table = tally_scope_table()
        for module in (catalog_pb2, ingest_pb2, meter_pb2, invoice_pb2):
            for service in module.DESCRIPTOR.services_by_name.values():
                for rpc in service.methods:
                    assert f"/{service.full_name}/{rpc.name}" in table

    def test_an_rpc_missing_from_the_table_needs_a_scope_no_key_has(self):
        interceptor = AuthInterceptor(StaticKeyVerifier([]), {})
        assert interceptor.required_scope("/tally.ingest.v1.IngestService/Brand_New") not in (
            EVENTS_WRITE, CATALOG_WRITE, INVOICES_WRITE, READ,
        )
        assert interceptor.required_scope("/grpc.health.v1.Health/Check") is None


class TestAuthConfig:
    def test_keys_are_required_unless_development_mode_is_chosen_explicitly(self):
        assert AuthConfig.from_env({}).enabled
        assert not AuthConfig.from_env({"TALLY_AUTH_MODE": "disabled"}).enabled
        with pytest.raises(ValueError, match="TALLY_AUTH_MODE"):
            AuthConfig.from_env({"TALLY_AUTH_MODE": "off"})

    def test_required_mode_without_a_key_store_refuses_to_start(self):
        with pytest.raises(ValueError, match="TALLY_AUTH_KEYS_FILE"):
            auth_interceptor_from_env(env={"TALLY_AUTH_MODE": "required"})

    def test_required_mode_without_a_page_token_secret_refuses_to_start(self, tmp_path):
        with pytest.raises(ValueError, match="TALLY_PAGE_TOKEN_SECRET"):
            auth_interceptor_from_env(
                StaticKeyVerifier([]), env={"TALLY_AUTH_MODE": "required", "TALLY_AUTH_KEYS_FILE": str(tmp_path / "k")}
            )

    def test_development_mode_installs_no_check(self):
        assert auth_interceptor_from_env(env={"TALLY_AUTH_MODE": "disabled"}) is None


@pytest.fixture
def keys():
    issued = {
        "reader": issue_key("reader", [READ]),
        "writer": issue_key("writer", [EVENTS_WRITE, READ]),
        "revoked": issue_key("revoked", [EVENTS_WRITE, READ]),
    }
    from dataclasses import replace

    records = [issued["reader"].record, issued["writer"].record, replace(issued["revoked"].record, revoked_at="2026-01-01")]
    return {name: key.plaintext for name, key in issued.items()} | {"verifier": StaticKeyVerifier(records)}


class TestAuthInterceptor:
    async def test_a_call_without_a_key_is_unauthenticated_and_never_reaches_the_handler(self, keys):
        probe = Probe()
        interceptor = AuthInterceptor(keys["verifier"], PROBE_SCOPES)
        async with in_process(probe_app(probe, interceptors=[interceptor])) as (_r, channel):
            error = await rejection(channel.unary_unary(method("Echo"))(b"x", timeout=5))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error_info(error).reason == "API_KEY_MISSING"
        assert probe.calls["Echo"] == 0

    @pytest.mark.parametrize(
        "presented, reason",
        [
            ("Bearer not-a-key", "API_KEY_MALFORMED"),
            ("Basic dXNlcjpwYXNz", "API_KEY_MALFORMED"),
            ("Bearer tly_0123456789abcdef.wrongsecretwrongsecretwrongsecretwrongsecret", "API_KEY_INVALID"),
        ],
    )
    async def test_a_malformed_or_unknown_key_is_unauthenticated(self, keys, presented, reason):
        probe = Probe()
        interceptor = AuthInterceptor(keys["verifier"], PROBE_SCOPES)
        async with in_process(probe_app(probe, interceptors=[interceptor])) as (_r, channel):
            call = channel.unary_unary(method("Echo"))(b"x", timeout=5, metadata=(("authorization", presented),))
            error = await rejection(call)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error_info(error).reason == reason
        assert probe.calls["Echo"] == 0

    async def test_a_wrong_secret_for_a_real_key_id_is_unauthenticated(self, keys):
        probe = Probe()
        key_id, secret = parse_key(keys["writer"])
        forged = f"tly_{key_id}.{secret[::-1]}"
        interceptor = AuthInterceptor(keys["verifier"], PROBE_SCOPES)
        async with in_process(probe_app(probe, interceptors=[interceptor])) as (_r, channel):
            error = await rejection(channel.unary_unary(method("Echo"))(b"x", timeout=5, metadata=bearer(forged)))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error_info(error).metadata["key_id"] == key_id

    async def test_a_revoked_key_is_unauthenticated(self, keys):
        probe = Probe()
        interceptor = AuthInterceptor(keys["verifier"], PROBE_SCOPES)
        async with in_process(probe_app(probe, interceptors=[interceptor])) as (_r, channel):
            call = channel.unary_unary(method("Echo"))(b"x", timeout=5, metadata=bearer(keys["revoked"]))
            error = await rejection(call)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error_info(error).reason == "API_KEY_INVALID"

    async def test_a_key_without_the_rpcs_scope_is_permission_denied(self, keys):
        probe = Probe()
        interceptor = AuthInterceptor(keys["verifier"], PROBE_SCOPES)
        async with in_process(probe_app(probe, interceptors=[interceptor])) as (_r, channel):
            call = channel.unary_unary(method("Flaky"))(b"", timeout=5, metadata=bearer(keys["reader"]))
            error = await rejection(call)
            assert await channel.unary_unary(method("Echo"))(b"r", timeout=5, metadata=bearer(keys["reader"])) == b"r"
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        info = error_info(error)
        assert (info.reason, info.metadata["required_scope"]) == ("SCOPE_MISSING", EVENTS_WRITE)
        assert probe.calls["Flaky"] == 0

    async def test_a_key_with_the_scope_is_served_and_the_handler_sees_who_called(self, keys):
        seen = []

        class WhoProbe(Probe):
            async def flaky(self, request, context):
                seen.append(current_principal.get())
                return await super().flaky(request, context)

        probe = WhoProbe()
        interceptor = AuthInterceptor(keys["verifier"], PROBE_SCOPES)
        async with in_process(probe_app(probe, interceptors=[interceptor])) as (_r, channel):
            reply = await channel.unary_unary(method("Flaky"))(b"", timeout=5, metadata=bearer(keys["writer"]))
        assert reply == b"ok after 1"
        assert [p.name for p in seen] == ["writer"]

    async def test_an_rpc_missing_from_the_scope_table_is_denied_even_to_a_key_with_every_scope(self):
        probe = Probe()
        everything = issue_key("root", [EVENTS_WRITE, CATALOG_WRITE, INVOICES_WRITE, READ])
        interceptor = AuthInterceptor(StaticKeyVerifier([everything.record]), PROBE_SCOPES)
        async with in_process(probe_app(probe, interceptors=[interceptor])) as (_r, channel):
            call = channel.unary_unary(method("Size"))(b"abc", timeout=5, metadata=bearer(everything.plaintext))
            error = await rejection(call)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert probe.calls["Size"] == 0

    async def test_streams_are_checked_before_the_first_message_is_read(self, keys):
        probe = Probe()
        interceptor = AuthInterceptor(keys["verifier"], PROBE_SCOPES)
        async with in_process(probe_app(probe, interceptors=[interceptor])) as (_r, channel):
            anonymous = channel.stream_stream(method("Chat"))(timeout=5)
            try:
                await anonymous.write(b"sneaky")
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                pass  # the server may refuse the stream before the first write
            assert await anonymous.code() == grpc.StatusCode.UNAUTHENTICATED
            allowed = channel.stream_stream(method("Chat"))(timeout=5, metadata=bearer(keys["writer"]))
            await allowed.write(b"hello")
            assert await allowed.read() == b"ack:hello"
            await allowed.done_writing()
            assert await allowed.code() == grpc.StatusCode.OK
        assert probe.chat_received == [b"hello"]

    async def test_health_stays_open_by_default(self, keys):
        interceptor = AuthInterceptor(keys["verifier"], PROBE_SCOPES)
        async with in_process(probe_app(Probe(), interceptors=[interceptor])) as (_r, channel):
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING

    async def test_protected_health_needs_a_valid_key_of_any_scope(self, keys):
        interceptor = AuthInterceptor(keys["verifier"], PROBE_SCOPES, protect_health=True)
        async with in_process(probe_app(Probe(), interceptors=[interceptor])) as (_r, channel):
            stub = health_pb2_grpc.HealthStub(channel)
            error = await rejection(stub.Check(health_pb2.HealthCheckRequest(), timeout=5))
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5, metadata=bearer(keys["reader"]))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


class TestRateLimit:
    async def test_a_key_over_its_rate_gets_resource_exhausted_with_a_retry_delay(self, keys):
        probe = Probe()
        limiter = KeyedRateLimiter(rate=0.5, burst=2)
        interceptor = AuthInterceptor(keys["verifier"], PROBE_SCOPES, limiter=limiter)
        async with in_process(probe_app(probe, interceptors=[interceptor])) as (_r, channel):
            echo = channel.unary_unary(method("Echo"))
            for _ in range(2):
                assert await echo(b"ok", timeout=5, metadata=bearer(keys["reader"])) == b"ok"
            error = await rejection(echo(b"ok", timeout=5, metadata=bearer(keys["reader"])))
            # Another key has its own bucket.
            assert await echo(b"other", timeout=5, metadata=bearer(keys["writer"])) == b"other"
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_info(error).reason == "RATE_LIMITED"
        retry = error_details_pb2.RetryInfo()
        details = [d for d in rpc_status.from_call(error).details if d.Is(retry.DESCRIPTOR)]
        assert len(details) == 1 and details[0].Unpack(retry)
        assert 0 < retry.retry_delay.ToMilliseconds() <= 2000
        assert probe.calls["Echo"] == 3


class TestAuthFromEnvironment:
    async def test_a_service_started_with_required_auth_checks_real_rpc_scopes_and_clients_send_their_key(
        self, tmp_path, monkeypatch
    ):
        store = KeyFile(tmp_path / "keys.json")
        sender = store.create("event-sender", [EVENTS_WRITE])
        reader = store.create("dashboard", [READ])
        monkeypatch.setenv("TALLY_AUTH_MODE", "required")
        monkeypatch.setenv("TALLY_AUTH_KEYS_FILE", str(store.path))
        monkeypatch.setenv("TALLY_PAGE_TOKEN_SECRET", "a-test-secret-of-some-length")
        ingest = "tally.ingest.v1.IngestService"
        probe = Probe()
        handlers = {"SendEvent": probe.handlers()["Echo"], "GetEvent": probe.handlers()["Echo"]}
        app = ServiceApp(
            name="probe",
            service_names=[ingest],
            register=lambda server: server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(ingest, handlers),)
            ),
        )
        running = await start_server(app, "127.0.0.1", 0)
        target = f"127.0.0.1:{running.port}"
        try:
            monkeypatch.setenv("TALLY_SERVICE_API_KEY", sender.plaintext)
            async with connect(target) as as_sender:
                assert await as_sender.unary_unary(method("SendEvent", ingest))(b"e1", timeout=5) == b"e1"
                denied = await rejection(as_sender.unary_unary(method("GetEvent", ingest))(b"q", timeout=5))
            async with connect(target, api_key=reader.plaintext) as as_reader:
                assert await as_reader.unary_unary(method("GetEvent", ingest))(b"q", timeout=5) == b"q"
            monkeypatch.delenv("TALLY_SERVICE_API_KEY")
            async with connect(target) as anonymous:
                missing = await rejection(anonymous.unary_unary(method("GetEvent", ingest))(b"q", timeout=5))
            store.revoke(sender.record.key_id)
            async with connect(target, api_key=sender.plaintext) as revoked:
                gone = await rejection(revoked.unary_unary(method("SendEvent", ingest))(b"e2", timeout=5))
        finally:
            await running.stop(grace=1)
        assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
        assert missing.code() == grpc.StatusCode.UNAUTHENTICATED
        assert gone.code() == grpc.StatusCode.UNAUTHENTICATED
        assert probe.calls["Echo"] == 2


def metadata_echo_app() -> ServiceApp:
    """Answers every kind of call with the authorization and request id it received."""

    def seen(context) -> bytes:
        md = dict(context.invocation_metadata())
        return f"{md.get('authorization', '-')}|{'x-request-id' in md}".encode()

    async def uu(request, context):
        return seen(context)

    async def us(request, context):
        yield seen(context)

    async def su(request_iterator, context):
        async for _ in request_iterator:
            pass
        return seen(context)

    async def ss(request_iterator, context):
        async for _ in request_iterator:
            yield seen(context)

    handlers = {
        "UU": grpc.unary_unary_rpc_method_handler(uu),
        "US": grpc.unary_stream_rpc_method_handler(us),
        "SU": grpc.stream_unary_rpc_method_handler(su),
        "SS": grpc.stream_stream_rpc_method_handler(ss),
    }
    return ServiceApp(
        name="probe",
        service_names=["tally.test.v1.Echo"],
        register=lambda server: server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("tally.test.v1.Echo", handlers),)
        ),
    )


class TestOutgoingKeys:
    async def test_every_kind_of_call_carries_the_key_and_a_request_id(self):
        async with in_process(metadata_echo_app()) as (running, _channel):
            async with connect(f"127.0.0.1:{running.port}", api_key="tly_0123456789abcdef.secret") as channel:
                got = [
                    await channel.unary_unary("/tally.test.v1.Echo/UU")(b"", timeout=5),
                    *[m async for m in channel.unary_stream("/tally.test.v1.Echo/US")(b"", timeout=5)],
                    await channel.stream_unary("/tally.test.v1.Echo/SU")(iter([b"x"]), timeout=5),
                    *[m async for m in channel.stream_stream("/tally.test.v1.Echo/SS")(iter([b"x"]), timeout=5)],
                ]
        assert got == [b"Bearer tly_0123456789abcdef.secret|True"] * 4
