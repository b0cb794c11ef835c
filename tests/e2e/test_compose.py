"""docker-compose.yml without a Docker engine: valid against the Compose Specification JSON schema,
and consistent with what `make run` uses (tally.config, tally.metrics, the Dockerfile)."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import yaml

from tally.config import DEFAULT_PORTS, SERVICES
from tally.metrics import DEFAULT_METRICS_PORTS
from tests.harness import REPO

COMPOSE_FILE = REPO / "docker-compose.yml"
SCHEMA_FILE = REPO / "deploy" / "compose-spec.json"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def published(service: dict) -> dict[int, int]:
    """container port -> host port, from "host:container" entries."""
    out = {}
    for entry in service.get("ports", []):
        host, container = str(entry).rsplit(":", 1)
        out[int(container)] = int(host.rsplit(":", 1)[-1])
    return out


def variables_tally_reads() -> set[str]:
    """Every TALLY_* name in the runtime's source, plus the per-service ones built at run time."""
    names = set()
    for path in [*REPO.glob("tally/**/*.py"), *REPO.glob("services/**/*.py")]:
        names.update(re.findall(r"TALLY_[A-Z0-9_]*[A-Z0-9]", path.read_text()))
    for service in SERVICES:
        names.update(f"TALLY_{service.upper()}_{suffix}" for suffix in ("PORT", "ADDR", "METRICS_PORT"))
    return names


class TestComposeFile:
    def test_it_validates_against_the_compose_specification_schema(self, compose):
        schema = json.loads(SCHEMA_FILE.read_text())
        validator = jsonschema.Draft201909Validator(schema)
        errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.path))
        assert errors == [], "\n".join(f"{list(e.path)}: {e.message}" for e in errors)

    def test_the_schema_catches_a_misspelled_key(self, compose):
        broken = json.loads(json.dumps(compose))
        broken["services"]["catalog"]["helthcheck"] = broken["services"]["catalog"].pop("healthcheck")
        schema = json.loads(SCHEMA_FILE.read_text())
        assert list(jsonschema.Draft201909Validator(schema).iter_errors(broken))

    def test_it_runs_postgres_migrations_the_four_services_and_optional_prometheus(self, compose):
        assert set(compose["services"]) == {"postgres", "migrate", *SERVICES, "prometheus"}
        assert compose["services"]["prometheus"]["profiles"] == ["metrics"]
        assert all("profiles" not in compose["services"][s] for s in SERVICES)


class TestServicesMatchMakeRun:
    @pytest.mark.parametrize("service", SERVICES)
    def test_each_service_is_served_from_the_one_image_on_its_default_port(self, compose, service):
        spec = compose["services"][service]
        assert spec["build"] == "."
        assert spec["command"] == ["serve", service]
        env = spec["environment"]
        assert env[f"TALLY_{service.upper()}_PORT"] == str(DEFAULT_PORTS[service])
        assert env[f"TALLY_{service.upper()}_METRICS_PORT"] == str(DEFAULT_METRICS_PORTS[service])
        assert published(spec) == {
            DEFAULT_PORTS[service]: DEFAULT_PORTS[service],
            DEFAULT_METRICS_PORTS[service]: DEFAULT_METRICS_PORTS[service],
        }

    @pytest.mark.parametrize("service", SERVICES)
    def test_each_service_reaches_the_others_by_name_on_their_default_ports(self, compose, service):
        env = compose["services"][service]["environment"]
        for other in SERVICES:
            assert env[f"TALLY_{other.upper()}_ADDR"] == f"{other}:{DEFAULT_PORTS[other]}"
        assert env["TALLY_BIND_HOST"] == "0.0.0.0"
        assert env["DATABASE_URL"] == compose["services"]["migrate"]["environment"]["DATABASE_URL"]

    @pytest.mark.parametrize("service", SERVICES)
    def test_each_service_is_health_checked_through_grpc_health(self, compose, service):
        spec = compose["services"][service]
        assert spec["healthcheck"]["test"] == [
            "CMD", "tally", "health", service, "--address", f"127.0.0.1:{DEFAULT_PORTS[service]}"
        ]
        assert spec["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}

    def test_the_database_url_names_the_compose_postgres(self, compose):
        postgres = compose["services"]["postgres"]["environment"]
        url = compose["services"]["migrate"]["environment"]["DATABASE_URL"]
        assert url == (
            f"postgresql://{postgres['POSTGRES_USER']}:{postgres['POSTGRES_PASSWORD']}@postgres:5432/"
            f"{postgres['POSTGRES_DB']}"
        )

    def test_every_tally_variable_set_is_one_tally_reads(self, compose):
        known = variables_tally_reads()
        used = {
            name
            for spec in compose["services"].values()
            for name in (spec.get("environment") or {})
            if name.startswith("TALLY_")
        }
        assert used and used <= known, sorted(used - known)

    def test_prometheus_scrapes_each_service_metrics_port(self):
        config = yaml.safe_load((REPO / "deploy" / "prometheus.yml").read_text())
        targets = [t for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]]
        assert sorted(targets) == sorted(f"{s}:{DEFAULT_METRICS_PORTS[s]}" for s in SERVICES)


class TestDockerfile:
    def test_the_image_runs_the_tally_cli_listening_on_all_interfaces(self):
        text = (REPO / "Dockerfile").read_text()
        assert re.search(r"^FROM python:3\.11", text, re.M)
        assert 'ENTRYPOINT ["tally"]' in text
        assert "TALLY_BIND_HOST=0.0.0.0" in text
        for port in [*DEFAULT_PORTS.values(), *DEFAULT_METRICS_PORTS.values()]:
            assert str(port) in re.search(r"^EXPOSE (.*)$", text, re.M).group(1).split()
        for path in ("tally", "tally_gen", "services"):
            assert f"COPY {path} ./{path}" in text


class TestComposeSecurity:
    def test_keys_are_required_unless_development_mode_is_chosen_explicitly(self, compose):
        for service in SERVICES:
            env = compose["services"][service]["environment"]
            assert env["TALLY_AUTH_MODE"] == "${TALLY_AUTH_MODE:-required}"
            assert env["TALLY_AUTH_KEYS_FILE"] == "/keys/api-keys.json"
            assert "./deploy/keys:/keys:ro" in compose["services"][service]["volumes"]

    @pytest.mark.parametrize("service", SERVICES)
    def test_each_service_calls_the_others_with_its_own_key(self, compose, service):
        env = compose["services"][service]["environment"]
        assert env["TALLY_SERVICE_API_KEY"] == f"${{TALLY_{service.upper()}_SERVICE_KEY:-}}"
