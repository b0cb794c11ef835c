"""Settings read from the environment: the garbage-collector thresholds each service applies."""

from __future__ import annotations

import gc

import pytest

from tally.config import SERVICES, VARIABLES, ConfigError, gc_thresholds, setting, validate_environment
from tally.runner import tune_gc


@pytest.fixture(autouse=True)
def no_gc_settings(monkeypatch):
    monkeypatch.delenv("TALLY_GC_THRESHOLDS", raising=False)
    for service in SERVICES:
        monkeypatch.delenv(f"TALLY_{service.upper()}_GC_THRESHOLDS", raising=False)


class TestGcThresholds:
    def test_the_meter_raises_the_young_generation_threshold_by_default(self):
        assert gc_thresholds("meter") == (50_000, 20, 100)

    @pytest.mark.parametrize("service", ["catalog", "ingest", "invoice"])
    def test_other_services_keep_pythons_defaults(self, service):
        assert gc_thresholds(service) is None

    def test_one_setting_for_every_service(self, monkeypatch):
        monkeypatch.setenv("TALLY_GC_THRESHOLDS", "1000,10,10")
        assert {s: gc_thresholds(s) for s in SERVICES} == {s: (1000, 10, 10) for s in SERVICES}

    def test_a_service_setting_wins_over_the_shared_one(self, monkeypatch):
        monkeypatch.setenv("TALLY_GC_THRESHOLDS", "1000,10,10")
        monkeypatch.setenv("TALLY_METER_GC_THRESHOLDS", "python")
        monkeypatch.setenv("TALLY_INGEST_GC_THRESHOLDS", "2000,5,5")
        assert gc_thresholds("meter") is None
        assert gc_thresholds("ingest") == (2000, 5, 5)
        assert gc_thresholds("catalog") == (1000, 10, 10)

    @pytest.mark.parametrize("text", ["1000,10", "a,b,c", "1000,-1,10", "1,2,3,4"])
    def test_malformed_thresholds_are_refused(self, monkeypatch, text):
        monkeypatch.setenv("TALLY_GC_THRESHOLDS", text)
        with pytest.raises(ValueError, match="TALLY_GC_THRESHOLDS: got .*expected three non-negative integers"):
            gc_thresholds("ingest")

    def test_tune_gc_applies_and_freezes(self):
        before = gc.get_threshold()
        try:
            tune_gc((12_345, 11, 12))
            assert gc.get_threshold() == (12_345, 11, 12)
            assert gc.get_freeze_count() > 0
        finally:
            gc.unfreeze()
            gc.set_threshold(*before)

    def test_tune_gc_without_thresholds_changes_nothing(self):
        before = gc.get_threshold()
        tune_gc(None)
        assert gc.get_threshold() == before


