"""gRPC entrypoint of the catalog service: decode, call one use case, encode."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from services.catalog import mapping as m
from services.catalog.service import CatalogService
from tally.errors import FailedPrecondition, InvalidInput, Violation
from tally.quarantine import Quarantine, describe, record_out
from tally_gen.catalog.v1 import catalog_pb2 as pb
from tally_gen.catalog.v1 import catalog_pb2_grpc


def _ref(request, what: str) -> tuple[str | None, str | None]:
    which = request.WhichOneof("ref")
    if which is None or not getattr(request, which):
        raise InvalidInput(f"name the {what}", violations=[Violation("ref", "set id or key", "REQUIRED")])
    return (request.id, None) if which == "id" else (None, request.key)


def _required(value: str, field: str) -> str:
    if not value:
        raise InvalidInput(f"{field} is required", violations=[Violation(field, "is required", "REQUIRED")])
    return value


T = TypeVar("T")

# Where the catalog's own encoding failures are recorded.
ENCODE = "catalog.encode"


class CatalogServicer(catalog_pb2_grpc.CatalogServiceServicer):
    def __init__(self, service: CatalogService, quarantine: Quarantine | None = None) -> None:
        self._service = service
        self.quarantine = quarantine or Quarantine()

    # ------------------------------------------------------------ failure isolation
    # A stored row that cannot be encoded (an instant out of the Timestamp range, say) is
    # quarantined: left out of lists and of the feed (which still advances its revision),
    # refused by name on a Get, counted, logged with its id, and shown by GetCatalogStatus.

    def _encode(self, kind: str, entity: Any, encode: Callable[[Any], T]) -> T | None:
        try:
            encoded = encode(entity)
        except Exception as error:  # noqa: BLE001 - one bad row must not fail the call for everyone
            self.quarantine.add(ENCODE, kind, str(getattr(entity, "id", "") or getattr(entity, "key", "")), error)
            return None
        return encoded

    def _encode_all(self, kind: str, entities: Iterable[Any], encode: Callable[[Any], T]) -> tuple[list[T], list[str]]:
        out, skipped = [], []
        for entity in entities:
            encoded = self._encode(kind, entity, encode)
            if encoded is None:
                skipped.append(str(getattr(entity, "id", "") or getattr(entity, "key", "")))
            else:
                out.append(encoded)
        return out, skipped

    def _encode_one(self, kind: str, entity: Any, encode: Callable[[Any], T]) -> T:
        encoded = self._encode(kind, entity, encode)
        if encoded is None:
            record_id = str(getattr(entity, "id", "") or getattr(entity, "key", ""))
            raise FailedPrecondition(
                f"{kind} {record_id} is stored in a form that cannot be served; it is quarantined "
                "(see GetCatalogStatus) until it is corrected",
                reason="RECORD_QUARANTINED",
                metadata={"kind": kind, "id": record_id},
            )
        return encoded

    async def GetCatalogStatus(self, request, context):
        return pb.GetCatalogStatusResponse(
            revision=await self._service.current_revision(),
            quarantined=[record_out(r) for r in self.quarantine.records(1000)],
            quarantined_count=self.quarantine.count,
        )

    # ------------------------------------------------------------ meters

    async def CreateMeter(self, request, context):
        meter = await self._service.create_meter(m.meter_spec_in(request.meter))
        return pb.CreateMeterResponse(meter=m.meter_out(meter))

    async def GetMeter(self, request, context):
        id, key = _ref(request, "meter")
        return pb.GetMeterResponse(meter=self._encode_one("meter", await self._service.get_meter(id=id, key=key), m.meter_out))

    async def ListMeters(self, request, context):
        page = await self._service.list_meters(
            size=request.page_size,
            token=request.page_token,
            event_type=request.event_type,
            include_archived=request.include_archived,
        )
        return pb.ListMetersResponse(
            meters=self._encode_all("meter", page.items, m.meter_out)[0], next_page_token=page.next_page_token
        )

    async def UpdateMeter(self, request, context):
        _required(request.meter.key, "meter.key")
        meter = await self._service.update_meter(
            m.meter_spec_in(request.meter), m.mask_in(request.update_mask)
        )
        return pb.UpdateMeterResponse(meter=m.meter_out(meter))

    async def ArchiveMeter(self, request, context):
        meter = await self._service.archive_meter(_required(request.key, "key"))
        return pb.ArchiveMeterResponse(meter=m.meter_out(meter))

    # ------------------------------------------------------------ products

    async def CreateProduct(self, request, context):
        product = await self._service.create_product(m.product_spec_in(request.product))
        return pb.CreateProductResponse(product=m.product_out(product))

    async def GetProduct(self, request, context):
        id, key = _ref(request, "product")
        return pb.GetProductResponse(product=self._encode_one("product", await self._service.get_product(id=id, key=key), m.product_out))

    async def ListProducts(self, request, context):
        page = await self._service.list_products(
            size=request.page_size, token=request.page_token, include_archived=request.include_archived
        )
        return pb.ListProductsResponse(
            products=self._encode_all("product", page.items, m.product_out)[0], next_page_token=page.next_page_token
        )

    async def UpdateProduct(self, request, context):
        _required(request.product.key, "product.key")
        product = await self._service.update_product(
            m.product_spec_in(request.product), m.mask_in(request.update_mask)
        )
        return pb.UpdateProductResponse(product=m.product_out(product))

    async def ArchiveProduct(self, request, context):
        product = await self._service.archive_product(_required(request.key, "key"))
        return pb.ArchiveProductResponse(product=m.product_out(product))

    # ------------------------------------------------------------ plans

    async def CreatePlan(self, request, context):
        plan = await self._service.create_plan(m.plan_spec_in(request.plan))
        return pb.CreatePlanResponse(plan=m.plan_out(plan))

    async def GetPlan(self, request, context):
        id, key = _ref(request, "plan")
        return pb.GetPlanResponse(plan=self._encode_one("plan", await self._service.get_plan(id=id, key=key), m.plan_out))

    async def ListPlans(self, request, context):
        page = await self._service.list_plans(
            size=request.page_size, token=request.page_token, include_archived=request.include_archived
        )
        return pb.ListPlansResponse(
            plans=self._encode_all("plan", page.items, m.plan_out)[0], next_page_token=page.next_page_token
        )

    async def PublishPlanVersion(self, request, context):
        _required(request.plan.key, "plan.key")
        version = await self._service.publish_plan_version(m.plan_spec_in(request.plan))
        return pb.PublishPlanVersionResponse(version=m.plan_version_out(version))

    async def GetPlanVersion(self, request, context):
        which = request.WhichOneof("ref")
        if which == "id" and request.id:
            version = await self._service.get_plan_version(id=request.id)
        elif which == "key" and request.key.plan_key:
            version = await self._service.get_plan_version(
                plan_key=request.key.plan_key, version=request.key.version
            )
        else:
            raise InvalidInput(
                "name the plan version", violations=[Violation("ref", "set id or key.plan_key", "REQUIRED")]
            )
        return pb.GetPlanVersionResponse(version=self._encode_one("plan_version", version, m.plan_version_out))

    async def ListPlanVersions(self, request, context):
        page = await self._service.list_plan_versions(
            _required(request.plan_key, "plan_key"), size=request.page_size, token=request.page_token
        )
        return pb.ListPlanVersionsResponse(
            versions=self._encode_all("plan_version", page.items, m.plan_version_out)[0], next_page_token=page.next_page_token
        )

    async def ArchivePlan(self, request, context):
        plan = await self._service.archive_plan(_required(request.key, "key"))
        return pb.ArchivePlanResponse(plan=m.plan_out(plan))

    # ------------------------------------------------------------ customers

    async def CreateCustomer(self, request, context):
        customer = await self._service.create_customer(m.customer_spec_in(request.customer))
        return pb.CreateCustomerResponse(customer=m.customer_out(customer))

    async def GetCustomer(self, request, context):
        id, external_id = m.customer_ref_in(request.customer)
        customer = await self._service.get_customer(id=id or None, external_id=external_id or None)
        return pb.GetCustomerResponse(customer=self._encode_one("customer", customer, m.customer_out))

    async def ListCustomers(self, request, context):
        page = await self._service.list_customers(
            size=request.page_size,
            token=request.page_token,
            include_archived=request.include_archived,
            query=request.query,
        )
        return pb.ListCustomersResponse(
            customers=self._encode_all("customer", page.items, m.customer_out)[0], next_page_token=page.next_page_token
        )

    async def UpdateCustomer(self, request, context):
        id = _required(request.customer.id, "customer.id")
        customer = await self._service.update_customer(
            id, m.customer_spec_in(request.customer), m.mask_in(request.update_mask)
        )
        return pb.UpdateCustomerResponse(customer=self._encode_one("customer", customer, m.customer_out))

    async def ArchiveCustomer(self, request, context):
        customer = await self._service.archive_customer(_required(request.id, "id"))
        return pb.ArchiveCustomerResponse(customer=self._encode_one("customer", customer, m.customer_out))

    # ------------------------------------------------------------ subscriptions

    async def CreateSubscription(self, request, context):
        customer_id, external_id = m.customer_ref_in(request.customer)
        anchor = m.enum_name(pb.BillingAnchor, request.anchor, "BILLING_ANCHOR_")
        sub = await self._service.subscriptions.create(
            customer_id=customer_id,
            customer_external_id=external_id,
            plan_key=request.plan_key,
            plan_version=request.plan_version,
            start_time=m.time_in(request, "start_time"),
            anchor=anchor,
            metadata=tuple(sorted(request.metadata.items())),
            external_id=request.external_id.strip(),
            price_overrides=tuple(m.price_override_in(o) for o in request.price_overrides),
        )
        return pb.CreateSubscriptionResponse(subscription=m.subscription_out(sub))

    async def GetSubscription(self, request, context):
        sub = await self._service.subscriptions.get(m.subscription_ref_in(request))
        return pb.GetSubscriptionResponse(subscription=self._encode_one("subscription", sub, m.subscription_out))

    async def ListSubscriptions(self, request, context):
        status = m.status_in(request.status)
        if status.startswith("UNKNOWN_"):
            raise InvalidInput(
                "invalid status", violations=[Violation("status", f"unknown value {status}", "UNKNOWN_ENUM")]
            )
        customer_id, customer_external_id = request.customer_id, ""
        if request.HasField("customer"):
            if customer_id:
                raise InvalidInput(
                    "name the customer once",
                    violations=[
                        Violation(
                            "customer", "set either customer_id or customer, not both", "CONFLICTING_FIELDS"
                        )
                    ],
                )
            customer_id, customer_external_id = m.customer_ref_in(request.customer)
            if not customer_id and not customer_external_id:
                raise InvalidInput(
                    "empty customer filter",
                    violations=[Violation("customer", "set customer.id or customer.external_id", "REQUIRED")],
                )
        page = await self._service.subscriptions.list(
            size=request.page_size,
            token=request.page_token,
            customer_id=customer_id,
            customer_external_id=customer_external_id,
            plan_key=request.plan_key,
            status=status,
        )
        subscriptions, quarantined = self._encode_all("subscription", page.items, m.subscription_out)
        return pb.ListSubscriptionsResponse(
            subscriptions=subscriptions, next_page_token=page.next_page_token, quarantined_ids=quarantined
        )

    async def CancelSubscription(self, request, context):
        which = request.WhichOneof("when")
        sub = await self._service.subscriptions.cancel(
            m.subscription_ref_in(request),
            at_period_end=which == "at_period_end" and request.at_period_end,
            at=m.time_in(request, "at") if which == "at" else None,
        )
        return pb.CancelSubscriptionResponse(subscription=self._encode_one("subscription", sub, m.subscription_out))

    async def ChangeSubscriptionPlan(self, request, context):
        sub = await self._service.subscriptions.change_plan(
            m.subscription_ref_in(request),
            plan_key=request.plan_key,
            plan_version=request.plan_version,
            effective_time=m.time_in(request, "effective_time"),
            price_overrides=tuple(m.price_override_in(o) for o in request.price_overrides),
        )
        return pb.ChangeSubscriptionPlanResponse(subscription=self._encode_one("subscription", sub, m.subscription_out))

    # ------------------------------------------------------------ declarative catalog and feed

    async def ApplyCatalog(self, request, context):
        results, revision = await self._service.apply_catalog(
            [m.product_spec_in(p) for p in request.products],
            [m.meter_spec_in(x) for x in request.meters],
            [m.plan_spec_in(p) for p in request.plans],
            dry_run=request.dry_run,
        )
        return pb.ApplyCatalogResponse(results=[m.apply_result_out(r) for r in results], revision=revision)

    async def GetCatalogRevision(self, request, context):
        return pb.GetCatalogRevisionResponse(revision=await self._service.current_revision())

    async def WatchCatalog(self, request, context):
        # Headers right away: a client knows it is connected before the first change arrives.
        await context.send_initial_metadata(())
        async for change in self._service.watch(request.after_revision):
            try:
                out = m.change_out(change)
            except Exception as error:  # noqa: BLE001 - the feed goes on past a row it cannot encode
                entity_id = str(getattr(change.entity, "id", "") or getattr(change.entity, "key", ""))
                record = self.quarantine.add(ENCODE, change.kind, entity_id, error)
                out = pb.WatchCatalogResponse(revision=change.revision, quarantined=record_out(record))
            yield out
