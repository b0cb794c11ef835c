"""Customers through real gRPC: validation, unique external ids, update, archive, search."""

from __future__ import annotations

import grpc

from tally_gen.catalog.v1 import catalog_pb2 as pb
from tally_gen.common.v1 import common_pb2
from tests.catalog.helpers import create_customer, reason_of, rejected, violations_of
from tests.harness import unique


def create(stub, **fields):
    values = {"external_id": unique("acct"), "name": "Acme", "timezone": "America/New_York"}
    values.update(fields)
    return stub.CreateCustomer(pb.CreateCustomerRequest(customer=pb.Customer(**values)))


class TestCreateCustomer:
    async def test_a_customer_is_created_with_its_fields(self, stub):
        external = unique("acct")
        created = (
            await create(
                stub, external_id=external, email="ap@acme.example", currency="EUR", metadata={"tier": "gold"}
            )
        ).customer
        assert created.id.startswith("cus_")
        assert (created.external_id, created.email, created.timezone, created.currency) == (
            external,
            "ap@acme.example",
            "America/New_York",
            "EUR",
        )
        assert dict(created.metadata) == {"tier": "gold"}

    async def test_the_time_zone_defaults_to_utc(self, stub):
        assert (await create(stub, timezone="")).customer.timezone == "UTC"

    async def test_an_unknown_time_zone_is_rejected(self, stub):
        found = await violations_of(create(stub, timezone="Mars/Olympus_Mons"))
        assert "IANA time zone" in found["customer.timezone"]

    async def test_a_utc_offset_is_not_a_time_zone_name(self, stub):
        assert "customer.timezone" in await violations_of(create(stub, timezone="+02:00"))

    async def test_an_email_without_a_domain_is_rejected(self, stub):
        for bad in ("billing", "billing@", "billing@acme", "a b@acme.example"):
            found = await violations_of(create(stub, email=bad))
            assert "not an email address" in found["customer.email"], bad

    async def test_an_unknown_currency_is_rejected(self, stub):
        assert "customer.currency" in await violations_of(create(stub, currency="ABC"))

    async def test_every_problem_is_reported_at_once(self, stub):
        found = await violations_of(create(stub, timezone="Nowhere/City", email="nope", currency="ZZZ"))
        assert set(found) == {"customer.timezone", "customer.email", "customer.currency"}

    async def test_a_taken_external_id_is_already_exists(self, stub):
        external = unique("acct")
        await create(stub, external_id=external)
        error = await rejected(create(stub, external_id=external))
        assert error.code() == grpc.StatusCode.ALREADY_EXISTS
        assert reason_of(error) == "EXTERNAL_ID_TAKEN"

    async def test_customers_without_external_id_do_not_collide(self, stub):
        first = (await create(stub, external_id="")).customer
        second = (await create(stub, external_id="")).customer
        assert first.id != second.id and first.external_id == second.external_id == ""


class TestGetCustomer:
    async def test_a_customer_is_found_by_id_and_by_external_id(self, stub):
        created = await create_customer(stub)
        by_id = await stub.GetCustomer(pb.GetCustomerRequest(customer=common_pb2.CustomerRef(id=created.id)))
        by_ext = await stub.GetCustomer(
            pb.GetCustomerRequest(customer=common_pb2.CustomerRef(external_id=created.external_id))
        )
        assert by_id.customer == by_ext.customer == created

    async def test_an_unknown_external_id_is_not_found(self, stub):
        error = await rejected(
            stub.GetCustomer(
                pb.GetCustomerRequest(customer=common_pb2.CustomerRef(external_id=unique("ghost")))
            )
        )
        assert error.code() == grpc.StatusCode.NOT_FOUND


class TestUpdateAndArchiveCustomer:
    async def test_update_mask_changes_only_named_fields(self, stub):
        created = await create_customer(stub, name="Old")
        updated = (
            await stub.UpdateCustomer(
                pb.UpdateCustomerRequest(
                    customer=pb.Customer(id=created.id, name="New", email="ignored@x.example"),
                    update_mask=["name"],
                )
            )
        ).customer
        assert (updated.name, updated.email) == ("New", created.email)

    async def test_an_update_is_validated(self, stub):
        created = await create_customer(stub)
        found = await violations_of(
            stub.UpdateCustomer(
                pb.UpdateCustomerRequest(
                    customer=pb.Customer(id=created.id, timezone="Not/AZone"), update_mask=["timezone"]
                )
            )
        )
        assert "customer.timezone" in found

    async def test_taking_another_customers_external_id_is_already_exists(self, stub):
        first = await create_customer(stub)
        second = await create_customer(stub)
        error = await rejected(
            stub.UpdateCustomer(
                pb.UpdateCustomerRequest(
                    customer=pb.Customer(id=second.id, external_id=first.external_id),
                    update_mask=["external_id"],
                )
            )
        )
        assert error.code() == grpc.StatusCode.ALREADY_EXISTS

    async def test_archive_marks_the_customer_and_hides_it_from_the_default_list(self, stub):
        created = await create_customer(stub, name=unique("Archivable"))
        archived = (await stub.ArchiveCustomer(pb.ArchiveCustomerRequest(id=created.id))).customer
        default = await stub.ListCustomers(pb.ListCustomersRequest(query=created.name))
        everything = await stub.ListCustomers(
            pb.ListCustomersRequest(query=created.name, include_archived=True)
        )
        assert archived.archived
        assert list(default.customers) == []
        assert [c.id for c in everything.customers] == [created.id]

    async def test_archiving_a_missing_customer_is_not_found(self, stub):
        error = await rejected(stub.ArchiveCustomer(pb.ArchiveCustomerRequest(id="cus_missing")))
        assert error.code() == grpc.StatusCode.NOT_FOUND


class TestListCustomers:
    async def test_query_matches_name_email_or_external_id_case_insensitively_across_pages(self, stub):
        marker = unique("Zebra")
        ids = {
            (await create_customer(stub, name=f"{marker} one")).id,
            (await create_customer(stub, email=f"{marker.lower()}@x.example")).id,
            (await create_customer(stub, external_id=f"{marker.upper()}-3")).id,
        }
        await create_customer(stub, name="Somebody else")
        seen, token = [], ""
        while True:
            page = await stub.ListCustomers(
                pb.ListCustomersRequest(query=marker, page_size=1, page_token=token)
            )
            seen += [c.id for c in page.customers]
            if not (token := page.next_page_token):
                break
        assert sorted(seen) == sorted(ids)
