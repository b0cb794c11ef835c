"""The catalog and meter as the invoice service sees them, over gRPC.

Every transport failure becomes a domain error here, in one place: NOT_FOUND stays
NotFound, everything else is Unavailable (the close retries on its next run).
"""

from __future__ import annotations

from collections.abc import Callable

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import datetime

import grpc

from services.invoice import mapping
from services.invoice.domain.billing import UsageQuery
from services.invoice.domain.invoices import LineRecordsWindow
from services.invoice.domain.plans import Customer, PlanVersion, Subscription
from services.invoice.domain.pricing import UsagePart
from tally.errors import InvalidInput, NotFound, Unavailable, Violation
from tally.grpc_errors import field_violations
from tally_gen.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from tally_gen.common.v1 import common_pb2
from tally_gen.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from tally_gen.meter.v1 import meter_pb2, meter_pb2_grpc

CALL_TIMEOUT = 30.0
# The meter answers at most this many queries per BatchGetUsage call.
BATCH_USAGE_LIMIT = 1000


def _translate(error: grpc.aio.AioRpcError, what: str) -> Exception:
    if error.code() == grpc.StatusCode.NOT_FOUND:
        return NotFound(f"{what} not found", reason="NOT_FOUND_UPSTREAM", metadata={"detail": error.details() or ""})
    return Unavailable(
        f"{what}: {error.code().name} {error.details() or ''}".strip(),
        reason="UPSTREAM_UNAVAILABLE",
        retry_after_seconds=1.0,
    )


