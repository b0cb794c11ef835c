"""`tally customers` and `tally subscriptions`: create, list and show."""

from __future__ import annotations

from functools import partial

import typer
from google.protobuf import timestamp_pb2
from rich.table import Table

from tally.cli.output import MODE, console, enum_label, fmt_time, parse_time, print_json, print_table, to_dict
from tally.cli.rpc import TIMEOUT, call, collect_pages, fail
from tally_gen.catalog.v1 import catalog_pb2
from tally_gen.common.v1 import common_pb2

customers_app = typer.Typer(help="Customers in the catalog.", no_args_is_help=True)
subscriptions_app = typer.Typer(help="Subscriptions of customers to plans.", no_args_is_help=True)


def parse_pairs(pairs: list[str], option: str) -> dict[str, str]:
    """key=value options into a dict."""
    out: dict[str, str] = {}
    problems = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            problems.append((option, f"{pair!r} is not key=value"))
        out[key] = value
    if problems:
        fail(f"invalid {option}", problems)
    return out


def customer_ref(external_id: str | None, customer_id: str | None) -> common_pb2.CustomerRef:
    if (external_id is None) == (customer_id is None):
        fail("name the customer with exactly one of --customer (external id) or --customer-id")
    if customer_id is not None:
        return common_pb2.CustomerRef(id=customer_id)
    return common_pb2.CustomerRef(external_id=external_id)


def subscription_ref(subscription_id: str | None, external_id: str | None) -> common_pb2.SubscriptionRef:
    """A subscription named by Tally's id (the argument) or by the caller's reference (--external-id)."""
    if (subscription_id is None) == (external_id is None):
        fail("name the subscription with exactly one of SUBSCRIPTION (its id) or --external-id (your reference)")
    if external_id is not None:
        return common_pb2.SubscriptionRef(external_id=external_id)
    return common_pb2.SubscriptionRef(id=subscription_id)


SUBSCRIPTION_ARG_HELP = "Subscription id (or name it by your reference with --external-id)"
EXTERNAL_ID_HELP = "The subscription's external id (your own reference) instead of its id"


def timestamp(text: str, option: str) -> timestamp_pb2.Timestamp:
    try:
        when = parse_time(text)
    except ValueError:
        fail(f"invalid {option}", [(option, f"{text!r} is not an ISO 8601 date or time")])
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(when)
    return out


def _customer_table(customers) -> Table:
    table = Table(title="customers")
    for column in ("id", "external id", "name", "email", "time zone", "currency", "created"):
        table.add_column(column, no_wrap=column in ("id", "external id", "email", "created"))
    for c in customers:
        name = c.name + (" (archived)" if c.archived else "")
        table.add_row(c.id, c.external_id, name, c.email, c.timezone, c.currency, fmt_time(c.create_time))
    return table


def _show_customer(customer) -> None:
    if MODE.json:
        print_json(to_dict(customer))
        return
    out = console()
    out.print(f"[bold]{customer.name or customer.external_id}[/]  {customer.id}", highlight=False)
    rows = [
        ("external id", customer.external_id),
        ("email", customer.email),
        ("time zone", customer.timezone),
        ("currency", customer.currency),
        ("archived", "yes" if customer.archived else "no"),
        ("created", fmt_time(customer.create_time)),
        *((f"metadata.{k}", v) for k, v in sorted(customer.metadata.items())),
    ]
    for label, value in rows:
        out.print(f"  {label:<12} {value}", highlight=False)


@customers_app.command("create")
def create_customer(
    external_id: str = typer.Option(..., "--external-id", help="Your own account id (unique)"),
    name: str = typer.Option("", "--name"),
    email: str = typer.Option("", "--email"),
    timezone: str = typer.Option("", "--timezone", help="IANA billing time zone, such as Europe/Paris"),
    currency: str = typer.Option("", "--currency", help="ISO 4217, such as USD"),
    metadata: list[str] = typer.Option([], "--metadata", "-m", help="key=value, repeatable"),
) -> None:
    """Create a customer."""
    customer = catalog_pb2.Customer(
        external_id=external_id,
        name=name,
        email=email,
        timezone=timezone,
        currency=currency,
        metadata=parse_pairs(metadata, "--metadata"),
    )
    reply = call(
        "catalog", lambda stub: stub.CreateCustomer(catalog_pb2.CreateCustomerRequest(customer=customer), timeout=TIMEOUT)
    )
    _show_customer(reply.customer)


