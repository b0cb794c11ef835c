"""Hypothesis strategies that build any request message from its proto descriptor.

Each field is drawn in one of three ways:

- *plausible*: what a correct client would send, taken from real objects where the field
  names one (an existing meter key, customer id, plan key, subscription id, ...), so requests
  reach the use cases behind validation;
- *hostile*: the edge values of its kind (NUL, 1 MB and unicode strings, lenient or
  out-of-bound decimal strings, Timestamps at year 1, 9999 and beyond, unknown enum numbers,
  10,000-entry repeated fields and maps, Struct numbers like 1e308);
- absent.

How often a field is hostile is itself drawn per request (from never to always), so a run
mixes fully valid requests, requests with one poison field, and pure garbage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

UTC = timezone.utc
F = FieldDescriptor

# Requests stay well under the services' 16 MiB message limit so each call stays fast.
MAX_REQUEST_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 5

DECIMAL_EDGES = [
    "1_000", "  12 ", "12\xa0", "\u0661\u0662\u0663", "+7", "-5", "9" * 40, "-" + "9" * 40, "1e308", "-1e308",
    "1e999999", "1e-999999", "NaN", "-NaN", "sNaN", "Infinity", "-Infinity", "inf", "", " ", "abc", "1.2.3",
    "0x10", "1,5", "\uff11\uff12", "12345678901234567890123456789", "0.000000000000000000000000000001",
    "99999999999999999999999999999999999999", "1e38", "1E+2", "-0", "0e-1000000", ".5", "5.", "1\x00",
    "12345678901234567890123456789.000001", "0.0000000000001", "1" * 1000,
]
PLAUSIBLE_DECIMALS = ["0", "1", "2", "0.5", "10", "100", "0.001", "3.25", "1000", "0.000001"]

STRING_EDGES = [
    "", " ", "\x00", "a\x00b", "\t\n\r", "x" * 255, "x" * 256, "x" * 10_000, "\u202eevil", "\ufeffbom",
    "\U0001f600\U0001f680", "e\u0301", "\u0661\u0662", "'; DROP TABLE catalog.meters; --", '{"$gt": ""}',
    "%s%n%x", "../../etc/passwd", "null", "NaN", "0001-01-01T00:00:00Z", "\\", "\u2028", "\x7f", "Ω" * 300,
    "h" * 1_000_000,
]

INT_EDGES = [0, -1, 1, 2, 1000, 1001, 10_000, 10**9, 2**31 - 1, -(2**31)]
INT64_EDGES = INT_EDGES + [2**53 + 1, 2**63 - 1, -(2**63)]

# Timestamp seconds: year 1, 9999-12-31, just outside the valid range, epoch, far future.
TS_MIN = -62135596800
TS_MAX = 253402300799
TIMESTAMP_EDGES = [
    # Valid for protobuf and accepted by the request checks, poison for Python's datetime and
    # Postgres arithmetic: most of the weight.
    (TS_MIN, 0), (TS_MIN, 0), (TS_MIN, 1), (TS_MIN + 86400, 0), (TS_MAX, 999_999_999), (TS_MAX, 0),
    (TS_MAX - 86400, 0), (TS_MAX - 40 * 86400, 0),
    # Outside the Timestamp range, nanos out of range, epoch, year 3000.
    (TS_MIN - 1, 0), (TS_MAX + 1, 0), (1, 1_000_000_000), (1, -1), (2**62, 0), (0, 0), (-1, 0), (32503680000, 0),
]
FLOAT_EDGES = [1e308, -1e308, 5e-324, math.inf, -math.inf, math.nan, -0.0, 2.0**53 + 1, 1e16, 0.1, -5.0, 1e-7]

TIMEZONES = ["UTC", "Europe/Paris", "America/St_Johns", "Asia/Kathmandu", "Pacific/Kiritimati", "Etc/GMT+12"]
CURRENCIES = ["USD", "EUR", "JPY", "BHD"]

safe_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)


# Identifiers of the canary's own objects start with this; the fuzzer never names them, even
# when a response (ReadLog, ListMeters, ...) shows them.
RESERVED_PREFIX = "canary_"


@dataclass
class Pools:
    """Identifiers of real objects, grown as the fuzzer's own calls create more."""

    now: datetime
    refs: dict[str, list[str]] = field(default_factory=dict)
    # Never offered to the fuzzer (the canary's own objects).
    reserved: set[str] = field(default_factory=set)
    # The seeded world: named by every request except those that archive, cancel, void or
    # delete, so plausible requests keep reaching live objects for the whole run.
    protected: set[str] = field(default_factory=set)
    # Real messages seen in responses, by type: templates for plausible sub-messages.
    examples: dict[str, list] = field(default_factory=dict)
    # The types that may be drawn from templates, fixed once the world is seeded, so the shape
    # of the draws never depends on what the run has seen since (hypothesis checks that).
    template_types: frozenset[str] = frozenset()

    def protect_all(self) -> None:
        self.protected = {value for values in self.refs.values() for value in values}
        self.template_types = frozenset(name for name, found in self.examples.items() if found)

    def add_example(self, message) -> None:
        name = message.DESCRIPTOR.full_name
        found = self.examples.setdefault(name, [])
        if len(found) >= 30 or name.startswith("google.protobuf"):
            return
        text = str(message)
        if RESERVED_PREFIX in text or any(value in text for value in self.reserved):
            return
        copy = type(message)()
        copy.CopyFrom(message)
        found.append(copy)

    def template(self, full_name: str, n: int):
        source = TEMPLATE_SOURCES.get(full_name, full_name)
        if source not in self.template_types:
            return None
        found = self.examples.get(source, [])
        return found[n % len(found)] if found else None

    def add(self, kind: str, value: str) -> None:
        if not value or value in self.reserved or value.startswith(RESERVED_PREFIX):
            return
        values = self.refs.setdefault(kind, [])
        if value not in values and len(values) < 200:
            values.append(value)

    def get(self, kind: str) -> list[str]:
        return self.refs.get(kind, [])


