"""Ownership rule: no service imports another service's modules or queries another schema."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tally.config import SERVICES

SERVICES_DIR = Path(__file__).resolve().parents[2] / "services"
SQL_HINT = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|FROM|JOIN|INTO|TABLE|COPY)\b", re.IGNORECASE)


def python_files(service: str) -> list[Path]:
    return sorted((SERVICES_DIR / service).rglob("*.py"))


def imported_modules(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def foreign_schema_references(text: str, own: str) -> list[str]:
    """Qualified names like ``meter.buckets`` or ``"ingest"."events"`` for schemas not owned."""
    found = []
    for other in SERVICES:
        if other == own:
            continue
        pattern = re.compile(rf'(?<![\w.]){other}"?\s*\.\s*"?[a-z_]+', re.IGNORECASE)
        found.extend(m.group(0) for m in pattern.finditer(text))
    return found


def sql_literals(tree: ast.AST) -> list[str]:
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL_HINT.search(node.value)
    ]


@pytest.mark.parametrize("service", SERVICES)
def test_service_imports_no_other_service(service):
    offenders = []
    for path in python_files(service):
        for module in imported_modules(ast.parse(path.read_text())):
            parts = module.split(".")
            if parts[0] == "services" and len(parts) > 1 and parts[1] != service:
                offenders.append(f"{path.relative_to(SERVICES_DIR)} imports {module}")
    assert offenders == []


@pytest.mark.parametrize("service", SERVICES)
def test_service_sql_names_no_other_schema(service):
    offenders = []
    for path in python_files(service):
        for literal in sql_literals(ast.parse(path.read_text())):
            for ref in foreign_schema_references(literal, service):
                offenders.append(f"{path.relative_to(SERVICES_DIR)}: {ref}")
    assert offenders == []


@pytest.mark.parametrize("service", SERVICES)
def test_service_tables_live_only_in_its_own_schema(service):
    import importlib

    tables = importlib.import_module(f"services.{service}.tables")
    assert tables.metadata.schema == service
    assert {t.schema for t in tables.metadata.tables.values()} <= {service}


class TestTheCheckItself:
    def test_detects_a_foreign_qualified_table(self):
        assert foreign_schema_references("SELECT * FROM ingest.events", "meter") == ["ingest.events"]

    def test_detects_a_quoted_foreign_table(self):
        assert foreign_schema_references('SELECT 1 FROM "catalog"."meters"', "meter")

    def test_ignores_own_schema_and_proto_package_names(self):
        assert foreign_schema_references("SELECT * FROM meter.buckets", "meter") == []
        assert foreign_schema_references("tally.catalog.v1.CatalogService", "meter") == []

    def test_detects_an_import_of_another_service(self):
        tree = ast.parse("from services.catalog.tables import metadata")
        assert imported_modules(tree) == ["services.catalog.tables"]
