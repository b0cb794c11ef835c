"""`tally status` (every service's health, meter lag, unmetered events) and `tally health`."""

from __future__ import annotations

import asyncio

import grpc
import typer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.table import Table

from tally.channels import connect
from tally.cli.output import MODE, console, fmt_time, print_json, print_table
from tally.config import SERVICES, service_address
from tally_gen.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from tally_gen.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from tally_gen.invoice.v1 import invoice_pb2, invoice_pb2_grpc
from tally_gen.meter.v1 import meter_pb2, meter_pb2_grpc

FULL_NAMES = {
    "catalog": "tally.catalog.v1.CatalogService",
    "ingest": "tally.ingest.v1.IngestService",
    "meter": "tally.meter.v1.MeterService",
    "invoice": "tally.invoice.v1.InvoiceService",
}


async def check_health(address: str, service: str = "", timeout: float = 3.0) -> str:
    """SERVING, NOT_SERVING, ... or UNREACHABLE."""
    try:
        async with connect(address) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
    except grpc.aio.AioRpcError as error:
        if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return "UNREACHABLE"
        return error.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


async def _meter_status(address: str) -> dict | None:
    try:
        async with connect(address) as channel:
            reply = await meter_pb2_grpc.MeterServiceStub(channel).GetMeterStatus(
                meter_pb2.GetMeterStatusRequest(), timeout=5
            )
    except grpc.aio.AioRpcError as error:
        return {"error": f"{error.code().name}: {error.details()}"}
    return {
        "applied_position": reply.applied_position,
        "head_position": reply.head_position,
        "events_behind": reply.events_behind,
        "seconds_behind": reply.time_behind.ToTimedelta().total_seconds(),
        "applied_watermark": fmt_time(reply.applied_watermark),
        "unmetered_events": reply.unmetered_events,
        "unknown_meter_records": reply.unknown_meter_records,
        "unknown_customer_entries": reply.unknown_customer_entries,
        "unusable_value_events": reply.unusable_value_events,
        "unattributed_entries": reply.unattributed_entries,
        "quarantined_entries": reply.quarantined_entries,
        "catalog_cache_quarantined": reply.catalog_cache_quarantined,
        "applier_stalled": reply.applier_stalled,
        "stall_reason": reply.stall_reason,
        "last_apply_time": fmt_time(reply.last_apply_time),
    }


def _quarantined(records) -> list[dict]:
    return [{"kind": r.kind, "id": r.id, "reason": r.reason, "occurrences": r.occurrences} for r in records]


async def _quarantine_status(service: str, address: str) -> dict:
    """Records the catalog or invoice service set aside (rows it cannot encode, closes that fail)."""
    try:
        async with connect(address) as channel:
            if service == "catalog":
                reply = await catalog_pb2_grpc.CatalogServiceStub(channel).GetCatalogStatus(
                    catalog_pb2.GetCatalogStatusRequest(), timeout=5
                )
            else:
                reply = await invoice_pb2_grpc.InvoiceServiceStub(channel).GetInvoiceStatus(
                    invoice_pb2.GetInvoiceStatusRequest(), timeout=5
                )
    except grpc.aio.AioRpcError as error:
        return {"error": f"{error.code().name}: {error.details()}"}
    return {"quarantined_count": reply.quarantined_count, "quarantined": _quarantined(reply.quarantined)}


async def _ingest_stats(address: str) -> dict | None:
    try:
        async with connect(address) as channel:
            reply = await ingest_pb2_grpc.IngestServiceStub(channel).GetIngestStats(
                ingest_pb2.GetIngestStatsRequest(), timeout=5
            )
    except grpc.aio.AioRpcError as error:
        return {"error": f"{error.code().name}: {error.details()}"}
    return {
        "events_total": reply.events_total,
        "usage_records_total": reply.usage_records_total,
        "voids_total": reply.voids_total,
        "unmetered_total": reply.unmetered_total,
        "unmetered_by_type": {c.event_type: c.count for c in reply.unmetered_by_type},
        "head_position": reply.head_position,
    }


