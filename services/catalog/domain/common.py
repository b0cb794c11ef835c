"""Validation helpers shared by the catalog's entities."""

from __future__ import annotations

import re
from decimal import Decimal

from tally import wire
from tally.errors import Violations

KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
# A dot path into event properties: segments of letters, digits, "_", "-" or "$".
PATH_RE = re.compile(r"^[A-Za-z0-9_$-]+(\.[A-Za-z0-9_$-]+)*$")

MAX_DECIMAL_PLACES = 12


def check_key(violations: Violations, field: str, key: str) -> None:
    if not key:
        violations.add(field, "is required", "REQUIRED")
    elif not KEY_RE.fullmatch(key):
        violations.add(
            field,
            "must be 1-128 letters, digits, '_', '.', ':' or '-', starting with a letter or digit",
            "INVALID_KEY",
        )


def check_path(violations: Violations, field: str, path: str) -> None:
    if len(path) > wire.MAX_PATH_CHARS:
        violations.add(field, f"must be at most {wire.MAX_PATH_CHARS} characters, got {len(path)}", "TOO_LONG")
    elif not PATH_RE.fullmatch(path):
        violations.add(
            field,
            f"{wire.shorten(path)} is not a property path (dot-separated segments such as 'usage.duration')",
            "INVALID_PROPERTY_PATH",
        )


def decimal_places(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def check_decimal(
    violations: Violations,
    field: str,
    value: Decimal | None,
    *,
    required: bool = False,
    positive: bool = False,
    max_places: int = MAX_DECIMAL_PLACES,
) -> bool:
    """Report a missing, non-finite, negative or over-precise decimal; True when it is usable."""
    if value is None:
        if required:
            violations.add(field, "is required", "REQUIRED")
        return False
    if value.is_nan():
        # The mapping decodes a string outside the grammar as NaN (decoding never rejects).
        violations.add(field, f"must be {wire.SYNTAX_DESCRIPTION}", "INVALID_DECIMAL")
        return False
    problem = wire.decimal_error(value)
    if problem is not None:
        violations.add(field, problem.description, problem.reason)
        return False
    ok = True
    if positive and value <= 0:
        violations.add(field, "must be greater than 0", "NOT_POSITIVE")
        ok = False
    elif value < 0:
        violations.add(field, "must not be negative", "NEGATIVE")
        ok = False
    if decimal_places(value.normalize(wire.EXACT)) > max_places:
        violations.add(field, f"must have at most {max_places} decimal places", "TOO_MANY_DECIMAL_PLACES")
        ok = False
    return ok


def check_enum(violations: Violations, field: str, value: str, allowed: frozenset[str]) -> bool:
    """``value`` is the enum's name without prefix; "" means unspecified."""
    if not value:
        violations.add(field, f"is required: one of {', '.join(sorted(allowed))}", "REQUIRED")
        return False
    if value not in allowed:
        violations.add(
            field, f"unknown value {value}: expected one of {', '.join(sorted(allowed))}", "UNKNOWN_ENUM"
        )
        return False
    return True
