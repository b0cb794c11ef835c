"""Service-layer pieces every catalog aggregate shares: transactions, pages, customer lookup.

The catalog's use cases live in CatalogService (meters, products, plans, customers, the feed)
and in services/catalog/subscriptions/ (subscriptions); both open their transactions here so
every writer takes the change-feed lock first.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.catalog import repository as repo
from services.catalog.domain.customers import Customer
from tally import wire
from tally.errors import InvalidInput, NotFound, Violation, Violations
from tally.pagination import decode_page_token, encode_page_token


@dataclass(frozen=True)
class Page:
    items: list[Any]
    next_page_token: str


def now() -> datetime:
    return datetime.now(UTC)


def page_of(items: list[Any], limit: int, kind: str, cursor) -> Page:
    token = encode_page_token({"after": cursor(items[-1])}, kind=kind) if len(items) == limit else ""
    return Page(items, token)


def after_cursor(token: str, kind: str) -> Any:
    state = decode_page_token(token, kind=kind)
    return None if state is None else state["after"]


class Transactions:
    """One transaction per use case: writers hold the change-feed lock from their first statement."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        async with self._engine.begin() as conn:
            await repo.lock_changes(conn)
            yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self._engine.connect() as conn:
            yield conn


async def find_customer(
    conn: AsyncConnection, *, id: str | None, external_id: str | None, for_update: bool = False
) -> Customer:
    """The customer named by id or external_id; INVALID_ARGUMENT when neither, NOT_FOUND when none."""
    if not id and not external_id:
        raise InvalidInput(
            "name the customer",
            violations=[Violation("customer", "set customer.id or customer.external_id", "REQUIRED")],
        )
    v = Violations("customer")
    wire.check_text(v, "id", id or "", max_chars=wire.MAX_ID_CHARS)
    wire.check_text(v, "external_id", external_id or "", max_chars=wire.MAX_EXTERNAL_ID_CHARS)
    v.raise_if_any("invalid customer reference")
    customer = await repo.get_customer(conn, id=id or None, external_id=external_id, for_update=for_update)
    if customer is None:
        raise NotFound(f"no customer {id or external_id!r}", reason="CUSTOMER_NOT_FOUND")
    return customer
