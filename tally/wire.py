"""The one grammar of Tally's inputs: decimals, instants and text (docs/api-grammar.md).

Pure: no grpc, protobuf or SQL, so every service's mapping and domain can use it.

**Decimals** are ASCII ``-?digits[.digits][(e|E)[+-]digits]``: no leading ``+``, no
whitespace, no ``_``, no other digits than 0-9, no NaN or Infinity, no ``.5`` or ``5.``.
Python's ``Decimal()`` accepts all of those, which is why nothing parses a wire decimal with
it directly. A value is bounded to what storage holds exactly: at most
``MAX_SIGNIFICANT_DIGITS`` (38) significant digits, below ``10**MAX_INTEGER_DIGITS`` (10^38)
in magnitude and at most ``MAX_SCALE`` (18) digits after the point, judged on the value
(``1.50`` has 2 significant digits, ``1e3`` has 1). Every such value, and every sum or product
of them that Tally computes, fits Postgres ``numeric`` (unconstrained: exact up to 131,072
digits, never rounded) and ``EXACT``, the Decimal context all of Tally's arithmetic uses.
A JSON number (a float in a ``Struct``) obeys the same bounds, by its shortest repr.

**Instants** lie in [``MIN_INSTANT``, ``MAX_INSTANT``) = [1970-01-01, 2200-01-01) UTC. Every
derived computation stays far inside what datetime and Postgres hold: a period of at most
``MAX_INTERVAL_COUNT`` years after 2200, any time zone offset, +1 interval.

**Text** is NUL-free (Postgres text cannot hold NUL) and length-bounded per kind of field;
repeated and map fields have bounds too (the ``MAX_*`` constants below).
"""

from __future__ import annotations

import decimal
import math
import re
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from tally.errors import Violation, Violations

# ---------------------------------------------------------------- decimals

MAX_SIGNIFICANT_DIGITS = 38
MAX_INTEGER_DIGITS = 38
MAX_SCALE = 18
# Longest decimal string an input may be (a 38-digit value needs at most ~60 characters).
MAX_DECIMAL_CHARS = 100
# Longest decimal string another service's result may be (a sum, an average): far more than
# any sum of bounded values needs, and still a bound.
MAX_RESULT_DECIMAL_CHARS = 4096

# Postgres numeric holds 131,072 digits before the point and 16,383 after; a bounded value
# has at most 38 + 18. Sums of a billion of them need 66 digits, their products with a
# price 122: 400 is far beyond anything bounded inputs produce, and it is a ceiling, not a
# cost (libmpdec works with the digits a value has). Rounded is not trapped because
# division (AVG, proration) must round, explicitly, where it happens; additions and
# multiplications of bounded values never reach the precision, so they never round.
EXACT_PRECISION = 400
EXACT = decimal.Context(
    prec=EXACT_PRECISION,
    Emax=999_999,
    Emin=-999_999,
    traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow],
)

_DECIMAL_RE = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]{1,6})?")
SYNTAX_DESCRIPTION = "a decimal number such as \"12.5\", \"-3\" or \"1.5e3\" (ASCII digits, no spaces)"


class DecimalError(ValueError):
    """A string that is not a decimal of the grammar, or a value outside the bounds."""

    def __init__(self, reason: str, description: str) -> None:
        super().__init__(description)
        self.reason = reason
        self.description = description


def _bounds_error(value: Decimal) -> DecimalError | None:
    if not value:
        return None
    sign, digits, exponent = value.as_tuple()
    # Trailing zeros of the coefficient are not significant (1.50 == 1.5, 1E+3 is 1 digit).
    trailing = 0
    significant = len(digits)
    while significant > 1 and digits[significant - 1] == 0:
        significant -= 1
        trailing += 1
    # The value's own exponent: trailing zeros after the point do not add scale.
    exponent += trailing  # type: ignore[operator]
    if value.adjusted() >= MAX_INTEGER_DIGITS:
        return DecimalError("DECIMAL_OUT_OF_RANGE", f"must be less than 10^{MAX_INTEGER_DIGITS} in magnitude")
    if significant > MAX_SIGNIFICANT_DIGITS:
        return DecimalError("DECIMAL_TOO_PRECISE", f"must have at most {MAX_SIGNIFICANT_DIGITS} significant digits")
    if exponent < -MAX_SCALE:
        return DecimalError("DECIMAL_TOO_PRECISE", f"must have at most {MAX_SCALE} digits after the decimal point")
    return None


def _syntax(text: str, max_chars: int = MAX_DECIMAL_CHARS) -> Decimal:
    if len(text) > max_chars or not _DECIMAL_RE.fullmatch(text):
        raise DecimalError("INVALID_DECIMAL", f"must be {SYNTAX_DESCRIPTION}")
    # The regex admits only what Decimal() reads exactly; the constructor never rounds.
    return Decimal(text)


