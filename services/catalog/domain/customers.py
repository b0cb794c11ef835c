"""Customers: who is billed, in which time zone and currency."""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass, replace
from datetime import datetime

from tally import currency, wire
from tally.errors import Violations

# Deliberately simple: one @, a dotted domain, no whitespace. Deliverability is not our job.
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$")
MUTABLE_FIELDS = ("external_id", "name", "email", "timezone", "currency", "metadata")


@dataclass(frozen=True)
class CustomerSpec:
    external_id: str
    name: str
    email: str = ""
    timezone: str = "UTC"
    currency: str = ""
    metadata: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Customer:
    id: str
    spec: CustomerSpec
    archived: bool
    created_at: datetime
    updated_at: datetime


def is_valid_timezone(name: str) -> bool:
    if not name or name.startswith("/") or ".." in name:
        return False
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def validate_customer(spec: CustomerSpec, prefix: str = "customer") -> Violations:
    v = Violations(prefix)
    wire.check_text(v, "external_id", spec.external_id, max_chars=wire.MAX_EXTERNAL_ID_CHARS)
    wire.check_text(v, "name", spec.name, max_chars=wire.MAX_NAME_CHARS)
    if (
        wire.check_text(v, "email", spec.email, max_chars=wire.MAX_EMAIL_CHARS)
        and spec.email
        and not EMAIL_RE.match(spec.email)
    ):
        v.add("email", f"{wire.shorten(spec.email)} is not an email address", "INVALID_EMAIL")
    if "\x00" in spec.timezone or len(spec.timezone) > 64 or not is_valid_timezone(spec.timezone):
        v.add(
            "timezone",
            f"{wire.shorten(spec.timezone)} is not an IANA time zone such as 'Europe/Paris'",
            "UNKNOWN_TIMEZONE",
        )
    if spec.currency and not currency.is_known(spec.currency):
        v.add("currency", f"{wire.shorten(spec.currency)} is not an ISO 4217 currency code", "UNKNOWN_CURRENCY")
    wire.check_string_map(v, "metadata", spec.metadata)
    return v


def apply_customer_update(current: CustomerSpec, update: CustomerSpec, mask: tuple[str, ...]) -> CustomerSpec:
    fields = mask or MUTABLE_FIELDS
    v = Violations("update_mask")
    for i, name in enumerate(fields):
        if name not in MUTABLE_FIELDS:
            v.add(
                f"[{i}]",
                f"{name!r} cannot be updated; mutable fields: {', '.join(MUTABLE_FIELDS)}",
                "IMMUTABLE_FIELD",
            )
    v.raise_if_any("invalid update mask")
    return replace(current, **{name: getattr(update, name) for name in fields})