# A request-side message filled from a response-side one with the same field names.
TEMPLATE_SOURCES = {"tally.catalog.v1.PlanSpec": "tally.catalog.v1.PlanVersion"}


def copy_by_name(target, source) -> None:
    """Copy every field that ``source`` has under the same name and type into ``target``."""
    by_name = source.DESCRIPTOR.fields_by_name
    for fld in target.DESCRIPTOR.fields:
        other = by_name.get(fld.name)
        if other is None or other.type != fld.type or other.is_repeated != fld.is_repeated:
            continue
        if fld.message_type is not None and other.message_type.full_name != fld.message_type.full_name:
            continue
        value = getattr(source, fld.name)
        if fld.message_type is not None and fld.message_type.GetOptions().map_entry:
            if fld.message_type.fields_by_name["value"].message_type is None:
                getattr(target, fld.name).update(value)
        elif fld.is_repeated:
            getattr(target, fld.name).extend(value)
        elif fld.message_type is not None:
            if source.HasField(fld.name):
                getattr(target, fld.name).CopyFrom(value)
        elif not (fld.has_presence and not source.HasField(fld.name)):
            setattr(target, fld.name, value)


# Message type (by name) -> the pool its id/key belongs to.
ENTITY_OF_MESSAGE = {
    "Meter": "meter", "Product": "product", "Plan": "plan", "PlanSpec": "plan", "PlanVersion": "plan_version",
    "Customer": "customer", "CustomerRef": "customer", "Subscription": "subscription",
    "SubscriptionRef": "subscription", "Invoice": "invoice", "Threshold": "threshold", "Backfill": "backfill",
    "Alert": "alert",
}