_SCALE_QUANTUM = Decimal(1).scaleb(-MAX_SCALE)


def parse_decimal(text: str) -> Decimal:
    """A wire decimal string as an exact, bounded Decimal; DecimalError otherwise.

    Trailing zeros beyond ``MAX_SCALE`` places ("1.5000...0", "0e-100") are dropped, exactly,
    so a stored value never carries more than ``MAX_SCALE`` places.
    """
    value = _syntax(text)
    problem = _bounds_error(value)
    if problem is not None:
        raise problem
    return _trimmed(value)


def _trimmed(value: Decimal) -> Decimal:
    if value.as_tuple().exponent < -MAX_SCALE:  # type: ignore[operator]
        return value.quantize(_SCALE_QUANTUM, context=EXACT)
    return value


def parse_decimal_syntax(text: str) -> Decimal:
    """An input's syntax (and length) only; the caller checks the bounds with decimal_error,
    so that a validation pass can report them with every other problem."""
    return _syntax(text)


def parse_decimal_unbounded(text: str) -> Decimal:
    """The grammar's syntax without the storage bounds: for results other services computed
    (sums may exceed what one input may be) and for values that are only compared."""
    return _syntax(text, MAX_RESULT_DECIMAL_CHARS)


def decimal_error(value: Decimal) -> DecimalError | None:
    """Why an already-parsed Decimal is outside the bounds (or not finite); None if usable."""
    if not value.is_finite():
        return DecimalError("INVALID_DECIMAL", "must be a finite number, not NaN or Infinity")
    return _bounds_error(value)


def is_bounded(value: Decimal) -> bool:
    return decimal_error(value) is None


def check_decimal(
    violations: Violations,
    field: str,
    text: str,
    *,
    required: bool = False,
    allow_negative: bool = True,
) -> Decimal | None:
    """The parsed value, or None after adding a violation naming ``field`` (or when absent)."""
    if not text:
        if required:
            violations.add(field, "is required", "REQUIRED")
        return None
    try:
        value = parse_decimal(text)
    except DecimalError as error:
        violations.add(field, f"{error.description}, got {shorten(text)}", error.reason)
        return None
    if value < 0 and not allow_negative:
        violations.add(field, "must not be negative", "NEGATIVE")
        return None
    return value


def decimal_or_raise(text: str, field: str, *, allow_negative: bool = True) -> Decimal:
    """parse_decimal, as INVALID_ARGUMENT naming ``field`` (required)."""
    violations = Violations()
    value = check_decimal(violations, field, text, required=True, allow_negative=allow_negative)
    violations.raise_if_any(f"{field} is not a valid decimal")
    assert value is not None
    return value


def format_decimal(value: Decimal) -> str:
    """Plain notation (no exponent), as every service writes decimals on the wire."""
    return format(value, "f")


# ---------------------------------------------------------------- JSON numbers (Struct values)


def json_number(value: Any) -> Decimal | None:
    """A property value (JSON: float, int or string) as an exact bounded Decimal; None if it
    is not a number of the grammar or is outside the bounds. Booleans are not numbers.

    A float is read by its shortest repr (0.1 is 0.1, not 0.1000000000000000055...).
    """
    number = json_number_unbounded(value)
    if number is None or _bounds_error(number) is not None:
        return None
    return _trimmed(number)


# Plain decimals short enough to be inside the bounds whatever their digits: at most 20
# integer and 18 fraction digits is at most 38 significant digits, below 10^20.
_SHORT_PLAIN_RE = re.compile(r"-?[0-9]{1,20}(?:\.[0-9]{1,18})?")


def surely_bounded(value: Any) -> bool:
    """A cheap test for the common case of json_number: True only when ``value`` certainly
    is a number of the grammar within the bounds (False: ask json_number). For hot paths."""
    kind = type(value)
    if kind is str:
        return _SHORT_PLAIN_RE.fullmatch(value) is not None
    if kind is float:
        # A float has at most 17 significant digits, so from 0.01 up its repr has at most
        # 18 places; below 10^20 it is far inside the magnitude bound.
        return value == 0 or 0.01 <= abs(value) < 1e20
    return False


def json_number_unbounded(value: Any) -> Decimal | None:
    """The same without the storage bounds (filters compare any finite number as a number)."""
    kind = type(value)
    if kind is float:
        return Decimal(repr(value)) if math.isfinite(value) else None
    if kind is str:
        if len(value) > MAX_DECIMAL_CHARS or not _DECIMAL_RE.fullmatch(value):
            return None
        return Decimal(value)
    if kind is int:
        return Decimal(value)
    return None


# ---------------------------------------------------------------- instants

