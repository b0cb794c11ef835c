"""Calling the services from CLI commands: channels, one asyncio.run per command, errors."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
import typer

from tally.channels import connect
from tally.cli.output import describe_rpc_error, print_error
from tally.config import service_address
from tally.context import new_request_id, request_id_var
from tally_gen.catalog.v1 import catalog_pb2_grpc
from tally_gen.ingest.v1 import ingest_pb2_grpc
from tally_gen.invoice.v1 import invoice_pb2_grpc
from tally_gen.meter.v1 import meter_pb2_grpc

T = TypeVar("T")

STUBS = {
    "catalog": catalog_pb2_grpc.CatalogServiceStub,
    "ingest": ingest_pb2_grpc.IngestServiceStub,
    "meter": meter_pb2_grpc.MeterServiceStub,
    "invoice": invoice_pb2_grpc.InvoiceServiceStub,
}

TIMEOUT = 30.0


def fail(message: str, violations: list[tuple[str, str]] | None = None) -> None:
    """Report a problem found before any call and exit with code 1."""
    print_error(
        {
            "code": "INVALID_ARGUMENT",
            "message": message,
            "reason": "",
            "violations": [{"field": f, "description": d} for f, d in violations or []],
        }
    )
    raise typer.Exit(1)


def call(service: str, use: Callable[[object], Awaitable[T]]) -> T:
    """Run ``use(stub)`` against ``service``; a failed RPC becomes readable lines and exit 1."""
    address = service_address(service)
    # One request id for the command, so its log lines can be found in every service it reached.
    request_id = new_request_id()

    async def run() -> T:
        request_id_var.set(request_id)
        async with connect(address) as channel:
            return await use(STUBS[service](channel))

    try:
        return asyncio.run(run())
    except grpc.aio.AioRpcError as error:
        print_error({**describe_rpc_error(error, service, address), "request_id": request_id})
        raise typer.Exit(1) from None


async def collect_pages(list_page, make_request: Callable[..., object], field: str, limit: int | None = None) -> list:
    """Follow next_page_token through a List RPC until ``limit`` items (None: every page).

    ``make_request(page_size=..., page_token=...)`` builds each page's request, for example
    ``functools.partial(catalog_pb2.ListCustomersRequest, query="acme")``.
    """
    found: list = []
    token = ""
    while limit is None or len(found) < limit:
        size = 200 if limit is None else min(200, limit - len(found))
        reply = await list_page(make_request(page_size=size, page_token=token), timeout=TIMEOUT)
        found.extend(getattr(reply, field))
        token = reply.next_page_token
        if not token:
            break
    return found if limit is None else found[:limit]