def _entity_of_request(message_name: str) -> str | None:
    """GetSubscriptionRequest -> subscription, FinalizeInvoiceRequest -> invoice, ..."""
    stem = message_name.removesuffix("Request")
    best = None
    for name, entity in ENTITY_OF_MESSAGE.items():
        if stem.endswith(name) and (best is None or len(name) > len(best[0])):
            best = (name, entity)
    return best[1] if best else None


def reference_kind(message: Descriptor, fld: FieldDescriptor) -> str | None:
    """Which pool of real identifiers a string field names, judged from its names."""
    name, parent = fld.name, message.name
    entity = ENTITY_OF_MESSAGE.get(parent) or _entity_of_request(parent)
    direct = {
        "customer_id": "customer_id", "meter_key": "meter", "plan_key": "plan", "product_key": "product",
        "subscription_id": "subscription_id", "subscription_ids": "subscription_id", "plan_version_id": "plan_version_id",
        "threshold_id": "threshold_id", "event_type": "event_type", "idempotency_key": "idempotency_key",
        "currency": "currency", "timezone": "timezone", "time_zone": "timezone", "value_property": "property",
        "property": "property", "group_by": "dimension", "number": "invoice_number",
    }
    if name in direct:
        return direct[name]
    if name == "external_id":
        return f"{entity}_external" if entity else None
    if name == "id" and entity:
        return f"{entity}_id"
    if name == "key" and entity:
        return entity
    return None


def _real(pools: Pools, kind: str) -> list[str]:
    return pools.get(kind) + (pools.get(kind.removesuffix("_id")) if kind.endswith("_id") else [])


DESTRUCTIVE = ("Archive", "Delete", "Cancel", "Void")


def _reference(pools: Pools, kind: str, destructive: bool = False):
    """A real identifier (seven times in eight, when there is one) or a fresh one.

    The pools grow while the run goes on; the draws have the same shape whatever they hold,
    so hypothesis sees one consistent strategy.
    """

    def pick(choice: tuple[int, int]) -> str:
        fresh, n = choice
        real = _real(pools, kind)
        if destructive:
            real = [value for value in real if value not in pools.protected]
        return real[n % len(real)] if real and fresh != 5 else f"fz_{kind}_{n}"

    return st.tuples(st.integers(0, 7), st.integers(0, 10**6)).map(pick)


def _disguised_reference(pools: Pools, kind: str):
    """A real identifier padded, upper-cased or with a NUL: looks valid, is not."""
    wraps = [" {} ", "{}\x00", "{}\n", "\u200b{}", "UPPER"]

    def pick(choice: tuple[int, int]) -> str:
        n, wrap = choice
        real = _real(pools, kind) or [f"fz_{kind}"]
        value = real[n % len(real)]
        return value.upper() if wraps[wrap] == "UPPER" else wraps[wrap].format(value)

    return st.tuples(st.integers(0, 10**6), st.integers(0, len(wraps) - 1)).map(pick)


def plausible_string(pools: Pools, message: Descriptor, fld: FieldDescriptor):
    kind = reference_kind(message, fld)
    if kind == "currency":
        return st.sampled_from(CURRENCIES)
    if kind == "timezone":
        return st.sampled_from(TIMEZONES)
    if fld.name == "update_mask":
        sibling = next((f for f in message.fields if f.message_type is not None and f.name != "update_mask"), None)
        names = [f.name for f in sibling.message_type.fields] if sibling is not None else ["name"]
        return st.sampled_from(names)
    if fld.name in ("page_token", "cursor", "after_cursor"):
        return st.just("")
    if fld.name == "email":
        return st.sampled_from(["fuzz@example.com", "billing@example.org"])
    if kind:
        return _reference(pools, kind, destructive=message.name.startswith(DESTRUCTIVE))
    return st.sampled_from(["fuzz", "Fuzz name", "a description", "units", "ok"])


