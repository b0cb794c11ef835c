"""The declarative catalog file (YAML) -> ApplyCatalogRequest.

The YAML mirrors the protobuf messages field for field (``meter_key``, ``product_key``), with
two conveniences: enums may drop their prefix (``SUM`` for ``AGGREGATION_SUM``) and decimals
are plain scalars (``unit_price: 0.05``). YAML floats are kept as their source text, so a price
never passes through a binary float.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format

from tally_gen.catalog.v1 import catalog_pb2

DECIMAL_FIELDS = frozenset({
    "amount", "unit_price", "package_size", "package_price", "up_to", "flat_amount",
    "included_units", "minimum_amount", "maximum_amount",
})  # fmt: skip
ENUM_PREFIXES = {
    "aggregation": "AGGREGATION_",
    "operator": "FILTER_OPERATOR_",
    "model": "PRICING_MODEL_",
    "timing": "FEE_TIMING_",
    "interval": "BILLING_INTERVAL_",
}
TOP_LEVEL = ("products", "meters", "plans")


class CatalogFileError(ValueError):
    """The file is not a valid catalog document; the message names the place."""


class _ExactLoader(yaml.SafeLoader):
    """A SafeLoader that keeps floats as their text (0.05 stays "0.05")."""


def _float_as_text(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> str:
    return loader.construct_scalar(node)


_ExactLoader.add_constructor("tag:yaml.org,2002:float", _float_as_text)


def _to_proto_json(value: Any, field: str | None, where: str) -> Any:
    if isinstance(value, dict) and field in ("match", "metadata"):
        return {str(k): str(v) for k, v in value.items()}
    if isinstance(value, dict):
        return {k: _to_proto_json(v, k, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_to_proto_json(v, field, f"{where}[{i}]") for i, v in enumerate(value)]
    if field in DECIMAL_FIELDS:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise CatalogFileError(f"{where}: expected a decimal number, got {value!r}")
        return {"value": str(value)}
    if field in ENUM_PREFIXES and isinstance(value, str):
        prefix = ENUM_PREFIXES[field]
        name = value.strip().upper()
        return name if name.startswith(prefix) else prefix + name
    if field in ("values", "group_by") and not isinstance(value, str):
        return str(value)
    return value


def parse_catalog(text: str, *, dry_run: bool = False) -> catalog_pb2.ApplyCatalogRequest:
    """Parse a catalog document; CatalogFileError on bad YAML or an unknown field."""
    try:
        doc = yaml.load(text, Loader=_ExactLoader)
    except yaml.YAMLError as error:
        raise CatalogFileError(f"not valid YAML: {error}") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise CatalogFileError("the document must be a mapping with products, meters and plans")
    unknown = sorted(set(doc) - set(TOP_LEVEL))
    if unknown:
        raise CatalogFileError(f"unknown top-level keys {unknown}: expected {', '.join(TOP_LEVEL)}")
    body = {}
    for section in TOP_LEVEL:
        items = doc.get(section) or []
        if not isinstance(items, list):
            raise CatalogFileError(f"{section}: expected a list")
        body[section] = [_to_proto_json(item, None, f"{section}[{i}]") for i, item in enumerate(items)]
    request = catalog_pb2.ApplyCatalogRequest(dry_run=dry_run)
    try:
        json_format.ParseDict(body, request)
    except json_format.ParseError as error:
        raise CatalogFileError(str(error)) from None
    request.dry_run = dry_run
    return request


def load_catalog_file(path: str | Path, *, dry_run: bool = False) -> catalog_pb2.ApplyCatalogRequest:
    return parse_catalog(Path(path).read_text(encoding="utf-8"), dry_run=dry_run)
