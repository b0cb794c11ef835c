"""Every RPC of every Tally service, found from the generated descriptors in tally_gen/.

Nothing here lists methods by hand: a module ``tally_gen/<svc>/v1/<name>_pb2.py`` that
declares a service contributes all of its methods, so an RPC added to a .proto is fuzzed as
soon as `make protos` has run.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass

from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message_factory import GetMessageClass

import tally_gen

# Which process serves a proto package: tally.<service>.v1.
SERVICE_OF_PACKAGE = {"catalog", "ingest", "meter", "invoice"}


@dataclass(frozen=True)
class Rpc:
    service: str  # "catalog", "ingest", "meter", "invoice"
    method: MethodDescriptor

    @property
    def name(self) -> str:
        return f"{self.method.containing_service.name}/{self.method.name}"

    @property
    def path(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def request_class(self):
        return GetMessageClass(self.method.input_type)

    @property
    def response_class(self):
        return GetMessageClass(self.method.output_type)

    @property
    def client_streaming(self) -> bool:
        return self.method.client_streaming

    @property
    def server_streaming(self) -> bool:
        return self.method.server_streaming


def _pb2_modules():
    for info in pkgutil.walk_packages(tally_gen.__path__, prefix="tally_gen."):
        if info.name.endswith("_pb2"):
            yield importlib.import_module(info.name)


def all_rpcs() -> list[Rpc]:
    """Every method of every service declared under tally_gen/, in a stable order."""
    found: dict[str, Rpc] = {}
    for module in _pb2_modules():
        for service in module.DESCRIPTOR.services_by_name.values():
            package = service.full_name.split(".")
            owner = package[1] if len(package) > 2 else ""
            if owner not in SERVICE_OF_PACKAGE:
                raise AssertionError(f"service {service.full_name}: no Tally process is known to serve it")
            for method in service.methods:
                rpc = Rpc(owner, method)
                found[rpc.path] = rpc
    return [found[path] for path in sorted(found)]
