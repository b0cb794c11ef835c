"""Subscriptions through real gRPC: pinned versions, backdating, cancel, plan-change history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from tally_gen.catalog.v1 import catalog_pb2 as pb
from tally_gen.common.v1 import common_pb2
from tests.catalog.helpers import create_customer, create_plan, fixed_charge, plan_spec, reason_of, rejected

ACTIVE, CANCELED, ENDED = (
    pb.SUBSCRIPTION_STATUS_ACTIVE,
    pb.SUBSCRIPTION_STATUS_CANCELED,
    pb.SUBSCRIPTION_STATUS_ENDED,
)


def ts(value: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(value)
    return out


def when(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


async def subscribe(stub, plan_key: str, **fields) -> pb.Subscription:
    customer = await create_customer(stub)
    request = pb.CreateSubscriptionRequest(
        customer=common_pb2.CustomerRef(external_id=customer.external_id), plan_key=plan_key, **fields
    )
    return (await stub.CreateSubscription(request)).subscription


class TestCreateSubscription:
    async def test_a_subscription_pins_the_latest_version_by_default(self, stub):
        plan = await create_plan(stub)
        sub = await subscribe(stub, plan.key)
        assert (sub.plan_key, sub.plan_version, sub.plan_version_id) == (plan.key, 1, plan.latest_version.id)
        assert sub.status == ACTIVE
        assert sub.anchor == pb.BILLING_ANCHOR_CALENDAR

    async def test_a_subscription_keeps_its_version_when_a_new_one_is_published(self, stub):
        plan = await create_plan(stub)
        sub = await subscribe(stub, plan.key)
        await stub.PublishPlanVersion(
            pb.PublishPlanVersionRequest(plan=plan_spec(key=plan.key, charges=[fixed_charge("99.00")]))
        )
        again = (await stub.GetSubscription(pb.GetSubscriptionRequest(id=sub.id))).subscription
        assert again.plan_version == 1 and again.plan_version_id == plan.latest_version.id

    async def test_an_older_version_can_be_chosen(self, stub):
        plan = await create_plan(stub)
        await stub.PublishPlanVersion(pb.PublishPlanVersionRequest(plan=plan_spec(key=plan.key)))
        sub = await subscribe(stub, plan.key, plan_version=1)
        assert sub.plan_version == 1

    async def test_a_backdated_start_with_an_anniversary_anchor_is_kept(self, stub):
        plan = await create_plan(stub)
        start = datetime(2026, 1, 31, 9, 30, tzinfo=UTC)
        sub = await subscribe(stub, plan.key, start_time=ts(start), anchor=pb.BILLING_ANCHOR_ANNIVERSARY)
        assert when(sub.start_time) == start
        assert when(sub.phases[0].start_time) == start
        assert sub.anchor == pb.BILLING_ANCHOR_ANNIVERSARY

    async def test_an_unknown_plan_is_not_found(self, stub):
        error = await rejected(subscribe(stub, "no_such_plan_xyz"))
        assert error.code() == grpc.StatusCode.NOT_FOUND

    async def test_an_unknown_customer_is_not_found(self, stub):
        plan = await create_plan(stub)
        error = await rejected(
            stub.CreateSubscription(
                pb.CreateSubscriptionRequest(
                    customer=common_pb2.CustomerRef(id="cus_ghost"), plan_key=plan.key
                )
            )
        )
        assert error.code() == grpc.StatusCode.NOT_FOUND

    async def test_an_archived_plan_takes_no_new_subscriptions(self, stub):
        plan = await create_plan(stub)
        await stub.ArchivePlan(pb.ArchivePlanRequest(key=plan.key))
        error = await rejected(subscribe(stub, plan.key))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION

    async def test_a_plan_in_another_currency_than_the_customers_is_refused(self, stub):
        plan = await create_plan(stub, currency="EUR")
        customer = await create_customer(stub, currency="USD")
        error = await rejected(
            stub.CreateSubscription(
                pb.CreateSubscriptionRequest(
                    customer=common_pb2.CustomerRef(id=customer.id), plan_key=plan.key
                )
            )
        )
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert reason_of(error) == "CURRENCY_MISMATCH"


class TestCancelSubscription:
    async def test_cancel_at_period_end_stores_the_flag(self, stub):
        sub = await subscribe(stub, (await create_plan(stub)).key)
        canceled = await stub.CancelSubscription(pb.CancelSubscriptionRequest(id=sub.id, at_period_end=True))
        assert canceled.subscription.cancel_at_period_end
        assert canceled.subscription.status == CANCELED
        assert canceled.subscription.HasField("canceled_time")

    async def test_cancel_at_a_future_instant_is_canceled_until_then(self, stub):
        sub = await subscribe(stub, (await create_plan(stub)).key)
        at = datetime.now(UTC) + timedelta(days=3)
        canceled = (
            await stub.CancelSubscription(pb.CancelSubscriptionRequest(id=sub.id, at=ts(at)))
        ).subscription
        assert canceled.status == CANCELED and when(canceled.cancel_at) == at

    async def test_a_cancel_instant_in_the_past_has_ended_the_subscription(self, stub):
        start = datetime.now(UTC) - timedelta(days=40)
        sub = await subscribe(stub, (await create_plan(stub)).key, start_time=ts(start))
        at = datetime.now(UTC) - timedelta(days=1)
        ended = (
            await stub.CancelSubscription(pb.CancelSubscriptionRequest(id=sub.id, at=ts(at)))
        ).subscription
        assert ended.status == ENDED

    async def test_an_ended_subscription_cannot_be_canceled_again(self, stub):
        sub = await subscribe(
            stub, (await create_plan(stub)).key, start_time=ts(datetime.now(UTC) - timedelta(days=10))
        )
        await stub.CancelSubscription(
            pb.CancelSubscriptionRequest(id=sub.id, at=ts(datetime.now(UTC) - timedelta(days=1)))
        )
        error = await rejected(
            stub.CancelSubscription(pb.CancelSubscriptionRequest(id=sub.id, at_period_end=True))
        )
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION

    async def test_cancel_needs_a_when(self, stub):
        sub = await subscribe(stub, (await create_plan(stub)).key)
        error = await rejected(stub.CancelSubscription(pb.CancelSubscriptionRequest(id=sub.id)))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT

    async def test_list_filters_by_status(self, stub):
        plan = await create_plan(stub)
        active = await subscribe(stub, plan.key)
        canceled = await subscribe(stub, plan.key)
        await stub.CancelSubscription(pb.CancelSubscriptionRequest(id=canceled.id, at_period_end=True))
        by_status = {}
        for status in (ACTIVE, CANCELED):
            reply = await stub.ListSubscriptions(
                pb.ListSubscriptionsRequest(plan_key=plan.key, status=status)
            )
            by_status[status] = [s.id for s in reply.subscriptions]
        assert by_status == {ACTIVE: [active.id], CANCELED: [canceled.id]}


class TestChangeSubscriptionPlan:
    async def test_a_plan_change_keeps_the_history_of_versions(self, stub):
        basic = await create_plan(stub, charges=[fixed_charge("10.00")])
        pro = await create_plan(stub, charges=[fixed_charge("50.00")])
        start = datetime(2026, 3, 1, tzinfo=UTC)
        change = datetime(2026, 3, 16, 12, tzinfo=UTC)
        sub = await subscribe(stub, basic.key, start_time=ts(start))
        changed = (
            await stub.ChangeSubscriptionPlan(
                pb.ChangeSubscriptionPlanRequest(id=sub.id, plan_key=pro.key, effective_time=ts(change))
            )
        ).subscription
        history = [
            (
                p.plan_key,
                p.plan_version_id,
                when(p.start_time),
                when(p.end_time) if p.HasField("end_time") else None,
            )
            for p in changed.phases
        ]
        assert history == [
            (basic.key, basic.latest_version.id, start, change),
            (pro.key, pro.latest_version.id, change, None),
        ]
        assert (changed.plan_key, changed.plan_version_id) == (pro.key, pro.latest_version.id)
        stored = (await stub.GetSubscription(pb.GetSubscriptionRequest(id=sub.id))).subscription
        assert stored == changed

    async def test_a_change_to_a_newer_version_of_the_same_plan_is_a_new_phase(self, stub):
        plan = await create_plan(stub)
        sub = await subscribe(stub, plan.key, start_time=ts(datetime(2026, 1, 1, tzinfo=UTC)))
        v2 = (
            await stub.PublishPlanVersion(pb.PublishPlanVersionRequest(plan=plan_spec(key=plan.key)))
        ).version
        changed = (
            await stub.ChangeSubscriptionPlan(
                pb.ChangeSubscriptionPlanRequest(
                    id=sub.id, plan_key=plan.key, effective_time=ts(datetime(2026, 2, 1, tzinfo=UTC))
                )
            )
        ).subscription
        assert [p.plan_version for p in changed.phases] == [1, 2]
        assert changed.plan_version_id == v2.id

    async def test_three_phases_close_each_other_in_order(self, stub):
        a, b, c = [await create_plan(stub) for _ in range(3)]
        t0, t1, t2 = (datetime(2026, m, 1, tzinfo=UTC) for m in (1, 2, 3))
        sub = await subscribe(stub, a.key, start_time=ts(t0))
        await stub.ChangeSubscriptionPlan(
            pb.ChangeSubscriptionPlanRequest(id=sub.id, plan_key=b.key, effective_time=ts(t1))
        )
        final = (
            await stub.ChangeSubscriptionPlan(
                pb.ChangeSubscriptionPlanRequest(id=sub.id, plan_key=c.key, effective_time=ts(t2))
            )
        ).subscription
        assert [(p.plan_key, when(p.start_time)) for p in final.phases] == [
            (a.key, t0),
            (b.key, t1),
            (c.key, t2),
        ]
        assert [when(p.end_time) for p in final.phases[:2]] == [t1, t2]
        assert not final.phases[2].HasField("end_time")

    async def test_a_change_before_the_current_phase_started_is_refused(self, stub):
        a, b = await create_plan(stub), await create_plan(stub)
        sub = await subscribe(stub, a.key, start_time=ts(datetime(2026, 3, 1, tzinfo=UTC)))
        error = await rejected(
            stub.ChangeSubscriptionPlan(
                pb.ChangeSubscriptionPlanRequest(
                    id=sub.id, plan_key=b.key, effective_time=ts(datetime(2026, 2, 1, tzinfo=UTC))
                )
            )
        )
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        unchanged = (await stub.GetSubscription(pb.GetSubscriptionRequest(id=sub.id))).subscription
        assert len(unchanged.phases) == 1

    async def test_list_by_plan_key_follows_the_plan_in_force(self, stub):
        a, b = await create_plan(stub), await create_plan(stub)
        sub = await subscribe(stub, a.key, start_time=ts(datetime(2026, 1, 1, tzinfo=UTC)))
        await stub.ChangeSubscriptionPlan(
            pb.ChangeSubscriptionPlanRequest(
                id=sub.id, plan_key=b.key, effective_time=ts(datetime(2026, 1, 10, tzinfo=UTC))
            )
        )
        on_a = await stub.ListSubscriptions(pb.ListSubscriptionsRequest(plan_key=a.key))
        on_b = await stub.ListSubscriptions(pb.ListSubscriptionsRequest(plan_key=b.key))
        assert [s.id for s in on_a.subscriptions] == []
        assert [s.id for s in on_b.subscriptions] == [sub.id]
