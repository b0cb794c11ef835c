"""Server TLS and mutual TLS between services, configured by environment, with a CA made here."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tally.channels import connect
from tally.server import start_server
from tally.tls import TlsConfig, TlsConfigError
from tests.reliability.probe import Probe, method, probe_app
from tests.security.certs import TestCA


@pytest.fixture
def pki(tmp_path):
    ca = TestCA(tmp_path / "pki")
    other = TestCA(tmp_path / "pki", name="Impostor CA")
    return {
        "ca": ca,
        "server": ca.issue("ingest"),
        "client": ca.issue("meter"),
        "other_ca": other,
        "stranger": other.issue("stranger"),
    }


async def echo(channel: grpc.aio.Channel, payload: bytes = b"ping") -> bytes:
    return await channel.unary_unary(method("Echo"))(payload, timeout=5)


async def refused(channel: grpc.aio.Channel) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await echo(channel)
    return caught.value.code()


class TestServerTls:
    async def test_a_tls_server_answers_a_client_that_trusts_its_ca(self, pki):
        probe = Probe()
        tls = TlsConfig(cert=str(pki["server"].cert), key=str(pki["server"].key))
        running = await start_server(probe_app(probe), "127.0.0.1", 0, tls=tls)
        try:
            async with connect(f"127.0.0.1:{running.port}", tls=TlsConfig(ca=str(pki["ca"].cert_path))) as channel:
                assert await echo(channel) == b"ping"
            assert probe.calls["Echo"] == 1
        finally:
            await running.stop(grace=1)

    async def test_a_plaintext_client_cannot_call_a_tls_server(self, pki):
        probe = Probe()
        tls = TlsConfig(cert=str(pki["server"].cert), key=str(pki["server"].key))
        running = await start_server(probe_app(probe), "127.0.0.1", 0, tls=tls)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                assert await refused(channel) == grpc.StatusCode.UNAVAILABLE
            assert probe.calls["Echo"] == 0
        finally:
            await running.stop(grace=1)

    async def test_a_client_that_trusts_another_ca_refuses_the_server(self, pki):
        probe = Probe()
        tls = TlsConfig(cert=str(pki["server"].cert), key=str(pki["server"].key))
        running = await start_server(probe_app(probe), "127.0.0.1", 0, tls=tls)
        try:
            wrong_trust = TlsConfig(ca=str(pki["other_ca"].cert_path))
            async with connect(f"127.0.0.1:{running.port}", tls=wrong_trust) as channel:
                assert await refused(channel) == grpc.StatusCode.UNAVAILABLE
            assert probe.calls["Echo"] == 0
        finally:
            await running.stop(grace=1)

    async def test_the_server_name_override_accepts_a_certificate_issued_for_a_service_name(self, pki, tmp_path):
        probe = Probe()
        named = pki["ca"].issue("catalog", hosts=("catalog.tally.internal",))
        running = await start_server(
            probe_app(probe), "127.0.0.1", 0, tls=TlsConfig(cert=str(named.cert), key=str(named.key))
        )
        try:
            target = f"127.0.0.1:{running.port}"
            strict = TlsConfig(ca=str(pki["ca"].cert_path))
            async with connect(target, tls=strict) as channel:
                assert await refused(channel) == grpc.StatusCode.UNAVAILABLE
            renamed = TlsConfig(ca=str(pki["ca"].cert_path), server_name="catalog.tally.internal")
            async with connect(target, tls=renamed) as channel:
                assert await echo(channel) == b"ping"
        finally:
            await running.stop(grace=1)


class TestMutualTls:
    async def _mtls_server(self, pki, probe: Probe):
        tls = TlsConfig(
            cert=str(pki["server"].cert),
            key=str(pki["server"].key),
            ca=str(pki["ca"].cert_path),
            require_client_auth=True,
        )
        return await start_server(probe_app(probe), "127.0.0.1", 0, tls=tls)

    async def test_a_client_with_a_certificate_from_the_ca_is_served(self, pki):
        probe = Probe()
        running = await self._mtls_server(pki, probe)
        try:
            client = TlsConfig(
                ca=str(pki["ca"].cert_path), client_cert=str(pki["client"].cert), client_key=str(pki["client"].key)
            )
            async with connect(f"127.0.0.1:{running.port}", tls=client) as channel:
                assert await echo(channel) == b"ping"
            assert probe.calls["Echo"] == 1
        finally:
            await running.stop(grace=1)

    async def test_a_client_without_a_certificate_is_refused(self, pki):
        probe = Probe()
        running = await self._mtls_server(pki, probe)
        try:
            async with connect(f"127.0.0.1:{running.port}", tls=TlsConfig(ca=str(pki["ca"].cert_path))) as channel:
                assert await refused(channel) == grpc.StatusCode.UNAVAILABLE
            assert probe.calls["Echo"] == 0
        finally:
            await running.stop(grace=1)

    async def test_a_client_certificate_from_another_ca_is_refused(self, pki):
        probe = Probe()
        running = await self._mtls_server(pki, probe)
        try:
            stranger = TlsConfig(
                ca=str(pki["ca"].cert_path),
                client_cert=str(pki["stranger"].cert),
                client_key=str(pki["stranger"].key),
            )
            async with connect(f"127.0.0.1:{running.port}", tls=stranger) as channel:
                assert await refused(channel) == grpc.StatusCode.UNAVAILABLE
            assert probe.calls["Echo"] == 0
        finally:
            await running.stop(grace=1)

    async def test_services_configured_only_by_environment_talk_mtls_with_one_certificate_each(
        self, pki, monkeypatch
    ):
        # One process's view: its own cert serves incoming calls and identifies outgoing ones.
        monkeypatch.setenv("TALLY_TLS_CERT", str(pki["server"].cert))
        monkeypatch.setenv("TALLY_TLS_KEY", str(pki["server"].key))
        monkeypatch.setenv("TALLY_TLS_CA", str(pki["ca"].cert_path))
        monkeypatch.setenv("TALLY_TLS_CLIENT_AUTH", "require")
        probe = Probe()
        running = await start_server(probe_app(probe), "127.0.0.1", 0)
        try:
            async with connect(f"127.0.0.1:{running.port}") as channel:
                assert await echo(channel) == b"ping"
                health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
                assert health.status == health_pb2.HealthCheckResponse.SERVING
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as plaintext:
                assert await refused(plaintext) == grpc.StatusCode.UNAVAILABLE
            assert probe.calls["Echo"] == 1
        finally:
            await running.stop(grace=1)


class TestTlsConfigFromEnvironment:
    def test_no_variables_means_plaintext_both_ways(self):
        config = TlsConfig.from_env({})
        assert config.server_credentials() is None
        assert config.channel_credentials() is None

    def test_client_certificate_defaults_to_the_services_own_certificate(self):
        config = TlsConfig.from_env({"TALLY_TLS_CERT": "/c.pem", "TALLY_TLS_KEY": "/k.pem", "TALLY_TLS_CA": "/ca.pem"})
        assert (config.client_cert, config.client_key) == ("/c.pem", "/k.pem")
        assert config.server_enabled and config.client_enabled and not config.require_client_auth

    @pytest.mark.parametrize(
        "env, complaint",
        [
            ({"TALLY_TLS_CERT": "/c.pem"}, "TALLY_TLS_CERT and TALLY_TLS_KEY"),
            ({"TALLY_TLS_CLIENT_KEY": "/k.pem"}, "TALLY_TLS_CLIENT_CERT and TALLY_TLS_CLIENT_KEY"),
            ({"TALLY_TLS_CERT": "/c", "TALLY_TLS_KEY": "/k", "TALLY_TLS_CLIENT_AUTH": "require"}, "needs"),
            ({"TALLY_TLS_CLIENT_AUTH": "sometimes"}, "'none' or 'require'"),
        ],
    )
    def test_inconsistent_settings_are_rejected_at_startup(self, env, complaint):
        with pytest.raises(TlsConfigError, match=complaint):
            TlsConfig.from_env(env)