def hostile_string(pools: Pools, message: Descriptor, fld: FieldDescriptor):
    kind = reference_kind(message, fld)
    options = [st.sampled_from(STRING_EDGES), safe_text, _disguised_reference(pools, kind or "key")]
    if fld.name in ("value", "up_to", "amount") or kind == "property":
        options.append(st.sampled_from(DECIMAL_EDGES))
    return st.one_of(*options)


def decimal_value(hostile: bool):
    if hostile:
        return st.one_of(st.sampled_from(DECIMAL_EDGES), safe_text)
    return st.one_of(
        st.sampled_from(PLAUSIBLE_DECIMALS),
        st.decimals(min_value=-(10**6), max_value=10**9, places=6, allow_nan=False, allow_infinity=False).map(str),
    )


def timestamp_value(pools: Pools, hostile: bool):
    if hostile:
        return st.sampled_from(TIMESTAMP_EDGES)
    base = int(pools.now.timestamp())
    return st.tuples(
        st.one_of(st.integers(base - 2 * 86400, base + 600), st.integers(base - 30 * 86400, base + 86400)),
        st.integers(0, 999_999_999),
    )


def struct_value(pools: Pools, hostile: bool, depth: int = 0):
    """A JSON-like value for google.protobuf.Struct/Value."""
    if hostile:
        scalars = st.one_of(
            st.sampled_from(FLOAT_EDGES), st.sampled_from(DECIMAL_EDGES), st.none(), st.booleans(),
            st.sampled_from(STRING_EDGES[:12]), st.floats(allow_nan=True, allow_infinity=True),
        )
    else:
        scalars = st.one_of(
            st.integers(0, 10**6), st.sampled_from(PLAUSIBLE_DECIMALS), st.sampled_from(["eu", "us", "gpt", "a"]),
            st.floats(min_value=0, max_value=1e6, allow_nan=False),
        )
    if depth >= 3:
        return scalars
    return st.one_of(
        scalars,
        st.lists(scalars, max_size=3),
        st.dictionaries(st.sampled_from(["a", "b", "qty", "region"]), struct_value(pools, hostile, depth + 1), max_size=2),
    )


def struct_properties(pools: Pools, hostile: bool):
    names = pools.get("property") + pools.get("dimension") or ["qty"]
    keys = st.one_of(st.sampled_from(names), safe_text) if hostile else st.sampled_from(names)
    plain = st.dictionaries(keys, struct_value(pools, hostile), max_size=4)
    if not hostile:
        return plain
    # The meters' own properties holding an edge number (1e308, NaN, "1_000", 40 nines, ...).
    edge_numbers = st.dictionaries(
        st.sampled_from(names), st.sampled_from(FLOAT_EDGES + DECIMAL_EDGES), min_size=1, max_size=3
    )
    deep = st.integers(8, 12).map(lambda n: _nest({"qty": 1}, n))
    wide = st.just({f"k{i}": i for i in range(2000)})
    return st.one_of(edge_numbers, edge_numbers, edge_numbers, plain, deep, wide)


def _nest(value, depth: int):
    for _ in range(depth):
        value = {"a": value}
    return value


@dataclass
class Mode:
    """Per-request knobs: how often a field is hostile and how often it is left out.

    With ``poison_at`` set, exactly one decision is hostile (the poison_at-th field visited)
    and the rest of the request is plausible: a valid request with one poison value reaches
    furthest into the services.
    """

    hostile: float
    absent: float
    poison_at: int = -1
    visited: int = 0
    poisoned: bool = False
    # Sweeps: the sweep_at-th field of one kind ("timestamp", "decimal", "struct") gets
    # exactly sweep_value; everything else is plausible.
    sweep_kind: str = ""
    sweep_at: int = -1
    sweep_value: object = None
    kind_visited: int = 0

    def swept_here(self, kind: str) -> bool:
        if kind != self.sweep_kind:
            return False
        self.kind_visited += 1
        hit = self.kind_visited - 1 == self.sweep_at
        self.poisoned |= hit
        return hit

    def hostile_here(self, draw, scale: float = 1.0) -> bool:
        self.visited += 1
        if self.poison_at >= 0:
            hit = self.visited - 1 == self.poison_at
        else:
            hit = draw(_choice(self.hostile * scale))
        self.poisoned |= hit
        return hit


