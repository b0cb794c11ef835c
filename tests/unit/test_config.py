"""Settings read from the environment: the garbage-collector thresholds each service applies."""

from __future__ import annotations

import gc

import pytest

from tally.config import SERVICES, gc_thresholds
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
        with pytest.raises(ValueError, match="GC thresholds"):
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
