"""Products, plans, immutable plan versions and their charges."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from services.catalog.domain.common import KEY_RE, check_decimal, check_enum, check_key, decimal_places
from services.catalog.domain.meters import Meter
from tally import currency, wire
from tally.errors import Violations

INTERVALS = frozenset({"DAY", "WEEK", "MONTH", "QUARTER", "YEAR"})
FEE_TIMINGS = frozenset({"IN_ADVANCE", "IN_ARREARS"})
PRICING_MODELS = frozenset({"PER_UNIT", "PACKAGE", "GRADUATED", "VOLUME"})
TIERED_MODELS = frozenset({"GRADUATED", "VOLUME"})
MAX_PRICE_POINTS = 100


@dataclass(frozen=True)
class ProductSpec:
    key: str
    name: str
    description: str = ""


@dataclass(frozen=True)
class Product:
    id: str
    spec: ProductSpec
    archived: bool
    created_at: datetime


def looks_like_key(text: str) -> bool:
    """A key worth looking up (the catalog's key syntax); anything else is reported by check_key."""
    return KEY_RE.fullmatch(text) is not None


def validate_product(spec: ProductSpec, prefix: str = "product") -> Violations:
    v = Violations(prefix)
    check_key(v, "key", spec.key)
    if wire.check_text(v, "name", spec.name, max_chars=wire.MAX_NAME_CHARS) and not spec.name:
        v.add("name", "is required", "REQUIRED")
    wire.check_text(v, "description", spec.description, max_chars=wire.MAX_DESCRIPTION_CHARS)
    return v


@dataclass(frozen=True)
class Tier:
    up_to: Decimal | None
    unit_price: Decimal | None
    flat_amount: Decimal | None = None


@dataclass(frozen=True)
class Price:
    model: str
    unit_price: Decimal | None = None
    package_size: Decimal | None = None
    package_price: Decimal | None = None
    tiers: tuple[Tier, ...] = ()
    # GRADUATED/VOLUME: charge the first tier's flat amount at quantity 0; None means the
    # default (true, as Stripe and OpenMeter do).
    charge_flat_amount_at_zero: bool | None = None


@dataclass(frozen=True)
class DimensionPrice:
    # Sorted (dimension, value) pairs, such as (("model", "large"),).
    match: tuple[tuple[str, str], ...]
    price: Price | None


@dataclass(frozen=True)
class PricePoint:
    """A named alternative price of a usage charge (Maxio's price point)."""

    key: str
    name: str
    price: Price | None


@dataclass(frozen=True)
class FixedFee:
    amount: Decimal | None
    timing: str
    # None means the default: prorate partial periods by days.
    prorate: bool | None = None


@dataclass(frozen=True)
class UsageCharge:
    meter_key: str
    price: Price | None
    included_units: Decimal | None = None
    minimum_amount: Decimal | None = None
    maximum_amount: Decimal | None = None
    dimension_prices: tuple[DimensionPrice, ...] = ()
    price_points: tuple[PricePoint, ...] = ()


@dataclass(frozen=True)
class Charge:
    key: str
    name: str
    fixed: FixedFee | None = None
    usage: UsageCharge | None = None


@dataclass(frozen=True)
class PlanContent:
    """Everything a published version freezes; equal content means nothing to publish."""

    name: str
    description: str
    product_key: str
    currency: str
    interval: str
    interval_count: int
    charges: tuple[Charge, ...]

    def meter_keys(self) -> tuple[str, ...]:
        return tuple(sorted({c.usage.meter_key for c in self.charges if c.usage is not None}))


@dataclass(frozen=True)
class PlanSpec:
    key: str
    content: PlanContent


@dataclass(frozen=True)
class PlanVersion:
    id: str
    plan_id: str
    plan_key: str
    version: int
    content: PlanContent
    published_at: datetime


@dataclass(frozen=True)
class Plan:
    id: str
    key: str
    name: str
    archived: bool
    latest: PlanVersion
    created_at: datetime


def validate_plan(
    spec: PlanSpec,
    meters: dict[str, Meter],
    product_exists: bool,
    prefix: str = "plan",
) -> Violations:
    """Every problem of a plan spec at once. ``meters`` holds the meters its charges name."""
    v = Violations(prefix)
    c = spec.content
    check_key(v, "key", spec.key)
    if wire.check_text(v, "name", c.name, max_chars=wire.MAX_NAME_CHARS) and not c.name:
        v.add("name", "is required", "REQUIRED")
    wire.check_text(v, "description", c.description, max_chars=wire.MAX_DESCRIPTION_CHARS)
    if c.product_key and not looks_like_key(c.product_key):
        check_key(v, "product_key", c.product_key)
    elif c.product_key and not product_exists:
        v.add("product_key", f"no product with key {c.product_key!r}", "UNKNOWN_PRODUCT")
    minor = None
    if not c.currency:
        v.add("currency", "is required (ISO 4217, such as 'USD')", "REQUIRED")
    elif not currency.is_known(c.currency):
        v.add("currency", f"{wire.shorten(c.currency)} is not an ISO 4217 currency code", "UNKNOWN_CURRENCY")
    else:
        minor = currency.minor_units(c.currency)
    check_enum(v, "interval", c.interval, INTERVALS)
    if c.interval_count < 1:
        v.add("interval_count", "must be at least 1", "NOT_POSITIVE")
    elif c.interval_count > wire.MAX_INTERVAL_COUNT:
        v.add("interval_count", f"must be at most {wire.MAX_INTERVAL_COUNT}", "TOO_LARGE")
    if not c.charges:
        v.add("charges", "a plan needs at least one charge", "REQUIRED")
    if not wire.check_count(v, "charges", len(c.charges), max_items=wire.MAX_CHARGES):
        return v
    seen: set[str] = set()
    for i, charge in enumerate(c.charges):
        cv = v.nested(f"charges[{i}]")
        check_key(cv, "key", charge.key)
        wire.check_text(cv, "name", charge.name, max_chars=wire.MAX_NAME_CHARS)
        if charge.key in seen:
            cv.add("key", f"charge key {charge.key!r} is used twice", "DUPLICATE")
        seen.add(charge.key)
        if (charge.fixed is None) == (charge.usage is None):
            cv.add("kind", "exactly one of fixed or usage is required", "REQUIRED")
        if charge.fixed is not None:
            _validate_fixed(cv.nested("fixed"), charge.fixed, minor, into=cv)
        if charge.usage is not None:
            _validate_usage(cv.nested("usage"), charge.usage, meters, minor, into=cv)
        v.extend(cv)
    return v


def _validate_fixed(v: Violations, fee: FixedFee, minor: int | None, *, into: Violations) -> None:
    check_money(v, "amount", fee.amount, minor, required=True)
    check_enum(v, "timing", fee.timing, FEE_TIMINGS)
    into.extend(v)


def check_money(
    v: Violations, field: str, amount: Decimal | None, minor: int | None, *, required: bool
) -> None:
    """An amount of money must fit the currency's minor unit (no fractions of a cent in USD)."""
    usable = check_decimal(v, field, amount, required=required)
    if usable and minor is not None and decimal_places(amount.normalize(wire.EXACT)) > minor:
        v.add(
            field,
            f"has more decimal places than the currency's minor unit ({minor})",
            "TOO_MANY_DECIMAL_PLACES",
        )


def _validate_usage(
    v: Violations, usage: UsageCharge, meters: dict[str, Meter], minor: int | None, *, into: Violations
) -> None:
    meter = meters.get(usage.meter_key)
    if not usage.meter_key:
        v.add("meter_key", "is required", "REQUIRED")
    elif not looks_like_key(usage.meter_key):
        check_key(v, "meter_key", usage.meter_key)
    elif meter is None:
        v.add("meter_key", f"no meter with key {usage.meter_key!r}", "UNKNOWN_METER")
    elif meter.archived:
        v.add("meter_key", f"meter {usage.meter_key!r} is archived", "ARCHIVED_METER")
    if usage.price is None:
        v.add("price", "is required", "REQUIRED")
    else:
        validate_price(v.nested("price"), usage.price, into=v)
    check_decimal(v, "included_units", usage.included_units)
    check_money(v, "minimum_amount", usage.minimum_amount, minor, required=False)
    check_money(v, "maximum_amount", usage.maximum_amount, minor, required=False)
    lo, hi = usage.minimum_amount, usage.maximum_amount
    if lo is not None and hi is not None and lo.is_finite() and hi.is_finite() and lo > hi:
        v.add("maximum_amount", f"must be at least minimum_amount ({lo})", "MAXIMUM_BELOW_MINIMUM")
    dimensions = set(meter.spec.group_by) if meter is not None else None
    matches: set[tuple[tuple[str, str], ...]] = set()
    if not wire.check_count(v, "dimension_prices", len(usage.dimension_prices), max_items=wire.MAX_DIMENSION_PRICES):
        into.extend(v)
        return
    for i, dp in enumerate(usage.dimension_prices):
        dv = v.nested(f"dimension_prices[{i}]")
        if not dp.match:
            dv.add("match", "names at least one dimension value, such as model=large", "REQUIRED")
        elif (
            wire.check_string_map(
                dv,
                "match",
                dp.match,
                max_entries=wire.MAX_DIMENSION_ENTRIES,
                max_key_chars=wire.MAX_PATH_CHARS,
                max_value_chars=wire.MAX_DIMENSION_VALUE_CHARS,
            )
            and dimensions is not None
        ):
            for name, _ in dp.match:
                if name not in dimensions:
                    dv.add(
                        f"match[{name}]",
                        f"meter {usage.meter_key!r} does not group by {name!r}",
                        "UNKNOWN_DIMENSION",
                    )
        if dp.match in matches:
            dv.add("match", "the same dimension values are priced twice", "DUPLICATE")
        matches.add(dp.match)
        if dp.price is None:
            dv.add("price", "is required", "REQUIRED")
        else:
            validate_price(dv.nested("price"), dp.price, into=dv)
        v.extend(dv)
    _validate_price_points(v, usage.price_points)
    into.extend(v)


def _validate_price_points(v: Violations, points: tuple[PricePoint, ...]) -> None:
    if len(points) > MAX_PRICE_POINTS:
        v.add("price_points", f"at most {MAX_PRICE_POINTS} price points per charge", "TOO_MANY")
        return
    keys: set[str] = set()
    for i, point in enumerate(points):
        pv = v.nested(f"price_points[{i}]")
        check_key(pv, "key", point.key)
        if point.key in keys:
            pv.add("key", f"price point {point.key!r} is declared twice", "DUPLICATE")
        keys.add(point.key)
        if len(point.name) > 256:
            pv.add("name", "must be at most 256 characters", "TOO_LONG")
        elif any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in point.name):
            pv.add("name", "must not contain control characters (NUL, newline...)", "CONTROL_CHARACTER")
        if point.price is None:
            pv.add("price", "is required", "REQUIRED")
        else:
            validate_price(pv.nested("price"), point.price, into=pv)
        v.extend(pv)