# A quarter plausible, half a plausible request with one poison field (most often among the
# first few fields, where the identifiers and instants of small requests are), a quarter mixes.
modes = st.one_of(
    st.sampled_from([(0.0, 0.05), (0.0, 0.3)]).map(lambda m: Mode(*m)),
    st.integers(0, 7).map(lambda k: Mode(0.0, 0.05, poison_at=k)),
    st.integers(0, 30).map(lambda k: Mode(0.0, 0.05, poison_at=k)),
    st.sampled_from([(0.05, 0.1), (0.15, 0.2), (0.4, 0.2), (1.0, 0.3)]).map(lambda m: Mode(*m)),
)


@st.composite
def _choice(draw, probability: float) -> bool:
    if probability <= 0:
        return False
    if probability >= 1:
        return True
    # Hypothesis starts from zeros: zero means "no", so early examples are plain, not hostile.
    return draw(st.integers(0, 999)) >= 1000 - probability * 1000


def _scalar(draw, pools: Pools, message: Descriptor, fld: FieldDescriptor, hostile: bool):
    t = fld.type
    if t == F.TYPE_STRING:
        return draw(hostile_string(pools, message, fld) if hostile else plausible_string(pools, message, fld))
    if t == F.TYPE_BYTES:
        return draw(st.binary(max_size=64)) if hostile else b"fuzz"
    if t == F.TYPE_BOOL:
        return draw(st.booleans())
    if t == F.TYPE_ENUM:
        numbers = [v.number for v in fld.enum_type.values]
        if hostile:
            return draw(st.sampled_from([0, -1, max(numbers) + 1, 99, 2**31 - 1, -(2**31)]))
        return draw(st.sampled_from([n for n in numbers if n != 0] or numbers))
    if t in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return draw(st.sampled_from(FLOAT_EDGES)) if hostile else draw(st.floats(0, 1000))
    if t in (F.TYPE_INT64, F.TYPE_SINT64, F.TYPE_SFIXED64):
        return draw(st.sampled_from(INT64_EDGES)) if hostile else draw(st.integers(0, 100))
    if t in (F.TYPE_UINT64, F.TYPE_FIXED64):
        return draw(st.sampled_from([0, 1, 2**63, 2**64 - 1])) if hostile else draw(st.integers(0, 100))
    if t in (F.TYPE_UINT32, F.TYPE_FIXED32):
        return draw(st.sampled_from([0, 1, 2**32 - 1])) if hostile else draw(st.integers(0, 100))
    # int32, sint32, sfixed32
    if hostile:
        return draw(st.sampled_from(INT_EDGES))
    if fld.name in ("page_size", "max_entries"):
        return draw(st.integers(0, 50))
    if fld.name in ("wait_millis",):
        return draw(st.integers(0, 200))
    if fld.name in ("version", "plan_version", "interval_count"):
        return draw(st.sampled_from([0, 1, 1, 2]))
    return draw(st.integers(0, 100))