@customers_app.command("list")
def list_customers(
    query: str = typer.Option("", "--query", "-q", help="Substring of name, email or external id"),
    limit: int = typer.Option(50, "--limit", help="At most this many"),
    include_archived: bool = typer.Option(False, "--include-archived"),
) -> None:
    """List customers."""

    async def fetch(stub):
        request = partial(catalog_pb2.ListCustomersRequest, query=query, include_archived=include_archived)
        return await collect_pages(stub.ListCustomers, request, "customers", limit)

    customers = call("catalog", fetch)
    if MODE.json:
        print_json([to_dict(c) for c in customers])
    else:
        print_table(_customer_table(customers))


@customers_app.command("show")
def show_customer(
    external_id: str = typer.Argument(None, help="The customer's external id"),
    customer_id: str = typer.Option(None, "--id", help="Tally's customer id instead"),
) -> None:
    """Show one customer, by external id or --id."""
    ref = customer_ref(external_id, customer_id)
    reply = call("catalog", lambda stub: stub.GetCustomer(catalog_pb2.GetCustomerRequest(customer=ref), timeout=TIMEOUT))
    _show_customer(reply.customer)


# ---------------------------------------------------------------- subscriptions

ANCHORS = {"calendar": catalog_pb2.BILLING_ANCHOR_CALENDAR, "anniversary": catalog_pb2.BILLING_ANCHOR_ANNIVERSARY}
STATUSES = {
    "active": catalog_pb2.SUBSCRIPTION_STATUS_ACTIVE,
    "canceled": catalog_pb2.SUBSCRIPTION_STATUS_CANCELED,
    "ended": catalog_pb2.SUBSCRIPTION_STATUS_ENDED,
}


def _subscription_row(s) -> tuple[str, ...]:
    return (
        s.id,
        s.external_id,
        s.customer_id,
        f"{s.plan_key} v{s.plan_version}",
        enum_label(catalog_pb2.SubscriptionStatus, s.status, "SUBSCRIPTION_STATUS_"),
        enum_label(catalog_pb2.BillingAnchor, s.anchor, "BILLING_ANCHOR_"),
        fmt_time(s.start_time),
    )


def _show_subscription(subscription) -> None:
    if MODE.json:
        print_json(to_dict(subscription))
        return
    out = console()
    sid, external_id, customer, plan, status, anchor, start = _subscription_row(subscription)
    out.print(f"[bold]subscription[/] {sid}", highlight=False)
    for label, value in (("reference", external_id), ("customer", customer), ("plan", plan), ("status", status),
                         ("anchor", anchor), ("start", start), ("created", fmt_time(subscription.create_time))):
        out.print(f"  {label:<9} {value}", highlight=False)
    if subscription.cancel_at_period_end or subscription.cancel_at.seconds:
        when = "at period end" if subscription.cancel_at_period_end else fmt_time(subscription.cancel_at)
        out.print(f"  {'cancels':<9} {when}", highlight=False)
    if subscription.phases:
        table = Table(title="phases")
        for column in ("plan", "from", "until"):
            table.add_column(column, no_wrap=True)
        for phase in subscription.phases:
            table.add_row(f"{phase.plan_key} v{phase.plan_version}", fmt_time(phase.start_time), fmt_time(phase.end_time))
        print_table(table, out)


@subscriptions_app.command("create")
def create_subscription(
    plan: str = typer.Option(..., "--plan", help="Plan key"),
    customer: str = typer.Option(None, "--customer", help="The customer's external id"),
    customer_id: str = typer.Option(None, "--customer-id", help="Tally's customer id instead"),
    version: int = typer.Option(0, "--version", help="Plan version (default: the latest)"),
    start: str = typer.Option(None, "--start", help="ISO 8601 start, may be in the past (default: now)"),
    anchor: str = typer.Option("calendar", "--anchor", help="calendar or anniversary"),
    metadata: list[str] = typer.Option([], "--metadata", "-m", help="key=value, repeatable"),
    external_id: str = typer.Option("", "--external-id", help="Your own reference for it (unique)"),
) -> None:
    """Subscribe a customer to a plan."""
    if anchor not in ANCHORS:
        fail("invalid --anchor", [("--anchor", "must be calendar or anniversary")])
    request = catalog_pb2.CreateSubscriptionRequest(
        customer=customer_ref(customer, customer_id),
        plan_key=plan,
        plan_version=version,
        anchor=ANCHORS[anchor],
        metadata=parse_pairs(metadata, "--metadata"),
        external_id=external_id,
    )
    if start:
        request.start_time.CopyFrom(timestamp(start, "--start"))
    reply = call("catalog", lambda stub: stub.CreateSubscription(request, timeout=TIMEOUT))
    _show_subscription(reply.subscription)