class TestEnvironmentValidation:
    """Every TALLY_* variable is checked at start; a bad value names the variable and the form."""

    BASE = {"TALLY_AUTH_MODE": "disabled"}

    @pytest.mark.parametrize(
        "name,value,expected",
        [
            ("TALLY_CATALOG_PORT", "abc", "expected a TCP port from 0 to 65535"),
            ("TALLY_INGEST_PORT", "70000", "expected a TCP port from 0 to 65535"),
            ("TALLY_SHUTDOWN_GRACE_SECONDS", "ten", "expected a number of seconds"),
            ("TALLY_SHUTDOWN_GRACE_SECONDS", "nan", "expected a number of seconds"),
            ("TALLY_LOG_FORMAT", "xml", "expected one of: console, json"),
            ("TALLY_LOG_LEVEL", "loud", "expected one of: debug, info"),
            ("TALLY_METER_BATCH_SIZE", "0", "expected an integer from 1 to 10000"),
            ("TALLY_DB_POOL_SIZE", "١٠", "expected an integer"),  # Arabic-Indic digits
            ("TALLY_AUTH_PROTECT_HEALTH", "maybe", "expected true or false"),
            ("TALLY_AUTH_MODE", "off", "'required' or 'disabled'"),
            ("TALLY_GC_THRESHOLDS", "1,2", "expected three non-negative integers"),
        ],
    )
    def test_a_bad_value_names_the_variable_the_value_and_the_expected_form(self, name, value, expected):
        with pytest.raises(ConfigError) as caught:
            validate_environment({**self.BASE, name: value})
        ((variable, problem),) = [p for p in caught.value.problems if p[0] == name]
        assert expected in problem and repr(value) in problem
        assert name in str(caught.value)

    def test_every_problem_is_reported_at_once(self):
        with pytest.raises(ConfigError) as caught:
            validate_environment({**self.BASE, "TALLY_CATALOG_PORT": "abc", "TALLY_SHUTDOWN_GRACE_SECONDS": "ten"})
        assert {name for name, _ in caught.value.problems} == {"TALLY_CATALOG_PORT", "TALLY_SHUTDOWN_GRACE_SECONDS"}

    def test_keys_required_without_a_page_token_secret_refuses_to_start(self):
        with pytest.raises(ConfigError) as caught:
            validate_environment({"TALLY_AUTH_MODE": "required"})
        assert [name for name, _ in caught.value.problems] == ["TALLY_PAGE_TOKEN_SECRET"]
        with pytest.raises(ConfigError):
            validate_environment({})  # required is the default
        assert validate_environment({"TALLY_PAGE_TOKEN_SECRET": "s" * 32}) == []

    def test_a_short_page_token_secret_is_refused_and_never_echoed(self):
        with pytest.raises(ConfigError) as caught:
            validate_environment({"TALLY_PAGE_TOKEN_SECRET": "hunter2"})
        assert "hunter2" not in str(caught.value)

    def test_an_unknown_tally_variable_is_a_warning_naming_it(self):
        assert validate_environment({**self.BASE, "TALLY_CATALOG_PROT": "1"}) == [
            "TALLY_CATALOG_PROT is not a Tally setting (misspelt?); it is ignored"
        ]

    def test_good_values_and_defaults_pass(self):
        env = {**self.BASE, "TALLY_CATALOG_PORT": "6000", "TALLY_SHUTDOWN_GRACE_SECONDS": "2.5", "TALLY_LOG_FORMAT": "JSON"}
        assert validate_environment(env) == []
        assert setting("TALLY_CATALOG_PORT", env) == 6000
        assert setting("TALLY_SHUTDOWN_GRACE_SECONDS", env) == 2.5
        assert setting("TALLY_LOG_FORMAT", env) == "json"
        assert setting("TALLY_METER_BATCH_SIZE", {}) == 5000

    def test_every_tally_variable_the_code_reads_is_in_the_table(self):
        import re

        from tests.harness import REPO

        names = set()
        for path in [*REPO.glob("tally/**/*.py"), *REPO.glob("services/**/*.py")]:
            names.update(re.findall(r"\bTALLY_[A-Z0-9_]*[A-Z0-9]\b", path.read_text()))
        missing = {n for n in names if n not in VARIABLES and not n.endswith(("_SERVICE", "_RATE_LIMIT", "_INVOICE", "_AUTH"))}
        assert missing == set()

    def test_serve_with_a_bad_value_exits_2_naming_the_variable_without_a_traceback(self):
        import subprocess
        import sys

        from tests.harness import REPO

        env = {"PATH": "/usr/bin:/bin", "TALLY_AUTH_MODE": "disabled", "TALLY_CATALOG_PORT": "abc"}
        done = subprocess.run(
            [sys.executable, "-m", "tally.cli.main", "serve", "catalog"], env=env, cwd=REPO,
            capture_output=True, text=True, timeout=60,
        )
        assert done.returncode == 2
        assert "TALLY_CATALOG_PORT: got 'abc'; expected a TCP port" in done.stderr
        assert "Traceback" not in done.stderr