def _fill_message(draw, pools: Pools, target, mode: Mode, depth: int) -> None:
    descriptor = target.DESCRIPTOR
    full = descriptor.full_name
    if full == "google.protobuf.Timestamp":
        if mode.swept_here("timestamp"):
            seconds, nanos = mode.sweep_value
        else:
            seconds, nanos = draw(timestamp_value(pools, mode.hostile_here(draw)))
        target.seconds, target.nanos = seconds, nanos
        return
    if full == "google.protobuf.Struct":
        plausible = draw(struct_properties(pools, mode.hostile_here(draw)))
        _update_struct(target, dict(mode.sweep_value) if mode.swept_here("struct") else plausible)
        return
    if full == "tally.common.v1.Decimal":
        plausible = draw(decimal_value(mode.hostile_here(draw)))
        target.value = mode.sweep_value if mode.swept_here("decimal") else plausible
        return
    if depth > MAX_DEPTH:
        return
    if depth > 0 and (full in pools.template_types or TEMPLATE_SOURCES.get(full) in pools.template_types):
        # Two times in three: a real object of this type (a meter, a plan's charges, a
        # customer) with some fields drawn anew, so requests get past validation.
        use, n = draw(st.integers(0, 2)), draw(st.integers(0, 10**6))
        template = pools.template(full, n) if use else None
        if template is not None:
            copy_by_name(target, template)
            for fld in descriptor.fields:
                if draw(_choice(0.2)):
                    target.ClearField(fld.name)
                    _fill_field(draw, pools, target, descriptor, fld, mode, depth)
            return
    chosen_oneofs = {}
    for oneof in descriptor.oneofs:
        members = list(oneof.fields)
        chosen_oneofs[oneof.name] = draw(st.sampled_from(members * 2 + [None]))
    for fld in descriptor.fields:
        if fld.containing_oneof is not None and chosen_oneofs.get(fld.containing_oneof.name) is not fld:
            continue
        if fld.name.endswith(("create_time", "update_time")) or fld.name in ("archived", "locked") and depth > 0:
            # Output-only fields: set them only when the request is hostile anyway.
            if not draw(_choice(mode.hostile)):
                continue
        if draw(_choice(mode.absent)) and fld.containing_oneof is None:
            continue
        _fill_field(draw, pools, target, descriptor, fld, mode, depth)
    _order_range(target, mode)


def _order_range(target, mode: Mode) -> None:
    """In a plausible request a [start, end) range runs forwards (hostile ones may not)."""
    fields = target.DESCRIPTOR.fields_by_name
    for start, end in (("start", "end"), ("start_time", "end_time")):
        if start in fields and end in fields and fields[start].message_type is not None and not mode.poisoned:
            if target.HasField(start) and target.HasField(end):
                a, b = getattr(target, start), getattr(target, end)
                if (a.seconds, a.nanos) > (b.seconds, b.nanos):
                    saved = (a.seconds, a.nanos)
                    a.seconds, a.nanos = b.seconds, b.nanos
                    b.seconds, b.nanos = saved


def _update_struct(target, props: dict) -> None:
    try:
        target.update(props)
    except (ValueError, TypeError):
        target.update({"qty": 1})


def _count(draw, mode: Mode, fld: FieldDescriptor, plausible_max: int) -> int:
    if mode.hostile_here(draw, 0.3):
        return draw(st.sampled_from([plausible_max + 1, 101, 1001, 10_000]))
    return draw(st.integers(0 if fld.name != "charges" else 1, plausible_max))