class CatalogClient:
    """Subscriptions, plan versions and customers, read over the catalog's RPCs.

    Plan versions never change once published, so they are cached for the process's life.
    """

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = catalog_pb2_grpc.CatalogServiceStub(channel)
        self._versions: dict[str, PlanVersion] = {}
        self._version_locks: dict[str, asyncio.Lock] = {}
        self._aggregations: dict[str, str] = {}

    async def subscription_pages(
        self, page_size: int = 1000, on_bad: Callable[[str, BaseException | str], None] | None = None
    ) -> AsyncIterator[list[Subscription]]:
        """Every subscription, page by page. One that cannot be read (the catalog left it out,
        or it cannot be converted here) is reported to ``on_bad`` and skipped."""
        token = ""
        while True:
            try:
                reply = await self._stub.ListSubscriptions(
                    catalog_pb2.ListSubscriptionsRequest(page_size=page_size, page_token=token), timeout=CALL_TIMEOUT
                )
            except grpc.aio.AioRpcError as error:
                raise _translate(error, "subscriptions") from None
            page = []
            for s in reply.subscriptions:
                try:
                    page.append(mapping.subscription_from(s))
                except Exception as error:  # noqa: BLE001 - one bad subscription must not stop the others
                    if on_bad is None:
                        raise
                    on_bad(s.id, error)
            if on_bad is not None:
                for quarantined_id in reply.quarantined_ids:
                    on_bad(quarantined_id, "the catalog could not encode it (see GetCatalogStatus)")
            yield page
            token = reply.next_page_token
            if not token:
                return

    async def customer_subscriptions(self, customer_id: str, page_size: int = 1000) -> list[Subscription]:
        """Every subscription of one customer (any status)."""
        found: list[Subscription] = []
        token = ""
        while True:
            try:
                reply = await self._stub.ListSubscriptions(
                    catalog_pb2.ListSubscriptionsRequest(page_size=page_size, page_token=token, customer_id=customer_id),
                    timeout=CALL_TIMEOUT,
                )
            except grpc.aio.AioRpcError as error:
                raise _translate(error, f"subscriptions of {customer_id}") from None
            found.extend(mapping.subscription_from(s) for s in reply.subscriptions)
            token = reply.next_page_token
            if not token:
                return found

    async def subscription(self, subscription_id: str) -> Subscription:
        try:
            reply = await self._stub.GetSubscription(
                catalog_pb2.GetSubscriptionRequest(id=subscription_id), timeout=CALL_TIMEOUT
            )
        except grpc.aio.AioRpcError as error:
            raise _translate(error, f"subscription {subscription_id}") from None
        return mapping.subscription_from(reply.subscription)

    async def plan_version(self, version_id: str) -> PlanVersion:
        cached = self._versions.get(version_id)
        if cached is not None:
            return cached
        lock = self._version_locks.setdefault(version_id, asyncio.Lock())
        async with lock:
            if version_id not in self._versions:
                try:
                    reply = await self._stub.GetPlanVersion(
                        catalog_pb2.GetPlanVersionRequest(id=version_id), timeout=CALL_TIMEOUT
                    )
                except grpc.aio.AioRpcError as error:
                    raise _translate(error, f"plan version {version_id}") from None
                self._versions[version_id] = mapping.plan_version_from(reply.version)
        return self._versions[version_id]

    async def all_customers(self, page_size: int = 1000) -> dict[str, Customer]:
        """Every customer (archived too), by id: a few pages instead of one call per customer."""
        found: dict[str, Customer] = {}
        token = ""
        while True:
            try:
                reply = await self._stub.ListCustomers(
                    catalog_pb2.ListCustomersRequest(page_size=page_size, page_token=token, include_archived=True),
                    timeout=CALL_TIMEOUT,
                )
            except grpc.aio.AioRpcError as error:
                raise _translate(error, "customers") from None
            for message in reply.customers:
                found[message.id] = mapping.customer_from(message)
            token = reply.next_page_token
            if not token:
                return found

    async def meter_aggregation(self, meter_key: str) -> str:
        """The meter's aggregation name ("SUM"); cached, since a meter in use is locked."""
        cached = self._aggregations.get(meter_key)
        if cached is None:
            try:
                reply = await self._stub.GetMeter(catalog_pb2.GetMeterRequest(key=meter_key), timeout=CALL_TIMEOUT)
            except grpc.aio.AioRpcError as error:
                raise _translate(error, f"meter {meter_key}") from None
            cached = catalog_pb2.Aggregation.Name(reply.meter.aggregation).removeprefix("AGGREGATION_")
            if reply.meter.locked:
                self._aggregations[meter_key] = cached
        return cached

    async def resolve_customer_id(self, customer_id: str, external_id: str) -> str:
        """The Tally id of the customer named by id or external id; NotFound (CUSTOMER_NOT_FOUND) if none."""
        ref = common_pb2.CustomerRef(id=customer_id) if customer_id else common_pb2.CustomerRef(external_id=external_id)
        call = self._stub.GetCustomer(catalog_pb2.GetCustomerRequest(customer=ref), timeout=CALL_TIMEOUT)
        return (await _resolved(call, "customer", customer_id, external_id)).customer.id

    async def resolve_subscription_id(self, subscription_id: str, external_id: str) -> str:
        """The Tally id of the subscription named by id or external id; NotFound (SUBSCRIPTION_NOT_FOUND) if none."""
        ref = (
            common_pb2.SubscriptionRef(id=subscription_id)
            if subscription_id
            else common_pb2.SubscriptionRef(external_id=external_id)
        )
        call = self._stub.GetSubscription(catalog_pb2.GetSubscriptionRequest(subscription=ref), timeout=CALL_TIMEOUT)
        return (await _resolved(call, "subscription", subscription_id, external_id)).subscription.id

    async def customer(self, customer_id: str) -> Customer:
        try:
            reply = await self._stub.GetCustomer(
                catalog_pb2.GetCustomerRequest(customer=common_pb2.CustomerRef(id=customer_id)), timeout=CALL_TIMEOUT
            )
        except grpc.aio.AioRpcError as error:
            raise _translate(error, f"customer {customer_id}") from None
        return mapping.customer_from(reply.customer)


