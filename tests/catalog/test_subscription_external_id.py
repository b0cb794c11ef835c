"""The caller's own subscription reference (external_id): unique, and usable wherever a
subscription is named; list filters naming an unknown customer or plan are NOT_FOUND."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from tally.catalog_cache import CatalogCache
from tally_gen.catalog.v1 import catalog_pb2 as pb
from tally_gen.common.v1 import common_pb2
from tests.catalog.helpers import (
    create_customer,
    create_plan,
    fixed_charge,
    reason_of,
    rejected,
    violations_of,
)
from tests.harness import unique


def by_ref(external_id: str) -> common_pb2.SubscriptionRef:
    return common_pb2.SubscriptionRef(external_id=external_id)


async def subscribe(stub, plan_key: str, customer=None, **fields) -> pb.Subscription:
    customer = customer or await create_customer(stub)
    request = pb.CreateSubscriptionRequest(
        customer=common_pb2.CustomerRef(id=customer.id), plan_key=plan_key, **fields
    )
    return (await stub.CreateSubscription(request)).subscription


class TestCreateSubscriptionWithExternalId:
    async def test_the_reference_is_stored_and_returned(self, stub):
        plan = await create_plan(stub)
        ref = unique("acme-sub")
        sub = await subscribe(stub, plan.key, external_id=ref)
        assert sub.external_id == ref
        again = (await stub.GetSubscription(pb.GetSubscriptionRequest(id=sub.id))).subscription
        assert again.external_id == ref

    async def test_the_reference_is_optional(self, stub):
        plan = await create_plan(stub)
        first = await subscribe(stub, plan.key)
        second = await subscribe(stub, plan.key)
        assert first.external_id == second.external_id == ""

    async def test_a_reference_already_taken_is_already_exists_and_nothing_is_stored(self, stub):
        plan = await create_plan(stub)
        ref = unique("dup")
        await subscribe(stub, plan.key, external_id=ref)
        other = await create_customer(stub)
        error = await rejected(subscribe(stub, plan.key, customer=other, external_id=ref))
        assert error.code() == grpc.StatusCode.ALREADY_EXISTS
        assert reason_of(error) == "SUBSCRIPTION_EXTERNAL_ID_TAKEN"
        listed = await stub.ListSubscriptions(
            pb.ListSubscriptionsRequest(customer=common_pb2.CustomerRef(id=other.id))
        )
        assert list(listed.subscriptions) == []

    async def test_an_over_long_reference_is_a_field_violation(self, stub):
        plan = await create_plan(stub)
        found = await violations_of(subscribe(stub, plan.key, external_id="x" * 257))
        assert "external_id" in found

    async def test_a_reference_with_a_nul_or_control_character_is_a_field_violation(self, stub):
        plan = await create_plan(stub)
        for bad in ("a\x00b", "line\nbreak"):
            found = await violations_of(subscribe(stub, plan.key, external_id=bad))
            assert "external_id" in found

    async def test_a_reference_of_exactly_256_characters_is_accepted(self, stub):
        plan = await create_plan(stub)
        ref = unique("r")
        ref = ref + "x" * (256 - len(ref))
        assert (await subscribe(stub, plan.key, external_id=ref)).external_id == ref


class TestNamingASubscriptionByReference:
    async def test_get_finds_a_subscription_by_external_id_or_by_ref_id(self, stub):
        plan = await create_plan(stub)
        ref = unique("get")
        sub = await subscribe(stub, plan.key, external_id=ref)
        by_external = await stub.GetSubscription(pb.GetSubscriptionRequest(subscription=by_ref(ref)))
        by_id = await stub.GetSubscription(
            pb.GetSubscriptionRequest(subscription=common_pb2.SubscriptionRef(id=sub.id))
        )
        assert by_external.subscription.id == by_id.subscription.id == sub.id

    async def test_an_unknown_reference_is_not_found(self, stub):
        error = await rejected(
            stub.GetSubscription(pb.GetSubscriptionRequest(subscription=by_ref(unique("ghost"))))
        )
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert reason_of(error) == "SUBSCRIPTION_NOT_FOUND"

    async def test_naming_the_subscription_twice_is_a_field_violation(self, stub):
        plan = await create_plan(stub)
        sub = await subscribe(stub, plan.key, external_id=unique("twice"))
        found = await violations_of(
            stub.GetSubscription(pb.GetSubscriptionRequest(id=sub.id, subscription=by_ref(sub.external_id)))
        )
        assert "subscription" in found

    async def test_an_empty_reference_is_a_field_violation(self, stub):
        found = await violations_of(
            stub.GetSubscription(pb.GetSubscriptionRequest(subscription=common_pb2.SubscriptionRef()))
        )
        assert "subscription" in found
        found = await violations_of(stub.GetSubscription(pb.GetSubscriptionRequest()))
        assert "id" in found

    async def test_a_lookup_with_a_nul_is_a_field_violation_not_a_database_error(self, stub):
        found = await violations_of(
            stub.GetSubscription(pb.GetSubscriptionRequest(subscription=by_ref("a\x00b")))
        )
        assert "subscription.external_id" in found
        found = await violations_of(stub.GetSubscription(pb.GetSubscriptionRequest(id="sub_\x00")))
        assert "id" in found

    async def test_cancel_by_reference(self, stub):
        plan = await create_plan(stub)
        ref = unique("cancel")
        sub = await subscribe(stub, plan.key, external_id=ref)
        canceled = (
            await stub.CancelSubscription(
                pb.CancelSubscriptionRequest(subscription=by_ref(ref), at_period_end=True)
            )
        ).subscription
        assert canceled.id == sub.id and canceled.cancel_at_period_end
        assert canceled.status == pb.SUBSCRIPTION_STATUS_CANCELED

    async def test_cancel_by_the_old_id_field_still_works(self, stub):
        plan = await create_plan(stub)
        sub = await subscribe(stub, plan.key)
        canceled = (
            await stub.CancelSubscription(pb.CancelSubscriptionRequest(id=sub.id, at_period_end=True))
        ).subscription
        assert canceled.cancel_at_period_end

    async def test_change_plan_by_reference(self, stub):
        a = await create_plan(stub)
        b = await create_plan(stub, charges=[fixed_charge("20.00")])
        ref = unique("change")
        start = datetime.now(UTC) - timedelta(days=3)
        stamp = Timestamp()
        stamp.FromDatetime(start)
        sub = await subscribe(stub, a.key, external_id=ref, start_time=stamp)
        changed = (
            await stub.ChangeSubscriptionPlan(
                pb.ChangeSubscriptionPlanRequest(subscription=by_ref(ref), plan_key=b.key)
            )
        ).subscription
        assert changed.id == sub.id
        assert [p.plan_key for p in changed.phases] == [a.key, b.key]
        assert changed.external_id == ref

    async def test_change_plan_of_an_unknown_reference_is_not_found(self, stub):
        plan = await create_plan(stub)
        error = await rejected(
            stub.ChangeSubscriptionPlan(
                pb.ChangeSubscriptionPlanRequest(subscription=by_ref(unique("ghost")), plan_key=plan.key)
            )
        )
        assert error.code() == grpc.StatusCode.NOT_FOUND


class TestListSubscriptionFilters:
    async def test_the_customer_filter_takes_an_external_id(self, stub):
        plan = await create_plan(stub)
        customer = await create_customer(stub)
        sub = await subscribe(stub, plan.key, customer=customer)
        await subscribe(stub, plan.key)  # another customer's
        listed = await stub.ListSubscriptions(
            pb.ListSubscriptionsRequest(customer=common_pb2.CustomerRef(external_id=customer.external_id))
        )
        assert [s.id for s in listed.subscriptions] == [sub.id]

    async def test_an_external_id_in_customer_id_is_not_found_rather_than_an_empty_page(self, stub):
        customer = await create_customer(stub)
        error = await rejected(
            stub.ListSubscriptions(pb.ListSubscriptionsRequest(customer_id=customer.external_id))
        )
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert reason_of(error) == "CUSTOMER_NOT_FOUND"

    async def test_an_unknown_customer_reference_is_not_found(self, stub):
        error = await rejected(
            stub.ListSubscriptions(
                pb.ListSubscriptionsRequest(customer=common_pb2.CustomerRef(external_id=unique("ghost")))
            )
        )
        assert error.code() == grpc.StatusCode.NOT_FOUND

    async def test_the_customer_id_filter_still_works(self, stub):
        plan = await create_plan(stub)
        customer = await create_customer(stub)
        sub = await subscribe(stub, plan.key, customer=customer)
        listed = await stub.ListSubscriptions(pb.ListSubscriptionsRequest(customer_id=customer.id))
        assert [s.id for s in listed.subscriptions] == [sub.id]

    async def test_a_customer_without_subscriptions_gets_an_empty_page(self, stub):
        customer = await create_customer(stub)
        listed = await stub.ListSubscriptions(
            pb.ListSubscriptionsRequest(customer=common_pb2.CustomerRef(id=customer.id))
        )
        assert list(listed.subscriptions) == []

    async def test_both_customer_filters_at_once_is_a_field_violation(self, stub):
        customer = await create_customer(stub)
        found = await violations_of(
            stub.ListSubscriptions(
                pb.ListSubscriptionsRequest(
                    customer_id=customer.id, customer=common_pb2.CustomerRef(id=customer.id)
                )
            )
        )
        assert "customer" in found

    async def test_an_empty_customer_reference_is_a_field_violation(self, stub):
        found = await violations_of(
            stub.ListSubscriptions(pb.ListSubscriptionsRequest(customer=common_pb2.CustomerRef()))
        )
        assert "customer" in found

    async def test_an_unknown_plan_key_is_not_found(self, stub):
        error = await rejected(stub.ListSubscriptions(pb.ListSubscriptionsRequest(plan_key=unique("noplan"))))
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert reason_of(error) == "PLAN_NOT_FOUND"


class TestExternalIdInTheFeedAndCache:
    async def test_the_cache_finds_a_subscription_by_its_reference(self, stub, catalog_channel):
        plan = await create_plan(stub)
        cache = CatalogCache(catalog_channel)
        await cache.start()
        try:
            ref = unique("cached")
            sub = await subscribe(stub, plan.key, external_id=ref)
            revision = (await stub.GetCatalogRevision(pb.GetCatalogRevisionRequest())).revision
            assert await cache.wait_for_revision(revision, timeout=5.0)
            assert cache.subscription_by_external_id(ref).id == sub.id
            assert cache.subscription_by_ref(by_ref(ref)).id == sub.id
            assert cache.subscription_by_ref(common_pb2.SubscriptionRef(id=sub.id)).external_id == ref
            assert cache.subscription_by_external_id(unique("ghost")) is None
            assert cache.subscription_by_external_id("") is None
        finally:
            await cache.stop()

    async def test_the_watch_feed_carries_the_reference(self, stub):
        plan = await create_plan(stub)
        start = (await stub.GetCatalogRevision(pb.GetCatalogRevisionRequest())).revision
        ref = unique("feed")
        sub = await subscribe(stub, plan.key, external_id=ref)
        stream = stub.WatchCatalog(pb.WatchCatalogRequest(after_revision=start))
        try:
            async for change in stream:
                if change.WhichOneof("entity") == "subscription" and change.subscription.id == sub.id:
                    assert change.subscription.external_id == ref
                    break
        finally:
            stream.cancel()