@subscriptions_app.command("list")
def list_subscriptions(
    customer: str = typer.Option(None, "--customer", "-c", help="The customer's external id"),
    customer_id: str = typer.Option(None, "--customer-id", help="Tally's customer id instead"),
    plan: str = typer.Option("", "--plan", help="Plan key"),
    status: str = typer.Option("", "--status", help="active, canceled or ended"),
    limit: int = typer.Option(50, "--limit"),
) -> None:
    """List subscriptions."""
    if status and status not in STATUSES:
        fail("invalid --status", [("--status", "must be active, canceled or ended")])

    async def fetch(stub):
        request = partial(
            catalog_pb2.ListSubscriptionsRequest,
            customer=customer_ref(customer, customer_id) if customer is not None or customer_id is not None else None,
            plan_key=plan,
            status=STATUSES.get(status, 0),
        )
        return await collect_pages(stub.ListSubscriptions, request, "subscriptions", limit)

    subscriptions = call("catalog", fetch)
    if MODE.json:
        print_json([to_dict(s) for s in subscriptions])
        return
    table = Table(title="subscriptions")
    for column in ("id", "reference", "customer", "plan", "status", "anchor", "start"):
        table.add_column(column, no_wrap=column in ("id", "reference", "customer", "plan", "start"))
    for s in subscriptions:
        table.add_row(*_subscription_row(s))
    print_table(table)


@subscriptions_app.command("show")
def show_subscription(
    subscription_id: str = typer.Argument(None, help=SUBSCRIPTION_ARG_HELP),
    external_id: str = typer.Option(None, "--external-id", help=EXTERNAL_ID_HELP),
) -> None:
    """Show one subscription with its plan phases."""
    request = catalog_pb2.GetSubscriptionRequest(subscription=subscription_ref(subscription_id, external_id))
    reply = call("catalog", lambda stub: stub.GetSubscription(request, timeout=TIMEOUT))
    _show_subscription(reply.subscription)


@subscriptions_app.command("cancel")
def cancel_subscription(
    subscription_id: str = typer.Argument(None, help=SUBSCRIPTION_ARG_HELP),
    external_id: str = typer.Option(None, "--external-id", help=EXTERNAL_ID_HELP),
    at_period_end: bool = typer.Option(False, "--at-period-end", help="At the end of the period in force now"),
    at: str = typer.Option(None, "--at", help="At this ISO 8601 instant"),
    now: bool = typer.Option(False, "--now", help="Now (this machine's clock): the current period ends here"),
) -> None:
    """Cancel a subscription: --now, --at-period-end or --at <instant> (exactly one, on purpose)."""
    chosen = [name for name, given in (("--now", now), ("--at-period-end", at_period_end), ("--at", at is not None)) if given]
    if len(chosen) != 1:
        fail("say when to cancel", [("--now/--at-period-end/--at", "give exactly one")])
    request = catalog_pb2.CancelSubscriptionRequest(subscription=subscription_ref(subscription_id, external_id))
    if at_period_end:
        request.at_period_end = True
    elif at is not None:
        request.at.CopyFrom(timestamp(at, "--at"))
    else:
        request.at.GetCurrentTime()
    reply = call("catalog", lambda stub: stub.CancelSubscription(request, timeout=TIMEOUT))
    _show_subscription(reply.subscription)


@subscriptions_app.command("change-plan")
def change_plan(
    subscription_id: str = typer.Argument(None, help=SUBSCRIPTION_ARG_HELP),
    external_id: str = typer.Option(None, "--external-id", help=EXTERNAL_ID_HELP),
    plan: str = typer.Option(..., "--plan", help="The new plan's key"),
    version: int = typer.Option(0, "--version", min=0, help="Plan version (default: the latest)"),
    effective: str = typer.Option(None, "--effective", help="ISO 8601 instant it takes effect (default: now)"),
) -> None:
    """Move a subscription to another plan (or version); usage before and after is priced by each."""
    request = catalog_pb2.ChangeSubscriptionPlanRequest(
        subscription=subscription_ref(subscription_id, external_id), plan_key=plan, plan_version=version
    )
    if effective:
        request.effective_time.CopyFrom(timestamp(effective, "--effective"))
    reply = call("catalog", lambda stub: stub.ChangeSubscriptionPlan(request, timeout=TIMEOUT))
    _show_subscription(reply.subscription)