class MeterClient:
    """Usage and the meter's progress through ingest's log."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = meter_pb2_grpc.MeterServiceStub(channel)

    async def usage(self, customer_id: str, query: UsageQuery) -> UsagePart:
        try:
            reply = await self._stub.GetUsage(mapping.usage_request(customer_id, query), timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as error:
            raise _translate(error, f"usage of {query.meter_key}") from None
        return mapping.usage_from(query, reply)

    async def usage_of_many(self, queries: Sequence[tuple[str, UsageQuery]]) -> list[UsagePart]:
        """Usage of many (customer id, query) pairs, in order, by BatchGetUsage calls of at most 1,000."""
        chunks = [queries[i : i + BATCH_USAGE_LIMIT] for i in range(0, len(queries), BATCH_USAGE_LIMIT)]

        async def read(chunk: Sequence[tuple[str, UsageQuery]]) -> list[UsagePart]:
            try:
                reply = await self._stub.BatchGetUsage(mapping.batch_usage_request(chunk), timeout=CALL_TIMEOUT)
            except grpc.aio.AioRpcError as error:
                raise _translate(error, "usage batch") from None
            return [mapping.usage_from(query, result) for (_, query), result in zip(chunk, reply.results, strict=True)]

        parts = await asyncio.gather(*(read(chunk) for chunk in chunks))
        return [part for chunk in parts for part in chunk]

    async def applied_watermark(self) -> datetime | None:
        """Every log entry ingested before this instant has been applied; None if unknown."""
        try:
            reply = await self._stub.GetMeterStatus(meter_pb2.GetMeterStatusRequest(), timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as error:
            raise _translate(error, "meter status") from None
        return mapping.optional_time_from(reply, "applied_watermark")


class IngestClient:
    """Usage records as ingest stored them, for the records behind an invoice line.

    The records are passed through unchanged (ingest's UsageRecord messages): the invoice
    service only chooses the window, it neither reads nor prices them.
    """

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = ingest_pb2_grpc.IngestServiceStub(channel)

    async def usage_records(
        self, customer_id: str, window: LineRecordsWindow, page_size: int, page_token: str
    ) -> tuple[list[ingest_pb2.UsageRecord], str]:
        """One page of the customer's usage records in ``window``, and ingest's next page token."""
        request = ingest_pb2.ListUsageRecordsRequest(
            customer=common_pb2.CustomerRef(id=customer_id),
            meter_key=window.meter_key,
            range=mapping.range_to(window.start, window.end),
            dimensions=dict(window.dimensions),
            exclude_dimensions=[ingest_pb2.DimensionMatch(dimensions=dict(match)) for match in window.exclude],
            subscription=common_pb2.SubscriptionRef(id=window.subscription_id) if window.subscription_id else None,
            include_unattributed=window.include_unattributed and bool(window.subscription_id),
            page_size=page_size,
            page_token=page_token,
        )
        try:
            reply = await self._stub.ListUsageRecords(request, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.INVALID_ARGUMENT and any(
                field == "page_token" for field, _ in field_violations(error)
            ):
                # Ingest's own token, carried inside ours: it no longer fits (or was forged).
                raise InvalidInput(
                    "invalid page token",
                    violations=[Violation("page_token", "not a page token issued for this line", "INVALID_PAGE_TOKEN")],
                ) from None
            raise _translate(error, f"usage records of {window.meter_key}") from None
        return list(reply.usage_records), reply.next_page_token


async def _resolved(call, kind: str, tally_id: str, external_id: str):
    """The reply of a Get naming a ``kind`` by id or external id; NOT_FOUND becomes NotFound
    (``<KIND>_NOT_FOUND``, naming what was asked for), anything else as _translate says."""
    try:
        return await call
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            raise NotFound(
                f"no {kind} {tally_id or external_id!r}",
                reason=f"{kind.upper()}_NOT_FOUND",
                metadata={"id": tally_id} if tally_id else {"external_id": external_id},
            ) from None
        raise _translate(error, kind) from None