def _fill_field(draw, pools: Pools, target, message: Descriptor, fld: FieldDescriptor, mode: Mode, depth: int) -> None:
    if fld.message_type is not None and fld.message_type.GetOptions().map_entry:
        _fill_map(draw, pools, getattr(target, fld.name), fld, mode)
        return
    if fld.is_repeated:
        container = getattr(target, fld.name)
        count = _count(draw, mode, fld, 5 if fld.name == "events" else 3)
        if fld.message_type is not None:
            if count <= 20:
                for _ in range(count):
                    _fill_message(draw, pools, container.add(), mode, depth + 1)
            else:
                # Many copies of one drawn element (duplicates are an edge case of their own).
                one = container.add()
                _fill_message(draw, pools, one, mode, depth + 1)
                size = max(one.ByteSize(), 1)
                for _ in range(min(count, MAX_REQUEST_BYTES // (2 * size)) - 1):
                    container.add().CopyFrom(one)
        else:
            values = [_scalar(draw, pools, message, fld, mode.hostile_here(draw)) for _ in range(min(count, 5))]
            if count > 5 and values:
                values = (values * (count // len(values) + 1))[:count] if fld.type != F.TYPE_STRING else [
                    f"{values[0]}_{i}" if isinstance(values[0], str) and len(values[0]) < 1000 else values[0][:16]
                    for i in range(count)
                ]
            container.extend(values)
        return
    if fld.message_type is not None:
        _fill_message(draw, pools, getattr(target, fld.name), mode, depth + 1)
        return
    setattr(target, fld.name, _scalar(draw, pools, message, fld, mode.hostile_here(draw)))


def _fill_map(draw, pools: Pools, container, fld: FieldDescriptor, mode: Mode) -> None:
    key_field, value_field = fld.message_type.fields_by_name["key"], fld.message_type.fields_by_name["value"]
    if value_field.message_type is not None or key_field.type != F.TYPE_STRING:
        return
    hostile = mode.hostile_here(draw)
    if hostile and draw(_choice(0.3)):
        container.update({f"k{i}": "v" for i in range(10_000)})
        return
    dims = pools.get("dimension") or ["region"]
    keys = st.one_of(st.sampled_from(STRING_EDGES), safe_text) if hostile else st.sampled_from(dims + ["tier", "note"])
    values = st.one_of(st.sampled_from(STRING_EDGES + DECIMAL_EDGES[:8]), safe_text) if hostile else st.sampled_from(
        ["eu", "us", "gpt", "1", "x"]
    )
    container.update(draw(st.dictionaries(keys, values, max_size=3)))


@st.composite
def requests(draw, descriptor: Descriptor, pools: Pools):
    """(request, hostile?) for ``descriptor``: plausible, poisoned or garbage, per the drawn mode."""
    mode = draw(modes)
    message = GetMessageClass(descriptor)()
    _fill_message(draw, pools, message, mode, 0)
    if message.ByteSize() > MAX_REQUEST_BYTES:
        mode = Mode(0.0, 0.1)
        message.Clear()
        _fill_message(draw, pools, message, mode, 0)
    return message, mode.poisoned


# The edge values a sweep puts into each field of their kind, one request per field and value:
# those the issue saw accepted and then poison metering or billing.
SWEEP_EDGES = {
    "timestamp": [(TS_MIN, 0), (TS_MAX, 999_999_999)],
    "decimal": ["1e999999", "9" * 40, "1e308", "-5", "1_000", "12345678901234567890123456789.000001"],
    "struct": [{"qty": 1e308}, {"qty": "1_000"}, {"qty": -5}, {"qty": "9" * 40}, {"qty": "abc"}],
}


@st.composite
def swept_requests(draw, descriptor: Descriptor, pools: Pools, kind: str, at: int, value):
    """(request, poisoned?): a plausible request whose ``at``-th ``kind`` field is ``value``."""
    mode = Mode(0.0, 0.0, sweep_kind=kind, sweep_at=at, sweep_value=value)
    message = GetMessageClass(descriptor)()
    _fill_message(draw, pools, message, mode, 0)
    return message, mode.poisoned


SWEEP_TYPES = {"timestamp": "google.protobuf.Timestamp", "decimal": "tally.common.v1.Decimal", "struct": "google.protobuf.Struct"}


def fields_of_kind(descriptor: Descriptor, kind: str, depth: int = 0) -> int:
    """How many fields of a kind a request holds (each field once, nested messages included)."""
    if depth > MAX_DEPTH:
        return 0
    wanted, total = SWEEP_TYPES[kind], 0
    for fld in descriptor.fields:
        if fld.message_type is None or fld.message_type.GetOptions().map_entry:
            continue
        if fld.message_type.full_name == wanted:
            total += 1
        elif not fld.message_type.full_name.startswith("google.protobuf"):
            total += fields_of_kind(fld.message_type, kind, depth + 1)
    return total
