"""gRPC entrypoint of the catalog service: decode, call one use case, encode."""

from __future__ import annotations

from services.catalog import mapping as m
from services.catalog.service import CatalogService
from tally.errors import InvalidInput, Violation
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


class CatalogServicer(catalog_pb2_grpc.CatalogServiceServicer):
    def __init__(self, service: CatalogService) -> None:
        self._service = service

    # ------------------------------------------------------------ meters

    async def CreateMeter(self, request, context):
        meter = await self._service.create_meter(m.meter_spec_in(request.meter))
        return pb.CreateMeterResponse(meter=m.meter_out(meter))

    async def GetMeter(self, request, context):
        id, key = _ref(request, "meter")
        return pb.GetMeterResponse(meter=m.meter_out(await self._service.get_meter(id=id, key=key)))

    async def ListMeters(self, request, context):
        page = await self._service.list_meters(
            size=request.page_size,
            token=request.page_token,
            event_type=request.event_type,
            include_archived=request.include_archived,
        )
        return pb.ListMetersResponse(
            meters=[m.meter_out(x) for x in page.items], next_page_token=page.next_page_token
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
        return pb.GetProductResponse(product=m.product_out(await self._service.get_product(id=id, key=key)))

    async def ListProducts(self, request, context):
        page = await self._service.list_products(
            size=request.page_size, token=request.page_token, include_archived=request.include_archived
        )
        return pb.ListProductsResponse(
            products=[m.product_out(x) for x in page.items], next_page_token=page.next_page_token
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
        return pb.GetPlanResponse(plan=m.plan_out(await self._service.get_plan(id=id, key=key)))

    async def ListPlans(self, request, context):
        page = await self._service.list_plans(
            size=request.page_size, token=request.page_token, include_archived=request.include_archived
        )
        return pb.ListPlansResponse(
            plans=[m.plan_out(x) for x in page.items], next_page_token=page.next_page_token
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
        return pb.GetPlanVersionResponse(version=m.plan_version_out(version))

    async def ListPlanVersions(self, request, context):
        page = await self._service.list_plan_versions(
            _required(request.plan_key, "plan_key"), size=request.page_size, token=request.page_token
        )
        return pb.ListPlanVersionsResponse(
            versions=[m.plan_version_out(x) for x in page.items], next_page_token=page.next_page_token
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
        return pb.GetCustomerResponse(customer=m.customer_out(customer))

    async def ListCustomers(self, request, context):
        page = await self._service.list_customers(
            size=request.page_size,
            token=request.page_token,
            include_archived=request.include_archived,
            query=request.query,
        )
        return pb.ListCustomersResponse(
            customers=[m.customer_out(x) for x in page.items], next_page_token=page.next_page_token
        )

    async def UpdateCustomer(self, request, context):
        id = _required(request.customer.id, "customer.id")
        customer = await self._service.update_customer(
            id, m.customer_spec_in(request.customer), m.mask_in(request.update_mask)
        )
        return pb.UpdateCustomerResponse(customer=m.customer_out(customer))

    async def ArchiveCustomer(self, request, context):
        customer = await self._service.archive_customer(_required(request.id, "id"))
        return pb.ArchiveCustomerResponse(customer=m.customer_out(customer))

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
        return pb.GetSubscriptionResponse(subscription=m.subscription_out(sub))

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
        return pb.ListSubscriptionsResponse(
            subscriptions=[m.subscription_out(x) for x in page.items], next_page_token=page.next_page_token
        )

    async def CancelSubscription(self, request, context):
        which = request.WhichOneof("when")
        sub = await self._service.subscriptions.cancel(
            m.subscription_ref_in(request),
            at_period_end=which == "at_period_end" and request.at_period_end,
            at=m.time_in(request, "at") if which == "at" else None,
        )
        return pb.CancelSubscriptionResponse(subscription=m.subscription_out(sub))

    async def ChangeSubscriptionPlan(self, request, context):
        sub = await self._service.subscriptions.change_plan(
            m.subscription_ref_in(request),
            plan_key=request.plan_key,
            plan_version=request.plan_version,
            effective_time=m.time_in(request, "effective_time"),
            price_overrides=tuple(m.price_override_in(o) for o in request.price_overrides),
        )
        return pb.ChangeSubscriptionPlanResponse(subscription=m.subscription_out(sub))

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
            yield m.change_out(change)