async def gather_status() -> dict:
    addresses = {service: service_address(service) for service in SERVICES}
    healths = await asyncio.gather(*(check_health(addresses[s], FULL_NAMES[s]) for s in SERVICES))
    services = {s: {"address": addresses[s], "health": h} for s, h in zip(SERVICES, healths, strict=True)}
    meter = await _meter_status(addresses["meter"]) if services["meter"]["health"] == "SERVING" else None
    ingest = await _ingest_stats(addresses["ingest"]) if services["ingest"]["health"] == "SERVING" else None
    quarantine = {
        s: await _quarantine_status(s, addresses[s])
        for s in ("catalog", "invoice")
        if services[s]["health"] == "SERVING"
    }
    return {"services": services, "meter": meter, "ingest": ingest, "quarantine": quarantine}


def status() -> None:
    """Health of each service, meter lag, unmetered events and quarantined records. Exit code 1
    unless all serve and the meter's applier is not stalled."""
    report = asyncio.run(gather_status())
    meter_stalled = bool(report["meter"] and report["meter"].get("applier_stalled"))
    healthy = all(s["health"] == "SERVING" for s in report["services"].values()) and not meter_stalled
    report["healthy"] = healthy
    if MODE.json:
        print_json(report)
    else:
        out = console()
        table = Table(title="services")
        for column in ("service", "address", "health"):
            table.add_column(column)
        for name, item in report["services"].items():
            color = "green" if item["health"] == "SERVING" else "red"
            table.add_row(name, item["address"], f"[{color}]{item['health']}[/]")
        print_table(table, out)
        meter, ingest = report["meter"], report["ingest"]
        if meter is None:
            out.print("meter lag: unknown (meter is not serving)")
        elif "error" in meter:
            out.print(f"meter lag: unknown ({meter['error']})", highlight=False)
        else:
            out.print(
                f"meter lag: {meter['events_behind']} entries, {meter['seconds_behind']:.1f} s behind "
                f"(applied {meter['applied_position']} of {meter['head_position']})",
                highlight=False,
            )
            out.print(
                f"meter: {meter['unmetered_events']} unmetered events, "
                f"{meter['unknown_customer_entries']} for unknown customers, "
                f"{meter['unknown_meter_records']} usage records for unknown meters, "
                f"{meter['unusable_value_events']} events without a usable meter value, "
                f"{meter['unattributed_entries']} entries attributed to no subscription",
                highlight=False,
            )
            out.print(
                f"meter: {meter['quarantined_entries']} log entries quarantined, "
                f"{meter['catalog_cache_quarantined']} catalog changes skipped",
                highlight=False,
            )
            if meter["applier_stalled"]:
                out.print(f"[red]meter applier STALLED[/]: {meter['stall_reason']}", highlight=False)
        if ingest is not None and "error" not in ingest:
            by_type = ", ".join(f"{t}: {n}" for t, n in sorted(ingest["unmetered_by_type"].items()))
            out.print(
                f"ingest: {ingest['events_total']} events stored, {ingest['unmetered_total']} unmetered"
                + (f" ({by_type})" if by_type else ""),
                highlight=False,
            )
        elif ingest is not None:
            out.print(f"ingest stats: unknown ({ingest['error']})", highlight=False)
        for name, item in report["quarantine"].items():
            if "error" in item:
                out.print(f"{name} quarantine: unknown ({item['error']})", highlight=False)
                continue
            out.print(f"{name}: {item['quarantined_count']} records quarantined", highlight=False)
            for record in item["quarantined"][:10]:
                out.print(f"  {record['kind']} {record['id']}: {record['reason']}", highlight=False)
    if not healthy:
        raise typer.Exit(1)


def health(
    service: str = typer.Argument(..., help=f"One of: {', '.join(SERVICES)}"),
    address: str = typer.Option(None, "--address", help="host:port (default: TALLY_<SERVICE>_ADDR)"),
) -> None:
    """Exit 0 when the service answers SERVING to grpc.health.v1 (container health checks)."""
    if service not in SERVICES:
        raise typer.BadParameter(f"unknown service {service!r}")
    result = asyncio.run(check_health(address or service_address(service), FULL_NAMES[service]))
    if MODE.json:
        print_json({"service": service, "health": result})
    else:
        console().print(f"{service}: {result}", highlight=False)
    if result != "SERVING":
        raise typer.Exit(1)