def validate_price(v: Violations, price: Price, *, into: Violations) -> None:
    """Each pricing model's own rules; fields belonging to another model are rejected."""
    model = price.model
    if check_enum(v, "model", model, PRICING_MODELS):
        if model == "PER_UNIT":
            check_decimal(v, "unit_price", price.unit_price, required=True)
        elif price.unit_price is not None:
            v.add("unit_price", f"is not used by {model}", "UNEXPECTED_FIELD")
        if model == "PACKAGE":
            check_decimal(v, "package_size", price.package_size, required=True, positive=True)
            check_decimal(v, "package_price", price.package_price, required=True)
        else:
            for name in ("package_size", "package_price"):
                if getattr(price, name) is not None:
                    v.add(name, f"is not used by {model}", "UNEXPECTED_FIELD")
        if model in TIERED_MODELS:
            validate_tiers(v, price.tiers)
        elif price.tiers:
            v.add("tiers", f"are not used by {model}", "UNEXPECTED_FIELD")
        if model not in TIERED_MODELS and price.charge_flat_amount_at_zero is not None:
            v.add("charge_flat_amount_at_zero", f"is not used by {model} (only GRADUATED and VOLUME)", "UNEXPECTED_FIELD")
    into.extend(v)


def validate_tiers(v: Violations, tiers: tuple[Tier, ...]) -> None:
    """Tiers are contiguous by construction (each starts after the previous up_to): they must
    ascend strictly, and only the last one is open-ended."""
    if not tiers:
        v.add("tiers", "at least one tier is required", "REQUIRED")
        return
    if not wire.check_count(v, "tiers", len(tiers), max_items=wire.MAX_TIERS):
        return
    previous: Decimal | None = None
    last = len(tiers) - 1
    for i, tier in enumerate(tiers):
        field = f"tiers[{i}]"
        if i == last:
            if tier.up_to is not None:
                v.add(f"{field}.up_to", "the last tier must be open-ended (no up_to)", "LAST_TIER_BOUNDED")
        elif tier.up_to is None:
            v.add(f"{field}.up_to", "only the last tier may be open-ended", "OPEN_TIER_NOT_LAST")
        elif check_decimal(v, f"{field}.up_to", tier.up_to, positive=True):
            if previous is not None and tier.up_to <= previous:
                v.add(
                    f"{field}.up_to",
                    f"must be greater than the previous tier's up_to ({previous})",
                    "TIERS_NOT_ASCENDING",
                )
            previous = tier.up_to
        if tier.unit_price is None and tier.flat_amount is None:
            v.add(f"{field}.unit_price", "a tier needs a unit_price or a flat_amount", "REQUIRED")
        check_decimal(v, f"{field}.unit_price", tier.unit_price)
        check_decimal(v, f"{field}.flat_amount", tier.flat_amount)