UTC = timezone.utc
MIN_INSTANT = datetime(1970, 1, 1, tzinfo=UTC)
MAX_INSTANT = datetime(2200, 1, 1, tzinfo=UTC)  # exclusive
MIN_SECONDS = 0
MAX_SECONDS = 7_258_118_400  # 2200-01-01T00:00:00Z, exclusive
INSTANT_DESCRIPTION = "must lie in [1970-01-01T00:00:00Z, 2200-01-01T00:00:00Z)"
# Billing intervals per period: 1000 years after 2200 is still far below year 9999.
MAX_INTERVAL_COUNT = 1000


def seconds_in_range(seconds: int, nanos: int = 0) -> bool:
    return MIN_SECONDS <= seconds < MAX_SECONDS and 0 <= nanos <= 999_999_999


def instant_in_range(instant: datetime) -> bool:
    return MIN_INSTANT <= instant < MAX_INSTANT


def check_instant(violations: Violations, field: str, instant: datetime | None) -> bool:
    """False (with a violation naming ``field``) for an instant outside the range."""
    if instant is None or instant_in_range(instant):
        return True
    violations.add(field, INSTANT_DESCRIPTION, "INSTANT_OUT_OF_RANGE")
    return False


def instant_violation(field: str) -> Violation:
    return Violation(field, INSTANT_DESCRIPTION, "INSTANT_OUT_OF_RANGE")


# ---------------------------------------------------------------- text

MAX_KEY_CHARS = 128
MAX_NAME_CHARS = 256
MAX_DESCRIPTION_CHARS = 4096
MAX_EMAIL_CHARS = 254
MAX_EXTERNAL_ID_CHARS = 256
MAX_ID_CHARS = 256
MAX_PATH_CHARS = 256
MAX_UNIT_CHARS = 64
MAX_EVENT_TYPE_CHARS = 255
MAX_MEMO_CHARS = 1024
MAX_FILTER_VALUE_CHARS = 1024
MAX_METADATA_KEY_CHARS = 128
MAX_METADATA_VALUE_CHARS = 1024
MAX_DIMENSION_VALUE_CHARS = 1024
# Any other string field, checked centrally for every request (tally.request_checks).
MAX_TEXT_CHARS = 64 * 1024

MAX_METADATA_ENTRIES = 64
MAX_FILTERS = 32
MAX_FILTER_VALUES = 256
MAX_CHARGES = 64
MAX_TIERS = 64
MAX_DIMENSION_PRICES = 256
MAX_DIMENSION_ENTRIES = 16
MAX_GROUP_BY = 16
# Products, meters and plans in one ApplyCatalog (each).
MAX_CATALOG_ENTRIES = 1000
# Any other repeated or map field, checked centrally for every request (ingest batches,
# BatchGetUsage and ApplyCatalog are the largest: 1000 items).
MAX_REPEATED = 10_000

# How much of a bad value a description quotes.
_QUOTE_CHARS = 40


def shorten(text: str) -> str:
    """``text`` quoted for an error description, cut to a few dozen characters."""
    if len(text) <= _QUOTE_CHARS:
        return repr(text)
    return repr(text[:_QUOTE_CHARS]) + f"... ({len(text)} characters)"


def check_text(
    violations: Violations, field: str, value: str, *, max_chars: int, required: bool = False
) -> bool:
    """NUL-free, at most ``max_chars`` characters, and present when ``required``."""
    if "\x00" in value:
        violations.add(field, "must not contain NUL characters", "INVALID_CHARACTER")
        return False
    if len(value) > max_chars:
        violations.add(field, f"must be at most {max_chars} characters, got {len(value)}", "TOO_LONG")
        return False
    if required and not value.strip():
        violations.add(field, "is required", "REQUIRED")
        return False
    return True


def check_count(violations: Violations, field: str, count: int, *, max_items: int) -> bool:
    if count > max_items:
        violations.add(field, f"must have at most {max_items} entries, got {count}", "TOO_MANY")
        return False
    return True


def check_string_map(
    violations: Violations,
    field: str,
    items,
    *,
    max_entries: int = MAX_METADATA_ENTRIES,
    max_key_chars: int = MAX_METADATA_KEY_CHARS,
    max_value_chars: int = MAX_METADATA_VALUE_CHARS,
) -> bool:
    """A map<string, string> (as pairs): entry count, then each key and value."""
    items = list(items)
    if not check_count(violations, field, len(items), max_items=max_entries):
        return False
    ok = True
    for key, value in items:
        ok &= check_text(violations, f"{field}[{shorten(key)[1:-1]}].key", key, max_chars=max_key_chars, required=True)
        ok &= check_text(violations, f"{field}[{shorten(key)[1:-1]}]", value, max_chars=max_value_chars)
    return ok
