"""Transport security from the environment: server TLS, mutual TLS, and client trust.

Variables (all paths are PEM files):

- ``TALLY_TLS_CERT`` / ``TALLY_TLS_KEY``: this service's certificate chain and private key.
  Setting both makes the server listen with TLS instead of plaintext.
- ``TALLY_TLS_CA``: the CA bundle this process trusts. Clients verify servers against it (a
  client uses TLS exactly when it is set); a server with client auth verifies client
  certificates against it.
- ``TALLY_TLS_CLIENT_AUTH``: ``none`` (default) or ``require`` (mTLS: a client without a
  certificate signed by ``TALLY_TLS_CA`` cannot connect).
- ``TALLY_TLS_CLIENT_CERT`` / ``TALLY_TLS_CLIENT_KEY``: the certificate outgoing calls
  present. They default to ``TALLY_TLS_CERT`` / ``TALLY_TLS_KEY``, so one certificate with
  both serverAuth and clientAuth usages serves a service both ways.
- ``TALLY_TLS_SERVER_NAME``: the name to expect in server certificates, when the addresses
  dialled (IPs, load balancers) are not in them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc


class TlsConfigError(ValueError):
    """The TLS variables are inconsistent (half a key pair, mTLS without a CA, ...)."""


def _read(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


@dataclass(frozen=True)
class TlsConfig:
    """Which PEM files this process serves and trusts; empty means plaintext."""

    cert: str | None = None
    key: str | None = None
    ca: str | None = None
    require_client_auth: bool = False
    client_cert: str | None = None
    client_key: str | None = None
    server_name: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "TlsConfig":
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            return env.get(name) or None

        client_auth = (get("TALLY_TLS_CLIENT_AUTH") or "none").lower()
        if client_auth not in ("none", "require"):
            raise TlsConfigError(f"TALLY_TLS_CLIENT_AUTH must be 'none' or 'require', not {client_auth!r}")
        config = cls(
            cert=get("TALLY_TLS_CERT"),
            key=get("TALLY_TLS_KEY"),
            ca=get("TALLY_TLS_CA"),
            require_client_auth=client_auth == "require",
            client_cert=get("TALLY_TLS_CLIENT_CERT") or get("TALLY_TLS_CERT"),
            client_key=get("TALLY_TLS_CLIENT_KEY") or get("TALLY_TLS_KEY"),
            server_name=get("TALLY_TLS_SERVER_NAME"),
        )
        config.validate()
        return config

    def validate(self) -> None:
        if bool(self.cert) != bool(self.key):
            raise TlsConfigError("set both TALLY_TLS_CERT and TALLY_TLS_KEY, or neither")
        if bool(self.client_cert) != bool(self.client_key):
            raise TlsConfigError("set both TALLY_TLS_CLIENT_CERT and TALLY_TLS_CLIENT_KEY, or neither")
        if self.require_client_auth and not (self.cert and self.ca):
            raise TlsConfigError("TALLY_TLS_CLIENT_AUTH=require needs TALLY_TLS_CERT, TALLY_TLS_KEY and TALLY_TLS_CA")

    @property
    def server_enabled(self) -> bool:
        return bool(self.cert and self.key)

    @property
    def client_enabled(self) -> bool:
        return bool(self.ca)

    def server_credentials(self) -> grpc.ServerCredentials | None:
        """Credentials for ``add_secure_port``, or None to serve plaintext."""
        if not self.server_enabled:
            return None
        return grpc.ssl_server_credentials(
            [(_read(self.key), _read(self.cert))],
            root_certificates=_read(self.ca) if self.require_client_auth else None,
            require_client_auth=self.require_client_auth,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """Credentials for ``secure_channel``, or None to dial plaintext."""
        if not self.client_enabled:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca),
            private_key=_read(self.client_key),
            certificate_chain=_read(self.client_cert),
        )

    def channel_options(self) -> list[tuple[str, object]]:
        if self.client_enabled and self.server_name:
            return [("grpc.ssl_target_name_override", self.server_name)]
        return []
